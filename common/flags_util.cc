#include "common/flags_util.h"

#include <algorithm>
#include <cstdint>
#include <set>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"

namespace certcast {

std::vector<std::string> TakeRepeatedFlag(int* argc, char** argv, const std::string& name) {
  std::vector<std::string> values;
  const std::string with_value = "--" + name + "=";
  const std::string bare = "--" + name;
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--") {  // everything after "--" is positional
      while (i < *argc) argv[out++] = argv[i++];
      break;
    }
    if (arg.rfind(with_value, 0) == 0) {
      values.push_back(arg.substr(with_value.size()));
    } else if (arg == bare && i + 1 < *argc) {
      values.push_back(argv[++i]);
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  argv[out] = nullptr;
  return values;
}

void NormalizeFlagNames(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    char* arg = argv[i];
    if (arg[0] != '-' || arg[1] != '-') continue;
    if (arg[2] == '\0') return;  // "--": the rest is positional
    for (char* c = arg + 2; *c != '\0' && *c != '='; ++c) {
      if (*c == '-') *c = '_';
    }
  }
}

bool SplitKeyValue(const std::string& text, std::string* key, std::string* value) {
  const size_t eq = text.find('=');
  if (eq == std::string::npos || eq == 0 || eq + 1 == text.size()) return false;
  *key = text.substr(0, eq);
  *value = text.substr(eq + 1);
  return true;
}

namespace {

// Arguments main() sees as options: up to a bare "--".
template <typename Fn>
bool AnyOption(int argc, char** argv, Fn&& matches) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") return false;
    if (matches(arg)) return true;
  }
  return false;
}

std::string Dashed(absl::string_view name) { return absl::StrReplaceAll(name, {{"_", "-"}}); }

bool IsAbseilFlag(const absl::CommandLineFlag& flag) {
  return absl::StrContains(flag.Filename(), "absl/");
}

// "=DURATION", "=N", "" (bool) or "=VALUE": what follows the flag name in the help.
std::string ValueHint(const absl::CommandLineFlag& flag) {
  if (flag.IsOfType<bool>()) return "";
  if (flag.IsOfType<absl::Duration>()) return "=DURATION";
  if (flag.IsOfType<int>() || flag.IsOfType<int64_t>() || flag.IsOfType<uint32_t>()) return "=N";
  if (flag.IsOfType<std::vector<std::string>>()) return "=VALUE (repeatable)";
  return "=VALUE";
}

// Appends `text` wrapped at 100 columns, each line indented by `indent` spaces.
void AppendWrapped(absl::string_view text, int indent, std::string& out) {
  constexpr size_t kWidth = 100;
  std::string line;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!line.empty() && indent + line.size() + 1 + word.size() > kWidth) {
      absl::StrAppend(&out, std::string(indent, ' '), line, "\n");
      line.clear();
    }
    if (!line.empty()) line += ' ';
    absl::StrAppend(&line, word);
  }
  if (!line.empty()) absl::StrAppend(&out, std::string(indent, ' '), line, "\n");
}

void AppendFlag(const absl::CommandLineFlag& flag, std::string& out) {
  absl::StrAppend(&out, "  --", Dashed(flag.Name()), ValueHint(flag));
  const std::string default_value = flag.DefaultValue();
  if (!default_value.empty()) absl::StrAppend(&out, "  (default: ", default_value, ")");
  out += '\n';
  AppendWrapped(flag.Help(), 6, out);
}

}  // namespace

bool WantsHelp(int argc, char** argv) {
  return AnyOption(argc, argv, [](absl::string_view arg) {
    return arg == "--help" || arg == "-help" || arg == "-h";
  });
}

bool WantsVersion(int argc, char** argv) {
  return AnyOption(argc, argv, [](absl::string_view arg) { return arg == "--version"; });
}

std::vector<std::string> CertcastFlagNames() {
  std::vector<std::string> names;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (!flag->IsRetired() && !IsAbseilFlag(*flag)) names.emplace_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

std::string HelpText(absl::string_view intro, const std::vector<FlagGroup>& groups,
                     absl::string_view outro) {
  std::string out(intro);
  if (!out.empty() && out.back() != '\n') out += '\n';
  std::set<std::string> shown;
  for (const FlagGroup& group : groups) {
    absl::StrAppend(&out, "\n", group.title, ":\n");
    for (const std::string& name : group.flags) {
      const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
      if (flag == nullptr) continue;  // HelpTest checks that every group names real flags
      AppendFlag(*flag, out);
      shown.insert(name);
    }
  }
  bool other = false;
  for (const std::string& name : CertcastFlagNames()) {
    if (shown.count(name) != 0) continue;
    if (!other) absl::StrAppend(&out, "\nOther flags:\n");
    other = true;
    AppendFlag(*absl::FindCommandLineFlag(name), out);
  }
  if (!outro.empty()) absl::StrAppend(&out, "\n", outro, outro.back() == '\n' ? "" : "\n");
  return out;
}

absl::Status CheckDurationFlags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (!absl::StartsWith(arg, "--")) continue;
    const size_t eq = arg.find('=');
    const absl::string_view name = arg.substr(2, eq == absl::string_view::npos ? arg.npos : eq - 2);
    const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr || !flag->IsOfType<absl::Duration>()) continue;
    absl::string_view value;
    if (eq != absl::string_view::npos) {
      value = arg.substr(eq + 1);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      continue;  // abseil reports the missing value
    }
    absl::Duration parsed;
    if (absl::ParseDuration(value, &parsed)) continue;
    double number;
    if (absl::SimpleAtod(value, &number)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", Dashed(name), "=", value,
                       ": a duration needs a unit (ns, us, ms, s, m, h), e.g. --", Dashed(name),
                       "=", value, "s or --", Dashed(name), "=1m30s"));
    }
    return absl::InvalidArgumentError(
        absl::StrCat("--", Dashed(name), "=", value,
                     ": not a duration; write a number with a unit, e.g. 30s, 5m or 1h30m"));
  }
  return absl::OkStatus();
}

}  // namespace certcast
