// KubeReplication is the Replication of `--store=kubernetes://NAMESPACE/NAME`: the state Secrets
// (KubernetesVersionStore), the Lease election (KubeLeaderElector), and one watch per state
// Secret (by name, so the Role can name every object it may read), resumed from its
// resourceVersion and re-listed after 410 Gone (kube::NamedObjectWatcher). A follower thread
// hands every change to the callback and retries the ones that failed (an event may arrive on a
// watch that was open before the API stopped answering this replica's other requests), and
// refreshes everything when the store answers again.
// Thread-safe. Does not own `api` or `clock`.
#ifndef CERTCAST_SERVER_KUBE_REPLICATION_H_
#define CERTCAST_SERVER_KUBE_REPLICATION_H_

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "kube/api.h"
#include "kube/watcher.h"
#include "server/kube_leader_election.h"
#include "server/kube_store.h"
#include "server/replication.h"

namespace certcast {

class KubeReplication final : public Replication {
 public:
  // `election.ns`/`lease_name` are taken from `location`.
  KubeReplication(kube::KubeApi* api, const Clock* clock, KubeStoreLocation location,
                  LeaderElectionOptions election);
  ~KubeReplication() override;

  VersionStore* store() override { return &store_; }
  void Start(const std::vector<std::string>& certificates, Callbacks callbacks) override;
  void Stop() override;
  ReplicationStatus Status() const override { return elector_.Status(); }
  bool IsLeader() const override { return elector_.IsLeader(); }
  std::string Leader() const override { return elector_.Leader(); }

 private:
  void MarkChanged(const std::string& name);
  void Follow();

  kube::KubeApi* const api_;
  KubernetesVersionStore store_;
  KubeLeaderElector elector_;
  std::vector<std::unique_ptr<kube::NamedObjectWatcher>> watchers_;
  Callbacks callbacks_;
  absl::Mutex mu_;
  // Certificates whose stored state must be handed to the callback, and when (a retry waits).
  std::map<std::string, absl::Time> due_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Duration> backoff_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread follower_;
  bool stopped_ = false;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_KUBE_REPLICATION_H_
