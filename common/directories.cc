#include "common/directories.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace certcast {

absl::Status CreateParentDirectories(Filesystem& fs, absl::string_view flag,
                                     const std::string& path) {
  const std::vector<absl::string_view> parts = absl::StrSplit(path, '/', absl::SkipEmpty());
  std::string prefix = absl::StartsWith(path, "/") ? "/" : "";
  std::string parent = prefix.empty() ? "." : "/";
  // Every component but the last is a parent.
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (parts[i] == ".") continue;
    absl::StrAppend(&prefix, parts[i]);
    if (parts[i] != "..") {
      // CreateDir is OK for an existing directory and fails for a file in the way.
      const bool existed = fs.Exists(prefix);
      absl::Status created = fs.CreateDir(prefix, 0755);
      if (created.ok() && !existed) created = fs.SyncDir(parent);
      if (!created.ok()) return Annotate(created, absl::StrCat(flag, " ", path));
    }
    parent = prefix;
    prefix += '/';
  }
  return absl::OkStatus();
}

}  // namespace certcast
