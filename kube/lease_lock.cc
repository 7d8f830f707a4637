#include "kube/lease_lock.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "kube/secret.h"

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

LeaseLock::LeaseLock(KubeApi* api, std::string ns, std::string name, LeaderElectionOptions options)
    : api_(api),
      ns_(std::move(ns)),
      name_(std::move(name)),
      options_(std::move(options)),
      lease_path_(
          absl::StrCat("/apis/coordination.k8s.io/v1/namespaces/", ns_, "/leases/", name_)) {}

std::string LeaseLock::Describe() const { return absl::StrCat("Lease ", ns_, "/", name_); }

Json LeaseLock::LeaseBody(const Json* existing, absl::Time now, bool acquiring) const {
  Json lease = existing != nullptr ? *existing
                                   : Json{{"apiVersion", "coordination.k8s.io/v1"},
                                          {"kind", "Lease"},
                                          {"metadata", {{"name", name_}, {"namespace", ns_}}}};
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

bool LeaseLock::TryAcquireOrRenew(absl::Time now, std::string* holder_out,
                                  const RequestObserver& observe) {
  absl::StatusOr<Json> lease = api_->Request("GET", lease_path_);
  observe(lease.status());
  if (absl::IsNotFound(lease.status())) {
    Json body = LeaseBody(nullptr, now, /*acquiring=*/true);
    absl::StatusOr<Json> created = api_->Request(
        "POST", absl::StrCat("/apis/coordination.k8s.io/v1/namespaces/", ns_, "/leases"), &body);
    observe(created.status());
    if (!created.ok()) return false;
    observed_record_ = ResourceVersion(*created);
    observed_at_ = now;
    return true;
  }
  if (!lease.ok()) return false;
  const Json& spec = Member(*lease, "spec");
  const std::string holder = StringMember(spec, "holderIdentity");
  *holder_out = holder;
  const absl::Duration duration = absl::Seconds(
      IntMember(spec, "leaseDurationSeconds", absl::ToInt64Seconds(options_.lease_duration)));
  const std::string record = ResourceVersion(*lease);
  if (record != observed_record_) {
    observed_record_ = record;
    observed_at_ = now;
  }
  // Someone else holds it and has renewed within its lease duration, by our clock.
  if (!holder.empty() && holder != options_.identity && observed_at_ + duration > now) {
    return false;
  }
  Json body = LeaseBody(&*lease, now, /*acquiring=*/holder != options_.identity);
  absl::StatusOr<Json> updated = api_->Request("PUT", lease_path_, &body);
  observe(updated.status());
  if (!updated.ok()) return false;
  observed_record_ = ResourceVersion(*updated);
  observed_at_ = now;
  return true;
}

void LeaseLock::Release() {
  absl::StatusOr<Json> lease = api_->Request("GET", lease_path_);
  if (!lease.ok() || StringMember(Member(*lease, "spec"), "holderIdentity") != options_.identity) {
    return;
  }
  // As client-go's ReleaseOnCancel: no holder, so a candidate takes over at its next attempt.
  Json& spec = (*lease)["spec"];
  spec["holderIdentity"] = "";
  spec["leaseDurationSeconds"] = 1;
  spec["renewTime"] = MicroTime(absl::Now());
  absl::StatusOr<Json> released = api_->Request("PUT", lease_path_, &*lease);
  if (released.ok()) {
    LogInfo("gave up the lease", {{"lock", Describe()}});
  } else {
    LogWarn("cannot give up the lease; another replica takes over when it expires",
            {{"lock", Describe()}, {"error", released.status()}});
  }
}

}  // namespace certcast::kube
