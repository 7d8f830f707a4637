#include "client/file_sink.h"

#include <sched.h>
#include <sys/stat.h>

#include <atomic>
#include <cctype>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/filesystem.h"
#include "common/forwarding_filesystem.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/fixtures/fake_filesystem.h"

namespace certcast {
namespace {

using ::certcast::fixtures::FakeFilesystem;
using ::certcast::fixtures::MakeChain;
using ::certcast::fixtures::TempDir;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::SizeIs;

constexpr char kName[] = "web";

VersionedMaterial Version(uint64_t number, const CertificateMaterial& material) {
  VersionedMaterial v;
  v.name = kName;
  v.version = number;
  v.fingerprint = LeafFingerprint(material.chain_pem).value();
  v.material = material;
  return v;
}

CertificateMaterial WithoutCa(CertificateMaterial material) {
  material.ca_pem.clear();
  return material;
}

// Entries of `dir` that are version directories (`..` followed by a digit).
std::vector<std::string> VersionDirs(Filesystem& fs, const std::string& dir) {
  std::vector<std::string> dirs;
  absl::StatusOr<std::vector<std::string>> entries = fs.ListDir(dir);
  EXPECT_TRUE(entries.ok()) << entries.status();
  if (!entries.ok()) return dirs;
  for (const std::string& entry : *entries) {
    if (entry.size() > 2 && entry[0] == '.' && entry[1] == '.' &&
        std::isdigit(static_cast<unsigned char>(entry[2]))) {
      dirs.push_back(entry);
    }
  }
  return dirs;
}

struct stat Lstat(const std::string& path) {
  struct stat st = {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st;
}

struct stat Stat(const std::string& path) {
  struct stat st = {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st;
}

// A FileSink on the real filesystem in a fresh temporary directory, with a fake clock.
class FileSinkTest : public ::testing::Test {
 protected:
  FileSink MakeSink(bool combined_pem = false) {
    return FileSink(&fs_, &clock_, {tmp_.Join("out"), combined_pem});
  }
  std::string Dir() const { return tmp_.Join("out/web"); }
  std::string Path(const std::string& name) const { return Dir() + "/" + name; }

  TempDir tmp_;
  PosixFilesystem fs_;
  FakeClock clock_;
  fixtures::Chain chain1_ = MakeChain();
  fixtures::Chain chain2_ = MakeChain();
};

// The directory holds exactly kubelet's layout: a timestamped version dir with the right modes,
// `..data` pointing at it, top-level links through `..data`, and one version after a rotation.
TEST_F(FileSinkTest, WritesKubeletLayoutWithModesAndLinks) {
  FileSink sink = MakeSink();
  ASSERT_EQ(sink.Apply(Version(1, chain1_.material)).value(), ApplyResult::kWritten);

  const std::string version = fs_.ReadLink(Path("..data")).value();
  EXPECT_EQ(version, "..2027_01_15_08_00_00.000000000");  // FakeClock's start, in UTC
  EXPECT_THAT(fs_.ListDir(Dir()).value(), ElementsAre("..2027_01_15_08_00_00.000000000", "..data",
                                                      "ca.crt", "tls.crt", "tls.key"));
  EXPECT_THAT(fs_.ListDir(Path(version)).value(), ElementsAre("ca.crt", "tls.crt", "tls.key"));
  EXPECT_EQ(Lstat(Path(version + "/tls.crt")).st_mode & 07777, 0644u);
  EXPECT_EQ(Lstat(Path(version + "/tls.key")).st_mode & 07777, 0600u);
  EXPECT_EQ(Lstat(Path(version + "/ca.crt")).st_mode & 07777, 0644u);
  for (const char* file : {"tls.crt", "tls.key", "ca.crt"}) {
    EXPECT_TRUE(S_ISLNK(Lstat(Path(file)).st_mode)) << file;
    EXPECT_EQ(fs_.ReadLink(Path(file)).value(), std::string("..data/") + file);
  }
  EXPECT_EQ(fs_.ReadFile(Path("tls.crt")).value(), chain1_.material.chain_pem);
  EXPECT_EQ(fs_.ReadFile(Path("tls.key")).value(), chain1_.material.key_pem.reveal());
  EXPECT_EQ(fs_.ReadFile(Path("ca.crt")).value(), chain1_.material.ca_pem);

  clock_.Advance(absl::Milliseconds(1500));
  ASSERT_EQ(sink.Apply(Version(2, chain2_.material)).value(), ApplyResult::kWritten);
  const std::string second = fs_.ReadLink(Path("..data")).value();
  EXPECT_EQ(second, "..2027_01_15_08_00_01.500000000");
  EXPECT_THAT(VersionDirs(fs_, Dir()), ElementsAre(second));
  EXPECT_THAT(fs_.ListDir(Dir()).value(), SizeIs(5));
  EXPECT_EQ(fs_.ReadFile(Path("tls.key")).value(), chain2_.material.key_pem.reveal());
}

// Applying identical content writes nothing: same `..data` target, same file inode.
TEST_F(FileSinkTest, IdenticalContentIsUnchangedAndNotRewritten) {
  FileSink sink = MakeSink();
  ASSERT_EQ(sink.Apply(Version(1, chain1_.material)).value(), ApplyResult::kWritten);
  const std::string version = fs_.ReadLink(Path("..data")).value();
  const ino_t inode = Stat(Path("tls.crt")).st_ino;

  clock_.Advance(absl::Seconds(5));
  EXPECT_EQ(sink.Apply(Version(2, chain1_.material)).value(), ApplyResult::kUnchanged);
  EXPECT_EQ(fs_.ReadLink(Path("..data")).value(), version);
  EXPECT_EQ(Stat(Path("tls.crt")).st_ino, inode);
  // A new sink (a restarted client) sees the same.
  FileSink restarted = MakeSink();
  EXPECT_EQ(restarted.Apply(Version(2, chain1_.material)).value(), ApplyResult::kUnchanged);
  EXPECT_EQ(Stat(Path("tls.crt")).st_ino, inode);
}

// ca.crt (file and top-level link) exists exactly when the material has a CA.
TEST_F(FileSinkTest, CaFileFollowsTheMaterial) {
  FileSink sink = MakeSink();
  ASSERT_TRUE(sink.Apply(Version(1, WithoutCa(chain1_.material))).ok());
  EXPECT_FALSE(fs_.Exists(Path("ca.crt")));
  EXPECT_FALSE(fs_.Exists(Path("..data/ca.crt")));

  clock_.Advance(absl::Seconds(1));
  ASSERT_EQ(sink.Apply(Version(2, chain1_.material)).value(), ApplyResult::kWritten);
  EXPECT_EQ(fs_.ReadFile(Path("ca.crt")).value(), chain1_.material.ca_pem);

  clock_.Advance(absl::Seconds(1));
  ASSERT_EQ(sink.Apply(Version(3, WithoutCa(chain1_.material))).value(), ApplyResult::kWritten);
  EXPECT_FALSE(fs_.Exists(Path("ca.crt")));
  EXPECT_FALSE(fs_.Exists(Path("..data/ca.crt")));
  EXPECT_EQ(sink.Read(kName).value(), WithoutCa(chain1_.material));
}

// With combined_pem, tls.pem holds key then chain, 0600, linked at the top level; turning the
// option off removes it even though the certificate did not change.
TEST_F(FileSinkTest, CombinedPemHoldsKeyThenChain) {
  FileSink sink = MakeSink(/*combined_pem=*/true);
  ASSERT_EQ(sink.Apply(Version(1, chain1_.material)).value(), ApplyResult::kWritten);
  EXPECT_EQ(fs_.ReadFile(Path("tls.pem")).value(),
            std::string(chain1_.material.key_pem.reveal()) + chain1_.material.chain_pem);
  EXPECT_EQ(fs_.ReadLink(Path("tls.pem")).value(), "..data/tls.pem");
  EXPECT_EQ(Stat(Path("tls.pem")).st_mode & 07777, 0600u);

  clock_.Advance(absl::Seconds(1));
  FileSink plain = MakeSink(/*combined_pem=*/false);
  EXPECT_EQ(plain.Apply(Version(1, chain1_.material)).value(), ApplyResult::kWritten);
  EXPECT_FALSE(fs_.Exists(Path("tls.pem")));
  EXPECT_FALSE(fs_.Exists(Path("..data/tls.pem")));
}

// Read returns exactly what Apply wrote; HeldFingerprint is the leaf's fingerprint.
TEST_F(FileSinkTest, ReadReturnsWhatWasApplied) {
  FileSink sink = MakeSink();
  ASSERT_TRUE(sink.Apply(Version(1, chain1_.material)).ok());
  EXPECT_EQ(sink.Read(kName).value(), chain1_.material);
  EXPECT_EQ(sink.HeldFingerprint(kName).value(), chain1_.leaf.fingerprint);
  EXPECT_EQ(sink.LocationOf(kName), Dir());
}

// Before anything was written, the sink holds nothing: NotFound, not some other error.
TEST_F(FileSinkTest, HeldFingerprintIsNotFoundBeforeFirstApply) {
  FileSink sink = MakeSink();
  EXPECT_EQ(sink.HeldFingerprint(kName).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(sink.Read(kName).status().code(), absl::StatusCode::kNotFound);
}

// A certificate name cannot make the sink write outside the output directory.
TEST_F(FileSinkTest, RejectsNamesThatAreNotADirectoryName) {
  FileSink sink = MakeSink();
  for (const char* name : {"", ".", "..", "../evil", "a/b"}) {
    VersionedMaterial v = Version(1, chain1_.material);
    v.name = name;
    EXPECT_EQ(sink.Apply(v).status().code(), absl::StatusCode::kInvalidArgument) << name;
  }
  EXPECT_FALSE(fs_.Exists(tmp_.Join("evil")));
}

// Issue 10 item 9: OUT/NAME planted as a symlink to another directory is refused with a reason,
// and nothing (in particular no key) is written where it points.
TEST_F(FileSinkTest, RefusesSymlinkedCertificateDirectory) {
  ASSERT_TRUE(fs_.CreateDir(tmp_.Join("elsewhere"), 0777).ok());
  ASSERT_TRUE(fs_.CreateDir(tmp_.Join("out"), 0755).ok());
  ASSERT_TRUE(fs_.Symlink(tmp_.Join("elsewhere"), Dir()).ok());
  FileSink sink = MakeSink();
  absl::StatusOr<ApplyResult> result = sink.Apply(Version(1, chain1_.material));
  ASSERT_TRUE(absl::IsFailedPrecondition(result.status())) << result.status();
  EXPECT_THAT(result.status().message(), HasSubstr("is a symlink"));
  EXPECT_THAT(result.status().message(), HasSubstr(Dir()));
  EXPECT_THAT(fs_.ListDir(tmp_.Join("elsewhere")).value(), SizeIs(0));
  EXPECT_TRUE(absl::IsFailedPrecondition(sink.Read(kName).status()));
}

// Forwards to `base`, and once, right after the first lstat of `watched` (the sink's check of
// OUT/NAME), replaces that directory with a symlink to `target`: an attacker who can write OUT
// racing the check. Its ConfinedTo view does the same, so the race is run whichever the sink uses.
class PlantingFilesystem final : public ForwardingFilesystem {
 public:
  PlantingFilesystem(Filesystem* base, std::string watched, std::string target)
      : PlantingFilesystem(base, nullptr, std::move(watched), std::move(target),
                           std::make_shared<bool>(false)) {}

  absl::StatusOr<FileInfo> Stat(const std::string& p) override {
    absl::StatusOr<FileInfo> info = ForwardingFilesystem::Stat(p);
    if (p == watched_ && !*planted_) {
      *planted_ = true;
      // Whatever the check saw, NAME is now a symlink (a directory is moved aside first).
      if (info.ok()) {
        EXPECT_EQ(::rename(p.c_str(), (p + ".moved").c_str()), 0);
      }
      EXPECT_EQ(::symlink(target_.c_str(), p.c_str()), 0);
    }
    return info;
  }
  std::unique_ptr<Filesystem> ConfinedTo(const std::string& root) override {
    std::unique_ptr<Filesystem> confined = base()->ConfinedTo(root);
    if (confined == nullptr) return nullptr;
    Filesystem* view = confined.get();
    return std::unique_ptr<Filesystem>(
        new PlantingFilesystem(view, std::move(confined), watched_, target_, planted_));
  }

 private:
  PlantingFilesystem(Filesystem* base, std::unique_ptr<Filesystem> owned, std::string watched,
                     std::string target, std::shared_ptr<bool> planted)
      : ForwardingFilesystem(base),
        owned_(std::move(owned)),
        watched_(std::move(watched)),
        target_(std::move(target)),
        planted_(std::move(planted)) {}

  const std::unique_ptr<Filesystem> owned_;  // the confined view base() points at, if any
  const std::string watched_;
  const std::string target_;
  const std::shared_ptr<bool> planted_;
};

// Issue 10 item 9, the race: OUT/NAME swapped for a symlink right after the sink checked it
// (first when NAME does not exist yet, then when it is the sink's own directory). The writes
// that follow do not go through the link: the Apply fails with FailedPrecondition naming the
// symlink, and the directory it points at stays empty. (With checks by path and writes by path,
// the key was written into the other directory.)
TEST_F(FileSinkTest, SymlinkSwappedInAfterTheCheckIsNotFollowed) {
  ASSERT_TRUE(fs_.CreateDir(tmp_.Join("elsewhere"), 0777).ok());
  ASSERT_TRUE(fs_.CreateDir(tmp_.Join("out"), 0755).ok());
  {
    PlantingFilesystem racing(&fs_, Dir(), tmp_.Join("elsewhere"));
    FileSink sink(&racing, &clock_, {tmp_.Join("out"), false});
    absl::StatusOr<ApplyResult> result = sink.Apply(Version(1, chain1_.material));
    ASSERT_TRUE(absl::IsFailedPrecondition(result.status())) << result.status();
    EXPECT_THAT(result.status().message(), HasSubstr("symlink"));
    EXPECT_THAT(fs_.ListDir(tmp_.Join("elsewhere")).value(), SizeIs(0));
  }
  ASSERT_TRUE(fs_.Remove(Dir()).ok());
  {
    FileSink sink = MakeSink();
    ASSERT_TRUE(sink.Apply(Version(1, chain1_.material)).ok());
  }
  PlantingFilesystem racing(&fs_, Dir(), tmp_.Join("elsewhere"));
  FileSink sink(&racing, &clock_, {tmp_.Join("out"), false});
  absl::StatusOr<ApplyResult> result = sink.Apply(Version(2, chain2_.material));
  ASSERT_TRUE(absl::IsFailedPrecondition(result.status())) << result.status();
  EXPECT_THAT(result.status().message(), HasSubstr("symlink"));
  EXPECT_THAT(fs_.ListDir(tmp_.Join("elsewhere")).value(), SizeIs(0));
}

// Plants a version directory as a symlink to `target` (holding a copy of `material`) and points
// `..data` at it, as someone who could write into OUT/NAME might.
void PlantVersion(Filesystem& fs, const std::string& dir, const std::string& target,
                  const std::string& data_target, const CertificateMaterial& material) {
  ASSERT_TRUE(fs.CreateDir(target, 0755).ok());
  ASSERT_TRUE(fs.WriteFile(target + "/tls.crt", material.chain_pem, 0644).ok());
  ASSERT_TRUE(fs.WriteFile(target + "/tls.key", material.key_pem.reveal(), 0600).ok());
  ASSERT_TRUE(fs.WriteFile(target + "/ca.crt", material.ca_pem, 0644).ok());
  ASSERT_TRUE(fs.CreateDir(dir, 0755).ok());
  ASSERT_TRUE(fs.Symlink(target, dir + "/..2020_01_01_00_00_00.000000000").ok());
  ASSERT_TRUE(fs.Symlink(data_target, dir + "/..data").ok());
}

// Issue 10 item 9: a version directory that is a symlink (to a directory someone else controls,
// holding the very same pair) is refused, not adopted as the current version.
TEST_F(FileSinkTest, RefusesSymlinkedVersionDirectory) {
  ASSERT_TRUE(fs_.CreateDir(tmp_.Join("out"), 0755).ok());
  PlantVersion(fs_, Dir(), tmp_.Join("elsewhere"), "..2020_01_01_00_00_00.000000000",
               chain1_.material);
  FileSink sink = MakeSink();
  absl::StatusOr<ApplyResult> result = sink.Apply(Version(1, chain1_.material));
  ASSERT_TRUE(absl::IsFailedPrecondition(result.status())) << result.status();
  EXPECT_THAT(result.status().message(), HasSubstr("is a symlink"));
  EXPECT_TRUE(absl::IsFailedPrecondition(sink.Read(kName).status()));
}

// `..data` pointing outside OUT/NAME (an absolute path) is refused as well.
TEST_F(FileSinkTest, RefusesDataLinkPointingOutsideTheDirectory) {
  ASSERT_TRUE(fs_.CreateDir(tmp_.Join("out"), 0755).ok());
  PlantVersion(fs_, Dir(), tmp_.Join("elsewhere"), tmp_.Join("elsewhere"), chain1_.material);
  FileSink sink = MakeSink();
  absl::StatusOr<ApplyResult> result = sink.Apply(Version(1, chain1_.material));
  ASSERT_TRUE(absl::IsFailedPrecondition(result.status())) << result.status();
  EXPECT_THAT(result.status().message(), HasSubstr("not a version directory"));
}

// A reader that resolves `..data` once always gets a matching certificate and key while versions
// are swapped under it.
TEST_F(FileSinkTest, ConcurrentReaderNeverSeesAMismatchedPair) {
  FileSink sink = MakeSink();
  const std::map<std::string, std::string> key_of = {
      {chain1_.material.chain_pem, std::string(chain1_.material.key_pem.reveal())},
      {chain2_.material.chain_pem, std::string(chain2_.material.key_pem.reveal())},
  };
  ASSERT_TRUE(sink.Apply(Version(0, chain1_.material)).ok());

  absl::Mutex mu;
  int pairs_read = 0;               // guarded by mu
  int mismatches = 0;               // guarded by mu
  std::vector<std::string> errors;  // guarded by mu
  std::atomic<bool> stop{false};
  std::thread reader([&] {
    PosixFilesystem fs;
    while (!stop.load()) {
      // The loop never blocks: yield each round so the writer (and whatever else ctest -j2 runs
      // on two cores) is not starved.
      sched_yield();
      absl::StatusOr<std::string> version = fs.ReadLink(Path("..data"));
      absl::StatusOr<std::string> chain, key;
      if (version.ok()) chain = fs.ReadFile(Path(*version + "/tls.crt"));
      if (version.ok() && chain.ok()) key = fs.ReadFile(Path(*version + "/tls.key"));
      absl::MutexLock lock(&mu);
      const absl::Status status = !version.ok() ? version.status()
                                  : !chain.ok() ? chain.status()
                                                : key.status();
      if (absl::IsNotFound(status)) continue;  // the version dir went away after readlink: retry
      if (!status.ok()) {
        errors.push_back(status.ToString());
        continue;
      }
      auto it = key_of.find(*chain);
      if (it == key_of.end() || it->second != *key) ++mismatches;
      ++pairs_read;
    }
  });

  struct Progress {
    const int* pairs_read;
    int target;
  };
  absl::Status apply_status;
  bool reader_kept_up = true;
  for (int i = 1; i <= 100 && apply_status.ok() && reader_kept_up; ++i) {
    clock_.Advance(absl::Milliseconds(1));
    const fixtures::Chain& next = i % 2 == 0 ? chain1_ : chain2_;
    apply_status = sink.Apply(Version(i, next.material)).status();
    // Let the reader complete at least one pair per version, so the test cannot pass vacuously.
    absl::MutexLock lock(&mu);
    Progress progress = {&pairs_read, pairs_read + 1};
    reader_kept_up = mu.AwaitWithTimeout(
        absl::Condition(
            +[](Progress* p) { return *p->pairs_read >= p->target; }, &progress),
        absl::Seconds(10));
  }
  stop = true;
  reader.join();
  ASSERT_TRUE(apply_status.ok()) << apply_status;
  ASSERT_TRUE(reader_kept_up);
  absl::MutexLock lock(&mu);
  EXPECT_EQ(mismatches, 0);
  EXPECT_THAT(errors, SizeIs(0));
  EXPECT_GE(pairs_read, 100);
  EXPECT_THAT(VersionDirs(fs_, Dir()), SizeIs(1));
}

// A FileSink on the in-memory filesystem, for failure injection and crash simulation.
class FileSinkFakeFsTest : public ::testing::Test {
 protected:
  static constexpr char kOut[] = "/out";
  static constexpr char kDir[] = "/out/web";

  FileSinkFakeFsTest() { fs_.AddDir(kOut); }

  FileSink MakeSink(FakeFilesystem& fs) { return FileSink(&fs, &clock_, {kOut, false}); }

  FakeFilesystem fs_;
  FakeClock clock_;
  fixtures::Chain chain1_ = MakeChain();
  fixtures::Chain chain2_ = MakeChain();
};

// A failed write leaves the previous version readable and no half-written version behind; the
// error names the certificate and never carries key bytes.
TEST_F(FileSinkFakeFsTest, FailedWriteKeepsPreviousVersion) {
  FileSink sink = MakeSink(fs_);
  ASSERT_TRUE(sink.Apply(Version(1, chain1_.material)).ok());
  clock_.Advance(absl::Seconds(1));

  fs_.FailNextWrite(absl::ResourceExhaustedError("no space left on device"));
  absl::StatusOr<ApplyResult> result = sink.Apply(Version(2, chain2_.material));
  ASSERT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(result.status().message(), HasSubstr("certificate \"web\""));
  EXPECT_THAT(result.status().message(), HasSubstr(kDir));
  EXPECT_EQ(sink.Read(kName).value(), chain1_.material);
  EXPECT_THAT(VersionDirs(fs_, kDir), SizeIs(1));

  // The same with a write that stopped midway.
  fs_.FailNextWrite(absl::ResourceExhaustedError("no space left on device"), /*partial_bytes=*/10);
  result = sink.Apply(Version(2, chain2_.material));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(sink.Read(kName).value(), chain1_.material);
  EXPECT_THAT(VersionDirs(fs_, kDir), SizeIs(1));
  const std::string key(chain2_.material.key_pem.reveal());
  EXPECT_THAT(std::string(result.status().message()), Not(HasSubstr(key.substr(30, 40))));
  EXPECT_THAT(std::string(result.status().message()), Not(HasSubstr("PRIVATE KEY")));

  // And it recovers on the next try.
  EXPECT_EQ(sink.Apply(Version(2, chain2_.material)).value(), ApplyResult::kWritten);
  EXPECT_EQ(sink.Read(kName).value(), chain2_.material);
  EXPECT_THAT(VersionDirs(fs_, kDir), SizeIs(1));
}

// A failed `..data` rename is rolled back: the old version stays, the new directory goes.
TEST_F(FileSinkFakeFsTest, FailedSwapKeepsPreviousVersion) {
  FileSink sink = MakeSink(fs_);
  ASSERT_TRUE(sink.Apply(Version(1, chain1_.material)).ok());
  fs_.FailNextRename(absl::InternalError("rename failed"));
  EXPECT_FALSE(sink.Apply(Version(2, chain2_.material)).ok());
  EXPECT_EQ(sink.Read(kName).value(), chain1_.material);
  EXPECT_THAT(VersionDirs(fs_, kDir), SizeIs(1));
  EXPECT_FALSE(fs_.Exists("/out/web/..data_tmp"));
}

// Unchanged content costs no mutating filesystem call at all.
TEST_F(FileSinkFakeFsTest, UnchangedApplyMakesNoMutatingCalls) {
  FileSink sink = MakeSink(fs_);
  ASSERT_TRUE(sink.Apply(Version(1, chain1_.material)).ok());
  const int ops = fs_.mutating_ops();
  EXPECT_EQ(sink.Apply(Version(1, chain1_.material)).value(), ApplyResult::kUnchanged);
  EXPECT_EQ(fs_.mutating_ops(), ops);
}

// Leftovers of a crash (a `..data_tmp` link, a stale version dir) are removed by the next Apply.
TEST_F(FileSinkFakeFsTest, RemovesLeftoversOfAnInterruptedApply) {
  FileSink sink = MakeSink(fs_);
  ASSERT_TRUE(sink.Apply(Version(1, chain1_.material)).ok());
  fs_.AddSymlink("..2020_01_01_00_00_00.000000000", "/out/web/..data_tmp");
  fs_.AddFile("/out/web/..2020_01_01_00_00_00.000000000/tls.crt", "partial");

  // Unchanged content: tidied, still unchanged.
  EXPECT_EQ(sink.Apply(Version(1, chain1_.material)).value(), ApplyResult::kUnchanged);
  EXPECT_FALSE(fs_.Exists("/out/web/..data_tmp"));
  EXPECT_THAT(VersionDirs(fs_, kDir), SizeIs(1));

  fs_.AddSymlink("..2020_01_01_00_00_00.000000000", "/out/web/..data_tmp");
  clock_.Advance(absl::Seconds(1));
  EXPECT_EQ(sink.Apply(Version(2, chain2_.material)).value(), ApplyResult::kWritten);
  EXPECT_FALSE(fs_.Exists("/out/web/..data_tmp"));
  EXPECT_THAT(VersionDirs(fs_, kDir), SizeIs(1));
}

// A crash after any number of filesystem operations during a rotation leaves exactly the old or
// exactly the new version readable, and the next Apply completes with one version dir.
TEST_F(FileSinkFakeFsTest, CrashAtAnyPointLeavesOldOrNewVersion) {
  // Count the operations of an uninterrupted rotation first.
  int rotation_ops = 0;
  {
    FakeFilesystem fs;
    fs.AddDir(kOut);
    FileSink sink = MakeSink(fs);
    ASSERT_TRUE(sink.Apply(Version(1, chain1_.material)).ok());
    const int before = fs.mutating_ops();
    ASSERT_TRUE(sink.Apply(Version(2, chain2_.material)).ok());
    rotation_ops = fs.mutating_ops() - before;
  }
  ASSERT_GT(rotation_ops, 10);

  // Both directions of the CA change: v1 has no ca.crt, v2 has one, and the reverse.
  const std::vector<std::pair<CertificateMaterial, CertificateMaterial>> rotations = {
      {WithoutCa(chain1_.material), chain2_.material},
      {chain1_.material, WithoutCa(chain2_.material)},
  };
  for (const auto& [v1, v2] : rotations) {
    int saw_old = 0, saw_new = 0;
    for (int k = 0; k <= rotation_ops; ++k) {
      SCOPED_TRACE(::testing::Message() << "crash after " << k << " operations");
      FakeFilesystem fs;
      fs.AddDir(kOut);
      FileSink sink = MakeSink(fs);
      ASSERT_TRUE(sink.Apply(Version(1, v1)).ok());
      clock_.Advance(absl::Seconds(1));
      fs.CrashAfterOps(k);
      (void)sink.Apply(Version(2, v2));  // may fail: the crash is simulated as errors
      fs.Crash();

      FileSink rebooted = MakeSink(fs);
      absl::StatusOr<CertificateMaterial> held = rebooted.Read(kName);
      ASSERT_TRUE(held.ok()) << held.status();
      ASSERT_TRUE(*held == v1 || *held == v2);
      (*held == v1 ? saw_old : saw_new)++;

      ASSERT_TRUE(rebooted.Apply(Version(2, v2)).ok());
      EXPECT_EQ(rebooted.Read(kName).value(), v2);
      EXPECT_THAT(VersionDirs(fs, kDir), SizeIs(1));
      EXPECT_FALSE(fs.Exists("/out/web/..data_tmp"));
      const bool has_ca = !v2.ca_pem.empty();
      EXPECT_EQ(fs.Exists("/out/web/ca.crt"), has_ca);
      EXPECT_EQ(fs.ReadFile("/out/web/tls.crt").value(), v2.chain_pem);
    }
    // Both outcomes happen, so the loop really crossed the swap.
    EXPECT_GT(saw_old, 0);
    EXPECT_GT(saw_new, 0);
  }
}

// The first Apply into an empty output directory is durable once it returns.
TEST_F(FileSinkFakeFsTest, FirstApplySurvivesACrash) {
  FileSink sink = MakeSink(fs_);
  ASSERT_TRUE(sink.Apply(Version(1, chain1_.material)).ok());
  fs_.Crash();
  EXPECT_EQ(sink.Read(kName).value(), chain1_.material);
  EXPECT_EQ(fs_.ModeOf("/out/web/..data/tls.key"), "0600");
}

// OUT/NAME of ours that others can write to is tightened (go-w) before a key goes into it.
TEST_F(FileSinkFakeFsTest, TightensCertificateDirectoryOthersCanWrite) {
  fs_.AddDir(kDir, 0777);
  FileSink sink = MakeSink(fs_);
  ASSERT_TRUE(sink.Apply(Version(1, chain1_.material)).ok());
  EXPECT_EQ(fs_.ModeOf(kDir), "0755");
}

// OUT/NAME owned by another user is refused: its owner could swap the files under us.
TEST_F(FileSinkFakeFsTest, RefusesCertificateDirectoryOwnedByAnotherUser) {
  fs_.AddDir(kDir, 0755);
  fs_.SetOwner(kDir, 2000, 2000);
  FileSink sink = MakeSink(fs_);
  absl::StatusOr<ApplyResult> result = sink.Apply(Version(1, chain1_.material));
  ASSERT_TRUE(absl::IsFailedPrecondition(result.status())) << result.status();
  EXPECT_THAT(result.status().message(), HasSubstr("owned by uid 2000"));
  EXPECT_FALSE(fs_.Exists(std::string(kDir) + "/..data"));
}

}  // namespace
}  // namespace certcast
