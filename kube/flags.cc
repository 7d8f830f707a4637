#include "kube/flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, kube_api_url, "",
          "Kubernetes API URL. Default: in-cluster (KUBERNETES_SERVICE_HOST).");
ABSL_FLAG(std::string, kube_token_file, "",
          "Bearer token file for the API, re-read on every request. Default: the ServiceAccount "
          "token.");
ABSL_FLAG(std::string, kube_ca_file, "",
          "CA bundle that verifies the API server. Default: the ServiceAccount ca.crt.");

namespace certcast::kube {

absl::StatusOr<KubeConfig> KubeConfigFromFlags() {
  return KubeConfig::Resolve(absl::GetFlag(FLAGS_kube_api_url),
                             absl::GetFlag(FLAGS_kube_token_file),
                             absl::GetFlag(FLAGS_kube_ca_file));
}

}  // namespace certcast::kube
