#include "common/logging.h"

#include "gtest/gtest.h"

namespace certcast {
namespace {

// JSON log lines stay valid JSON whatever the message contains.
TEST(LoggingTest, JsonEscapeQuotesControlCharacters) {
  EXPECT_EQ(JsonEscape("a\"b\\c\nd\te\x01"), "a\\\"b\\\\c\\nd\\te\\u0001");
}

// Bad flag values are refused with a message naming the flag.
TEST(LoggingTest, RejectsUnknownLevelAndFormat) {
  EXPECT_EQ(ConfigureLogging("loud", "text").code(), absl::StatusCode::kInvalidArgument);
  absl::Status format = ConfigureLogging("info", "xml");
  EXPECT_EQ(format.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(format.message().find("--log-format"), absl::string_view::npos);
  EXPECT_TRUE(ConfigureLogging("debug", "json").ok());
}

}  // namespace
}  // namespace certcast
