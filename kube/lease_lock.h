// LeaseLock is a LeaderLock (common/leader_election.h) on a coordination.k8s.io/v1 Lease, taken
// over the way client-go's leaderelection does: a candidate takes the Lease over only when its
// record has not changed for leaseDurationSeconds of the candidate's own clock (so clock skew
// between replicas does not matter). Every write is an update at the Lease's resourceVersion, so
// two candidates can never both win. Release clears the holder, so a candidate takes over at its
// next attempt. certcast-server's Kubernetes store elects with it, and so do the shared
// writer's replicas (certcast-client --shared-writer).
//
// RBAC: get and update on the Lease (resourceNames), create on leases in the namespace.
// Used by one LeaderElector thread at a time. Does not own `api`.
#ifndef CERTCAST_KUBE_LEASE_LOCK_H_
#define CERTCAST_KUBE_LEASE_LOCK_H_

#include <string>

#include "absl/time/time.h"
#include "common/leader_election.h"
#include "kube/api.h"

namespace certcast::kube {

class LeaseLock final : public LeaderLock {
 public:
  // The Lease `ns`/`name`; `options` gives the identity and the lease duration.
  LeaseLock(KubeApi* api, std::string ns, std::string name, LeaderElectionOptions options);

  bool TryAcquireOrRenew(absl::Time now, std::string* holder,
                         const RequestObserver& observe) override;
  void Release() override;
  std::string Describe() const override;

 private:
  Json LeaseBody(const Json* existing, absl::Time now, bool acquiring) const;

  KubeApi* const api_;
  const std::string ns_;
  const std::string name_;
  const LeaderElectionOptions options_;
  const std::string lease_path_;
  // The Lease record as last seen and when (this replica's clock) it last changed.
  std::string observed_record_;
  absl::Time observed_at_ = absl::InfinitePast();
};

}  // namespace certcast::kube

#endif  // CERTCAST_KUBE_LEASE_LOCK_H_
