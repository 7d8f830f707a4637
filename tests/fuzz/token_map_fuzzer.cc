// Fuzzes the static token map parser (--token-map) and lookups in what it returns.
#include <cstddef>
#include <cstdint>
#include <string>

#include "server/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<certcast::TokenMap> map = certcast::TokenMap::Parse(yaml, "fuzz-tokens.yaml");
  if (!map.ok()) return 0;
  (void)map->Find("token-1");
  (void)map->Find("");
  return 0;
}
