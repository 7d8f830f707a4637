#include "common/build_info.h"

#include "absl/strings/str_cat.h"

namespace certcast {

// CMake defines both for this file only, so a new commit recompiles one file.
absl::string_view CertcastVersion() { return CERTCAST_VERSION; }

absl::string_view CertcastCommit() { return CERTCAST_GIT_COMMIT; }

std::string VersionLine(absl::string_view program) {
  return absl::StrCat(program, " ", CertcastVersion(), " (commit ", CertcastCommit(), ")");
}

}  // namespace certcast
