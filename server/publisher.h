// The Publisher decides what is distributed: it validates what sources hold, assigns versions,
// persists them in the VersionStore, handles rollback pins, and hands each new Publication to
// its listener (the distribution hub). It also answers inspection queries about certificates.
//
// With a store several replicas share (PublisherOptions::leadership), only the leader publishes,
// only source states newer than the one behind the current version (a lagging replica never
// publishes older material), and every replica adopts what the leader stored (Refresh).
//
// Thread-safe. Lock order: Publisher::mu_ before anything the listener locks (OnPublish is called
// with mu_ held so publications reach the listener in version order). Does not own `store`,
// `clock` or `listener`; they must outlive it.
#ifndef CERTCAST_SERVER_PUBLISHER_H_
#define CERTCAST_SERVER_PUBLISHER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/certificate.h"
#include "common/clock.h"
#include "server/publication.h"
#include "server/replication.h"
#include "server/source.h"
#include "server/version_store.h"

namespace certcast {

// Told of every publication, with the Publisher's lock held.
class PublicationListener {
 public:
  virtual ~PublicationListener() = default;
  // Before a new version of `name` is stored: the rollout state to store in the same write
  // (CertificateState.rollout), or nullopt to keep the stored one. A staged rollout starts here,
  // so that a crash after the write cannot lose its start and let the version reach everyone.
  virtual std::optional<std::string> RolloutStateFor(const std::string& /*name*/,
                                                     uint64_t /*version*/, bool /*pinned*/) {
    return std::nullopt;
  }
  virtual void OnPublish(std::shared_ptr<const Publication> publication) = 0;
};

struct CertificateSpec {
  std::string name;
  std::unique_ptr<CertificateSource> source;
  std::vector<std::string> required_dns_names;
};

struct Rejection {
  std::string reason;       // RejectionReason() of the error
  std::string message;      // names certificate and file; no key bytes
  std::string fingerprint;  // leaf fingerprint when it parsed, else empty
  absl::Time time;
};

struct VersionSummary {
  uint64_t version = 0;
  CertificateInfo info;
  absl::Time published_at;
  std::string origin;
  uint64_t rolled_back_from = 0;
};

// Everything inspection may show about one certificate. Holds no key material.
struct CertificateSnapshot {
  std::string name;
  std::string source;
  std::vector<std::string> required_dns_names;
  std::optional<VersionSummary> current;
  std::vector<VersionSummary> history;  // newest first
  PinState pin;
  std::optional<Rejection> last_rejection;
  uint64_t rejections = 0;
  std::map<std::string, uint64_t> rejections_by_reason;  // the same, by Rejection::reason
  uint64_t publications = 0;                             // since start
  bool source_present = false;  // the last settled read of the source succeeded
  bool expiring_soon = false;   // the current version is within expiry_warning of not_after
  // While the source cannot be read (it is read again with backoff): the latest error, and how
  // many reads failed in a row. Empty/0 once a read succeeds.
  std::string read_error;
  uint64_t consecutive_read_failures = 0;
  uint64_t read_failures = 0;  // failed reads since start
  // Shared store only: settled source contents this replica did not publish because they were
  // not newer than the source state behind the current version.
  uint64_t stale_sources = 0;
  uint64_t adopted = 0;  // versions adopted from the store (published by another replica)
};

struct PublisherOptions {
  // A current version this close to its not_after (or past it) is "expiring soon": logged once
  // and shown by inspection and metrics.
  absl::Duration expiry_warning = absl::Hours(24 * 14);
  // Set when several replicas share the store; must outlive the Publisher. Null: one replica,
  // which always publishes whatever the source holds.
  const Leadership* leadership = nullptr;
};

// How a source state read by this replica compares with the one behind the current version.
enum class SourceOrder { kNewer, kSame, kOlder };

// Orders `candidate` against `baseline`. When both carry a revision (Secret sources), the
// revisions decide: numerically when both parse as unsigned integers (what etcd-backed API
// servers give, though Kubernetes calls them opaque), otherwise equal means kSame and anything
// else kNewer (unordered: the source wins, as with one replica). Otherwise the leaves decide:
// later notBefore, then higher serial, is kNewer. A baseline that records nothing (state written
// before this field existed) makes every candidate kNewer.
SourceOrder CompareSources(const SourceState& candidate, const SourceState& baseline);

struct RollbackResult {
  uint64_t version = 0;
  uint64_t rolled_back_from = 0;
  std::string fingerprint;
};

class Publisher {
 public:
  Publisher(VersionStore* store, const Clock* clock, PublicationListener* listener,
            PublisherOptions options = PublisherOptions());

  // Registers a certificate and loads its persisted state, which becomes the current version
  // until the source says otherwise. InvalidArgument for a duplicate or malformed name; the
  // store's DataLoss for corrupt state. Call before any Evaluate.
  absl::Status AddCertificate(CertificateSpec spec);

  // Reads the source of `name` and publishes its content as a new version when it is valid and
  // differs from the current one (or ends a rollback pin). Invalid or missing content is a
  // rejection only when `confirmed`; otherwise returns kUnsettled so the caller looks again. A
  // source that cannot be read (reason "unreadable") is never a rejection: returns kRetry, and
  // the caller reads again with backoff.
  // Also notes (and logs once per change) whether the source is present and whether the
  // current version is close to expiry; watchers re-evaluate periodically, so that stays fresh.
  Verdict Evaluate(const std::string& name, bool confirmed);

  // Republishes the persisted material of `version` as a new version and pins it.
  // NotFound (unknown name, version no longer stored), InvalidArgument (current version),
  // FailedPrecondition (material expired), or the store's error.
  // Shared store, on a follower: Unavailable naming the leader.
  absl::StatusOr<RollbackResult> Rollback(const std::string& name, uint64_t version);

  // Loads the stored state of `name` and adopts it when another replica stored something newer
  // (a new version, or a pin set or ended): that becomes the current publication here too.
  // The store's error otherwise; DataLoss when the stored material does not validate.
  absl::Status Refresh(const std::string& name);

  // On becoming the leader: Refresh, then VersionStore::Claim, so a deposed leader's later write
  // fails its compare-and-swap. The caller evaluates the source afterwards.
  absl::Status TakeOver(const std::string& name);

  std::vector<std::string> Names() const;
  CertificateSource* SourceOf(const std::string& name) const;
  std::optional<CertificateSnapshot> Snapshot(const std::string& name) const;
  std::shared_ptr<const Publication> Current(const std::string& name) const;

  // The staged-rollout state kept with the certificate in the version store (a serialized
  // certcast.state.v1.RolloutState; empty when none), for server/rollout.h.
  std::string RolloutState(const std::string& name) const;
  // Persists `state` with the certificate. NotFound for an unknown name, or the store's error.
  absl::Status SaveRolloutState(const std::string& name, std::string state);
  // A publication of stored `version` (with a fresh nonce), for a rollout that holds namespaces
  // back after a restart; null when that version is no longer stored.
  std::shared_ptr<const Publication> PublicationOf(const std::string& name, uint64_t version) const;

  // True when every certificate has a version. Otherwise `why` lists those without one.
  bool Ready(std::string* why = nullptr) const;

 private:
  struct Entry {
    CertificateSpec spec;
    CertificateState state;
    std::vector<CertificateInfo> infos;  // parallel to state.versions
    std::shared_ptr<const Publication> current;
    std::string settled_digest;  // content (or error) the last settled evaluation saw
    std::string source_digest;   // last settled valid-or-invalid source content, for pins
    std::optional<Rejection> last_rejection;
    uint64_t rejections = 0;
    std::map<std::string, uint64_t> rejections_by_reason;
    uint64_t publications = 0;
    bool source_present = false;  // the last settled read succeeded
    bool read_failed = false;     // a settled read failed and the source has not come back
    std::string read_error;       // while reads fail: the latest error
    uint64_t consecutive_read_failures = 0;
    uint64_t read_failures = 0;
    bool expiring_logged = false;
    // Shared store: false until the stored state was loaded once (start-up may find the store
    // unreachable); nothing is published before.
    bool loaded = true;
    uint64_t generation = 0;   // bumped whenever state.store_revision changes
    SourceState source_state;  // of the last valid content read, for rollbacks' baseline
    uint64_t stale_sources = 0;
    std::string stale_digest;  // the stale content last warned about (warn once per content)
    uint64_t adopted = 0;
  };

  // PinState::version placeholder meaning "the version Commit is about to assign".
  static constexpr uint64_t kPinNewVersion = ~uint64_t{0};

  Entry* Find(const std::string& name) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evaluate's decision on what the source read (`revision`: the source's, may be empty).
  Verdict Settle(Entry& entry, absl::StatusOr<CertificateMaterial> material,
                 const std::string& revision, bool confirmed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Shared store: adopts `loaded` (what Load returned) when it is ahead of the entry.
  absl::Status Adopt(Entry& entry, std::optional<CertificateState> loaded)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Load and Adopt with mu_ held (the write path, which holds it anyway).
  absl::Status RefreshLocked(Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Saves `state` for the entry; on a lost compare-and-swap, adopts the stored state first.
  absl::Status SaveLocked(Entry& entry, CertificateState& state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evaluate's decision on a source that could not be read: kRetry, never a rejection.
  Verdict ReadFailed(Entry& entry, const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool ExpiringSoon(const Entry& entry) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Logs when the current version starts (or stops) being close to expiry.
  void NoteExpiry(Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Reject(Entry& entry, const absl::Status& status, const std::string& settled_key,
              const std::string& fingerprint) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Appends `version` to the entry's state, persists it and publishes it.
  absl::Status Commit(Entry& entry, StoredVersion version, CertificateInfo info, PinState pin)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  VersionStore* const store_;
  const Clock* const clock_;
  PublicationListener* const listener_;
  const PublisherOptions options_;

  // Serializes evaluations (a source's Read and the revision it reports belong together; the
  // watcher and a leadership change may both evaluate). Acquired before mu_.
  absl::Mutex evaluate_mu_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Entry>> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_PUBLISHER_H_
