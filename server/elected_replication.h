// ElectedReplication is what every shared store's Replication has in common: a LeaderElector
// (common/leader_election.h) over the store's LeaderLock, and a StoredStateFollower that the
// store's watches feed (MarkChanged) and that follows every certificate again when the store
// answers after being unreachable. Subclasses (KubeReplication, EtcdReplication) add the store,
// its lock and its watches.
//
// Thread-safe, as Replication.
#ifndef CERTCAST_SERVER_ELECTED_REPLICATION_H_
#define CERTCAST_SERVER_ELECTED_REPLICATION_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/leader_election.h"
#include "server/replication.h"

namespace certcast {

class ElectedReplication : public Replication {
 public:
  ReplicationStatus Status() const override { return elector_.Status(); }
  bool IsLeader() const override { return elector_.IsLeader(); }
  std::string Leader() const override { return elector_.Leader(); }

 protected:
  // Does not use `lock` before StartElection, so it may be a member of the subclass.
  ElectedReplication(LeaderLock* lock, const Clock* clock, LeaderElectionOptions options)
      : elector_(lock, clock, std::move(options)) {}

  // Starts the follower and the election (call before starting the watches).
  void StartElection(const std::vector<std::string>& certificates, Callbacks callbacks);
  // Stops them, after the watches stopped; a leader gives the lock up.
  void StopElection();
  // Hands `name`'s stored state to the callback soon (from the watches).
  void MarkChanged(const std::string& name) { follower_->MarkChanged(name); }
  void MarkAllChanged();

  LeaderElector elector_;

 private:
  Callbacks callbacks_;
  std::vector<std::string> certificates_;
  std::unique_ptr<StoredStateFollower> follower_;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_ELECTED_REPLICATION_H_
