#include "server/replication.h"

#include "metrics/families.h"

namespace certcast {

std::vector<prometheus::MetricFamily> ReplicationMetrics::Collect() const {
  using metrics::AddSample;
  using metrics::Family;
  using prometheus::MetricType;
  const ReplicationStatus status = replication_->Status();
  auto leader =
      Family("certcast_replica_leader",
             "1 while this replica holds the leader lease and alone publishes.", MetricType::Gauge);
  AddSample(leader, {}, status.is_leader ? 1 : 0);
  auto up = Family("certcast_version_store_up",
                   "1 while the shared version store answers; 0: serving the versions this "
                   "replica has, publishing nothing.",
                   MetricType::Gauge);
  AddSample(up, {}, status.store_reachable ? 1 : 0);
  auto transitions = Family("certcast_replica_leader_transitions_total",
                            "Times this replica became the leader.", MetricType::Counter);
  AddSample(transitions, {}, static_cast<double>(status.leader_transitions));
  return {leader, up, transitions};
}

}  // namespace certcast
