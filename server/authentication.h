// Authentication of callers that present a bearer token: Kubernetes ServiceAccount tokens
// checked with the TokenReview API (a JWT precheck first, audience checked, positive results
// cached for a short, bounded time, reviews queued fairly between peers, fail closed when the
// API cannot be asked), and static tokens for hosts outside Kubernetes. mTLS identities need no
// work here: TransportIdentity() reads them. Thread-safe.
#ifndef CERTCAST_SERVER_AUTHENTICATION_H_
#define CERTCAST_SERVER_AUTHENTICATION_H_

#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "kube/api.h"
#include "server/authorizer.h"
#include "server/policy.h"

namespace certcast {

// Asks someone whether a token is valid; returns the username (system:serviceaccount:NS:SA).
class TokenReviewer {
 public:
  virtual ~TokenReviewer() = default;
  // Unauthenticated when the token is not valid for the audience; Unavailable when the answer
  // cannot be had now (the API server is down).
  virtual absl::StatusOr<std::string> Review(const std::string& token) = 0;
};

// TokenReview through the Kubernetes API (needs create on tokenreviews: the server's
// system:auth-delegator binding). Does not own `api`.
class KubeTokenReviewer final : public TokenReviewer {
 public:
  KubeTokenReviewer(kube::KubeApi* api, std::string audience)
      : api_(api), audience_(std::move(audience)) {}
  absl::StatusOr<std::string> Review(const std::string& token) override;

 private:
  kube::KubeApi* const api_;
  const std::string audience_;
};

class Authenticator {
 public:
  struct Options {
    absl::Duration cache_ttl = absl::Minutes(1);
    size_t cache_max = 10'000;
    int workers = 2;  // threads for TokenReview calls, so gRPC threads never block on the API
    size_t max_pending = 1'000;  // reviews waiting; beyond it callers get Unavailable at once
    absl::Duration negative_ttl = absl::Seconds(10);  // a refused token is not asked again soon
    // Reviews waiting from one peer address; beyond it that peer gets Unavailable at once. The
    // workers take one review per address in turn, so one peer cannot take the queue.
    size_t max_pending_per_address = 16;
    // When set, a token must look like a JWT for this audience that has not expired (see
    // PrecheckJwt) before the API is asked; its exp becomes the identity's expiry.
    std::string jwt_audience;
  };
  // `reviewer` and `static_tokens` may be null (that kind of token is then refused).
  // Does not own them or `clock`.
  Authenticator(TokenReviewer* reviewer, const TokenMap* static_tokens, const Clock* clock,
                Options options);
  ~Authenticator();

  using Done = std::function<void(absl::StatusOr<PeerIdentity>)>;
  // Asked just before a queued review runs: false skips it (the caller's stream already ended,
  // e.g. at its hello deadline), and `done` gets Cancelled.
  using StillWanted = std::function<bool()>;
  // Completes `transport` (from TransportIdentity) with what `bearer_token` proves. A verified
  // client certificate wins; without a token the identity is what the transport proved (maybe
  // nothing: authorization decides). Static and cached tokens, and tokens refused by the JWT
  // precheck, finish inline; others on a worker thread, so gRPC threads never wait for the API.
  // An invalid token is Unauthenticated; an API outage or a full queue Unavailable.
  void Authenticate(PeerIdentity transport, std::string bearer_token, Done done,
                    StillWanted still_wanted = nullptr);
  // The same, blocking the calling thread: for tests and tools, never on a gRPC thread.
  absl::StatusOr<PeerIdentity> AuthenticateNow(PeerIdentity transport, std::string bearer_token);

  // TokenReviews sent.
  uint64_t reviews() {
    absl::MutexLock lock(&mu_);
    return reviews_;
  }
  // Tokens refused by the JWT precheck (no review sent).
  uint64_t precheck_refusals() {
    absl::MutexLock lock(&mu_);
    return precheck_refusals_;
  }

 private:
  struct Job {
    PeerIdentity transport;
    std::string token;
    absl::Time token_expires;
    Done done;
    StillWanted still_wanted;
  };
  // Static map, JWT precheck or cache; nullopt when a TokenReview is needed (then
  // `*token_expires` is the token's exp, InfiniteFuture when unknown).
  std::optional<absl::StatusOr<PeerIdentity>> Quick(const PeerIdentity& transport,
                                                    const std::string& token,
                                                    absl::Time* token_expires);
  absl::StatusOr<PeerIdentity> Review(const PeerIdentity& transport, const std::string& token,
                                      absl::Time token_expires);
  void Work();

  TokenReviewer* const reviewer_;
  const TokenMap* const static_tokens_;
  const Clock* const clock_;
  const Options options_;

  absl::Mutex mu_;
  // Positive results by SHA-256 of the token (the tokens themselves are not kept).
  std::map<std::string, std::pair<absl::Time, std::string>> cache_ ABSL_GUARDED_BY(mu_);
  // Refusals by SHA-256, so a flood of one bad token costs one review per negative_ttl.
  std::map<std::string, std::pair<absl::Time, std::string>> refused_ ABSL_GUARDED_BY(mu_);
  // Waiting reviews by peer address, and the addresses in the order they get a worker.
  std::map<std::string, std::deque<Job>> jobs_ ABSL_GUARDED_BY(mu_);
  std::deque<std::string> turns_ ABSL_GUARDED_BY(mu_);
  size_t pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t reviews_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t precheck_refusals_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> workers_;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_AUTHENTICATION_H_
