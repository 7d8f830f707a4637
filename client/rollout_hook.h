// RolloutRestartHook restarts a Deployment in the client's namespace after a new version was
// applied, for workloads that read certificates only at start: it patches the pod template's
// `certcast.io/version` annotation, which makes the Deployment roll (like
// `kubectl rollout restart`). Needs `patch` on that Deployment. Does not own `api`.
#ifndef CERTCAST_CLIENT_ROLLOUT_HOOK_H_
#define CERTCAST_CLIENT_ROLLOUT_HOOK_H_

#include <string>

#include "client/hooks.h"
#include "kube/api.h"

namespace certcast {

class RolloutRestartHook final : public Hook {
 public:
  RolloutRestartHook(kube::KubeApi* api, std::string ns, std::string deployment)
      : api_(api), namespace_(std::move(ns)), deployment_(std::move(deployment)) {}
  std::string name() const override { return "rollout-restart deployment/" + deployment_; }
  absl::Status Run(const HookContext& context) override;

 private:
  kube::KubeApi* const api_;
  const std::string namespace_;
  const std::string deployment_;
};

// Parses "deployment/NAME" (the only kind supported). InvalidArgument otherwise.
absl::StatusOr<std::string> ParseRolloutTarget(const std::string& text);

}  // namespace certcast

#endif  // CERTCAST_CLIENT_ROLLOUT_HOOK_H_
