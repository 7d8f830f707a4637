#include "server/version_store.h"

#include <sys/stat.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fixtures/fake_filesystem.h"

namespace certcast {
namespace {

using ::certcast::fixtures::FakeFilesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

constexpr char kDir[] = "/var/lib/certcast";
constexpr char kName[] = "wildcard";

StoredVersion MakeVersion(uint64_t version, absl::string_view tag) {
  StoredVersion v;
  v.version = version;
  v.material.chain_pem =
      absl::StrCat("-----BEGIN CERTIFICATE-----\nchain ", tag, " ", version, "\n");
  v.material.key_pem = SecretBytes(absl::StrCat("key ", tag, " ", version, std::string(1, '\0')));
  v.material.ca_pem = version % 2 == 0 ? absl::StrCat("ca ", tag) : "";
  v.published_at = absl::FromUnixNanos(1'700'000'000'123'456'789 + static_cast<int64_t>(version));
  return v;
}

// A state with `count` versions ending at `newest`, distinguishable by `tag`.
CertificateState MakeState(uint64_t newest, int count, absl::string_view tag) {
  CertificateState state;
  for (uint64_t v = newest - count + 1; v <= newest; ++v) {
    state.versions.push_back(MakeVersion(v, tag));
  }
  state.last_version = newest;
  return state;
}

::testing::AssertionResult SameState(const CertificateState& a, const CertificateState& b) {
  if (a.last_version != b.last_version) {
    return ::testing::AssertionFailure()
           << "last_version " << a.last_version << " vs " << b.last_version;
  }
  if (a.versions.size() != b.versions.size()) {
    return ::testing::AssertionFailure()
           << a.versions.size() << " versions vs " << b.versions.size();
  }
  for (size_t i = 0; i < a.versions.size(); ++i) {
    const StoredVersion& x = a.versions[i];
    const StoredVersion& y = b.versions[i];
    if (x.version != y.version || x.material != y.material || x.published_at != y.published_at ||
        x.origin != y.origin || x.rolled_back_from != y.rolled_back_from) {
      return ::testing::AssertionFailure()
             << "versions[" << i << "] differ (version " << x.version << " vs " << y.version << ")";
    }
  }
  if (a.pin.version != b.pin.version || a.pin.rolled_back_from != b.pin.rolled_back_from ||
      a.pin.source_digest != b.pin.source_digest || a.pin.since != b.pin.since) {
    return ::testing::AssertionFailure() << "pins differ";
  }
  return ::testing::AssertionSuccess();
}

class FileVersionStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs_.AddDir("/var/lib");
    store_ = OpenStore();
  }

  std::unique_ptr<FileVersionStore> OpenStore(int history_limit = 10) {
    auto store = FileVersionStore::Open(&fs_, kDir, history_limit);
    EXPECT_TRUE(store.ok()) << store.status();
    return store.ok() ? std::move(store).value() : nullptr;
  }

  std::string StatePath() const { return absl::StrCat(kDir, "/", kName, ".state"); }

  FakeFilesystem fs_;
  std::unique_ptr<FileVersionStore> store_;
};

// Nothing stored yet is not an error.
TEST_F(FileVersionStoreTest, LoadOfUnknownCertificateIsNullopt) {
  auto loaded = store_->Load(kName);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->has_value());
}

// Every field survives Save and Load in a fresh store: versions, material, times, origin, pin.
TEST_F(FileVersionStoreTest, RoundTripsEveryField) {
  CertificateState state = MakeState(7, 3, "a");
  state.last_version = 9;
  state.versions[2].origin = "rollback";
  state.versions[2].rolled_back_from = 8;
  state.pin = PinState{5, 8, std::string("\x01\x02\0digest", 9), absl::FromUnixNanos(42)};
  ASSERT_TRUE(store_->Save(kName, state).ok());

  auto loaded = OpenStore()->Load(kName);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE(loaded->has_value());
  EXPECT_TRUE(SameState(**loaded, state));
  EXPECT_EQ((*loaded)->versions[2].origin, "rollback");
  EXPECT_EQ((*loaded)->versions[1].published_at, state.versions[1].published_at);
}

// Times before the epoch and the infinite ones round-trip too.
TEST_F(FileVersionStoreTest, RoundTripsUnusualTimes) {
  CertificateState state = MakeState(2, 2, "t");
  state.versions[0].published_at = absl::FromUnixNanos(-1'500'000'001);
  state.versions[1].published_at = absl::InfiniteFuture();
  state.pin.since = absl::InfinitePast();
  ASSERT_TRUE(store_->Save(kName, state).ok());
  auto loaded = store_->Load(kName);
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  EXPECT_TRUE(SameState(**loaded, state));
}

// Only the newest history_limit versions are kept, but last_version is never lowered.
TEST_F(FileVersionStoreTest, TrimsOldestVersionsButKeepsLastVersion) {
  CertificateState state = MakeState(15, 15, "h");
  state.last_version = 20;
  ASSERT_TRUE(store_->Save(kName, state).ok());
  auto loaded = store_->Load(kName);
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  ASSERT_EQ((*loaded)->versions.size(), 10u);
  EXPECT_EQ((*loaded)->versions.front().version, 6u);
  EXPECT_EQ((*loaded)->versions.back().version, 15u);
  EXPECT_EQ((*loaded)->last_version, 20u);

  // With a limit of 1 the current version is still kept.
  auto small = OpenStore(/*history_limit=*/1);
  ASSERT_TRUE(small->Save(kName, state).ok());
  loaded = small->Load(kName);
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  ASSERT_EQ((*loaded)->versions.size(), 1u);
  EXPECT_EQ((*loaded)->versions.front().version, 15u);
}

// The state directory is 0700 and state files (they hold private keys) are 0600.
TEST_F(FileVersionStoreTest, DirectoryIs0700AndFilesAre0600) {
  ASSERT_TRUE(store_->Save(kName, MakeState(1, 1, "m")).ok());
  EXPECT_EQ(fs_.ModeOf(kDir), "0700");
  EXPECT_EQ(fs_.ModeOf(StatePath()), "0600");
  EXPECT_EQ(store_->PathFor(kName), StatePath());
  EXPECT_THAT(fs_.AllPaths(), ElementsAre("/var", "/var/lib", kDir, StatePath()));
}

// The freshly created state directory itself is durable: a saved state survives a crash.
TEST_F(FileVersionStoreTest, SavedStateSurvivesCrash) {
  CertificateState state = MakeState(3, 2, "c");
  ASSERT_TRUE(store_->Save(kName, state).ok());
  fs_.Crash();
  auto loaded = OpenStore()->Load(kName);
  ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
  EXPECT_TRUE(SameState(**loaded, state));
}

// Open refuses a state directory it cannot create, and a history limit below 1.
TEST_F(FileVersionStoreTest, OpenFailsWhenDirectoryCannotBeCreated) {
  fs_.AddFile("/var/lib/file", "x");
  auto store = FileVersionStore::Open(&fs_, "/var/lib/file");
  EXPECT_TRUE(absl::IsFailedPrecondition(store.status())) << store.status();
  EXPECT_THAT(store.status().message(), HasSubstr("/var/lib/file"));
  store = FileVersionStore::Open(&fs_, "/missing/parent/dir");
  EXPECT_TRUE(absl::IsFailedPrecondition(store.status())) << store.status();
  EXPECT_TRUE(absl::IsInvalidArgument(FileVersionStore::Open(&fs_, kDir, 0).status()));
}

// Issue 10 item 10: a state directory of ours that others can write is tightened to 0700 before
// keys are stored in it; one owned by another user, or a symlink, is refused.
TEST_F(FileVersionStoreTest, OpenTightensOrRefusesDirectoriesOthersCanWrite) {
  fs_.AddDir("/var/lib/open", 0777);
  ASSERT_TRUE(FileVersionStore::Open(&fs_, "/var/lib/open").ok());
  EXPECT_EQ(fs_.ModeOf("/var/lib/open"), "0700");

  fs_.AddDir("/var/lib/theirs", 0700);
  fs_.SetOwner("/var/lib/theirs", 2000, 2000);
  auto store = FileVersionStore::Open(&fs_, "/var/lib/theirs");
  EXPECT_TRUE(absl::IsFailedPrecondition(store.status())) << store.status();
  EXPECT_THAT(store.status().message(), HasSubstr("owned by uid 2000"));

  fs_.AddSymlink("/var/lib/open", "/var/lib/link");
  store = FileVersionStore::Open(&fs_, "/var/lib/link");
  EXPECT_TRUE(absl::IsFailedPrecondition(store.status())) << store.status();
  EXPECT_THAT(store.status().message(), HasSubstr("is a symlink"));
}

// Names become file names, so anything outside [a-z0-9.-] (or at the edges) is refused.
TEST_F(FileVersionStoreTest, RejectsNamesThatAreNotSafeFileNames) {
  const CertificateState state = MakeState(1, 1, "n");
  for (const std::string& bad :
       {std::string(""), std::string("Wildcard"), std::string("../etc"), std::string("a/b"),
        std::string(".hidden"), std::string("trailing-"), std::string("sp ace"),
        std::string(254, 'a')}) {
    EXPECT_TRUE(absl::IsInvalidArgument(store_->Save(bad, state).status())) << bad;
    EXPECT_TRUE(absl::IsInvalidArgument(store_->Load(bad).status())) << bad;
  }
  for (const std::string& good : {std::string("a"), std::string("wildcard.example.com"),
                                  std::string("x-1"), std::string(253, 'a')}) {
    EXPECT_TRUE(store_->Save(good, state).ok()) << good;
  }
}

// A state that Load could not trust is refused at Save.
TEST_F(FileVersionStoreTest, RejectsInconsistentVersions) {
  CertificateState state = MakeState(3, 3, "i");
  state.versions[1].version = 1;
  EXPECT_TRUE(absl::IsInvalidArgument(store_->Save(kName, state).status()));
  state = MakeState(3, 3, "i");
  state.last_version = 2;
  EXPECT_TRUE(absl::IsInvalidArgument(store_->Save(kName, state).status()));
  EXPECT_FALSE(fs_.Exists(StatePath()));
}

// Every kind of damage is DataLoss with a message naming the file, never a silent reset.
TEST_F(FileVersionStoreTest, CorruptFileIsDataLossNamingTheFile) {
  ASSERT_TRUE(store_->Save(kName, MakeState(4, 2, "d")).ok());
  const std::string good = *fs_.ReadFile(StatePath());
  ASSERT_TRUE(store_->Save("other", MakeState(4, 2, "d")).ok());
  const std::string other = *fs_.ReadFile(absl::StrCat(kDir, "/other.state"));

  std::vector<std::pair<std::string, std::string>> cases = {
      {"empty", ""},
      {"garbage", "this is not a state file at all, not even close to one\n"},
      {"header only", "certcast-state v1\n"},
      {"truncated", good.substr(0, good.size() - 5)},
      {"truncated header", good.substr(0, 8)},
      {"other certificate's file", other},
  };
  for (size_t offset : {size_t{0}, size_t{20}, good.size() / 2, good.size() - 1}) {
    std::string flipped = good;
    flipped[offset] ^= 0x40;
    cases.emplace_back(absl::StrCat("byte ", offset, " flipped"), flipped);
  }
  for (const auto& [what, contents] : cases) {
    fs_.AddFile(StatePath(), contents, 0600);
    auto loaded = store_->Load(kName);
    EXPECT_TRUE(absl::IsDataLoss(loaded.status())) << what << ": " << loaded.status();
    EXPECT_THAT(loaded.status().message(), HasSubstr(StatePath())) << what;
    EXPECT_THAT(loaded.status().message(), HasSubstr("corrupt")) << what;
  }
  fs_.AddFile(StatePath(), good, 0600);
  EXPECT_TRUE(store_->Load(kName).ok());
}

// The core promise: a crash at any point during Save leaves exactly the old or exactly the new
// state loadable, and once Save returned OK, exactly the new one.
TEST_F(FileVersionStoreTest, CrashAtAnyPointDuringSaveLoadsOldOrNew) {
  const CertificateState a = MakeState(3, 3, "old");
  CertificateState b = MakeState(4, 4, "new");
  b.pin = PinState{3, 4, "src", absl::FromUnixSeconds(5)};

  // How many mutating operations does one Save perform?
  int ops_per_save = 0;
  {
    FakeFilesystem probe;
    probe.AddDir("/var/lib");
    auto store = FileVersionStore::Open(&probe, kDir);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Save(kName, a).ok());
    const int before = probe.mutating_ops();
    ASSERT_TRUE((*store)->Save(kName, b).ok());
    ops_per_save = probe.mutating_ops() - before;
  }
  ASSERT_GE(ops_per_save, 3);  // write, rename, sync at least

  int saw_old = 0, saw_new = 0;
  for (int k = 0; k <= ops_per_save; ++k) {
    SCOPED_TRACE(absl::StrCat("crash after ", k, " of ", ops_per_save, " ops"));
    FakeFilesystem fs;
    fs.AddDir("/var/lib");
    auto store = FileVersionStore::Open(&fs, kDir);
    ASSERT_TRUE(store.ok());
    ASSERT_TRUE((*store)->Save(kName, a).ok());
    fs.CrashAfterOps(k);
    const absl::Status saved = (*store)->Save(kName, b).status();
    EXPECT_EQ(saved.ok(), k == ops_per_save) << saved;
    fs.Crash();

    auto reopened = FileVersionStore::Open(&fs, kDir);
    ASSERT_TRUE(reopened.ok());
    auto loaded = (*reopened)->Load(kName);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ASSERT_TRUE(loaded->has_value());
    const bool is_old = SameState(**loaded, a);
    const bool is_new = SameState(**loaded, b);
    EXPECT_TRUE(is_old || is_new) << "loaded a mix";
    if (saved.ok()) {
      EXPECT_TRUE(is_new);
    }
    saw_old += is_old;
    saw_new += is_new;
  }
  // Both outcomes occur, so the loop really crossed the commit point.
  EXPECT_GT(saw_old, 0);
  EXPECT_GT(saw_new, 0);
}

// The very first Save crashing at any point leaves either nothing or the new state.
TEST_F(FileVersionStoreTest, CrashDuringFirstSaveLoadsNothingOrNew) {
  const CertificateState b = MakeState(1, 1, "first");
  for (int k = 0; k <= 8; ++k) {
    SCOPED_TRACE(absl::StrCat("crash after ", k, " ops"));
    FakeFilesystem fs;
    fs.AddDir("/var/lib");
    fs.CrashAfterOps(k);
    auto store = FileVersionStore::Open(&fs, kDir);
    const bool saved = store.ok() && (*store)->Save(kName, b).ok();
    fs.Crash();
    auto reopened = FileVersionStore::Open(&fs, kDir);
    ASSERT_TRUE(reopened.ok());
    auto loaded = (*reopened)->Load(kName);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    if (saved) {
      ASSERT_TRUE(loaded->has_value());
    }
    if (loaded->has_value()) {
      EXPECT_TRUE(SameState(**loaded, b));
    }
  }
}

// Disk full during the write: Save reports it, the old state stays, no temp file is left.
TEST_F(FileVersionStoreTest, DiskFullKeepsOldState) {
  const CertificateState a = MakeState(2, 2, "old");
  ASSERT_TRUE(store_->Save(kName, a).ok());
  fs_.FailNextWrite(absl::ResourceExhaustedError("write: No space left on device"));
  absl::Status saved = store_->Save(kName, MakeState(3, 3, "new")).status();
  EXPECT_TRUE(absl::IsResourceExhausted(saved)) << saved;
  EXPECT_THAT(saved.message(), HasSubstr(kName));
  auto loaded = store_->Load(kName);
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  EXPECT_TRUE(SameState(**loaded, a));
  EXPECT_THAT(fs_.AllPaths(), ElementsAre("/var", "/var/lib", kDir, StatePath()));
}

// A write that stopped halfway leaves the old state loadable, before and after a crash.
TEST_F(FileVersionStoreTest, PartialWriteKeepsOldState) {
  const CertificateState a = MakeState(2, 2, "old");
  ASSERT_TRUE(store_->Save(kName, a).ok());
  fs_.FailNextWrite(absl::ResourceExhaustedError("disk full"), /*partial_bytes=*/40);
  EXPECT_FALSE(store_->Save(kName, MakeState(3, 3, "new")).ok());
  for (int round = 0; round < 2; ++round) {
    auto loaded = OpenStore()->Load(kName);
    ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
    EXPECT_TRUE(SameState(**loaded, a));
    fs_.Crash();
  }
}

// A failed rename leaves the old state and no temp file.
TEST_F(FileVersionStoreTest, FailedRenameKeepsOldState) {
  const CertificateState a = MakeState(2, 2, "old");
  ASSERT_TRUE(store_->Save(kName, a).ok());
  fs_.FailNextRename(absl::InternalError("rename: Input/output error"));
  EXPECT_FALSE(store_->Save(kName, MakeState(3, 3, "new")).ok());
  auto loaded = store_->Load(kName);
  ASSERT_TRUE(loaded.ok() && loaded->has_value());
  EXPECT_TRUE(SameState(**loaded, a));
  EXPECT_THAT(fs_.AllPaths(), ElementsAre("/var", "/var/lib", kDir, StatePath()));
}

// The real filesystem: round trip, and the mode bits on disk.
TEST(FileVersionStorePosixTest, RoundTripWithModesOnDisk) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string root = JoinPath(tmp != nullptr ? tmp : "/tmp", "certcast-store-test-XXXXXX");
  ASSERT_NE(::mkdtemp(root.data()), nullptr);
  PosixFilesystem fs;
  const std::string dir = JoinPath(root, "state");
  {
    auto store = FileVersionStore::Open(&fs, dir);
    ASSERT_TRUE(store.ok()) << store.status();
    CertificateState state = MakeState(12, 12, "posix");
    ASSERT_TRUE((*store)->Save(kName, state).ok());
    auto loaded = (*FileVersionStore::Open(&fs, dir))->Load(kName);
    ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
    EXPECT_EQ((*loaded)->versions.size(), 10u);
    state.versions.erase(state.versions.begin(), state.versions.begin() + 2);
    EXPECT_TRUE(SameState(**loaded, state));

    struct stat st;
    ASSERT_EQ(::stat(dir.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);
    ASSERT_EQ(::stat((*store)->PathFor(kName).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
    EXPECT_THAT(*fs.ListDir(dir), ElementsAre("wildcard.state"));
  }
  EXPECT_TRUE(fs.RemoveAll(root).ok());
}

}  // namespace
}  // namespace certcast
