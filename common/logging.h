// Logging set-up for the binaries' main(): spdlog to stderr, as text or one JSON object per line.
// Call once, before starting threads. Library code only logs; it never configures.
#ifndef CERTCAST_COMMON_LOGGING_H_
#define CERTCAST_COMMON_LOGGING_H_

#include <string>

#include "absl/flags/declare.h"
#include "absl/status/status.h"

// --log-level and --log-format, shared by both binaries.
ABSL_DECLARE_FLAG(std::string, log_level);
ABSL_DECLARE_FLAG(std::string, log_format);

namespace certcast {

// `level`: trace, debug, info, warn, error. `format`: text or json.
// InvalidArgument naming the bad value otherwise.
absl::Status ConfigureLogging(const std::string& level, const std::string& format);

// ConfigureLogging with the --log-level and --log-format flags.
absl::Status ConfigureLoggingFromFlags();

// Escapes `text` for inclusion in a JSON string literal.
std::string JsonEscape(const std::string& text);

}  // namespace certcast

#endif  // CERTCAST_COMMON_LOGGING_H_
