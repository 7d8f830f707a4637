#include "server/kube_replication.h"

#include <algorithm>
#include <utility>

#include "kube/secret.h"

namespace certcast {
namespace {

LeaderElectionOptions WithLocation(LeaderElectionOptions options,
                                   const KubeStoreLocation& location) {
  options.ns = location.ns;
  options.lease_name = location.name;
  return options;
}

}  // namespace

KubeReplication::KubeReplication(kube::KubeApi* api, const Clock* clock, KubeStoreLocation location,
                                 LeaderElectionOptions election)
    : api_(api),
      store_(api, location, election.identity),
      elector_(api, clock, WithLocation(election, location)) {}

KubeReplication::~KubeReplication() { Stop(); }

void KubeReplication::Start(const std::vector<std::string>& certificates, Callbacks callbacks) {
  callbacks_ = std::move(callbacks);
  follower_ = std::thread([this] { Follow(); });
  for (const std::string& name : certificates) {
    auto watcher = std::make_unique<kube::NamedObjectWatcher>(
        api_, kube::SecretsPath(store_.location().ns), store_.SecretName(name),
        [this, name](const std::string&) { MarkChanged(name); });
    watcher->Start();
    watchers_.push_back(std::move(watcher));
  }
  std::vector<std::string> names = certificates;
  elector_.Start({callbacks_.started_leading, [this, names](bool reachable) {
                    if (reachable) {
                      for (const std::string& name : names) MarkChanged(name);
                    }
                    if (callbacks_.store_reachability_changed) {
                      callbacks_.store_reachability_changed(reachable);
                    }
                  }});
}

void KubeReplication::MarkChanged(const std::string& name) {
  absl::MutexLock lock(&mu_);
  due_[name] = absl::InfinitePast();
  backoff_.erase(name);
}

void KubeReplication::Follow() {
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
      const absl::Status followed = callbacks_.stored_state_changed
                                        ? callbacks_.stored_state_changed(name)
                                        : absl::OkStatus();
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

void KubeReplication::Stop() {
  if (stopped_) return;
  stopped_ = true;
  for (auto& watcher : watchers_) watcher->Stop();
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (follower_.joinable()) follower_.join();
  elector_.Stop();
}

}  // namespace certcast
