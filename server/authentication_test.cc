#include "server/authentication.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/certificate.h"
#include "gtest/gtest.h"

namespace certcast {
namespace {

// A reviewer whose answers the test sets; counts the questions.
class FakeReviewer final : public TokenReviewer {
 public:
  absl::StatusOr<std::string> Review(const std::string& token) override {
    absl::MutexLock lock(&mu_);
    ++calls_;
    if (down_) return absl::UnavailableError("API server unreachable");
    if (token == "good") return std::string("system:serviceaccount:tenant-a:client");
    if (token == "node") return std::string("system:node:worker-1");
    return absl::UnauthenticatedError("the token was not accepted");
  }
  void set_down(bool down) {
    absl::MutexLock lock(&mu_);
    down_ = down;
  }
  int calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }

 private:
  absl::Mutex mu_;
  bool down_ ABSL_GUARDED_BY(mu_) = false;
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
};

PeerIdentity Transport() {
  PeerIdentity identity;
  identity.peer = "ipv4:10.0.0.1:1234";
  return identity;
}

// A reviewed ServiceAccount token gives namespace and name; the answer is cached for the TTL
// only, and while the API is down unknown tokens fail closed (Unavailable).
TEST(AuthenticatorTest, CachesPositiveReviewsForTheTtlAndFailsClosed) {
  FakeReviewer reviewer;
  FakeClock clock;
  Authenticator authenticator(&reviewer, nullptr, &clock, {absl::Minutes(1), 100, 1});
  absl::StatusOr<PeerIdentity> identity = authenticator.AuthenticateNow(Transport(), "good");
  ASSERT_TRUE(identity.ok()) << identity.status();
  EXPECT_EQ(identity->identity, "system:serviceaccount:tenant-a:client");
  EXPECT_EQ(identity->namespace_, "tenant-a");
  EXPECT_EQ(identity->name, "client");
  EXPECT_EQ(identity->peer, "ipv4:10.0.0.1:1234");
  reviewer.set_down(true);
  EXPECT_TRUE(authenticator.AuthenticateNow(Transport(), "good").ok()) << "served from the cache";
  EXPECT_EQ(reviewer.calls(), 1);
  EXPECT_EQ(authenticator.AuthenticateNow(Transport(), "other").status().code(),
            absl::StatusCode::kUnavailable);
  clock.Advance(absl::Minutes(2));
  EXPECT_EQ(authenticator.AuthenticateNow(Transport(), "good").status().code(),
            absl::StatusCode::kUnavailable)
      << "an expired cache entry is asked again, and the API is down";
}

// Invalid tokens, and tokens of users that are not ServiceAccounts, are Unauthenticated.
TEST(AuthenticatorTest, RefusesInvalidAndNonServiceAccountTokens) {
  FakeReviewer reviewer;
  FakeClock clock;
  Authenticator authenticator(&reviewer, nullptr, &clock, {});
  EXPECT_EQ(authenticator.AuthenticateNow(Transport(), "bad").status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(authenticator.AuthenticateNow(Transport(), "node").status().code(),
            absl::StatusCode::kUnauthenticated);
}

// A verified client certificate wins over a token; no token means the transport identity.
TEST(AuthenticatorTest, ClientCertificateWinsAndNoTokenKeepsTransport) {
  FakeReviewer reviewer;
  FakeClock clock;
  Authenticator authenticator(&reviewer, nullptr, &clock, {});
  PeerIdentity mtls = Transport();
  mtls.identity = "spiffe://cluster.local/ns/shop/sa/client";
  mtls.namespace_ = "shop";
  EXPECT_EQ(authenticator.AuthenticateNow(mtls, "good")->identity, mtls.identity);
  EXPECT_FALSE(authenticator.AuthenticateNow(Transport(), "")->proven());
  EXPECT_EQ(reviewer.calls(), 0);
}

// Asynchronous reviews complete on a worker thread (gRPC threads never wait on the API).
TEST(AuthenticatorTest, ReviewsRunOnWorkers) {
  FakeReviewer reviewer;
  FakeClock clock;
  Authenticator authenticator(&reviewer, nullptr, &clock, {});
  absl::Notification done;
  absl::StatusOr<PeerIdentity> result;
  authenticator.Authenticate(Transport(), "good", [&](absl::StatusOr<PeerIdentity> identity) {
    result = std::move(identity);
    done.Notify();
  });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result->namespace_, "tenant-a");
}

// Static tokens are looked up by hash and give namespace and name.
TEST(AuthenticatorTest, StaticTokens) {
  absl::StatusOr<TokenMap> map =
      TokenMap::Parse(absl::StrCat("tokens:\n  - sha256: ", Sha256Hex("s3cret"),
                                   "\n    namespace: edge\n    name: host-1\n"),
                      "tokens.yaml");
  ASSERT_TRUE(map.ok()) << map.status();
  FakeClock clock;
  Authenticator authenticator(nullptr, &*map, &clock, {});
  absl::StatusOr<PeerIdentity> identity = authenticator.AuthenticateNow(Transport(), "s3cret");
  ASSERT_TRUE(identity.ok());
  EXPECT_EQ(identity->identity, "static:edge/host-1");
  EXPECT_EQ(identity->namespace_, "edge");
  EXPECT_EQ(authenticator.AuthenticateNow(Transport(), "guess").status().code(),
            absl::StatusCode::kUnauthenticated);
}

// A refused token is remembered briefly, so a flood of one bad token costs one review.
TEST(AuthenticatorTest, RefusalsAreCachedBriefly) {
  FakeReviewer reviewer;
  FakeClock clock;
  Authenticator authenticator(&reviewer, nullptr, &clock, {});
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ(authenticator.AuthenticateNow(Transport(), "bad").status().code(),
              absl::StatusCode::kUnauthenticated);
  }
  EXPECT_EQ(reviewer.calls(), 1);
  clock.Advance(absl::Seconds(11));
  authenticator.AuthenticateNow(Transport(), "bad").IgnoreError();
  EXPECT_EQ(reviewer.calls(), 2);
}

// A queued review whose caller has gone away is skipped, not sent to the API.
TEST(AuthenticatorTest, SkipsReviewsNoLongerWanted) {
  FakeReviewer reviewer;
  FakeClock clock;
  Authenticator authenticator(&reviewer, nullptr, &clock, {});
  absl::Notification done;
  absl::Status result;
  authenticator.Authenticate(
      Transport(), "good",
      [&](absl::StatusOr<PeerIdentity> identity) {
        result = identity.status();
        done.Notify();
      },
      [] { return false; });
  ASSERT_TRUE(done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_EQ(result.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ(reviewer.calls(), 0);
}

}  // namespace
}  // namespace certcast
