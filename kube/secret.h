// The kubernetes.io/tls Secret as certcast writes and reads it (DESIGN.md): keys tls.crt,
// tls.key and ca.crt (when present), label app.kubernetes.io/managed-by=certcast, and
// annotations naming the certificate, version and fingerprint.
#ifndef CERTCAST_KUBE_SECRET_H_
#define CERTCAST_KUBE_SECRET_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/certificate.h"
#include "kube/api.h"

namespace certcast::kube {

inline constexpr char kManagedByLabel[] = "app.kubernetes.io/managed-by";
inline constexpr char kManagedByValue[] = "certcast";
inline constexpr char kCertificateAnnotation[] = "certcast.io/certificate";
inline constexpr char kVersionAnnotation[] = "certcast.io/version";
inline constexpr char kFingerprintAnnotation[] = "certcast.io/fingerprint";

std::string SecretsPath(const std::string& ns);
std::string SecretPath(const std::string& ns, const std::string& name);

// Fills `secret` (a new object or one read from the API, whose other fields are kept) with
// the material and certcast's label and annotations.
void SetTlsSecret(Json* secret, const std::string& ns, const std::string& name,
                  const std::string& certificate, uint64_t version, const std::string& fingerprint,
                  const CertificateMaterial& material);

// The material in a Secret's data (base64-decoded). InvalidArgument naming the Secret when
// tls.crt or tls.key is missing or not base64.
absl::StatusOr<CertificateMaterial> MaterialFromSecret(const Json& secret);

bool IsManagedByCertcast(const Json& secret);

// Overwrites the data values of a Secret object (base64 key material) before it is dropped.
void WipeSecretData(Json* secret);

// metadata.resourceVersion of an object; `fallback` when it has none.
std::string ResourceVersion(const Json& object, const std::string& fallback = "");

// "NAMESPACE/NAME" of an object, for messages.
std::string ObjectName(const Json& object);

}  // namespace certcast::kube

#endif  // CERTCAST_KUBE_SECRET_H_
