// Session keeps one Subscribe stream to certcast-server: hello with what the client holds,
// apply every pushed version to every sink, run hooks, ACK or NACK, retry failed applies with
// backoff, watch heartbeats, and reconnect with backoff when the stream ends.
//
// Threads: Run() is the session thread; each connection adds one reader thread that blocks in
// Read(). Idle, both are blocked: no polling. Stop() and Reconnect() may be called from any
// thread. Does not own sinks, hooks, store, credentials or clock.
#ifndef CERTCAST_CLIENT_SESSION_H_
#define CERTCAST_CLIENT_SESSION_H_

#include <cstdint>
#include <deque>
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
#include "client/sink.h"
#include "client/state_store.h"
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
};

struct SessionCounters {
  uint64_t connects = 0;
  uint64_t reconnects = 0;  // connects after the first
  uint64_t heartbeat_misses = 0;
  uint64_t updates = 0;  // full-material messages received
  uint64_t applied = 0;  // versions applied to every sink
  uint64_t acks = 0;
  uint64_t nacks = 0;
  uint64_t apply_failures = 0;  // sink failures (each retry counts)
  uint64_t hook_failures = 0;
  uint64_t denials = 0;      // streams ended with PERMISSION_DENIED or UNAUTHENTICATED
  uint64_t revocations = 0;  // --delete-on-revoke removals
  // Failures per requested certificate, then per sink ("validation" when the material itself was
  // refused; each retry counts).
  std::map<std::string, std::map<std::string, uint64_t>> apply_failures_by_sink;
  std::map<std::string, uint64_t> hook_failures_by_certificate;
};

// What the sinks hold of one certificate, for metrics.
struct AppliedCertificate {
  uint64_t version = 0;                          // 0: nothing (or an unknown version) held
  absl::Time not_after = absl::InfinitePast();   // of the held leaf; InfinitePast when unknown
  absl::Time applied_at = absl::InfinitePast();  // last successful apply by this process
};

class Session {
 public:
  Session(SessionOptions options, std::vector<Sink*> sinks, std::vector<Hook*> hooks,
          ClientStateStore* store, CredentialsProvider* credentials, const Clock* clock);

  // Works out what the client holds: the state store's record, checked against the sinks (the
  // files win when they disagree).
  void Init();

  // Runs until Stop(). Never returns early on errors: they are logged and retried.
  void Run();
  void Stop();
  // Ends the current stream (if any) and connects again at once, e.g. after new credentials.
  void Reconnect();

  SessionCounters counters();
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
  // An update that could not be applied to every sink; retried with backoff.
  struct PendingApply {
    VersionedMaterial material;
    absl::Time not_after;  // of the validated leaf
    std::string nonce;
    absl::Time retry_at;
    std::unique_ptr<Backoff> backoff;
  };

  void RunConnection();
  void ReadLoop(grpc::ClientReaderWriter<v1::SubscribeRequest, v1::SubscribeResponse>* stream);
  v1::SubscribeRequest Hello();
  void HandleMessage(v1::SubscribeResponse& message);
  // Applies a pushed version and answers it with an ACK or a NACK.
  void HandleUpdate(v1::CertificateUpdate& update);
  void RetryDue();
  // One attempt: sinks, hooks, state. Returns the ACK, or the NACK when a sink failed (then
  // `failed` is set and the caller retries).
  v1::SubscribeRequest Apply(const VersionedMaterial& version, absl::Time not_after,
                             const std::string& nonce, bool* failed);
  bool Send(const v1::SubscribeRequest& request);
  // `denial_reason` is the server's kDenialReasonMetadata trailer (empty when none).
  void LogStreamEnd(const grpc::Status& status, const std::string& denial_reason = "");
  // --delete-on-revoke: empties every sink and forgets what was held.
  void RemoveEverything();

  const SessionOptions options_;
  const std::vector<Sink*> sinks_;
  const std::vector<Hook*> hooks_;
  ClientStateStore* const store_;
  CredentialsProvider* const credentials_;
  const Clock* const clock_;
  Backoff reconnect_backoff_;

  // Serializes Write (session thread) with Finish (reader thread), which gRPC's sync API forbids
  // running concurrently. Never held together with mu_.
  absl::Mutex stream_mu_;

  // Session-thread state.
  absl::Duration heartbeat_timeout_;
  std::map<std::string, PendingApply> pending_;
  std::map<std::string, HeldVersion> recorded_;  // what the state store says was completed
  std::set<std::string> removed_;                // removed after a revocation and not applied since
  grpc::ClientReaderWriter<v1::SubscribeRequest, v1::SubscribeResponse>* stream_
      ABSL_GUARDED_BY(stream_mu_) = nullptr;
  std::string last_end_message_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool reconnect_now_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::deque<Event> events_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, HeldVersion> held_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Time> applied_at_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> received_ ABSL_GUARDED_BY(mu_);    // newest version pushed
  std::map<std::string, std::string> failing_ ABSL_GUARDED_BY(mu_);  // name → last apply error
  absl::Time last_wake_ ABSL_GUARDED_BY(mu_) = absl::Now();
  SessionCounters counters_ ABSL_GUARDED_BY(mu_);
};

}  // namespace certcast

#endif  // CERTCAST_CLIENT_SESSION_H_
