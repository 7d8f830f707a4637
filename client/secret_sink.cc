#include "client/secret_sink.h"

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "kube/secret.h"

namespace certcast {
namespace {

// What the Role must grant, for a 403 to say what is missing.
std::string PermissionHint(const std::string& ns, const std::string& name) {
  return absl::StrCat("; the client's Role needs get, update, patch, list and watch on Secret \"",
                      name, "\" and create on secrets in namespace \"", ns, "\"");
}

bool Matches(const kube::Json& secret, const VersionedMaterial& version) {
  absl::StatusOr<CertificateMaterial> held = kube::MaterialFromSecret(secret);
  if (!held.ok() || *held != version.material) return false;
  const kube::Json annotations =
      secret.value("metadata", kube::Json::object()).value("annotations", kube::Json::object());
  return secret.value("type", "") == "kubernetes.io/tls" &&
         annotations.value(kube::kVersionAnnotation, "") == std::to_string(version.version) &&
         annotations.value(kube::kFingerprintAnnotation, "") == version.fingerprint;
}

}  // namespace

std::string SecretSink::SecretRef() const {
  return absl::StrCat(options_.namespace_, "/", options_.secret_name);
}

std::string SecretSink::Describe() const {
  return absl::StrCat("Secret ", options_.namespace_, "/", options_.secret_name);
}

absl::StatusOr<ApplyResult> SecretSink::Apply(const VersionedMaterial& version) {
  absl::MutexLock lock(&mu_);
  absl::StatusOr<ApplyResult> result = ApplyLocked(version);
  if (result.ok()) applied_ = version;
  return result;
}

absl::StatusOr<ApplyResult> SecretSink::ApplyLocked(const VersionedMaterial& version) {
  const std::string path = kube::SecretPath(options_.namespace_, options_.secret_name);
  auto annotate = [&](const absl::Status& status) {
    std::string message = absl::StrCat(Describe(), ": ", status.message());
    if (absl::IsPermissionDenied(status)) {
      message += PermissionHint(options_.namespace_, options_.secret_name);
    }
    return absl::Status(status.code(), message);
  };
  for (int attempt = 0; attempt <= options_.max_conflict_retries; ++attempt) {
    absl::StatusOr<kube::Json> existing = api_->Request("GET", path);
    if (absl::IsNotFound(existing.status())) {
      kube::Json secret = kube::Json::object();
      kube::SetTlsSecret(&secret, options_.namespace_, options_.secret_name, version.name,
                         version.version, version.fingerprint, version.material);
      absl::StatusOr<kube::Json> created =
          api_->Request("POST", kube::SecretsPath(options_.namespace_), &secret);
      kube::WipeSecretData(&secret);
      if (absl::IsAlreadyExists(created.status())) continue;  // created meanwhile: look again
      if (!created.ok()) return annotate(created.status());
      kube::WipeSecretData(&*created);
      ++counters_.writes;
      LogInfo(
          "Secret created",
          {{"secret", SecretRef()}, {"certificate", version.name}, {"version", version.version}});
      return ApplyResult::kWritten;
    }
    if (!existing.ok()) return annotate(existing.status());
    if (!kube::IsManagedByCertcast(*existing)) {
      kube::WipeSecretData(&*existing);
      return absl::AlreadyExistsError(absl::StrCat(
          Describe(), " exists and is not managed by certcast (it lacks the label ",
          kube::kManagedByLabel, "=", kube::kManagedByValue,
          "); refusing to overwrite it: delete or rename it, or choose another --secret-name"));
    }
    if (existing->value("type", "") != "kubernetes.io/tls") {
      kube::WipeSecretData(&*existing);
      return absl::FailedPreconditionError(absl::StrCat(
          Describe(), " has type ", existing->value("type", "?"),
          " (the type of a Secret cannot change); delete it so certcast can recreate it"));
    }
    if (Matches(*existing, version)) {
      kube::WipeSecretData(&*existing);
      return ApplyResult::kUnchanged;
    }
    // resourceVersion stays in the body: the API refuses the update if the Secret changed.
    kube::SetTlsSecret(&*existing, options_.namespace_, options_.secret_name, version.name,
                       version.version, version.fingerprint, version.material);
    absl::StatusOr<kube::Json> updated = api_->Request("PUT", path, &*existing);
    kube::WipeSecretData(&*existing);
    if (kube::IsConflict(updated.status())) {
      ++counters_.conflicts;
      LogDebug("Secret: conflict on update, reading it again", {{"secret", SecretRef()}});
      continue;
    }
    if (!updated.ok()) return annotate(updated.status());
    kube::WipeSecretData(&*updated);
    ++counters_.writes;
    LogInfo("Secret updated",
            {{"secret", SecretRef()}, {"certificate", version.name}, {"version", version.version}});
    return ApplyResult::kWritten;
  }
  return absl::AbortedError(absl::StrCat(Describe(), ": still conflicting after ",
                                         options_.max_conflict_retries + 1,
                                         " attempts; will retry"));
}

absl::StatusOr<std::string> SecretSink::HeldFingerprint(const std::string& /*name*/) {
  absl::StatusOr<kube::Json> existing =
      api_->Request("GET", kube::SecretPath(options_.namespace_, options_.secret_name));
  if (!existing.ok()) return existing.status();
  if (!kube::IsManagedByCertcast(*existing)) {
    kube::WipeSecretData(&*existing);
    return absl::NotFoundError(Describe() + " is not managed by certcast");
  }
  absl::StatusOr<CertificateMaterial> material = kube::MaterialFromSecret(*existing);
  kube::WipeSecretData(&*existing);
  if (!material.ok()) return material.status();
  return LeafFingerprint(material->chain_pem);
}

SecretSinkCounters SecretSink::counters() {
  absl::MutexLock lock(&mu_);
  return counters_;
}

void SecretSink::Start() {
  watcher_ = std::make_unique<kube::NamedObjectWatcher>(
      api_, kube::SecretsPath(options_.namespace_), options_.secret_name,
      [this](const std::string& event) {
        if (event == "DELETED") RestoreIfChanged("deleted");
        if (event == "MODIFIED") RestoreIfChanged("edited");
        if (event == "RESYNC") RestoreIfChanged("changed while unwatched");
      },
      kube::NamedObjectWatcher::Options{options_.watch_idle_timeout, 300});
  watcher_->Start();
}

void SecretSink::Stop() {
  if (watcher_ != nullptr) watcher_->Stop();
}

void SecretSink::RestoreIfChanged(const std::string& why) {
  absl::MutexLock lock(&mu_);
  if (!applied_.has_value()) return;
  absl::StatusOr<ApplyResult> result = ApplyLocked(*applied_);
  if (!result.ok()) {
    LogWarn(absl::StrCat("Secret was ", why, "; restoring it failed"),
            {{"secret", SecretRef()},
             {"certificate", applied_->name},
             {"version", applied_->version},
             {"error", result.status()}});
    return;
  }
  if (*result == ApplyResult::kWritten) {
    ++counters_.restores;
    LogWarn(
        absl::StrCat("Secret was ", why, " by someone else; restored version ", applied_->version),
        {{"secret", SecretRef()}, {"certificate", applied_->name}, {"version", applied_->version}});
  }
}

absl::Status SecretSink::Remove(const std::string& /*name*/) {
  absl::MutexLock lock(&mu_);
  applied_.reset();
  const std::string path = kube::SecretPath(options_.namespace_, options_.secret_name);
  absl::StatusOr<kube::Json> existing = api_->Request("GET", path);
  if (absl::IsNotFound(existing.status())) return absl::OkStatus();
  if (!existing.ok()) return existing.status();
  const bool managed = kube::IsManagedByCertcast(*existing);
  const kube::Json metadata = existing->value("metadata", kube::Json::object());
  kube::WipeSecretData(&*existing);
  if (!managed) return absl::OkStatus();
  // Delete exactly the Secret that was checked: a foreign one swapped in meanwhile has another
  // uid, and the API refuses the delete (409) instead of removing it.
  kube::Json options = {{"apiVersion", "v1"},
                        {"kind", "DeleteOptions"},
                        {"preconditions",
                         {{"uid", metadata.value("uid", "")},
                          {"resourceVersion", metadata.value("resourceVersion", "")}}}};
  absl::StatusOr<kube::Json> deleted = api_->Request("DELETE", path, &options);
  if (kube::IsConflict(deleted.status())) {
    return absl::AbortedError(absl::StrCat(Describe(), " changed while being removed; retrying"));
  }
  if (!deleted.ok() && !absl::IsNotFound(deleted.status())) {
    return absl::Status(deleted.status().code(),
                        absl::StrCat(Describe(), ": ", deleted.status().message(),
                                     absl::IsPermissionDenied(deleted.status())
                                         ? "; --delete-on-revoke needs delete on this Secret"
                                         : ""));
  }
  LogWarn("Secret deleted (access revoked, --delete-on-revoke)", {{"secret", SecretRef()}});
  return absl::OkStatus();
}

}  // namespace certcast
