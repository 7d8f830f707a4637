// Parsing and validation of TLS certificate material (PEM chain, private key, optional CA)
// with OpenSSL. Shared by server (before publishing) and client (before applying).
// Stateless free functions; thread-safe.
#ifndef CERTCAST_COMMON_CERTIFICATE_H_
#define CERTCAST_COMMON_CERTIFICATE_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/secret.h"

namespace certcast {

// The three files of a kubernetes.io/tls Secret.
struct CertificateMaterial {
  std::string chain_pem;  // tls.crt: leaf first, then intermediates
  SecretBytes key_pem;    // tls.key
  std::string ca_pem;     // ca.crt, may be empty

  bool operator==(const CertificateMaterial& o) const {
    return chain_pem == o.chain_pem && key_pem == o.key_pem && ca_pem == o.ca_pem;
  }
  bool operator!=(const CertificateMaterial& o) const { return !(*this == o); }
};

// What validation learned about valid material. Contains no key bytes.
struct CertificateInfo {
  std::string fingerprint;             // SHA-256 of the leaf DER, lowercase hex, no colons
  std::string subject;                 // RFC 2253 style one-line subject of the leaf
  std::string issuer;                  // same, of the leaf's issuer
  std::string serial;                  // leaf serial number, uppercase hex
  std::vector<std::string> dns_names;  // DNS SANs of the leaf, in certificate order
  absl::Time not_before;
  absl::Time not_after;
  int chain_length = 0;  // certificates in tls.crt
  bool has_ca = false;   // ca.crt present
  std::string key_type;  // "RSA-2048", "EC-P256", "EC-P384", "Ed25519", ...
};

struct ValidationOptions {
  absl::Time now = absl::InfinitePast();        // validity is checked against this instant
  std::vector<std::string> required_dns_names;  // each must be covered by the leaf (wildcards ok)
};

// Validates material for certificate `name`.
//
// Checks, in order: tls.crt parses as one or more PEM certificates with nothing else in the file
// (no trailing garbage, no private key); each certificate is issued (and signed) by the next one;
// when ca.crt is present it parses and the last chain certificate is issued by a CA in it or is
// that CA; tls.key holds exactly one unencrypted private key (RSA of 2048 bits or more, ECDSA
// P-256/P-384/P-521 or Ed25519, in PKCS#1, PKCS#8 or SEC1 form; an "EC PARAMETERS" block is
// tolerated) that matches the leaf; the leaf is valid at `options.now` (not expired, not yet valid
// are both errors; the default InfinitePast fails closed); every required DNS name is covered by
// a leaf DNS SAN. Chain links: a certificate not issued by the next one is kReasonChainOrder
// (message says "out of order" when another order would link); a certificate naming the next
// one as issuer whose signature does not verify is kReasonBadSignature.
//
// On failure returns InvalidArgument (malformed input, mismatch, order, SAN) or
// FailedPrecondition (expired, not yet valid), with a message that starts with
// `certificate "NAME": FILE: ` and never contains key bytes. The status carries the short
// machine-readable reason as a payload, read with RejectionReason().
absl::StatusOr<CertificateInfo> ValidateMaterial(absl::string_view name,
                                                 const CertificateMaterial& material,
                                                 const ValidationOptions& options);

// Reason codes attached by ValidateMaterial, for counting and metrics labels.
inline constexpr absl::string_view kReasonEmpty = "empty";  // a required file is empty
inline constexpr absl::string_view kReasonMalformedPem =
    "malformed_pem";  // not PEM, truncated, bad base64
inline constexpr absl::string_view kReasonTrailingData =
    "trailing_data";  // garbage after/between PEM blocks
inline constexpr absl::string_view kReasonWrongBlockType =
    "wrong_block_type";  // e.g. key in tls.crt
inline constexpr absl::string_view kReasonChainOrder = "chain_order";
inline constexpr absl::string_view kReasonBadSignature = "bad_signature";
inline constexpr absl::string_view kReasonCaMismatch = "ca_mismatch";
inline constexpr absl::string_view kReasonEncryptedKey = "encrypted_key";
inline constexpr absl::string_view kReasonUnsupportedKey = "unsupported_key";
inline constexpr absl::string_view kReasonMultipleKeys = "multiple_keys";
inline constexpr absl::string_view kReasonKeyMismatch = "key_mismatch";
inline constexpr absl::string_view kReasonExpired = "expired";
inline constexpr absl::string_view kReasonNotYetValid = "not_yet_valid";
inline constexpr absl::string_view kReasonMissingSan = "missing_san";

// The reason code attached to `status` by ValidateMaterial, or "other" when none is attached.
std::string RejectionReason(const absl::Status& status);

// Returns `status` with `reason` attached (used by sources for "missing", "unreadable", ...).
absl::Status WithReason(absl::Status status, absl::string_view reason);

// Fingerprint (SHA-256 of the DER, lowercase hex) of the first certificate in `chain_pem`.
// InvalidArgument when it holds no parseable certificate.
absl::StatusOr<std::string> LeafFingerprint(absl::string_view chain_pem);

// SHA-256 of `der`, lowercase hex.
std::string Sha256Hex(absl::string_view data);

// A digest over chain, key and CA: equal digests mean identical content. Hex, no key bytes
// recoverable.
std::string ContentDigest(const CertificateMaterial& material);

// True when DNS name `pattern` (possibly "*.example.com") covers `host` per RFC 6125: the
// wildcard matches exactly one leftmost label. Case-insensitive.
bool DnsNameMatches(absl::string_view pattern, absl::string_view host);

}  // namespace certcast

#endif  // CERTCAST_COMMON_CERTIFICATE_H_
