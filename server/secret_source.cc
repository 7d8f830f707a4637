#include "server/secret_source.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "kube/secret.h"

namespace certcast {

SecretSource::SecretSource(kube::KubeApi* api, std::string ns, std::string name,
                           kube::NamedObjectWatcher::Options watch)
    : api_(api), namespace_(std::move(ns)), name_(std::move(name)) {
  watcher_ = std::make_unique<kube::NamedObjectWatcher>(
      api_, kube::SecretsPath(namespace_), name_,
      [this](const std::string&) {
        absl::MutexLock lock(&mu_);
        changed_ = true;
      },
      watch);
  watcher_->Start();
}

SecretSource::~SecretSource() { watcher_->Stop(); }

absl::StatusOr<CertificateMaterial> SecretSource::Read() {
  absl::StatusOr<kube::Json> secret = api_->Request("GET", kube::SecretPath(namespace_, name_));
  if (absl::IsNotFound(secret.status())) {
    return WithReason(
        absl::NotFoundError(absl::StrCat("Secret ", namespace_, "/", name_, " does not exist")),
        "missing");
  }
  if (!secret.ok()) return WithReason(secret.status(), "unreadable");
  absl::StatusOr<CertificateMaterial> material = kube::MaterialFromSecret(*secret);
  const std::string revision = kube::ResourceVersion(*secret);
  kube::WipeSecretData(&*secret);
  if (!material.ok()) return WithReason(material.status(), "malformed_secret");
  absl::MutexLock lock(&mu_);
  last_revision_ = revision;
  return material;
}

std::string SecretSource::LastReadRevision() {
  absl::MutexLock lock(&mu_);
  return last_revision_;
}

bool SecretSource::WaitForChange(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return changed_ || interrupted_; };
  mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
  if (interrupted_ || !changed_) return false;
  changed_ = false;
  return true;
}

void SecretSource::Interrupt() {
  absl::MutexLock lock(&mu_);
  interrupted_ = true;
}

absl::Status ParseSecretReference(const std::string& text, std::string* ns, std::string* name) {
  if (!absl::StartsWith(text, "secret:")) {
    return absl::InvalidArgumentError(absl::StrCat("\"", text, "\" is not secret:NAMESPACE/NAME"));
  }
  std::vector<std::string> parts = absl::StrSplit(text.substr(7), '/');
  if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", text, "\": expected secret:NAMESPACE/NAME"));
  }
  *ns = parts[0];
  *name = parts[1];
  return absl::OkStatus();
}

}  // namespace certcast
