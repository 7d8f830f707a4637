// StoreEncryption seals the bytes certcast keeps in etcd (a certificate's stored state, which
// holds private keys) before they leave the process, and opens them after they are read:
// AES-256-GCM (OpenSSL EVP) with a random 96-bit nonce per value, the key's id in the envelope so
// a replica knows which key sealed a value, and the etcd key name as additional authenticated
// data so a value cannot be moved to another key unnoticed. A current key seals and opens; an
// optional previous key only opens (key rotation, docs/REPLICAS.md).
//
// Envelope: "certcast-sealed v1 " KEYID "\n" NONCE(12) CIPHERTEXT TAG(16), KEYID being the first
// 16 hex digits of SHA-256 over "certcast store key" and the key (names the key, reveals nothing
// of it). Key bytes never appear in errors or logs; they are wiped when the object goes.
// Immutable after construction; thread-safe.
#ifndef CERTCAST_SERVER_STORE_ENCRYPTION_H_
#define CERTCAST_SERVER_STORE_ENCRYPTION_H_

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/filesystem.h"
#include "common/secret.h"

namespace certcast {

class StoreEncryption {
 public:
  static constexpr size_t kKeyBytes = 32;

  // Reads `key_file` (the current key) and, unless empty, `previous_key_file`: each holds the
  // base64 of exactly 32 bytes (surrounding whitespace allowed). InvalidArgument naming the flag
  // and the file (never its content) when a file is missing, unreadable, not base64, or not 32
  // bytes; or when both files hold the same key.
  static absl::StatusOr<StoreEncryption> FromFiles(Filesystem& fs, const std::string& key_file,
                                                   const std::string& previous_key_file);
  // From raw 32-byte keys (tests). InvalidArgument when a key is not 32 bytes.
  static absl::StatusOr<StoreEncryption> FromKeys(SecretBytes current,
                                                  std::optional<SecretBytes> previous);

  // The envelope of `plaintext`, bound to `context` (the etcd key it is stored under).
  // Internal only on an OpenSSL failure.
  absl::StatusOr<std::string> Seal(absl::string_view plaintext, absl::string_view context) const;
  // The plaintext of an envelope Seal gave for `context`. DataLoss naming `where` when the
  // value is not an envelope or fails authentication (tampered, or stored under another key);
  // FailedPrecondition naming the key id when neither configured key sealed it. The result holds
  // key material: wipe it (CleanseString) when done.
  absl::StatusOr<std::string> Open(absl::string_view envelope, absl::string_view context,
                                   absl::string_view where) const;
  // Whether `envelope` was sealed with the current key (false: the previous key, or unknown), so
  // a leader can re-seal it after a rotation.
  bool SealedWithCurrentKey(absl::string_view envelope) const;

  const std::string& key_id() const { return current_id_; }

 private:
  StoreEncryption() = default;

  SecretBytes current_;
  std::string current_id_;
  std::optional<SecretBytes> previous_;
  std::string previous_id_;
};

// Whether `value` looks like a StoreEncryption envelope (for tests and checks of stored values).
bool IsSealedEnvelope(absl::string_view value);

}  // namespace certcast

#endif  // CERTCAST_SERVER_STORE_ENCRYPTION_H_
