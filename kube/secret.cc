#include "kube/secret.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/secret.h"

namespace certcast::kube {

std::string SecretsPath(const std::string& ns) {
  return absl::StrCat("/api/v1/namespaces/", ns, "/secrets");
}

std::string SecretPath(const std::string& ns, const std::string& name) {
  return absl::StrCat(SecretsPath(ns), "/", name);
}

std::string ObjectName(const Json& object) {
  const Json& metadata = Member(object, "metadata");
  return absl::StrCat(StringMember(metadata, "namespace"), "/", StringMember(metadata, "name"));
}

std::string ResourceVersion(const Json& object, const std::string& fallback) {
  return StringMember(Member(object, "metadata"), "resourceVersion", fallback);
}

void SetTlsSecret(Json* secret, const std::string& ns, const std::string& name,
                  const std::string& certificate, uint64_t version, const std::string& fingerprint,
                  const CertificateMaterial& material) {
  Json& s = *secret;
  s["apiVersion"] = "v1";
  s["kind"] = "Secret";
  s["type"] = "kubernetes.io/tls";
  s["metadata"]["name"] = name;
  s["metadata"]["namespace"] = ns;
  s["metadata"]["labels"][kManagedByLabel] = kManagedByValue;
  s["metadata"]["annotations"][kCertificateAnnotation] = certificate;
  s["metadata"]["annotations"][kVersionAnnotation] = std::to_string(version);
  s["metadata"]["annotations"][kFingerprintAnnotation] = fingerprint;
  WipeSecretData(secret);
  s["data"] = Json::object();
  s["data"]["tls.crt"] = absl::Base64Escape(material.chain_pem);
  std::string key = absl::Base64Escape(material.key_pem.reveal());
  s["data"]["tls.key"] = key;
  CleanseString(&key);
  if (!material.ca_pem.empty()) s["data"]["ca.crt"] = absl::Base64Escape(material.ca_pem);
}

absl::StatusOr<CertificateMaterial> MaterialFromSecret(const Json& secret) {
  // A reference, not a copy: the data holds the key.
  const Json& data = Member(secret, "data");
  auto decode = [&](const char* key, bool required, std::string* out) -> absl::Status {
    if (!Member(data, key).is_string()) {
      if (!required) return absl::OkStatus();
      return absl::InvalidArgumentError(
          absl::StrCat("Secret ", ObjectName(secret), " has no ", key));
    }
    if (!absl::Base64Unescape(Member(data, key).get_ref<const std::string&>(), out)) {
      return absl::InvalidArgumentError(
          absl::StrCat("Secret ", ObjectName(secret), ": ", key, " is not valid base64"));
    }
    return absl::OkStatus();
  };
  CertificateMaterial material;
  std::string key;
  absl::Status status = decode("tls.crt", true, &material.chain_pem);
  if (status.ok()) status = decode("tls.key", true, &key);
  if (status.ok()) status = decode("ca.crt", false, &material.ca_pem);
  material.key_pem = SecretBytes(key);
  CleanseString(&key);
  if (!status.ok()) return status;
  return material;
}

bool IsManagedByCertcast(const Json& secret) {
  return StringMember(Member(Member(secret, "metadata"), "labels"), kManagedByLabel) ==
         kManagedByValue;
}

void WipeSecretData(Json* secret) {
  if (!secret->is_object() || !secret->contains("data") || !(*secret)["data"].is_object()) return;
  for (auto& [key, value] : (*secret)["data"].items()) {
    if (value.is_string()) CleanseString(&value.get_ref<std::string&>());
  }
}

}  // namespace certcast::kube
