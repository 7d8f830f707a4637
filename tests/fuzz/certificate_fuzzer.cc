// Fuzzes what a certificate source file can feed the server and what a server can feed a
// client: PEM parsing and ValidateMaterial (chain, key, CA), fingerprints, digests and DNS name
// matching. Input: tls.crt, tls.key, ca.crt and a DNS name, separated by NUL bytes (missing parts
// are empty), so seeds stay readable PEM.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/certificate.h"
#include "common/secret.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  std::vector<absl::string_view> parts = absl::StrSplit(input, absl::MaxSplits('\0', 3));
  parts.resize(4);
  certcast::CertificateMaterial material;
  material.chain_pem = std::string(parts[0]);
  material.key_pem = certcast::SecretBytes(parts[1]);
  material.ca_pem = std::string(parts[2]);

  certcast::ValidationOptions options;
  // A fixed instant keeps runs reproducible; certificates minted by make_seeds.sh before 2030
  // (valid for ten years) cover it.
  options.now = absl::FromUnixSeconds(1893456000);  // 2030-01-01
  if (!parts[3].empty()) options.required_dns_names.emplace_back(parts[3]);
  absl::StatusOr<certcast::CertificateInfo> info =
      certcast::ValidateMaterial("fuzz", material, options);
  if (!info.ok()) {
    // The reason code must always be readable, whatever failed.
    (void)certcast::RejectionReason(info.status());
  }
  (void)certcast::LeafFingerprint(material.chain_pem);
  (void)certcast::ContentDigest(material);
  if (!parts[3].empty()) {
    (void)certcast::DnsNameMatches(parts[3], "a.example.com");
    (void)certcast::DnsNameMatches("*.example.com", parts[3]);
  }
  return 0;
}
