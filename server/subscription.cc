#include "server/subscription.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"

namespace certcast {
namespace {

// A bounded category of a NACK, for counters: "validation" when the client refused the material
// itself, the sink's name when one known sink failed, else "sink".
std::string NackReason(const v1::Nack& nack) {
  std::string reason;
  for (const v1::SinkError& error : nack.errors()) {
    if (error.sink() == "validation") return "validation";
    const std::string sink =
        error.sink() == "files" || error.sink() == "secret" ? error.sink() : "sink";
    reason = reason.empty() || reason == sink ? sink : "sink";
  }
  return reason.empty() ? "sink" : reason;
}

void Bump(std::atomic<uint64_t>* counter) { counter->fetch_add(1, std::memory_order_relaxed); }

}  // namespace

bool ValidNamespace(const std::string& ns) {
  if (ns.empty() || ns.size() > 63) return false;
  for (char c : ns) {
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-')) return false;
  }
  return ns.front() != '-' && ns.back() != '-';
}

bool ValidClientId(const std::string& id) {
  if (id.empty() || id.size() > 253) return false;
  for (char c : id) {
    if (!(absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' || c == ':')) return false;
  }
  return true;
}

SubscriptionState::SubscriptionState(Options options, PeerIdentity transport,
                                     std::function<bool(const std::string&)> known, Fleet* fleet,
                                     Authorizer* authorizer, StreamCounters* counters)
    : options_(options),
      known_(std::move(known)),
      fleet_(fleet),
      authorizer_(authorizer),
      counters_(counters),
      identity_(std::move(transport)) {}

SubscriptionState::~SubscriptionState() = default;

std::string SubscriptionState::who() const { return absl::StrCat(namespace_, "/", client_id_); }

absl::StatusOr<SubscriptionState::Next> SubscriptionState::Receive(
    const v1::SubscribeRequest& request) {
  const bool greeted = hello_.has_value() || subscribed();
  switch (request.kind_case()) {
    case v1::SubscribeRequest::kHello:
      if (greeted) return absl::InvalidArgumentError("hello was already received");
      return ReceiveHello(request.hello());
    case v1::SubscribeRequest::kAck:
    case v1::SubscribeRequest::kNack: {
      // ACKs answer what was sent, which needs an admitted hello.
      if (!subscribed()) return absl::InvalidArgumentError("the first message must be a hello");
      absl::Status status =
          request.has_ack() ? ReceiveAck(request.ack()) : ReceiveNack(request.nack());
      if (!status.ok()) return status;
      return Next::kRead;
    }
    case v1::SubscribeRequest::KIND_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError(greeted ? "empty message: expected an ack or a nack"
                                            : "the first message must be a hello");
}

absl::StatusOr<SubscriptionState::Next> SubscriptionState::ReceiveHello(const v1::Hello& hello) {
  if (!ValidNamespace(hello.namespace_())) {
    return absl::InvalidArgumentError(
        hello.namespace_().empty()
            ? "hello has an empty namespace"
            : "hello namespace is not a valid namespace name (DNS-1123 label)");
  }
  if (!ValidClientId(hello.client_id())) {
    return absl::InvalidArgumentError(
        "hello client_id must be 1-253 characters of [A-Za-z0-9._:-]");
  }
  if (hello.certificates().empty()) return absl::InvalidArgumentError("hello names no certificate");
  if (static_cast<size_t>(hello.certificates_size()) > options_.max_certificates_per_hello) {
    return absl::InvalidArgumentError(absl::StrCat("hello names ", hello.certificates_size(),
                                                   " certificates; the limit is ",
                                                   options_.max_certificates_per_hello));
  }
  std::vector<std::string> names;
  for (const v1::HeldCertificate& held : hello.certificates()) {
    if (std::find(names.begin(), names.end(), held.name()) != names.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("hello names certificate \"", held.name(), "\" twice"));
    }
    names.push_back(held.name());
  }
  hello_ = hello;
  names_ = std::move(names);
  return Next::kAuthenticate;
}

absl::StatusOr<std::vector<std::string>> SubscriptionState::Admit(
    absl::StatusOr<PeerIdentity> identity, std::string* denial_reason) {
  if (!hello_.has_value()) return absl::FailedPreconditionError("no hello to admit");
  if (!identity.ok()) {
    authorizer_->Audit(identity_, "Subscribe", "", identity.status());
    *denial_reason = DenialReason(identity.status());
    return identity.status();
  }
  for (const std::string& name : names_) {
    absl::Status allowed = authorizer_->AuthorizeSubscribe(*identity, hello_->namespace_(), name);
    // Only a name granted to this identity can be unknown: the policy grants certificates by
    // name, so a name nobody distributes is refused above like any name not granted.
    if (allowed.ok() && !known_(name)) {
      allowed = absl::NotFoundError(
          absl::StrCat("certificate \"", name, "\" is not distributed by this server"));
    }
    if (!allowed.ok()) {
      authorizer_->Audit(*identity, "Subscribe", name, allowed);
      *denial_reason = DenialReason(allowed);
      return allowed;
    }
  }
  identity_.identity = identity->identity;  // the peer address stays as it was
  identity_.kind = identity->kind;
  identity_.namespace_ = identity->namespace_;
  identity_.name = identity->name;
  identity_.expires = identity->expires;  // the stream ends when the credential does
  return names_;
}

void SubscriptionState::Subscribe(const std::vector<std::shared_ptr<const Publication>>& current) {
  if (!hello_.has_value() || finished_ || current.size() != names_.size()) return;
  const v1::Hello hello = *std::move(hello_);
  hello_.reset();
  ClientRecord record;
  record.client_id = hello.client_id();
  record.namespace_ = hello.namespace_();
  record.peer = identity_.peer;
  record.identity = identity_.identity;
  for (const std::string& name : names_) {
    record.certificates.emplace_back();
    record.certificates.back().name = name;
  }
  namespace_ = hello.namespace_();
  client_id_ = hello.client_id();
  fleet_id_ = fleet_->Connect(std::move(record));
  for (size_t i = 0; i < names_.size(); ++i) {
    subscriptions_.push_back(Subscription{names_[i], 0, current[i]});
  }
  pending_.push_back(Outgoing{Outgoing::kHeartbeat, 0, nullptr, Serialize(Heartbeat())});
  for (size_t i = 0; i < names_.size(); ++i) {
    const std::shared_ptr<const Publication>& publication = current[i];
    if (publication == nullptr) continue;  // pushed when its first version appears
    const v1::HeldCertificate& held = hello.certificates(static_cast<int>(i));
    if (held.fingerprint() == publication->info.fingerprint &&
        held.version() == publication->version) {
      v1::SubscribeResponse response;
      v1::InSync* in_sync = response.mutable_in_sync();
      in_sync->set_name(publication->name);
      in_sync->set_version(publication->version);
      in_sync->set_nonce(publication->nonce);
      in_sync->set_fingerprint(publication->info.fingerprint);
      subscriptions_[i].queued_version = publication->version;
      pending_.push_back(Outgoing{Outgoing::kInSync, i, publication, Serialize(response)});
    } else {
      if (held.version() > publication->version && !held.fingerprint().empty()) {
        LogWarn("client holds a newer version than the server; the server's version wins",
                {{"namespace", Peer(namespace_)},
                 {"client", Peer(client_id_)},
                 {"certificate", publication->name},
                 {"held_version", held.version()},
                 {"version", publication->version}});
      }
      EnqueueUpdate(i, publication);
    }
  }
  LogDebug("stream subscribed", {{"peer", Peer(identity_.peer)},
                                 {"namespace", Peer(namespace_)},
                                 {"client", Peer(client_id_)},
                                 {"certificates", Peer(absl::StrJoin(names_, ","))}});
}

void SubscriptionState::OfferUpdate(const std::shared_ptr<const Publication>& publication) {
  for (size_t i = 0; i < subscriptions_.size(); ++i) {
    if (subscriptions_[i].name != publication->name) continue;
    subscriptions_[i].current = publication;
    EnqueueUpdate(i, publication);
  }
}

void SubscriptionState::OfferHeartbeat() {
  if (finished_ || !subscribed() || !pending_.empty()) return;
  pending_.push_back(Outgoing{Outgoing::kHeartbeat, 0, nullptr, Serialize(Heartbeat())});
}

v1::SubscribeResponse SubscriptionState::Heartbeat() const {
  v1::SubscribeResponse response;
  v1::Heartbeat* heartbeat = response.mutable_heartbeat();
  heartbeat->set_interval_seconds(static_cast<uint32_t>(
      std::max<int64_t>(1, absl::ToInt64Seconds(options_.heartbeat_interval))));
  // Only this stream's certificates: a tenant must not hear of what it was not granted.
  for (const Subscription& subscription : subscriptions_) {
    v1::CertificateVersion* version = heartbeat->add_versions();
    version->set_name(subscription.name);
    if (subscription.current != nullptr) {
      version->set_version(subscription.current->version);
      version->set_fingerprint(subscription.current->info.fingerprint);
    }
  }
  return response;
}

void SubscriptionState::EnqueueUpdate(size_t index,
                                      const std::shared_ptr<const Publication>& publication) {
  Subscription& subscription = subscriptions_[index];
  if (finished_ || publication->version <= subscription.queued_version) return;
  subscription.queued_version = publication->version;
  for (Outgoing& pending : pending_) {
    if (pending.kind != Outgoing::kHeartbeat && pending.subscription == index) {
      pending = Outgoing{Outgoing::kUpdate, index, publication, {}};  // latest wins
      Bump(&counters_->updates_replaced);
      return;
    }
  }
  pending_.push_back(Outgoing{Outgoing::kUpdate, index, publication, {}});
}

std::optional<Outgoing> SubscriptionState::TakeWrite() {
  if (finished_ || write_in_flight_ || pending_.empty()) return std::nullopt;
  Outgoing outgoing = std::move(pending_.front());
  pending_.erase(pending_.begin());
  write_in_flight_ = true;
  switch (outgoing.kind) {
    case Outgoing::kHeartbeat:
      Bump(&counters_->heartbeats_written);
      break;
    case Outgoing::kUpdate:
      outgoing.bytes = outgoing.publication->update_bytes;
      Bump(&counters_->updates_written);
      break;
    case Outgoing::kInSync:
      Bump(&counters_->in_sync_written);
      break;
  }
  if (outgoing.publication != nullptr) {
    // An in-sync is answered only by a client that verifies serving; it is owed until then.
    subscriptions_[outgoing.subscription].answer_owed = true;
    fleet_->RecordSent(fleet_id_, outgoing.publication->name, outgoing.publication->version,
                       outgoing.publication->nonce, outgoing.kind == Outgoing::kInSync);
  }
  return outgoing;
}

void SubscriptionState::WriteDone(bool ok) {
  write_in_flight_ = false;
  if (!ok) pending_.clear();
}

bool SubscriptionState::AwaitingAnswer() const {
  if (!subscribed()) return true;
  for (const Subscription& subscription : subscriptions_) {
    if (subscription.answer_owed) return true;
  }
  return false;
}

absl::Status SubscriptionState::ReceiveAck(const v1::Ack& ack) {
  const AckOutcome outcome =
      fleet_->RecordAck(fleet_id_, ack.name(), ack.version(), ack.nonce(),
                        absl::StrJoin(ack.warnings(), "; "), ack.serving_verified());
  if (outcome == AckOutcome::kRecorded) {
    for (Subscription& subscription : subscriptions_) {
      if (subscription.name == ack.name()) subscription.answer_owed = false;
    }
  }
  return CountOutcome(outcome, ack.name(), &StreamCounters::acks);
}

absl::Status SubscriptionState::ReceiveNack(const v1::Nack& nack) {
  std::vector<std::string> errors;
  for (const v1::SinkError& error : nack.errors()) {
    errors.push_back(absl::StrCat(error.sink(), ": ", error.error()));
  }
  const std::string joined = errors.empty() ? "unspecified error" : absl::StrJoin(errors, "; ");
  const AckOutcome outcome = fleet_->RecordNack(fleet_id_, nack.name(), nack.version(),
                                                nack.nonce(), joined, NackReason(nack));
  if (outcome == AckOutcome::kRecorded) {
    LogWarn("client refused a version", {{"namespace", Peer(namespace_)},
                                         {"client", Peer(client_id_)},
                                         {"certificate", Peer(nack.name())},
                                         {"version", nack.version()},
                                         {"errors", Peer(joined)}});
  }
  return CountOutcome(outcome, nack.name(), &StreamCounters::nacks);
}

absl::Status SubscriptionState::CountOutcome(AckOutcome outcome, const std::string& name,
                                             std::atomic<uint64_t> StreamCounters::*field) {
  switch (outcome) {
    case AckOutcome::kRecorded:
      Bump(&(counters_->*field));
      return absl::OkStatus();
    case AckOutcome::kStale:
      Bump(&counters_->stale_acks);
      return absl::OkStatus();
    case AckOutcome::kUnknownCertificate:
      break;
  }
  return absl::InvalidArgumentError(absl::StrCat("ack or nack for certificate \"", name,
                                                 "\", which this stream did not subscribe to"));
}

std::optional<StreamEnd> SubscriptionState::Reauthorize() {
  if (finished_ || !subscribed()) return std::nullopt;
  for (const Subscription& subscription : subscriptions_) {
    absl::Status allowed =
        authorizer_->AuthorizeSubscribe(identity_, namespace_, subscription.name);
    if (allowed.ok()) continue;
    authorizer_->Audit(identity_, "Subscribe (policy reload)", subscription.name, allowed);
    return StreamEnd{
        absl::Status(allowed.code(), absl::StrCat(allowed.message(), " (access revoked)")),
        DenialReason(allowed)};
  }
  return std::nullopt;
}

void SubscriptionState::Finish() {
  finished_ = true;
  pending_.clear();
}

void SubscriptionState::Close() {
  Finish();
  if (fleet_id_ != 0) fleet_->Disconnect(fleet_id_);
}

}  // namespace certcast
