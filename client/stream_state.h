// StreamState: the client's side of the Subscribe protocol, without any gRPC stream in it. It
// says what the client holds (the hello), applies pushed versions to every sink, runs the hooks,
// proves serving (--verify), decides each ACK and NACK, and records whether the stream is up; it
// retries failed applies and verifications with backoff. The transport (Session in session.cc)
// connects, reads and writes, watches heartbeats and reconnects; it feeds this class the server's
// messages and the time, and sends what it returns. A unit test can do the same with fake sinks and
// a fake probe.
//
// Not thread-safe for the protocol calls (Hello, Receive, RunDue, NextDue, Revoked): the
// session thread makes them all. The observers (held, applied, Ready, counters) are thread-safe:
// metrics and probes call them from other threads. Does not own sinks, hooks, store, verifier or
// clock; they must outlive it.
#ifndef CERTCAST_CLIENT_STREAM_STATE_H_
#define CERTCAST_CLIENT_STREAM_STATE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "certcast/v1/certcast.pb.h"
#include "client/hooks.h"
#include "client/serving_verifier.h"
#include "client/sink.h"
#include "client/state_store.h"
#include "common/backoff.h"
#include "common/clock.h"

namespace certcast {

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
  // --verify: versions proven served, and NACKs sent because an endpoint did not serve the
  // version within --verify-timeout, per certificate.
  std::map<std::string, uint64_t> serving_verified_by_certificate;
  std::map<std::string, uint64_t> serving_failures_by_certificate;
};

// Whether the stream to the server is up and when the server was last heard from, for metrics
// (a client that lost the server shows before the next renewal does).
struct StreamLiveness {
  bool connected = false;  // a message arrived on the current stream, which has not ended
  absl::Time last_message_at = absl::InfinitePast();  // any message; InfinitePast: none yet
};

// What the sinks hold of one certificate, for metrics.
struct AppliedCertificate {
  uint64_t version = 0;                          // 0: nothing (or an unknown version) held
  absl::Time not_after = absl::InfinitePast();   // of the held leaf; InfinitePast when unknown
  absl::Time applied_at = absl::InfinitePast();  // last successful apply by this process
  bool serving_verified = false;  // --verify endpoints were seen serving the held version
};

class StreamState {
 public:
  struct Options {
    std::string namespace_;
    std::string client_id;
    std::vector<std::string> certificates;
    Backoff::Options retry = {absl::Seconds(1), absl::Seconds(30), 2.0, 0.2};  // failed applies
    // Between serving checks while an endpoint does not serve the version yet.
    Backoff::Options verify_retry = {absl::Milliseconds(250), absl::Seconds(5), 2.0, 0.2};
  };

  // `verifier` may be null (no --verify): then an applied version is ACKed at once.
  StreamState(Options options, std::vector<Sink*> sinks, std::vector<Hook*> hooks,
              ClientStateStore* store, const ServingVerifier* verifier, const Clock* clock);

  // Works out what the client holds: the state store's record, checked against the sinks (the
  // files win when they disagree).
  void Init();

  // The first message of a new stream. Forgets the nonces of the previous stream: applies still
  // being retried are dropped (the server resends what is current), proofs of serving still
  // running keep going and answer the nonce the new stream brings.
  v1::SubscribeRequest Hello();
  // A message from the server; returns the ACKs and NACKs to send.
  std::vector<v1::SubscribeRequest> Receive(v1::SubscribeResponse& message);
  // Retries applies and serving checks whose time has come; returns what to send.
  std::vector<v1::SubscribeRequest> RunDue(absl::Time now);
  // When RunDue has work next; InfiniteFuture when none.
  absl::Time NextDue() const;
  // The stream's liveness window: two heartbeat intervals, as the server last announced.
  absl::Duration heartbeat_timeout() const { return heartbeat_timeout_; }
  void set_heartbeat_timeout(absl::Duration timeout) { heartbeat_timeout_ = timeout; }
  // --delete-on-revoke: empties every sink and forgets what was held.
  void Revoked();
  // The transport's stream ended (or was given up): not connected until the next message.
  void Disconnected();

  // Observers (thread-safe).
  std::map<std::string, HeldVersion> held();
  std::map<std::string, AppliedCertificate> applied();
  bool Ready(std::string* why);
  SessionCounters counters();
  StreamLiveness liveness();

 private:
  // An update that could not be applied to every sink; retried with backoff.
  struct PendingApply {
    VersionedMaterial material;
    absl::Time not_after;  // of the validated leaf
    std::string nonce;
    absl::Time retry_at;
    std::unique_ptr<Backoff> backoff;
  };
  // An applied version whose serving is being proven.
  struct Verification {
    uint64_t version = 0;
    std::string fingerprint;
    std::string previous_fingerprint;   // what was held before: "still serves the previous"
    std::string nonce;                  // empty until the stream names one (after a reconnect)
    std::vector<std::string> warnings;  // of the apply (hooks), carried by the eventual ACK
    absl::Time deadline;                // NACK when not served by then
    absl::Time next_at;
    bool nacked = false;
    std::unique_ptr<Backoff> backoff;
  };

  std::vector<v1::SubscribeRequest> HandleUpdate(v1::CertificateUpdate& update);
  void HandleInSync(const v1::InSync& in_sync, std::vector<v1::SubscribeRequest>* out);
  // One attempt: sinks, hooks, state. Returns the ACK, or the NACK when a sink failed (then
  // `failed` is set and the caller retries).
  v1::SubscribeRequest Apply(const VersionedMaterial& version, absl::Time not_after,
                             const std::string& nonce, bool* failed);
  // After a successful apply: the ACK at once, or (with --verify) a proof of serving first.
  void Applied(v1::SubscribeRequest ack, const std::string& fingerprint,
               const std::string& previous_fingerprint, std::vector<v1::SubscribeRequest>* out);
  // One serving check of `name`: the ACK when served, the NACK when the deadline passed.
  void Verify(const std::string& name, Verification& verification, absl::Time now,
              std::vector<v1::SubscribeRequest>* out);

  const Options options_;
  const std::vector<Sink*> sinks_;
  const std::vector<Hook*> hooks_;
  ClientStateStore* const store_;
  const ServingVerifier* const verifier_;
  const Clock* const clock_;

  // Session-thread state.
  absl::Duration heartbeat_timeout_ = absl::Seconds(60);
  std::map<std::string, PendingApply> pending_;
  std::map<std::string, Verification> verifying_;
  std::map<std::string, HeldVersion> recorded_;  // what the state store says was completed
  std::set<std::string> removed_;                // removed after a revocation and not applied since

  absl::Mutex mu_;
  std::map<std::string, HeldVersion> held_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, absl::Time> applied_at_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, uint64_t> received_ ABSL_GUARDED_BY(mu_);    // newest version pushed
  std::map<std::string, std::string> failing_ ABSL_GUARDED_BY(mu_);  // name → last apply error
  std::set<std::string> verified_ ABSL_GUARDED_BY(mu_);              // held version proven served
  SessionCounters counters_ ABSL_GUARDED_BY(mu_);
  StreamLiveness liveness_ ABSL_GUARDED_BY(mu_);
};

}  // namespace certcast

#endif  // CERTCAST_CLIENT_STREAM_STATE_H_
