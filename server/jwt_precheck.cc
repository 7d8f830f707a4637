#include "server/jwt_precheck.h"

#include <cmath>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace certcast {
namespace {

using Json = nlohmann::json;

// Real headers and payloads nest three levels deep; deeper input is not a token, and refusing
// it keeps the parser's work small.
constexpr int kMaxDepth = 8;

absl::Status NotAJwt(absl::string_view why) {
  return absl::UnauthenticatedError(absl::StrCat("the bearer token is not a usable JWT: ", why));
}

bool Base64UrlAlphabet(absl::string_view part) {
  for (char c : part) {
    if (!(absl::ascii_isalnum(c) || c == '-' || c == '_')) return false;
  }
  return !part.empty();
}

// Decodes one base64url part into a JSON object; nullopt-like discarded value when it is not one.
Json DecodeObject(absl::string_view part) {
  std::string text;
  if (!Base64UrlAlphabet(part) || !absl::WebSafeBase64Unescape(part, &text)) {
    return Json(Json::value_t::discarded);
  }
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      if (++depth > kMaxDepth) return Json(Json::value_t::discarded);
    } else if (c == '}' || c == ']') {
      --depth;
    }
  }
  Json json = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!json.is_object()) return Json(Json::value_t::discarded);
  return json;
}

}  // namespace

absl::StatusOr<JwtClaims> PrecheckJwt(absl::string_view token, absl::string_view audience,
                                      absl::Time now) {
  if (token.size() > kMaxJwtBytes) {
    return NotAJwt(absl::StrCat("it has ", token.size(), " bytes; the limit is ", kMaxJwtBytes));
  }
  std::vector<absl::string_view> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3) return NotAJwt("it does not have three dot-separated parts");
  const Json header = DecodeObject(parts[0]);
  if (header.is_discarded()) return NotAJwt("its header is not base64url-encoded JSON");
  if (!header.contains("alg") || !header["alg"].is_string() || header["alg"] == "none" ||
      header["alg"] == "") {
    return NotAJwt("its header names no signing algorithm");
  }
  if (!Base64UrlAlphabet(parts[2])) return NotAJwt("it has no signature");
  const Json payload = DecodeObject(parts[1]);
  if (payload.is_discarded()) return NotAJwt("its payload is not base64url-encoded JSON");

  bool audience_ok = false;
  if (payload.contains("aud")) {
    const Json& aud = payload["aud"];
    if (aud.is_string()) {
      audience_ok = aud.get_ref<const std::string&>() == audience;
    } else if (aud.is_array()) {
      for (const Json& entry : aud) {
        audience_ok |= entry.is_string() && entry.get_ref<const std::string&>() == audience;
      }
    }
  }
  if (!audience_ok) {
    return NotAJwt(absl::StrCat("it is not meant for audience \"", audience, "\""));
  }
  if (!payload.contains("exp") || !payload["exp"].is_number()) {
    return NotAJwt("it has no expiry (exp)");
  }
  const double exp = payload["exp"].get<double>();
  if (!std::isfinite(exp) || exp > 1e11 || exp < 0) return NotAJwt("its expiry is out of range");
  const absl::Time expires = absl::FromUnixSeconds(static_cast<int64_t>(exp));
  if (expires <= now) return NotAJwt("it has expired");
  return JwtClaims{expires};
}

}  // namespace certcast
