// EtcdReplication is the Replication of `--store=etcd://HOST:PORT[,...]/PREFIX`:
// - the state keys PREFIX/state/CERTIFICATE (EtcdVersionStore: sealed, compare-and-swap writes
//   that also require this replica to hold the leader key);
// - the election (EtcdLeaderLock under a LeaderElector): the leader key PREFIX/leader, created
//   by a transaction only while absent (create_revision 0) and bound to an etcd lease of
//   --leader-lease-duration, kept alive every retry period; when the leader dies its lease
//   expires and etcd deletes the key, and the next candidate creates it;
// - one Watch on PREFIX/state/, resumed from the last revision seen; after a compaction (or
//   before the first watch) everything is read again. A StoredStateFollower hands each change to
//   the callback and retries failures; everything is refreshed when the store answers again.
// Thread-safe. Does not own `clock`.
#ifndef CERTCAST_SERVER_ETCD_REPLICATION_H_
#define CERTCAST_SERVER_ETCD_REPLICATION_H_

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/clock.h"
#include "server/elected_replication.h"
#include "server/etcd_client.h"
#include "server/etcd_store.h"
#include "server/replication.h"
#include "server/store_encryption.h"

namespace certcast {

// The leader key: value = the holder's identity, lease = the holder's etcd lease.
// Used by one LeaderElector thread; lease() from any thread. Does not own `client`.
class EtcdLeaderLock final : public LeaderLock {
 public:
  EtcdLeaderLock(EtcdClient* client, std::string key, LeaderElectionOptions options)
      : client_(client), key_(std::move(key)), options_(std::move(options)) {}

  bool TryAcquireOrRenew(absl::Time now, std::string* holder,
                         const RequestObserver& observe) override;
  // Revokes the lease, which deletes the leader key at once.
  void Release() override;
  std::string Describe() const override { return "etcd key " + key_; }

  // The etcd lease this replica's leader key is (or is being) bound to; 0 when none.
  int64_t lease() const { return lease_.load(); }

 private:
  void Revoke(int64_t lease);

  EtcdClient* const client_;
  const std::string key_;
  const LeaderElectionOptions options_;
  std::atomic<int64_t> lease_{0};
};

class EtcdReplication final : public ElectedReplication {
 public:
  EtcdReplication(std::unique_ptr<EtcdClient> client, const Clock* clock,
                  EtcdStoreLocation location, StoreEncryption encryption,
                  LeaderElectionOptions election);
  ~EtcdReplication() override;

  VersionStore* store() override { return &store_; }
  void Start(const std::vector<std::string>& certificates, Callbacks callbacks) override;
  void Stop() override;
  // Fleet summaries are plain keys PREFIX/fleet/IDENTITY (no key material, not encrypted).
  absl::Status PublishFleetSummary(const std::string& summary) override;
  absl::StatusOr<std::map<std::string, std::string>> FleetSummaries() override;
  absl::Status RemoveFleetSummaries(const std::vector<std::string>& replicas) override;

 private:
  void Watch();
  // Waits up to `timeout`; true when stopping.
  bool WaitStopping(absl::Duration timeout);

  const std::unique_ptr<EtcdClient> client_;
  std::string FleetPrefix() const { return location_.prefix + "/fleet/"; }

  const EtcdStoreLocation location_;
  const std::string identity_;
  const StoreEncryption encryption_;
  EtcdLeaderLock lock_;
  EtcdVersionStore store_;
  std::set<std::string> certificates_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* watch_context_ ABSL_GUARDED_BY(mu_) = nullptr;  // to cancel on Stop
  std::thread watcher_;
  bool stopped_ = false;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_ETCD_REPLICATION_H_
