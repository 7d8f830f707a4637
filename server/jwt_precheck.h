// A look at a ServiceAccount token before anyone is asked about it: Kubernetes' projected tokens
// are JWTs, so a bearer token that is not one, is not meant for our audience, or has expired
// cannot pass a TokenReview. Refusing those here keeps a flood of made-up tokens away from the
// Kubernetes API. Nothing is verified: the signature is the API server's business (TokenReview);
// a token that passes here may still be refused there.
// Pure functions; thread-safe.
#ifndef CERTCAST_SERVER_JWT_PRECHECK_H_
#define CERTCAST_SERVER_JWT_PRECHECK_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace certcast {

// Larger than any projected ServiceAccount token (about 1 KiB with a bound pod).
inline constexpr size_t kMaxJwtBytes = 8 * 1024;

struct JwtClaims {
  absl::Time expires;  // `exp`
};

// Unauthenticated (saying what is wrong, never quoting the token) unless `token` is a JWT of at
// most kMaxJwtBytes: three base64url parts, a JSON object header naming an `alg` other than
// "none", and a JSON object payload whose `aud` (a string or an array of strings) contains
// `audience` and whose numeric `exp` is after `now`. Returns the claims it read.
absl::StatusOr<JwtClaims> PrecheckJwt(absl::string_view token, absl::string_view audience,
                                      absl::Time now);

}  // namespace certcast

#endif  // CERTCAST_SERVER_JWT_PRECHECK_H_
