// Many simulated subscribers in one test process, for fault scenarios that need hundreds or
// thousands of clients: each stream is a gRPC callback-API reactor (no thread per stream), each
// client has its own channel (its own TCP connection), answers updates with an Ack like a real
// client, checks that every pushed chain matches its key, and reconnects with backoff when its
// stream ends, announcing what it holds in the hello.
//
// Thread-safe. Lock order: SubscriberFleet::mu_ before gRPC's own locks (StartRead and
// TryCancel are called with mu_ held; reactions never run inline on the calling thread).
#ifndef CERTCAST_TESTS_SUBSCRIBER_FLEET_H_
#define CERTCAST_TESTS_SUBSCRIBER_FLEET_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "certcast/v1/certcast.grpc.pb.h"
#include "grpcpp/grpcpp.h"

namespace certcast::scenario {

struct FleetOptions {
  std::string target;  // HOST:PORT of an --insecure certcast-server
  std::string certificate = "wildcard";
  std::string ns = "tenant-a";
  std::string client_id_prefix = "sim";
  // Acknowledge every update (a simulated client holds whatever it received: it has no sink).
  bool ack = true;
  // Connection storm: every stream ends itself (TryCancel) once its first message arrived, except
  // every third one, which never sends its hello (the server ends it at its hello deadline);
  // then the client reconnects at once over a new channel. (Cancelling a call while its channel
  // is still connecting makes gRPC 1.51 keep that connection open for a long time in this
  // process, which would be counted against the server.)
  bool churn = false;
  // Keep each stream's HTTP/2 receive window at its initial 64 KiB (no BDP probing), so that a
  // client that stops reading pushes back on the server after a few updates, instead of letting
  // its transport buffer megabytes.
  bool fixed_window = false;
};

struct FleetStats {
  int64_t streams_started = 0;
  int64_t streams_ended = 0;
  int64_t updates = 0;
  int64_t in_syncs = 0;
  // Updates whose chain does not validate with their key (a torn or half-swapped pair).
  int64_t torn_pairs = 0;
  // A version number seen with two different fingerprints (a reused version number).
  int64_t version_conflicts = 0;
  int live = 0;  // streams that received their first message and have not ended
};

class SubscriberFleet {
 public:
  SubscriberFleet(FleetOptions options, int clients);
  // Cancels every stream and waits until each has ended.
  ~SubscriberFleet();
  SubscriberFleet(const SubscriberFleet&) = delete;
  SubscriberFleet& operator=(const SubscriberFleet&) = delete;

  // Opens every client's stream (reconnecting from then on until Stop or destruction).
  void Start();
  // Stops reconnecting, cancels every stream and waits (up to `timeout`) until all have ended.
  // In a churn it first lets the streams end by themselves (up to `timeout`), cancelling only
  // the rest. True when they all ended.
  bool Stop(absl::Duration timeout = absl::Seconds(30));

  // Client `i` stops reading its stream after the next message (stalled = true), or reads again.
  void SetStalled(int i, bool stalled);

  int size() const { return static_cast<int>(slots_.size()); }
  // Version and fingerprint client `i` holds (0 and "" before its first update).
  std::pair<uint64_t, std::string> Held(int i);
  // Updates client `i` received.
  int64_t UpdatesOf(int i);
  // Clients in [first, last) holding exactly `version` with `fingerprint`.
  int CountHolding(uint64_t version, const std::string& fingerprint, int first = 0, int last = -1);
  // Every version any client received, with the fingerprint(s) it came with.
  std::map<uint64_t, std::set<std::string>> Seen();
  // Digests (MaterialDigest) of the material of every update any client received.
  std::set<std::string> MaterialsSeen();
  // The digest of one certificate chain, key and CA as MaterialsSeen reports them.
  static std::string MaterialDigest(const std::string& chain_pem, absl::string_view key_pem,
                                    const std::string& ca_pem);
  // Waits until some client received an update of `version` or newer; false after `timeout`.
  bool AwaitVersion(uint64_t version, absl::Duration timeout);
  FleetStats stats();

 private:
  class Stream;
  struct Slot {
    uint64_t version = 0;
    std::string fingerprint;
    int64_t updates = 0;
    bool stalled = false;
    int failures = 0;  // consecutive streams that ended before their first message
    int64_t connects = 0;
    Stream* stream = nullptr;  // live stream, owned by the fleet
  };

  void Connect(int i) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reactions of streams.
  // True when `reply` is to be sent; `cancel` when the stream is to end itself (churn).
  bool OnMessage(int i, const v1::SubscribeResponse& response, bool first,
                 v1::SubscribeRequest* reply, bool* cancel);
  void OnStreamDone(int i, Stream* stream, bool got_first);
  bool PairMatches(const v1::CertificateUpdate& update);
  void ReconnectLoop();
  // Deletes ended streams; releases mu_ meanwhile.
  void DeleteFinishedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const FleetOptions options_;
  absl::Mutex mu_;
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);
  std::multimap<absl::Time, int> due_ ABSL_GUARDED_BY(mu_);  // reconnections
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int open_streams_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Stream*> finished_ ABSL_GUARDED_BY(mu_);  // ended, to be deleted off gRPC threads
  FleetStats stats_ ABSL_GUARDED_BY(mu_);
  std::map<uint64_t, std::set<std::string>> seen_ ABSL_GUARDED_BY(mu_);
  absl::Mutex pairs_mu_;
  std::map<std::string, bool> pair_verdicts_ ABSL_GUARDED_BY(pairs_mu_);  // by content digest
  std::thread reconnector_;
};

// Resident set size (VmRSS) of process `pid` in KiB, -1 when unreadable.
long RssKb(int pid);
// Open descriptors of process `pid` (entries of /proc/PID/fd), -1 when unreadable.
int OpenFds(int pid);
// Raises this process's RLIMIT_NOFILE soft limit to its hard limit (children inherit it).
void RaiseFileLimit();

}  // namespace certcast::scenario

#endif  // CERTCAST_TESTS_SUBSCRIBER_FLEET_H_
