// Start-up checks of the PEM files an operator names on the command line (--ca, --tls-cert,
// --tls-key, --client-ca), so that a wrong file stops the process at start with an error naming
// the flag and the file, instead of failing every TLS handshake later. Stateless; thread-safe.
#ifndef CERTCAST_COMMON_CREDENTIAL_FILES_H_
#define CERTCAST_COMMON_CREDENTIAL_FILES_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "common/filesystem.h"

namespace certcast {

// `path` (given as `flag`, e.g. "--ca") holds one or more PEM certificates. Errors start with
// "FLAG PATH: ": the read error (its code kept), or InvalidArgument for an empty file or one
// without a parsable PEM certificate.
absl::Status CheckCertificateFile(Filesystem& fs, absl::string_view flag, const std::string& path);

// `cert_path` holds a PEM certificate chain and `key_path` one unencrypted PEM private key that
// belongs to its first certificate. InvalidArgument naming the flag and file otherwise (read
// errors keep their code). Key bytes never appear in an error.
absl::Status CheckKeyPairFiles(Filesystem& fs, absl::string_view cert_flag,
                               const std::string& cert_path, absl::string_view key_flag,
                               const std::string& key_path);

}  // namespace certcast

#endif  // CERTCAST_COMMON_CREDENTIAL_FILES_H_
