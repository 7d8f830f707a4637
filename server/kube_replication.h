// KubeReplication is the Replication of `--store=kubernetes://NAMESPACE/NAME`: the state Secrets
// (KubernetesVersionStore), the Lease election (kube::LeaseLock under a LeaderElector), and one
// watch per state Secret (by name, so the Role can name every object it may read), resumed from
// its resourceVersion and re-listed after 410 Gone (kube::NamedObjectWatcher). A
// StoredStateFollower hands every change to the callback and retries the ones that failed, and
// everything is refreshed when the store answers again. Fleet summaries are the keys of one
// ConfigMap, NAME-fleet, a key per replica identity (written with its resourceVersion).
// Thread-safe. Does not own `api` or `clock`.
#ifndef CERTCAST_SERVER_KUBE_REPLICATION_H_
#define CERTCAST_SERVER_KUBE_REPLICATION_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/clock.h"
#include "kube/api.h"
#include "kube/lease_lock.h"
#include "kube/watcher.h"
#include "server/elected_replication.h"
#include "server/kube_store.h"
#include "server/replication.h"

namespace certcast {

class KubeReplication final : public ElectedReplication {
 public:
  KubeReplication(kube::KubeApi* api, const Clock* clock, KubeStoreLocation location,
                  LeaderElectionOptions election);
  ~KubeReplication() override;

  VersionStore* store() override { return &store_; }
  void Start(const std::vector<std::string>& certificates, Callbacks callbacks) override;
  void Stop() override;
  absl::Status PublishFleetSummary(const std::string& summary) override;
  absl::StatusOr<std::map<std::string, std::string>> FleetSummaries() override;
  absl::Status RemoveFleetSummaries(const std::vector<std::string>& replicas) override;

 private:
  std::string FleetPath() const;

  kube::KubeApi* const api_;
  const KubeStoreLocation location_;
  const std::string identity_;
  KubernetesVersionStore store_;
  kube::LeaseLock lock_;
  std::vector<std::unique_ptr<kube::NamedObjectWatcher>> watchers_;
  bool stopped_ = false;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_KUBE_REPLICATION_H_
