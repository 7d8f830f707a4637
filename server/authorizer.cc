#include "server/authorizer.h"

#include <algorithm>
#include <ctime>
#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/logging.h"
#include "common/protocol.h"
#include "grpc/grpc_security_constants.h"
#include "openssl/asn1.h"
#include "openssl/bio.h"
#include "openssl/pem.h"
#include "openssl/x509.h"
#include "server/policy.h"

namespace certcast {
namespace {

constexpr char kReasonPayload[] = "certcast.io/denial";

absl::Status Denied(absl::StatusCode code, absl::string_view reason, const std::string& message) {
  absl::Status status(code, message);
  status.SetPayload(kReasonPayload, absl::Cord(reason));
  return status;
}

std::string Who(const PeerIdentity& peer) {
  return peer.proven() ? peer.identity : std::string("an unauthenticated peer");
}

absl::Status RequireIdentity(const PeerIdentity& peer) {
  if (peer.proven()) return absl::OkStatus();
  return Denied(absl::StatusCode::kUnauthenticated, "unauthenticated",
                "no client identity: present a client certificate (mTLS) or a bearer token");
}

// notAfter of a PEM certificate; nullopt when it cannot be read.
std::optional<absl::Time> NotAfter(absl::string_view pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return std::nullopt;
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (cert == nullptr) return std::nullopt;
  std::tm tm{};
  const bool ok = ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) == 1;
  X509_free(cert);
  if (!ok) return std::nullopt;
  return absl::FromTM(tm, absl::UTCTimeZone());
}

}  // namespace

std::string DenialReason(const absl::Status& status) {
  absl::optional<absl::Cord> reason = status.GetPayload(kReasonPayload);
  if (reason.has_value()) return std::string(*reason);
  return absl::StatusCodeToString(status.code());
}

bool ParseSpiffeId(const std::string& id, PeerIdentity* identity) {
  if (!absl::StartsWith(id, "spiffe://")) return false;
  std::vector<std::string> parts = absl::StrSplit(id.substr(9), '/');
  // TRUST_DOMAIN / ns / NAMESPACE / sa / SERVICEACCOUNT
  if (parts.size() != 5 || parts[0].empty() || parts[1] != "ns" || parts[2].empty() ||
      parts[3] != "sa" || parts[4].empty()) {
    return false;
  }
  identity->namespace_ = parts[2];
  identity->name = parts[4];
  return true;
}

std::string PeerAddress(const std::string& peer) {
  const size_t colon = peer.rfind(':');
  const size_t bracket = peer.rfind(']');
  if (colon == std::string::npos || colon < 5 ||
      (bracket != std::string::npos && colon < bracket)) {
    return peer;  // no port (e.g. "unix:/path")
  }
  return peer.substr(0, colon);
}

PeerIdentity TransportIdentity(const grpc::ServerContextBase& context) {
  PeerIdentity identity;
  identity.peer = context.peer();
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return identity;
  for (const grpc::string_ref& value :
       auth->FindPropertyValues(GRPC_PEER_SPIFFE_ID_PROPERTY_NAME)) {
    identity.identity.assign(value.data(), value.size());
    identity.kind = "mtls";
  }
  if (identity.identity.empty()) return identity;
  ParseSpiffeId(identity.identity, &identity);
  // The identity lasts as long as the client certificate: a stream must not outlive it.
  for (const grpc::string_ref& pem : auth->FindPropertyValues(GRPC_X509_PEM_CERT_PROPERTY_NAME)) {
    if (std::optional<absl::Time> not_after = NotAfter(absl::string_view(pem.data(), pem.size()));
        not_after.has_value()) {
      identity.expires = std::min(identity.expires, *not_after);
    } else {
      identity.expires = absl::InfinitePast();  // unreadable: treat as expired, never as eternal
    }
  }
  return identity;
}

std::string BearerToken(const grpc::ServerContextBase& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) return "";
  const std::string value(it->second.data(), it->second.size());
  if (!absl::StartsWithIgnoreCase(value, "bearer ")) return "";
  return value.substr(7);
}

void Authorizer::Audit(const PeerIdentity& peer, const std::string& method,
                       const std::string& certificate, const absl::Status& decision) {
  const bool admin_action = absl::StartsWith(method, "Admin/");
  {
    absl::MutexLock lock(&mu_);
    if (!decision.ok()) ++counters_.denials[DenialReason(decision)];
    if (admin_action && decision.ok()) ++counters_.admin_actions;
  }
  if (decision.ok() && !admin_action) return;  // routine allowed calls are not audit events
  // Identity, peer address and certificate name come from the peer: Peer() escapes and caps
  // them, so a name can neither forge a line nor flood the log.
  const std::string who = Who(peer);
  const std::string name = certificate.empty() ? "-" : certificate;
  if (decision.ok()) {
    LogInfo("audit", {{"identity", Peer(who)},
                      {"peer", Peer(peer.peer)},
                      {"method", method},
                      {"certificate", Peer(name)},
                      {"decision", "allowed"}});
    return;
  }
  LogInfo("audit", {{"identity", Peer(who)},
                    {"peer", Peer(peer.peer)},
                    {"method", method},
                    {"certificate", Peer(name)},
                    {"decision", "denied"},
                    {"reason", DenialReason(decision)},
                    {"code", StatusCodeName(decision.code())},
                    {"detail", Peer(decision.message())}});
}

absl::StatusOr<std::vector<std::string>> Authorizer::WriterNamespaces(
    const PeerIdentity& peer, const std::string& certificate) {
  return Denied(absl::StatusCode::kPermissionDenied, "not_writer",
                absl::StrCat("identity ", peer.identity, " is not a writer of certificate \"",
                             certificate, "\""));
}

AuditCounters Authorizer::audit_counters() {
  absl::MutexLock lock(&mu_);
  return counters_;
}

absl::Status PolicyAuthorizer::RequireTrustedIdentity(const PeerIdentity& peer) const {
  if (absl::Status proven = RequireIdentity(peer); !proven.ok()) return proven;
  if (peer.kind == "mtls" && !trust_domain_.empty() &&
      !absl::StartsWith(peer.identity, absl::StrCat("spiffe://", trust_domain_, "/"))) {
    return Denied(absl::StatusCode::kPermissionDenied, "foreign_trust_domain",
                  absl::StrCat("identity ", peer.identity, " is not in trust domain \"",
                               trust_domain_, "\""));
  }
  return absl::OkStatus();
}

absl::Status PolicyAuthorizer::AuthorizeSubscribe(const PeerIdentity& peer,
                                                  const std::string& namespace_,
                                                  const std::string& certificate) {
  if (absl::Status proven = RequireTrustedIdentity(peer); !proven.ok()) return proven;
  std::shared_ptr<const Policy> policy = policy_ == nullptr ? nullptr : policy_->current();
  // A shared writer (policy: writers) subscribes on behalf of the namespaces the certificate is
  // granted to; the grant itself is checked below like for anyone.
  const bool writer = policy != nullptr && policy->IsWriter(certificate, peer.identity);
  if (peer.namespace_.empty() && !writer) {
    return Denied(absl::StatusCode::kPermissionDenied, "no_namespace",
                  absl::StrCat("identity ", peer.identity,
                               " names no namespace (expected spiffe://TRUST_DOMAIN/ns/NAMESPACE/"
                               "sa/SERVICEACCOUNT, a ServiceAccount token or a static token)"));
  }
  if (namespace_ != peer.namespace_ && !writer) {
    return Denied(absl::StatusCode::kPermissionDenied, "namespace_mismatch",
                  absl::StrCat("the hello names namespace \"", namespace_, "\" but identity ",
                               peer.identity, " belongs to namespace \"", peer.namespace_,
                               "\" and is not a writer of certificate \"", certificate,
                               "\" (policy: writers)"));
  }
  if (policy == nullptr) {
    return Denied(absl::StatusCode::kPermissionDenied, "no_policy",
                  "this server has no policy (--policy) and hands out no key material");
  }
  std::optional<NamespaceLabels> labels;
  if (namespaces_ != nullptr) labels = namespaces_->LabelsOf(namespace_);
  if (!policy->Allows(certificate, namespace_, labels ? &*labels : nullptr)) {
    return Denied(absl::StatusCode::kPermissionDenied, kDenialNotAllowed,
                  absl::StrCat("namespace \"", namespace_, "\" may not receive certificate \"",
                               certificate, "\""));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> PolicyAuthorizer::WriterNamespaces(
    const PeerIdentity& peer, const std::string& certificate) {
  if (absl::Status proven = RequireTrustedIdentity(peer); !proven.ok()) return proven;
  std::shared_ptr<const Policy> policy = policy_ == nullptr ? nullptr : policy_->current();
  if (policy == nullptr || !policy->IsWriter(certificate, peer.identity)) {
    return Denied(absl::StatusCode::kPermissionDenied, "not_writer",
                  absl::StrCat("identity ", peer.identity, " is not a writer of certificate \"",
                               certificate, "\" (policy: writers)"));
  }
  if (namespaces_ == nullptr) {
    return absl::FailedPreconditionError(
        "the server does not watch namespaces (--watch-namespaces), so it cannot list the "
        "namespaces a shared writer serves");
  }
  if (!namespaces_->synced()) {
    return absl::UnavailableError("the server has not listed the namespaces yet; retry");
  }
  std::vector<std::string> granted;
  for (const auto& [name, labels] : *namespaces_->snapshot()) {
    if (policy->Allows(certificate, name, &labels)) granted.push_back(name);
  }
  return granted;
}

bool PolicyAuthorizer::IsAdmin(const std::string& identity) const {
  if (admins_.count(identity) > 0) return true;
  std::shared_ptr<const Policy> policy = policy_ == nullptr ? nullptr : policy_->current();
  return policy != nullptr && policy->IsAdmin(identity);
}

absl::Status PolicyAuthorizer::AuthorizeAdmin(const PeerIdentity& peer) {
  if (absl::Status proven = RequireTrustedIdentity(peer); !proven.ok()) return proven;
  if (IsAdmin(peer.identity)) return absl::OkStatus();
  return Denied(
      absl::StatusCode::kPermissionDenied, "not_admin",
      absl::StrCat("identity ", peer.identity, " is not an admin (policy: admins, or --admin)"));
}

absl::StatusOr<InspectionScope> PolicyAuthorizer::AuthorizeInspection(const PeerIdentity& peer) {
  if (absl::Status proven = RequireTrustedIdentity(peer); !proven.ok()) return proven;
  if (IsAdmin(peer.identity)) return InspectionScope{true, ""};
  // A non-admin sees its own namespace; an identity without one has nothing to see (an empty
  // namespace must never become "no filter").
  if (peer.namespace_.empty()) {
    return Denied(absl::StatusCode::kPermissionDenied, "no_namespace",
                  absl::StrCat("identity ", peer.identity,
                               " names no namespace and is not an admin (policy: admins)"));
  }
  return InspectionScope{false, peer.namespace_};
}

}  // namespace certcast
