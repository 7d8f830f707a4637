#include "server/jwt_precheck.h"

#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace certcast {
namespace {

const absl::Time kNow = absl::FromUnixSeconds(1'800'000'000);

std::string B64(const std::string& text) {
  std::string out;
  absl::WebSafeBase64Escape(text, &out);
  return out;
}

std::string Jwt(const std::string& payload, const std::string& header = R"({"alg":"RS256"})") {
  return absl::StrCat(B64(header), ".", B64(payload), ".", B64("signature"));
}

std::string Payload(const std::string& aud, int64_t exp) {
  return absl::StrCat(R"({"aud":)", aud, R"(,"exp":)", exp,
                      R"(,"sub":"system:serviceaccount:tenant-a:client"})");
}

// A projected ServiceAccount token for our audience that has not expired passes, with its exp.
TEST(PrecheckJwtTest, AcceptsAnUnexpiredTokenForTheAudience) {
  absl::StatusOr<JwtClaims> claims =
      PrecheckJwt(Jwt(Payload(R"(["vault","certcast"])", 1'800'000'600)), "certcast", kNow);
  ASSERT_TRUE(claims.ok()) << claims.status();
  EXPECT_EQ(claims->expires, absl::FromUnixSeconds(1'800'000'600));
  EXPECT_TRUE(PrecheckJwt(Jwt(Payload(R"("certcast")", 1'800'000'600)), "certcast", kNow).ok());
}

// Everything that cannot pass a TokenReview is refused as Unauthenticated, without quoting it.
TEST(PrecheckJwtTest, RefusesWhatCannotBeAValidToken) {
  const int64_t later = 1'800'000'600;
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"made-up-token", "three dot-separated parts"},
      {"a.b", "three dot-separated parts"},
      {"a.b.c.d", "three dot-separated parts"},
      {Jwt(Payload(R"(["vault"])", later)), "audience"},
      {Jwt(Payload(R"([])", later)), "audience"},
      {Jwt(R"({"exp":1800000600})"), "audience"},
      {Jwt(Payload(R"([1,2])", later)), "audience"},
      {Jwt(Payload(R"(["certcast"])", 1'700'000'000)), "expired"},
      {Jwt(R"({"aud":"certcast"})"), "no expiry"},
      {Jwt(R"({"aud":"certcast","exp":"1800000600"})"), "no expiry"},
      {Jwt(Payload(R"("certcast")", later), R"({"alg":"none"})"), "algorithm"},
      {Jwt(Payload(R"("certcast")", later), R"({"typ":"JWT"})"), "algorithm"},
      {Jwt(Payload(R"("certcast")", later), R"(["alg"])"), "header"},
      {absl::StrCat(B64(R"({"alg":"RS256"})"), ".", B64("not json"), ".sig"), "payload"},
      {absl::StrCat(B64(R"({"alg":"RS256"})"), ".", B64(Payload(R"("certcast")", later)), "."),
       "signature"},
      {absl::StrCat("e30=.", B64(Payload(R"("certcast")", later)), ".sig"), "header"},
      {Jwt(std::string(100, '[') + std::string(100, ']')), "payload"},
      {Jwt(Payload(R"("certcast")", later) + std::string(9000, ' ')), "limit"},
  };
  for (const auto& [token, why] : cases) {
    absl::StatusOr<JwtClaims> claims = PrecheckJwt(token, "certcast", kNow);
    ASSERT_FALSE(claims.ok()) << token;
    EXPECT_EQ(claims.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_NE(claims.status().message().find(why), absl::string_view::npos)
        << claims.status() << " for " << token;
    EXPECT_EQ(claims.status().message().find(token), absl::string_view::npos)
        << "the token is quoted";
  }
}

}  // namespace
}  // namespace certcast
