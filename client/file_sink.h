// FileSink writes each certificate under OUTPUT_DIR/NAME/ in the layout kubelet uses for secret
// volumes, so a reader that resolves `..data` once always sees a complete, matching pair:
//
//   NAME/..2026_11_28_10_00_00.123456789/{tls.crt 0644, tls.key 0600, ca.crt 0644, tls.pem 0600}
//   NAME/..data -> ..2026_11_28_10_00_00.123456789     (swapped with rename(2))
//   NAME/tls.crt -> ..data/tls.crt, NAME/tls.key -> ..data/tls.key, NAME/ca.crt -> ..data/ca.crt
//
// Every file is fsynced before the swap and the directory after it; the previous version
// directory is removed afterwards. Identical content is not rewritten. A crash at any point
// leaves the old or the new version in place, never a mix.
//
// NAME/ must be a real directory that only this user (or root) can write, and every version
// directory one that Apply created: a symlink planted at NAME or at a version (issue 10, item 9),
// or a NAME others can write to, is refused with FailedPrecondition saying why, so the key never
// goes where someone else pointed it. A NAME owned by this user but writable by others is
// tightened (go-w) with a warning. Everything below OUTPUT_DIR is done through
// `fs->ConfinedTo(OUTPUT_DIR)` (ConfinedFilesystem: openat with O_NOFOLLOW, component by
// component), so a NAME swapped for a symlink after it was checked makes the write fail instead
// of following the link; the checks only make the error say why sooner.
// Not thread-safe. Does not own `fs` or `clock`.
#ifndef CERTCAST_CLIENT_FILE_SINK_H_
#define CERTCAST_CLIENT_FILE_SINK_H_

#include <memory>
#include <set>
#include <string>

#include "client/sink.h"
#include "common/clock.h"
#include "common/filesystem.h"

namespace certcast {

class FileSink final : public Sink {
 public:
  struct Options {
    std::string output_dir;     // certificates go to output_dir/NAME/
    bool combined_pem = false;  // also write tls.pem: key, then chain (HAProxy style)
  };
  FileSink(Filesystem* fs, const Clock* clock, Options options);

  std::string name() const override { return "files"; }
  absl::StatusOr<ApplyResult> Apply(const VersionedMaterial& version) override;
  absl::StatusOr<std::string> HeldFingerprint(const std::string& name) override;
  std::string LocationOf(const std::string& name) const override;
  // Removes OUTPUT_DIR/NAME and everything in it.
  absl::Status Remove(const std::string& name) override;

  // The material currently visible through NAME/..data; NotFound when none.
  absl::StatusOr<CertificateMaterial> Read(const std::string& name);

 private:
  Filesystem* const fs_;  // OUTPUT_DIR itself and its parent
  const Clock* const clock_;
  const Options options_;
  // fs_->ConfinedTo(OUTPUT_DIR): everything below OUTPUT_DIR (fs_ itself for fakes without one).
  const std::unique_ptr<Filesystem> confined_;
  Filesystem& tree_;
  // Names whose last Apply switched `..data` but failed before the directory was settled (links,
  // fsync, clean-up); the next Apply finishes that work even when the content is unchanged.
  std::set<std::string> unsettled_;
};

}  // namespace certcast

#endif  // CERTCAST_CLIENT_FILE_SINK_H_
