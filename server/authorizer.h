// Who the peer of a call is, and whether it may do what it asks.
//
// Identities: a verified mTLS client certificate's SPIFFE ID (spiffe://TD/ns/NS/sa/SA), a
// Kubernetes ServiceAccount token checked with TokenReview (system:serviceaccount:NS:SA), or a
// static token (static:NS/NAME). The namespace always comes from the identity, never from what a
// client claims. Authorizers decide with that and the policy, and write every denial and admin
// action to the audit log. Implementations are thread-safe.
#ifndef CERTCAST_SERVER_AUTHORIZER_H_
#define CERTCAST_SERVER_AUTHORIZER_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "kube/namespace_cache.h"

namespace certcast {

class PolicyFile;

struct PeerIdentity {
  std::string peer;        // transport address, e.g. "ipv4:10.0.0.7:51234"
  std::string identity;    // empty when the peer proved nothing
  std::string kind;        // "mtls", "serviceaccount", "static" or empty
  std::string namespace_;  // from the identity; empty when it names none
  std::string name;        // service account or static name
  // When the credential that proved `identity` stops being valid (a client certificate's
  // notAfter, a token's exp); InfiniteFuture for static tokens and unproven peers.
  absl::Time expires = absl::InfiniteFuture();
  bool proven() const { return !identity.empty(); }
};

// The transport part of a call's identity: peer address and a verified client certificate's
// SPIFFE ID (with namespace and service account when it has the certcast form).
PeerIdentity TransportIdentity(const grpc::ServerContextBase& context);
// The address part of a peer string ("ipv4:10.0.0.7:51234" → "ipv4:10.0.0.7",
// "ipv6:[::1]:5000" → "ipv6:[::1]"): one per host, whatever its ports.
std::string PeerAddress(const std::string& peer);
// The bearer token of a call (`authorization: Bearer T`), empty when none.
std::string BearerToken(const grpc::ServerContextBase& context);
// Fills namespace_ and name from spiffe://TD/ns/NS/sa/SA; false when the ID has another form.
bool ParseSpiffeId(const std::string& id, PeerIdentity* identity);

// What an Inspection caller may see.
struct InspectionScope {
  bool everything = false;  // admins (and --insecure)
  std::string namespace_;   // otherwise only this namespace's entries
};

struct AuditCounters {
  std::map<std::string, uint64_t> denials;  // by reason: unauthenticated, namespace_mismatch, ...
  uint64_t admin_actions = 0;
};

class Authorizer {
 public:
  virtual ~Authorizer() = default;
  // OK, or UNAUTHENTICATED / PERMISSION_DENIED with a message naming what is missing (and
  // nothing about other tenants). Denials are audited by the caller through Audit().
  virtual absl::Status AuthorizeSubscribe(const PeerIdentity& peer, const std::string& namespace_,
                                          const std::string& certificate) = 0;
  virtual absl::Status AuthorizeAdmin(const PeerIdentity& peer) = 0;
  virtual absl::StatusOr<InspectionScope> AuthorizeInspection(const PeerIdentity& peer) = 0;
  // The shared writer's work list: the existing namespaces `certificate` is granted to, when
  // the policy names `peer` among its `writers`; sorted. PERMISSION_DENIED when it does not,
  // FAILED_PRECONDITION without a namespace watch (--watch-namespaces), UNAVAILABLE before the
  // watch's first list. By default nobody is a writer.
  virtual absl::StatusOr<std::vector<std::string>> WriterNamespaces(const PeerIdentity& peer,
                                                                    const std::string& certificate);

  // Writes an audit line (identity, peer, method, certificate, decision) and counts denials.
  void Audit(const PeerIdentity& peer, const std::string& method, const std::string& certificate,
             const absl::Status& decision);
  AuditCounters audit_counters();

 private:
  absl::Mutex mu_;
  AuditCounters counters_ ABSL_GUARDED_BY(mu_);
};

// --insecure: local development; needs no identity and allows everything.
class AllowAllAuthorizer final : public Authorizer {
 public:
  absl::Status AuthorizeSubscribe(const PeerIdentity&, const std::string&,
                                  const std::string&) override {
    return absl::OkStatus();
  }
  absl::Status AuthorizeAdmin(const PeerIdentity&) override { return absl::OkStatus(); }
  absl::StatusOr<InspectionScope> AuthorizeInspection(const PeerIdentity&) override {
    return InspectionScope{true, ""};
  }
  absl::StatusOr<std::vector<std::string>> WriterNamespaces(const PeerIdentity&,
                                                            const std::string&) override {
    return absl::FailedPreconditionError(
        "this server runs --insecure without a policy, so it names no namespaces for a shared "
        "writer (policy: writers)");
  }
};

// The TLS default: proven identities, the hello's namespace equal to the identity's (or any
// namespace the certificate is granted to, for an identity the policy lists among the
// certificate's `writers`), and the policy file's namespaces per certificate and admins. Without a
// policy (`policy` null) nothing is handed out. Does not own `policy`.
class PolicyAuthorizer final : public Authorizer {
 public:
  // With a `trust_domain`, client certificates from another SPIFFE trust domain are refused
  // (a client CA bundle shared across clusters must not let cluster B's "shop" be A's "shop").
  // `admins` (--admin) are admins in addition to the policy's `admins`: the manifests name the
  // operator's identity there, so that it follows the namespace certcast is deployed in.
  // `namespaces` (may be null: no namespace watch) gives the labels that namespaceSelector
  // grants are matched against.
  explicit PolicyAuthorizer(PolicyFile* policy, std::string trust_domain = "",
                            std::set<std::string> admins = {},
                            const kube::NamespaceCache* namespaces = nullptr)
      : policy_(policy),
        trust_domain_(std::move(trust_domain)),
        admins_(std::move(admins)),
        namespaces_(namespaces) {}
  absl::Status AuthorizeSubscribe(const PeerIdentity& peer, const std::string& namespace_,
                                  const std::string& certificate) override;
  absl::Status AuthorizeAdmin(const PeerIdentity& peer) override;
  absl::StatusOr<InspectionScope> AuthorizeInspection(const PeerIdentity& peer) override;
  absl::StatusOr<std::vector<std::string>> WriterNamespaces(
      const PeerIdentity& peer, const std::string& certificate) override;

 private:
  // The identity proven and, for mTLS, from the configured trust domain.
  absl::Status RequireTrustedIdentity(const PeerIdentity& peer) const;

  // Listed in the policy or given with --admin.
  bool IsAdmin(const std::string& identity) const;

  PolicyFile* const policy_;
  const std::string trust_domain_;
  const std::set<std::string> admins_;
  const kube::NamespaceCache* const namespaces_;
};

// Short reason code of a denial, for counters: carried as a payload by the authorizers.
std::string DenialReason(const absl::Status& status);

}  // namespace certcast

#endif  // CERTCAST_SERVER_AUTHORIZER_H_
