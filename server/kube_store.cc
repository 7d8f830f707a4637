#include "server/kube_store.h"

#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/secret.h"
#include "common/status_macros.h"
#include "kube/secret.h"

namespace certcast {
namespace {

constexpr char kScheme[] = "kubernetes://";
constexpr char kStateKey[] = "state";

bool IsDnsLabel(absl::string_view s) {
  if (s.empty() || s.size() > 63) return false;
  for (char c : s) {
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-')) return false;
  }
  return absl::ascii_isalnum(s.front()) && absl::ascii_isalnum(s.back());
}

}  // namespace

absl::StatusOr<KubeStoreLocation> ParseKubeStoreUrl(const std::string& url) {
  if (!absl::StartsWith(url, kScheme)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--store=", url, ": expected kubernetes://NAMESPACE/NAME"));
  }
  std::vector<std::string> parts = absl::StrSplit(url.substr(sizeof(kScheme) - 1), '/');
  if (parts.size() != 2 || !IsDnsLabel(parts[0]) || !IsDnsLabel(parts[1])) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--store=", url,
        ": expected kubernetes://NAMESPACE/NAME, both lowercase DNS labels (letters, digits, "
        "'-', at most 63 characters)"));
  }
  return KubeStoreLocation{parts[0], parts[1]};
}

std::string KubernetesVersionStore::SecretName(const std::string& certificate) const {
  return absl::StrCat(location_.name, "-", certificate);
}

absl::StatusOr<std::optional<CertificateState>> KubernetesVersionStore::Load(
    const std::string& name) {
  RETURN_IF_ERROR(ValidateStateName(name));
  const std::string secret_name = SecretName(name);
  absl::StatusOr<kube::Json> secret =
      api_->Request("GET", kube::SecretPath(location_.ns, secret_name));
  if (absl::IsNotFound(secret.status())) return std::nullopt;
  if (!secret.ok()) {
    return Annotate(secret.status(), absl::StrCat("loading certificate \"", name, "\""));
  }
  absl::Cleanup wipe_secret = [&secret] { kube::WipeSecretData(&*secret); };
  const std::string where = absl::StrCat("state Secret ", location_.ns, "/", secret_name);
  const kube::Json& data = kube::Member(kube::Member(*secret, "data"), kStateKey);
  if (!data.is_string()) return absl::DataLossError(absl::StrCat(where, " has no ", kStateKey));
  std::string bytes;
  absl::Cleanup wipe_bytes = [&bytes] { CleanseString(&bytes); };
  if (!absl::Base64Unescape(data.get_ref<const std::string&>(), &bytes)) {
    return absl::DataLossError(absl::StrCat(where, ": ", kStateKey, " is not valid base64"));
  }
  ASSIGN_OR_RETURN(CertificateState state, DecodeState(name, bytes, where));
  state.store_revision = kube::ResourceVersion(*secret);
  return state;
}

absl::StatusOr<std::string> KubernetesVersionStore::Save(const std::string& name,
                                                         const CertificateState& state) {
  const std::string secret_name = SecretName(name);
  if (secret_name.size() > 253) {
    return absl::InvalidArgumentError(
        absl::StrCat("state Secret name ", secret_name, " is longer than 253 characters"));
  }
  ASSIGN_OR_RETURN(std::string bytes, EncodeState(name, state, history_limit_));
  absl::Cleanup wipe_bytes = [&bytes] { CleanseString(&bytes); };
  const std::string where = absl::StrCat("state Secret ", location_.ns, "/", secret_name);
  if (bytes.size() > kMaxStoredStateBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("the state of certificate \"", name, "\" is ", bytes.size(),
                     " bytes, more than the ", kMaxStoredStateBytes, " a ", where, " may hold"));
  }
  kube::Json secret = {{"apiVersion", "v1"}, {"kind", "Secret"}, {"type", "Opaque"}};
  absl::Cleanup wipe_secret = [&secret] { kube::WipeSecretData(&secret); };
  kube::Json& metadata = secret["metadata"];
  metadata["name"] = secret_name;
  metadata["namespace"] = location_.ns;
  metadata["labels"][kube::kManagedByLabel] = kube::kManagedByValue;
  metadata["labels"][kStoreLabel] = location_.name;
  metadata["annotations"][kube::kCertificateAnnotation] = name;
  if (!state.versions.empty()) {
    metadata["annotations"][kube::kVersionAnnotation] =
        std::to_string(state.versions.back().version);
  }
  metadata["annotations"][kWriterAnnotation] = writer_;
  std::string encoded = absl::Base64Escape(bytes);
  secret["data"][kStateKey] = encoded;
  CleanseString(&encoded);

  absl::StatusOr<kube::Json> written;
  if (state.store_revision.empty()) {
    written = api_->Request("POST", kube::SecretsPath(location_.ns), &secret);
    if (absl::IsAlreadyExists(written.status())) {
      return absl::AbortedError(absl::StrCat(where, " was created by another replica meanwhile"));
    }
  } else {
    metadata["resourceVersion"] = state.store_revision;
    written = api_->Request("PUT", kube::SecretPath(location_.ns, secret_name), &secret);
    if (kube::IsConflict(written.status())) {
      return absl::AbortedError(absl::StrCat(where, " changed since resourceVersion ",
                                             state.store_revision, ": another replica wrote it"));
    }
    if (absl::IsNotFound(written.status())) {
      return absl::AbortedError(absl::StrCat(where, " was deleted"));
    }
  }
  if (!written.ok()) {
    return Annotate(written.status(), absl::StrCat("saving certificate \"", name, "\""));
  }
  absl::Cleanup wipe_written = [&written] { kube::WipeSecretData(&*written); };
  return kube::ResourceVersion(*written);
}

absl::StatusOr<std::string> KubernetesVersionStore::Claim(const std::string& name,
                                                          const std::string& revision) {
  const std::string secret_name = SecretName(name);
  const std::string where = absl::StrCat("state Secret ", location_.ns, "/", secret_name);
  absl::StatusOr<kube::Json> secret =
      api_->Request("GET", kube::SecretPath(location_.ns, secret_name));
  if (absl::IsNotFound(secret.status())) {
    return absl::AbortedError(absl::StrCat(where, " was deleted"));
  }
  if (!secret.ok()) return Annotate(secret.status(), absl::StrCat("claiming ", where));
  absl::Cleanup wipe_secret = [&secret] { kube::WipeSecretData(&*secret); };
  if (kube::ResourceVersion(*secret) != revision) {
    return absl::AbortedError(absl::StrCat(where, " changed since resourceVersion ", revision,
                                           ": another replica wrote it"));
  }
  // Always a change (so the resourceVersion moves), even when this replica wrote last.
  (*secret)["metadata"]["annotations"][kClaimAnnotation] = absl::StrCat(
      writer_, " ", absl::FormatTime(absl::RFC3339_full, absl::Now(), absl::UTCTimeZone()));
  absl::StatusOr<kube::Json> written =
      api_->Request("PUT", kube::SecretPath(location_.ns, secret_name), &*secret);
  if (kube::IsConflict(written.status())) {
    return absl::AbortedError(absl::StrCat(where, " changed since resourceVersion ", revision,
                                           ": another replica wrote it"));
  }
  if (!written.ok()) return Annotate(written.status(), absl::StrCat("claiming ", where));
  absl::Cleanup wipe_written = [&written] { kube::WipeSecretData(&*written); };
  return kube::ResourceVersion(*written);
}

}  // namespace certcast
