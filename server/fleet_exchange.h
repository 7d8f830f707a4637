// FleetExchange makes every replica's clients visible on every replica. Each replica publishes a
// compact summary of its own clients through the shared store (Replication::PublishFleetSummary)
// when it changed, and at least every keepalive so that the others know it is alive, and reads
// the other live replicas' summaries into its Fleet (Fleet::SetRemote). Inspection on any
// replica then lists the whole fleet, and the leader counts every client in a staged rollout.
// A replica whose summary stopped changing for 3 keepalives is taken for dead: its clients
// disappear (they reconnect to a live replica and show up there), and the leader deletes its
// summary after 12 keepalives. Liveness is judged on this replica's clock (when a summary was
// first seen as it is), so the replicas' clocks may differ. Metrics stay per replica.
// Thread-safe; one background thread between Start() and Stop(). Owns nothing.
#ifndef CERTCAST_SERVER_FLEET_EXCHANGE_H_
#define CERTCAST_SERVER_FLEET_EXCHANGE_H_

#include <map>
#include <utility>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "server/fleet.h"
#include "server/replication.h"

namespace certcast {

class FleetExchange {
 public:
  struct Options {
    // How often this replica's summary is compared and written (when changed) and the others'
    // are read.
    absl::Duration interval = absl::Seconds(2);
    // The summary is rewritten at least this often; a summary unchanged for 3 keepalives is a
    // dead replica's.
    absl::Duration keepalive = absl::Seconds(10);
    // A summary larger than this (the Kubernetes store keeps it in a ConfigMap, at most 1 MiB)
    // drops the clients' error and warning texts, and then the disconnected clients.
    size_t max_bytes = 900 * 1024;
  };

  FleetExchange(Fleet* fleet, Replication* replication, const Clock* clock, Options options);
  ~FleetExchange() { Stop(); }

  void Start();
  void Stop();
  // One round: writes this replica's summary if due, reads the others'. Errors are logged
  // (once per distinct message) and retried next round.
  void SyncOnce();

  // The time as of which every live other replica's clients are known: each one's current
  // summary was written after it (InfinitePast before the first successful read).
  absl::Time ViewAsOf() const;

  // Serialized state::v1::FleetSummary of `records`, within `max_bytes` as described above.
  static std::string Summarize(const std::vector<ClientRecord>& records, absl::Time written_at,
                               size_t max_bytes);
  // The records of a summary; empty when it does not parse.
  static std::vector<ClientRecord> Records(const std::string& summary);

 private:
  Fleet* const fleet_;
  Replication* const replication_;
  const Clock* const clock_;
  const Options options_;
  // Written and read only by the round's thread (or a test calling SyncOnce).
  std::string last_content_;  // the summary without written_at, as last written
  absl::Time last_written_ = absl::InfinitePast();
  std::string last_error_;
  // Per other replica: its summary as last read, and when it was first read so.
  std::map<std::string, std::pair<std::string, absl::Time>> seen_;
  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time view_as_of_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::thread thread_;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_FLEET_EXCHANGE_H_
