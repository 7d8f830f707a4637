// Fuzzes the JWT precheck (server/jwt_precheck.cc), which reads every bearer token a peer sends
// before any TokenReview: base64url parts, JSON header and payload, aud and exp. Input: the token.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/time/time.h"
#include "server/jwt_precheck.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view token(reinterpret_cast<const char*>(data), size);
  // A fixed instant keeps runs reproducible.
  absl::StatusOr<certcast::JwtClaims> claims =
      certcast::PrecheckJwt(token, "certcast", absl::FromUnixSeconds(1796000000));
  if (claims.ok() && claims->expires <= absl::FromUnixSeconds(1796000000)) __builtin_trap();
  return 0;
}
