// What this build is: certcast's release version and the git commit it was built from, for
// --version and the logs. Stateless; thread-safe.
#ifndef CERTCAST_COMMON_BUILD_INFO_H_
#define CERTCAST_COMMON_BUILD_INFO_H_

#include <string>

#include "absl/strings/string_view.h"

namespace certcast {

// The CMake project version ("0.1.0").
absl::string_view CertcastVersion();

// `git describe --always --dirty --abbrev=12` at configure time; "unknown" when the source was
// not a git checkout.
absl::string_view CertcastCommit();

// "PROGRAM VERSION (commit COMMIT)", the --version line.
std::string VersionLine(absl::string_view program);

}  // namespace certcast

#endif  // CERTCAST_COMMON_BUILD_INFO_H_
