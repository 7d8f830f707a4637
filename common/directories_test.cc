#include "common/directories.h"

#include <sys/stat.h>

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fixtures/cert_factory.h"

namespace certcast {
namespace {

using ::testing::HasSubstr;

bool IsDir(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// The missing parents are created; the leaf is left to its owner, who sets its mode.
TEST(DirectoriesTest, CreatesMissingParentsButNotTheLeaf) {
  fixtures::TempDir tmp;
  PosixFilesystem fs;
  const std::string path = tmp.Join("var/lib/certcast/a");
  ASSERT_TRUE(CreateParentDirectories(fs, "--state-dir", path).ok());
  EXPECT_TRUE(IsDir(tmp.Join("var/lib/certcast")));
  EXPECT_FALSE(fs.Exists(path));
  // Existing parents and relative paths are fine.
  EXPECT_TRUE(CreateParentDirectories(fs, "--state-dir", path).ok());
  EXPECT_TRUE(CreateParentDirectories(fs, "--state-dir", "./certcast-state").ok());
}

// A parent that is a file is an error naming the flag, the path and the reason.
TEST(DirectoriesTest, ParentThatIsAFileIsAClearError) {
  fixtures::TempDir tmp;
  PosixFilesystem fs;
  std::ofstream(tmp.Join("file")) << "x";
  const std::string path = tmp.Join("file/state");
  const absl::Status status = CreateParentDirectories(fs, "--output-dir", path);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(status.message(), HasSubstr("--output-dir " + path + ": "));
  EXPECT_THAT(status.message(), HasSubstr("File exists"));
}

}  // namespace
}  // namespace certcast
