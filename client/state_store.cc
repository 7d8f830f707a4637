#include "client/state_store.h"

#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace certcast {

absl::Status ClientStateStore::Init() {
  absl::Status created = fs_->CreateDir(dir_, 0700);
  if (!created.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create state directory ", dir_, ": ", created.message()));
  }
  // What is recorded here decides which version the client asks for: nobody else may write it.
  return SecureDirectory(*fs_, dir_, "state directory", 0700);
}

std::optional<HeldVersion> ClientStateStore::Load(const std::string& name) {
  const std::string path = JoinPath(dir_, name + ".held");
  absl::StatusOr<std::string> text = fs_->ReadFile(path);
  if (!text.ok()) {
    if (!absl::IsNotFound(text.status())) {
      LogWarn("cannot read the state file; the files on disk decide",
              {{"path", path}, {"error", text.status()}});
    }
    return std::nullopt;
  }
  std::vector<std::string> fields =
      absl::StrSplit(absl::StripAsciiWhitespace(*text), ' ', absl::SkipEmpty());
  HeldVersion held;
  int64_t not_after = 0;
  // The expiry was added later: files without it are still valid.
  if (fields.size() < 2 || fields.size() > 3 || !absl::SimpleAtoi(fields[0], &held.version) ||
      fields[1].size() != 64 || (fields.size() == 3 && !absl::SimpleAtoi(fields[2], &not_after))) {
    LogWarn("not a certcast client state file; the files on disk decide", {{"path", path}});
    return std::nullopt;
  }
  held.fingerprint = fields[1];
  if (fields.size() == 3) held.not_after = absl::FromUnixSeconds(not_after);
  return held;
}

absl::Status ClientStateStore::Save(const std::string& name, const HeldVersion& held) {
  return WriteFileAtomically(
      *fs_, JoinPath(dir_, name + ".held"),
      absl::StrCat(held.version, " ", held.fingerprint,
                   held.not_after == absl::InfinitePast()
                       ? std::string()
                       : absl::StrCat(" ", absl::ToUnixSeconds(held.not_after)),
                   "\n"),
      0600);
}

absl::Status ClientStateStore::Clear(const std::string& name) {
  absl::Status removed = fs_->Remove(JoinPath(dir_, name + ".held"));
  if (!removed.ok() && !absl::IsNotFound(removed)) return removed;
  return fs_->SyncDir(dir_);
}

}  // namespace certcast
