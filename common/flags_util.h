// Command-line helpers shared by the binaries' main(): repeatable flags, dash spellings, the
// --help/-h text generated from the flag registry, and duration values checked before abseil
// parses them. Stateless; thread-safe (they read the flag registry, which main() owns).
#ifndef CERTCAST_COMMON_FLAGS_UTIL_H_
#define CERTCAST_COMMON_FLAGS_UTIL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace certcast {

// absl flags keep only the last occurrence of a flag; certcast has repeatable ones
// (--certificate=a=/x --certificate=b=/y). This removes every occurrence of `--NAME=V` and
// `--NAME V` from argv (compacting it and updating argc) and returns the values in order.
std::vector<std::string> TakeRepeatedFlag(int* argc, char** argv, const std::string& name);

// certcast documents its flags with dashes (--state-dir); absl flags spell them with
// underscores. Rewrites the name part of every `--flag-name[=value]` argument in place, so both
// spellings work. Stops at a bare "--".
void NormalizeFlagNames(int argc, char** argv);

// Splits "KEY=VALUE" at the first '='. False when there is no '=' or either side is empty.
bool SplitKeyValue(const std::string& text, std::string* key, std::string* value);

// True when argv (before a bare "--") holds `--help`, `-help` or `-h`; abseil's own --help
// prints nothing useful for certcast and exits 1. (--helpfull stays abseil's.)
bool WantsHelp(int argc, char** argv);

// True when argv (before a bare "--") holds `--version`.
bool WantsVersion(int argc, char** argv);

// A titled group of flags for --help; `flags` are registry names (underscores).
struct FlagGroup {
  std::string title;
  std::vector<std::string> flags;
};

// The --help text: `intro` (what the program does, usage examples), then every flag of `groups`
// with its value type, default and help, in their order, then `outro`. Flags that certcast
// defines (not abseil's own) and no group names are listed under "Other flags", so none is
// hidden. Flags are spelled with dashes, as the README spells them.
std::string HelpText(absl::string_view intro, const std::vector<FlagGroup>& groups,
                     absl::string_view outro);

// The registry names of the flags certcast itself defines (everything but abseil's own
// --help*/--version/--flagfile family), sorted.
std::vector<std::string> CertcastFlagNames();

// abseil rejects `--heartbeat-interval=5` with "Illegal value '5'". Checks every value given
// to an absl::Duration flag in argv (both `--NAME=V` and `--NAME V`) and returns
// InvalidArgument naming the flag, and for a bare number saying that a unit is needed with an
// example. Call after NormalizeFlagNames, before absl::ParseCommandLine.
absl::Status CheckDurationFlags(int argc, char** argv);

}  // namespace certcast

#endif  // CERTCAST_COMMON_FLAGS_UTIL_H_
