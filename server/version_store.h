// The version store persists, per certificate, the version counter, the last few versions'
// material and the rollback pin, so versions survive restarts and are never reused.
// This header is the seam between the server and its storage engines: the embedded
// FileVersionStore (a state directory) here, KubernetesVersionStore (server/kube_store.h) for
// replicas, etcd next. All of them store the bytes EncodeState gives.
#ifndef CERTCAST_SERVER_VERSION_STORE_H_
#define CERTCAST_SERVER_VERSION_STORE_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/certificate.h"
#include "common/clock.h"
#include "common/filesystem.h"

namespace certcast {

// The source state material was read from, which orders what replicas read independently (see
// CompareSources in server/publisher.h).
struct SourceState {
  std::string revision;  // Secret source: metadata.resourceVersion; empty for a directory
  absl::Time leaf_not_before = absl::InfinitePast();
  std::string leaf_serial;  // uppercase hex; empty when unknown
};

struct StoredVersion {
  uint64_t version = 0;
  CertificateMaterial material;
  absl::Time published_at;
  std::string origin = "source";  // "source" or "rollback"
  uint64_t rolled_back_from = 0;  // for rollbacks
  SourceState source;             // for rollbacks: the source state when pinned
};

struct PinState {
  uint64_t version = 0;  // 0: not pinned
  uint64_t rolled_back_from = 0;
  std::string source_digest;  // ContentDigest of the source when pinned
  absl::Time since;
};

struct CertificateState {
  uint64_t last_version = 0;            // highest version ever assigned
  std::vector<StoredVersion> versions;  // oldest first; the last one is current
  PinState pin;
  // A shared store's revision of the stored object this state was loaded from or saved as: the
  // compare-and-swap token of the next Save. Empty when nothing is stored yet (and always for
  // the file store, which has one writer). Not part of the encoded state.
  std::string store_revision;
  // The staged rollout of the current version (server/rollout.h): a serialized
  // certcast.state.v1.RolloutState, empty when none. Stores keep it as the proto field.
  std::string rollout;
};

// Thread-safe.
class VersionStore {
 public:
  virtual ~VersionStore() = default;

  // The persisted state of certificate `name`, or nullopt when nothing was ever stored.
  // DataLoss (naming the file or key) when the stored state is corrupt: never a silent reset.
  virtual absl::StatusOr<std::optional<CertificateState>> Load(const std::string& name) = 0;

  // Durably replaces the state of `name` and returns the new store revision. After OK, a crash
  // at any later point loads `state`; after an error, Load returns either the previous or the new
  // state, never a mix. Keeps at most `history_limit()` versions (the oldest are dropped;
  // last_version is kept). A shared store writes only if the stored object is still at
  // `state.store_revision` (absent when that is empty): Aborted otherwise, naming the object;
  // the caller must Load again. That compare-and-swap is what keeps two replicas from giving one
  // version number to different material.
  virtual absl::StatusOr<std::string> Save(const std::string& name,
                                           const CertificateState& state) = 0;

  // Makes every later Save based on a revision older than the returned one fail: a shared store
  // rewrites the stored object (naming `writer`) so its revision moves on. A new leader calls it,
  // so a deposed leader that still believes it leads cannot write. Aborted when the object is no
  // longer at `revision`. The file store has one writer and returns `revision`.
  virtual absl::StatusOr<std::string> Claim(const std::string& name, const std::string& revision) {
    (void)name;
    return revision;
  }

  virtual int history_limit() const = 0;
};

// The bytes every store keeps for one certificate: a header, the SHA-256 of the payload, and the
// payload, a serialized certcast.state.v1.CertificateState holding the newest `history_limit`
// versions. InvalidArgument when the versions are not strictly increasing or above
// last_version. The result holds key material: wipe it (CleanseString) when done.
absl::StatusOr<std::string> EncodeState(const std::string& name, const CertificateState& state,
                                        int history_limit);

// Parses EncodeState's bytes for certificate `name`. DataLoss naming `where` (a file or an API
// object) when they are truncated, damaged or hold another certificate.
absl::StatusOr<CertificateState> DecodeState(const std::string& name, absl::string_view bytes,
                                             const std::string& where);

// Certificate names become file and object names: [a-z0-9]([a-z0-9.-]*[a-z0-9])?, at most 253.
absl::Status ValidateStateName(absl::string_view name);

// Embedded store: one file per certificate, `DIR/NAME.state`, holding a checksummed protobuf
// (certcast.state.v1.CertificateState). Directory 0700, files 0600, written with
// WriteFileAtomically. The checksum (SHA-256) detects corruption, not tampering; tampering is
// prevented by the directory's permissions, which Open checks (SecureDirectory).
// Does not own `fs`; it must outlive the store.
class FileVersionStore final : public VersionStore {
 public:
  static constexpr int kDefaultHistoryLimit = 10;

  // Creates `dir` (0700) when missing. FailedPrecondition when it cannot be created, or when
  // others could write to it: a directory of ours that others may write is tightened to 0700
  // with a warning; a symlink, or one owned by another user (not root), is refused.
  static absl::StatusOr<std::unique_ptr<FileVersionStore>> Open(
      Filesystem* fs, std::string dir, int history_limit = kDefaultHistoryLimit);

  absl::StatusOr<std::optional<CertificateState>> Load(const std::string& name) override;
  absl::StatusOr<std::string> Save(const std::string& name, const CertificateState& state) override;
  int history_limit() const override { return history_limit_; }

  std::string PathFor(const std::string& name) const;

 private:
  FileVersionStore(Filesystem* fs, std::string dir, int history_limit)
      : fs_(fs), dir_(std::move(dir)), history_limit_(history_limit) {}

  Filesystem* const fs_;
  const std::string dir_;
  const int history_limit_;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_VERSION_STORE_H_
