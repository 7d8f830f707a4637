#include "server/store_encryption.h"

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <memory>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace certcast {
namespace {

constexpr char kMagic[] = "certcast-sealed v1 ";
constexpr size_t kMagicLength = sizeof(kMagic) - 1;
constexpr size_t kKeyIdLength = 16;
constexpr size_t kNonceBytes = 12;
constexpr size_t kTagBytes = 16;
constexpr size_t kHeaderLength = kMagicLength + kKeyIdLength + 1;

using CipherContext = std::unique_ptr<EVP_CIPHER_CTX, decltype(&EVP_CIPHER_CTX_free)>;

std::string KeyId(const SecretBytes& key) {
  constexpr char kLabel[] = "certcast store key";
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_length = 0;
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> sha(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (sha == nullptr || EVP_DigestInit_ex(sha.get(), EVP_sha256(), nullptr) != 1 ||
      EVP_DigestUpdate(sha.get(), kLabel, sizeof(kLabel)) != 1 ||
      EVP_DigestUpdate(sha.get(), key.reveal().data(), key.size()) != 1 ||
      EVP_DigestFinal_ex(sha.get(), digest, &digest_length) != 1) {
    return "unknown";
  }
  return absl::BytesToHexString(
             absl::string_view(reinterpret_cast<const char*>(digest), digest_length))
      .substr(0, kKeyIdLength);
}

// The additional authenticated data: the envelope's header and the etcd key.
std::string Aad(absl::string_view header, absl::string_view context) {
  return absl::StrCat(header, context);
}

absl::StatusOr<SecretBytes> ReadKeyFile(Filesystem& fs, const char* flag, const std::string& path) {
  absl::StatusOr<std::string> content = fs.ReadFile(path);
  if (!content.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, "=", path, ": cannot read the key file (",
                                                   content.status().message(), ")"));
  }
  absl::Cleanup wipe_content = [&content] { CleanseString(&*content); };
  std::string raw;
  absl::Cleanup wipe_raw = [&raw] { CleanseString(&raw); };
  if (!absl::Base64Unescape(absl::StripAsciiWhitespace(*content), &raw)) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", path,
                     ": not base64; expected the base64 of 32 random bytes (e.g. "
                     "`head -c 32 /dev/urandom | base64`)"));
  }
  if (raw.size() != StoreEncryption::kKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, "=", path, ": holds ", raw.size(),
                     " bytes after base64 decoding; an AES-256 key is exactly 32 (e.g. "
                     "`head -c 32 /dev/urandom | base64`)"));
  }
  return SecretBytes(raw);
}

}  // namespace

bool IsSealedEnvelope(absl::string_view value) {
  return value.size() >= kHeaderLength + kNonceBytes + kTagBytes &&
         absl::StartsWith(value, kMagic) && value[kHeaderLength - 1] == '\n';
}

absl::StatusOr<StoreEncryption> StoreEncryption::FromKeys(SecretBytes current,
                                                          std::optional<SecretBytes> previous) {
  if (current.size() != kKeyBytes || (previous.has_value() && previous->size() != kKeyBytes)) {
    return absl::InvalidArgumentError("an AES-256 key is exactly 32 bytes");
  }
  StoreEncryption encryption;
  encryption.current_id_ = KeyId(current);
  encryption.current_ = std::move(current);
  if (previous.has_value()) {
    encryption.previous_id_ = KeyId(*previous);
    encryption.previous_ = std::move(previous);
  }
  return encryption;
}

absl::StatusOr<StoreEncryption> StoreEncryption::FromFiles(Filesystem& fs,
                                                           const std::string& key_file,
                                                           const std::string& previous_key_file) {
  if (key_file.empty()) {
    return absl::InvalidArgumentError(
        "--store-encryption-key-file is required with an etcd --store: key material is "
        "encrypted before it is written to etcd");
  }
  ASSIGN_OR_RETURN(SecretBytes current, ReadKeyFile(fs, "--store-encryption-key-file", key_file));
  std::optional<SecretBytes> previous;
  if (!previous_key_file.empty()) {
    ASSIGN_OR_RETURN(previous,
                     ReadKeyFile(fs, "--store-encryption-previous-key-file", previous_key_file));
    if (*previous == current) {
      return absl::InvalidArgumentError(
          absl::StrCat("--store-encryption-previous-key-file=", previous_key_file,
                       " holds the same key as --store-encryption-key-file=", key_file));
    }
  }
  return FromKeys(std::move(current), std::move(previous));
}

absl::StatusOr<std::string> StoreEncryption::Seal(absl::string_view plaintext,
                                                  absl::string_view context) const {
  std::string envelope = absl::StrCat(kMagic, current_id_, "\n");
  const std::string aad = Aad(envelope, context);
  envelope.resize(kHeaderLength + kNonceBytes + plaintext.size() + kTagBytes);
  auto* nonce = reinterpret_cast<unsigned char*>(&envelope[kHeaderLength]);
  auto* out = nonce + kNonceBytes;
  if (RAND_bytes(nonce, kNonceBytes) != 1) return absl::InternalError("RAND_bytes failed");
  CipherContext ctx(EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free);
  int length = 0;
  const auto* key = reinterpret_cast<const unsigned char*>(current_.reveal().data());
  if (ctx == nullptr ||
      EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key, nonce) != 1 ||
      EVP_EncryptUpdate(ctx.get(), nullptr, &length,
                        reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) != 1 ||
      EVP_EncryptUpdate(ctx.get(), out, &length,
                        reinterpret_cast<const unsigned char*>(plaintext.data()),
                        static_cast<int>(plaintext.size())) != 1 ||
      EVP_EncryptFinal_ex(ctx.get(), out + length, &length) != 1 ||
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes, out + plaintext.size()) !=
          1) {
    CleanseString(&envelope);
    return absl::InternalError("AES-256-GCM encryption failed");
  }
  return envelope;
}

bool StoreEncryption::SealedWithCurrentKey(absl::string_view envelope) const {
  return IsSealedEnvelope(envelope) && envelope.substr(kMagicLength, kKeyIdLength) == current_id_;
}

absl::StatusOr<std::string> StoreEncryption::Open(absl::string_view envelope,
                                                  absl::string_view context,
                                                  absl::string_view where) const {
  if (!IsSealedEnvelope(envelope)) {
    return absl::DataLossError(
        absl::StrCat(where, " is not an encrypted certcast value (no \"", kMagic, "\" envelope)"));
  }
  const absl::string_view id = envelope.substr(kMagicLength, kKeyIdLength);
  const SecretBytes* key = nullptr;
  if (id == current_id_) {
    key = &current_;
  } else if (previous_.has_value() && id == previous_id_) {
    key = &*previous_;
  } else {
    return absl::FailedPreconditionError(absl::StrCat(
        where, " was encrypted with key id ", id,
        ", which is neither --store-encryption-key-file (", current_id_,
        ") nor --store-encryption-previous-key-file",
        previous_.has_value() ? absl::StrCat(" (", previous_id_, ")") : std::string(" (unset)")));
  }
  const std::string aad = Aad(envelope.substr(0, kHeaderLength), context);
  const auto* nonce = reinterpret_cast<const unsigned char*>(envelope.data() + kHeaderLength);
  const size_t ciphertext_length = envelope.size() - kHeaderLength - kNonceBytes - kTagBytes;
  const unsigned char* ciphertext = nonce + kNonceBytes;
  std::string plaintext(ciphertext_length, '\0');
  CipherContext ctx(EVP_CIPHER_CTX_new(), &EVP_CIPHER_CTX_free);
  int length = 0;
  const auto* key_bytes = reinterpret_cast<const unsigned char*>(key->reveal().data());
  auto* out = reinterpret_cast<unsigned char*>(plaintext.data());
  // The tag is passed as a copy: EVP_CTRL_GCM_SET_TAG takes a non-const pointer.
  std::string tag(envelope.substr(envelope.size() - kTagBytes));
  const bool ok =
      ctx != nullptr &&
      EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, key_bytes, nonce) == 1 &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &length,
                        reinterpret_cast<const unsigned char*>(aad.data()),
                        static_cast<int>(aad.size())) == 1 &&
      EVP_DecryptUpdate(ctx.get(), out, &length, ciphertext, static_cast<int>(ciphertext_length)) ==
          1 &&
      EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes, tag.data()) == 1 &&
      EVP_DecryptFinal_ex(ctx.get(), out + length, &length) == 1;
  if (!ok) {
    CleanseString(&plaintext);
    return absl::DataLossError(
        absl::StrCat(where, " fails authentication with key id ", id,
                     ": the value was altered, or stored under another key"));
  }
  return plaintext;
}

}  // namespace certcast
