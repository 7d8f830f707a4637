// EtcdVersionStore keeps each certificate's version history in etcd
// (`--store=etcd://HOST:PORT[,...]/PREFIX`): key PREFIX/state/CERTIFICATE holds the bytes the
// embedded store writes to its file (EncodeState), sealed by StoreEncryption (AES-256-GCM) before
// they leave the process, so etcd, its backups and its snapshots never hold a private key in the
// clear. store_revision is the key's mod_revision.
//
// Every write is one etcd transaction comparing (1) the state key's mod_revision with
// CertificateState::store_revision (create_revision 0 for a first write) and (2) the leader key
// PREFIX/leader still being bound to this replica's etcd lease: two replicas can never store
// different material under one version number, and a deposed leader can never write, whatever
// it believes about its leadership.
// Thread-safe. Does not own `client` or `encryption`.
#ifndef CERTCAST_SERVER_ETCD_STORE_H_
#define CERTCAST_SERVER_ETCD_STORE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "server/etcd_client.h"
#include "server/store_encryption.h"
#include "server/version_store.h"

namespace certcast {

// The largest sealed state written, well under etcd's default 1.5 MiB request limit.
inline constexpr size_t kMaxEtcdStateBytes = 1024 * 1024;

class EtcdVersionStore final : public VersionStore {
 public:
  // `leader_lease`: the etcd lease this replica's leader key is bound to while it leads, else 0
  // (then every Save and Claim is Aborted).
  EtcdVersionStore(EtcdClient* client, std::string prefix, const StoreEncryption* encryption,
                   std::function<int64_t()> leader_lease,
                   int history_limit = FileVersionStore::kDefaultHistoryLimit)
      : client_(client),
        prefix_(std::move(prefix)),
        encryption_(encryption),
        leader_lease_(std::move(leader_lease)),
        history_limit_(history_limit) {}

  // The stored state with store_revision = the key's mod_revision; nullopt when there is no key;
  // DataLoss naming the key when it does not decrypt or decode; FailedPrecondition when neither
  // configured encryption key sealed it; etcd's error (e.g. Unavailable) otherwise.
  absl::StatusOr<std::optional<CertificateState>> Load(const std::string& name) override;
  // Aborted when another replica wrote (or deleted) the key since store_revision, or this replica
  // does not hold the leader key; InvalidArgument when the sealed state would exceed
  // kMaxEtcdStateBytes.
  absl::StatusOr<std::string> Save(const std::string& name, const CertificateState& state) override;
  // Re-seals the stored value with the current encryption key (so a key rotation reaches every
  // value once a new leader takes over), moving its mod_revision, under the same comparisons.
  absl::StatusOr<std::string> Claim(const std::string& name, const std::string& revision) override;
  int history_limit() const override { return history_limit_; }

  std::string StateKey(const std::string& name) const { return prefix_ + "/state/" + name; }
  std::string StatePrefix() const { return prefix_ + "/state/"; }
  std::string LeaderKey() const { return prefix_ + "/leader"; }

 private:
  // Puts `sealed` at `key` if its revision is still `revision` ("" = absent) and this replica
  // holds the leader key: the new revision, or Aborted naming what changed.
  absl::StatusOr<std::string> CompareAndPut(const std::string& name, const std::string& revision,
                                            const std::string& sealed);

  EtcdClient* const client_;
  const std::string prefix_;
  const StoreEncryption* const encryption_;
  const std::function<int64_t()> leader_lease_;
  const int history_limit_;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_ETCD_STORE_H_
