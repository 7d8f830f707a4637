#include "common/filesystem.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/forwarding_filesystem.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fixtures/fake_filesystem.h"

namespace certcast {
namespace {

using ::certcast::fixtures::FakeFilesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::StartsWith;

mode_t ModeOnDisk(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return 0;
  return st.st_mode & 07777;
}

// Sets the process umask for the lifetime of the object.
class ScopedUmask {
 public:
  explicit ScopedUmask(mode_t mask) : old_(::umask(mask)) {}
  ~ScopedUmask() { ::umask(old_); }

 private:
  mode_t old_;
};

// Delegates to another Filesystem, failing selected calls: lets the real WriteFileAtomically
// meet a failure on a real disk.
class FailingFilesystem : public ForwardingFilesystem {
 public:
  explicit FailingFilesystem(Filesystem* base) : ForwardingFilesystem(base) {}
  bool fail_rename = false;
  int fail_write_after_bytes = -1;  // >= 0: write that many bytes, then fail with ENOSPC

  absl::Status WriteFile(const std::string& p, absl::string_view d, mode_t m) override {
    if (fail_write_after_bytes >= 0) {
      ForwardingFilesystem::WriteFile(p, d.substr(0, fail_write_after_bytes), m).IgnoreError();
      return ErrnoToStatus(ENOSPC, "write", p);
    }
    return ForwardingFilesystem::WriteFile(p, d, m);
  }
  absl::Status Rename(const std::string& f, const std::string& t) override {
    if (fail_rename) return ErrnoToStatus(EIO, "rename", f);
    return ForwardingFilesystem::Rename(f, t);
  }
};

// stat(2) of `path` (zeroed when it fails).
struct stat StatOf(const std::string& path) {
  struct stat st = {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st;
}

class PosixFilesystemTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    std::string templ = JoinPath(tmp != nullptr ? tmp : "/tmp", "certcast-fs-test-XXXXXX");
    ASSERT_NE(::mkdtemp(templ.data()), nullptr) << "mkdtemp: " << errno;
    dir_ = templ;
  }
  void TearDown() override {
    if (!dir_.empty()) {
      EXPECT_TRUE(fs_.RemoveAll(dir_).ok());
    }
  }
  std::string Path(absl::string_view name) const { return JoinPath(dir_, name); }

  PosixFilesystem fs_;
  std::string dir_;
};

// WriteFile then ReadFile returns the same bytes, including NULs.
TEST_F(PosixFilesystemTest, WriteThenReadRoundTrips) {
  const std::string data("a\0b\nc", 5);
  ASSERT_TRUE(fs_.WriteFile(Path("f"), data, 0600).ok());
  auto read = fs_.ReadFile(Path("f"));
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, data);
}

// A missing file is NotFound, and the message names the operation and the path.
TEST_F(PosixFilesystemTest, ReadFileMissingIsNotFoundNamingThePath) {
  auto read = fs_.ReadFile(Path("missing"));
  EXPECT_TRUE(absl::IsNotFound(read.status())) << read.status();
  EXPECT_EQ(read.status().message(),
            absl::StrCat("open ", Path("missing"), ": No such file or directory"));
}

// The requested mode is applied exactly, whatever the umask, also when overwriting a file.
TEST_F(PosixFilesystemTest, WriteFileAppliesModeRegardlessOfUmask) {
  {
    ScopedUmask mask(0077);
    ASSERT_TRUE(fs_.WriteFile(Path("public"), "x", 0644).ok());
  }
  EXPECT_EQ(ModeOnDisk(Path("public")), 0644u);
  {
    ScopedUmask mask(0);
    ASSERT_TRUE(fs_.WriteFile(Path("secret"), "x", 0600).ok());
  }
  EXPECT_EQ(ModeOnDisk(Path("secret")), 0600u);
  ASSERT_TRUE(fs_.WriteFile(Path("public"), "y", 0600).ok());
  EXPECT_EQ(ModeOnDisk(Path("public")), 0600u);
}

// A symlink at the destination is not written through.
TEST_F(PosixFilesystemTest, WriteFileDoesNotFollowSymlinks) {
  ASSERT_TRUE(fs_.WriteFile(Path("target"), "keep", 0600).ok());
  ASSERT_TRUE(fs_.Symlink("target", Path("link")).ok());
  EXPECT_FALSE(fs_.WriteFile(Path("link"), "overwritten", 0600).ok());
  EXPECT_EQ(*fs_.ReadFile(Path("target")), "keep");
}

// CreateDir applies the mode exactly, is OK when the directory exists, and refuses a file.
TEST_F(PosixFilesystemTest, CreateDirAppliesModeAndToleratesExistingDirectory) {
  {
    ScopedUmask mask(0077);
    ASSERT_TRUE(fs_.CreateDir(Path("d"), 0750).ok());
  }
  EXPECT_EQ(ModeOnDisk(Path("d")), 0750u);
  EXPECT_TRUE(fs_.CreateDir(Path("d"), 0700).ok());
  EXPECT_EQ(ModeOnDisk(Path("d")), 0750u);  // left alone
  ASSERT_TRUE(fs_.WriteFile(Path("file"), "x", 0600).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(fs_.CreateDir(Path("file"), 0700)));
}

// Stat reports type, mode and owner without following a final symlink; Chmod refuses symlinks.
TEST_F(PosixFilesystemTest, StatDoesNotFollowSymlinksAndChmodRefusesThem) {
  ASSERT_TRUE(fs_.CreateDir(Path("d"), 0750).ok());
  ASSERT_TRUE(fs_.Symlink(Path("d"), Path("link")).ok());
  absl::StatusOr<FileInfo> dir = fs_.Stat(Path("d"));
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(dir->type, FileInfo::Type::kDirectory);
  EXPECT_EQ(dir->mode, 0750u);
  EXPECT_EQ(dir->uid, ::geteuid());
  absl::StatusOr<FileInfo> link = fs_.Stat(Path("link"));
  ASSERT_TRUE(link.ok()) << link.status();
  EXPECT_EQ(link->type, FileInfo::Type::kSymlink);
  EXPECT_TRUE(absl::IsNotFound(fs_.Stat(Path("missing")).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(fs_.Chmod(Path("link"), 0700)));
  EXPECT_EQ(ModeOnDisk(Path("d")), 0750u);
  ASSERT_TRUE(fs_.Chmod(Path("d"), 0700).ok());
  EXPECT_EQ(ModeOnDisk(Path("d")), 0700u);
}

// On a real disk: a 0777 directory of ours is tightened; one owned by another user is refused
// (that part needs root, to chown).
TEST_F(PosixFilesystemTest, SecureDirectoryTightensOursAndRefusesOthers) {
  ASSERT_TRUE(fs_.CreateDir(Path("open"), 0777).ok());
  ASSERT_EQ(ModeOnDisk(Path("open")), 0777u);
  ASSERT_TRUE(SecureDirectory(fs_, Path("open"), "state directory", 0700).ok());
  EXPECT_EQ(ModeOnDisk(Path("open")), 0700u);
  ASSERT_TRUE(fs_.Symlink(Path("open"), Path("link")).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(SecureDirectory(fs_, Path("link"), "state", 0700)));
  if (::geteuid() != 0) GTEST_SKIP() << "chown to another user needs root";
  ASSERT_TRUE(fs_.CreateDir(Path("theirs"), 0700).ok());
  ASSERT_EQ(::chown(Path("theirs").c_str(), 4242, 4242), 0);
  absl::Status status = SecureDirectory(fs_, Path("theirs"), "state directory", 0700);
  EXPECT_TRUE(absl::IsFailedPrecondition(status)) << status;
  EXPECT_NE(status.message().find("owned by uid 4242"), absl::string_view::npos) << status;
}

// Atomic replace: new bytes, the given mode, and no temporary file left behind.
TEST_F(PosixFilesystemTest, WriteFileAtomicallyReplacesAndLeavesNoTempFile) {
  ASSERT_TRUE(fs_.WriteFile(Path("state"), "old", 0644).ok());
  ASSERT_TRUE(WriteFileAtomically(fs_, Path("state"), "new", 0600).ok());
  EXPECT_EQ(*fs_.ReadFile(Path("state")), "new");
  EXPECT_EQ(ModeOnDisk(Path("state")), 0600u);
  EXPECT_THAT(*fs_.ListDir(dir_), ElementsAre("state"));
}

// When the rename fails, the old bytes stay and the temporary file is removed.
TEST_F(PosixFilesystemTest, WriteFileAtomicallyKeepsOldBytesWhenRenameFails) {
  ASSERT_TRUE(fs_.WriteFile(Path("state"), "old", 0600).ok());
  FailingFilesystem failing(&fs_);
  failing.fail_rename = true;
  EXPECT_FALSE(WriteFileAtomically(failing, Path("state"), "new", 0600).ok());
  EXPECT_EQ(*fs_.ReadFile(Path("state")), "old");
  EXPECT_THAT(*fs_.ListDir(dir_), ElementsAre("state"));
}

// When the write fails midway (disk full), the old bytes stay and the partial temp file is gone.
TEST_F(PosixFilesystemTest, WriteFileAtomicallyKeepsOldBytesWhenWriteFails) {
  ASSERT_TRUE(fs_.WriteFile(Path("state"), "old contents", 0600).ok());
  FailingFilesystem failing(&fs_);
  failing.fail_write_after_bytes = 3;
  absl::Status status = WriteFileAtomically(failing, Path("state"), "new contents", 0600);
  EXPECT_TRUE(absl::IsResourceExhausted(status)) << status;
  EXPECT_EQ(*fs_.ReadFile(Path("state")), "old contents");
  EXPECT_THAT(*fs_.ListDir(dir_), ElementsAre("state"));
}

// ListDir returns names only, sorted, without "." and "..".
TEST_F(PosixFilesystemTest, ListDirIsSorted) {
  for (const char* name : {"b", "a", "c.d", "c"}) {
    ASSERT_TRUE(fs_.WriteFile(Path(name), "", 0600).ok());
  }
  ASSERT_TRUE(fs_.CreateDir(Path("sub"), 0700).ok());
  EXPECT_THAT(*fs_.ListDir(dir_), ElementsAre("a", "b", "c", "c.d", "sub"));
  EXPECT_THAT(*fs_.ListDir(Path("sub")), IsEmpty());
  EXPECT_TRUE(absl::IsNotFound(fs_.ListDir(Path("missing")).status()));
}

// RemoveAll deletes a tree without following symlinks out of it, and is OK when absent.
TEST_F(PosixFilesystemTest, RemoveAllRemovesTreeButNotSymlinkTargets) {
  ASSERT_TRUE(fs_.CreateDir(Path("outside"), 0700).ok());
  ASSERT_TRUE(fs_.WriteFile(Path("outside/keep"), "k", 0600).ok());
  ASSERT_TRUE(fs_.CreateDir(Path("tree"), 0700).ok());
  ASSERT_TRUE(fs_.CreateDir(Path("tree/sub"), 0700).ok());
  ASSERT_TRUE(fs_.WriteFile(Path("tree/sub/f"), "x", 0600).ok());
  ASSERT_TRUE(fs_.Symlink(Path("outside"), Path("tree/link")).ok());
  ASSERT_TRUE(fs_.RemoveAll(Path("tree")).ok());
  EXPECT_FALSE(fs_.Exists(Path("tree")));
  EXPECT_EQ(*fs_.ReadFile(Path("outside/keep")), "k");
  EXPECT_TRUE(fs_.RemoveAll(Path("tree")).ok());
}

// Remove deletes files and empty directories, and reports NotFound.
TEST_F(PosixFilesystemTest, RemoveDeletesFilesAndEmptyDirectories) {
  ASSERT_TRUE(fs_.WriteFile(Path("f"), "x", 0600).ok());
  ASSERT_TRUE(fs_.CreateDir(Path("d"), 0700).ok());
  EXPECT_TRUE(fs_.Remove(Path("f")).ok());
  EXPECT_TRUE(fs_.Remove(Path("d")).ok());
  EXPECT_TRUE(absl::IsNotFound(fs_.Remove(Path("f"))));
}

// Symlink/ReadLink round trip; ReadFile follows; Exists does not follow a dangling link.
TEST_F(PosixFilesystemTest, SymlinkAndReadLink) {
  ASSERT_TRUE(fs_.CreateDir(Path("..2024"), 0755).ok());
  ASSERT_TRUE(fs_.WriteFile(Path("..2024/tls.crt"), "cert", 0644).ok());
  ASSERT_TRUE(fs_.Symlink("..2024", Path("..data")).ok());
  EXPECT_EQ(*fs_.ReadLink(Path("..data")), "..2024");
  EXPECT_EQ(*fs_.ReadFile(Path("..data/tls.crt")), "cert");
  EXPECT_TRUE(absl::IsInvalidArgument(fs_.ReadLink(Path("..2024")).status()));
  EXPECT_TRUE(absl::IsNotFound(fs_.ReadLink(Path("missing")).status()));
  EXPECT_TRUE(absl::IsAlreadyExists(fs_.Symlink("x", Path("..data"))));
  ASSERT_TRUE(fs_.Symlink("nowhere", Path("dangling")).ok());
  EXPECT_TRUE(fs_.Exists(Path("dangling")));
  EXPECT_TRUE(absl::IsNotFound(fs_.ReadFile(Path("dangling")).status()));
}

// Rename replaces the destination atomically and a failure names both paths.
TEST_F(PosixFilesystemTest, RenameReplacesAndNamesPathsOnFailure) {
  ASSERT_TRUE(fs_.WriteFile(Path("a"), "A", 0600).ok());
  ASSERT_TRUE(fs_.WriteFile(Path("b"), "B", 0600).ok());
  ASSERT_TRUE(fs_.Rename(Path("a"), Path("b")).ok());
  EXPECT_EQ(*fs_.ReadFile(Path("b")), "A");
  EXPECT_FALSE(fs_.Exists(Path("a")));
  absl::Status status = fs_.Rename(Path("a"), Path("c"));
  EXPECT_TRUE(absl::IsNotFound(status));
  EXPECT_THAT(status.message(), HasSubstr(Path("a")));
  EXPECT_THAT(status.message(), HasSubstr(Path("c")));
  EXPECT_TRUE(fs_.SyncDir(dir_).ok());
  EXPECT_TRUE(absl::IsNotFound(fs_.SyncDir(Path("missing"))));
}

// ConfinedFilesystem works below its root like PosixFilesystem, and its root may itself be
// reached through a symlink (the operator chose it).
TEST_F(PosixFilesystemTest, ConfinedFilesystemWorksBelowItsRoot) {
  ASSERT_TRUE(fs_.CreateDir(Path("out"), 0755).ok());
  ASSERT_TRUE(fs_.Symlink(Path("out"), Path("out-link")).ok());
  std::unique_ptr<Filesystem> confined = fs_.ConfinedTo(Path("out-link"));
  ASSERT_NE(confined, nullptr);
  const std::string base = Path("out-link");
  ASSERT_TRUE(confined->CreateDir(base + "/web", 0750).ok());
  EXPECT_TRUE(confined->CreateDir(base + "/web", 0750).ok());
  EXPECT_EQ(confined->Stat(base + "/web")->mode, 0750u);
  ASSERT_TRUE(confined->CreateDir(base + "/web/..v1", 0755).ok());
  ASSERT_TRUE(confined->WriteFile(base + "/web/..v1/tls.key", "key", 0600).ok());
  EXPECT_EQ(*confined->ReadFile(base + "/web/..v1/tls.key"), "key");
  EXPECT_EQ(StatOf(Path("out/web/..v1/tls.key")).st_mode & 07777, 0600u);
  ASSERT_TRUE(confined->Symlink("..v1", base + "/web/..tmp").ok());
  ASSERT_TRUE(confined->Rename(base + "/web/..tmp", base + "/web/..data").ok());
  EXPECT_EQ(*confined->ReadLink(base + "/web/..data"), "..v1");
  EXPECT_THAT(*confined->ListDir(base + "/web"), ElementsAre("..data", "..v1"));
  EXPECT_THAT(*confined->ListDir(base), ElementsAre("web"));
  EXPECT_TRUE(confined->SyncDir(base).ok());
  EXPECT_TRUE(confined->SyncDir(base + "/web").ok());
  EXPECT_TRUE(confined->Exists(base + "/web/..data"));
  EXPECT_EQ(confined->Stat(base + "/web/..data")->type, FileInfo::Type::kSymlink);
  EXPECT_TRUE(confined->Chmod(base + "/web", 0700).ok());
  EXPECT_TRUE(absl::IsNotFound(confined->ReadFile(base + "/web/missing").status()));
  EXPECT_TRUE(confined->Remove(base + "/web/..data").ok());
  EXPECT_TRUE(confined->RemoveAll(base + "/web").ok());
  EXPECT_FALSE(fs_.Exists(Path("out/web")));
  EXPECT_TRUE(confined->RemoveAll(base + "/web").ok());
}

// No operation of ConfinedFilesystem follows a symlink below its root, in the middle of a path
// or at its end: each is refused with FailedPrecondition naming the link, and nothing happens
// where the link points. Paths outside the root or with ".." are InvalidArgument.
TEST_F(PosixFilesystemTest, ConfinedFilesystemNeverFollowsASymlinkBelowItsRoot) {
  ASSERT_TRUE(fs_.CreateDir(Path("out"), 0755).ok());
  ASSERT_TRUE(fs_.CreateDir(Path("elsewhere"), 0755).ok());
  ASSERT_TRUE(fs_.CreateDir(Path("elsewhere/sub"), 0755).ok());
  ASSERT_TRUE(fs_.WriteFile(Path("elsewhere/f"), "theirs", 0644).ok());
  ASSERT_TRUE(fs_.Symlink(Path("elsewhere"), Path("out/web")).ok());
  ASSERT_TRUE(fs_.Symlink(Path("elsewhere/f"), Path("out/file-link")).ok());
  std::unique_ptr<Filesystem> confined = fs_.ConfinedTo(Path("out"));
  const std::string web = Path("out/web");
  auto refused = [&](const absl::Status& status, const std::string& what) {
    EXPECT_TRUE(absl::IsFailedPrecondition(status)) << what << ": " << status;
    EXPECT_THAT(status.message(), HasSubstr("symlink")) << what;
  };
  refused(confined->WriteFile(web + "/tls.key", "key", 0600), "WriteFile");
  refused(confined->ReadFile(web + "/f").status(), "ReadFile through a directory link");
  refused(confined->ReadFile(Path("out/file-link")).status(), "ReadFile of a final link");
  refused(confined->CreateDir(web + "/..v1", 0755), "CreateDir");
  refused(confined->CreateDir(web, 0755), "CreateDir of the link itself");
  refused(confined->Symlink("..v1", web + "/..data"), "Symlink");
  refused(confined->Rename(web + "/f", Path("out/g")), "Rename from");
  refused(confined->SyncDir(web), "SyncDir");
  refused(confined->ListDir(web).status(), "ListDir");
  refused(confined->Chmod(web, 0700), "Chmod");
  refused(confined->Stat(web + "/f").status(), "Stat below");
  EXPECT_FALSE(confined->Exists(web + "/f"));
  EXPECT_EQ(confined->Stat(web)->type, FileInfo::Type::kSymlink);  // lstat of the link is fine
  EXPECT_THAT(*fs_.ListDir(Path("elsewhere")), ElementsAre("f", "sub"));
  EXPECT_EQ(*fs_.ReadFile(Path("elsewhere/f")), "theirs");
  EXPECT_EQ(StatOf(Path("elsewhere")).st_mode & 07777, 0755u);
  // RemoveAll removes the link, never what it points at.
  EXPECT_TRUE(confined->RemoveAll(web).ok());
  EXPECT_FALSE(fs_.Exists(web));
  EXPECT_EQ(*fs_.ReadFile(Path("elsewhere/f")), "theirs");
  // Outside the root.
  EXPECT_TRUE(absl::IsInvalidArgument(confined->WriteFile(Path("outside"), "x", 0600)));
  EXPECT_TRUE(absl::IsInvalidArgument(confined->WriteFile(Path("out-other/x"), "x", 0600)));
  EXPECT_TRUE(absl::IsInvalidArgument(confined->WriteFile(Path("out/../x"), "x", 0600)));
  EXPECT_FALSE(fs_.Exists(Path("x")));
}

// errno values map to the most specific code; the message names operation and path.
TEST(ErrnoToStatusTest, MapsCodesAndNamesOperationAndPath) {
  EXPECT_TRUE(absl::IsNotFound(ErrnoToStatus(ENOENT, "open", "/x")));
  EXPECT_TRUE(absl::IsPermissionDenied(ErrnoToStatus(EACCES, "open", "/x")));
  EXPECT_TRUE(absl::IsPermissionDenied(ErrnoToStatus(EPERM, "open", "/x")));
  EXPECT_TRUE(absl::IsAlreadyExists(ErrnoToStatus(EEXIST, "open", "/x")));
  EXPECT_TRUE(absl::IsResourceExhausted(ErrnoToStatus(ENOSPC, "write", "/x")));
  EXPECT_TRUE(absl::IsResourceExhausted(ErrnoToStatus(EDQUOT, "write", "/x")));
  EXPECT_TRUE(absl::IsFailedPrecondition(ErrnoToStatus(EROFS, "open", "/x")));
  EXPECT_TRUE(absl::IsInternal(ErrnoToStatus(EIO, "fsync", "/x")));
  EXPECT_EQ(ErrnoToStatus(ENOENT, "open", "/x/y").message(),
            "open /x/y: No such file or directory");
}

// Dirname and JoinPath handle roots, bare names and slashes.
TEST(PathTest, DirnameAndJoinPath) {
  EXPECT_EQ(Dirname("/a/b"), "/a");
  EXPECT_EQ(Dirname("/a"), "/");
  EXPECT_EQ(Dirname("a"), ".");
  EXPECT_EQ(Dirname("a/b"), "a");
  EXPECT_EQ(Dirname("/a//b"), "/a");
  EXPECT_EQ(JoinPath("/a", "b"), "/a/b");
  EXPECT_EQ(JoinPath("/a/", "b"), "/a/b");
  EXPECT_EQ(JoinPath("/a", "/b"), "/a/b");
  EXPECT_EQ(JoinPath("", "b"), "b");
}

// ---- FakeFilesystem: its crash model is what the crash-safety tests rely on. ----

class FakeFilesystemTest : public ::testing::Test {
 protected:
  void SetUp() override { fs_.AddFile("/d/f", "old", 0600); }
  FakeFilesystem fs_;
};

// A rename that was never made durable with SyncDir is undone by a crash.
TEST_F(FakeFilesystemTest, RenameWithoutSyncDirIsLostOnCrash) {
  ASSERT_TRUE(fs_.WriteFile("/d/tmp", "new", 0600).ok());
  ASSERT_TRUE(fs_.Rename("/d/tmp", "/d/f").ok());
  EXPECT_EQ(*fs_.ReadFile("/d/f"), "new");
  fs_.Crash();
  EXPECT_EQ(*fs_.ReadFile("/d/f"), "old");
  EXPECT_FALSE(fs_.Exists("/d/tmp"));  // its creation was not durable either
}

// After SyncDir of the parent, the rename survives a crash.
TEST_F(FakeFilesystemTest, RenameWithSyncDirSurvivesCrash) {
  ASSERT_TRUE(fs_.WriteFile("/d/tmp", "new", 0600).ok());
  ASSERT_TRUE(fs_.Rename("/d/tmp", "/d/f").ok());
  ASSERT_TRUE(fs_.SyncDir("/d").ok());
  fs_.Crash();
  EXPECT_EQ(*fs_.ReadFile("/d/f"), "new");
  EXPECT_EQ(fs_.Mode("/d/f"), 0600u);
  EXPECT_FALSE(fs_.Exists("/d/tmp"));
}

// Syncing another directory does not make this one's entries durable.
TEST_F(FakeFilesystemTest, SyncOfOtherDirectoryDoesNotHelp) {
  fs_.AddDir("/e");
  ASSERT_TRUE(fs_.WriteFile("/d/g", "g", 0600).ok());
  ASSERT_TRUE(fs_.SyncDir("/e").ok());
  fs_.Crash();
  EXPECT_FALSE(fs_.Exists("/d/g"));
}

// Contents written in place are durable once WriteFile returns (it fsyncs).
TEST_F(FakeFilesystemTest, InPlaceWriteIsDurableWithoutSyncDir) {
  ASSERT_TRUE(fs_.WriteFile("/d/f", "rewritten", 0600).ok());
  fs_.Crash();
  EXPECT_EQ(*fs_.ReadFile("/d/f"), "rewritten");
}

// A removal is undone by a crash unless the directory was synced.
TEST_F(FakeFilesystemTest, RemovalNeedsSyncDir) {
  ASSERT_TRUE(fs_.Remove("/d/f").ok());
  fs_.Crash();
  EXPECT_TRUE(fs_.Exists("/d/f"));
  ASSERT_TRUE(fs_.Remove("/d/f").ok());
  ASSERT_TRUE(fs_.SyncDir("/d").ok());
  fs_.Crash();
  EXPECT_FALSE(fs_.Exists("/d/f"));
}

// A new directory's files survive only when the directory's own entry was synced too.
TEST_F(FakeFilesystemTest, NewDirectoryNeedsItsParentSynced) {
  ASSERT_TRUE(fs_.CreateDir("/d/sub", 0700).ok());
  ASSERT_TRUE(fs_.WriteFile("/d/sub/f", "x", 0600).ok());
  ASSERT_TRUE(fs_.SyncDir("/d/sub").ok());
  fs_.Crash();
  EXPECT_FALSE(fs_.Exists("/d/sub"));

  ASSERT_TRUE(fs_.CreateDir("/d/sub", 0700).ok());
  ASSERT_TRUE(fs_.WriteFile("/d/sub/f", "x", 0600).ok());
  ASSERT_TRUE(fs_.SyncDir("/d/sub").ok());
  ASSERT_TRUE(fs_.SyncDir("/d").ok());
  fs_.Crash();
  EXPECT_EQ(*fs_.ReadFile("/d/sub/f"), "x");
  EXPECT_EQ(fs_.ModeOf("/d/sub"), "0700");
}

// CrashAfterOps(n) lets n mutating calls through, then every call fails and changes nothing.
TEST_F(FakeFilesystemTest, CrashAfterOpsStopsLaterMutations) {
  const int before = fs_.mutating_ops();
  fs_.CrashAfterOps(1);
  EXPECT_TRUE(fs_.WriteFile("/d/a", "a", 0600).ok());
  absl::Status status = fs_.WriteFile("/d/b", "b", 0600);
  EXPECT_TRUE(absl::IsUnavailable(status)) << status;
  EXPECT_THAT(std::string(status.message()), StartsWith("simulated crash"));
  EXPECT_TRUE(absl::IsUnavailable(fs_.SyncDir("/d")));
  EXPECT_TRUE(absl::IsUnavailable(fs_.Rename("/d/a", "/d/c")));
  EXPECT_FALSE(fs_.Exists("/d/b"));
  EXPECT_TRUE(fs_.Exists("/d/a"));
  EXPECT_EQ(fs_.mutating_ops() - before, 4);
  fs_.Crash();
  EXPECT_FALSE(fs_.Exists("/d/a"));                    // never synced
  EXPECT_TRUE(fs_.WriteFile("/d/b", "b", 0600).ok());  // crash injection was reset
}

// FailNextWrite fails once; with partial_bytes it leaves a truncated file behind.
TEST_F(FakeFilesystemTest, FailNextWriteIsOneShotAndCanLeavePartialFile) {
  fs_.FailNextWrite(absl::ResourceExhaustedError("disk full"));
  EXPECT_TRUE(absl::IsResourceExhausted(fs_.WriteFile("/d/a", "abcdef", 0600)));
  EXPECT_FALSE(fs_.Exists("/d/a"));
  EXPECT_TRUE(fs_.WriteFile("/d/a", "abcdef", 0600).ok());

  fs_.FailNextWrite(absl::ResourceExhaustedError("disk full"), /*partial_bytes=*/2);
  EXPECT_FALSE(fs_.WriteFile("/d/f", "abcdef", 0600).ok());
  EXPECT_EQ(*fs_.ReadFile("/d/f"), "ab");
}

// FailNextRename and FailNextSyncDir fail once and change nothing.
TEST_F(FakeFilesystemTest, FailNextRenameAndSyncDirAreOneShot) {
  ASSERT_TRUE(fs_.WriteFile("/d/tmp", "new", 0600).ok());
  fs_.FailNextRename(absl::InternalError("EIO"));
  EXPECT_TRUE(absl::IsInternal(fs_.Rename("/d/tmp", "/d/f")));
  EXPECT_EQ(*fs_.ReadFile("/d/f"), "old");
  ASSERT_TRUE(fs_.Rename("/d/tmp", "/d/f").ok());
  fs_.FailNextSyncDir(absl::InternalError("EIO"));
  EXPECT_TRUE(absl::IsInternal(fs_.SyncDir("/d")));
  fs_.Crash();
  EXPECT_EQ(*fs_.ReadFile("/d/f"), "old");
}

// Errors carry the same codes and messages as PosixFilesystem's.
TEST_F(FakeFilesystemTest, ErrorsMatchPosix) {
  auto read = fs_.ReadFile("/d/missing");
  EXPECT_TRUE(absl::IsNotFound(read.status()));
  EXPECT_EQ(read.status().message(), "open /d/missing: No such file or directory");
  EXPECT_TRUE(absl::IsNotFound(fs_.WriteFile("/nodir/f", "x", 0600)));
  EXPECT_TRUE(absl::IsNotFound(fs_.Remove("/d/missing")));
  EXPECT_TRUE(absl::IsNotFound(fs_.ListDir("/missing").status()));
  EXPECT_TRUE(fs_.RemoveAll("/missing/deeper").ok());
  EXPECT_TRUE(absl::IsAlreadyExists(fs_.CreateDir("/d/f", 0700)));
  EXPECT_TRUE(fs_.CreateDir("/d", 0700).ok());
  EXPECT_EQ(fs_.ModeOf("/d"), "0755");  // left alone
  EXPECT_FALSE(fs_.Remove("/d").ok());  // not empty
}

// Symlinks: ReadLink returns the target; ReadFile follows relative links and directory links.
TEST_F(FakeFilesystemTest, SymlinksAreFollowedByReadFile) {
  fs_.AddFile("/vol/..2024/tls.crt", "cert");
  ASSERT_TRUE(fs_.Symlink("..2024", "/vol/..data").ok());
  ASSERT_TRUE(fs_.Symlink("..data/tls.crt", "/vol/tls.crt").ok());
  EXPECT_EQ(*fs_.ReadLink("/vol/..data"), "..2024");
  EXPECT_EQ(*fs_.ReadFile("/vol/tls.crt"), "cert");
  EXPECT_EQ(*fs_.ReadFile("/vol/..data/tls.crt"), "cert");
  EXPECT_THAT(*fs_.ListDir("/vol/..data"), ElementsAre("tls.crt"));
  EXPECT_TRUE(absl::IsInvalidArgument(fs_.ReadLink("/vol/..2024").status()));
  EXPECT_FALSE(fs_.WriteFile("/vol/tls.crt", "x", 0600).ok());  // O_NOFOLLOW
  ASSERT_TRUE(fs_.Symlink("/vol/nowhere", "/vol/dangling").ok());
  EXPECT_TRUE(fs_.Exists("/vol/dangling"));
  EXPECT_TRUE(absl::IsNotFound(fs_.ReadFile("/vol/dangling").status()));
  // An atomic symlink swap, made durable.
  fs_.AddFile("/vol/..2025/tls.crt", "cert2");
  ASSERT_TRUE(fs_.Symlink("..2025", "/vol/..data_tmp").ok());
  ASSERT_TRUE(fs_.Rename("/vol/..data_tmp", "/vol/..data").ok());
  ASSERT_TRUE(fs_.SyncDir("/vol").ok());
  fs_.Crash();
  EXPECT_EQ(*fs_.ReadFile("/vol/tls.crt"), "cert2");
}

// WriteFileAtomically on the fake: a crash right after it returns keeps the new bytes, and
// nothing but the file is left.
TEST_F(FakeFilesystemTest, WriteFileAtomicallyIsDurableOnReturn) {
  ASSERT_TRUE(WriteFileAtomically(fs_, "/d/f", "new", 0600).ok());
  fs_.Crash();
  EXPECT_EQ(*fs_.ReadFile("/d/f"), "new");
  EXPECT_THAT(fs_.AllPaths(), ElementsAre("/d", "/d/f"));
}

}  // namespace
}  // namespace certcast
