#include "client/stream_state.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/certificate.h"
#include "common/logging.h"
#include "common/secret.h"

namespace certcast {

StreamState::StreamState(Options options, std::vector<Sink*> sinks, std::vector<Hook*> hooks,
                         ClientStateStore* store, const ServingVerifier* verifier,
                         const Clock* clock)
    : options_(std::move(options)),
      sinks_(std::move(sinks)),
      hooks_(std::move(hooks)),
      store_(store),
      verifier_(verifier != nullptr && verifier->enabled() ? verifier : nullptr),
      clock_(clock) {}

void StreamState::Init() {
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

std::map<std::string, HeldVersion> StreamState::held() {
  absl::MutexLock lock(&mu_);
  return held_;
}

std::map<std::string, AppliedCertificate> StreamState::applied() {
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
    certificate.serving_verified = verified_.count(name) > 0;
  }
  return applied;
}

bool StreamState::Ready(std::string* why) {
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

SessionCounters StreamState::counters() {
  absl::MutexLock lock(&mu_);
  return counters_;
}

v1::SubscribeRequest StreamState::Hello() {
  pending_.clear();  // nonces of an earlier stream mean nothing on this one
  for (auto& [name, verification] : verifying_) verification.nonce.clear();
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

void StreamState::Revoked() {
  pending_.clear();
  verifying_.clear();
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
    verified_.erase(name);
    ++counters_.revocations;
  }
}

StreamLiveness StreamState::liveness() {
  absl::MutexLock lock(&mu_);
  return liveness_;
}

void StreamState::Disconnected() {
  absl::MutexLock lock(&mu_);
  liveness_.connected = false;
}

std::vector<v1::SubscribeRequest> StreamState::Receive(v1::SubscribeResponse& message) {
  std::vector<v1::SubscribeRequest> out;
  {
    absl::MutexLock lock(&mu_);
    liveness_.connected = true;
    liveness_.last_message_at = clock_->Now();
  }
  switch (message.kind_case()) {
    case v1::SubscribeResponse::kHeartbeat: {
      const uint32_t interval = std::max<uint32_t>(1, message.heartbeat().interval_seconds());
      heartbeat_timeout_ = absl::Seconds(2 * interval);
      break;
    }
    case v1::SubscribeResponse::kInSync:
      HandleInSync(message.in_sync(), &out);
      break;
    case v1::SubscribeResponse::kUpdate:
      out = HandleUpdate(*message.mutable_update());
      break;
    case v1::SubscribeResponse::KIND_NOT_SET:
      break;
  }
  return out;
}

void StreamState::HandleInSync(const v1::InSync& in_sync, std::vector<v1::SubscribeRequest>* out) {
  const std::string& name = in_sync.name();
  pending_.erase(name);
  bool holds_it = false;
  {
    absl::MutexLock lock(&mu_);
    HeldVersion& held = held_[name];
    holds_it = !held.fingerprint.empty() && held.fingerprint == in_sync.fingerprint();
    if (holds_it) held.version = in_sync.version();
    received_[name] = in_sync.version();
    failing_.erase(name);
  }
  LogInfo(absl::StrCat("in sync at version ", in_sync.version()),
          {{"certificate", name}, {"version", in_sync.version()}});
  if (verifier_ == nullptr || !holds_it) return;
  // The server counts an in-sync client as holding the version, not as serving it: prove it
  // again on every stream, so a verified rollout wave never counts on an old proof.
  auto it = verifying_.find(name);
  if (it == verifying_.end() || it->second.fingerprint != in_sync.fingerprint()) {
    Verification verification;
    verification.fingerprint = in_sync.fingerprint();
    verification.deadline = clock_->Now() + verifier_->options().timeout;
    verification.backoff = std::make_unique<Backoff>(options_.verify_retry);
    it = verifying_.insert_or_assign(name, std::move(verification)).first;
  }
  it->second.version = in_sync.version();
  if (it->second.nonce != in_sync.nonce()) {
    it->second.nonce = in_sync.nonce();
    it->second.nacked = false;  // a new stream: its server record has not heard the NACK
  }
  Verify(name, it->second, clock_->Now(), out);
  if (it->second.version == 0) verifying_.erase(it);  // done
}

std::vector<v1::SubscribeRequest> StreamState::HandleUpdate(v1::CertificateUpdate& update) {
  std::vector<v1::SubscribeRequest> out;
  VersionedMaterial version;
  version.name = update.name();
  version.version = update.version();
  version.fingerprint = update.fingerprint();
  version.material.chain_pem = update.chain_pem();
  version.material.key_pem = SecretBytes(update.private_key_pem());
  version.material.ca_pem = update.ca_pem();
  CleanseString(update.mutable_private_key_pem());
  pending_.erase(version.name);    // a newer version replaces one still being retried
  verifying_.erase(version.name);  // and one still being proven
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
    out.push_back(std::move(nack));
    return out;
  }
  std::string previous_fingerprint;
  {
    absl::MutexLock lock(&mu_);
    const HeldVersion& held = held_[version.name];
    previous_fingerprint = held.fingerprint;
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
    out.push_back(std::move(reply));
    return out;
  }
  Applied(std::move(reply), version.fingerprint, previous_fingerprint, &out);
  return out;
}

std::vector<v1::SubscribeRequest> StreamState::RunDue(absl::Time now) {
  std::vector<v1::SubscribeRequest> out;
  for (auto it = pending_.begin(); it != pending_.end();) {
    PendingApply& pending = it->second;
    if (pending.retry_at > now) {
      ++it;
      continue;
    }
    std::string previous_fingerprint;
    {
      absl::MutexLock lock(&mu_);
      previous_fingerprint = held_[pending.material.name].fingerprint;
    }
    bool failed = false;
    v1::SubscribeRequest reply = Apply(pending.material, pending.not_after, pending.nonce, &failed);
    if (failed) {
      pending.retry_at = now + pending.backoff->Next();
      ++it;
      continue;  // the NACK was sent already; only success is news
    }
    Applied(std::move(reply), pending.material.fingerprint, previous_fingerprint, &out);
    it = pending_.erase(it);
  }
  for (auto it = verifying_.begin(); it != verifying_.end();) {
    if (it->second.next_at > now) {
      ++it;
      continue;
    }
    Verify(it->first, it->second, now, &out);
    it = it->second.version == 0 ? verifying_.erase(it) : std::next(it);
  }
  return out;
}

absl::Time StreamState::NextDue() const {
  absl::Time next = absl::InfiniteFuture();
  for (const auto& [name, pending] : pending_) next = std::min(next, pending.retry_at);
  for (const auto& [name, verification] : verifying_) next = std::min(next, verification.next_at);
  return next;
}

void StreamState::Applied(v1::SubscribeRequest ack, const std::string& fingerprint,
                          const std::string& previous_fingerprint,
                          std::vector<v1::SubscribeRequest>* out) {
  if (verifier_ == nullptr) {
    {
      absl::MutexLock lock(&mu_);
      ++counters_.acks;
    }
    out->push_back(std::move(ack));
    return;
  }
  const std::string name = ack.ack().name();
  Verification verification;
  verification.version = ack.ack().version();
  verification.fingerprint = fingerprint;
  // Re-applying what was held (a retry, a restart) proves nothing about the previous leaf.
  verification.previous_fingerprint =
      previous_fingerprint == fingerprint ? "" : previous_fingerprint;
  verification.nonce = ack.ack().nonce();
  verification.warnings.assign(ack.ack().warnings().begin(), ack.ack().warnings().end());
  verification.deadline = clock_->Now() + verifier_->options().timeout;
  verification.backoff = std::make_unique<Backoff>(options_.verify_retry);
  Verification& started = verifying_.insert_or_assign(name, std::move(verification)).first->second;
  Verify(name, started, clock_->Now(), out);
  if (started.version == 0) verifying_.erase(name);
}

void StreamState::Verify(const std::string& name, Verification& verification, absl::Time now,
                         std::vector<v1::SubscribeRequest>* out) {
  const ServingVerifier::Result result = verifier_->Check(verification.fingerprint);
  if (result.ok) {
    std::vector<std::string> addresses;
    for (const auto& endpoint : result.endpoints) addresses.push_back(endpoint.address);
    LogInfo(absl::StrCat("version ", verification.version, " is served"),
            {{"certificate", name},
             {"version", verification.version},
             {"fingerprint", verification.fingerprint},
             {"endpoints", absl::StrJoin(addresses, ",")}});
    {
      absl::MutexLock lock(&mu_);
      verified_.insert(name);
      failing_.erase(name);
      ++counters_.serving_verified_by_certificate[name];
      if (!verification.nonce.empty()) ++counters_.acks;
    }
    if (!verification.nonce.empty()) {
      v1::SubscribeRequest reply;
      v1::Ack* ack = reply.mutable_ack();
      ack->set_name(name);
      ack->set_version(verification.version);
      ack->set_nonce(verification.nonce);
      for (const std::string& warning : verification.warnings) ack->add_warnings(warning);
      ack->set_serving_verified(true);
      out->push_back(std::move(reply));
    }
    verification.version = 0;  // done: the caller forgets it
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    verified_.erase(name);
  }
  verification.next_at = now + verification.backoff->Next();
  if (verification.nacked || now < verification.deadline || verification.nonce.empty()) return;
  // Written, but not served: NACK (transient: the check goes on and an ACK follows when the
  // endpoint catches up), so a staged rollout halts instead of walking on.
  verification.nacked = true;
  v1::SubscribeRequest reply;
  v1::Nack* nack = reply.mutable_nack();
  nack->set_name(name);
  nack->set_version(verification.version);
  nack->set_nonce(verification.nonce);
  std::vector<std::string> texts;
  for (const auto& endpoint : result.endpoints) {
    if (endpoint.serves_expected) continue;
    v1::SinkError* error = nack->add_errors();
    error->set_sink("serving");
    error->set_error(ServingVerifier::Explain(endpoint, verification.previous_fingerprint));
    error->set_transient(true);
    error->set_served_fingerprint(endpoint.fingerprint);
    texts.push_back(error->error());
  }
  const std::string joined = absl::StrJoin(texts, "; ");
  LogWarn("version written but not served; NACKed, still checking",
          {{"certificate", name},
           {"version", verification.version},
           {"fingerprint", verification.fingerprint},
           {"errors", joined}});
  absl::MutexLock lock(&mu_);
  ++counters_.nacks;
  ++counters_.serving_failures_by_certificate[name];
  failing_[name] = joined;
  out->push_back(std::move(reply));
}

v1::SubscribeRequest StreamState::Apply(const VersionedMaterial& version, absl::Time not_after,
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
  verified_.erase(version.name);
  ++counters_.applied;
  return reply;
}

}  // namespace certcast
