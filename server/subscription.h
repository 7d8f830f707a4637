// SubscriptionState: the protocol state of one Subscribe stream, without any gRPC stream in it.
// It checks the hello, authorizes the proven identity, decides what to write next (heartbeat,
// in-sync, update; one write in flight, latest version wins while a write is pending), records
// ACKs and NACKs against the nonces sent, and builds the stream's heartbeats from what it
// subscribed to. The transport (SubscribeStream in distribution.cc) feeds it client messages and
// write completions and carries out what it returns; a fuzzer or a unit test can do the same.
//
// Not thread-safe: the transport serializes every call (its own mutex). Does not own `fleet`,
// `authorizer` or `counters`; they must outlive it.
#ifndef CERTCAST_SERVER_SUBSCRIPTION_H_
#define CERTCAST_SERVER_SUBSCRIPTION_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "certcast/v1/certcast.pb.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/authorizer.h"
#include "server/fleet.h"
#include "server/publication.h"

namespace certcast {

// What streams count, shared by every stream of a hub. Lock-free: streams bump them on the
// write path.
struct StreamCounters {
  std::atomic<uint64_t> updates_written{0};  // full-material messages
  std::atomic<uint64_t> in_sync_written{0};
  std::atomic<uint64_t> heartbeats_written{0};
  std::atomic<uint64_t> updates_replaced{0};  // superseded while waiting behind a slow reader
  std::atomic<uint64_t> acks{0};
  std::atomic<uint64_t> nacks{0};
  std::atomic<uint64_t> stale_acks{0};
};

// One message for the transport to write.
struct Outgoing {
  enum Kind { kHeartbeat, kUpdate, kInSync } kind = kHeartbeat;
  size_t subscription = 0;                         // kUpdate, kInSync
  std::shared_ptr<const Publication> publication;  // kUpdate, kInSync
  grpc::ByteBuffer bytes;                          // what to write
};

// A refusal that ends the stream: the status for the client and, for denials, the short reason
// (DenialReason) that travels as trailing metadata.
struct StreamEnd {
  absl::Status status;
  std::string denial_reason;
};

class SubscriptionState {
 public:
  struct Options {
    size_t max_certificates_per_hello = 64;
    absl::Duration heartbeat_interval = absl::Seconds(30);
  };
  // What the transport does after a client message.
  enum class Next {
    kRead,          // read the next message
    kAuthenticate,  // a well-formed hello: authenticate the peer, then call Admit()
  };

  // `known` says whether this server distributes a certificate name.
  SubscriptionState(Options options, PeerIdentity transport,
                    std::function<bool(const std::string&)> known, Fleet* fleet,
                    Authorizer* authorizer, StreamCounters* counters);
  ~SubscriptionState();
  SubscriptionState(const SubscriptionState&) = delete;
  SubscriptionState& operator=(const SubscriptionState&) = delete;

  // A message from the client. InvalidArgument for a protocol violation (a second hello, an ACK
  // before the hello, an empty message, a malformed hello, an ACK for a name not subscribed).
  absl::StatusOr<Next> Receive(const v1::SubscribeRequest& request);

  // The hello's second half, once the peer's identity is known (or its authentication failed):
  // every named certificate must be granted to the identity, then distributed by this server
  // (NotFound only for a granted name). Nothing about names is said before authentication, and
  // the authorizer refuses a name that is not distributed like one that is not granted, so
  // nobody learns which names exist. On
  // success returns the names to register with the hub, in hello order; otherwise how the stream
  // ends.
  absl::StatusOr<std::vector<std::string>> Admit(absl::StatusOr<PeerIdentity> identity,
                                                 std::string* denial_reason);

  // Registration succeeded: `current` holds the current publication of each admitted name (null
  // when it has none yet), in the order Admit() returned. Records the client with the fleet and
  // queues the first messages (a heartbeat, then an in-sync or update per certificate).
  void Subscribe(const std::vector<std::shared_ptr<const Publication>>& current);

  // A new version of a subscribed certificate: queued unless this version or a newer one was
  // already queued; it replaces a queued, unwritten one (latest wins). Ignored for other names.
  void OfferUpdate(const std::shared_ptr<const Publication>& publication);
  // Queues a heartbeat unless something else is waiting (any message proves liveness). A
  // heartbeat names only this stream's certificates, each with the newest version offered.
  void OfferHeartbeat();
  // The heartbeat OfferHeartbeat would queue.
  v1::SubscribeResponse Heartbeat() const;

  // The next message to write, when none is in flight; marks it in flight and records it as
  // sent. nullopt when nothing is due or a write is in flight.
  std::optional<Outgoing> TakeWrite();
  // The write in flight completed; `ok` false means the call is broken (the transport ends it).
  void WriteDone(bool ok);
  // Whether the client owes an answer: before its hello, and from an update or in-sync written
  // until the ACK with that nonce (a NACK or a stale ACK leaves it owed; a client that verifies
  // serving answers an in-sync). The transport reads on while it does, and otherwise only after
  // its next write.
  bool AwaitingAnswer() const;

  // Whether the policy (as the authorizer sees it now) still allows everything subscribed; the
  // denial otherwise. OK before the hello is admitted.
  std::optional<StreamEnd> Reauthorize();

  // The stream is ending: nothing more is queued or handed out for writing.
  void Finish();
  // The stream is gone: the fleet records the client as disconnected. Call once, last.
  void Close();

  bool subscribed() const { return fleet_id_ != 0; }
  bool finished() const { return finished_; }
  const PeerIdentity& identity() const { return identity_; }
  // "namespace/client_id" once the hello arrived, for logs.
  std::string who() const;
  // The namespace the hello names (empty before a hello).
  std::string requested_namespace() const {
    return hello_.has_value() ? hello_->namespace_() : namespace_;
  }
  // The hello's names, in order (empty before a hello).
  const std::vector<std::string>& names() const { return names_; }
  size_t pending_writes() const { return pending_.size(); }

 private:
  struct Subscription {
    std::string name;
    uint64_t queued_version = 0;                 // newest version queued or written on this stream
    std::shared_ptr<const Publication> current;  // newest offered, for heartbeats
    bool answer_owed = false;  // an update or in-sync was written and no ACK recorded since
  };

  absl::StatusOr<Next> ReceiveHello(const v1::Hello& hello);
  absl::Status ReceiveAck(const v1::Ack& ack);
  absl::Status ReceiveNack(const v1::Nack& nack);
  absl::Status CountOutcome(AckOutcome outcome, const std::string& name,
                            std::atomic<uint64_t> StreamCounters::*field);
  void EnqueueUpdate(size_t index, const std::shared_ptr<const Publication>& publication);

  const Options options_;
  const std::function<bool(const std::string&)> known_;
  Fleet* const fleet_;
  Authorizer* const authorizer_;
  StreamCounters* const counters_;

  // The peer address is fixed; the proven identity is filled in by Admit.
  PeerIdentity identity_;
  std::optional<v1::Hello> hello_;  // until Subscribe
  std::vector<std::string> names_;
  std::string namespace_;
  std::string client_id_;
  uint64_t fleet_id_ = 0;
  bool finished_ = false;

  std::vector<Subscription> subscriptions_;
  std::vector<Outgoing> pending_;  // at most one per subscription, plus a heartbeat
  bool write_in_flight_ = false;
};

// DNS-1123 label, like a Kubernetes namespace.
bool ValidNamespace(const std::string& ns);
// 1-253 characters of [A-Za-z0-9._:-].
bool ValidClientId(const std::string& id);

}  // namespace certcast

#endif  // CERTCAST_SERVER_SUBSCRIPTION_H_
