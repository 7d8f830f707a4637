#include "common/flags_util.h"

#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

ABSL_FLAG(absl::Duration, flags_util_test_interval, absl::Seconds(30), "An interval for tests.");
ABSL_FLAG(std::string, flags_util_test_name, "", "A name for tests.");

namespace certcast {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// argv as main() gets it, from literals.
class Argv {
 public:
  explicit Argv(std::vector<std::string> args) : args_(std::move(args)) {
    for (std::string& arg : args_) pointers_.push_back(arg.data());
    pointers_.push_back(nullptr);
  }
  int argc() const { return static_cast<int>(args_.size()); }
  char** argv() { return pointers_.data(); }

 private:
  std::vector<std::string> args_;
  std::vector<char*> pointers_;
};

// -h and --help anywhere before "--" ask for help; after "--" they are positional.
TEST(FlagsUtilTest, WantsHelpAndVersion) {
  Argv help({"prog", "--listen=x", "-h"});
  EXPECT_TRUE(WantsHelp(help.argc(), help.argv()));
  Argv positional({"prog", "--", "--help", "--version"});
  EXPECT_FALSE(WantsHelp(positional.argc(), positional.argv()));
  EXPECT_FALSE(WantsVersion(positional.argc(), positional.argv()));
  Argv version({"prog", "--version"});
  EXPECT_TRUE(WantsVersion(version.argc(), version.argv()));
  EXPECT_FALSE(WantsHelp(version.argc(), version.argv()));
}

// A bare number for a duration flag asks for a unit, with an example; in both spellings.
TEST(FlagsUtilTest, DurationWithoutUnitAsksForOne) {
  Argv with_equals({"prog", "--flags_util_test_interval=5"});
  absl::Status status = CheckDurationFlags(with_equals.argc(), with_equals.argv());
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("--flags-util-test-interval=5: a duration needs a unit"));
  EXPECT_THAT(status.message(), HasSubstr("--flags-util-test-interval=5s"));
  Argv separate({"prog", "--flags_util_test_interval", "7"});
  EXPECT_THAT(CheckDurationFlags(separate.argc(), separate.argv()).message(), HasSubstr("=7s"));
  Argv words({"prog", "--flags_util_test_interval=soon"});
  EXPECT_THAT(CheckDurationFlags(words.argc(), words.argv()).message(),
              HasSubstr("not a duration"));
  Argv fine({"prog", "--flags_util_test_interval=1m30s", "--flags_util_test_name=5"});
  EXPECT_TRUE(CheckDurationFlags(fine.argc(), fine.argv()).ok());
}

// The help lists grouped flags with dashes, value type and default, and never hides a flag.
TEST(FlagsUtilTest, HelpTextGroupsFlagsAndListsTheRest) {
  const std::string text = HelpText("intro", {{"Timing", {"flags_util_test_interval"}}}, "outro");
  EXPECT_THAT(text, HasSubstr("Timing:\n  --flags-util-test-interval=DURATION  (default: 30s)\n"
                              "      An interval for tests.\n"));
  EXPECT_THAT(text, HasSubstr("Other flags:\n"));
  EXPECT_THAT(text, HasSubstr("--flags-util-test-name=VALUE\n"));
  EXPECT_THAT(text, Not(HasSubstr("--helpfull")));
}

}  // namespace
}  // namespace certcast
