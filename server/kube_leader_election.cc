#include "server/kube_leader_election.h"

#include <unistd.h>

#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "kube/secret.h"
#include "server/publication.h"

namespace certcast {
namespace {

// metav1.MicroTime as the API server writes it.
std::string MicroTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", t, absl::UTCTimeZone());
}

int64_t IntMember(const kube::Json& object, const char* key, int64_t fallback) {
  const kube::Json& member = kube::Member(object, key);
  return member.is_number_integer() ? member.get<int64_t>() : fallback;
}

}  // namespace

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
        absl::StrCat("--leader-lease-duration must be whole seconds (the Lease stores seconds), "
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
  return absl::StrCat(host, "_", RandomNonce().substr(0, 8));
}

KubeLeaderElector::KubeLeaderElector(kube::KubeApi* api, const Clock* clock,
                                     LeaderElectionOptions options)
    : api_(api),
      clock_(clock),
      options_(std::move(options)),
      lease_path_(absl::StrCat("/apis/coordination.k8s.io/v1/namespaces/", options_.ns, "/leases/",
                               options_.lease_name)) {
  absl::MutexLock lock(&mu_);
  last_success_ = clock_->Now();
}

KubeLeaderElector::~KubeLeaderElector() { Stop(); }

void KubeLeaderElector::Start(Callbacks callbacks) {
  callbacks_ = std::move(callbacks);
  thread_ = std::thread([this] { Run(); });
  callback_thread_ = std::thread([this] { RunCallbacks(); });
}

void KubeLeaderElector::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  if (callback_thread_.joinable()) callback_thread_.join();
  Release();
}

bool KubeLeaderElector::IsLeader() const {
  absl::MutexLock lock(&mu_);
  return leading_ && clock_->Now() - last_renew_ < options_.renew_deadline;
}

std::string KubeLeaderElector::Leader() const {
  absl::MutexLock lock(&mu_);
  return holder_;
}

ReplicationStatus KubeLeaderElector::Status() const {
  absl::MutexLock lock(&mu_);
  ReplicationStatus status;
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

void KubeLeaderElector::NoteRequest(const absl::Status& status) {
  // An answer from the API (even a conflict or a 404) means the store is there.
  const bool answered = status.ok() || absl::IsNotFound(status) || absl::IsAborted(status) ||
                        absl::IsAlreadyExists(status);
  std::function<void(bool)> notify;
  bool reachable = false;
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = clock_->Now();
    if (answered) {
      last_success_ = now;
      store_error_.clear();
      if (!reachable_) {
        reachable_ = true;
        reachable = true;
        notify = callbacks_.reachability_changed;
        LogInfo("version store reachable again",
                {{"lease", options_.lease_name}, {"unreachable_for", now - unreachable_since_}});
      }
    } else {
      store_error_ = std::string(status.message());
      if (reachable_ && now - last_success_ >= options_.renew_deadline) {
        reachable_ = false;
        unreachable_since_ = last_success_;
        notify = callbacks_.reachability_changed;
        LogWarn(
            "version store unreachable: serving the versions this replica has, publishing "
            "nothing until it is back",
            {{"lease", options_.lease_name}, {"error", store_error_}});
      }
    }
  }
  if (notify) notify(reachable);
}

kube::Json KubeLeaderElector::LeaseBody(const kube::Json* existing, absl::Time now,
                                        bool acquiring) const {
  kube::Json lease =
      existing != nullptr
          ? *existing
          : kube::Json{{"apiVersion", "coordination.k8s.io/v1"},
                       {"kind", "Lease"},
                       {"metadata", {{"name", options_.lease_name}, {"namespace", options_.ns}}}};
  kube::Json spec = kube::Member(lease, "spec").is_object() ? lease["spec"] : kube::Json::object();
  spec["holderIdentity"] = options_.identity;
  spec["leaseDurationSeconds"] = absl::ToInt64Seconds(options_.lease_duration);
  spec["renewTime"] = MicroTime(now);
  if (acquiring) {
    spec["acquireTime"] = MicroTime(now);
    const int64_t transitions = IntMember(spec, "leaseTransitions", 0);
    spec["leaseTransitions"] = existing != nullptr ? transitions + 1 : 0;
  }
  lease["spec"] = spec;
  return lease;
}

bool KubeLeaderElector::TryAcquireOrRenew() {
  const absl::Time now = clock_->Now();
  absl::StatusOr<kube::Json> lease = api_->Request("GET", lease_path_);
  if (absl::IsNotFound(lease.status())) {
    NoteRequest(lease.status());
    kube::Json body = LeaseBody(nullptr, now, /*acquiring=*/true);
    absl::StatusOr<kube::Json> created = api_->Request(
        "POST", absl::StrCat("/apis/coordination.k8s.io/v1/namespaces/", options_.ns, "/leases"),
        &body);
    NoteRequest(created.status());
    if (!created.ok()) return false;
    absl::MutexLock lock(&mu_);
    holder_ = options_.identity;
    observed_record_ = kube::ResourceVersion(*created);
    observed_at_ = now;
    return true;
  }
  NoteRequest(lease.status());
  if (!lease.ok()) return false;
  const kube::Json& spec = kube::Member(*lease, "spec");
  const std::string holder = kube::StringMember(spec, "holderIdentity");
  const absl::Duration duration = absl::Seconds(
      IntMember(spec, "leaseDurationSeconds", absl::ToInt64Seconds(options_.lease_duration)));
  absl::Time observed_at;
  {
    absl::MutexLock lock(&mu_);
    const std::string record = kube::ResourceVersion(*lease);
    if (record != observed_record_) {
      observed_record_ = record;
      observed_at_ = now;
    }
    observed_at = observed_at_;
    holder_ = holder;
  }
  // Someone else holds it and has renewed within its lease duration, by our clock.
  if (!holder.empty() && holder != options_.identity && observed_at + duration > now) return false;
  kube::Json body = LeaseBody(&*lease, now, /*acquiring=*/holder != options_.identity);
  absl::StatusOr<kube::Json> updated = api_->Request("PUT", lease_path_, &body);
  NoteRequest(updated.status());
  if (!updated.ok()) return false;
  absl::MutexLock lock(&mu_);
  holder_ = options_.identity;
  observed_record_ = kube::ResourceVersion(*updated);
  observed_at_ = now;
  return true;
}

void KubeLeaderElector::Run() {
  for (;;) {
    const bool held = TryAcquireOrRenew();
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    const absl::Time now = clock_->Now();
    if (held) {
      last_renew_ = now;
      if (!leading_) {
        leading_ = true;
        ++transitions_;
        ++pending_started_;
        LogInfo("this replica is now the leader: it alone publishes",
                {{"lease", options_.lease_name}, {"identity", options_.identity}});
      }
    } else if (leading_ &&
               (now - last_renew_ >= options_.renew_deadline || holder_ != options_.identity)) {
      leading_ = false;
      LogWarn(
          "this replica lost the lease: it no longer publishes",
          {{"lease", options_.lease_name}, {"identity", options_.identity}, {"holder", holder_}});
    }
    auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
    if (mu_.AwaitWithTimeout(absl::Condition(&stopping), options_.retry_period)) return;
  }
}

void KubeLeaderElector::RunCallbacks() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
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

void KubeLeaderElector::Release() {
  {
    absl::MutexLock lock(&mu_);
    if (!leading_) return;
    leading_ = false;
  }
  absl::StatusOr<kube::Json> lease = api_->Request("GET", lease_path_);
  if (!lease.ok() ||
      kube::StringMember(kube::Member(*lease, "spec"), "holderIdentity") != options_.identity) {
    return;
  }
  // As client-go's ReleaseOnCancel: no holder, so a candidate takes over at its next attempt.
  kube::Json& spec = (*lease)["spec"];
  spec["holderIdentity"] = "";
  spec["leaseDurationSeconds"] = 1;
  spec["renewTime"] = MicroTime(clock_->Now());
  absl::StatusOr<kube::Json> released = api_->Request("PUT", lease_path_, &*lease);
  if (released.ok()) {
    LogInfo("gave up the lease", {{"lease", options_.lease_name}});
  } else {
    LogWarn("cannot give up the lease; another replica takes over when it expires",
            {{"lease", options_.lease_name}, {"error", released.status()}});
  }
}

}  // namespace certcast
