#include "client/state_store.h"

#include <string>

#include "gtest/gtest.h"
#include "tests/fixtures/fake_filesystem.h"

namespace certcast {
namespace {

using ::certcast::fixtures::FakeFilesystem;

const std::string kFingerprint(64, 'a');

// What was saved is loaded back, from a 0600 file in a 0700 directory.
TEST(ClientStateStoreTest, RoundTripsWithPrivateModes) {
  FakeFilesystem fs;
  ClientStateStore store(&fs, "/state");
  ASSERT_TRUE(store.Init().ok());
  EXPECT_FALSE(store.Load("wildcard").has_value());
  ASSERT_TRUE(store.Save("wildcard", {12, kFingerprint}).ok());
  std::optional<HeldVersion> held = store.Load("wildcard");
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(held->version, 12u);
  EXPECT_EQ(held->fingerprint, kFingerprint);
  EXPECT_EQ(fs.Mode("/state") & 0777, 0700u);
  EXPECT_EQ(fs.Mode("/state/wildcard.held") & 0777, 0600u);
}

// The leaf's expiry is kept when known; files written before it existed still load.
TEST(ClientStateStoreTest, KeepsExpiryAndReadsFilesWithoutIt) {
  FakeFilesystem fs;
  ClientStateStore store(&fs, "/state");
  ASSERT_TRUE(store.Init().ok());
  const absl::Time not_after = absl::FromUnixSeconds(1'900'000'000);
  ASSERT_TRUE(store.Save("wildcard", {3, kFingerprint, not_after}).ok());
  std::optional<HeldVersion> held = store.Load("wildcard");
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(held->not_after, not_after);
  fs.AddFile("/state/wildcard.held", "4 " + kFingerprint + "\n", 0600);
  held = store.Load("wildcard");
  ASSERT_TRUE(held.has_value());
  EXPECT_EQ(held->version, 4u);
  EXPECT_EQ(held->not_after, absl::InfinitePast());
}

// A damaged state file counts as no record (the files on disk decide), never as a crash.
TEST(ClientStateStoreTest, DamagedFileIsIgnored) {
  FakeFilesystem fs;
  ClientStateStore store(&fs, "/state");
  ASSERT_TRUE(store.Init().ok());
  for (const std::string& text :
       {std::string(""), std::string("garbage"), std::string("12"), std::string("x aaaa"),
        std::string("12 short"), "12 " + kFingerprint + " soon", "12 " + kFingerprint + " 1 2"}) {
    fs.AddFile("/state/wildcard.held", text, 0600);
    EXPECT_FALSE(store.Load("wildcard").has_value()) << text;
  }
}

// A state directory that cannot be created is a start-up error naming it.
TEST(ClientStateStoreTest, InitFailsWithClearError) {
  FakeFilesystem fs;
  fs.AddFile("/blocked", "a file, not a directory");
  ClientStateStore store(&fs, "/blocked/state");
  absl::Status status = store.Init();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find("/blocked/state"), absl::string_view::npos);
}

// Issue 10 item 10: a state directory of ours that every user can write is tightened to 0700.
TEST(ClientStateStoreTest, TightensStateDirectoryOthersCanWrite) {
  FakeFilesystem fs;
  fs.AddDir("/state", 0777);
  ClientStateStore store(&fs, "/state");
  ASSERT_TRUE(store.Init().ok());
  EXPECT_EQ(fs.ModeOf("/state"), "0700");
}

// A state directory owned by another user, or a symlink, is refused with the reason.
TEST(ClientStateStoreTest, RefusesStateDirectoryOthersControl) {
  FakeFilesystem fs;
  fs.AddDir("/state", 0700);
  fs.SetOwner("/state", 2000, 2000);
  absl::Status status = ClientStateStore(&fs, "/state").Init();
  EXPECT_TRUE(absl::IsFailedPrecondition(status)) << status;
  EXPECT_NE(status.message().find("owned by uid 2000"), absl::string_view::npos) << status;

  fs.AddDir("/real", 0700);
  fs.AddSymlink("/real", "/link");
  status = ClientStateStore(&fs, "/link").Init();
  EXPECT_TRUE(absl::IsFailedPrecondition(status)) << status;
  EXPECT_NE(status.message().find("is a symlink"), absl::string_view::npos) << status;

  // Root's directory that everyone may write cannot be tightened by us: refused.
  fs.AddDir("/shared", 0777);
  fs.SetOwner("/shared", 0, 0);
  status = ClientStateStore(&fs, "/shared").Init();
  EXPECT_TRUE(absl::IsFailedPrecondition(status)) << status;
  EXPECT_EQ(fs.ModeOf("/shared"), "0777");
}

// Directories only root, we, or a group we belong to can write are used as they are (a volume
// with fsGroup is root:GROUP 2775).
TEST(ClientStateStoreTest, AcceptsDirectoriesOnlyWeAndRootCanWrite) {
  FakeFilesystem fs;
  fs.AddDir("/volume", 02775);
  fs.SetOwner("/volume", 0, FakeFilesystem::kOwnerGid);
  EXPECT_TRUE(ClientStateStore(&fs, "/volume").Init().ok());
  EXPECT_EQ(fs.ModeOf("/volume"), "2775");
  fs.AddDir("/root-only", 0755);
  fs.SetOwner("/root-only", 0, 0);
  EXPECT_TRUE(ClientStateStore(&fs, "/root-only").Init().ok());
}

}  // namespace
}  // namespace certcast
