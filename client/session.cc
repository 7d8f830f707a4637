#include "client/session.h"

#include <algorithm>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/certificate.h"
#include "common/logging.h"
#include "common/protocol.h"
#include "common/secret.h"

namespace certcast {

namespace {

StreamState::Options StateOptions(const SessionOptions& options) {
  StreamState::Options state;
  state.namespace_ = options.namespace_;
  state.client_id = options.client_id;
  state.certificates = options.certificates;
  state.retry = options.retry;
  return state;
}

}  // namespace

Session::Session(SessionOptions options, std::vector<Sink*> sinks, std::vector<Hook*> hooks,
                 ClientStateStore* store, CredentialsProvider* credentials, const Clock* clock,
                 const ServingVerifier* verifier)
    : options_(std::move(options)),
      credentials_(credentials),
      reconnect_backoff_(options_.reconnect),
      state_(StateOptions(options_), std::move(sinks), std::move(hooks), store, verifier, clock) {
  state_.set_heartbeat_timeout(options_.heartbeat_timeout);
}

void Session::Init() { state_.Init(); }

std::map<std::string, HeldVersion> Session::held() { return state_.held(); }

StreamLiveness Session::liveness() { return state_.liveness(); }

std::map<std::string, AppliedCertificate> Session::applied() { return state_.applied(); }

bool Session::Ready(std::string* why) { return state_.Ready(why); }

bool Session::Alive(absl::Duration max_stall) {
  absl::MutexLock lock(&mu_);
  return absl::Now() - last_wake_ < max_stall;
}

SessionCounters Session::counters() {
  SessionCounters counters = state_.counters();
  absl::MutexLock lock(&mu_);
  counters.connects = transport_counters_.connects;
  counters.reconnects = transport_counters_.reconnects;
  counters.heartbeat_misses = transport_counters_.heartbeat_misses;
  counters.denials = transport_counters_.denials;
  return counters;
}

void Session::Stop() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  if (context_ != nullptr) context_->TryCancel();
}

void Session::Reconnect() {
  absl::MutexLock lock(&mu_);
  reconnect_now_ = true;
  if (context_ != nullptr) context_->TryCancel();
}

void Session::Run() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    RunConnection();
    const absl::Duration delay = reconnect_backoff_.Next();
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    if (reconnect_now_) continue;
    LogDebug("reconnecting", {{"server", options_.server}, {"delay", delay}});
    auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || reconnect_now_; };
    last_wake_ = absl::Now();
    mu_.AwaitWithTimeout(absl::Condition(&wake), delay);
    last_wake_ = absl::Now();
  }
}

void Session::RunConnection() {
  grpc::ClientContext context;
  {
    // Published before the credentials are read, so a Reconnect() from now on cancels this
    // attempt, and one that came earlier is served by reading the credentials below.
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    context_ = &context;
    reconnect_now_ = false;
    events_.clear();
    if (++transport_counters_.connects > 1) ++transport_counters_.reconnects;
  }
  std::shared_ptr<grpc::Channel> channel =
      options_.channel ? options_.channel()
                       : MakeServerChannel(options_.server, options_.tls_server_name, credentials_);
  std::unique_ptr<v1::Distribution::Stub> stub = v1::Distribution::NewStub(channel);
  absl::StatusOr<std::string> token = credentials_->BearerToken();
  if (!token.ok()) {
    LogStreamEnd(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                              absl::StrCat("cannot read the token: ", token.status().message())));
    absl::MutexLock lock(&mu_);
    context_ = nullptr;
    return;
  }
  if (!token->empty()) {
    context.AddMetadata("authorization", "Bearer " + *token);
    CleanseString(&*token);
  }
  if (!AcquireConnectSlot()) {
    absl::MutexLock lock(&mu_);
    context_ = nullptr;
    return;
  }
  bool holds_slot = options_.connect_limiter != nullptr;
  auto release_slot = [this, &holds_slot] {
    if (!holds_slot) return;
    holds_slot = false;
    options_.connect_limiter->Release();
  };
  std::unique_ptr<grpc::ClientReaderWriter<v1::SubscribeRequest, v1::SubscribeResponse>> stream =
      stub->Subscribe(&context);
  {
    absl::MutexLock lock(&stream_mu_);
    stream_ = stream.get();
  }
  std::thread reader([this, &stream] { ReadLoop(stream.get()); });
  Send(state_.Hello());  // a failure shows up as the end of the stream

  bool got_first = false;
  bool cancelled = false;
  absl::Time heartbeat_deadline = absl::Now() + state_.heartbeat_timeout();
  while (true) {
    absl::Time wake = cancelled ? absl::InfiniteFuture() : heartbeat_deadline;
    // Once cancelled, only the end of the stream matters.
    if (!cancelled) wake = std::min(wake, state_.NextDue());
    std::optional<Event> event;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this, &cancelled]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !events_.empty() || (stopping_ && !cancelled);
      };
      mu_.AwaitWithDeadline(absl::Condition(&ready), wake);
      last_wake_ = absl::Now();
      if (stopping_ && !cancelled) {
        context.TryCancel();
        cancelled = true;
      }
      if (!events_.empty()) {
        event = std::move(events_.front());
        events_.pop_front();
      }
    }
    if (event.has_value()) {
      if (!event->message.has_value()) {
        // The reader called Finish before queueing this event: the trailers are in.
        std::string denial_reason;
        const auto& trailers = context.GetServerTrailingMetadata();
        if (auto it = trailers.find(kDenialReasonMetadata); it != trailers.end()) {
          denial_reason.assign(it->second.data(), it->second.size());
        }
        LogStreamEnd(event->status, denial_reason);
        break;
      }
      if (!got_first) {
        got_first = true;
        release_slot();
        reconnect_backoff_.Reset();
        last_end_message_.clear();
        LogInfo("subscribed to the server", {{"server", options_.server},
                                             {"namespace", options_.namespace_},
                                             {"client_id", options_.client_id}});
      }
      // A heartbeat may change the heartbeat timeout.
      for (const v1::SubscribeRequest& reply : state_.Receive(*event->message)) Send(reply);
      heartbeat_deadline = absl::Now() + state_.heartbeat_timeout();
      continue;
    }
    if (cancelled) continue;
    if (absl::Now() >= heartbeat_deadline) {
      LogWarn(
          "no message for two heartbeat intervals; treating the stream as dead and reconnecting",
          {{"server", options_.server}, {"silent_for", state_.heartbeat_timeout()}});
      {
        absl::MutexLock lock(&mu_);
        ++transport_counters_.heartbeat_misses;
      }
      state_.Disconnected();
      context.TryCancel();
      cancelled = true;
      continue;
    }
    for (const v1::SubscribeRequest& reply : state_.RunDue(absl::Now())) Send(reply);
  }
  state_.Disconnected();
  release_slot();
  reader.join();
  {
    absl::MutexLock lock(&stream_mu_);
    stream_ = nullptr;
  }
  absl::MutexLock lock(&mu_);
  context_ = nullptr;
}

bool Session::AcquireConnectSlot() {
  if (options_.connect_limiter == nullptr) return true;
  while (!options_.connect_limiter->Acquire(absl::Milliseconds(100))) {
    absl::MutexLock lock(&mu_);
    last_wake_ = absl::Now();
    if (stopping_ || reconnect_now_) return false;
  }
  return true;
}

void Session::ReadLoop(
    grpc::ClientReaderWriter<v1::SubscribeRequest, v1::SubscribeResponse>* stream) {
  v1::SubscribeResponse response;
  while (stream->Read(&response)) {
    absl::MutexLock lock(&mu_);
    events_.push_back(Event{std::move(response), grpc::Status::OK});
    response = v1::SubscribeResponse();
  }
  grpc::Status status;
  {
    // Finish must not run concurrently with a Write from the session thread.
    absl::MutexLock lock(&stream_mu_);
    status = stream->Finish();
  }
  absl::MutexLock lock(&mu_);
  events_.push_back(Event{std::nullopt, std::move(status)});
}

bool Session::Send(const v1::SubscribeRequest& request) {
  absl::MutexLock lock(&stream_mu_);
  return stream_ != nullptr && stream_->Write(request);
}

void Session::LogStreamEnd(const grpc::Status& status, const std::string& denial_reason) {
  std::string message;
  bool denied = false;
  switch (status.error_code()) {
    case grpc::StatusCode::OK:
      message = "the server ended the stream";
      break;
    case grpc::StatusCode::CANCELLED: {
      absl::MutexLock lock(&mu_);
      if (stopping_ || reconnect_now_) return;  // our own doing
      message = "stream cancelled";
      break;
    }
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
      denied = true;
      // An expired credential is routine (certificates and tokens are renewed), not a refusal.
      message = denial_reason == kDenialCredentialExpired
                    ? "this client's credential expired; reconnecting with the current one"
                    : "the server refused this client; retrying with backoff";
      break;
    default:
      message = "stream ended; reconnecting with backoff";
  }
  if (denied) {
    absl::MutexLock lock(&mu_);
    ++transport_counters_.denials;
  }
  if (options_.delete_on_revoke && status.error_code() == grpc::StatusCode::PERMISSION_DENIED &&
      denial_reason == kDenialNotAllowed) {
    state_.Revoked();
  }
  const std::string code = StatusCodeName(status.error_code());
  // The server's text is the peer's: Peer() escapes and caps it.
  const std::string error = status.error_message();  // a copy: fields hold views
  const LogFields fields = {{"server", options_.server}, {"code", code}, {"error", Peer(error)}};
  // A repeated failure logs once at warn (error for denials), then at debug.
  const std::string key = absl::StrCat(message, "|", code, "|", error);
  if (key == last_end_message_) {
    LogDebug(message, fields);
    return;
  }
  last_end_message_ = key;
  LogAt(denied && denial_reason != kDenialCredentialExpired ? spdlog::level::err
                                                            : spdlog::level::warn,
        message, fields);
}

}  // namespace certcast
