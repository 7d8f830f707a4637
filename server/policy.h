// Who may receive which certificate, and who is an admin: the policy file (YAML) of the issue
// "Who may receive the private key", and the static token map for hosts outside Kubernetes.
//
//   certificates:
//     wildcard:                           # certificate name as in --certificate
//       namespaces: ["tenant-*", "shop"]  # exact names or globs (* and ?)
//       namespaceSelector:                # and/or: namespaces whose labels match, as Kubernetes
//         matchLabels: {certcast.io/wildcard: "true"}        # writes selectors
//         matchExpressions: [{key: tier, operator: In, values: [prod]}]
//       writers:                          # optional: identities that may write this certificate
//         - system:serviceaccount:certcast-system:certcast-writer  # into any namespace granted
//                                         # above (the shared writer, docs/SHARED-WRITER.md)
//       rollout:                          # optional: staged rollout (docs/ROLLOUT.md)
//         waves:                          # in order; everyone else is the implicit last wave
//           - name: canary
//             namespaces: ["canary-*"]    # names or globs
//             soak: 30m                   # wait after every client of the wave ACKed
//             require: verified           # "acks" (default) or "verified" (--verify ACKs)
//         wave_timeout: 30m               # disconnected clients count as missing after it
//         expiry_margin: 168h             # proceed to everyone when the old version expires
//   admins:                               # identities allowed to call Admin and see every client
//     - spiffe://cluster.local/ns/certcast-system/sa/operator
//     - system:serviceaccount:certcast-system:operator
//
// Policy is an immutable value; PolicyFile holds the current one and reloads it. Thread-safe.
#ifndef CERTCAST_SERVER_POLICY_H_
#define CERTCAST_SERVER_POLICY_H_

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/filesystem.h"

namespace certcast {

// A namespace's labels.
using NamespaceLabels = std::map<std::string, std::string>;

// A Kubernetes label selector (matchLabels and matchExpressions with In, NotIn, Exists,
// DoesNotExist), all of which must hold. The policy refuses an empty one: it would grant every
// namespace.
struct LabelSelector {
  struct Requirement {
    std::string key;
    std::string op;  // In, NotIn, Exists, DoesNotExist
    std::set<std::string> values;
  };
  std::map<std::string, std::string> match_labels;
  std::vector<Requirement> match_expressions;

  bool Matches(const NamespaceLabels& labels) const;
  // As kubectl's -l writes it: "a=b,tier in (free,trial),!gone", for inspection output.
  std::string ToString() const;
};

// One wave of a staged rollout: the namespaces its names or globs match, or whose labels its
// namespaceSelector matches. Neither: everyone else (the last wave).
struct WaveSpec {
  std::string name;
  std::vector<std::string> namespaces;
  std::optional<LabelSelector> selector;
  absl::Duration soak = absl::ZeroDuration();
  bool require_verified = false;
  // Null `labels` (not known) never match the selector.
  bool Matches(const std::string& namespace_, const NamespaceLabels* labels) const;
};

struct RolloutSpec {
  // The policy's waves, then the implicit last wave "everyone else" (no namespaces).
  std::vector<WaveSpec> waves;
  absl::Duration wave_timeout = absl::Minutes(30);
  absl::Duration expiry_margin = absl::Hours(24 * 7);
  // 0-based index of the first wave that matches `namespace_` with `labels` (the last wave when
  // none does).
  size_t WaveOf(const std::string& namespace_, const NamespaceLabels* labels) const;
  // True when a wave chooses namespaces by label (the server then needs the namespace watch).
  bool UsesSelectors() const;
};

class Policy {
 public:
  // Parses `yaml`. InvalidArgument naming `origin` (the file) and the problem: not YAML, unknown
  // keys, a certificate without namespaces, an empty glob, or a certificate name that is not in
  // `known_certificates`.
  static absl::StatusOr<Policy> Parse(const std::string& yaml, const std::string& origin,
                                      const std::set<std::string>& known_certificates);

  // True when `namespace_` matches one of the certificate's namespace patterns, or its `labels`
  // match the certificate's namespaceSelector. Null `labels` (not known: no namespace watch,
  // not listed yet, or no such namespace) never match a selector.
  bool Allows(const std::string& certificate, const std::string& namespace_,
              const NamespaceLabels* labels = nullptr) const;
  // True when `identity` is one of the certificate's `writers`: it may subscribe on behalf of
  // every namespace the certificate is granted to (Allows), not only its own.
  bool IsWriter(const std::string& certificate, const std::string& identity) const;
  // True when some certificate is granted, or some rollout wave chosen, by label selector (the
  // server then needs the namespace watch).
  bool UsesSelectors() const;
  std::vector<std::string> Certificates() const;
  // True when `identity` (a SPIFFE ID or system:serviceaccount:NS:SA) is listed as an admin.
  bool IsAdmin(const std::string& identity) const;
  // Certificates `namespace_` (with `labels`, if known) may receive.
  std::vector<std::string> CertificatesFor(const std::string& namespace_,
                                           const NamespaceLabels* labels = nullptr) const;
  // The certificate's staged rollout; null when the policy gives it none (every version then
  // goes to everyone at once).
  std::shared_ptr<const RolloutSpec> RolloutOf(const std::string& certificate) const;
  // For logs and stats.
  size_t certificate_count() const;
  size_t admin_count() const;

 private:
  struct Grant {
    std::vector<std::string> patterns;
    std::optional<LabelSelector> selector;
    std::set<std::string> writers;
  };
  std::map<std::string, Grant> grants_;  // by certificate
  std::map<std::string, std::shared_ptr<const RolloutSpec>> rollouts_;
  std::set<std::string> admins_;
};

// Glob match with '*' (any run, including empty) and '?' (one character), whole string.
bool GlobMatches(const std::string& pattern, const std::string& text);

// The policy file: loaded at start, re-read when its content changes (checked every
// `poll_interval`; Kubernetes ConfigMap mounts change by symlink swap, so the content is what
// counts) and on Reload() (SIGHUP). A file that does not parse keeps the previous policy and the
// reason is logged and kept in last_error(). `on_change` runs after every successful change.
// Does not own `fs`.
class PolicyFile {
 public:
  // Loads `path`; an error (unreadable, invalid) is returned so the server refuses to start.
  static absl::StatusOr<std::unique_ptr<PolicyFile>> Open(
      Filesystem* fs, std::string path, std::set<std::string> known_certificates,
      absl::Duration poll_interval = absl::Seconds(2));
  ~PolicyFile();

  std::shared_ptr<const Policy> current() const;
  // Re-reads the file now. Returns the error when it does not load (the previous policy stays).
  absl::Status Reload();
  void OnChange(std::function<void()> on_change);
  std::string last_error() const;
  // Starts/stops the polling thread.
  void Start();
  void Stop();

 private:
  PolicyFile(Filesystem* fs, std::string path, std::set<std::string> known,
             absl::Duration poll_interval);
  // Reads the file and applies it when its text is new; Reload() and the polling thread. Takes
  // reload_mu_, then mu_; runs on_change_ after releasing both.
  absl::Status Check() ABSL_LOCKS_EXCLUDED(reload_mu_, mu_);

  Filesystem* const fs_;
  const std::string path_;
  const std::set<std::string> known_;
  const absl::Duration poll_interval_;
  // Lock order: reload_mu_ (serializes read + apply, so an older read never wins), then mu_.
  absl::Mutex reload_mu_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const Policy> policy_ ABSL_GUARDED_BY(mu_);
  std::string content_ ABSL_GUARDED_BY(mu_);  // the text behind policy_ (or the last bad text)
  std::string policy_content_ ABSL_GUARDED_BY(mu_);  // the text behind policy_
  bool read_failed_ ABSL_GUARDED_BY(mu_) = false;    // the last read failed; content_ is older
  absl::Status status_ ABSL_GUARDED_BY(mu_);         // outcome of the last load (last_error_)
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  std::function<void()> on_change_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// Static tokens for hosts outside Kubernetes (--token-map). The file holds SHA-256 hashes of
// tokens, never the tokens:
//
//   tokens:
//     - sha256: 3f1c...          # sha256 of the token, lowercase hex
//       namespace: edge
//       name: host-1
struct StaticIdentity {
  std::string namespace_;
  std::string name;
};
class TokenMap {
 public:
  // InvalidArgument naming `origin` for malformed files (bad hash, missing fields, duplicates).
  static absl::StatusOr<TokenMap> Parse(const std::string& yaml, const std::string& origin);
  // The identity of `token` (hashed here), if listed. Constant-time comparison is unnecessary:
  // lookups are by hash.
  const StaticIdentity* Find(const std::string& token) const;

 private:
  std::map<std::string, StaticIdentity> by_hash_;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_POLICY_H_
