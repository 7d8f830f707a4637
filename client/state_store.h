// The client's record of which version of each certificate it fully applied (sinks written and
// hooks run), so a restart can resume with the right hello. It is a cache: the files on disk win
// when they disagree. One small file per certificate, DIR/NAME.held ("VERSION FINGERPRINT
// [NOT_AFTER_UNIX_SECONDS]"), written atomically.
// Not thread-safe. Does not own `fs`.
#ifndef CERTCAST_CLIENT_STATE_STORE_H_
#define CERTCAST_CLIENT_STATE_STORE_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/filesystem.h"

namespace certcast {

struct HeldVersion {
  uint64_t version = 0;
  std::string fingerprint;
  absl::Time not_after = absl::InfinitePast();  // of the leaf; InfinitePast when unknown
  bool operator==(const HeldVersion& o) const {
    return version == o.version && fingerprint == o.fingerprint && not_after == o.not_after;
  }
};

class ClientStateStore {
 public:
  ClientStateStore(Filesystem* fs, std::string dir) : fs_(fs), dir_(std::move(dir)) {}

  // Creates the directory (0700). FailedPrecondition naming it when that fails, or when others
  // could write to it (see SecureDirectory: a directory of ours that others may write is
  // tightened to 0700 with a warning; a symlink, or one owned by another user, is refused).
  absl::Status Init();
  // What was recorded for `name`; nullopt when nothing (or something unreadable, which is logged:
  // the files decide then).
  std::optional<HeldVersion> Load(const std::string& name);
  absl::Status Save(const std::string& name, const HeldVersion& held);
  // Forgets `name` (after --delete-on-revoke removed it). OK when nothing was recorded.
  absl::Status Clear(const std::string& name);

 private:
  Filesystem* const fs_;
  const std::string dir_;
};

}  // namespace certcast

#endif  // CERTCAST_CLIENT_STATE_STORE_H_
