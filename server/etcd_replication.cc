#include "server/etcd_replication.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace certcast {
namespace {

using etcdserverpb::Compare;

}  // namespace

bool EtcdLeaderLock::TryAcquireOrRenew(absl::Time now, std::string* holder,
                                       const RequestObserver& observe) {
  (void)now;  // etcd's own lease clock decides expiry; the elector times the renew deadline
  int64_t lease = lease_.load();
  if (lease != 0) {
    absl::StatusOr<int64_t> ttl = client_->LeaseKeepAliveOnce(lease);
    observe(ttl.status());
    if (!ttl.ok()) return false;  // the elector's renew deadline decides when leading ends
    if (*ttl <= 0) {              // expired: etcd deleted the leader key with it
      lease_.store(0);
      lease = 0;
    }
  }
  etcdserverpb::RangeRequest range;
  range.set_key(key_);
  absl::StatusOr<etcdserverpb::RangeResponse> current = client_->Range(range);
  observe(current.status());
  if (!current.ok()) return false;
  if (current->kvs_size() > 0) {
    const mvccpb::KeyValue& kv = current->kvs(0);
    *holder = kv.value();
    if (lease != 0 && kv.lease() == lease) return true;
    if (lease != 0) Revoke(lease);  // another replica holds the key: this lease is for nothing
    return false;
  }
  // No leader: campaign with a lease of the lease duration.
  if (lease == 0) {
    absl::StatusOr<int64_t> granted =
        client_->LeaseGrant(absl::ToInt64Seconds(options_.lease_duration));
    observe(granted.status());
    if (!granted.ok()) return false;
    lease = *granted;
    lease_.store(lease);
  }
  etcdserverpb::TxnRequest txn;
  Compare* absent = txn.add_compare();
  absent->set_key(key_);
  absent->set_result(Compare::EQUAL);
  absent->set_target(Compare::CREATE);
  absent->set_create_revision(0);
  etcdserverpb::PutRequest* put = txn.add_success()->mutable_request_put();
  put->set_key(key_);
  put->set_value(options_.identity);
  put->set_lease(lease);
  txn.add_failure()->mutable_request_range()->set_key(key_);
  absl::StatusOr<etcdserverpb::TxnResponse> created = client_->Txn(txn);
  observe(created.status());
  if (!created.ok()) return false;
  if (created->succeeded()) {
    *holder = options_.identity;
    return true;
  }
  const etcdserverpb::RangeResponse& other = created->responses(0).response_range();
  if (other.kvs_size() > 0) *holder = other.kvs(0).value();
  Revoke(lease);
  return false;
}

void EtcdLeaderLock::Revoke(int64_t lease) {
  int64_t expected = lease;
  lease_.compare_exchange_strong(expected, 0);
  // Best effort: an unrevoked lease expires after its TTL.
  client_->LeaseRevoke(lease).IgnoreError();
}

void EtcdLeaderLock::Release() {
  const int64_t lease = lease_.exchange(0);
  if (lease == 0) return;
  if (absl::Status revoked = client_->LeaseRevoke(lease); revoked.ok()) {
    LogInfo("gave up the leader key", {{"lock", Describe()}});
  } else {
    LogWarn("cannot give up the leader key; another replica takes over when its lease expires",
            {{"lock", Describe()}, {"error", revoked}});
  }
}

EtcdReplication::EtcdReplication(std::unique_ptr<EtcdClient> client, const Clock* clock,
                                 EtcdStoreLocation location, StoreEncryption encryption,
                                 LeaderElectionOptions election)
    : ElectedReplication(&lock_, clock, election),
      client_(std::move(client)),
      location_(std::move(location)),
      identity_(election.identity),
      encryption_(std::move(encryption)),
      lock_(client_.get(), location_.prefix + "/leader", election),
      store_(client_.get(), location_.prefix, &encryption_,
             [this] { return elector_.IsLeader() ? lock_.lease() : 0; }) {}

EtcdReplication::~EtcdReplication() { Stop(); }

void EtcdReplication::Start(const std::vector<std::string>& certificates, Callbacks callbacks) {
  certificates_.insert(certificates.begin(), certificates.end());
  StartElection(certificates, std::move(callbacks));
  watcher_ = std::thread([this] { Watch(); });
}

bool EtcdReplication::WaitStopping(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
  return mu_.AwaitWithTimeout(absl::Condition(&stopping), timeout);
}

void EtcdReplication::Watch() {
  const std::string prefix = store_.StatePrefix();
  const std::string range_end = PrefixRangeEnd(prefix);
  int64_t revision = 0;  // the last revision followed; 0: read everything first
  bool warned = false;
  for (;;) {
    if (revision == 0) {
      // Read everything (keys only): the revision to watch from, and every state followed.
      etcdserverpb::RangeRequest request;
      request.set_key(prefix);
      request.set_range_end(range_end);
      request.set_keys_only(true);
      absl::StatusOr<etcdserverpb::RangeResponse> listed = client_->Range(request);
      if (!listed.ok()) {
        if (WaitStopping(absl::Seconds(1))) return;
        continue;
      }
      revision = listed->header().revision();
      MarkAllChanged();
    }
    grpc::ClientContext context;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      watch_context_ = &context;
    }
    std::unique_ptr<etcdserverpb::Watch::Stub> stub =
        etcdserverpb::Watch::NewStub(client_->channel());
    auto stream = stub->Watch(&context);
    etcdserverpb::WatchRequest create;
    create.mutable_create_request()->set_key(prefix);
    create.mutable_create_request()->set_range_end(range_end);
    create.mutable_create_request()->set_start_revision(revision + 1);
    bool resync = false;
    bool got_response = false;
    if (stream->Write(create)) {
      etcdserverpb::WatchResponse response;
      while (stream->Read(&response)) {
        got_response = true;
        if (response.compact_revision() > 0 || response.canceled()) {
          // The revisions after `revision` are compacted away: read everything again.
          LogInfo("etcd watch compacted or cancelled; reading every stored state again",
                  {{"prefix", prefix},
                   {"revision", revision},
                   {"compact_revision", response.compact_revision()},
                   {"reason", response.cancel_reason()}});
          resync = true;
          break;
        }
        for (const mvccpb::Event& event : response.events()) {
          revision = std::max(revision, event.kv().mod_revision());
          const std::string& key = event.kv().key();
          if (!absl::StartsWith(key, prefix)) continue;
          const std::string name = key.substr(prefix.size());
          if (certificates_.count(name) > 0) MarkChanged(name);
        }
        response.Clear();
      }
    }
    context.TryCancel();
    const grpc::Status finished = stream->Finish();
    {
      absl::MutexLock lock(&mu_);
      watch_context_ = nullptr;
      if (stopping_) return;
    }
    if (resync) {
      revision = 0;
      continue;
    }
    // The stream broke (etcd restarted, a network error): resume from `revision` on the next
    // endpoint; etcd replays what happened meanwhile. Follow everything once anyway, in case
    // this replica missed a state written before its lease was lost.
    if (!warned) {
      LogWarn("etcd watch ended; resuming",
              {{"endpoint", client_->endpoint()}, {"error", finished.error_message()}});
      warned = true;
    }
    if (got_response) warned = false;
    client_->NextEndpoint();
    MarkAllChanged();
    if (WaitStopping(absl::Milliseconds(500))) return;
  }
}

void EtcdReplication::Stop() {
  if (stopped_) return;
  stopped_ = true;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (watch_context_ != nullptr) watch_context_->TryCancel();
  }
  if (watcher_.joinable()) watcher_.join();
  StopElection();
}

absl::Status EtcdReplication::PublishFleetSummary(const std::string& summary) {
  etcdserverpb::TxnRequest txn;
  etcdserverpb::PutRequest* put = txn.add_success()->mutable_request_put();
  put->set_key(FleetPrefix() + identity_);
  put->set_value(summary);
  return client_->Txn(txn).status();
}

absl::StatusOr<std::map<std::string, std::string>> EtcdReplication::FleetSummaries() {
  const std::string prefix = FleetPrefix();
  etcdserverpb::RangeRequest range;
  range.set_key(prefix);
  range.set_range_end(PrefixRangeEnd(prefix));
  ASSIGN_OR_RETURN(etcdserverpb::RangeResponse response, client_->Range(range));
  std::map<std::string, std::string> summaries;
  for (const mvccpb::KeyValue& kv : response.kvs()) {
    const std::string replica = kv.key().substr(prefix.size());
    if (replica != identity_) summaries[replica] = kv.value();
  }
  return summaries;
}

absl::Status EtcdReplication::RemoveFleetSummaries(const std::vector<std::string>& replicas) {
  etcdserverpb::TxnRequest txn;
  for (const std::string& replica : replicas) {
    txn.add_success()->mutable_request_delete_range()->set_key(FleetPrefix() + replica);
  }
  return client_->Txn(txn).status();
}

}  // namespace certcast
