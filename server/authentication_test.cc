#include "server/authentication.h"

#include <functional>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
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

// Waits for `condition` with a deadline.
bool WaitUntil(const std::function<bool()>& condition) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!condition()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

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
  Authenticator::Options options;
  options.cache_ttl = absl::Minutes(1);
  options.cache_max = 100;
  options.workers = 1;
  Authenticator authenticator(&reviewer, nullptr, &clock, options);
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

// The Kubernetes API answering with canned TokenReview bodies; records the requests.
class CannedKubeApi final : public kube::KubeApi {
 public:
  absl::StatusOr<kube::Json> Request(const std::string& method, const std::string& path,
                                     const kube::Json* body, const std::string&) override {
    absl::MutexLock lock(&mu_);
    ++requests_;
    last_method_ = method;
    last_path_ = path;
    if (body != nullptr) last_audiences_ = (*body)["spec"]["audiences"];
    return answer_;
  }
  absl::Status Watch(const std::string&, const std::function<bool(const kube::WatchEvent&)>&,
                     const std::atomic<bool>*, absl::Duration) override {
    return absl::UnimplementedError("no watches here");
  }
  void Answer(const std::string& status_json) {
    absl::MutexLock lock(&mu_);
    answer_ = kube::Json::parse(
        absl::StrCat(R"({"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","status":)",
                     status_json, "}"));
  }
  int requests() {
    absl::MutexLock lock(&mu_);
    return requests_;
  }
  kube::Json last_audiences() {
    absl::MutexLock lock(&mu_);
    return last_audiences_;
  }

 private:
  absl::Mutex mu_;
  kube::Json answer_ ABSL_GUARDED_BY(mu_);
  int requests_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_method_ ABSL_GUARDED_BY(mu_);
  std::string last_path_ ABSL_GUARDED_BY(mu_);
  kube::Json last_audiences_ ABSL_GUARDED_BY(mu_);
};

// The reviewer asks for our audience and accepts only an authenticated answer that names our
// audience and a user. Each refusal below passes if its check is removed from
// KubeTokenReviewer::Review (the API does not check audiences for us).
TEST(KubeTokenReviewerTest, ChecksEveryPartOfTheAnswer) {
  CannedKubeApi api;
  KubeTokenReviewer reviewer(&api, "certcast");
  const std::string user = R"("user":{"username":"system:serviceaccount:tenant-a:client"})";
  api.Answer(absl::StrCat(R"({"authenticated":true,"audiences":["certcast"],)", user, "}"));
  absl::StatusOr<std::string> accepted = reviewer.Review("token");
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  EXPECT_EQ(*accepted, "system:serviceaccount:tenant-a:client");
  EXPECT_EQ(api.last_audiences(), kube::Json::parse(R"(["certcast"])"));

  const std::vector<std::pair<std::string, std::string>> refused = {
      // Wrong audience: the token was valid for someone else.
      {absl::StrCat(R"({"authenticated":true,"audiences":["vault"],)", user, "}"), "audience"},
      // No audience: valid for the API server itself, not for certcast.
      {absl::StrCat(R"({"authenticated":true,)", user, "}"), "audience"},
      {absl::StrCat(R"({"authenticated":true,"audiences":[],)", user, "}"), "audience"},
      // Not authenticated, with or without the rest.
      {absl::StrCat(R"({"authenticated":false,"audiences":["certcast"],)", user, "}"),
       "not accepted"},
      {R"({"audiences":["certcast"]})", "not accepted"},
      // Wrong types: never an exception, always a refusal.
      {absl::StrCat(R"({"authenticated":"true","audiences":["certcast"],)", user, "}"),
       "not accepted"},
      {absl::StrCat(R"({"authenticated":true,"audiences":"certcast",)", user, "}"), "audience"},
      {absl::StrCat(R"({"authenticated":true,"audiences":[["certcast"]],)", user, "}"), "audience"},
      {R"({"authenticated":true,"audiences":["certcast"],"user":{"username":7}})", "no user"},
      {R"({"authenticated":true,"audiences":["certcast"],"user":"system:serviceaccount:a:b"})",
       "no user"},
      {R"({"authenticated":true,"audiences":["certcast"]})", "no user"},
      {R"("authenticated")", "not accepted"},
  };
  for (const auto& [answer, why] : refused) {
    api.Answer(answer);
    absl::StatusOr<std::string> result = reviewer.Review("token");
    ASSERT_FALSE(result.ok()) << answer;
    EXPECT_EQ(result.status().code(), absl::StatusCode::kUnauthenticated) << answer;
    EXPECT_NE(result.status().message().find(why), absl::string_view::npos)
        << result.status() << " for " << answer;
  }
}

// A user that is not a ServiceAccount (a node, a human) proves no namespace: refused by the
// authenticator even when the API says authenticated.
TEST(KubeTokenReviewerTest, UserThatIsNotAServiceAccountIsRefused) {
  CannedKubeApi api;
  KubeTokenReviewer reviewer(&api, "certcast");
  FakeClock clock;
  Authenticator authenticator(&reviewer, nullptr, &clock, {});
  for (const std::string username :
       {"system:node:worker-1", "alice", "system:serviceaccount:tenant-a",
        "system:serviceaccount::client", "system:serviceaccount:a:b:c"}) {
    api.Answer(
        absl::StrCat(R"({"authenticated":true,"audiences":["certcast"],"user":{"username":")",
                     username, R"("}})"));
    absl::StatusOr<PeerIdentity> identity =
        authenticator.AuthenticateNow(Transport(), "token-" + username);
    EXPECT_EQ(identity.status().code(), absl::StatusCode::kUnauthenticated) << username;
  }
}

std::string B64(const std::string& text) {
  std::string out;
  absl::WebSafeBase64Escape(text, &out);
  return out;
}

// A JWT-shaped token for audience `aud` expiring at `exp`, unique by `id`.
std::string Jwt(const std::string& aud, absl::Time exp, int id = 0) {
  return absl::StrCat(B64(R"({"alg":"RS256"})"), ".",
                      B64(absl::StrCat(R"({"aud":[")", aud, R"("],"exp":)",
                                       absl::ToUnixSeconds(exp), R"(,"jti":")", id, R"("})")),
                      ".", B64("sig"));
}

// With a JWT audience set, tokens that cannot pass a review never reach the API; a valid-looking
// one does, and its exp becomes the identity's expiry (issue 10, item 2 and 5).
TEST(AuthenticatorTest, JwtPrecheckSendsNoReviewForMalformedTokens) {
  CannedKubeApi api;
  KubeTokenReviewer reviewer(&api, "certcast");
  api.Answer(
      R"({"authenticated":true,"audiences":["certcast"],"user":{"username":"system:serviceaccount:tenant-a:client"}})");
  FakeClock clock;
  Authenticator::Options options;
  options.jwt_audience = "certcast";
  Authenticator authenticator(&reviewer, nullptr, &clock, options);
  for (const std::string& token :
       {std::string("made-up"), Jwt("vault", clock.Now() + absl::Hours(1)),
        Jwt("certcast", clock.Now() - absl::Seconds(1)), std::string(10'000, 'a')}) {
    EXPECT_EQ(authenticator.AuthenticateNow(Transport(), token).status().code(),
              absl::StatusCode::kUnauthenticated);
  }
  EXPECT_EQ(api.requests(), 0) << "a malformed token was sent to a TokenReview";
  EXPECT_EQ(authenticator.precheck_refusals(), 4u);
  const absl::Time exp = clock.Now() + absl::Minutes(10);
  absl::StatusOr<PeerIdentity> identity =
      authenticator.AuthenticateNow(Transport(), Jwt("certcast", exp));
  ASSERT_TRUE(identity.ok()) << identity.status();
  EXPECT_EQ(identity->expires, exp);
  EXPECT_EQ(api.requests(), 1);
}

// A reviewer that holds every review until released, and counts them.
class GateReviewer final : public TokenReviewer {
 public:
  absl::StatusOr<std::string> Review(const std::string& token) override {
    absl::MutexLock lock(&mu_);
    order_.push_back(token);
    mu_.Await(absl::Condition(&open_));
    return std::string("system:serviceaccount:tenant-a:client");
  }
  void Open() {
    absl::MutexLock lock(&mu_);
    open_ = true;
  }
  size_t started() {
    absl::MutexLock lock(&mu_);
    return order_.size();
  }
  std::vector<std::string> order() {
    absl::MutexLock lock(&mu_);
    return order_;
  }

 private:
  absl::Mutex mu_;
  bool open_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::string> order_ ABSL_GUARDED_BY(mu_);
};

// One address flooding the queue gets its own cap, and the workers alternate between addresses:
// another peer's review runs next, not after the flood (issue 10, item 2).
TEST(AuthenticatorTest, ReviewQueueIsFairBetweenAddresses) {
  GateReviewer reviewer;
  FakeClock clock;
  Authenticator::Options options;
  options.workers = 1;
  options.max_pending_per_address = 4;
  Authenticator authenticator(&reviewer, nullptr, &clock, options);
  PeerIdentity flooder = Transport();
  flooder.peer = "ipv4:10.6.6.6:40000";
  PeerIdentity legitimate = Transport();
  legitimate.peer = "ipv4:10.0.0.2:50000";
  absl::Mutex mu;
  int done = 0;
  int refused_at_once = 0;
  auto count = [&](absl::StatusOr<PeerIdentity> identity) {
    absl::MutexLock lock(&mu);
    ++done;
    if (absl::IsUnavailable(identity.status())) ++refused_at_once;
  };
  authenticator.Authenticate(flooder, "flood-0", count);
  ASSERT_TRUE(WaitUntil([&] { return reviewer.started() == 1; }));  // the worker is busy
  for (int i = 1; i <= 10; ++i) {
    flooder.peer = absl::StrCat("ipv4:10.6.6.6:", 40000 + i);  // new connections, same address
    authenticator.Authenticate(flooder, absl::StrCat("flood-", i), count);
  }
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(refused_at_once, 6) << "the per-address cap (4 waiting) did not hold";
  }
  authenticator.Authenticate(legitimate, "legitimate", count);
  reviewer.Open();
  ASSERT_TRUE(WaitUntil([&] {
    absl::MutexLock lock(&mu);
    return done == 12;
  }));
  const std::vector<std::string> order = reviewer.order();
  ASSERT_GE(order.size(), 3u);
  EXPECT_EQ(order[0], "flood-0");
  EXPECT_EQ(order[1], "flood-1");
  EXPECT_EQ(order[2], "legitimate") << "the other address waited behind the flood";
}

}  // namespace
}  // namespace certcast
