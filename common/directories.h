// Creating the parent directories of the directories an operator names (--state-dir,
// --output-dir), as daemons do, so `--state-dir=/var/lib/certcast/a` works on a fresh host.
// Stateless; thread-safe when `fs` is.
#ifndef CERTCAST_COMMON_DIRECTORIES_H_
#define CERTCAST_COMMON_DIRECTORIES_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/filesystem.h"

namespace certcast {

// Creates the missing parents of `path` (0755, like `mkdir -p`), but not `path` itself: its
// owner (the state store, the file sink) creates it with its documented mode and checks it.
// Each created directory is made durable in its parent. An error (a parent that is a file, no
// permission) starts with "FLAG PATH: " and keeps the failing mkdir's code and reason.
absl::Status CreateParentDirectories(Filesystem& fs, absl::string_view flag,
                                     const std::string& path);

}  // namespace certcast

#endif  // CERTCAST_COMMON_DIRECTORIES_H_
