// Filesystem seam (after leveldb's Env): the few POSIX operations certcast needs to make state and
// certificate files durable, behind an interface so tests can inject failures and simulate
// crashes (see tests/fixtures/fake_filesystem.h). Implementations are thread-safe.
#ifndef CERTCAST_COMMON_FILESYSTEM_H_
#define CERTCAST_COMMON_FILESYSTEM_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace certcast {

// What lstat(2) reports about a path (a final symlink is not followed).
struct FileInfo {
  enum class Type { kRegular, kDirectory, kSymlink, kOther };
  Type type = Type::kOther;
  mode_t mode = 0;  // permission bits with setuid, setgid and sticky (07777)
  uid_t uid = 0;
  gid_t gid = 0;
};

// Who this process is to the filesystem: the owner of what it creates, and its groups.
struct FileOwner {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups
  bool InGroup(gid_t g) const;
};

class Filesystem {
 public:
  virtual ~Filesystem() = default;

  // Whole contents of a regular file (following symlinks). NotFound when it does not exist,
  // PermissionDenied, or Internal for other errno values; messages name the path.
  virtual absl::StatusOr<std::string> ReadFile(const std::string& path) = 0;

  // Creates or truncates `path` with `mode`, writes `data`, fsyncs the file and closes it.
  // The directory entry is durable only after SyncDir of its parent.
  virtual absl::Status WriteFile(const std::string& path, absl::string_view data, mode_t mode) = 0;

  // rename(2): atomically replaces `to`. Durable after SyncDir of the parent.
  virtual absl::Status Rename(const std::string& from, const std::string& to) = 0;

  // fsync of a directory, making creations, renames and removals in it durable.
  virtual absl::Status SyncDir(const std::string& path) = 0;

  // mkdir(2) with `mode`; OK when the directory already exists (its mode is then left alone).
  virtual absl::Status CreateDir(const std::string& path, mode_t mode) = 0;

  // Removes a file, a symlink or an empty directory. NotFound when absent.
  virtual absl::Status Remove(const std::string& path) = 0;

  // Removes a directory and everything below it. OK when absent.
  virtual absl::Status RemoveAll(const std::string& path) = 0;

  // Names in a directory, without "." and "..", sorted. NotFound when absent.
  virtual absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) = 0;

  // symlink(2) and readlink(2). ReadLink returns NotFound when absent and InvalidArgument when
  // `path` is not a symlink.
  virtual absl::Status Symlink(const std::string& target, const std::string& path) = 0;
  virtual absl::StatusOr<std::string> ReadLink(const std::string& path) = 0;

  // Whether `path` exists (without following a final symlink).
  virtual bool Exists(const std::string& path) = 0;

  // lstat(2). NotFound when absent.
  virtual absl::StatusOr<FileInfo> Stat(const std::string& path) = 0;

  // chmod(2) of a directory or file (never through a final symlink: FailedPrecondition then).
  virtual absl::Status Chmod(const std::string& path, mode_t mode) = 0;

  // The effective user and groups of this process.
  virtual FileOwner Self() = 0;

  // A view of this filesystem for paths at or below directory `root` in which no symlink below
  // `root` is ever followed (see ConfinedFilesystem), so that what a caller checked and what it
  // then writes are the same objects. nullptr when an implementation has no such view (the test
  // fakes); callers then rely on their own lstat checks.
  virtual std::unique_ptr<Filesystem> ConfinedTo(const std::string& root);
};

// The real thing, on POSIX calls.
class PosixFilesystem final : public Filesystem {
 public:
  absl::StatusOr<std::string> ReadFile(const std::string& path) override;
  absl::Status WriteFile(const std::string& path, absl::string_view data, mode_t mode) override;
  absl::Status Rename(const std::string& from, const std::string& to) override;
  absl::Status SyncDir(const std::string& path) override;
  absl::Status CreateDir(const std::string& path, mode_t mode) override;
  absl::Status Remove(const std::string& path) override;
  absl::Status RemoveAll(const std::string& path) override;
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override;
  absl::Status Symlink(const std::string& target, const std::string& path) override;
  absl::StatusOr<std::string> ReadLink(const std::string& path) override;
  bool Exists(const std::string& path) override;
  absl::StatusOr<FileInfo> Stat(const std::string& path) override;
  absl::Status Chmod(const std::string& path, mode_t mode) override;
  FileOwner Self() override;
  std::unique_ptr<Filesystem> ConfinedTo(const std::string& root) override;
};

// The POSIX filesystem below directory `root`, never following a symlink below it (issue 10,
// item 9: a symlink planted at OUTPUT_DIR/NAME must not redirect the key). Every operation opens
// `root` (following the links that lead to it: the operator chose it), walks down one component
// at a time with openat(O_NOFOLLOW | O_DIRECTORY), and acts on the last component with the *at
// call relative to the directory it reached, never through a final symlink (ReadFile included).
// There is no window between a check and a use: a directory swapped for a symlink after a
// caller looked at it makes the next operation fail with FailedPrecondition ("... is a symlink:
// refusing to follow it"), not write through the link. Paths must be `root` or below it, without
// ".." (InvalidArgument otherwise). Operations on `root` itself are limited to those that act
// on an existing directory (Stat, Exists, ListDir, SyncDir). Thread-safe (holds no descriptors).
class ConfinedFilesystem final : public Filesystem {
 public:
  explicit ConfinedFilesystem(std::string root);

  absl::StatusOr<std::string> ReadFile(const std::string& path) override;
  absl::Status WriteFile(const std::string& path, absl::string_view data, mode_t mode) override;
  absl::Status Rename(const std::string& from, const std::string& to) override;
  absl::Status SyncDir(const std::string& path) override;
  absl::Status CreateDir(const std::string& path, mode_t mode) override;
  absl::Status Remove(const std::string& path) override;
  absl::Status RemoveAll(const std::string& path) override;
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override;
  absl::Status Symlink(const std::string& target, const std::string& path) override;
  absl::StatusOr<std::string> ReadLink(const std::string& path) override;
  bool Exists(const std::string& path) override;
  absl::StatusOr<FileInfo> Stat(const std::string& path) override;
  absl::Status Chmod(const std::string& path, mode_t mode) override;
  FileOwner Self() override;

 private:
  struct Parent;  // an open directory below root and the last component of a path
  absl::StatusOr<Parent> OpenParent(const std::string& path) const;
  // A descriptor of `path` itself (root or a directory below it, never a symlink), opened with
  // `flags`.
  absl::StatusOr<int> OpenDirectory(const std::string& path, int flags) const;

  const std::string root_;
};

// Replaces `path` so that a reader (or a crash) sees either the old or the new bytes, never a
// mix: writes `path.tmp-XXXX` in the same directory, fsyncs it, renames it over `path` and
// fsyncs the directory. On failure the temporary file is removed and `path` is untouched.
absl::Status WriteFileAtomically(Filesystem& fs, const std::string& path, absl::string_view data,
                                 mode_t mode);

// Makes sure that only this process's user (and root) can change what is in directory `dir`,
// which `what` names in messages ("state directory"), before certcast trusts what it reads there
// or writes keys into it. FailedPrecondition, naming the directory and the reason, when `dir` is
// a symlink (whoever controls its parent could re-point it), not a directory, or owned by
// another user than this process or root. A directory writable by others (other-writable, or
// group-writable for a group this process is not in) is tightened to `mode & tightened` with a
// warning when this process owns it, and refused otherwise. NotFound when `dir` does not exist.
absl::Status SecureDirectory(Filesystem& fs, const std::string& dir, absl::string_view what,
                             mode_t tightened);

// Maps an errno value from operation `op` on `path` to a Status with the most specific code.
absl::Status ErrnoToStatus(int err, absl::string_view op, absl::string_view path);

// Directory part of `path` ("." when none).
std::string Dirname(absl::string_view path);
// `dir/name`, without doubling a slash.
std::string JoinPath(absl::string_view dir, absl::string_view name);

}  // namespace certcast

#endif  // CERTCAST_COMMON_FILESYSTEM_H_
