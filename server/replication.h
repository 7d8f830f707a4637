// The seam between the server and a version store that several replicas share (the Kubernetes
// API, etcd): who may publish (Leadership), and the machinery that keeps a replica in
// step with the others (Replication: a leader election plus a watch on the stored history).
//
// Implementations are thread-safe.
#ifndef CERTCAST_SERVER_REPLICATION_H_
#define CERTCAST_SERVER_REPLICATION_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/leader_election.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace certcast {

class VersionStore;

// Who may publish when several replicas share one version history.
class Leadership {
 public:
  virtual ~Leadership() = default;
  // True while this replica holds the leader lease and renewed it within the renew deadline, so
  // no other replica can have taken it over yet.
  virtual bool IsLeader() const = 0;
  // The holder of the lease as last observed ("" when none or unknown), for messages.
  virtual std::string Leader() const = 0;
};

// Unavailable, for a change only the leader may make (a rollback, a rollout's resume or
// promotion) asked of another replica: names the leader (its identity starts with its pod name)
// so that the caller can reach it, e.g. with kubectl port-forward.
absl::Status NotTheLeader(const Leadership& leadership, const std::string& what);

// What inspection, /readyz, health and metrics show about replication: the election's status.
using ReplicationStatus = LeaderElectionStatus;

class Replication : public Leadership {
 public:
  struct Callbacks {
    // The stored state of certificate `name` may have changed (another replica wrote it, the
    // watch was re-listed, or the store answers again): Publisher::Refresh. An error is retried
    // with backoff until it succeeds. Runs on a thread of the replication's own.
    std::function<absl::Status(const std::string& name)> stored_state_changed;
    // This replica became the leader: Publisher::TakeOver of every certificate, then evaluate
    // every source. Runs on a thread of its own, never on the one that renews the lease.
    std::function<void()> started_leading;
    // The store became reachable or unreachable (readiness and health follow it).
    std::function<void(bool reachable)> store_reachability_changed;
  };

  // The store every replica writes through (compare-and-swap on each Save).
  virtual VersionStore* store() = 0;
  // Starts the election and the watches of `certificates`' stored states.
  virtual void Start(const std::vector<std::string>& certificates, Callbacks callbacks) = 0;
  // Stops them and gives up the lease (if held), so another replica takes over at once.
  virtual void Stop() = 0;
  virtual ReplicationStatus Status() const = 0;

  // Fleet summaries (server/fleet_exchange.h): what each replica's clients hold, exchanged
  // through the store, so that every replica shows the whole fleet and the leader counts every
  // client of a staged rollout. The store only keeps them; FleetExchange judges liveness.
  // Writes this replica's summary, replacing its previous one.
  virtual absl::Status PublishFleetSummary(const std::string& summary) = 0;
  // Every other replica's summary, by replica identity.
  virtual absl::StatusOr<std::map<std::string, std::string>> FleetSummaries() = 0;
  // Deletes the summaries of `replicas` (dead ones).
  virtual absl::Status RemoveFleetSummaries(const std::vector<std::string>& replicas) = 0;
};

// Hands the certificates whose stored state changed to Callbacks::stored_state_changed on a
// thread of its own, and retries the ones that failed with backoff (200 ms doubling to 5 s): an
// event may arrive on a watch that was open while the store stopped answering this replica's other
// requests. A certificate marked again while it waits for a retry is followed at once.
// Thread-safe.
class StoredStateFollower {
 public:
  explicit StoredStateFollower(std::function<absl::Status(const std::string&)> follow)
      : follow_(std::move(follow)) {}
  ~StoredStateFollower() { Stop(); }

  void Start();
  // Follow `name` as soon as possible.
  void MarkChanged(const std::string& name);
  // Returns once a callback in progress has returned; nothing runs after.
  void Stop();

 private:
  void Run();

  const std::function<absl::Status(const std::string&)> follow_;
  absl::Mutex mu_;
  // Certificates whose stored state must be handed to the callback, and when (a retry waits).
  std::map<std::string, absl::Time> due_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Duration> backoff_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// Per-replica gauges of a Replication, for /metrics (sum or max them across replicas in
// PromQL): certcast_replica_leader (1 while this replica publishes), certcast_version_store_up
// (1 while the shared store answers) and certcast_replica_leader_transitions_total.
// Thread-safe. Does not own `replication`; stop scraping before it goes.
class ReplicationMetrics final : public prometheus::Collectable {
 public:
  explicit ReplicationMetrics(const Replication* replication) : replication_(replication) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const Replication* const replication_;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_REPLICATION_H_
