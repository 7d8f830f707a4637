// Session is the transport of the client's Subscribe stream to certcast-server: it connects with
// the credentials, sends what StreamState (client/stream_state.h) says (the hello, ACKs, NACKs),
// feeds it every message the server sends, wakes it when a retry or a serving check is due,
// watches heartbeats, and reconnects with backoff when the stream ends. What to apply and what to
// answer is StreamState's business.
//
// Threads: Run() is the session thread; each connection adds one reader thread that blocks in
// Read(). Idle, both are blocked: no polling. Stop() and Reconnect() may be called from any
// thread. Does not own sinks, hooks, store, credentials or clock.
#ifndef CERTCAST_CLIENT_SESSION_H_
#define CERTCAST_CLIENT_SESSION_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "certcast/v1/certcast.grpc.pb.h"
#include "client/credentials.h"
#include "client/hooks.h"
#include "client/server_channel.h"
#include "client/sink.h"
#include "client/state_store.h"
#include "client/stream_state.h"
#include "common/backoff.h"
#include "common/clock.h"
#include "grpcpp/grpcpp.h"

namespace certcast {

struct SessionOptions {
  std::string server;           // HOST:PORT
  std::string tls_server_name;  // overrides the name checked in the server certificate
  std::string namespace_;
  std::string client_id;
  std::vector<std::string> certificates;
  Backoff::Options reconnect;  // 0.5 s doubling to 30 s by default
  Backoff::Options retry = {absl::Seconds(1), absl::Seconds(30), 2.0, 0.2};  // failed applies
  // When the server revokes this client's permission (PERMISSION_DENIED), remove what the sinks
  // hold instead of keeping the last material.
  bool delete_on_revoke = false;
  // Until the server's first heartbeat says otherwise: two intervals of 30 s.
  absl::Duration heartbeat_timeout = absl::Seconds(60);
  // The shared writer runs one session per namespace over one channel: when set, every
  // connection uses the channel this returns (which reconnects by itself) instead of a new one,
  // and takes a slot of `connect_limiter` (if set) from opening its stream until the server's
  // first message.
  std::function<std::shared_ptr<grpc::Channel>()> channel;
  ConnectLimiter* connect_limiter = nullptr;
};

class Session {
 public:
  // `verifier` may be null (no --verify).
  Session(SessionOptions options, std::vector<Sink*> sinks, std::vector<Hook*> hooks,
          ClientStateStore* store, CredentialsProvider* credentials, const Clock* clock,
          const ServingVerifier* verifier = nullptr);

  // Works out what the client holds: the state store's record, checked against the sinks (the
  // files win when they disagree).
  void Init();

  // Runs until Stop(). Never returns early on errors: they are logged and retried.
  void Run();
  void Stop();
  // Ends the current stream (if any) and connects again at once, e.g. after new credentials.
  void Reconnect();

  SessionCounters counters();
  // Whether the stream is up and when the server was last heard from.
  StreamLiveness liveness();
  // What the client holds per certificate (fully applied versions).
  std::map<std::string, HeldVersion> held();
  // The same for every requested certificate, with the time of the last apply.
  std::map<std::string, AppliedCertificate> applied();

  // Readiness: every certificate holds the newest version received, in every sink (no apply
  // waiting for a retry). Otherwise false, with the reason in `why`.
  bool Ready(std::string* why);
  // Liveness: the session loop woke up within `max_stall` (it wakes at least every heartbeat
  // timeout or reconnect backoff, both well under a few minutes).
  bool Alive(absl::Duration max_stall);

 private:
  struct Event {
    std::optional<v1::SubscribeResponse> message;  // empty: the stream ended
    grpc::Status status;
  };
  struct TransportCounters {
    uint64_t connects = 0;
    uint64_t reconnects = 0;
    uint64_t heartbeat_misses = 0;
    uint64_t denials = 0;
  };

  void RunConnection();
  void ReadLoop(grpc::ClientReaderWriter<v1::SubscribeRequest, v1::SubscribeResponse>* stream);
  bool Send(const v1::SubscribeRequest& request);
  // Waits for a slot of options_.connect_limiter; false when stopping or reconnecting first.
  bool AcquireConnectSlot();
  // `denial_reason` is the server's kDenialReasonMetadata trailer (empty when none).
  void LogStreamEnd(const grpc::Status& status, const std::string& denial_reason = "");

  const SessionOptions options_;
  CredentialsProvider* const credentials_;
  Backoff reconnect_backoff_;
  // The protocol state; its protocol calls run on the session thread only.
  StreamState state_;

  // Serializes Write (session thread) with Finish (reader thread), which gRPC's sync API forbids
  // running concurrently. Never held together with mu_.
  absl::Mutex stream_mu_;
  grpc::ClientReaderWriter<v1::SubscribeRequest, v1::SubscribeResponse>* stream_
      ABSL_GUARDED_BY(stream_mu_) = nullptr;
  std::string last_end_message_;  // session thread

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool reconnect_now_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);
  absl::Time last_wake_ ABSL_GUARDED_BY(mu_) = absl::Now();
  TransportCounters transport_counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace certcast

#endif  // CERTCAST_CLIENT_SESSION_H_
