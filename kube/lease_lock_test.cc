#include "kube/lease_lock.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "kube/secret.h"

namespace certcast::kube {
namespace {

constexpr char kLeasePath[] = "/apis/coordination.k8s.io/v1/namespaces/ns/leases/leader";

// The API server's side of one Lease: create, get, and update at the current resourceVersion
// (409 Conflict as Aborted otherwise). FailNextUpdate injects the conflict of a replica that
// wrote in between.
class FakeLeaseApi final : public KubeApi {
 public:
  absl::StatusOr<Json> Request(const std::string& method, const std::string& path, const Json* body,
                               const std::string& /*content_type*/) override {
    absl::MutexLock lock(&mu_);
    if (method == "GET" && path == kLeasePath) {
      if (lease_.is_null()) return absl::NotFoundError("leases \"leader\" not found");
      return lease_;
    }
    if (method == "POST" && path == "/apis/coordination.k8s.io/v1/namespaces/ns/leases") {
      if (!lease_.is_null()) return absl::AlreadyExistsError("leases \"leader\" already exists");
      return Store(*body);
    }
    if (method == "PUT" && path == kLeasePath) {
      if (fail_next_update_ || ResourceVersion(*body) != ResourceVersion(lease_)) {
        fail_next_update_ = false;
        return absl::AbortedError("Operation cannot be fulfilled: the object has been modified");
      }
      return Store(*body);
    }
    return absl::UnimplementedError(absl::StrCat(method, " ", path));
  }
  absl::Status Watch(const std::string&, const std::function<bool(const WatchEvent&)>&,
                     const std::atomic<bool>*, absl::Duration) override {
    return absl::UnimplementedError("watch");
  }

  void FailNextUpdate() {
    absl::MutexLock lock(&mu_);
    fail_next_update_ = true;
  }
  Json spec() {
    absl::MutexLock lock(&mu_);
    return lease_.is_null() ? Json() : lease_["spec"];
  }

 private:
  Json Store(Json object) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    object["metadata"]["resourceVersion"] = std::to_string(++revision_);
    lease_ = object;
    return lease_;
  }

  absl::Mutex mu_;
  Json lease_ ABSL_GUARDED_BY(mu_);
  int revision_ ABSL_GUARDED_BY(mu_) = 0;
  bool fail_next_update_ ABSL_GUARDED_BY(mu_) = false;
};

LeaderElectionOptions Replica(const std::string& identity) {
  LeaderElectionOptions options;
  options.identity = identity;
  options.lease_duration = absl::Seconds(15);
  return options;
}

class LeaseLockTest : public ::testing::Test {
 protected:
  // One attempt of `lock` at `now`: whether it holds the Lease; the holder it saw and every
  // request's outcome are kept.
  bool Attempt(LeaseLock& lock, absl::Time now) {
    return lock.TryAcquireOrRenew(now, &holder_,
                                  [this](const absl::Status& status) { seen_.push_back(status); });
  }

  const absl::Time t0_ = absl::FromUnixSeconds(1'800'000'000);
  FakeLeaseApi api_;
  std::string holder_;
  std::vector<absl::Status> seen_;
};

// A candidate takes the Lease over only once its record has not changed for the lease duration
// of the candidate's own clock; each renewal of the holder starts that count again.
TEST_F(LeaseLockTest, TakesOverOnlyAfterTheRecordStoodStillForTheLeaseDuration) {
  LeaseLock a(&api_, "ns", "leader", Replica("a"));
  LeaseLock b(&api_, "ns", "leader", Replica("b"));
  ASSERT_TRUE(Attempt(a, t0_));  // created
  EXPECT_EQ(api_.spec()["holderIdentity"], "a");
  EXPECT_FALSE(Attempt(b, t0_ + absl::Seconds(1)));
  EXPECT_EQ(holder_, "a");
  ASSERT_TRUE(Attempt(a, t0_ + absl::Seconds(10)));  // renewed: b counts again from its next look
  EXPECT_FALSE(Attempt(b, t0_ + absl::Seconds(12)));
  EXPECT_FALSE(Attempt(b, t0_ + absl::Seconds(26))) << "14 s since b saw the renewal";
  ASSERT_TRUE(Attempt(b, t0_ + absl::Seconds(27)));
  EXPECT_EQ(api_.spec()["holderIdentity"], "b");
  EXPECT_EQ(api_.spec()["leaseTransitions"], 1);
  EXPECT_FALSE(Attempt(a, t0_ + absl::Seconds(28)));
  EXPECT_EQ(holder_, "b");
  // Every request was answered: the first GET with NotFound (then the create), the rest OK.
  ASSERT_FALSE(seen_.empty());
  EXPECT_TRUE(absl::IsNotFound(seen_.front())) << seen_.front();
  for (size_t i = 1; i < seen_.size(); ++i) EXPECT_TRUE(seen_[i].ok()) << seen_[i];
}

// Of two candidates that both found the Lease free, the one whose update comes second loses
// (409 at the old resourceVersion) and says so to the observer: the store answered.
TEST_F(LeaseLockTest, UpdateAtAStaleResourceVersionLoses) {
  LeaseLock a(&api_, "ns", "leader", Replica("a"));
  ASSERT_TRUE(Attempt(a, t0_));
  a.Release();
  LeaseLock b(&api_, "ns", "leader", Replica("b"));
  api_.FailNextUpdate();
  EXPECT_FALSE(Attempt(b, t0_ + absl::Seconds(1)));
  ASSERT_FALSE(seen_.empty());
  EXPECT_TRUE(absl::IsAborted(seen_.back())) << seen_.back();
  EXPECT_EQ(api_.spec()["holderIdentity"], "");
}

// Release clears the holder, so a candidate takes over at its next attempt instead of after the
// lease duration; a replica that no longer holds the Lease releases nothing.
TEST_F(LeaseLockTest, ReleaseLetsACandidateTakeOverAtOnce) {
  LeaseLock a(&api_, "ns", "leader", Replica("a"));
  LeaseLock b(&api_, "ns", "leader", Replica("b"));
  ASSERT_TRUE(Attempt(a, t0_));
  EXPECT_FALSE(Attempt(b, t0_ + absl::Seconds(1)));
  a.Release();
  EXPECT_EQ(api_.spec()["holderIdentity"], "");
  ASSERT_TRUE(Attempt(b, t0_ + absl::Seconds(2)));
  a.Release();
  EXPECT_EQ(api_.spec()["holderIdentity"], "b");
  EXPECT_EQ(b.Describe(), "Lease ns/leader");
}

}  // namespace
}  // namespace certcast::kube
