#include "server/inspection.h"

#include <functional>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "server/publication.h"
#include "spdlog/spdlog.h"

namespace certcast {
namespace {

grpc::Status ToGrpc(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

}  // namespace

grpc::ServerUnaryReactor* WithCaller(
    grpc::CallbackServerContext* context, Authenticator* authenticator,
    std::function<grpc::Status(const PeerIdentity& transport, absl::StatusOr<PeerIdentity> caller)>
        handle) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  PeerIdentity transport = TransportIdentity(*context);
  if (authenticator == nullptr) {
    reactor->Finish(handle(transport, transport));
    return reactor;
  }
  // A TokenReview runs on the authenticator's workers; this gRPC thread returns at once.
  authenticator->Authenticate(
      transport, BearerToken(*context),
      [reactor, transport, handle = std::move(handle)](absl::StatusOr<PeerIdentity> caller) {
        reactor->Finish(handle(transport, std::move(caller)));
      },
      [context] { return !context->IsCancelled(); });
  return reactor;
}

absl::StatusOr<InspectionScope> InspectionService::Scope(const PeerIdentity& transport,
                                                         absl::StatusOr<PeerIdentity> caller,
                                                         const std::string& method,
                                                         PeerIdentity* peer) {
  if (!caller.ok()) {
    authorizer_->Audit(transport, method, "", caller.status());
    return caller.status();
  }
  *peer = *caller;
  absl::StatusOr<InspectionScope> scope = authorizer_->AuthorizeInspection(*peer);
  if (!scope.ok()) authorizer_->Audit(*peer, method, "", scope.status());
  return scope;
}

bool InspectionService::Visible(const InspectionScope& scope, const PeerIdentity& peer,
                                const std::string& name) {
  return scope.everything || authorizer_->AuthorizeSubscribe(peer, scope.namespace_, name).ok();
}

void FillVersionInfo(const VersionSummary& summary, v1::CertificateVersionInfo* info) {
  info->set_version(summary.version);
  info->set_fingerprint(summary.info.fingerprint);
  info->set_subject(summary.info.subject);
  info->set_issuer(summary.info.issuer);
  info->set_serial(summary.info.serial);
  for (const std::string& dns : summary.info.dns_names) info->add_dns_names(dns);
  *info->mutable_not_before() = ToProtoTime(summary.info.not_before);
  *info->mutable_not_after() = ToProtoTime(summary.info.not_after);
  *info->mutable_published_at() = ToProtoTime(summary.published_at);
  info->set_origin(summary.origin);
  info->set_rolled_back_from(summary.rolled_back_from);
  info->set_chain_length(static_cast<uint32_t>(summary.info.chain_length));
  info->set_has_ca(summary.info.has_ca);
  info->set_key_type(summary.info.key_type);
}

grpc::ServerUnaryReactor* InspectionService::ListCertificates(
    grpc::CallbackServerContext* context, const v1::ListCertificatesRequest* /*request*/,
    v1::ListCertificatesResponse* response) {
  return WithCaller(
      context, authenticator_,
      [this, response](const PeerIdentity& transport, absl::StatusOr<PeerIdentity> caller) {
        return ListCertificatesAs(transport, std::move(caller), response);
      });
}

grpc::Status InspectionService::ListCertificatesAs(const PeerIdentity& transport,
                                                   absl::StatusOr<PeerIdentity> caller,
                                                   v1::ListCertificatesResponse* response) {
  PeerIdentity peer;
  absl::StatusOr<InspectionScope> scope =
      Scope(transport, std::move(caller), "Inspection/ListCertificates", &peer);
  if (!scope.ok()) return ToGrpc(scope.status());
  for (const std::string& name : publisher_->Names()) {
    if (!Visible(*scope, peer, name)) continue;
    std::optional<CertificateSnapshot> snapshot = publisher_->Snapshot(name);
    if (!snapshot.has_value()) continue;
    v1::CertificateSummary* summary = response->add_certificates();
    summary->set_name(name);
    summary->set_source(snapshot->source);
    uint64_t version = 0;
    if (snapshot->current.has_value()) {
      version = snapshot->current->version;
      summary->set_version(version);
      summary->set_fingerprint(snapshot->current->info.fingerprint);
      *summary->mutable_not_after() = ToProtoTime(snapshot->current->info.not_after);
      summary->set_pinned(snapshot->pin.version == version);
    }
    const Fleet::Counts counts =
        fleet_->CountFor(name, version, scope->everything ? "" : scope->namespace_,
                         FleetScope::kAllReplicas);
    summary->set_clients(counts.clients);
    summary->set_clients_acknowledged(counts.acknowledged);
  }
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* InspectionService::GetCertificate(
    grpc::CallbackServerContext* context, const v1::GetCertificateRequest* request,
    v1::Certificate* response) {
  return WithCaller(context, authenticator_,
                    [this, request, response](const PeerIdentity& transport,
                                              absl::StatusOr<PeerIdentity> caller) {
                      return GetCertificateAs(transport, std::move(caller), *request, response);
                    });
}

grpc::Status InspectionService::GetCertificateAs(const PeerIdentity& transport,
                                                 absl::StatusOr<PeerIdentity> caller,
                                                 const v1::GetCertificateRequest& request,
                                                 v1::Certificate* response) {
  PeerIdentity peer;
  absl::StatusOr<InspectionScope> scope =
      Scope(transport, std::move(caller), "Inspection/GetCertificate", &peer);
  if (!scope.ok()) return ToGrpc(scope.status());
  if (request.name().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "name is required");
  }
  std::optional<CertificateSnapshot> snapshot = publisher_->Snapshot(request.name());
  // A certificate the caller may not receive is reported like one that does not exist.
  if (!snapshot.has_value() || !Visible(*scope, peer, request.name())) {
    return grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        absl::StrCat("certificate \"", request.name(), "\" is not distributed by this server"));
  }
  response->set_name(snapshot->name);
  response->set_source(snapshot->source);
  for (const std::string& dns : snapshot->required_dns_names) response->add_required_dns_names(dns);
  if (snapshot->current.has_value())
    FillVersionInfo(*snapshot->current, response->mutable_current());
  for (const VersionSummary& summary : snapshot->history) {
    FillVersionInfo(summary, response->add_history());
  }
  if (snapshot->pin.version != 0) {
    v1::Pin* pin = response->mutable_pin();
    pin->set_pinned(true);
    pin->set_version(snapshot->pin.version);
    pin->set_rolled_back_from(snapshot->pin.rolled_back_from);
    *pin->mutable_since() = ToProtoTime(snapshot->pin.since);
  }
  if (snapshot->last_rejection.has_value()) {
    v1::Rejection* rejection = response->mutable_last_rejection();
    rejection->set_reason(snapshot->last_rejection->reason);
    rejection->set_message(snapshot->last_rejection->message);
    *rejection->mutable_time() = ToProtoTime(snapshot->last_rejection->time);
    rejection->set_fingerprint(snapshot->last_rejection->fingerprint);
  }
  response->set_rejections(snapshot->rejections);
  response->set_source_present(snapshot->source_present);
  response->set_source_read_error(snapshot->read_error);
  // The rollout names other tenants' namespaces and clients (waves, halt reason): admins only.
  if (rollout_ != nullptr && scope->everything) {
    std::optional<v1::Rollout> rollout = rollout_->Describe(request.name());
    if (rollout.has_value()) *response->mutable_rollout() = *std::move(rollout);
  }
  response->set_expiring_soon(snapshot->expiring_soon);
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* InspectionService::ListClients(grpc::CallbackServerContext* context,
                                                         const v1::ListClientsRequest* request,
                                                         v1::ListClientsResponse* response) {
  return WithCaller(context, authenticator_,
                    [this, request, response](const PeerIdentity& transport,
                                              absl::StatusOr<PeerIdentity> caller) {
                      return ListClientsAs(transport, std::move(caller), *request, response);
                    });
}

grpc::Status InspectionService::ListClientsAs(const PeerIdentity& transport,
                                              absl::StatusOr<PeerIdentity> caller,
                                              const v1::ListClientsRequest& request,
                                              v1::ListClientsResponse* response) {
  PeerIdentity peer;
  absl::StatusOr<InspectionScope> scope =
      Scope(transport, std::move(caller), "Inspection/ListClients", &peer);
  if (!scope.ok()) return ToGrpc(scope.status());
  std::string namespace_filter = request.namespace_();
  if (!scope->everything) {
    if (!namespace_filter.empty() && namespace_filter != scope->namespace_) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          "only admins may list clients of other namespaces");
    }
    namespace_filter = scope->namespace_;
  }
  uint64_t after = 0;
  if (!request.page_token().empty() && !absl::SimpleAtoi(request.page_token(), &after)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "page_token is not a token returned by ListClients");
  }
  uint32_t page_size = request.page_size() == 0 ? kDefaultPageSize : request.page_size();
  page_size = std::min(page_size, kMaxPageSize);
  Fleet::Page page = fleet_->List(namespace_filter, request.name(), page_size, after,
                                  FleetScope::kAllReplicas);
  for (const ClientRecord& record : page.clients) {
    v1::ClientInfo* info = response->add_clients();
    info->set_client_id(record.client_id);
    info->set_namespace_(record.namespace_);
    info->set_peer(record.peer);
    info->set_identity(record.identity);
    info->set_connected(record.connected);
    info->set_replica(record.replica);
    *info->mutable_connected_since() = ToProtoTime(record.connected_since);
    *info->mutable_last_seen() = ToProtoTime(record.last_seen);
    for (const ClientCertificateState& state : record.certificates) {
      v1::ClientCertificate* certificate = info->add_certificates();
      certificate->set_name(state.name);
      certificate->set_sent_version(state.sent_version);
      certificate->set_acknowledged_version(state.acknowledged_version);
      certificate->set_last_error(state.last_error);
      certificate->set_last_error_version(state.last_error_version);
      certificate->set_hook_warning(state.hook_warning);
      certificate->set_serving_verified(state.serving_verified);
      if (rollout_ != nullptr) {
        certificate->set_waiting_for_wave(rollout_->WaitingFor(state.name, record.namespace_));
      }
      if (state.sent_at != absl::InfinitePast()) {
        *certificate->mutable_sent_at() = ToProtoTime(state.sent_at);
      }
      if (state.acknowledged_at != absl::InfinitePast()) {
        *certificate->mutable_acknowledged_at() = ToProtoTime(state.acknowledged_at);
      }
    }
  }
  response->set_next_page_token(page.next_page_token);
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* InspectionService::ListNamespaces(
    grpc::CallbackServerContext* context, const v1::ListNamespacesRequest* request,
    v1::ListNamespacesResponse* response) {
  return WithCaller(context, authenticator_,
                    [this, request, response](const PeerIdentity& transport,
                                              absl::StatusOr<PeerIdentity> caller) {
                      return ListNamespacesAs(transport, std::move(caller), *request, response);
                    });
}

grpc::Status InspectionService::ListNamespacesAs(const PeerIdentity& transport,
                                                 absl::StatusOr<PeerIdentity> caller,
                                                 const v1::ListNamespacesRequest& request,
                                                 v1::ListNamespacesResponse* response) {
  PeerIdentity peer;
  absl::StatusOr<InspectionScope> scope =
      Scope(transport, std::move(caller), "Inspection/ListNamespaces", &peer);
  if (!scope.ok()) return ToGrpc(scope.status());
  std::string namespace_filter = request.namespace_();
  if (!scope->everything) {
    if (!namespace_filter.empty() && namespace_filter != scope->namespace_) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          "only admins may list other namespaces");
    }
    namespace_filter = scope->namespace_;
  }
  if (coverage_ == nullptr || !coverage_->known()) {
    response->set_namespaces_known(false);
    return grpc::Status::OK;
  }
  response->set_namespaces_known(true);
  for (const NamespaceCoverage& row :
       coverage_->List(request.name(), namespace_filter, FleetScope::kAllReplicas)) {
    if (request.missing_only() && row.state == NamespaceCoverage::State::kInSync) continue;
    v1::GrantedNamespace* granted = response->add_namespaces();
    granted->set_name(row.certificate);
    granted->set_namespace_(row.namespace_);
    granted->set_clients(row.clients);
    granted->set_clients_on_current(row.clients_on_current);
    granted->set_granted_by(row.granted_by);
    granted->set_waiting_for_wave(row.waiting_for_wave);
    switch (row.state) {
      case NamespaceCoverage::State::kInSync:
        granted->set_state(v1::GrantedNamespace::IN_SYNC);
        break;
      case NamespaceCoverage::State::kBehind:
        granted->set_state(v1::GrantedNamespace::BEHIND);
        break;
      case NamespaceCoverage::State::kNoClient:
        granted->set_state(v1::GrantedNamespace::NO_CLIENT);
        break;
    }
  }
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* AdminService::Rollback(grpc::CallbackServerContext* context,
                                                 const v1::RollbackRequest* request,
                                                 v1::RollbackResponse* response) {
  return WithCaller(context, authenticator_,
                    [this, request, response](const PeerIdentity& transport,
                                              absl::StatusOr<PeerIdentity> caller) {
                      return RollbackAs(transport, std::move(caller), *request, response);
                    });
}

grpc::Status AdminService::RollbackAs(const PeerIdentity& transport,
                                      absl::StatusOr<PeerIdentity> caller,
                                      const v1::RollbackRequest& request,
                                      v1::RollbackResponse* response) {
  if (!caller.ok()) {
    authorizer_->Audit(transport, "Admin/Rollback", request.name(), caller.status());
    return ToGrpc(caller.status());
  }
  const PeerIdentity& peer = *caller;
  absl::Status allowed = authorizer_->AuthorizeAdmin(peer);
  if (!allowed.ok()) {
    authorizer_->Audit(peer, "Admin/Rollback", request.name(), allowed);
    return ToGrpc(allowed);
  }
  if (request.name().empty() || request.version() == 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "name and version are required");
  }
  absl::StatusOr<RollbackResult> result = publisher_->Rollback(request.name(), request.version());
  authorizer_->Audit(peer, "Admin/Rollback", request.name(),
                     result.ok() ? absl::OkStatus() : result.status());
  if (!result.ok()) return ToGrpc(result.status());
  response->set_name(request.name());
  response->set_version(result->version);
  response->set_rolled_back_from(result->rolled_back_from);
  response->set_fingerprint(result->fingerprint);
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* AdminService::ResumeRollout(grpc::CallbackServerContext* context,
                                                      const v1::RolloutRequest* request,
                                                      v1::Rollout* response) {
  return WithCaller(context, authenticator_,
                    [this, request, response](const PeerIdentity& transport,
                                              absl::StatusOr<PeerIdentity> caller) {
                      return RolloutAs(transport, std::move(caller), "Admin/ResumeRollout",
                                       *request, response);
                    });
}

grpc::ServerUnaryReactor* AdminService::PromoteRollout(grpc::CallbackServerContext* context,
                                                       const v1::RolloutRequest* request,
                                                       v1::Rollout* response) {
  return WithCaller(context, authenticator_,
                    [this, request, response](const PeerIdentity& transport,
                                              absl::StatusOr<PeerIdentity> caller) {
                      return RolloutAs(transport, std::move(caller), "Admin/PromoteRollout",
                                       *request, response);
                    });
}

grpc::Status AdminService::RolloutAs(const PeerIdentity& transport,
                                     absl::StatusOr<PeerIdentity> caller, const std::string& method,
                                     const v1::RolloutRequest& request, v1::Rollout* response) {
  if (!caller.ok()) {
    authorizer_->Audit(transport, method, request.name(), caller.status());
    return ToGrpc(caller.status());
  }
  const PeerIdentity& peer = *caller;
  absl::Status allowed = authorizer_->AuthorizeAdmin(peer);
  if (!allowed.ok()) {
    authorizer_->Audit(peer, method, request.name(), allowed);
    return ToGrpc(allowed);
  }
  if (request.name().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "name is required");
  }
  absl::StatusOr<v1::Rollout> result =
      rollout_ == nullptr
          ? absl::StatusOr<v1::Rollout>(absl::FailedPreconditionError("no staged rollouts here"))
      : method == "Admin/ResumeRollout" ? rollout_->Resume(request.name())
                                        : rollout_->Promote(request.name());
  authorizer_->Audit(peer, method, request.name(),
                     result.ok() ? absl::OkStatus() : result.status());
  if (!result.ok()) return ToGrpc(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

}  // namespace certcast
