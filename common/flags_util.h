// Command-line helpers shared by the binaries' main().
#ifndef CERTCAST_COMMON_FLAGS_UTIL_H_
#define CERTCAST_COMMON_FLAGS_UTIL_H_

#include <string>
#include <vector>

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

}  // namespace certcast

#endif  // CERTCAST_COMMON_FLAGS_UTIL_H_
