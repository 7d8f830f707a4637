#include "common/filesystem.h"

#include <dirent.h>
#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/logging.h"
#include "common/secret.h"
#include "common/status_macros.h"

namespace certcast {
namespace {

// strerror_r comes in a GNU (returns char*) and an XSI (returns int) flavour; accept both.
[[maybe_unused]] const char* StrErrorResult(const char* result, const char* /*buf*/) {
  return result;
}
[[maybe_unused]] const char* StrErrorResult(int result, const char* buf) {
  return result == 0 ? buf : "Unknown error";
}

std::string StrError(int err) {
  char buf[256] = {0};
  return StrErrorResult(strerror_r(err, buf, sizeof(buf)), buf);
}

// Closes `fd` on scope exit unless Release()d; close errors here are already moot.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() {
    if (fd_ >= 0) ::close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;
  int get() const { return fd_; }
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

int OpenRetrying(const std::string& path, int flags, mode_t mode = 0) {
  int fd;
  do {
    fd = ::open(path.c_str(), flags, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// close(2) must not be retried on EINTR (Linux releases the descriptor anyway); an EINTR from
// close is therefore not an error we can act on.
absl::Status CloseChecked(int fd, const std::string& path) {
  if (::close(fd) != 0 && errno != EINTR) return ErrnoToStatus(errno, "close", path);
  return absl::OkStatus();
}

// Entries of a directory without "." and "..", in readdir order.
absl::StatusOr<std::vector<std::string>> ReadDirNames(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());  // glibc opens with O_CLOEXEC
  if (dir == nullptr) return ErrnoToStatus(errno, "opendir", path);
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* entry = ::readdir(dir)) {
    absl::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  int err = errno;
  ::closedir(dir);
  if (err != 0) return ErrnoToStatus(err, "readdir", path);
  return names;
}

absl::Status RemoveAllImpl(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoToStatus(errno, "lstat", path);
  }
  if (S_ISDIR(st.st_mode)) {
    ASSIGN_OR_RETURN(std::vector<std::string> names, ReadDirNames(path));
    for (const std::string& name : names) RETURN_IF_ERROR(RemoveAllImpl(JoinPath(path, name)));
    if (::rmdir(path.c_str()) != 0 && errno != ENOENT) return ErrnoToStatus(errno, "rmdir", path);
    return absl::OkStatus();
  }
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) return ErrnoToStatus(errno, "unlink", path);
  return absl::OkStatus();
}

// Reads all of `fd` (then closed); `path` names it in errors.
absl::StatusOr<std::string> ReadAndClose(int fd, const std::string& path) {
  FdCloser closer(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoToStatus(errno, "fstat", path);
  std::string contents;
  if (S_ISREG(st.st_mode) && st.st_size > 0) contents.reserve(static_cast<size_t>(st.st_size));
  char buf[64 * 1024];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      CleanseMemory(buf, sizeof(buf));
      return ErrnoToStatus(errno, "read", path);
    }
    if (n == 0) break;
    contents.append(buf, static_cast<size_t>(n));
  }
  // The stack buffer may have held key material.
  CleanseMemory(buf, sizeof(buf));
  return contents;
}

// Sets the mode of a freshly opened `fd`, writes `data`, fsyncs and closes it.
absl::Status WriteAndClose(int fd, const std::string& path, absl::string_view data, mode_t mode) {
  FdCloser closer(fd);
  // open(2) applies the umask and leaves an existing file's mode alone; set it explicitly.
  if (::fchmod(fd, mode) != 0) return ErrnoToStatus(errno, "fchmod", path);
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, "write", path);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) return ErrnoToStatus(errno, "fsync", path);
  return CloseChecked(closer.Release(), path);
}

FileInfo InfoFromStat(const struct stat& st) {
  FileInfo info;
  info.type = S_ISREG(st.st_mode)   ? FileInfo::Type::kRegular
              : S_ISDIR(st.st_mode) ? FileInfo::Type::kDirectory
              : S_ISLNK(st.st_mode) ? FileInfo::Type::kSymlink
                                    : FileInfo::Type::kOther;
  info.mode = st.st_mode & 07777;
  info.uid = st.st_uid;
  info.gid = st.st_gid;
  return info;
}

// Entries of the directory open as `fd` (taken over and closed), without "." and "..".
absl::StatusOr<std::vector<std::string>> ReadDirNamesAt(int fd, const std::string& path) {
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    const int err = errno;
    ::close(fd);
    return ErrnoToStatus(err, "fdopendir", path);
  }
  std::vector<std::string> names;
  errno = 0;
  while (struct dirent* entry = ::readdir(dir)) {
    absl::string_view name = entry->d_name;
    if (name != "." && name != "..") names.emplace_back(name);
  }
  int err = errno;
  ::closedir(dir);
  if (err != 0) return ErrnoToStatus(err, "readdir", path);
  return names;
}

// The error for an openat(O_NOFOLLOW) of `name` in `dir_fd` that failed with `err`: a clear
// refusal when `name` is a symlink (ELOOP, or ENOTDIR with O_DIRECTORY), else the errno.
absl::Status OpenAtError(int err, int dir_fd, const std::string& name, absl::string_view op,
                         const std::string& path) {
  struct stat st;
  if ((err == ELOOP || err == ENOTDIR) &&
      ::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(op, " ", path, ": ", name, " is a symlink: refusing to follow it"));
  }
  return ErrnoToStatus(err, op, path);
}

int OpenAtRetrying(int dir_fd, const std::string& name, int flags, mode_t mode = 0) {
  int fd;
  do {
    fd = ::openat(dir_fd, name.c_str(), flags, mode);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// Removes `name` in `dir_fd` and, when it is a directory, everything below it, never following
// a symlink. OK when absent. `path` names it in errors.
absl::Status RemoveAllAt(int dir_fd, const std::string& name, const std::string& path) {
  struct stat st;
  if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return ErrnoToStatus(errno, "lstat", path);
  }
  if (S_ISDIR(st.st_mode)) {
    const int fd = OpenAtRetrying(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return OpenAtError(errno, dir_fd, name, "open", path);
    const int list_fd = ::dup(fd);
    FdCloser closer(fd);
    if (list_fd < 0) return ErrnoToStatus(errno, "dup", path);
    ASSIGN_OR_RETURN(std::vector<std::string> names, ReadDirNamesAt(list_fd, path));
    for (const std::string& entry : names) {
      RETURN_IF_ERROR(RemoveAllAt(fd, entry, JoinPath(path, entry)));
    }
    if (::unlinkat(dir_fd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) {
      return ErrnoToStatus(errno, "rmdir", path);
    }
    return absl::OkStatus();
  }
  if (::unlinkat(dir_fd, name.c_str(), 0) != 0 && errno != ENOENT) {
    return ErrnoToStatus(errno, "unlink", path);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RandomHex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(raw.size())) != 1) {
    return absl::InternalError("RAND_bytes failed");
  }
  return absl::BytesToHexString(raw);
}

absl::string_view Basename(absl::string_view path) {
  size_t slash = path.rfind('/');
  return slash == absl::string_view::npos ? path : path.substr(slash + 1);
}

}  // namespace

absl::Status ErrnoToStatus(int err, absl::string_view op, absl::string_view path) {
  std::string message = absl::StrCat(op, " ", path, ": ", StrError(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    case EEXIST:
      return absl::AlreadyExistsError(message);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(message);
    case EROFS:
      return absl::FailedPreconditionError(message);
    default:
      return absl::InternalError(message);
  }
}

std::string Dirname(absl::string_view path) {
  size_t slash = path.rfind('/');
  if (slash == absl::string_view::npos) return ".";
  // Drop repeated slashes before the last component ("a//b" -> "a"), but keep the root.
  size_t end = path.find_last_not_of('/', slash);
  if (end == absl::string_view::npos) return "/";
  return std::string(path.substr(0, end + 1));
}

std::string JoinPath(absl::string_view dir, absl::string_view name) {
  if (dir.empty()) return std::string(name);
  while (!name.empty() && name.front() == '/') name.remove_prefix(1);
  if (dir.back() == '/') return absl::StrCat(dir, name);
  return absl::StrCat(dir, "/", name);
}

absl::StatusOr<std::string> PosixFilesystem::ReadFile(const std::string& path) {
  int fd = OpenRetrying(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "open", path);
  return ReadAndClose(fd, path);
}

absl::Status PosixFilesystem::WriteFile(const std::string& path, absl::string_view data,
                                        mode_t mode) {
  // O_NOFOLLOW: never write through a symlink someone planted in a state or key directory.
  int fd = OpenRetrying(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) return ErrnoToStatus(errno, "open", path);
  return WriteAndClose(fd, path, data, mode);
}

absl::Status PosixFilesystem::Rename(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0) {
    return ErrnoToStatus(errno, "rename", absl::StrCat(from, " -> ", to));
  }
  return absl::OkStatus();
}

absl::Status PosixFilesystem::SyncDir(const std::string& path) {
  int fd = OpenRetrying(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "open", path);
  FdCloser closer(fd);
  if (::fsync(fd) != 0) return ErrnoToStatus(errno, "fsync", path);
  return CloseChecked(closer.Release(), path);
}

absl::Status PosixFilesystem::CreateDir(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0) {
    int err = errno;
    struct stat st;
    if (err == EEXIST && ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      return absl::OkStatus();
    }
    return ErrnoToStatus(err, "mkdir", path);
  }
  // mkdir(2) applies the umask; the caller asked for exactly `mode`.
  if (::chmod(path.c_str(), mode) != 0) return ErrnoToStatus(errno, "chmod", path);
  return absl::OkStatus();
}

absl::Status PosixFilesystem::Remove(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return ErrnoToStatus(errno, "lstat", path);
  if (S_ISDIR(st.st_mode)) {
    if (::rmdir(path.c_str()) != 0) return ErrnoToStatus(errno, "rmdir", path);
  } else if (::unlink(path.c_str()) != 0) {
    return ErrnoToStatus(errno, "unlink", path);
  }
  return absl::OkStatus();
}

absl::Status PosixFilesystem::RemoveAll(const std::string& path) { return RemoveAllImpl(path); }

absl::StatusOr<std::vector<std::string>> PosixFilesystem::ListDir(const std::string& path) {
  ASSIGN_OR_RETURN(std::vector<std::string> names, ReadDirNames(path));
  std::sort(names.begin(), names.end());
  return names;
}

absl::Status PosixFilesystem::Symlink(const std::string& target, const std::string& path) {
  if (::symlink(target.c_str(), path.c_str()) != 0) return ErrnoToStatus(errno, "symlink", path);
  return absl::OkStatus();
}

absl::StatusOr<std::string> PosixFilesystem::ReadLink(const std::string& path) {
  std::string buf(256, '\0');
  while (true) {
    ssize_t n = ::readlink(path.c_str(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINVAL) {
        return absl::InvalidArgumentError(absl::StrCat("readlink ", path, ": not a symlink"));
      }
      return ErrnoToStatus(errno, "readlink", path);
    }
    // A full buffer may mean truncation: grow and retry.
    if (static_cast<size_t>(n) < buf.size()) {
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    buf.resize(buf.size() * 2);
  }
}

bool PosixFilesystem::Exists(const std::string& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

absl::StatusOr<FileInfo> PosixFilesystem::Stat(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return ErrnoToStatus(errno, "lstat", path);
  return InfoFromStat(st);
}

absl::Status PosixFilesystem::Chmod(const std::string& path, mode_t mode) {
  // O_NOFOLLOW | O_PATH would not allow fchmod on Linux before 6.6; O_RDONLY works for
  // directories and for files this process may read, which is all certcast chmods.
  int fd = OpenRetrying(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ELOOP) {
      return absl::FailedPreconditionError(absl::StrCat("chmod ", path, ": is a symlink"));
    }
    return ErrnoToStatus(errno, "open", path);
  }
  FdCloser closer(fd);
  if (::fchmod(fd, mode) != 0) return ErrnoToStatus(errno, "fchmod", path);
  return CloseChecked(closer.Release(), path);
}

FileOwner PosixFilesystem::Self() {
  FileOwner self;
  self.uid = ::geteuid();
  self.gid = ::getegid();
  const int n = ::getgroups(0, nullptr);
  if (n > 0) {
    self.groups.resize(static_cast<size_t>(n));
    const int got = ::getgroups(n, self.groups.data());
    self.groups.resize(got > 0 ? static_cast<size_t>(got) : 0);
  }
  return self;
}

std::unique_ptr<Filesystem> Filesystem::ConfinedTo(const std::string& /*root*/) { return nullptr; }

std::unique_ptr<Filesystem> PosixFilesystem::ConfinedTo(const std::string& root) {
  return std::make_unique<ConfinedFilesystem>(root);
}

// An open directory (at or below root) and the last component of a path in it.
struct ConfinedFilesystem::Parent {
  int fd = -1;  // owned
  std::string name;
  Parent() = default;
  Parent(Parent&& other) noexcept : fd(other.fd), name(std::move(other.name)) { other.fd = -1; }
  Parent& operator=(Parent&&) = delete;
  ~Parent() {
    if (fd >= 0) ::close(fd);
  }
};

ConfinedFilesystem::ConfinedFilesystem(std::string root) : root_(std::move(root)) {}

namespace {

// The components of `path` below `root` (none for root itself); InvalidArgument when `path` is
// not at or below `root`, or has a "." or ".." component.
absl::StatusOr<std::vector<std::string>> Below(const std::string& root, const std::string& path) {
  absl::string_view base = root;
  while (base.size() > 1 && base.back() == '/') base.remove_suffix(1);
  absl::string_view rest = path;
  if (!absl::StartsWith(rest, base) ||
      (rest.size() > base.size() && rest[base.size()] != '/' && base != "/")) {
    return absl::InvalidArgumentError(absl::StrCat(path, " is not below ", root));
  }
  rest.remove_prefix(base.size());
  std::vector<std::string> parts;
  for (absl::string_view part : absl::StrSplit(rest, '/', absl::SkipEmpty())) {
    if (part == "." || part == "..") {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": \".\" and \"..\" are not allowed below ", root));
    }
    parts.emplace_back(part);
  }
  return parts;
}

// Opens root, then each of `parts` as a directory with O_NOFOLLOW; the last one with `flags`.
absl::StatusOr<int> WalkDown(const std::string& root, const std::vector<std::string>& parts,
                             size_t count, int flags, const std::string& path) {
  int fd = OpenRetrying(root, (count == 0 ? flags : O_PATH) | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoToStatus(errno, "open", root);
  for (size_t i = 0; i < count; ++i) {
    FdCloser parent(fd);
    const int next_flags = i + 1 == count ? flags : O_PATH;
    fd = OpenAtRetrying(parent.get(), parts[i], next_flags | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return OpenAtError(errno, parent.get(), parts[i], "open", path);
  }
  return fd;
}

}  // namespace

absl::StatusOr<ConfinedFilesystem::Parent> ConfinedFilesystem::OpenParent(
    const std::string& path) const {
  ASSIGN_OR_RETURN(std::vector<std::string> parts, Below(root_, path));
  if (parts.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": this operation needs a path below ", root_));
  }
  Parent parent;
  ASSIGN_OR_RETURN(parent.fd, WalkDown(root_, parts, parts.size() - 1, O_PATH, path));
  parent.name = parts.back();
  return parent;
}

absl::StatusOr<int> ConfinedFilesystem::OpenDirectory(const std::string& path, int flags) const {
  ASSIGN_OR_RETURN(std::vector<std::string> parts, Below(root_, path));
  return WalkDown(root_, parts, parts.size(), flags, path);
}

absl::StatusOr<std::string> ConfinedFilesystem::ReadFile(const std::string& path) {
  ASSIGN_OR_RETURN(Parent parent, OpenParent(path));
  const int fd = OpenAtRetrying(parent.fd, parent.name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return OpenAtError(errno, parent.fd, parent.name, "open", path);
  return ReadAndClose(fd, path);
}

absl::Status ConfinedFilesystem::WriteFile(const std::string& path, absl::string_view data,
                                           mode_t mode) {
  ASSIGN_OR_RETURN(Parent parent, OpenParent(path));
  const int fd = OpenAtRetrying(parent.fd, parent.name,
                                O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return OpenAtError(errno, parent.fd, parent.name, "open", path);
  return WriteAndClose(fd, path, data, mode);
}

absl::Status ConfinedFilesystem::Rename(const std::string& from, const std::string& to) {
  ASSIGN_OR_RETURN(Parent source, OpenParent(from));
  ASSIGN_OR_RETURN(Parent target, OpenParent(to));
  if (::renameat(source.fd, source.name.c_str(), target.fd, target.name.c_str()) != 0) {
    return ErrnoToStatus(errno, "rename", absl::StrCat(from, " -> ", to));
  }
  return absl::OkStatus();
}

absl::Status ConfinedFilesystem::SyncDir(const std::string& path) {
  ASSIGN_OR_RETURN(int fd, OpenDirectory(path, O_RDONLY));
  FdCloser closer(fd);
  if (::fsync(fd) != 0) return ErrnoToStatus(errno, "fsync", path);
  return CloseChecked(closer.Release(), path);
}

absl::Status ConfinedFilesystem::CreateDir(const std::string& path, mode_t mode) {
  ASSIGN_OR_RETURN(Parent parent, OpenParent(path));
  if (::mkdirat(parent.fd, parent.name.c_str(), mode) != 0) {
    const int err = errno;
    struct stat st;
    if (err == EEXIST && ::fstatat(parent.fd, parent.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      if (S_ISDIR(st.st_mode)) return absl::OkStatus();
      if (S_ISLNK(st.st_mode)) {
        return absl::FailedPreconditionError(
            absl::StrCat("mkdir ", path, ": is a symlink: refusing to follow it"));
      }
    }
    return ErrnoToStatus(err, "mkdir", path);
  }
  // mkdir(2) applies the umask; the caller asked for exactly `mode`.
  const int fd =
      OpenAtRetrying(parent.fd, parent.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return OpenAtError(errno, parent.fd, parent.name, "open", path);
  FdCloser closer(fd);
  if (::fchmod(fd, mode) != 0) return ErrnoToStatus(errno, "chmod", path);
  return absl::OkStatus();
}

absl::Status ConfinedFilesystem::Remove(const std::string& path) {
  ASSIGN_OR_RETURN(Parent parent, OpenParent(path));
  struct stat st;
  if (::fstatat(parent.fd, parent.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoToStatus(errno, "lstat", path);
  }
  const bool dir = S_ISDIR(st.st_mode);
  if (::unlinkat(parent.fd, parent.name.c_str(), dir ? AT_REMOVEDIR : 0) != 0) {
    return ErrnoToStatus(errno, dir ? "rmdir" : "unlink", path);
  }
  return absl::OkStatus();
}

absl::Status ConfinedFilesystem::RemoveAll(const std::string& path) {
  ASSIGN_OR_RETURN(Parent parent, OpenParent(path));
  return RemoveAllAt(parent.fd, parent.name, path);
}

absl::StatusOr<std::vector<std::string>> ConfinedFilesystem::ListDir(const std::string& path) {
  ASSIGN_OR_RETURN(int fd, OpenDirectory(path, O_RDONLY));
  ASSIGN_OR_RETURN(std::vector<std::string> names, ReadDirNamesAt(fd, path));
  std::sort(names.begin(), names.end());
  return names;
}

absl::Status ConfinedFilesystem::Symlink(const std::string& target, const std::string& path) {
  ASSIGN_OR_RETURN(Parent parent, OpenParent(path));
  if (::symlinkat(target.c_str(), parent.fd, parent.name.c_str()) != 0) {
    return ErrnoToStatus(errno, "symlink", path);
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ConfinedFilesystem::ReadLink(const std::string& path) {
  ASSIGN_OR_RETURN(Parent parent, OpenParent(path));
  std::string buf(256, '\0');
  while (true) {
    ssize_t n = ::readlinkat(parent.fd, parent.name.c_str(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINVAL) {
        return absl::InvalidArgumentError(absl::StrCat("readlink ", path, ": not a symlink"));
      }
      return ErrnoToStatus(errno, "readlink", path);
    }
    if (static_cast<size_t>(n) < buf.size()) {
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
    buf.resize(buf.size() * 2);
  }
}

bool ConfinedFilesystem::Exists(const std::string& path) { return Stat(path).ok(); }

absl::StatusOr<FileInfo> ConfinedFilesystem::Stat(const std::string& path) {
  ASSIGN_OR_RETURN(std::vector<std::string> parts, Below(root_, path));
  struct stat st;
  if (parts.empty()) {
    if (::stat(root_.c_str(), &st) != 0) return ErrnoToStatus(errno, "stat", path);
    return InfoFromStat(st);
  }
  ASSIGN_OR_RETURN(Parent parent, OpenParent(path));
  if (::fstatat(parent.fd, parent.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    return ErrnoToStatus(errno, "lstat", path);
  }
  return InfoFromStat(st);
}

absl::Status ConfinedFilesystem::Chmod(const std::string& path, mode_t mode) {
  ASSIGN_OR_RETURN(Parent parent, OpenParent(path));
  const int fd = OpenAtRetrying(parent.fd, parent.name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ELOOP) {
      return absl::FailedPreconditionError(absl::StrCat("chmod ", path, ": is a symlink"));
    }
    return ErrnoToStatus(errno, "open", path);
  }
  FdCloser closer(fd);
  if (::fchmod(fd, mode) != 0) return ErrnoToStatus(errno, "fchmod", path);
  return CloseChecked(closer.Release(), path);
}

FileOwner ConfinedFilesystem::Self() { return PosixFilesystem().Self(); }

bool FileOwner::InGroup(gid_t g) const {
  return g == gid || std::find(groups.begin(), groups.end(), g) != groups.end();
}

absl::Status SecureDirectory(Filesystem& fs, const std::string& dir, absl::string_view what,
                             mode_t tightened) {
  ASSIGN_OR_RETURN(FileInfo info, fs.Stat(dir));
  if (info.type == FileInfo::Type::kSymlink) {
    absl::StatusOr<std::string> target = fs.ReadLink(dir);
    return absl::FailedPreconditionError(absl::StrCat(
        what, " ", dir, " is a symlink", target.ok() ? absl::StrCat(" to ", *target) : "",
        ": refusing to use it (whoever can change the link can redirect what certcast writes); "
        "give the directory itself"));
  }
  if (info.type != FileInfo::Type::kDirectory) {
    return absl::FailedPreconditionError(absl::StrCat(what, " ", dir, " is not a directory"));
  }
  const FileOwner self = fs.Self();
  if (info.uid != self.uid && info.uid != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " ", dir, " is owned by uid ", info.uid, ", not by this process (uid ", self.uid,
        ") or root: its owner could change what certcast keeps there; "
        "chown it or use another directory"));
  }
  const bool others_write = (info.mode & S_IWOTH) != 0;
  const bool group_write = (info.mode & S_IWGRP) != 0 && !self.InGroup(info.gid);
  if (!others_write && !group_write) return absl::OkStatus();
  const std::string mode_text = absl::StrFormat("%04o", info.mode);
  if (info.uid != self.uid) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, " ", dir, " (mode ", mode_text, ", owned by uid ", info.uid, ") can be written by ",
        others_write ? "every user" : absl::StrCat("group ", info.gid),
        " and this process cannot tighten it: chmod go-w it, or give a subdirectory (certcast "
        "creates it with mode 0700)"));
  }
  const mode_t new_mode = info.mode & tightened & ~static_cast<mode_t>(S_IWGRP | S_IWOTH);
  RETURN_IF_ERROR(Annotate(fs.Chmod(dir, new_mode), absl::StrCat("tightening ", what, " ", dir)));
  LogWarn("tightened a directory others could write",
          {{"what", what},
           {"path", dir},
           {"writable_by", others_write ? "every user" : absl::StrCat("group ", info.gid)},
           {"mode_was", mode_text},
           {"mode_now", absl::StrFormat("%04o", new_mode)}});
  return absl::OkStatus();
}

absl::Status WriteFileAtomically(Filesystem& fs, const std::string& path, absl::string_view data,
                                 mode_t mode) {
  const std::string dir = Dirname(path);
  ASSIGN_OR_RETURN(std::string suffix, RandomHex(8));
  const std::string tmp = JoinPath(dir, absl::StrCat(".", Basename(path), ".tmp-", suffix));
  absl::Status status = fs.WriteFile(tmp, data, mode);
  if (status.ok()) status = fs.Rename(tmp, path);
  if (!status.ok()) {
    // Best effort: the temp file may not exist (open failed) or the crash may be ongoing.
    fs.Remove(tmp).IgnoreError();
    return status;
  }
  // The rename happened; the new bytes are visible but not yet durable.
  return fs.SyncDir(dir);
}

}  // namespace certcast
