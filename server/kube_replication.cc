#include "server/kube_replication.h"

#include <utility>

#include "kube/secret.h"

namespace certcast {

KubeReplication::KubeReplication(kube::KubeApi* api, const Clock* clock, KubeStoreLocation location,
                                 LeaderElectionOptions election)
    : ElectedReplication(&lock_, clock, election),
      api_(api),
      store_(api, location, election.identity),
      lock_(api, location.ns, location.name, election) {}

KubeReplication::~KubeReplication() { Stop(); }

void KubeReplication::Start(const std::vector<std::string>& certificates, Callbacks callbacks) {
  StartElection(certificates, std::move(callbacks));
  for (const std::string& name : certificates) {
    auto watcher = std::make_unique<kube::NamedObjectWatcher>(
        api_, kube::SecretsPath(store_.location().ns), store_.SecretName(name),
        [this, name](const std::string&) { MarkChanged(name); });
    watcher->Start();
    watchers_.push_back(std::move(watcher));
  }
}

void KubeReplication::Stop() {
  if (stopped_) return;
  stopped_ = true;
  for (auto& watcher : watchers_) watcher->Stop();
  StopElection();
}

}  // namespace certcast
