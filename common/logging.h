// Logging set-up for the binaries' main(): spdlog to stderr, as text or one JSON object per line.
// Call once, before starting threads. Library code only logs; it never configures.
#ifndef CERTCAST_COMMON_LOGGING_H_
#define CERTCAST_COMMON_LOGGING_H_

#include <string>

#include "absl/status/status.h"

namespace certcast {

// `level`: trace, debug, info, warn, error. `format`: text or json.
// InvalidArgument naming the bad value otherwise.
absl::Status ConfigureLogging(const std::string& level, const std::string& format);

// Escapes `text` for inclusion in a JSON string literal.
std::string JsonEscape(const std::string& text);

}  // namespace certcast

#endif  // CERTCAST_COMMON_LOGGING_H_
