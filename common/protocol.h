// Protocol constants that server and client must agree on beyond the .proto file.
#ifndef CERTCAST_COMMON_PROTOCOL_H_
#define CERTCAST_COMMON_PROTOCOL_H_

namespace certcast {

// Trailing metadata on a Subscribe stream the server ended with a denial: the short reason
// ("not_allowed", "namespace_mismatch", "no_policy", ...). A client deletes its material on
// --delete-on-revoke only for "not_allowed": the policy no longer lets its namespace have the
// certificate. Other refusals (a misconfigured server without policy) must not wipe a fleet.
inline constexpr char kDenialReasonMetadata[] = "certcast-denial-reason";
inline constexpr char kDenialNotAllowed[] = "not_allowed";
// The client certificate or token that proved the stream's identity expired: reconnect with a
// fresh one (the client re-reads its token file on every connect). Never a revocation.
inline constexpr char kDenialCredentialExpired[] = "credential_expired";

}  // namespace certcast

#endif  // CERTCAST_COMMON_PROTOCOL_H_
