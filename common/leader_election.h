// LeaderElector elects one leader among replicas that share a store, the way client-go's
// leaderelection does, over a LeaderLock that the store provides (a Kubernetes Lease:
// kube/lease_lock.h; an etcd key bound to an etcd lease: server/etcd_replication.h): the holder
// renews every retry period, and a holder that cannot renew within the renew deadline (counted
// from when its last successful attempt began) stops leading before any other replica can take
// over (renew deadline < lease duration). Stop() gives the lock up, so another replica takes over
// at once. It also tracks whether the store answers (LeaderElectionStatus::store_reachable).
// certcast-server's replicas elect the one that publishes with it, certcast-client
// --shared-writer's the one that writes the tenant Secrets.
//
// No store code here: the locks live with their stores (kube/, server/).
// Thread-safe. One thread renews or campaigns; a second runs the started-leading callback, so a
// slow callback never delays a renewal. Does not own `lock` or `clock`.
#ifndef CERTCAST_COMMON_LEADER_ELECTION_H_
#define CERTCAST_COMMON_LEADER_ELECTION_H_

#include <cstdint>
#include <functional>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace certcast {

struct LeaderElectionOptions {
  std::string identity;  // unique per process: hostname (pod name) and a random suffix
  // What the leader alone does, for the log lines ("it alone publishes", "it no longer ...").
  std::string duty = "publishes";
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

// What status pages, /readyz and metrics show about the election.
struct LeaderElectionStatus {
  std::string identity;         // this replica's holder identity
  std::string leader;           // the observed holder ("" when none)
  bool is_leader = false;       // LeaderElector::IsLeader()
  bool store_reachable = true;  // a store request was answered within the renew deadline
  std::string store_error;      // the latest store error while unreachable
  absl::Time unreachable_since = absl::InfinitePast();
  uint64_t leader_transitions = 0;  // times this replica became the leader
};

class LeaderElector {
 public:
  struct Callbacks {
    std::function<void()> started_leading;                     // on the callback thread
    std::function<void(bool reachable)> reachability_changed;  // on the election thread
  };

  LeaderElector(LeaderLock* lock, const Clock* clock, LeaderElectionOptions options);
  ~LeaderElector();

  void Start(Callbacks callbacks);
  // Stops campaigning; a leader gives the lock up so others need not wait, also when the attempt
  // in flight when Stop was called acquired it.
  void Stop();

  // True while this replica holds the lock and its last successful attempt began less than the
  // renew deadline ago, so no other replica can have taken it over yet.
  bool IsLeader() const;
  // The holder as last observed ("" when none or unknown), for messages.
  std::string Leader() const;
  LeaderElectionStatus Status() const;
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

}  // namespace certcast

#endif  // CERTCAST_COMMON_LEADER_ELECTION_H_
