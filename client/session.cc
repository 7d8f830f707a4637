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

Session::Session(SessionOptions options, std::vector<Sink*> sinks, std::vector<Hook*> hooks,
                 ClientStateStore* store, CredentialsProvider* credentials, const Clock* clock)
    : options_(std::move(options)),
      sinks_(std::move(sinks)),
      hooks_(std::move(hooks)),
      store_(store),
      credentials_(credentials),
      clock_(clock),
      reconnect_backoff_(options_.reconnect),
      heartbeat_timeout_(options_.heartbeat_timeout) {}

void Session::Init() {
  absl::MutexLock lock(&mu_);
  for (const std::string& name : options_.certificates) {
    std::optional<HeldVersion> recorded = store_->Load(name);
    if (recorded.has_value()) recorded_[name] = *recorded;
    // The sinks decide what is held; all of them must agree on it.
    std::string fingerprint;
    bool agree = true;
    for (size_t i = 0; i < sinks_.size(); ++i) {
      absl::StatusOr<std::string> held = sinks_[i]->HeldFingerprint(name);
      const std::string value = held.ok() ? *held : std::string();
      if (i == 0) {
        fingerprint = value;
      } else if (value != fingerprint) {
        agree = false;
      }
    }
    HeldVersion held;
    if (agree) held.fingerprint = fingerprint;
    if (!held.fingerprint.empty() && recorded.has_value()) {
      if (recorded->fingerprint == held.fingerprint) {
        held.version = recorded->version;
        held.not_after = recorded->not_after;
      } else {
        LogWarn("the files hold another fingerprint than the state says; the files win",
                {{"certificate", name},
                 {"fingerprint", held.fingerprint},
                 {"state_version", recorded->version},
                 {"state_fingerprint", recorded->fingerprint}});
      }
    }
    held_[name] = held;
    if (held.fingerprint.empty()) {
      LogInfo("holding nothing yet", {{"certificate", name}});
    } else {
      LogInfo(
          absl::StrCat("holding version ", held.version),
          {{"certificate", name}, {"version", held.version}, {"fingerprint", held.fingerprint}});
    }
  }
}

std::map<std::string, HeldVersion> Session::held() {
  absl::MutexLock lock(&mu_);
  return held_;
}

std::map<std::string, AppliedCertificate> Session::applied() {
  absl::MutexLock lock(&mu_);
  std::map<std::string, AppliedCertificate> applied;
  for (const std::string& name : options_.certificates) {
    AppliedCertificate& certificate = applied[name];
    if (auto held = held_.find(name); held != held_.end() && !held->second.fingerprint.empty()) {
      certificate.version = held->second.version;
      certificate.not_after = held->second.not_after;
    }
    if (auto at = applied_at_.find(name); at != applied_at_.end())
      certificate.applied_at = at->second;
  }
  return applied;
}

bool Session::Ready(std::string* why) {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> problems;
  for (const std::string& name : options_.certificates) {
    const HeldVersion& held = held_[name];
    if (auto failing = failing_.find(name); failing != failing_.end()) {
      problems.push_back(absl::StrCat(name, ": ", failing->second));
    } else if (held.fingerprint.empty()) {
      problems.push_back(absl::StrCat(name, ": nothing applied yet"));
    } else if (auto received = received_.find(name);
               received != received_.end() && received->second != held.version) {
      problems.push_back(absl::StrCat(name, ": version ", received->second,
                                      " received but not applied (holding ", held.version, ")"));
    }
  }
  if (why != nullptr) *why = absl::StrJoin(problems, "; ");
  return problems.empty();
}

bool Session::Alive(absl::Duration max_stall) {
  absl::MutexLock lock(&mu_);
  return absl::Now() - last_wake_ < max_stall;
}

SessionCounters Session::counters() {
  absl::MutexLock lock(&mu_);
  return counters_;
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

v1::SubscribeRequest Session::Hello() {
  v1::SubscribeRequest request;
  v1::Hello* hello = request.mutable_hello();
  hello->set_client_id(options_.client_id);
  hello->set_namespace_(options_.namespace_);
  absl::MutexLock lock(&mu_);
  for (const std::string& name : options_.certificates) {
    v1::HeldCertificate* held = hello->add_certificates();
    held->set_name(name);
    held->set_version(held_[name].version);
    held->set_fingerprint(held_[name].fingerprint);
  }
  return request;
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
    if (++counters_.connects > 1) ++counters_.reconnects;
  }
  grpc::ChannelArguments args;
  // A dead server or half-open connection is noticed by keepalive as well as by heartbeats.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Never reuse a connection from an earlier attempt: it may be the half-open one we left.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (!options_.tls_server_name.empty()) args.SetSslTargetNameOverride(options_.tls_server_name);
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(options_.server, credentials_->Get(), args);
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
  std::unique_ptr<grpc::ClientReaderWriter<v1::SubscribeRequest, v1::SubscribeResponse>> stream =
      stub->Subscribe(&context);
  {
    absl::MutexLock lock(&stream_mu_);
    stream_ = stream.get();
  }
  pending_.clear();  // nonces of an earlier stream mean nothing on this one
  std::thread reader([this, &stream] { ReadLoop(stream.get()); });
  Send(Hello());  // a failure shows up as the end of the stream

  bool got_first = false;
  bool cancelled = false;
  absl::Time heartbeat_deadline = absl::Now() + heartbeat_timeout_;
  while (true) {
    absl::Time wake = cancelled ? absl::InfiniteFuture() : heartbeat_deadline;
    if (!cancelled) {  // once cancelled, only the end of the stream matters
      for (const auto& [name, pending] : pending_) wake = std::min(wake, pending.retry_at);
    }
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
        reconnect_backoff_.Reset();
        last_end_message_.clear();
        LogInfo("subscribed to the server", {{"server", options_.server},
                                             {"namespace", options_.namespace_},
                                             {"client_id", options_.client_id}});
      }
      HandleMessage(*event->message);  // a heartbeat may change heartbeat_timeout_
      heartbeat_deadline = absl::Now() + heartbeat_timeout_;
      continue;
    }
    if (cancelled) continue;
    if (absl::Now() >= heartbeat_deadline) {
      LogWarn(
          "no message for two heartbeat intervals; treating the stream as dead and reconnecting",
          {{"server", options_.server}, {"silent_for", heartbeat_timeout_}});
      {
        absl::MutexLock lock(&mu_);
        ++counters_.heartbeat_misses;
      }
      context.TryCancel();
      cancelled = true;
      continue;
    }
    RetryDue();
  }
  reader.join();
  {
    absl::MutexLock lock(&stream_mu_);
    stream_ = nullptr;
  }
  absl::MutexLock lock(&mu_);
  context_ = nullptr;
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
      message = "the server refused this client; retrying with backoff";
      break;
    default:
      message = "stream ended; reconnecting with backoff";
  }
  if (denied) {
    absl::MutexLock lock(&mu_);
    ++counters_.denials;
  }
  if (options_.delete_on_revoke && status.error_code() == grpc::StatusCode::PERMISSION_DENIED &&
      denial_reason == kDenialNotAllowed) {
    RemoveEverything();
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
  LogAt(denied ? spdlog::level::err : spdlog::level::warn, message, fields);
}

void Session::RemoveEverything() {
  pending_.clear();
  for (const std::string& name : options_.certificates) {
    // Even when nothing is recorded as held: a sink may hold something the others do not (a
    // half-applied first version). Once removed, repeated denials have nothing more to do.
    if (removed_.count(name) > 0) continue;
    bool removed = true;
    for (Sink* sink : sinks_) {
      absl::Status status = sink->Remove(name);
      if (!status.ok()) {
        removed = false;
        LogError("access revoked but a sink could not remove the certificate",
                 {{"certificate", name}, {"sink", sink->name()}, {"error", status}});
      }
    }
    if (!removed) continue;  // try again after the next denial
    store_->Clear(name).IgnoreError();
    recorded_.erase(name);
    removed_.insert(name);
    LogWarn("access revoked; removed from every sink (--delete-on-revoke)",
            {{"certificate", name}});
    absl::MutexLock lock(&mu_);
    held_[name] = HeldVersion{};
    ++counters_.revocations;
  }
}

void Session::HandleMessage(v1::SubscribeResponse& message) {
  switch (message.kind_case()) {
    case v1::SubscribeResponse::kHeartbeat: {
      const uint32_t interval = std::max<uint32_t>(1, message.heartbeat().interval_seconds());
      heartbeat_timeout_ = absl::Seconds(2 * interval);
      break;
    }
    case v1::SubscribeResponse::kInSync: {
      const v1::InSync& in_sync = message.in_sync();
      pending_.erase(in_sync.name());
      absl::MutexLock lock(&mu_);
      HeldVersion& held = held_[in_sync.name()];
      if (held.fingerprint == in_sync.fingerprint()) held.version = in_sync.version();
      received_[in_sync.name()] = in_sync.version();
      failing_.erase(in_sync.name());
      LogInfo(absl::StrCat("in sync at version ", in_sync.version()),
              {{"certificate", in_sync.name()}, {"version", in_sync.version()}});
      break;
    }
    case v1::SubscribeResponse::kUpdate:
      HandleUpdate(*message.mutable_update());
      break;
    case v1::SubscribeResponse::KIND_NOT_SET:
      break;
  }
}

void Session::HandleUpdate(v1::CertificateUpdate& update) {
  VersionedMaterial version;
  version.name = update.name();
  version.version = update.version();
  version.fingerprint = update.fingerprint();
  version.material.chain_pem = update.chain_pem();
  version.material.key_pem = SecretBytes(update.private_key_pem());
  version.material.ca_pem = update.ca_pem();
  CleanseString(update.mutable_private_key_pem());
  pending_.erase(version.name);  // a newer version replaces one still being retried
  {
    absl::MutexLock lock(&mu_);
    ++counters_.updates;
    received_[version.name] = version.version;
    failing_.erase(version.name);
  }

  const bool known = std::find(options_.certificates.begin(), options_.certificates.end(),
                               version.name) != options_.certificates.end();
  ValidationOptions validation;
  validation.now = clock_->Now();
  absl::StatusOr<CertificateInfo> info =
      known ? ValidateMaterial(version.name, version.material, validation)
            : absl::InvalidArgumentError(
                  absl::StrCat("certificate \"", version.name, "\" was not requested"));
  if (info.ok() && info->fingerprint != version.fingerprint) {
    info = absl::InvalidArgumentError(absl::StrCat(
        "certificate \"", version.name, "\": the update's fingerprint ", version.fingerprint,
        " does not match its certificate (", info->fingerprint, ")"));
  }
  if (!info.ok()) {
    // Material that fails validation is not retried: the next version may fix it.
    LogWarn(
        "refusing a version; keeping what is in place",
        {{"certificate", version.name}, {"version", version.version}, {"error", info.status()}});
    v1::SubscribeRequest nack;
    nack.mutable_nack()->set_name(version.name);
    nack.mutable_nack()->set_version(version.version);
    nack.mutable_nack()->set_nonce(update.nonce());
    v1::SinkError* error = nack.mutable_nack()->add_errors();
    error->set_sink("validation");
    error->set_error(std::string(info.status().message()));
    error->set_transient(false);
    {
      absl::MutexLock lock(&mu_);
      ++counters_.nacks;
      if (known) ++counters_.apply_failures_by_sink[version.name]["validation"];
    }
    Send(nack);
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    const HeldVersion& held = held_[version.name];
    if (!held.fingerprint.empty() && held.fingerprint != version.fingerprint &&
        version.version < held.version) {
      LogWarn(absl::StrCat("the server's version went backwards (held ", held.version, ", got ",
                           version.version, "); applying it: the server wins"),
              {{"certificate", version.name},
               {"version", version.version},
               {"held_version", held.version}});
    }
  }
  bool failed = false;
  v1::SubscribeRequest reply = Apply(version, info->not_after, update.nonce(), &failed);
  if (failed) {
    PendingApply pending;
    pending.not_after = info->not_after;
    pending.backoff = std::make_unique<Backoff>(options_.retry);
    pending.retry_at = absl::Now() + pending.backoff->Next();
    pending.nonce = update.nonce();
    pending.material = std::move(version);
    pending_[pending.material.name] = std::move(pending);
  }
  Send(reply);
}

void Session::RetryDue() {
  const absl::Time now = absl::Now();
  for (auto it = pending_.begin(); it != pending_.end();) {
    PendingApply& pending = it->second;
    if (pending.retry_at > now) {
      ++it;
      continue;
    }
    bool failed = false;
    v1::SubscribeRequest reply = Apply(pending.material, pending.not_after, pending.nonce, &failed);
    if (failed) {
      pending.retry_at = now + pending.backoff->Next();
      ++it;
      continue;  // the NACK was sent already; only success is news
    }
    Send(reply);
    it = pending_.erase(it);
  }
}

v1::SubscribeRequest Session::Apply(const VersionedMaterial& version, absl::Time not_after,
                                    const std::string& nonce, bool* failed) {
  v1::SubscribeRequest reply;
  std::vector<v1::SinkError> errors;
  bool written = false;
  for (Sink* sink : sinks_) {
    absl::StatusOr<ApplyResult> result = sink->Apply(version);
    if (result.ok()) {
      written |= *result == ApplyResult::kWritten;
      continue;
    }
    v1::SinkError error;
    error.set_sink(sink->name());
    error.set_error(std::string(result.status().message()));
    error.set_transient(true);
    errors.push_back(std::move(error));
  }
  if (!errors.empty()) {
    *failed = true;
    std::vector<std::string> texts;
    for (const auto& error : errors)
      texts.push_back(absl::StrCat(error.sink(), ": ", error.error()));
    // Not "keeping the last good version": a sink may already show this one (Sink::Apply).
    LogWarn("version not applied to every sink; not counted as held until all succeed; retrying",
            {{"certificate", version.name},
             {"version", version.version},
             {"errors", absl::StrJoin(texts, "; ")}});
    v1::Nack* nack = reply.mutable_nack();
    nack->set_name(version.name);
    nack->set_version(version.version);
    nack->set_nonce(nonce);
    absl::MutexLock lock(&mu_);
    ++counters_.nacks;
    counters_.apply_failures += errors.size();
    for (auto& error : errors) {
      ++counters_.apply_failures_by_sink[version.name][error.sink()];
      *nack->add_errors() = std::move(error);
    }
    failing_[version.name] = absl::StrJoin(texts, "; ");
    return reply;
  }

  // Hooks run when something changed, or when the last run did not finish (the state store does
  // not record this fingerprint as completed).
  const HeldVersion done{version.version, version.fingerprint, not_after};
  const bool completed_before = recorded_.count(version.name) > 0 &&
                                recorded_[version.name].fingerprint == version.fingerprint;
  std::vector<std::string> warnings;
  if (written || !completed_before) {
    HookContext context{version.name, version.version, version.fingerprint, ""};
    for (Sink* sink : sinks_) {
      if (context.directory.empty()) context.directory = sink->LocationOf(version.name);
    }
    for (Hook* hook : hooks_) {
      absl::Status ran = hook->Run(context);
      if (ran.ok()) continue;
      warnings.push_back(absl::StrCat(hook->name(), ": ", ran.message()));
      LogWarn("version in place but a hook failed", {{"certificate", version.name},
                                                     {"version", version.version},
                                                     {"hook", hook->name()},
                                                     {"error", ran}});
      absl::MutexLock lock(&mu_);
      ++counters_.hook_failures;
      ++counters_.hook_failures_by_certificate[version.name];
    }
  }
  if (!(recorded_.count(version.name) > 0 && recorded_[version.name] == done)) {
    absl::Status saved = store_->Save(version.name, done);
    if (saved.ok()) {
      recorded_[version.name] = done;
    } else {
      warnings.push_back(absl::StrCat("state: ", saved.message()));
    }
  }
  LogInfo(absl::StrCat("version ", version.version, " applied",
                       written ? "" : "; the sinks already held it"),
          {{"certificate", version.name},
           {"version", version.version},
           {"fingerprint", version.fingerprint}});
  v1::Ack* ack = reply.mutable_ack();
  ack->set_name(version.name);
  ack->set_version(version.version);
  ack->set_nonce(nonce);
  for (std::string& warning : warnings) ack->add_warnings(std::move(warning));
  removed_.erase(version.name);
  absl::MutexLock lock(&mu_);
  held_[version.name] = done;
  applied_at_[version.name] = clock_->Now();
  failing_.erase(version.name);
  ++counters_.applied;
  ++counters_.acks;
  return reply;
}

}  // namespace certcast
