// Logging for certcast: set-up for the binaries' main() (spdlog to stderr, as text for people or
// one JSON object per line for log pipelines, with gRPC's own lines routed through it), and
// log lines with structured fields for every component.
//
//   LogInfo("published version", {{"certificate", name}, {"version", 7}, {"fingerprint", fp}});
//   LogWarn("stream refused", {{"certificate", Peer(requested)}, {"code", StatusCodeName(code)}});
//
// text: 2026-12-03T06:40:01.123456Z I published version certificate=web version=7 fingerprint=ab..
// json: {"time":"...","level":"info","msg":"published version","certificate":"web","version":7,..}
//
// Anything a peer sent (certificate names, client ids, NACK texts, token subjects, addresses)
// goes through Peer(): it is capped at kMaxPeerBytes, and as a field it is escaped by the
// formatter; in an fmt format string (legacy `spdlog::warn("{}", Peer(x))`) it is escaped there.
// Independently, both formatters escape control characters in every message and value, so no
// log line can start a second line, and every message and value is capped.
//
// Library code only logs; only main() configures. Thread-safe (spdlog's sink is locked; fields
// travel to the formatter through a thread-local for the duration of one call).
#ifndef CERTCAST_COMMON_LOGGING_H_
#define CERTCAST_COMMON_LOGGING_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <type_traits>
#include <variant>

#include "absl/flags/declare.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "spdlog/common.h"
#include "spdlog/fmt/fmt.h"

// --log-level and --log-format, shared by both binaries.
ABSL_DECLARE_FLAG(std::string, log_level);
ABSL_DECLARE_FLAG(std::string, log_format);

namespace certcast {

// Bytes of a peer-supplied string kept in a log line; the rest becomes "…(N more bytes)".
inline constexpr size_t kMaxPeerBytes = 256;
// Backstops for everything else: any field value, and any message body.
inline constexpr size_t kMaxFieldBytes = 1024;
inline constexpr size_t kMaxMessageBytes = 2048;

// `level`: trace, debug, info, warn, error. `format`: text or json.
// InvalidArgument naming the bad value otherwise. Also routes gRPC's own log lines (gpr_log)
// through this logger, at a gRPC verbosity that follows `level` unless GRPC_VERBOSITY is set.
// `sink` (tests) replaces stderr.
absl::Status ConfigureLogging(const std::string& level, const std::string& format,
                              spdlog::sink_ptr sink = nullptr);

// ConfigureLogging with the --log-level and --log-format flags.
absl::Status ConfigureLoggingFromFlags();

// Best effort before absl parses the flags: configures logging from --log-format/--log-level
// values found in argv (after NormalizeFlagNames), so that even errors about other flags come out
// as JSON when json was asked for. ConfigureLoggingFromFlags later configures for good.
void ConfigureLoggingFromArgv(int argc, char** argv);

// True once ConfigureLogging chose json: then stderr carries nothing but JSON lines.
bool LogsAsJson();

// Text that came from a peer. Holds a view: use it within the log statement.
struct PeerText {
  absl::string_view text;
};
inline PeerText Peer(absl::string_view text) { return PeerText{text}; }

// `text` capped at `max_bytes` (on a UTF-8 boundary, with "…(N more bytes)") and made
// printable: \\, \n, \r, \t, and \xNN for other control characters and invalid UTF-8.
std::string EscapeAndCap(absl::string_view text, size_t max_bytes = kMaxPeerBytes);

// Escapes `text` for inclusion in a JSON string literal (always valid JSON, even for invalid
// UTF-8, whose bytes become \u00NN).
std::string JsonEscape(absl::string_view text);

// The canonical name of a gRPC or absl status code ("PERMISSION_DENIED"); both use the same
// numbers. "CODE_<n>" for a number outside the known range.
std::string StatusCodeName(int code);
template <typename Code, typename = std::enable_if_t<std::is_enum_v<Code>>>
std::string StatusCodeName(Code code) {
  return StatusCodeName(static_cast<int>(code));
}

// One key/value of a log line. Holds views and pointers: build fields inside the log call.
class LogField {
 public:
  LogField(absl::string_view key, absl::string_view value) : key_(key), value_(value) {}
  LogField(absl::string_view key, const std::string& value)
      : key_(key), value_(absl::string_view(value)) {}
  LogField(absl::string_view key, const char* value)
      : key_(key), value_(absl::string_view(value == nullptr ? "" : value)) {}
  LogField(absl::string_view key, PeerText value) : key_(key), value_(value) {}
  LogField(absl::string_view key, bool value) : key_(key), value_(value) {}
  template <typename Int, std::enable_if_t<std::is_integral_v<Int> && std::is_signed_v<Int> &&
                                               !std::is_same_v<Int, bool>,
                                           int> = 0>
  LogField(absl::string_view key, Int value) : key_(key), value_(static_cast<int64_t>(value)) {}
  template <typename Int, std::enable_if_t<std::is_integral_v<Int> && std::is_unsigned_v<Int> &&
                                               !std::is_same_v<Int, bool>,
                                           int> = 0>
  LogField(absl::string_view key, Int value) : key_(key), value_(static_cast<uint64_t>(value)) {}
  LogField(absl::string_view key, double value) : key_(key), value_(value) {}
  // Rendered as absl::FormatDuration ("1m30s").
  LogField(absl::string_view key, absl::Duration value) : key_(key), value_(value) {}
  // Rendered as Status::ToString() ("NOT_FOUND: certificate web").
  LogField(absl::string_view key, const absl::Status& value) : key_(key), value_(&value) {}

  absl::string_view key() const { return key_; }
  // Appends ` key=value` (text) or `,"key":value` (json) to `out`.
  void AppendText(std::string& out) const;
  void AppendJson(std::string& out) const;

 private:
  absl::string_view key_;
  std::variant<absl::string_view, PeerText, bool, int64_t, uint64_t, double, absl::Duration,
               const absl::Status*>
      value_;
};

using LogFields = std::initializer_list<LogField>;

// Logs `message` (shown as is, not an fmt format string) with `fields`.
void LogAt(spdlog::level::level_enum level, absl::string_view message, LogFields fields = {});
inline void LogDebug(absl::string_view message, LogFields fields = {}) {
  LogAt(spdlog::level::debug, message, fields);
}
inline void LogInfo(absl::string_view message, LogFields fields = {}) {
  LogAt(spdlog::level::info, message, fields);
}
inline void LogWarn(absl::string_view message, LogFields fields = {}) {
  LogAt(spdlog::level::warn, message, fields);
}
inline void LogError(absl::string_view message, LogFields fields = {}) {
  LogAt(spdlog::level::err, message, fields);
}

}  // namespace certcast

// Peer() in fmt format strings: escaped and capped.
template <>
struct fmt::formatter<certcast::PeerText> : fmt::formatter<fmt::string_view> {
  template <typename FormatContext>
  auto format(const certcast::PeerText& peer, FormatContext& ctx) const {
    const std::string escaped = certcast::EscapeAndCap(peer.text);
    return fmt::formatter<fmt::string_view>::format(
        fmt::string_view(escaped.data(), escaped.size()), ctx);
  }
};

#endif  // CERTCAST_COMMON_LOGGING_H_
