#include "common/leader_election.h"

#include <unistd.h>

#include <cstdlib>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "openssl/rand.h"

namespace certcast {

absl::Status CheckLeaderElectionOptions(const LeaderElectionOptions& options) {
  if (options.retry_period <= absl::ZeroDuration() ||
      options.renew_deadline <= options.retry_period ||
      options.lease_duration <= options.renew_deadline) {
    return absl::InvalidArgumentError(
        absl::StrCat("leader election needs 0 < --leader-retry-period < --leader-renew-deadline < "
                     "--leader-lease-duration (got ",
                     absl::FormatDuration(options.retry_period), ", ",
                     absl::FormatDuration(options.renew_deadline), ", ",
                     absl::FormatDuration(options.lease_duration), ")"));
  }
  if (options.lease_duration < absl::Seconds(1) ||
      options.lease_duration != absl::Seconds(absl::ToInt64Seconds(options.lease_duration))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--leader-lease-duration must be whole seconds (leases count seconds), "
                     "got ",
                     absl::FormatDuration(options.lease_duration)));
  }
  return absl::OkStatus();
}

std::string MakeReplicaIdentity() {
  std::string host;
  if (const char* pod = std::getenv("POD_NAME"); pod != nullptr && *pod != '\0') {
    host = pod;
  } else {
    char name[256] = {};
    host = gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0' ? name : "certcast";
  }
  unsigned char bytes[4];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) std::abort();  // no entropy: nothing is safe
  return absl::StrCat(host, "_",
                      absl::BytesToHexString(
                          absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes))));
}

LeaderElector::LeaderElector(LeaderLock* lock, const Clock* clock, LeaderElectionOptions options)
    : lock_(lock), clock_(clock), options_(std::move(options)) {
  absl::MutexLock hold(&mu_);
  last_success_ = clock_->Now();
}

LeaderElector::~LeaderElector() { Stop(); }

void LeaderElector::Start(Callbacks callbacks) {
  callbacks_ = std::move(callbacks);
  thread_ = std::thread([this] { Run(); });
  callback_thread_ = std::thread([this] { RunCallbacks(); });
}

void LeaderElector::Stop() {
  {
    absl::MutexLock hold(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  if (callback_thread_.joinable()) callback_thread_.join();
  {
    absl::MutexLock hold(&mu_);
    if (!leading_) return;
    leading_ = false;
  }
  lock_->Release();
}

bool LeaderElector::IsLeader() const {
  absl::MutexLock hold(&mu_);
  return leading_ && clock_->Now() - last_renew_ < options_.renew_deadline;
}

std::string LeaderElector::Leader() const {
  absl::MutexLock hold(&mu_);
  return holder_;
}

LeaderElectionStatus LeaderElector::Status() const {
  absl::MutexLock hold(&mu_);
  LeaderElectionStatus status;
  const absl::Time now = clock_->Now();
  status.identity = options_.identity;
  status.leader = holder_;
  status.is_leader = leading_ && now - last_renew_ < options_.renew_deadline;
  status.store_reachable = now - last_success_ < options_.renew_deadline;
  if (!status.store_reachable) {
    status.store_error = store_error_;
    status.unreachable_since = last_success_;
  }
  status.leader_transitions = transitions_;
  return status;
}

void LeaderElector::NoteRequest(const absl::Status& status) {
  // An answer from the store (even a conflict or a NotFound) means the store is there.
  const bool answered = status.ok() || absl::IsNotFound(status) || absl::IsAborted(status) ||
                        absl::IsAlreadyExists(status);
  std::function<void(bool)> notify;
  bool reachable = false;
  {
    absl::MutexLock hold(&mu_);
    const absl::Time now = clock_->Now();
    if (answered) {
      last_success_ = now;
      store_error_.clear();
      if (!reachable_) {
        reachable_ = true;
        reachable = true;
        notify = callbacks_.reachability_changed;
        LogInfo("the store of the leader lock answers again",
                {{"lock", lock_->Describe()}, {"unreachable_for", now - unreachable_since_}});
      }
    } else {
      store_error_ = std::string(status.message());
      if (reachable_ && now - last_success_ >= options_.renew_deadline) {
        reachable_ = false;
        unreachable_since_ = last_success_;
        notify = callbacks_.reachability_changed;
        LogWarn(absl::StrCat("the store of the leader lock does not answer: this replica cannot "
                             "lead until it does (only the leader ",
                             options_.duty, ")"),
                {{"lock", lock_->Describe()}, {"error", store_error_}});
      }
    }
  }
  if (notify) notify(reachable);
}

void LeaderElector::Run() {
  const LeaderLock::RequestObserver observe = [this](const absl::Status& status) {
    NoteRequest(status);
  };
  for (;;) {
    const absl::Time attempted = clock_->Now();
    std::string holder;
    {
      absl::MutexLock hold(&mu_);
      holder = holder_;
    }
    const bool held = lock_->TryAcquireOrRenew(attempted, &holder, observe);
    absl::MutexLock hold(&mu_);
    holder_ = held ? options_.identity : holder;
    if (stopping_) {
      leading_ = leading_ || held;  // so Stop gives up what this attempt acquired
      return;
    }
    const absl::Time now = clock_->Now();
    if (held) {
      last_renew_ = attempted;
      if (!leading_) {
        leading_ = true;
        ++transitions_;
        ++pending_started_;
        LogInfo(absl::StrCat("this replica is now the leader: it alone ", options_.duty),
                {{"lock", lock_->Describe()}, {"identity", options_.identity}});
      }
    } else if (leading_ &&
               (now - last_renew_ >= options_.renew_deadline || holder_ != options_.identity)) {
      leading_ = false;
      LogWarn(absl::StrCat("this replica lost the leadership: it no longer ", options_.duty),
              {{"lock", lock_->Describe()}, {"identity", options_.identity}, {"holder", holder_}});
    }
    auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
    if (mu_.AwaitWithTimeout(absl::Condition(&stopping), options_.retry_period)) return;
  }
}

void LeaderElector::RunCallbacks() {
  for (;;) {
    {
      absl::MutexLock hold(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || pending_started_ > 0;
      };
      mu_.Await(absl::Condition(&ready));
      if (stopping_) return;
      pending_started_ = 0;
    }
    if (callbacks_.started_leading) callbacks_.started_leading();
  }
}

}  // namespace certcast
