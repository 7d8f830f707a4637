#include "client/rollout_hook.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace certcast {

absl::Status RolloutRestartHook::Run(const HookContext& context) {
  kube::Json patch;
  patch["spec"]["template"]["metadata"]["annotations"]["certcast.io/version"] =
      absl::StrCat(context.name, "-", context.version);
  const std::string path =
      absl::StrCat("/apis/apps/v1/namespaces/", namespace_, "/deployments/", deployment_);
  absl::StatusOr<kube::Json> patched =
      api_->Request("PATCH", path, &patch, "application/strategic-merge-patch+json");
  if (!patched.ok()) {
    if (absl::IsPermissionDenied(patched.status())) {
      return absl::PermissionDeniedError(
          absl::StrCat(patched.status().message(),
                       "; the client's Role needs patch on deployment \"", deployment_, "\""));
    }
    return patched.status();
  }
  LogInfo("rollout restarted", {{"deployment", absl::StrCat(namespace_, "/", deployment_)},
                                {"certificate", context.name},
                                {"version", context.version}});
  return absl::OkStatus();
}

absl::StatusOr<std::string> ParseRolloutTarget(const std::string& text) {
  for (const char* prefix : {"deployment/", "deployments/", "deploy/"}) {
    if (absl::StartsWith(text, prefix) && text.size() > strlen(prefix)) {
      return text.substr(strlen(prefix));
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("\"", text, "\": expected deployment/NAME (only Deployments can be restarted)"));
}

}  // namespace certcast
