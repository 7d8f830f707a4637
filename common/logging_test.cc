#include "common/logging.h"

#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "grpc/support/log.h"
#include "gtest/gtest.h"
#include "spdlog/sinks/ostream_sink.h"
#include "spdlog/spdlog.h"

namespace certcast {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Captures what the configured logger writes, one entry per line.
class LoggingTest : public ::testing::Test {
 protected:
  void Configure(const std::string& format, const std::string& level = "debug") {
    out_.str("");
    ASSERT_TRUE(ConfigureLogging(level, format,
                                 std::make_shared<spdlog::sinks::ostream_sink_mt>(out_, true))
                    .ok());
  }
  std::vector<std::string> Lines() {
    std::vector<std::string> lines = absl::StrSplit(out_.str(), '\n', absl::SkipEmpty());
    return lines;
  }
  void TearDown() override { ASSERT_TRUE(ConfigureLogging("info", "text").ok()); }

  std::ostringstream out_;
};

// JSON log lines stay valid JSON whatever the message contains, even invalid UTF-8.
TEST(JsonEscapeTest, QuotesControlCharactersAndInvalidUtf8) {
  EXPECT_EQ(JsonEscape("a\"b\\c\nd\te\x01"), "a\\\"b\\\\c\\nd\\te\\u0001");
  EXPECT_EQ(JsonEscape("caf\xC3\xA9 \xFF"), "caf\xC3\xA9 \\u00ff");
}

// Peer text is made printable and capped on a UTF-8 boundary, with the number of bytes cut.
TEST(EscapeAndCapTest, EscapesAndCapsWithMarker) {
  EXPECT_EQ(EscapeAndCap("web\naudit: x\\y\x1b"), "web\\naudit: x\\\\y\\x1b");
  EXPECT_EQ(EscapeAndCap(std::string(300, 'a')), std::string(256, 'a') + "…(44 more bytes)");
  // "é" is two bytes; a cut through it keeps the whole character out.
  EXPECT_EQ(EscapeAndCap("a\xC3\xA9", 2), "a…(2 more bytes)");
}

// gRPC and absl status codes are shown by name.
TEST(StatusCodeNameTest, NamesCodes) {
  EXPECT_EQ(StatusCodeName(absl::StatusCode::kPermissionDenied), "PERMISSION_DENIED");
  EXPECT_EQ(StatusCodeName(14), "UNAVAILABLE");
  EXPECT_EQ(StatusCodeName(99), "CODE_99");
}

// Bad flag values are refused with a message naming the flag.
TEST_F(LoggingTest, RejectsUnknownLevelAndFormat) {
  EXPECT_EQ(ConfigureLogging("loud", "text").code(), absl::StatusCode::kInvalidArgument);
  absl::Status format = ConfigureLogging("info", "xml");
  EXPECT_EQ(format.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(format.message().find("--log-format"), absl::string_view::npos);
  EXPECT_TRUE(ConfigureLogging("debug", "json").ok());
}

// Fields are real JSON members: strings quoted and escaped, numbers and booleans bare.
TEST_F(LoggingTest, JsonLineCarriesFields) {
  Configure("json");
  const absl::Status status = absl::NotFoundError("certificate web");
  LogInfo("published version", {{"certificate", "web"},
                                {"version", 7},
                                {"size", size_t{12}},
                                {"pinned", false},
                                {"interval", absl::Seconds(90)},
                                {"error", status},
                                {"reason", "a \"quoted\" text"}});
  const std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], HasSubstr(R"("level":"info","msg":"published version",)"
                                  R"("certificate":"web","version":7,"size":12,"pinned":false,)"
                                  R"("interval":"1m30s","error":"NOT_FOUND: certificate web",)"
                                  R"("reason":"a \"quoted\" text"})"));
}

// Text lines show fields as key=value, quoting only where a reader could misread the end.
TEST_F(LoggingTest, TextLineShowsKeyValues) {
  Configure("text");
  LogWarn("stream refused", {{"certificate", "web"}, {"reason", "not granted"}, {"code", 7}});
  const std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0],
              HasSubstr(" W stream refused certificate=web reason=\"not granted\" code=7"));
}

// A peer cannot forge a second log line, in either format, through a field or the message.
TEST_F(LoggingTest, NewlinesFromPeersNeverStartALine) {
  const std::string forged = "web\n2026-12-03T06:00:00.000000Z I audit: decision=allowed";
  for (const std::string format : {"text", "json"}) {
    SCOPED_TRACE(format);
    Configure(format);
    LogInfo("hello", {{"certificate", Peer(forged)}, {"client_id", forged}});
    spdlog::info("legacy {} and {}", forged, Peer(forged));
    const std::vector<std::string> lines = Lines();
    ASSERT_EQ(lines.size(), 2u);
    for (const std::string& line : lines) {
      EXPECT_THAT(line, Not(HasSubstr("\n")));
      EXPECT_EQ(line.rfind("2026-12-03T06:00", 0), std::string::npos);
    }
  }
}

// A 60,000-byte peer string adds at most kMaxPeerBytes plus the marker; other values and
// messages are capped too.
TEST_F(LoggingTest, LongValuesAreCapped) {
  const std::string huge(60000, 'x');
  for (const std::string format : {"text", "json"}) {
    SCOPED_TRACE(format);
    Configure(format);
    LogInfo("hello", {{"certificate", Peer(huge)}});
    LogInfo("hello", {{"reason", huge}});
    spdlog::info("legacy {}", huge);
    const std::vector<std::string> lines = Lines();
    ASSERT_EQ(lines.size(), 3u);
    EXPECT_LT(lines[0].size(), 400u);
    EXPECT_THAT(lines[0], HasSubstr("…(59744 more bytes)"));
    EXPECT_LT(lines[1].size(), kMaxFieldBytes + 150);
    EXPECT_LT(lines[2].size(), kMaxMessageBytes + 150);
  }
}

// gRPC's own lines come out through the logger, as JSON with their source when json is chosen.
TEST_F(LoggingTest, GrpcLinesAreRouted) {
  Configure("json", "info");
  gpr_log(GPR_ERROR, "Handshake failed with fatal error %s", "SSL_ERROR_SSL");
  const std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], HasSubstr(R"("msg":"Handshake failed with fatal error SSL_ERROR_SSL",)"
                                  R"("component":"grpc","source":"logging_test.cc:)"));
}

// Below --log-level, nothing is written (and fields are not rendered).
TEST_F(LoggingTest, RespectsLevel) {
  Configure("text", "warn");
  LogInfo("quiet", {{"certificate", "web"}});
  LogError("loud", {{"certificate", "web"}});
  const std::vector<std::string> lines = Lines();
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], HasSubstr(" E loud certificate=web"));
}

}  // namespace
}  // namespace certcast
