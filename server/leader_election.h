// LeaderElector elects one leader among replicas that share a store, the way client-go's
// leaderelection does, over a LeaderLock that the store provides (a Kubernetes Lease, an etcd key
// bound to an etcd lease): the holder renews every retry period, and a holder that cannot renew
// within the renew deadline stops leading before any other replica can take over (renew deadline
// < lease duration). Stop() gives the lock up, so another replica takes over at once. It also
// tracks whether the store answers (ReplicationStatus::store_reachable).
//
// Thread-safe. One thread renews or campaigns; a second runs the started-leading callback, so a
// slow callback never delays a renewal. Does not own `lock` or `clock`.
#ifndef CERTCAST_SERVER_LEADER_ELECTION_H_
#define CERTCAST_SERVER_LEADER_ELECTION_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "server/replication.h"

namespace certcast {

struct LeaderElectionOptions {
  std::string identity;  // unique per process: hostname (pod name) and a random suffix
  absl::Duration lease_duration = absl::Seconds(15);
  absl::Duration renew_deadline = absl::Seconds(10);
  absl::Duration retry_period = absl::Seconds(2);
};

// InvalidArgument unless retry_period < renew_deadline < lease_duration, lease_duration is a
// whole number of seconds of at least 1 (Leases and etcd leases count seconds), and
// retry_period > 0.
absl::Status CheckLeaderElectionOptions(const LeaderElectionOptions& options);

// HOSTNAME-style identity: $POD_NAME, else the host name, then "_" and 8 random hex digits.
std::string MakeReplicaIdentity();

// The store's side of an election: a lock at most one replica holds at a time.
class LeaderLock {
 public:
  // Called with the outcome of every request to the store (any answer, even a conflict or a
  // NotFound, shows the store is there; Unavailable and the like show it is not).
  using RequestObserver = std::function<void(const absl::Status&)>;

  virtual ~LeaderLock() = default;
  // One attempt, at `now` on this replica's clock, to acquire the lock or renew it: whether this
  // replica holds it now. Sets `*holder` to the holder observed ("" when none; unchanged when
  // the store did not answer).
  virtual bool TryAcquireOrRenew(absl::Time now, std::string* holder,
                                 const RequestObserver& observe) = 0;
  // Gives the lock up (this replica held it), so a candidate takes over at its next attempt.
  virtual void Release() = 0;
  // What the lock is, for logs ("Lease certcast-system/certcast", "etcd key /certcast/leader").
  virtual std::string Describe() const = 0;
};

class LeaderElector final : public Leadership {
 public:
  struct Callbacks {
    std::function<void()> started_leading;                     // on the callback thread
    std::function<void(bool reachable)> reachability_changed;  // on the election thread
  };

  LeaderElector(LeaderLock* lock, const Clock* clock, LeaderElectionOptions options);
  ~LeaderElector() override;

  void Start(Callbacks callbacks);
  // Stops campaigning; a leader gives the lock up so others need not wait.
  void Stop();

  bool IsLeader() const override;
  std::string Leader() const override;
  ReplicationStatus Status() const;
  const LeaderElectionOptions& options() const { return options_; }

 private:
  void Run();
  void RunCallbacks();
  void NoteRequest(const absl::Status& status);

  LeaderLock* const lock_;
  const Clock* const clock_;
  const LeaderElectionOptions options_;

  mutable absl::Mutex mu_;
  Callbacks callbacks_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool leading_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_renew_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string holder_ ABSL_GUARDED_BY(mu_);
  absl::Time last_success_ ABSL_GUARDED_BY(mu_);
  bool reachable_ ABSL_GUARDED_BY(mu_) = true;
  std::string store_error_ ABSL_GUARDED_BY(mu_);
  absl::Time unreachable_since_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint64_t transitions_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pending_started_ ABSL_GUARDED_BY(mu_) = 0;  // started-leading callbacks to run
  std::thread thread_;
  std::thread callback_thread_;
};

// What every shared store's Replication has in common: a LeaderElector over the store's lock, and
// a StoredStateFollower that the store's watches feed (MarkChanged) and that follows every
// certificate again when the store answers after being unreachable. Subclasses add the store and
// its watches.
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

#endif  // CERTCAST_SERVER_LEADER_ELECTION_H_
