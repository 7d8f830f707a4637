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

// The Secret as the API returned it must have the shape certcast reads and updates in place:
// nlohmann's value() and operator[] throw on any other type, and no answer from the API may
// end the client. InvalidArgument naming the Secret and the part that is wrong.
absl::Status CheckShape(const kube::Json& secret, const std::string& describe) {
  auto wrong = [&](const std::string& part, const kube::Json& value, const char* expected) {
    return absl::InvalidArgumentError(
        absl::StrCat(describe, " as the Kubernetes API returned it: ", part, " is a ",
                     value.type_name(), ", not ", expected, "; refusing to use it"));
  };
  if (!secret.is_object()) return wrong("the object", secret, "an object");
  const kube::Json& metadata = kube::Member(secret, "metadata");
  if (!metadata.is_null() && !metadata.is_object()) return wrong("metadata", metadata, "an object");
  for (const char* part : {"labels", "annotations"}) {
    const kube::Json& value = kube::Member(metadata, part);
    if (!value.is_null() && !value.is_object()) {
      return wrong(absl::StrCat("metadata.", part), value, "an object");
    }
  }
  const kube::Json& data = kube::Member(secret, "data");
  if (!data.is_null() && !data.is_object()) return wrong("data", data, "an object");
  const kube::Json& type = kube::Member(secret, "type");
  if (!type.is_null() && !type.is_string()) return wrong("type", type, "a string");
  return absl::OkStatus();
}

bool Matches(const kube::Json& secret, const VersionedMaterial& version) {
  absl::StatusOr<CertificateMaterial> held = kube::MaterialFromSecret(secret);
  if (!held.ok() || *held != version.material) return false;
  const kube::Json& annotations = kube::Member(kube::Member(secret, "metadata"), "annotations");
  return kube::StringMember(secret, "type") == "kubernetes.io/tls" &&
         kube::StringMember(annotations, kube::kVersionAnnotation) ==
             std::to_string(version.version) &&
         kube::StringMember(annotations, kube::kFingerprintAnnotation) == version.fingerprint;
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
      message += options_.permission_hint.empty()
                     ? PermissionHint(options_.namespace_, options_.secret_name)
                     : options_.permission_hint;
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
    if (absl::Status shape = CheckShape(*existing, Describe()); !shape.ok()) {
      kube::WipeSecretData(&*existing);
      return shape;
    }
    if (!kube::IsManagedByCertcast(*existing)) {
      kube::WipeSecretData(&*existing);
      return absl::AlreadyExistsError(absl::StrCat(
          Describe(), " exists and is not managed by certcast (it lacks the label ",
          kube::kManagedByLabel, "=", kube::kManagedByValue,
          "); refusing to overwrite it: delete or rename it, or choose another --secret-name"));
    }
    if (kube::StringMember(*existing, "type") != "kubernetes.io/tls") {
      kube::WipeSecretData(&*existing);
      return absl::FailedPreconditionError(absl::StrCat(
          Describe(), " has type ", kube::StringMember(*existing, "type", "(none)"),
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
  if (absl::Status shape = CheckShape(*existing, Describe()); !shape.ok()) {
    kube::WipeSecretData(&*existing);
    return shape;
  }
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
  if (absl::Status shape = CheckShape(*existing, Describe()); !shape.ok()) {
    kube::WipeSecretData(&*existing);
    return shape;
  }
  const bool managed = kube::IsManagedByCertcast(*existing);
  const kube::Json& metadata = kube::Member(*existing, "metadata");
  const std::string uid = kube::StringMember(metadata, "uid");
  const std::string resource_version = kube::StringMember(metadata, "resourceVersion");
  kube::WipeSecretData(&*existing);
  if (!managed) return absl::OkStatus();
  // Delete exactly the Secret that was checked: a foreign one swapped in meanwhile has another
  // uid, and the API refuses the delete (409) instead of removing it.
  kube::Json options = {{"apiVersion", "v1"},
                        {"kind", "DeleteOptions"},
                        {"preconditions", {{"uid", uid}, {"resourceVersion", resource_version}}}};
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
