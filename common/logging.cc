#include "common/logging.h"

#include <atomic>
#include <cstdlib>
#include <memory>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "grpc/support/log.h"
#include "spdlog/pattern_formatter.h"
#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn or error.");
ABSL_FLAG(std::string, log_format, "text",
          "text (for people) or json (one JSON object per line, with fields).");

namespace certcast {
namespace {

// The fields of the LogAt call being formatted on this thread. spdlog's synchronous logger
// formats on the calling thread, inside logger->log(), so they are alive while read.
thread_local LogFields const* t_fields = nullptr;

// Whether the process logs JSON; main() sets it once, FailStartup reads it.
std::atomic<bool> g_json{false};

// Length of the valid UTF-8 sequence starting at text[i], or 0 when it is not valid UTF-8.
size_t Utf8SequenceLength(absl::string_view text, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char c = byte(i);
  if (c < 0x80) return 1;
  size_t length;
  uint32_t min;
  uint32_t code;
  if ((c & 0xE0) == 0xC0) {
    length = 2, min = 0x80, code = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    length = 3, min = 0x800, code = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    length = 4, min = 0x10000, code = c & 0x07;
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  for (size_t k = 1; k < length; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
    code = (code << 6) | (byte(i + k) & 0x3F);
  }
  if (code < min || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return 0;
  return length;
}

// `text` cut to at most `max_bytes` without splitting a UTF-8 sequence; `*omitted` gets the
// number of bytes cut off.
absl::string_view Cap(absl::string_view text, size_t max_bytes, size_t* omitted) {
  if (text.size() <= max_bytes) {
    *omitted = 0;
    return text;
  }
  size_t cut = max_bytes;
  for (int back = 0; back < 3 && cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80;
       ++back) {
    --cut;
  }
  *omitted = text.size() - cut;
  return text.substr(0, cut);
}

std::string OmittedMarker(size_t omitted) {
  return omitted == 0 ? std::string() : absl::StrCat("…(", omitted, " more bytes)");
}

enum class Escape {
  kControl,  // control characters and invalid UTF-8 only (text message bodies)
  kPeer,     // and backslashes (peer text in fmt format strings)
  kQuoted,   // and double quotes (quoted text field values)
};

void AppendEscaped(absl::string_view text, Escape mode, std::string& out) {
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const size_t length = Utf8SequenceLength(text, i);
      if (length == 0) {
        absl::StrAppendFormat(&out, "\\x%02x", c);
        ++i;
      } else {
        out.append(text.data() + i, length);
        i += length;
      }
      continue;
    }
    ++i;
    switch (c) {
      case '\n':
        out += "\\n";
        continue;
      case '\r':
        out += "\\r";
        continue;
      case '\t':
        out += "\\t";
        continue;
      case '\\':
        out += mode == Escape::kControl ? "\\" : "\\\\";
        continue;
      case '"':
        out += mode == Escape::kQuoted ? "\\\"" : "\"";
        continue;
      default:
        if (c < 0x20 || c == 0x7F) {
          absl::StrAppendFormat(&out, "\\x%02x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
}

void AppendJsonEscaped(absl::string_view text, std::string& out) {
  for (size_t i = 0; i < text.size();) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c >= 0x80) {
      const size_t length = Utf8SequenceLength(text, i);
      if (length == 0) {
        absl::StrAppendFormat(&out, "\\u%04x", c);
        ++i;
      } else {
        out.append(text.data() + i, length);
        i += length;
      }
      continue;
    }
    ++i;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20 || c == 0x7F) {
          absl::StrAppendFormat(&out, "\\u%04x", c);
        } else {
          out += static_cast<char>(c);
        }
    }
  }
}

// A text value is written bare when a reader cannot misread where it ends.
bool NeedsQuotes(absl::string_view text) {
  if (text.empty()) return true;
  for (char ch : text) {
    const unsigned char c = static_cast<unsigned char>(ch);
    if (c <= 0x20 || c == 0x7F || c == '"' || c == '=' || c == '\\' || c >= 0x80) return true;
  }
  return false;
}

// The string value of a field, capped; numbers and booleans return false.
bool StringValue(const std::variant<absl::string_view, PeerText, bool, int64_t, uint64_t, double,
                                    absl::Duration, const absl::Status*>& value,
                 std::string& scratch, absl::string_view* text, size_t* omitted) {
  if (const auto* view = std::get_if<absl::string_view>(&value)) {
    *text = Cap(*view, kMaxFieldBytes, omitted);
  } else if (const auto* peer = std::get_if<PeerText>(&value)) {
    *text = Cap(peer->text, kMaxPeerBytes, omitted);
  } else if (const auto* duration = std::get_if<absl::Duration>(&value)) {
    scratch = absl::FormatDuration(*duration);
    *text = scratch;
    *omitted = 0;
  } else if (const auto* status = std::get_if<const absl::Status*>(&value)) {
    scratch = (*status)->ToString();
    *text = Cap(scratch, kMaxFieldBytes, omitted);
  } else {
    return false;
  }
  return true;
}

template <typename Variant>
std::string NumberText(const Variant& value) {
  if (const auto* flag = std::get_if<bool>(&value)) return *flag ? "true" : "false";
  if (const auto* number = std::get_if<int64_t>(&value)) return absl::StrCat(*number);
  if (const auto* number = std::get_if<uint64_t>(&value)) return absl::StrCat(*number);
  return absl::StrFormat("%g", std::get<double>(value));
}

// Appends the message body of the line being formatted.
class MessageFlag final : public spdlog::custom_flag_formatter {
 public:
  explicit MessageFlag(bool json) : json_(json) {}
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    size_t omitted;
    const absl::string_view body =
        Cap(absl::string_view(msg.payload.data(), msg.payload.size()), kMaxMessageBytes, &omitted);
    std::string out;
    out.reserve(body.size() + 16);
    if (json_) {
      AppendJsonEscaped(body, out);
    } else {
      AppendEscaped(body, Escape::kControl, out);
    }
    out += OmittedMarker(omitted);
    dest.append(out.data(), out.data() + out.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<MessageFlag>(json_);
  }

 private:
  const bool json_;
};

// Appends the fields of the LogAt call being formatted (nothing for plain spdlog calls).
class FieldsFlag final : public spdlog::custom_flag_formatter {
 public:
  explicit FieldsFlag(bool json) : json_(json) {}
  void format(const spdlog::details::log_msg&, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    if (t_fields == nullptr) return;
    std::string out;
    for (const LogField& field : *t_fields) {
      if (json_) {
        field.AppendJson(out);
      } else {
        field.AppendText(out);
      }
    }
    dest.append(out.data(), out.data() + out.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<FieldsFlag>(json_);
  }

 private:
  const bool json_;
};

// gRPC's own log lines (handshake failures, bind errors), with their source location.
void LogGrpcLine(gpr_log_func_args* args) {
  spdlog::level::level_enum level = spdlog::level::warn;
  if (args->severity == GPR_LOG_SEVERITY_INFO) level = spdlog::level::debug;
  if (args->severity == GPR_LOG_SEVERITY_DEBUG) level = spdlog::level::trace;
  absl::string_view file = args->file == nullptr ? "" : args->file;
  const size_t slash = file.rfind('/');
  if (slash != absl::string_view::npos) file.remove_prefix(slash + 1);
  LogAt(level, args->message == nullptr ? "" : args->message,
        {{"component", "grpc"}, {"source", absl::StrCat(file, ":", args->line)}});
}

// gRPC prints at ERROR by default; its INFO lines join at --log-level=debug, DEBUG at trace.
// GRPC_VERBOSITY, when set, keeps deciding (gRPC reads it in grpc_init).
void RouteGrpcLogging(spdlog::level::level_enum level) {
  gpr_set_log_function(&LogGrpcLine);
  const char* verbosity = std::getenv("GRPC_VERBOSITY");
  if (verbosity != nullptr && verbosity[0] != '\0') return;
  gpr_set_log_verbosity(level <= spdlog::level::trace   ? GPR_LOG_SEVERITY_DEBUG
                        : level <= spdlog::level::debug ? GPR_LOG_SEVERITY_INFO
                                                        : GPR_LOG_SEVERITY_ERROR);
}

}  // namespace

std::string EscapeAndCap(absl::string_view text, size_t max_bytes) {
  size_t omitted;
  const absl::string_view kept = Cap(text, max_bytes, &omitted);
  std::string out;
  out.reserve(kept.size() + 8);
  AppendEscaped(kept, Escape::kPeer, out);
  out += OmittedMarker(omitted);
  return out;
}

std::string JsonEscape(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  AppendJsonEscaped(text, out);
  return out;
}

std::string StatusCodeName(int code) {
  std::string name = absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
  return name.empty() ? absl::StrCat("CODE_", code) : name;
}

void LogField::AppendText(std::string& out) const {
  out += ' ';
  out.append(key_.data(), key_.size());
  out += '=';
  std::string scratch;
  absl::string_view text;
  size_t omitted;
  if (!StringValue(value_, scratch, &text, &omitted)) {
    out += NumberText(value_);
    return;
  }
  if (omitted == 0 && !NeedsQuotes(text)) {
    out.append(text.data(), text.size());
    return;
  }
  out += '"';
  AppendEscaped(text, Escape::kQuoted, out);
  out += OmittedMarker(omitted);
  out += '"';
}

void LogField::AppendJson(std::string& out) const {
  out += ",\"";
  AppendJsonEscaped(key_, out);
  out += "\":";
  std::string scratch;
  absl::string_view text;
  size_t omitted;
  if (!StringValue(value_, scratch, &text, &omitted)) {
    const std::string number = NumberText(value_);
    // JSON has no inf/nan.
    out += (number == "inf" || number == "-inf" || number == "nan" || number == "-nan")
               ? absl::StrCat("\"", number, "\"")
               : number;
    return;
  }
  out += '"';
  AppendJsonEscaped(text, out);
  out += OmittedMarker(omitted);
  out += '"';
}

void LogAt(spdlog::level::level_enum level, absl::string_view message, LogFields fields) {
  spdlog::logger* logger = spdlog::default_logger_raw();
  if (!logger->should_log(level)) return;
  LogFields const* previous = t_fields;
  t_fields = &fields;
  logger->log(level, spdlog::string_view_t(message.data(), message.size()));
  t_fields = previous;
}

absl::Status ConfigureLogging(const std::string& level, const std::string& format,
                              spdlog::sink_ptr sink) {
  const spdlog::level::level_enum parsed = spdlog::level::from_str(level);
  if (parsed == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-level=", level, ": expected trace, debug, info, warn or error"));
  }
  if (sink == nullptr) sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("certcast", std::move(sink));
  auto formatter = std::make_unique<spdlog::pattern_formatter>(spdlog::pattern_time_type::utc);
  if (format == "json") {
    formatter->add_flag<MessageFlag>('*', true).add_flag<FieldsFlag>('&', true).set_pattern(
        R"({"time":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l","msg":"%*"%&})");
  } else if (format == "text") {
    formatter->add_flag<MessageFlag>('*', false)
        .add_flag<FieldsFlag>('&', false)
        .set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %L %*%&");
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--log-format=", format, ": expected text or json"));
  }
  logger->set_formatter(std::move(formatter));
  logger->set_level(parsed);
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(std::move(logger));
  g_json = format == "json";
  RouteGrpcLogging(parsed);
  return absl::OkStatus();
}

bool LogsAsJson() { return g_json; }

void ConfigureLoggingFromArgv(int argc, char** argv) {
  std::string level = "info";
  std::string format = "text";
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") break;
    for (auto [name, value] : {std::pair<absl::string_view, std::string*>{"--log_format", &format},
                               {"--log_level", &level}}) {
      if (absl::StartsWith(arg, absl::StrCat(name, "="))) {
        *value = std::string(arg.substr(name.size() + 1));
      } else if (arg == name && i + 1 < argc) {
        *value = argv[i + 1];
      }
    }
  }
  // An invalid value is reported by ConfigureLoggingFromFlags.
  if (!ConfigureLogging(level, format).ok()) ConfigureLogging("info", "text").IgnoreError();
}

absl::Status ConfigureLoggingFromFlags() {
  return ConfigureLogging(absl::GetFlag(FLAGS_log_level), absl::GetFlag(FLAGS_log_format));
}

}  // namespace certcast
