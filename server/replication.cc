#include "server/replication.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "metrics/families.h"

namespace certcast {

void StoredStateFollower::Start() {
  thread_ = std::thread([this] { Run(); });
}

void StoredStateFollower::MarkChanged(const std::string& name) {
  absl::MutexLock lock(&mu_);
  due_[name] = absl::InfinitePast();
  backoff_.erase(name);
}

void StoredStateFollower::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void StoredStateFollower::Run() {
  constexpr absl::Duration kFirstRetry = absl::Milliseconds(200);
  constexpr absl::Duration kMaxRetry = absl::Seconds(5);
  absl::MutexLock lock(&mu_);
  for (;;) {
    // The earliest due certificate, if any is due now.
    auto next_due = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      absl::Time earliest = absl::InfiniteFuture();
      for (const auto& [name, when] : due_) earliest = std::min(earliest, when);
      return earliest;
    };
    auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stopping_ || next_due() <= absl::Now();
    };
    const absl::Time earliest = next_due();
    mu_.AwaitWithDeadline(absl::Condition(&ready), earliest == absl::InfiniteFuture()
                                                       ? absl::Now() + absl::Seconds(1)
                                                       : earliest);
    if (stopping_) return;
    std::vector<std::string> names;
    const absl::Time now = absl::Now();
    for (const auto& [name, when] : due_) {
      if (when <= now) names.push_back(name);
    }
    for (const std::string& name : names) {
      due_.erase(name);
      mu_.Unlock();
      const absl::Status followed = follow_ ? follow_(name) : absl::OkStatus();
      mu_.Lock();
      if (followed.ok() || stopping_) {
        backoff_.erase(name);
        continue;
      }
      if (due_.count(name) > 0) continue;  // changed again meanwhile: follow at once
      absl::Duration& delay = backoff_[name];
      delay = delay == absl::ZeroDuration() ? kFirstRetry : std::min(delay * 2, kMaxRetry);
      due_[name] = absl::Now() + delay;
    }
  }
}

absl::Status NotTheLeader(const Leadership& leadership, const std::string& what) {
  const std::string leader = leadership.Leader();
  return absl::UnavailableError(absl::StrCat(
      "this replica is not the leader, which alone ", what,
      "; retry (the Service may reach the leader next time) or call the leader",
      leader.empty() ? std::string(" (none elected right now)")
                     : absl::StrCat(" (", leader, ")")));
}

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
