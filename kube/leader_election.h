// LeaderElector elects one leader among replicas with a coordination.k8s.io/v1 Lease, the
// way client-go's leaderelection does: a candidate takes the Lease over only when its record
// has not changed for leaseDurationSeconds of the candidate's own clock (so clock skew between
// replicas does not matter), the holder renews every retry period, and a holder that cannot
// renew within the renew deadline stops leading before any other replica can take over
// (renew deadline < lease duration). Every write is an update at the Lease's resourceVersion, so
// two candidates can never both win. Stop() gives the Lease up, so another replica takes over
// at once.
//
// Used by the shared writer's replicas (one writes tenant Secrets). NOT YET SHARED: certcast-server
// has its own election (server/leader_election.h with a LeaderLock per store, refactored while
// this was written); the two should become one in kube/ (or common/) so both binaries use it.
//
// RBAC: get and update on the Lease (resourceNames), create on leases in the namespace.
// Thread-safe. One thread renews or campaigns; a second runs the started-leading callback, so a
// slow callback never delays a renewal. Does not own `api` or `clock`.
#ifndef CERTCAST_KUBE_LEADER_ELECTION_H_
#define CERTCAST_KUBE_LEADER_ELECTION_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "kube/api.h"

namespace certcast::kube {

struct LeaderElectionOptions {
  std::string ns;
  std::string lease_name;
  std::string identity;  // unique per process: hostname (pod name) and a random suffix
  // What the leader alone does, for the log lines ("it alone publishes", "it no longer ...").
  std::string duty = "publishes";
  absl::Duration lease_duration = absl::Seconds(15);
  absl::Duration renew_deadline = absl::Seconds(10);
  absl::Duration retry_period = absl::Seconds(2);
};

// InvalidArgument unless retry_period < renew_deadline < lease_duration, lease_duration is a
// whole number of seconds of at least 1 (the Lease stores seconds), and retry_period > 0.
absl::Status CheckLeaderElectionOptions(const LeaderElectionOptions& options);

// What status pages and metrics show about the election.
struct LeaderElectionStatus {
  std::string identity;       // this replica's holder identity
  std::string leader;         // the observed holder ("" when none)
  bool is_leader = false;     // IsLeader()
  bool api_reachable = true;  // a Lease request was answered within the renew deadline
  std::string api_error;      // the latest error while unreachable
  absl::Time unreachable_since = absl::InfinitePast();
  uint64_t leader_transitions = 0;  // times this replica became the leader
};

// HOSTNAME-style identity: $POD_NAME, else the host name, then "_" and 8 random hex digits.
std::string MakeReplicaIdentity();

class LeaderElector {
 public:
  struct Callbacks {
    std::function<void()> started_leading;  // on the callback thread
    // The API stopped or started answering Lease requests (after a renew deadline of errors);
    // on the election thread. The caller logs what that means for it.
    std::function<void(bool reachable)> reachability_changed;
  };

  LeaderElector(KubeApi* api, const Clock* clock, LeaderElectionOptions options);
  ~LeaderElector();

  void Start(Callbacks callbacks);
  // Stops campaigning; a leader gives the Lease up (holder cleared) so others need not wait.
  void Stop();

  // True while this replica holds the Lease and renewed it within the renew deadline, so no
  // other replica can have taken it over yet.
  bool IsLeader() const;
  // The holder as last observed ("" when none or unknown), for messages.
  std::string Leader() const;
  LeaderElectionStatus Status() const;

 private:
  void Run();
  void RunCallbacks();
  // One attempt to acquire or renew; returns whether this replica holds the Lease now.
  bool TryAcquireOrRenew();
  void Release();
  void NoteRequest(const absl::Status& status);
  Json LeaseBody(const Json* existing, absl::Time now, bool acquiring) const;

  KubeApi* const api_;
  const Clock* const clock_;
  const LeaderElectionOptions options_;
  const std::string lease_path_;

  mutable absl::Mutex mu_;
  Callbacks callbacks_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool leading_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_renew_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::string holder_ ABSL_GUARDED_BY(mu_);
  // The Lease record as last seen and when (this replica's clock) it last changed.
  std::string observed_record_ ABSL_GUARDED_BY(mu_);
  absl::Time observed_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  absl::Time last_success_ ABSL_GUARDED_BY(mu_);
  bool reachable_ ABSL_GUARDED_BY(mu_) = true;
  std::string store_error_ ABSL_GUARDED_BY(mu_);
  absl::Time unreachable_since_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  uint64_t transitions_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pending_started_ ABSL_GUARDED_BY(mu_) = 0;  // started-leading callbacks to run
  std::thread thread_;
  std::thread callback_thread_;
};

}  // namespace certcast::kube

#endif  // CERTCAST_KUBE_LEADER_ELECTION_H_
