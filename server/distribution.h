// certcast.v1.Distribution: one callback reactor per Subscribe stream (no thread per stream),
// fed by the DistributionHub with publications serialized once and shared by every stream.
//
// Per stream: the protocol state lives in SubscriptionState (server/subscription.h); the reactor
// in distribution.cc is only its transport. One read and one write in flight; a newer version of a
// certificate replaces the one still waiting to be written (latest wins), so a client that stops
// reading costs bounded memory. Malformed input ends only that stream.
//
// Lock order: Publisher::mu_ → DistributionHub::mu_; SubscribeStream::mu_ → DistributionHub::mu_
// → (nothing); SubscribeStream::mu_ → Fleet, Authorizer. The hub never holds its lock while calling
// into a stream: it takes references, unlocks, then calls.
#ifndef CERTCAST_SERVER_DISTRIBUTION_H_
#define CERTCAST_SERVER_DISTRIBUTION_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "certcast/v1/certcast.grpc.pb.h"
#include "common/clock.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/authentication.h"
#include "server/authorizer.h"
#include "server/fan_out_pool.h"
#include "server/fleet.h"
#include "server/publisher.h"
#include "server/rollout_gate.h"
#include "server/subscription.h"

namespace certcast {

class SubscribeStream;

struct HubCounters {
  uint64_t streams_opened = 0;
  uint64_t streams_rejected = 0;  // ended for malformed input, unknown names, denial, deadline
  uint64_t updates_written = 0;   // full-material messages
  uint64_t in_sync_written = 0;
  uint64_t heartbeats_written = 0;
  uint64_t updates_replaced = 0;  // superseded while waiting behind a slow reader
  uint64_t acks = 0;
  uint64_t nacks = 0;
  uint64_t stale_acks = 0;
  uint64_t streams_expired = 0;    // ended when their certificate or token expired
  uint64_t hellos_over_limit = 0;  // refused: too many streams awaiting a hello
  // Streams the server ended with a non-OK status, by code name (e.g. "PERMISSION_DENIED").
  std::map<std::string, uint64_t> stream_errors;
};

// One per hardware thread, at least 2 and at most 8.
int DefaultFanOutThreads();

// Thread-safe. Does not own `fleet`, `authorizer` or `clock`.
class DistributionHub final : public PublicationListener {
 public:
  struct Options {
    absl::Duration heartbeat_interval = absl::Seconds(30);
    absl::Duration hello_timeout = absl::Seconds(10);
    size_t max_message_bytes = 64 * 1024;
    size_t max_certificates_per_hello = 64;
    int max_streams_per_identity = 16;  // RESOURCE_EXHAUSTED beyond it
    // Streams that have not sent their hello yet (RESOURCE_EXHAUSTED beyond these): per
    // connection, and per peer address across its connections. About 10 KiB each.
    int max_awaiting_hello_per_connection = 64;
    int max_awaiting_hello_per_address = 512;
    // Threads that start the writes of one publication, the calling thread one of them, each
    // for at least min_streams_per_fan_out_thread streams. Starting a write sends it in the
    // calling thread, so one thread would put a fan-out to 10,000 streams on one core
    // (bench/README.md, optimization 8). Default: one per hardware thread, at most 8.
    int fan_out_threads = DefaultFanOutThreads();
    size_t min_streams_per_fan_out_thread = 512;
    // Starts one of those threads (they live until Stop: server/fan_out_pool.h). When it throws
    // std::system_error (no thread to be had: a pod's pids limit), the calling thread offers
    // that shard itself. Tests make it fail.
    std::function<std::thread(std::function<void()>)> start_fan_out_thread =
        [](std::function<void()> run) { return std::thread(std::move(run)); };
  };

  // `authenticator` may be null: then only the transport (mTLS) identity counts.
  DistributionHub(std::vector<std::string> names, Options options, Fleet* fleet,
                  Authorizer* authorizer, Authenticator* authenticator = nullptr);
  ~DistributionHub() override;

  // Makes `publication` the current version of its certificate and offers it to every stream
  // subscribed to it (through the certificate's rollout gate, when it has one).
  void OnPublish(std::shared_ptr<const Publication> publication) override;

  // A staged rollout holds some namespaces back (server/rollout.h): from now on streams of
  // `name` get what `gate` says for their namespace; null lets everyone have the current
  // version. Offers every stream what it should now have (a stream never goes back).
  void SetGate(const std::string& name, std::shared_ptr<const RolloutGate> gate);

  // Starts and stops the housekeeping thread (heartbeats, hello deadlines); Stop also ends the
  // fan-out threads.
  void Start();
  void Stop();

  // Ends each stream when the credential that proved its identity expires (a client
  // certificate's notAfter, a token's exp) with UNAUTHENTICATED and the denial reason
  // kDenialCredentialExpired, so its client reconnects with a fresh one.

  // Checks every stream against the authorizer again (after a policy change) and ends those that
  // lost their permission with PERMISSION_DENIED.
  void ReauthorizeAll();

  // Ends every open stream with `status` (on shutdown, so clients reconnect elsewhere at once).
  void FinishAll(const grpc::Status& status);
  // Waits until every stream is gone (its OnDone ran) or `deadline` passes; true if none is left.
  bool WaitUntilNoStreams(absl::Time deadline);

  // Creates the reactor of a new Subscribe call.
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* NewStream(
      grpc::CallbackServerContext* context);

  size_t live_streams();
  HubCounters counters();

 private:
  friend class SubscribeStream;
  static constexpr size_t kStatusCodes = 17;  // OK (0) to UNAUTHENTICATED (16)
  struct Topic {
    std::shared_ptr<const Publication> current;
    std::shared_ptr<const RolloutGate> gate;  // null: no rollout holds anyone back
    std::set<SubscribeStream*> subscribers;
  };
  // What `stream` should get of `topic`.
  std::shared_ptr<const Publication> For(const Topic& topic, SubscribeStream* stream)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Offers each subscriber of `topic` its publication (under mu_ it collects; then it calls).
  void OfferAll(const std::string& name);
  using Offers = std::vector<std::pair<SubscribeStream*, std::shared_ptr<const Publication>>>;
  // Offers each stream its publication, in up to fan_out_threads shards, and drops the
  // references the offers hold. Returns when every write has been started.
  void Offer(Offers offers);

  struct AwaitingHello {
    absl::Time deadline;
    std::string connection;  // the peer string (address and port)
    std::string address;     // PeerAddress of it
  };
  struct Expiry {
    absl::Time at;
    std::string credential;  // "client certificate" or "token", for the client's message
  };
  // Subscribes `stream` (of `peer`, unproven when its identity is empty; writing for
  // `namespace_`) to `names` and returns the publications it should have (null when a
  // certificate has no version yet). ResourceExhausted when the identity has too many streams.
  absl::StatusOr<std::vector<std::shared_ptr<const Publication>>> Register(
      SubscribeStream* stream, const PeerIdentity& peer, const std::string& namespace_,
      const std::vector<std::string>& names);
  void Unregister(SubscribeStream* stream);
  void LeaveAwaitingHelloLocked(SubscribeStream* stream) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool Known(const std::string& name);
  // Lock-free counters: streams bump them on the write path.
  struct AtomicCounters {
    std::atomic<uint64_t> streams_opened{0};
    std::atomic<uint64_t> streams_rejected{0};
    std::atomic<uint64_t> streams_expired{0};
    std::atomic<uint64_t> hellos_over_limit{0};
    StreamCounters stream;  // bumped by each stream's SubscriptionState
    std::array<std::atomic<uint64_t>, kStatusCodes> stream_errors{};
  };
  void Count(std::atomic<uint64_t> AtomicCounters::*field) {
    (counters_.*field).fetch_add(1, std::memory_order_relaxed);
  }
  void CountStreamError(grpc::StatusCode code) {
    const size_t index = static_cast<size_t>(code);
    if (index < kStatusCodes) {
      counters_.stream_errors[index].fetch_add(1, std::memory_order_relaxed);
    }
  }
  void Housekeep();

  const Options options_;
  Fleet* const fleet_;
  Authorizer* const authorizer_;
  Authenticator* const authenticator_;

  absl::Mutex mu_;
  std::map<std::string, Topic> topics_ ABSL_GUARDED_BY(mu_);
  std::set<SubscribeStream*> streams_ ABSL_GUARDED_BY(mu_);  // every live stream
  std::map<SubscribeStream*, AwaitingHello> awaiting_hello_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> awaiting_per_connection_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> awaiting_per_address_ ABSL_GUARDED_BY(mu_);
  std::map<SubscribeStream*, Expiry> expiries_ ABSL_GUARDED_BY(mu_);
  uint64_t wakeups_ ABSL_GUARDED_BY(mu_) = 0;  // bumped when the housekeeper may wake earlier
  std::map<std::string, int> streams_per_identity_ ABSL_GUARDED_BY(mu_);
  std::map<SubscribeStream*, std::string> identity_of_ ABSL_GUARDED_BY(mu_);
  std::map<SubscribeStream*, std::string> namespace_of_ ABSL_GUARDED_BY(mu_);
  AtomicCounters counters_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread housekeeper_;
  FanOutPool fan_out_{options_.fan_out_threads, options_.start_fan_out_thread};
};

// Registers Subscribe as a raw (ByteBuffer) method so publications are written as shared bytes,
// and serves the shared writer's ListWriterNamespaces. Does not own its arguments;
// `authenticator` may be null (transport identity only), `authorizer` too (then nobody is a
// writer: tests of the hub alone).
class DistributionService final
    : public v1::Distribution::WithCallbackMethod_ListWriterNamespaces<
          v1::Distribution::WithRawCallbackMethod_Subscribe<v1::Distribution::Service>> {
 public:
  explicit DistributionService(DistributionHub* hub, Authorizer* authorizer = nullptr,
                               Authenticator* authenticator = nullptr)
      : hub_(hub), authorizer_(authorizer), authenticator_(authenticator) {}
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Subscribe(
      grpc::CallbackServerContext* context) override {
    return hub_->NewStream(context);
  }
  grpc::ServerUnaryReactor* ListWriterNamespaces(
      grpc::CallbackServerContext* context, const v1::ListWriterNamespacesRequest* request,
      v1::ListWriterNamespacesResponse* response) override;

 private:
  DistributionHub* const hub_;
  Authorizer* const authorizer_;
  Authenticator* const authenticator_;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_DISTRIBUTION_H_
