#include "common/flags_util.h"

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

}  // namespace certcast
