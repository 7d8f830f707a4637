#include "server/authentication.h"

#include <algorithm>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/certificate.h"
#include "common/secret.h"
#include "server/jwt_precheck.h"
#include "spdlog/spdlog.h"

namespace certcast {
namespace {

// system:serviceaccount:NS:SA → identity with namespace and name.
absl::StatusOr<PeerIdentity> FromUsername(PeerIdentity identity, const std::string& username) {
  std::vector<std::string> parts = absl::StrSplit(username, ':');
  if (parts.size() != 4 || parts[0] != "system" || parts[1] != "serviceaccount" ||
      parts[2].empty() || parts[3].empty()) {
    return absl::UnauthenticatedError(
        absl::StrCat("the token belongs to \"", username, "\", which is not a ServiceAccount"));
  }
  identity.identity = username;
  identity.kind = "serviceaccount";
  identity.namespace_ = parts[2];
  identity.name = parts[3];
  return identity;
}

}  // namespace

absl::StatusOr<std::string> KubeTokenReviewer::Review(const std::string& token) {
  kube::Json review = {{"apiVersion", "authentication.k8s.io/v1"},
                       {"kind", "TokenReview"},
                       {"spec", {{"token", token}, {"audiences", {audience_}}}}};
  absl::StatusOr<kube::Json> answer =
      api_->Request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", &review);
  CleanseString(&review["spec"]["token"].get_ref<std::string&>());
  if (!answer.ok()) {
    // Cannot ask: fail closed, but say it is temporary.
    return absl::UnavailableError(
        absl::StrCat("cannot verify the token now: ", answer.status().message()));
  }
  // Types are checked before use: a malformed answer is a refusal, never an exception.
  const kube::Json empty = kube::Json::object();
  const kube::Json& status =
      answer->contains("status") && (*answer)["status"].is_object() ? (*answer)["status"] : empty;
  const bool authenticated = status.contains("authenticated") &&
                             status["authenticated"].is_boolean() &&
                             status["authenticated"].get<bool>();
  if (!authenticated) {
    std::string error;
    if (status.contains("error") && status["error"].is_string()) error = status["error"];
    return absl::UnauthenticatedError(absl::StrCat("the token was not accepted for audience \"",
                                                   audience_, "\"",
                                                   error.empty() ? "" : absl::StrCat(": ", error)));
  }
  // An empty audience list means "valid for the API server", not for certcast: require ours.
  bool audience_ok = false;
  if (status.contains("audiences") && status["audiences"].is_array()) {
    for (const auto& audience : status["audiences"]) audience_ok |= audience == audience_;
  }
  if (!audience_ok) {
    return absl::UnauthenticatedError(
        absl::StrCat("the token is not meant for audience \"", audience_, "\""));
  }
  if (!status.contains("user") || !status["user"].is_object() ||
      !status["user"].contains("username") || !status["user"]["username"].is_string()) {
    return absl::UnauthenticatedError("the TokenReview names no user");
  }
  return status["user"]["username"].get<std::string>();
}

Authenticator::Authenticator(TokenReviewer* reviewer, const TokenMap* static_tokens,
                             const Clock* clock, Options options)
    : reviewer_(reviewer), static_tokens_(static_tokens), clock_(clock), options_(options) {
  if (reviewer_ == nullptr) return;
  for (int i = 0; i < options_.workers; ++i) workers_.emplace_back([this] { Work(); });
}

Authenticator::~Authenticator() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& worker : workers_) worker.join();
}

std::optional<absl::StatusOr<PeerIdentity>> Authenticator::Quick(const PeerIdentity& transport,
                                                                 const std::string& token,
                                                                 absl::Time* token_expires) {
  *token_expires = absl::InfiniteFuture();
  if (transport.proven() || token.empty()) return absl::StatusOr<PeerIdentity>(transport);
  if (static_tokens_ != nullptr) {
    if (const StaticIdentity* found = static_tokens_->Find(token); found != nullptr) {
      PeerIdentity identity = transport;
      identity.identity = absl::StrCat("static:", found->namespace_, "/", found->name);
      identity.kind = "static";
      identity.namespace_ = found->namespace_;
      identity.name = found->name;
      return absl::StatusOr<PeerIdentity>(identity);
    }
  }
  if (reviewer_ == nullptr) {
    return absl::StatusOr<PeerIdentity>(absl::UnauthenticatedError(
        "the bearer token is not a known static token and this server checks no ServiceAccount "
        "tokens (--token-audience)"));
  }
  if (!options_.jwt_audience.empty()) {
    // What cannot pass a TokenReview is not sent to one: a flood of made-up tokens stays here.
    absl::StatusOr<JwtClaims> claims = PrecheckJwt(token, options_.jwt_audience, clock_->Now());
    if (!claims.ok()) {
      absl::MutexLock lock(&mu_);
      ++precheck_refusals_;
      return absl::StatusOr<PeerIdentity>(claims.status());
    }
    *token_expires = claims->expires;
  }
  const std::string hash = Sha256Hex(token);
  absl::MutexLock lock(&mu_);
  auto cached = cache_.find(hash);
  if (cached != cache_.end() && cached->second.first > clock_->Now()) {
    absl::StatusOr<PeerIdentity> identity = FromUsername(transport, cached->second.second);
    if (identity.ok()) identity->expires = std::min(transport.expires, *token_expires);
    return identity;
  }
  auto refused = refused_.find(hash);
  if (refused != refused_.end() && refused->second.first > clock_->Now()) {
    return absl::StatusOr<PeerIdentity>(absl::UnauthenticatedError(refused->second.second));
  }
  return std::nullopt;
}

absl::StatusOr<PeerIdentity> Authenticator::Review(const PeerIdentity& transport,
                                                   const std::string& token,
                                                   absl::Time token_expires) {
  absl::StatusOr<std::string> username = reviewer_->Review(token);
  {
    absl::MutexLock lock(&mu_);
    ++reviews_;
  }
  if (!username.ok()) {
    if (absl::IsUnauthenticated(username.status())) {
      absl::MutexLock lock(&mu_);
      if (refused_.size() >= options_.cache_max) refused_.clear();  // a shortcut, not a record
      refused_[Sha256Hex(token)] = {clock_->Now() + options_.negative_ttl,
                                    std::string(username.status().message())};
    }
    return username.status();
  }
  absl::StatusOr<PeerIdentity> identity = FromUsername(transport, *username);
  if (identity.ok()) {
    identity->expires = std::min(transport.expires, token_expires);
    absl::MutexLock lock(&mu_);
    if (cache_.size() >= options_.cache_max) {
      // Drop expired entries; if none, drop one arbitrary entry: the cache is only a shortcut.
      const absl::Time now = clock_->Now();
      for (auto it = cache_.begin(); it != cache_.end();) {
        it = it->second.first <= now ? cache_.erase(it) : std::next(it);
      }
      if (cache_.size() >= options_.cache_max) cache_.erase(cache_.begin());
    }
    cache_[Sha256Hex(token)] = {clock_->Now() + options_.cache_ttl, *username};
  }
  return identity;
}

void Authenticator::Authenticate(PeerIdentity transport, std::string bearer_token, Done done,
                                 StillWanted still_wanted) {
  absl::Time token_expires;
  std::optional<absl::StatusOr<PeerIdentity>> quick =
      Quick(transport, bearer_token, &token_expires);
  if (quick.has_value()) {
    CleanseString(&bearer_token);
    done(*std::move(quick));
    return;
  }
  const std::string address = PeerAddress(transport.peer);
  absl::Status refusal;
  {
    absl::MutexLock lock(&mu_);
    std::deque<Job>& queue = jobs_[address];
    if (pending_ >= options_.max_pending) {
      // A flood of unknown tokens: refuse now rather than queue forever.
      refusal = absl::UnavailableError("too many token reviews pending; retry later");
    } else if (queue.size() >= options_.max_pending_per_address) {
      refusal =
          absl::UnavailableError("too many token reviews pending from this address; retry later");
    } else {
      if (queue.empty()) turns_.push_back(address);
      queue.push_back(Job{std::move(transport), std::move(bearer_token), token_expires,
                          std::move(done), std::move(still_wanted)});
      ++pending_;
      return;
    }
    if (queue.empty()) jobs_.erase(address);
  }
  CleanseString(&bearer_token);
  done(refusal);
}

absl::StatusOr<PeerIdentity> Authenticator::AuthenticateNow(PeerIdentity transport,
                                                            std::string bearer_token) {
  absl::Time token_expires;
  std::optional<absl::StatusOr<PeerIdentity>> quick =
      Quick(transport, bearer_token, &token_expires);
  absl::StatusOr<PeerIdentity> result =
      quick.has_value() ? *std::move(quick) : Review(transport, bearer_token, token_expires);
  CleanseString(&bearer_token);
  return result;
}

void Authenticator::Work() {
  while (true) {
    Job job;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]()
                       ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || !turns_.empty(); };
      mu_.Await(absl::Condition(&ready));
      if (turns_.empty()) return;  // stopping
      // Round robin over addresses: each address with work waiting gets one review per turn.
      const std::string address = std::move(turns_.front());
      turns_.pop_front();
      auto queue = jobs_.find(address);
      job = std::move(queue->second.front());
      queue->second.pop_front();
      --pending_;
      if (queue->second.empty()) {
        jobs_.erase(queue);
      } else {
        turns_.push_back(address);
      }
    }
    if (job.still_wanted != nullptr && !job.still_wanted()) {
      CleanseString(&job.token);
      job.done(absl::CancelledError("the caller went away before its token was reviewed"));
      continue;
    }
    absl::StatusOr<PeerIdentity> identity = Review(job.transport, job.token, job.token_expires);
    CleanseString(&job.token);
    job.done(std::move(identity));
  }
}

}  // namespace certcast
