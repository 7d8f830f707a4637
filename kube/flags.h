// The Kubernetes API flags both binaries take (--kube-api-url, --kube-token-file,
// --kube-ca-file), defined once. Empty values mean the in-cluster defaults.
#ifndef CERTCAST_KUBE_FLAGS_H_
#define CERTCAST_KUBE_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "kube/api.h"

ABSL_DECLARE_FLAG(std::string, kube_api_url);
ABSL_DECLARE_FLAG(std::string, kube_token_file);
ABSL_DECLARE_FLAG(std::string, kube_ca_file);

namespace certcast::kube {

// KubeConfig::Resolve of the flags' values.
absl::StatusOr<KubeConfig> KubeConfigFromFlags();

}  // namespace certcast::kube

#endif  // CERTCAST_KUBE_FLAGS_H_
