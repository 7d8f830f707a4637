#include "kube/leader_election.h"

#include <unistd.h>

#include <cstdlib>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "kube/secret.h"
#include "openssl/rand.h"

namespace certcast::kube {
namespace {

// metav1.MicroTime as the API server writes it.
std::string MicroTime(absl::Time t) {
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", t, absl::UTCTimeZone());
}

int64_t IntMember(const Json& object, const char* key, int64_t fallback) {
  const Json& member = Member(object, key);
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
  unsigned char bytes[4];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) std::abort();  // no entropy: nothing is safe
  return absl::StrCat(host, "_",
                      absl::BytesToHexString(
                          absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes))));
}

LeaderElector::LeaderElector(kube::KubeApi* api, const Clock* clock, LeaderElectionOptions options)
    : api_(api),
      clock_(clock),
      options_(std::move(options)),
      lease_path_(absl::StrCat("/apis/coordination.k8s.io/v1/namespaces/", options_.ns, "/leases/",
                               options_.lease_name)) {
  absl::MutexLock lock(&mu_);
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
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
  if (callback_thread_.joinable()) callback_thread_.join();
  Release();
}

bool LeaderElector::IsLeader() const {
  absl::MutexLock lock(&mu_);
  return leading_ && clock_->Now() - last_renew_ < options_.renew_deadline;
}

std::string LeaderElector::Leader() const {
  absl::MutexLock lock(&mu_);
  return holder_;
}

LeaderElectionStatus LeaderElector::Status() const {
  absl::MutexLock lock(&mu_);
  LeaderElectionStatus status;
  const absl::Time now = clock_->Now();
  status.identity = options_.identity;
  status.leader = holder_;
  status.is_leader = leading_ && now - last_renew_ < options_.renew_deadline;
  status.api_reachable = now - last_success_ < options_.renew_deadline;
  if (!status.api_reachable) {
    status.api_error = store_error_;
    status.unreachable_since = last_success_;
  }
  status.leader_transitions = transitions_;
  return status;
}

void LeaderElector::NoteRequest(const absl::Status& status) {
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
      }
    } else {
      store_error_ = std::string(status.message());
      if (reachable_ && now - last_success_ >= options_.renew_deadline) {
        reachable_ = false;
        unreachable_since_ = last_success_;
        notify = callbacks_.reachability_changed;
      }
    }
  }
  if (notify) notify(reachable);
}

Json LeaderElector::LeaseBody(const Json* existing, absl::Time now, bool acquiring) const {
  Json lease =
      existing != nullptr
          ? *existing
          : Json{{"apiVersion", "coordination.k8s.io/v1"},
                 {"kind", "Lease"},
                 {"metadata", {{"name", options_.lease_name}, {"namespace", options_.ns}}}};
  Json spec = Member(lease, "spec").is_object() ? lease["spec"] : Json::object();
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

bool LeaderElector::TryAcquireOrRenew() {
  const absl::Time now = clock_->Now();
  absl::StatusOr<Json> lease = api_->Request("GET", lease_path_);
  if (absl::IsNotFound(lease.status())) {
    NoteRequest(lease.status());
    Json body = LeaseBody(nullptr, now, /*acquiring=*/true);
    absl::StatusOr<Json> created = api_->Request(
        "POST", absl::StrCat("/apis/coordination.k8s.io/v1/namespaces/", options_.ns, "/leases"),
        &body);
    NoteRequest(created.status());
    if (!created.ok()) return false;
    absl::MutexLock lock(&mu_);
    holder_ = options_.identity;
    observed_record_ = ResourceVersion(*created);
    observed_at_ = now;
    return true;
  }
  NoteRequest(lease.status());
  if (!lease.ok()) return false;
  const Json& spec = Member(*lease, "spec");
  const std::string holder = StringMember(spec, "holderIdentity");
  const absl::Duration duration = absl::Seconds(
      IntMember(spec, "leaseDurationSeconds", absl::ToInt64Seconds(options_.lease_duration)));
  absl::Time observed_at;
  {
    absl::MutexLock lock(&mu_);
    const std::string record = ResourceVersion(*lease);
    if (record != observed_record_) {
      observed_record_ = record;
      observed_at_ = now;
    }
    observed_at = observed_at_;
    holder_ = holder;
  }
  // Someone else holds it and has renewed within its lease duration, by our clock.
  if (!holder.empty() && holder != options_.identity && observed_at + duration > now) return false;
  Json body = LeaseBody(&*lease, now, /*acquiring=*/holder != options_.identity);
  absl::StatusOr<Json> updated = api_->Request("PUT", lease_path_, &body);
  NoteRequest(updated.status());
  if (!updated.ok()) return false;
  absl::MutexLock lock(&mu_);
  holder_ = options_.identity;
  observed_record_ = ResourceVersion(*updated);
  observed_at_ = now;
  return true;
}

void LeaderElector::Run() {
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
        LogInfo(absl::StrCat("this replica is now the leader: it alone ", options_.duty),
                {{"lease", options_.lease_name}, {"identity", options_.identity}});
      }
    } else if (leading_ &&
               (now - last_renew_ >= options_.renew_deadline || holder_ != options_.identity)) {
      leading_ = false;
      LogWarn(
          absl::StrCat("this replica lost the lease: it no longer ", options_.duty),
          {{"lease", options_.lease_name}, {"identity", options_.identity}, {"holder", holder_}});
    }
    auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
    if (mu_.AwaitWithTimeout(absl::Condition(&stopping), options_.retry_period)) return;
  }
}

void LeaderElector::RunCallbacks() {
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

void LeaderElector::Release() {
  {
    absl::MutexLock lock(&mu_);
    if (!leading_) return;
    leading_ = false;
  }
  absl::StatusOr<Json> lease = api_->Request("GET", lease_path_);
  if (!lease.ok() || StringMember(Member(*lease, "spec"), "holderIdentity") != options_.identity) {
    return;
  }
  // As client-go's ReleaseOnCancel: no holder, so a candidate takes over at its next attempt.
  Json& spec = (*lease)["spec"];
  spec["holderIdentity"] = "";
  spec["leaseDurationSeconds"] = 1;
  spec["renewTime"] = MicroTime(clock_->Now());
  absl::StatusOr<Json> released = api_->Request("PUT", lease_path_, &*lease);
  if (released.ok()) {
    LogInfo("gave up the lease", {{"lease", options_.lease_name}});
  } else {
    LogWarn("cannot give up the lease; another replica takes over when it expires",
            {{"lease", options_.lease_name}, {"error", released.status()}});
  }
}

}  // namespace certcast::kube
