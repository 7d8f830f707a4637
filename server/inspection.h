// certcast.v1.Inspection (read-only; never returns key material) and certcast.v1.Admin.
// Callers are authenticated without blocking a gRPC thread: a TokenReview runs on the
// authenticator's workers and the call finishes from there.
// Thread-safe; does not own what it is given. `authenticator` may be null (transport identity
// only).
#ifndef CERTCAST_SERVER_INSPECTION_H_
#define CERTCAST_SERVER_INSPECTION_H_

#include <functional>

#include "certcast/v1/certcast.grpc.pb.h"
#include "server/authentication.h"
#include "server/authorizer.h"
#include "server/coverage.h"
#include "server/fleet.h"
#include "server/publisher.h"
#include "server/rollout.h"

namespace certcast {

// Callers see what their identity allows: admins everything, others only their namespace's
// clients and the certificates their namespace may receive.
class InspectionService final : public v1::Inspection::CallbackService {
 public:
  // Does not own its arguments; `coverage` may be null (no namespace watch), `rollout` too (no
  // staged rollouts).
  InspectionService(Publisher* publisher, Fleet* fleet, Authorizer* authorizer,
                    Authenticator* authenticator, const Coverage* coverage = nullptr,
                    RolloutController* rollout = nullptr)
      : publisher_(publisher),
        fleet_(fleet),
        authorizer_(authorizer),
        authenticator_(authenticator),
        coverage_(coverage),
        rollout_(rollout) {}

  grpc::ServerUnaryReactor* ListCertificates(grpc::CallbackServerContext* context,
                                             const v1::ListCertificatesRequest* request,
                                             v1::ListCertificatesResponse* response) override;
  grpc::ServerUnaryReactor* GetCertificate(grpc::CallbackServerContext* context,
                                           const v1::GetCertificateRequest* request,
                                           v1::Certificate* response) override;
  grpc::ServerUnaryReactor* ListClients(grpc::CallbackServerContext* context,
                                        const v1::ListClientsRequest* request,
                                        v1::ListClientsResponse* response) override;
  grpc::ServerUnaryReactor* ListNamespaces(grpc::CallbackServerContext* context,
                                           const v1::ListNamespacesRequest* request,
                                           v1::ListNamespacesResponse* response) override;

  static constexpr uint32_t kDefaultPageSize = 100;
  static constexpr uint32_t kMaxPageSize = 1000;

 private:
  // The calls, once the caller is authenticated (or its authentication failed).
  grpc::Status ListCertificatesAs(const PeerIdentity& transport,
                                  absl::StatusOr<PeerIdentity> caller,
                                  v1::ListCertificatesResponse* response);
  grpc::Status GetCertificateAs(const PeerIdentity& transport, absl::StatusOr<PeerIdentity> caller,
                                const v1::GetCertificateRequest& request,
                                v1::Certificate* response);
  grpc::Status ListClientsAs(const PeerIdentity& transport, absl::StatusOr<PeerIdentity> caller,
                             const v1::ListClientsRequest& request,
                             v1::ListClientsResponse* response);
  grpc::Status ListNamespacesAs(const PeerIdentity& transport, absl::StatusOr<PeerIdentity> caller,
                                const v1::ListNamespacesRequest& request,
                                v1::ListNamespacesResponse* response);
  // The caller's scope, or the (audited) denial.
  absl::StatusOr<InspectionScope> Scope(const PeerIdentity& transport,
                                        absl::StatusOr<PeerIdentity> caller,
                                        const std::string& method, PeerIdentity* peer);
  // Whether a scoped caller may see certificate `name`.
  bool Visible(const InspectionScope& scope, const PeerIdentity& peer, const std::string& name);

  Publisher* const publisher_;
  Fleet* const fleet_;
  Authorizer* const authorizer_;
  Authenticator* const authenticator_;
  const Coverage* const coverage_;
  RolloutController* const rollout_;
};

class AdminService final : public v1::Admin::CallbackService {
 public:
  // `rollout` may be null: then ResumeRollout and PromoteRollout answer FAILED_PRECONDITION.
  AdminService(Publisher* publisher, Authorizer* authorizer, Authenticator* authenticator,
               RolloutController* rollout = nullptr)
      : publisher_(publisher),
        authorizer_(authorizer),
        authenticator_(authenticator),
        rollout_(rollout) {}

  grpc::ServerUnaryReactor* Rollback(grpc::CallbackServerContext* context,
                                     const v1::RollbackRequest* request,
                                     v1::RollbackResponse* response) override;
  grpc::ServerUnaryReactor* ResumeRollout(grpc::CallbackServerContext* context,
                                          const v1::RolloutRequest* request,
                                          v1::Rollout* response) override;
  grpc::ServerUnaryReactor* PromoteRollout(grpc::CallbackServerContext* context,
                                           const v1::RolloutRequest* request,
                                           v1::Rollout* response) override;

 private:
  grpc::Status RollbackAs(const PeerIdentity& transport, absl::StatusOr<PeerIdentity> caller,
                          const v1::RollbackRequest& request, v1::RollbackResponse* response);
  // ResumeRollout and PromoteRollout once the caller is known: `method` for the audit log.
  grpc::Status RolloutAs(const PeerIdentity& transport, absl::StatusOr<PeerIdentity> caller,
                         const std::string& method, const v1::RolloutRequest& request,
                         v1::Rollout* response);

  Publisher* const publisher_;
  Authorizer* const authorizer_;
  Authenticator* const authenticator_;
  RolloutController* const rollout_;
};

// Starts a unary call: authenticates the caller (inline when no TokenReview is needed, else on
// the authenticator's workers), then finishes the call with what `handle` returns. `handle` runs
// exactly once, on whichever thread has the identity; it may use the request and response,
// which live until the call finishes.
grpc::ServerUnaryReactor* WithCaller(
    grpc::CallbackServerContext* context, Authenticator* authenticator,
    std::function<grpc::Status(const PeerIdentity& transport, absl::StatusOr<PeerIdentity> caller)>
        handle);

// Fills `info` from a version summary (no key material exists in a summary).
void FillVersionInfo(const VersionSummary& summary, v1::CertificateVersionInfo* info);

}  // namespace certcast

#endif  // CERTCAST_SERVER_INSPECTION_H_
