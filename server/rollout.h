// RolloutController: staged rollouts (docs/ROLLOUT.md). When the policy gives a certificate a
// rollout, a new version goes to the first wave of namespaces only; the other namespaces keep the
// version they run (the hub serves them through a RolloutGate). Once every client of the wave
// acknowledged it (verified, when the wave requires it) and the wave's soak passed, the next wave
// gets it, up to the last wave, everyone else. A refusal halts the rollout until an admin resumes
// it (the refusing clients are excused), promotes it to everyone, or rolls back. Disconnected
// clients count as missing after the wave timeout; a held-back version that comes within the
// expiry margin of its not_after sends the new one to everyone. The state is persisted with the
// certificate in the version store (through the Publisher), so a restart resumes where it was.
//
// Sits between the Publisher (it is its PublicationListener) and the hub. Certificates without a
// rollout in the policy pass straight through, exactly as without this class.
//
// Thread-safe. Lock order: Publisher::mu_ → RolloutController::mu_ → DistributionHub::mu_,
// SubscribeStream::mu_ → Fleet; persist_mu_ → Publisher::mu_ (mu_ is never held while calling
// the Publisher). Does not own what it is given; all of it must outlive the controller.
#ifndef CERTCAST_SERVER_ROLLOUT_H_
#define CERTCAST_SERVER_ROLLOUT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "certcast/state/v1/state.pb.h"
#include "certcast/v1/certcast.pb.h"
#include "common/clock.h"
#include "kube/namespace_cache.h"
#include "server/distribution.h"
#include "server/fleet.h"
#include "server/policy.h"
#include "server/publisher.h"
#include "server/replication.h"
#include "server/rollout_gate.h"

namespace certcast {

class RolloutController final : public PublicationListener {
 public:
  struct Options {
    // How often rollouts are evaluated (waves complete, soaks end, timeouts, expiry).
    absl::Duration tick = absl::Seconds(1);
    // With several replicas only the leader advances and persists rollouts, and takes admin
    // calls; the others adopt its stored progress. Null: one replica, always.
    const Leadership* leadership = nullptr;
    // With several replicas: the time as of which the other replicas' clients are known
    // (FleetExchange::ViewAsOf); a wave is not concluded from an older view. Null: always now.
    std::function<absl::Time()> fleet_view_as_of;
    // The cluster's namespaces with their labels (--watch-namespaces), for waves chosen by
    // namespaceSelector; null, or a null snapshot: labels unknown, such waves match nobody.
    std::function<std::shared_ptr<const kube::NamespaceSet>()> namespaces;
  };
  // The current policy; may return null (no policy: no rollouts).
  using PolicySource = std::function<std::shared_ptr<const Policy>()>;

  RolloutController(PolicySource policy, Fleet* fleet, DistributionHub* hub, const Clock* clock,
                    Options options);
  ~RolloutController() override;

  // From the Publisher (its lock held), before it stores a new version: the start of its
  // rollout, stored in the same write, when OnPublish will start one.
  std::optional<std::string> RolloutStateFor(const std::string& name, uint64_t version,
                                             bool pinned) override;
  // From the Publisher (its lock held): a new version starts a rollout when the policy gives the
  // certificate one and a previous version exists; a rollback (pinned) or a certificate without
  // a rollout goes to everyone, ending any rollout. With replicas, a version adopted from the
  // store (not started by RolloutStateFor here) continues the rollout stored with it.
  void OnPublish(std::shared_ptr<const Publication> publication) override;

  // Once every certificate is added to `publisher` and before sources are evaluated: restores
  // the persisted rollouts of the current versions, and persists through `publisher` from now on.
  void Restore(Publisher* publisher);
  // A namespace was added or removed or its labels changed: re-gates every rollout in progress,
  // so a namespace that joins a wave already reached gets the version now.
  void OnNamespacesChanged();
  // Starts and stops the thread that evaluates rollouts every tick.
  void Start();
  void Stop();
  // One evaluation of every rollout now, then persists what changed (the thread's work).
  void Tick();

  // Admin/ResumeRollout: a halted rollout continues; the clients that refused the version are
  // excused. NotFound for an unknown certificate, FailedPrecondition when not halted,
  // Unavailable (NotTheLeader) on a replica that is not the leader.
  absl::StatusOr<v1::Rollout> Resume(const std::string& name);
  // Admin/PromoteRollout: the version goes to everyone now. FailedPrecondition when no rollout
  // is in progress, Unavailable (NotTheLeader) on a replica that is not the leader.
  absl::StatusOr<v1::Rollout> Promote(const std::string& name);

  // GetCertificate's view; nullopt when the certificate never had a rollout.
  std::optional<v1::Rollout> Describe(const std::string& name);
  // The 1-based wave a client of `namespace_` waits for, 0 when it is not held back.
  uint32_t WaitingFor(const std::string& name, const std::string& namespace_);

  struct Status {
    bool in_progress = false;  // rolling or halted
    bool halted = false;
    uint32_t wave = 0;   // 1-based wave that has the version last (0: none in progress)
    uint32_t waves = 0;  // waves of the policy, everyone else included
    uint64_t version = 0;
    uint64_t held_version = 0;  // what the waves not reached yet keep running
  };
  // Per certificate that ever had a rollout.
  std::map<std::string, Status> Statuses();
  // The version each namespace should run, from a snapshot of the gates (lock-free, for
  // Fleet::Stats): clients held back are waiting, not behind.
  Fleet::ExpectedVersion ExpectedVersions();

 private:
  struct Entry {
    std::shared_ptr<const Publication> current;
    std::shared_ptr<const Publication> previous;  // what waves not reached yet keep
    std::shared_ptr<const RolloutSpec> spec;      // the spec the gate was built from
    std::shared_ptr<const RolloutGate> gate;
    state::v1::RolloutState state;  // version 0: never had a rollout
    // With replicas: `current` was adopted from the version store (another replica published
    // it), so its rollout is the one stored with it, taken at the next Follow; `state` is only a
    // stand-in at wave 1 that is neither advanced nor persisted.
    bool awaiting_stored = false;
    bool active() const { return state.version() != 0 && state.outcome().empty() && previous; }
  };
  // Per-wave counts of the fleet's clients of a certificate.
  struct WaveCounts {
    uint32_t clients = 0, acknowledged = 0, verified = 0, refused = 0, missing = 0, waiting = 0;
    std::vector<std::string> missing_clients;
    std::vector<std::string> refusing;    // "ns/client: error" of unexcused refusals
    std::vector<std::string> unverified;  // acknowledged without proof where it is required
  };

  std::shared_ptr<const RolloutSpec> SpecOf(const std::string& name);
  // A rollout of `version` at its first wave, the others keeping `held_back`, starting now.
  state::v1::RolloutState Started(uint64_t version, uint64_t held_back) const;
  // Rebuilds the gate of `entry` and hands it to the hub.
  void ApplyGate(const std::string& name, Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the rollout with `outcome` (complete, promoted, forced, rolled_back): everyone gets it.
  void Finish(const std::string& name, Entry& entry, const std::string& outcome,
              const std::string& warning) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Halt(const std::string& name, Entry& entry, const std::string& reason)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Evaluate(const std::string& name, Entry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::vector<WaveCounts> Count(const std::string& name, const Entry& entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Rollout DescribeLocked(const std::string& name, const Entry& entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adopts the persisted progress (the Publisher refreshes the stored state when the leader
  // writes it): of every certificate on a replica that may not advance, else of those
  // awaiting_stored only. The leader starts its own rollout of an adopted version that was
  // stored without one. Call without mu_.
  void Follow(bool awaiting_only) ABSL_LOCKS_EXCLUDED(mu_);
  // Writes the changed states through the Publisher; call without mu_.
  void Persist() ABSL_LOCKS_EXCLUDED(mu_);
  // The wave of `namespace_` in `spec`, with the labels in `namespaces` (may be null).
  static size_t WaveOf(const RolloutSpec& spec, const kube::NamespaceSet* namespaces,
                       const std::string& namespace_);
  std::shared_ptr<const kube::NamespaceSet> Namespaces() const {
    return options_.namespaces ? options_.namespaces() : nullptr;
  }
  bool MayAdvance() const {
    return options_.leadership == nullptr || options_.leadership->IsLeader();
  }

  const PolicySource policy_;
  Fleet* const fleet_;
  DistributionHub* const hub_;
  const Clock* const clock_;
  const Options options_;

  absl::Mutex persist_mu_;  // serializes Persist: the newest state is written last
  absl::Mutex mu_;
  Publisher* publisher_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::map<std::string, Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> dirty_ ABSL_GUARDED_BY(mu_);
  // Rollout starts handed to the Publisher to store with a version, until OnPublish takes them.
  std::map<std::string, state::v1::RolloutState> pending_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_ROLLOUT_H_
