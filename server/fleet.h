// Fleet keeps what the server knows about every client: who it is, what was sent to it, what it
// acknowledged or refused, and when. Records of disconnected clients are kept for `retention` so
// operators still see what a briefly disconnected tenant runs.
// Thread-safe; one mutex, never held while calling out. Does not own `clock`.
#ifndef CERTCAST_SERVER_FLEET_H_
#define CERTCAST_SERVER_FLEET_H_

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace certcast {

struct ClientCertificateState {
  std::string name;
  uint64_t sent_version = 0;
  std::string sent_nonce;  // latest nonce sent on the stream; older ACKs/NACKs are stale
  absl::Time sent_at = absl::InfinitePast();
  uint64_t acknowledged_version = 0;
  absl::Time acknowledged_at = absl::InfinitePast();
  std::string last_error;
  uint64_t last_error_version = 0;
  std::string hook_warning;
  // The last ACK of acknowledged_version said the client's --verify endpoints serve it.
  bool serving_verified = false;
};

struct ClientRecord {
  uint64_t id = 0;  // assigned by Connect; increases with every connection
  std::string client_id;
  std::string namespace_;
  std::string peer;
  std::string identity;
  absl::Time connected_since;
  absl::Time last_seen;
  bool connected = true;
  std::vector<ClientCertificateState> certificates;
  // The replica the client is connected to, when that is another one (FleetExchange).
  std::string replica;
};

// Whose clients a read covers: this replica's streams (metrics: each replica reports its own,
// and PromQL sums them), or every replica's (inspection and rollouts).
enum class FleetScope { kThisReplica, kAllReplicas };

enum class AckOutcome { kRecorded, kStale, kUnknownCertificate };

struct FleetCounters {
  uint64_t acks = 0;
  uint64_t nacks = 0;
  uint64_t stale = 0;  // ACKs/NACKs with an outdated nonce, ignored
};

// Upper bounds, in seconds, of the push-to-ACK latency buckets.
inline const std::vector<double>& PushToAckBuckets() {
  static const std::vector<double> bounds = {0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120};
  return bounds;
}

// Latency observations in buckets of PushToAckBuckets(), plus one for larger values.
struct LatencyHistogram {
  std::vector<uint64_t> counts = std::vector<uint64_t>(PushToAckBuckets().size() + 1, 0);
  double sum_seconds = 0;
  uint64_t count = 0;
  void Observe(absl::Duration latency);
};

// What the fleet knows about one certificate: a snapshot of the connected clients (computed when
// asked) and counters of what happened since start.
struct CertificateFleetStats {
  uint32_t connected = 0;         // connected clients subscribed to it
  uint32_t behind = 0;            // of those, not acknowledging the version they should run
  uint32_t serving_verified = 0;  // of those, acknowledged it with serving verified
  uint32_t waiting = 0;           // held at an older version by a staged rollout
  // Age of the oldest push still waiting for its ACK on a connected client; zero when none.
  absl::Duration oldest_unacked_push_age = absl::ZeroDuration();
  uint64_t acks = 0;
  std::map<std::string, uint64_t> nacks;  // by reason: "validation", a sink name, or "sink"
  uint64_t hook_warnings = 0;             // ACKs that carried warnings
  LatencyHistogram push_to_ack;           // sent_at to the ACK of that version
};

class Fleet {
 public:
  // At most this many disconnected clients are remembered (the oldest go first), so connection
  // churn cannot grow memory without bound.
  static constexpr size_t kMaxDisconnected = 10'000;

  Fleet(const Clock* clock, absl::Duration retention) : clock_(clock), retention_(retention) {}

  // Records a new stream; returns its id. A disconnected record of the same namespace and
  // client id is replaced.
  uint64_t Connect(ClientRecord record);
  void Disconnect(uint64_t id);

  // `version` of `name` was written to the stream with `nonce`. When `in_sync`, the client
  // already holds it, which counts as acknowledged.
  void RecordSent(uint64_t id, const std::string& name, uint64_t version, const std::string& nonce,
                  bool in_sync);
  // `serving_verified`: the client checked that its --verify endpoints serve `version`.
  AckOutcome RecordAck(uint64_t id, const std::string& name, uint64_t version,
                       const std::string& nonce, const std::string& warnings,
                       bool serving_verified = false);
  // `reason` is a short, bounded category of the refusal (see CertificateFleetStats::nacks).
  AckOutcome RecordNack(uint64_t id, const std::string& name, uint64_t version,
                        const std::string& nonce, const std::string& errors,
                        const std::string& reason);

  struct Page {
    std::vector<ClientRecord> clients;
    std::string next_page_token;
  };
  // Clients ordered by connection (this replica's, then the others'), optionally filtered by
  // namespace and certificate name. InvalidArgument-worthy tokens are treated as the start;
  // callers validate them. With kAllReplicas, a disconnected record of a client that is
  // connected elsewhere is left out (it moved).
  Page List(const std::string& namespace_filter, const std::string& name_filter, size_t page_size,
            uint64_t after_id, FleetScope scope = FleetScope::kThisReplica);

  // Other replicas' clients (FleetExchange) by replica, replacing all that was known of them.
  // Read-only here: ACKs are recorded by the replica that holds the stream. They are listed
  // with ids from kFirstRemoteId on.
  void SetRemote(std::map<std::string, std::vector<ClientRecord>> by_replica);
  static constexpr uint64_t kFirstRemoteId = uint64_t{1} << 62;

  struct Counts {
    uint32_t clients = 0;       // connected clients subscribed to the certificate
    uint32_t acknowledged = 0;  // of those, holding `version`
  };
  // Counts only clients of `namespace_filter` when it is not empty.
  Counts CountFor(const std::string& name, uint64_t version,
                  const std::string& namespace_filter = "",
                  FleetScope scope = FleetScope::kThisReplica);
  // The version a client of `namespace_` should run of `certificate` whose newest version is
  // `current` (a staged rollout holds some namespaces back). Called under the fleet's lock: it
  // must not call into the fleet.
  using ExpectedVersion = std::function<uint64_t(const std::string& certificate,
                                                 const std::string& namespace_, uint64_t current)>;

  // Counts per namespace of the connected clients subscribed to `name`, in one pass
  // (namespaces without such a client are absent). `acknowledged` counts the clients holding
  // the version `expected` gives their namespace (`version` when it is null).
  std::map<std::string, Counts> CountByNamespace(const std::string& name, uint64_t version,
                                                 const ExpectedVersion& expected = nullptr,
                                                 FleetScope scope = FleetScope::kThisReplica);
  FleetCounters counters();

  // Per-certificate statistics in one pass over the clients (O(clients)). `current` maps each
  // certificate to its current version (0: none yet); every one of them gets an entry. Names
  // not in `current` never appear. A client is behind when it does not acknowledge `expected`'s
  // version for it (the current one when `expected` is null).
  std::map<std::string, CertificateFleetStats> Stats(const std::map<std::string, uint64_t>& current,
                                                     const ExpectedVersion& expected = nullptr);

 private:
  ClientRecord* FindRecord(uint64_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  ClientCertificateState* Find(uint64_t id, const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The state an ACK/NACK answers, or null (with the outcome) when it is stale or unknown.
  ClientCertificateState* Answered(uint64_t id, const std::string& name, uint64_t version,
                                   const std::string& nonce, AckOutcome* outcome)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Prune() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Erase(std::map<uint64_t, ClientRecord>::iterator record) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Calls `visit` for the records of `scope` after `after_id` in List's order until it returns
  // false; with kAllReplicas, skips disconnected records of clients connected elsewhere.
  void Visit(FleetScope scope, uint64_t after_id,
             const std::function<bool(const ClientRecord&)>& visit) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Clock* const clock_;
  const absl::Duration retention_;
  absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  std::map<uint64_t, ClientRecord> records_ ABSL_GUARDED_BY(mu_);  // ordered: List pages by id
  // records_ by id for the per-push lookups (a sent version, its ACK): at 10,000 clients the
  // map's walk was 3 % of the server's samples in a fan-out, under mu_ (bench/README.md).
  absl::flat_hash_map<uint64_t, ClientRecord*> index_ ABSL_GUARDED_BY(mu_);
  std::map<std::pair<std::string, std::string>, uint64_t> by_key_ ABSL_GUARDED_BY(mu_);
  // Disconnected records by disconnection time, so pruning touches only expired ones.
  std::multimap<absl::Time, uint64_t> disconnected_ ABSL_GUARDED_BY(mu_);
  // Other replicas' records (ids kFirstRemoteId + index), and which clients are connected there.
  std::vector<ClientRecord> remote_ ABSL_GUARDED_BY(mu_);
  std::set<std::pair<std::string, std::string>> remote_connected_ ABSL_GUARDED_BY(mu_);
  FleetCounters counters_ ABSL_GUARDED_BY(mu_);
  // Only the counters of CertificateFleetStats are kept here; the rest is computed by Stats().
  std::map<std::string, CertificateFleetStats> per_certificate_ ABSL_GUARDED_BY(mu_);
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_FLEET_H_
