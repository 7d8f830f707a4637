#include "server/distribution.h"

#include <algorithm>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "common/protocol.h"
#include "common/secret.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "server/inspection.h"

namespace certcast {

// The transport of one Subscribe call: reads, writes (one in flight), Finish exactly once,
// OnDone. What to write and whether a message is acceptable is SubscriptionState's business.
// Lives until OnDone and the last reference from the hub are gone.
//
// Reads on demand: while the client owes an answer, and after each write. gRPC 1.51 answers a
// received message with a stream WINDOW_UPDATE in a write of its own when the next read is
// already waiting; a read started after the next write finds that update sent along with it, so
// an ACK costs no write (bench/README.md, optimization 15). A settled stream therefore reads
// again only after its next write (an update, or a heartbeat at the latest). A client that goes
// away meanwhile (cancels, or its connection ends) is seen by OnCancel; one that only half-closes
// (certcast-client never does) is seen at that next write.
class SubscribeStream final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  SubscribeStream(DistributionHub* hub, grpc::CallbackServerContext* context)
      : hub_(hub),
        context_(context),
        bearer_token_(BearerToken(*context)),
        state_(
            SubscriptionState::Options{hub->options_.max_certificates_per_hello,
                                       hub->options_.heartbeat_interval},
            TransportIdentity(*context),
            [hub](const std::string& name) { return hub->Known(name); }, hub->fleet_,
            hub->authorizer_, &hub->counters_.stream) {
    absl::MutexLock lock(&mu_);
    StartReadLocked();
  }
  ~SubscribeStream() override { CleanseString(&bearer_token_); }

  void Ref() { refs_.fetch_add(1, std::memory_order_relaxed); }
  void Unref() {
    if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // Queues `publication` unless the stream already has that version or a newer one.
  void OfferUpdate(const std::shared_ptr<const Publication>& publication) {
    absl::MutexLock lock(&mu_);
    state_.OfferUpdate(publication);
    StartWriteLocked();
  }

  // Writes a heartbeat when nothing else is waiting (any message proves liveness).
  void OfferHeartbeat() {
    absl::MutexLock lock(&mu_);
    state_.OfferHeartbeat();
    StartWriteLocked();
  }

  // `denial_reason` (from DenialReason) travels to the client as trailing metadata, so a client
  // can tell a revocation from other refusals.
  void FinishWith(const grpc::Status& status, const std::string& denial_reason = "") {
    bool finish_now = false;
    std::string who;
    std::string peer;
    {
      absl::MutexLock lock(&mu_);
      if (finish_requested_) return;
      who = state_.who();
      peer = state_.identity().peer;
      finish_requested_ = true;
      finish_status_ = status;
      if (!denial_reason.empty()) {
        context_->AddTrailingMetadata(std::string(kDenialReasonMetadata), denial_reason);
      }
      state_.Finish();
      finish_now = !write_in_flight_;
    }
    if (!status.ok()) hub_->CountStreamError(status.error_code());
    // Shutdown (UNAVAILABLE) is not the client's fault and is not worth a line per stream; nor
    // is a flood refused for its numbers (counted, and each one would be a line).
    if (!status.ok() && status.error_code() != grpc::StatusCode::UNAVAILABLE) {
      hub_->Count(&DistributionHub::AtomicCounters::streams_rejected);
      LogAt(status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED ? spdlog::level::debug
                                                                        : spdlog::level::info,
            "stream ended",
            {{"peer", Peer(peer)},
             {"client", Peer(who)},
             {"code", StatusCodeName(static_cast<int>(status.error_code()))},
             {"error", Peer(status.error_message())}});
    }
    if (finish_now) Finish(status);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the client closed its side or the call is gone
      FinishWith(grpc::Status::OK);
      return;
    }
    // read_pending_ stays set until the message is handled: read_buffer_ is still in use.
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
    std::optional<StreamEnd> end;
    {
      absl::MutexLock lock(&mu_);
      if (finish_requested_) return;
      end = state_.Reauthorize();
    }
    if (end.has_value()) FinishWith(ToGrpc(end->status), end->denial_reason);
  }

  void OnWriteDone(bool ok) override {
    bool finish_now = false;
    {
      absl::MutexLock lock(&mu_);
      write_in_flight_ = false;
      in_flight_.Clear();
      state_.WriteDone(ok);
      if (finish_requested_) {
        finish_now = true;
      } else if (ok) {
        StartWriteLocked();
      }
    }
    if (finish_now) {
      Finish(finish_status_);
    } else if (!ok) {  // the call is broken; no read may be pending to notice it
      FinishWith(grpc::Status::OK);
    }
  }

  // The client cancelled or its connection is gone, perhaps while no read was pending.
  void OnCancel() override { FinishWith(grpc::Status::OK); }

  void OnDone() override {
    hub_->Unregister(this);
    {
      absl::MutexLock lock(&mu_);
      state_.Close();
    }
    Unref();
  }

 private:
  static grpc::Status ToGrpc(const absl::Status& status) {
    return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                        std::string(status.message()));
  }

  // The message in read_buffer_ is handled: read on while the client owes an answer.
  void ReadNext() {
    absl::MutexLock lock(&mu_);
    read_pending_ = false;
    if (state_.AwaitingAnswer()) StartReadLocked();
  }

  void StartReadLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_requested_ || read_pending_) return;
    read_pending_ = true;
    StartRead(&read_buffer_);
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
    absl::StatusOr<SubscriptionState::Next> next;
    {
      absl::MutexLock lock(&mu_);
      next = state_.Receive(request);
    }
    if (!next.ok()) return ToGrpc(next.status());
    if (*next == SubscriptionState::Next::kAuthenticate) {
      *read_next = false;
      Authenticate();
    }
    return grpc::Status::OK;
  }

  // Who is asking: the client certificate, or the bearer token (maybe a TokenReview on a
  // worker thread). The continuation restarts reading.
  void Authenticate() {
    Ref();
    auto continuation = [this](absl::StatusOr<PeerIdentity> identity) {
      std::string denial_reason;
      grpc::Status status = Admit(std::move(identity), &denial_reason);
      if (status.ok()) {
        ReadNext();
      } else {
        FinishWith(status, denial_reason);
      }
      Unref();
    };
    PeerIdentity transport;
    {
      absl::MutexLock lock(&mu_);
      transport = state_.identity();
    }
    if (hub_->authenticator_ == nullptr) {
      continuation(std::move(transport));
    } else {
      hub_->authenticator_->Authenticate(std::move(transport), std::move(bearer_token_),
                                         continuation, [this] {
                                           absl::MutexLock lock(&mu_);
                                           return !finish_requested_;
                                         });
    }
  }

  // Once the identity is known: authorization, then registration and the first messages.
  grpc::Status Admit(absl::StatusOr<PeerIdentity> identity, std::string* denial_reason) {
    absl::MutexLock lock(&mu_);
    // The hello deadline may have ended the stream while this hello was being authenticated.
    if (finish_requested_) return grpc::Status::OK;
    // Authorized under mu_: a policy change either finds this stream registered (Reauthorize
    // waits for mu_) or is already what this check sees. Never a stream that slips through.
    absl::StatusOr<std::vector<std::string>> names =
        state_.Admit(std::move(identity), denial_reason);
    if (!names.ok()) return ToGrpc(names.status());
    absl::StatusOr<std::vector<std::shared_ptr<const Publication>>> registered =
        hub_->Register(this, state_.identity(), state_.requested_namespace(), *names);
    if (!registered.ok()) {
      hub_->authorizer_->Audit(state_.identity(), "Subscribe", "", registered.status());
      return ToGrpc(registered.status());
    }
    state_.Subscribe(*registered);
    StartWriteLocked();
    return grpc::Status::OK;
  }

  // OnWriteDone (OnReadDone) never runs inline in StartWrite (StartRead), so starting either
  // under mu_ is safe. The read follows the write: see the class comment.
  void StartWriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_requested_ || write_in_flight_) return;  // no write may follow Finish
    std::optional<Outgoing> next = state_.TakeWrite();
    if (!next.has_value()) return;
    write_in_flight_ = true;
    in_flight_ = std::move(next->bytes);
    StartWrite(&in_flight_);
    StartReadLocked();
  }

  DistributionHub* const hub_;
  grpc::CallbackServerContext* const context_;  // valid until OnDone
  // The read path owns the bearer token until it is handed to authentication.
  std::string bearer_token_;
  std::atomic<int> refs_{1};      // gRPC's reference, dropped in OnDone
  grpc::ByteBuffer read_buffer_;  // the single read's, until its message is handled

  absl::Mutex mu_;
  SubscriptionState state_ ABSL_GUARDED_BY(mu_);
  grpc::ByteBuffer in_flight_ ABSL_GUARDED_BY(mu_);
  bool write_in_flight_ ABSL_GUARDED_BY(mu_) = false;
  bool read_pending_ ABSL_GUARDED_BY(mu_) = false;  // a read, or its message being handled
  bool finish_requested_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status finish_status_;  // written once under mu_ before Finish is due
};

int DefaultFanOutThreads() {
  return std::clamp(static_cast<int>(std::thread::hardware_concurrency()), 2, 8);
}

DistributionHub::DistributionHub(std::vector<std::string> names, Options options, Fleet* fleet,
                                 Authorizer* authorizer, Authenticator* authenticator)
    : options_(options), fleet_(fleet), authorizer_(authorizer), authenticator_(authenticator) {
  absl::MutexLock lock(&mu_);
  for (std::string& name : names) topics_[std::move(name)];
}

DistributionHub::~DistributionHub() { Stop(); }

void DistributionHub::OnPublish(std::shared_ptr<const Publication> publication) {
  Offers offers;
  bool gated = false;
  {
    absl::MutexLock lock(&mu_);
    Topic& topic = topics_[publication->name];
    topic.current = publication;
    gated = topic.gate != nullptr;
    if (!gated) {
      offers.reserve(topic.subscribers.size());
      for (SubscribeStream* stream : topic.subscribers) {
        stream->Ref();
        offers.emplace_back(stream, publication);
      }
    }
  }
  if (gated) {  // a rollout decides per namespace
    OfferAll(publication->name);
    return;
  }
  Offer(std::move(offers));
}

void DistributionHub::SetGate(const std::string& name, std::shared_ptr<const RolloutGate> gate) {
  {
    absl::MutexLock lock(&mu_);
    topics_[name].gate = std::move(gate);
  }
  OfferAll(name);
}

std::shared_ptr<const Publication> DistributionHub::For(const Topic& topic,
                                                        SubscribeStream* stream) {
  if (topic.gate == nullptr || topic.current == nullptr) return topic.current;
  auto it = namespace_of_.find(stream);
  return topic.gate->For(it == namespace_of_.end() ? std::string() : it->second, topic.current);
}

void DistributionHub::OfferAll(const std::string& name) {
  Offers offers;
  {
    absl::MutexLock lock(&mu_);
    Topic& topic = topics_[name];
    for (SubscribeStream* stream : topic.subscribers) {
      std::shared_ptr<const Publication> publication = For(topic, stream);
      if (publication == nullptr) continue;
      stream->Ref();
      offers.emplace_back(stream, std::move(publication));
    }
  }
  Offer(std::move(offers));
}

void DistributionHub::Offer(Offers offers) {
  auto offer_range = [&offers](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      offers[i].first->OfferUpdate(offers[i].second);
      offers[i].first->Unref();
    }
  };
  const size_t shards = std::clamp<size_t>(
      offers.size() / std::max<size_t>(options_.min_streams_per_fan_out_thread, 1), 1,
      std::max(options_.fan_out_threads, 1));
  const size_t shard = (offers.size() + shards - 1) / shards;
  std::vector<std::function<void()>> jobs;
  for (size_t begin = 0; begin < offers.size(); begin += shard) {
    const size_t end = std::min(begin + shard, offers.size());
    jobs.push_back([&offer_range, begin, end] { offer_range(begin, end); });
  }
  fan_out_.Run(std::move(jobs));
}

absl::StatusOr<std::vector<std::shared_ptr<const Publication>>> DistributionHub::Register(
    SubscribeStream* stream, const PeerIdentity& peer, const std::string& namespace_,
    const std::vector<std::string>& names) {
  absl::MutexLock lock(&mu_);
  LeaveAwaitingHelloLocked(stream);
  if (!peer.identity.empty()) {
    // Per identity and namespace: a shared writer holds one stream per namespace it serves.
    const std::string identity = absl::StrCat(peer.identity, " in namespace ", namespace_);
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
  if (peer.expires != absl::InfiniteFuture()) {
    expiries_[stream] = Expiry{peer.expires, peer.kind == "mtls" ? "client certificate" : "token"};
    ++wakeups_;
  }
  namespace_of_[stream] = namespace_;
  std::vector<std::shared_ptr<const Publication>> current;
  for (const std::string& name : names) {
    Topic& topic = topics_[name];
    topic.subscribers.insert(stream);
    current.push_back(For(topic, stream));
  }
  return current;
}

void DistributionHub::LeaveAwaitingHelloLocked(SubscribeStream* stream) {
  auto it = awaiting_hello_.find(stream);
  if (it == awaiting_hello_.end()) return;
  for (auto [counts, key] : {std::pair(&awaiting_per_connection_, &it->second.connection),
                             std::pair(&awaiting_per_address_, &it->second.address)}) {
    auto count = counts->find(*key);
    if (count != counts->end() && --count->second <= 0) counts->erase(count);
  }
  awaiting_hello_.erase(it);
}

void DistributionHub::Unregister(SubscribeStream* stream) {
  absl::MutexLock lock(&mu_);
  LeaveAwaitingHelloLocked(stream);
  expiries_.erase(stream);
  if (auto it = identity_of_.find(stream); it != identity_of_.end()) {
    if (--streams_per_identity_[it->second] == 0) streams_per_identity_.erase(it->second);
    identity_of_.erase(it);
  }
  streams_.erase(stream);
  namespace_of_.erase(stream);
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
  snapshot.updates_written = counters_.stream.updates_written.load();
  snapshot.in_sync_written = counters_.stream.in_sync_written.load();
  snapshot.heartbeats_written = counters_.stream.heartbeats_written.load();
  snapshot.updates_replaced = counters_.stream.updates_replaced.load();
  snapshot.acks = counters_.stream.acks.load();
  snapshot.nacks = counters_.stream.nacks.load();
  snapshot.stale_acks = counters_.stream.stale_acks.load();
  snapshot.streams_expired = counters_.streams_expired.load();
  snapshot.hellos_over_limit = counters_.hellos_over_limit.load();
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
  std::string refusal;
  {
    absl::MutexLock lock(&mu_);
    streams_.insert(stream);
    // Streams that have not said hello cost memory and maybe a token review, and prove nothing:
    // a bounded number per connection (the peer's port) and per address.
    AwaitingHello awaiting{absl::Now() + options_.hello_timeout, context->peer(),
                           PeerAddress(context->peer())};
    int& per_connection = awaiting_per_connection_[awaiting.connection];
    int& per_address = awaiting_per_address_[awaiting.address];
    if (per_connection >= options_.max_awaiting_hello_per_connection) {
      refusal = absl::StrCat("this connection already has ", per_connection,
                             " streams waiting for their hello (the limit per connection)");
    } else if (per_address >= options_.max_awaiting_hello_per_address) {
      refusal = absl::StrCat("this address already has ", per_address,
                             " streams waiting for their hello (the limit per address)");
    }
    if (refusal.empty()) {
      ++per_connection;
      ++per_address;
      awaiting_hello_.emplace(stream, std::move(awaiting));
      ++wakeups_;
    } else {
      if (per_connection == 0) awaiting_per_connection_.erase(awaiting.connection);
      if (per_address == 0) awaiting_per_address_.erase(awaiting.address);
    }
  }
  if (!refusal.empty()) {
    Count(&AtomicCounters::hellos_over_limit);
    stream->FinishWith(grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, refusal));
  }
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

bool DistributionHub::WaitUntilNoStreams(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto none = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return streams_.empty(); };
  return mu_.AwaitWithDeadline(absl::Condition(&none), deadline);
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
  fan_out_.Stop();
}

void DistributionHub::Housekeep() {
  absl::Time next_heartbeat = absl::Now() + options_.heartbeat_interval;
  while (true) {
    std::vector<SubscribeStream*> late;
    std::vector<std::pair<SubscribeStream*, Expiry>> expired;
    std::vector<SubscribeStream*> all;
    {
      absl::MutexLock lock(&mu_);
      absl::Time wake = next_heartbeat;
      for (const auto& [stream, awaiting] : awaiting_hello_) {
        wake = std::min(wake, awaiting.deadline);
      }
      for (const auto& [stream, expiry] : expiries_) wake = std::min(wake, expiry.at);
      // Wakes early when stopping or when a new deadline may be earlier.
      const uint64_t seen = wakeups_;
      auto wake_condition = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || wakeups_ != seen;
      };
      mu_.AwaitWithDeadline(absl::Condition(&wake_condition), wake);
      if (stopping_) return;
      const absl::Time now = absl::Now();
      for (auto it = awaiting_hello_.begin(); it != awaiting_hello_.end();) {
        SubscribeStream* stream = it->first;
        ++it;
        if (awaiting_hello_.at(stream).deadline > now) continue;
        stream->Ref();
        late.push_back(stream);
        LeaveAwaitingHelloLocked(stream);
      }
      for (auto it = expiries_.begin(); it != expiries_.end();) {
        if (it->second.at <= now) {
          it->first->Ref();
          expired.emplace_back(it->first, it->second);
          it = expiries_.erase(it);
        } else {
          ++it;
        }
      }
      if (now >= next_heartbeat) {
        next_heartbeat = now + options_.heartbeat_interval;
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
    for (auto& [stream, expiry] : expired) {
      // UNAUTHENTICATED with its own reason: the client reconnects with a fresh credential and
      // never mistakes this for a revocation (--delete-on-revoke acts on not_allowed only).
      Count(&AtomicCounters::streams_expired);
      stream->FinishWith(
          grpc::Status(
              grpc::StatusCode::UNAUTHENTICATED,
              absl::StrCat("the ", expiry.credential, " of this stream expired at ",
                           absl::FormatTime(absl::RFC3339_sec, expiry.at, absl::UTCTimeZone()),
                           "; reconnect with a fresh one")),
          std::string(kDenialCredentialExpired));
      stream->Unref();
    }
    for (SubscribeStream* stream : all) {
      stream->OfferHeartbeat();
      stream->Unref();
    }
  }
}

grpc::ServerUnaryReactor* DistributionService::ListWriterNamespaces(
    grpc::CallbackServerContext* context, const v1::ListWriterNamespacesRequest* request,
    v1::ListWriterNamespacesResponse* response) {
  if (authorizer_ == nullptr) {
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    reactor->Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "no shared writers here"));
    return reactor;
  }
  return WithCaller(
      context, authenticator_,
      [this, request, response](const PeerIdentity& transport,
                                absl::StatusOr<PeerIdentity> caller) -> grpc::Status {
        constexpr char kMethod[] = "Distribution/ListWriterNamespaces";
        if (!caller.ok()) {
          authorizer_->Audit(transport, kMethod, request->certificate(), caller.status());
          return grpc::Status(static_cast<grpc::StatusCode>(caller.status().code()),
                              std::string(caller.status().message()));
        }
        absl::StatusOr<std::vector<std::string>> namespaces =
            authorizer_->WriterNamespaces(*caller, request->certificate());
        if (!namespaces.ok()) {
          if (absl::IsPermissionDenied(namespaces.status()) ||
              absl::IsUnauthenticated(namespaces.status())) {
            authorizer_->Audit(*caller, kMethod, request->certificate(), namespaces.status());
          }
          return grpc::Status(static_cast<grpc::StatusCode>(namespaces.status().code()),
                              std::string(namespaces.status().message()));
        }
        for (const std::string& ns : *namespaces) response->add_namespaces(ns);
        response->set_identity(caller->identity);
        return grpc::Status::OK;
      });
}

}  // namespace certcast
