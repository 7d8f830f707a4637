#include "server/distribution.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/protocol.h"
#include "common/secret.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "spdlog/spdlog.h"

namespace certcast {
namespace {

// DNS-1123 label, like a Kubernetes namespace.
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

}  // namespace

// One Subscribe call. Lives until OnDone and the last reference from the hub are gone.
class SubscribeStream final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  SubscribeStream(DistributionHub* hub, grpc::CallbackServerContext* context)
      : hub_(hub),
        context_(context),
        identity_(TransportIdentity(*context)),
        bearer_token_(BearerToken(*context)) {
    StartRead(&read_buffer_);
  }
  ~SubscribeStream() override { CleanseString(&bearer_token_); }

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // Queues `publication` unless the stream already has that version or a newer one.
  void OfferUpdate(const std::shared_ptr<const Publication>& publication) {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < subscriptions_.size(); ++i) {
      if (subscriptions_[i].name == publication->name) EnqueueUpdateLocked(i, publication);
    }
  }

  // Writes a heartbeat when nothing else is waiting (any message proves liveness).
  void OfferHeartbeat(const grpc::ByteBuffer& heartbeat) {
    absl::MutexLock lock(&mu_);
    if (finish_requested_ || !pending_.empty()) return;
    if (!write_in_flight_) {
      StartWriteLocked(Outgoing{Outgoing::kHeartbeat, 0, nullptr, heartbeat});
    } else {
      pending_.push_back(Outgoing{Outgoing::kHeartbeat, 0, nullptr, heartbeat});
    }
  }

  // `denial_reason` (from DenialReason) travels to the client as trailing metadata, so a client
  // can tell a revocation from other refusals.
  void FinishWith(const grpc::Status& status, const std::string& denial_reason = "") {
    bool finish_now = false;
    std::string who;
    {
      absl::MutexLock lock(&mu_);
      if (finish_requested_) return;
      who = absl::StrCat(namespace_, "/", client_id_);
      finish_requested_ = true;
      finish_status_ = status;
      if (!denial_reason.empty()) {
        context_->AddTrailingMetadata(std::string(kDenialReasonMetadata), denial_reason);
      }
      pending_.clear();
      finish_now = !write_in_flight_;
    }
    if (!status.ok()) hub_->CountStreamError(status.error_code());
    // Shutdown (UNAVAILABLE) is not the client's fault and is not worth a line per stream.
    if (!status.ok() && status.error_code() != grpc::StatusCode::UNAVAILABLE) {
      hub_->Count(&DistributionHub::AtomicCounters::streams_rejected);
      spdlog::info("stream from {} ({}) ended with code {}: {}", identity_.peer, who,
                   static_cast<int>(status.error_code()), status.error_message());
    }
    if (finish_now) Finish(status);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client closed its side or the call is gone
      FinishWith(grpc::Status::OK);
      return;
    }
    bool read_next = true;
    grpc::Status status = HandleMessage(&read_next);
    if (!status.ok()) {
      FinishWith(status);
      return;
    }
    if (read_next) ReadNext();
  }

  // Ends the stream when the (new) policy no longer allows what it subscribed to.
  void Reauthorize() {
    PeerIdentity identity;
    std::string ns;
    std::vector<std::string> names;
    {
      absl::MutexLock lock(&mu_);
      if (finish_requested_ || fleet_id_ == 0) return;
      identity = identity_;
      ns = namespace_;
      for (const Subscription& subscription : subscriptions_) names.push_back(subscription.name);
    }
    for (const std::string& name : names) {
      absl::Status allowed = hub_->authorizer_->AuthorizeSubscribe(identity, ns, name);
      if (allowed.ok()) continue;
      hub_->authorizer_->Audit(identity, "Subscribe (policy reload)", name, allowed);
      FinishWith(grpc::Status(static_cast<grpc::StatusCode>(allowed.code()),
                              absl::StrCat(allowed.message(), " (access revoked)")),
                 DenialReason(allowed));
      return;
    }
  }

  void OnWriteDone(bool ok) override {
    bool finish_now = false;
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      in_flight_.Clear();
      if (finish_requested_) {
        finish_now = true;
      } else if (!ok) {
        // The call is broken; the pending read fails too and finishes the stream.
        pending_.clear();
      } else if (!pending_.empty()) {
        Outgoing next = std::move(pending_.front());
        pending_.erase(pending_.begin());
        StartWriteLocked(std::move(next));
      }
    }
    if (finish_now) Finish(finish_status_);
  }

  void OnDone() override {
    hub_->Unregister(this);
    if (fleet_id_ != 0) hub_->fleet_->Disconnect(fleet_id_);
    Unref();
  }

 private:
  struct Outgoing {
    enum Kind { kHeartbeat, kUpdate, kInSync } kind;
    size_t subscription = 0;
    std::shared_ptr<const Publication> publication;  // kUpdate, kInSync
    grpc::ByteBuffer bytes;                          // kHeartbeat, kInSync
  };
  struct Subscription {
    std::string name;
    uint64_t queued_version = 0;  // newest version queued or written on this stream
  };

  void ReadNext() {
    absl::MutexLock lock(&mu_);
    if (!finish_requested_) StartRead(&read_buffer_);
  }

  // Handles one message; `*read_next` false means the handler restarts reading itself.
  grpc::Status HandleMessage(bool* read_next) {
    const size_t size = read_buffer_.Length();
    if (size > hub_->options_.max_message_bytes) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          absl::StrCat("message of ", size, " bytes exceeds the limit of ",
                                       hub_->options_.max_message_bytes, " bytes"));
    }
    v1::SubscribeRequest request;
    grpc::Status parsed =
        grpc::SerializationTraits<v1::SubscribeRequest>::Deserialize(&read_buffer_, &request);
    if (!parsed.ok()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "message is not a valid certcast.v1.SubscribeRequest");
    }
    const bool greeted = fleet_id_ != 0;
    switch (request.kind_case()) {
      case v1::SubscribeRequest::kHello:
        if (greeted) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "hello was already received");
        }
        *read_next = false;
        return HandleHello(request.hello());
      case v1::SubscribeRequest::kAck:
      case v1::SubscribeRequest::kNack:
        if (!greeted) {
          return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                              "the first message must be a hello");
        }
        return request.has_ack() ? HandleAck(request.ack()) : HandleNack(request.nack());
      case v1::SubscribeRequest::KIND_NOT_SET:
        break;
    }
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        greeted ? "empty message: expected an ack or a nack" : "the first message must be a hello");
  }

  grpc::Status HandleHello(const v1::Hello& hello) {
    if (!ValidNamespace(hello.namespace_())) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          hello.namespace_().empty()
                              ? "hello has an empty namespace"
                              : "hello namespace is not a valid namespace name (DNS-1123 label)");
    }
    if (!ValidClientId(hello.client_id())) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "hello client_id must be 1-253 characters of [A-Za-z0-9._:-]");
    }
    if (hello.certificates().empty()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "hello names no certificate");
    }
    if (static_cast<size_t>(hello.certificates_size()) >
        hub_->options_.max_certificates_per_hello) {
      return grpc::Status(
          grpc::StatusCode::INVALID_ARGUMENT,
          absl::StrCat("hello names ", hello.certificates_size(), " certificates; the limit is ",
                       hub_->options_.max_certificates_per_hello));
    }
    std::vector<std::string> names;
    for (const v1::HeldCertificate& held : hello.certificates()) {
      if (std::find(names.begin(), names.end(), held.name()) != names.end()) {
        return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                            absl::StrCat("hello names certificate \"", held.name(), "\" twice"));
      }
      if (!hub_->Known(held.name())) {
        return grpc::Status(
            grpc::StatusCode::NOT_FOUND,
            absl::StrCat("certificate \"", held.name(), "\" is not distributed by this server"));
      }
      names.push_back(held.name());
    }

    // Who is asking: the client certificate, or the bearer token (maybe a TokenReview on a
    // worker thread). The continuation restarts reading.
    Ref();
    auto continuation = [this, hello, names](absl::StatusOr<PeerIdentity> identity) {
      std::string denial_reason;
      grpc::Status status = ContinueHello(hello, names, std::move(identity), &denial_reason);
      if (status.ok()) {
        ReadNext();
      } else {
        FinishWith(status, denial_reason);
      }
      Unref();
    };
    if (hub_->authenticator_ == nullptr) {
      continuation(identity_);
    } else {
      hub_->authenticator_->Authenticate(identity_, std::move(bearer_token_), continuation, [this] {
        absl::MutexLock lock(&mu_);
        return !finish_requested_;
      });
    }
    return grpc::Status::OK;
  }

  // The hello's second half, once the identity is known: authorization, then registration and
  // the initial messages.
  grpc::Status ContinueHello(const v1::Hello& hello, const std::vector<std::string>& names,
                             absl::StatusOr<PeerIdentity> identity, std::string* denial_reason) {
    if (!identity.ok()) {
      hub_->authorizer_->Audit(identity_, "Subscribe", "", identity.status());
      *denial_reason = DenialReason(identity.status());
      return grpc::Status(static_cast<grpc::StatusCode>(identity.status().code()),
                          std::string(identity.status().message()));
    }
    ClientRecord record;
    record.client_id = hello.client_id();
    record.namespace_ = hello.namespace_();
    record.peer = identity->peer;
    record.identity = identity->identity;
    for (const std::string& name : names) {
      record.certificates.emplace_back();
      record.certificates.back().name = name;
    }

    absl::MutexLock lock(&mu_);
    // The hello deadline may have ended the stream while this hello was being read.
    if (finish_requested_) return grpc::Status::OK;
    // Authorized under mu_: a policy change either finds this stream registered (Reauthorize
    // waits for mu_) or is already what this check sees. Never a stream that slips through.
    for (const std::string& name : names) {
      absl::Status allowed =
          hub_->authorizer_->AuthorizeSubscribe(*identity, hello.namespace_(), name);
      if (!allowed.ok()) {
        hub_->authorizer_->Audit(*identity, "Subscribe", name, allowed);
        *denial_reason = DenialReason(allowed);
        return grpc::Status(static_cast<grpc::StatusCode>(allowed.code()),
                            std::string(allowed.message()));
      }
    }
    grpc::ByteBuffer heartbeat;
    absl::StatusOr<std::vector<std::shared_ptr<const Publication>>> registered =
        hub_->Register(this, identity->identity, names, &heartbeat);
    if (!registered.ok()) {
      hub_->authorizer_->Audit(*identity, "Subscribe", "", registered.status());
      return grpc::Status(static_cast<grpc::StatusCode>(registered.status().code()),
                          std::string(registered.status().message()));
    }
    const std::vector<std::shared_ptr<const Publication>>& current = *registered;
    identity_.identity = identity->identity;  // the peer address stays as it was
    identity_.kind = identity->kind;
    identity_.namespace_ = identity->namespace_;
    identity_.name = identity->name;
    namespace_ = hello.namespace_();
    client_id_ = hello.client_id();
    fleet_id_ = hub_->fleet_->Connect(std::move(record));
    for (const std::string& name : names) subscriptions_.push_back(Subscription{name, 0});
    StartWriteLocked(Outgoing{Outgoing::kHeartbeat, 0, nullptr, std::move(heartbeat)});
    for (size_t i = 0; i < names.size(); ++i) {
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
          spdlog::warn(
              "client {}/{} holds version {} of {} but the server is at version {}; "
              "the server's version wins",
              namespace_, client_id_, held.version(), publication->name, publication->version);
        }
        EnqueueUpdateLocked(i, publication);
      }
    }
    spdlog::debug("stream from {} subscribed {}/{} to {}", identity_.peer, namespace_, client_id_,
                  absl::StrJoin(names, ","));
    return grpc::Status::OK;
  }

  grpc::Status HandleAck(const v1::Ack& ack) {
    const AckOutcome outcome = hub_->fleet_->RecordAck(
        fleet_id_, ack.name(), ack.version(), ack.nonce(), absl::StrJoin(ack.warnings(), "; "));
    return CountOutcome(outcome, ack.name(), &DistributionHub::AtomicCounters::acks);
  }

  grpc::Status HandleNack(const v1::Nack& nack) {
    std::vector<std::string> errors;
    for (const v1::SinkError& error : nack.errors()) {
      errors.push_back(absl::StrCat(error.sink(), ": ", error.error()));
    }
    const std::string joined = errors.empty() ? "unspecified error" : absl::StrJoin(errors, "; ");
    const AckOutcome outcome = hub_->fleet_->RecordNack(fleet_id_, nack.name(), nack.version(),
                                                        nack.nonce(), joined, NackReason(nack));
    if (outcome == AckOutcome::kRecorded) {
      spdlog::warn("client {}/{} refused version {} of {}: {}", namespace_, client_id_,
                   nack.version(), nack.name(), joined);
    }
    return CountOutcome(outcome, nack.name(), &DistributionHub::AtomicCounters::nacks);
  }

  grpc::Status CountOutcome(AckOutcome outcome, const std::string& name,
                            std::atomic<uint64_t> DistributionHub::AtomicCounters::*field) {
    switch (outcome) {
      case AckOutcome::kRecorded:
        hub_->Count(field);
        return grpc::Status::OK;
      case AckOutcome::kStale:
        hub_->Count(&DistributionHub::AtomicCounters::stale_acks);
        return grpc::Status::OK;
      case AckOutcome::kUnknownCertificate:
        break;
    }
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("ack or nack for certificate \"", name,
                                     "\", which this stream did not subscribe to"));
  }

  void EnqueueUpdateLocked(size_t index, const std::shared_ptr<const Publication>& publication)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Subscription& subscription = subscriptions_[index];
    if (finish_requested_ || publication->version <= subscription.queued_version) return;
    subscription.queued_version = publication->version;
    for (Outgoing& pending : pending_) {
      if (pending.kind != Outgoing::kHeartbeat && pending.subscription == index) {
        pending = Outgoing{Outgoing::kUpdate, index, publication, {}};  // latest wins
        hub_->Count(&DistributionHub::AtomicCounters::updates_replaced);
        return;
      }
    }
    Outgoing outgoing{Outgoing::kUpdate, index, publication, {}};
    if (write_in_flight_) {
      pending_.push_back(std::move(outgoing));
    } else {
      StartWriteLocked(std::move(outgoing));
    }
  }

  // OnWriteDone never runs inline in StartWrite, so starting a write under mu_ is safe.
  void StartWriteLocked(Outgoing outgoing) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_requested_) return;  // Finish is called or due; no write may follow it
    write_in_flight_ = true;
    switch (outgoing.kind) {
      case Outgoing::kHeartbeat:
        in_flight_ = std::move(outgoing.bytes);
        hub_->Count(&DistributionHub::AtomicCounters::heartbeats_written);
        break;
      case Outgoing::kUpdate:
        in_flight_ = outgoing.publication->update_bytes;
        hub_->Count(&DistributionHub::AtomicCounters::updates_written);
        break;
      case Outgoing::kInSync:
        in_flight_ = std::move(outgoing.bytes);
        hub_->Count(&DistributionHub::AtomicCounters::in_sync_written);
        break;
    }
    if (outgoing.publication != nullptr) {
      hub_->fleet_->RecordSent(fleet_id_, outgoing.publication->name, outgoing.publication->version,
                               outgoing.publication->nonce, outgoing.kind == Outgoing::kInSync);
    }
    StartWrite(&in_flight_);
  }

  DistributionHub* const hub_;
  grpc::CallbackServerContext* const context_;  // valid until OnDone
  // The peer address is fixed at construction; the proven identity is filled in under mu_ by
  // ContinueHello. The read path owns the bearer token until it is handed to authentication.
  PeerIdentity identity_;
  std::string bearer_token_;
  std::atomic<int> refs_{1};      // gRPC's reference, dropped in OnDone
  grpc::ByteBuffer read_buffer_;  // touched only by the single outstanding read
  // Written once under mu_ by the hello; the read path reads them without the lock afterwards.
  std::string namespace_;
  std::string client_id_;
  uint64_t fleet_id_ = 0;

  absl::Mutex mu_;
  std::vector<Subscription> subscriptions_ ABSL_GUARDED_BY(mu_);
  std::vector<Outgoing> pending_ ABSL_GUARDED_BY(mu_);  // at most one per subscription + heartbeat
  grpc::ByteBuffer in_flight_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_;  // written once under mu_ before Finish is due
};

DistributionHub::DistributionHub(std::vector<std::string> names, Options options, Fleet* fleet,
                                 Authorizer* authorizer, Authenticator* authenticator)
    : options_(options), fleet_(fleet), authorizer_(authorizer), authenticator_(authenticator) {
  absl::MutexLock lock(&mu_);
  for (std::string& name : names) topics_[std::move(name)];
  RebuildHeartbeatLocked();
}

DistributionHub::~DistributionHub() { Stop(); }

void DistributionHub::RebuildHeartbeatLocked() {
  v1::SubscribeResponse response;
  v1::Heartbeat* heartbeat = response.mutable_heartbeat();
  heartbeat->set_interval_seconds(static_cast<uint32_t>(
      std::max<int64_t>(1, absl::ToInt64Seconds(options_.heartbeat_interval))));
  for (const auto& [name, topic] : topics_) {
    v1::CertificateVersion* version = heartbeat->add_versions();
    version->set_name(name);
    if (topic.current != nullptr) {
      version->set_version(topic.current->version);
      version->set_fingerprint(topic.current->info.fingerprint);
    }
  }
  heartbeat_ = Serialize(response);
}

void DistributionHub::OnPublish(std::shared_ptr<const Publication> publication) {
  std::vector<SubscribeStream*> subscribers;
  {
    absl::MutexLock lock(&mu_);
    Topic& topic = topics_[publication->name];
    topic.current = publication;
    RebuildHeartbeatLocked();
    subscribers.assign(topic.subscribers.begin(), topic.subscribers.end());
    for (SubscribeStream* stream : subscribers) stream->Ref();
  }
  for (SubscribeStream* stream : subscribers) {
    stream->OfferUpdate(publication);
    stream->Unref();
  }
}

absl::StatusOr<std::vector<std::shared_ptr<const Publication>>> DistributionHub::Register(
    SubscribeStream* stream, const std::string& identity, const std::vector<std::string>& names,
    grpc::ByteBuffer* heartbeat) {
  absl::MutexLock lock(&mu_);
  awaiting_hello_.erase(stream);
  if (!identity.empty()) {
    int& streams = streams_per_identity_[identity];
    if (streams >= options_.max_streams_per_identity) {
      if (streams == 0) streams_per_identity_.erase(identity);
      return absl::ResourceExhaustedError(absl::StrCat("identity ", identity, " already has ",
                                                       options_.max_streams_per_identity,
                                                       " streams open (the limit per identity)"));
    }
    ++streams;
    identity_of_[stream] = identity;
  }
  std::vector<std::shared_ptr<const Publication>> current;
  for (const std::string& name : names) {
    Topic& topic = topics_[name];
    topic.subscribers.insert(stream);
    current.push_back(topic.current);
  }
  *heartbeat = heartbeat_;
  return current;
}

void DistributionHub::Unregister(SubscribeStream* stream) {
  absl::MutexLock lock(&mu_);
  awaiting_hello_.erase(stream);
  if (auto it = identity_of_.find(stream); it != identity_of_.end()) {
    if (--streams_per_identity_[it->second] == 0) streams_per_identity_.erase(it->second);
    identity_of_.erase(it);
  }
  streams_.erase(stream);
  for (auto& [name, topic] : topics_) topic.subscribers.erase(stream);
}

bool DistributionHub::Known(const std::string& name) {
  absl::MutexLock lock(&mu_);
  return topics_.count(name) > 0;
}

HubCounters DistributionHub::counters() {
  HubCounters snapshot;
  snapshot.streams_opened = counters_.streams_opened.load();
  snapshot.streams_rejected = counters_.streams_rejected.load();
  snapshot.updates_written = counters_.updates_written.load();
  snapshot.in_sync_written = counters_.in_sync_written.load();
  snapshot.heartbeats_written = counters_.heartbeats_written.load();
  snapshot.updates_replaced = counters_.updates_replaced.load();
  snapshot.acks = counters_.acks.load();
  snapshot.nacks = counters_.nacks.load();
  snapshot.stale_acks = counters_.stale_acks.load();
  for (size_t code = 0; code < counters_.stream_errors.size(); ++code) {
    const uint64_t count = counters_.stream_errors[code].load();
    if (count == 0) continue;
    snapshot.stream_errors[absl::StatusCodeToString(static_cast<absl::StatusCode>(code))] = count;
  }
  return snapshot;
}

size_t DistributionHub::live_streams() {
  absl::MutexLock lock(&mu_);
  return streams_.size();
}

grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* DistributionHub::NewStream(
    grpc::CallbackServerContext* context) {
  auto* stream = new SubscribeStream(this, context);
  Count(&AtomicCounters::streams_opened);
  absl::MutexLock lock(&mu_);
  streams_.insert(stream);
  awaiting_hello_[stream] = absl::Now() + options_.hello_timeout;
  return stream;
}

void DistributionHub::ReauthorizeAll() {
  std::vector<SubscribeStream*> streams;
  {
    absl::MutexLock lock(&mu_);
    for (SubscribeStream* stream : streams_) {
      stream->Ref();
      streams.push_back(stream);
    }
  }
  for (SubscribeStream* stream : streams) {
    stream->Reauthorize();
    stream->Unref();
  }
}

void DistributionHub::FinishAll(const grpc::Status& status) {
  std::vector<SubscribeStream*> streams;
  {
    absl::MutexLock lock(&mu_);
    for (SubscribeStream* stream : streams_) {
      stream->Ref();
      streams.push_back(stream);
    }
  }
  for (SubscribeStream* stream : streams) {
    stream->FinishWith(status);
    stream->Unref();
  }
}

void DistributionHub::Start() {
  housekeeper_ = std::thread([this] { Housekeep(); });
}

void DistributionHub::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (housekeeper_.joinable()) housekeeper_.join();
}

void DistributionHub::Housekeep() {
  absl::Time next_heartbeat = absl::Now() + options_.heartbeat_interval;
  while (true) {
    std::vector<SubscribeStream*> late;
    std::vector<SubscribeStream*> all;
    grpc::ByteBuffer heartbeat;
    {
      absl::MutexLock lock(&mu_);
      absl::Time wake = next_heartbeat;
      for (const auto& [stream, deadline] : awaiting_hello_) wake = std::min(wake, deadline);
      // Wakes early when stopping or when a new stream may have an earlier deadline.
      const size_t awaiting = awaiting_hello_.size();
      auto wake_condition = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || awaiting_hello_.size() > awaiting;
      };
      mu_.AwaitWithDeadline(absl::Condition(&wake_condition), wake);
      if (stopping_) return;
      const absl::Time now = absl::Now();
      for (auto it = awaiting_hello_.begin(); it != awaiting_hello_.end();) {
        if (it->second <= now) {
          it->first->Ref();
          late.push_back(it->first);
          it = awaiting_hello_.erase(it);
        } else {
          ++it;
        }
      }
      if (now >= next_heartbeat) {
        next_heartbeat = now + options_.heartbeat_interval;
        heartbeat = heartbeat_;
        for (SubscribeStream* stream : streams_) {
          if (awaiting_hello_.count(stream) > 0) continue;
          stream->Ref();
          all.push_back(stream);
        }
      }
    }
    for (SubscribeStream* stream : late) {
      stream->FinishWith(grpc::Status(
          grpc::StatusCode::DEADLINE_EXCEEDED,
          absl::StrCat("no hello within ", absl::FormatDuration(options_.hello_timeout))));
      stream->Unref();
    }
    for (SubscribeStream* stream : all) {
      stream->OfferHeartbeat(heartbeat);
      stream->Unref();
    }
  }
}

}  // namespace certcast
