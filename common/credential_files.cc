#include "common/credential_files.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <memory>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/secret.h"
#include "common/status_macros.h"

namespace certcast {
namespace {

struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
using UniqueX509 = std::unique_ptr<X509, X509Free>;

absl::Status FileError(absl::string_view flag, const std::string& path, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(flag, " ", path, ": ", why));
}

// The file's bytes; its read error prefixed with the flag.
absl::StatusOr<std::string> Read(Filesystem& fs, absl::string_view flag, const std::string& path) {
  absl::StatusOr<std::string> bytes = fs.ReadFile(path);
  if (!bytes.ok()) return Annotate(bytes.status(), flag);
  return bytes;
}

// The certificates in `pem`, leaf first; empty when there is none.
std::vector<UniqueX509> ParseCertificates(const std::string& pem) {
  std::vector<UniqueX509> certificates;
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    certificates.emplace_back(x);
  }
  ERR_clear_error();  // the read that ended the loop
  return certificates;
}

// Refuses to prompt for a passphrase: encrypted keys are an error.
int NoPassphrase(char*, int, int, void*) { return -1; }

absl::StatusOr<UniqueX509> CheckCertificates(Filesystem& fs, absl::string_view flag,
                                             const std::string& path) {
  ASSIGN_OR_RETURN(std::string pem, Read(fs, flag, path));
  if (absl::StripAsciiWhitespace(pem).empty()) return FileError(flag, path, "the file is empty");
  std::vector<UniqueX509> certificates = ParseCertificates(pem);
  if (certificates.empty()) {
    return FileError(flag, path,
                     pem.find("-----BEGIN") == std::string::npos
                         ? "not PEM (expected -----BEGIN CERTIFICATE-----)"
                         : "holds no parsable PEM certificate");
  }
  return std::move(certificates.front());
}

}  // namespace

absl::Status CheckCertificateFile(Filesystem& fs, absl::string_view flag, const std::string& path) {
  return CheckCertificates(fs, flag, path).status();
}

absl::Status CheckKeyPairFiles(Filesystem& fs, absl::string_view cert_flag,
                               const std::string& cert_path, absl::string_view key_flag,
                               const std::string& key_path) {
  ASSIGN_OR_RETURN(UniqueX509 leaf, CheckCertificates(fs, cert_flag, cert_path));
  ASSIGN_OR_RETURN(std::string key_text, Read(fs, key_flag, key_path));
  const SecretBytes key_pem(key_text);
  CleanseString(&key_text);
  if (absl::StripAsciiWhitespace(key_pem.reveal()).empty()) {
    return FileError(key_flag, key_path, "the file is empty");
  }
  std::unique_ptr<BIO, BioFree> bio(
      BIO_new_mem_buf(key_pem.reveal().data(), static_cast<int>(key_pem.reveal().size())));
  std::unique_ptr<EVP_PKEY, KeyFree> key(
      PEM_read_bio_PrivateKey(bio.get(), nullptr, &NoPassphrase, nullptr));
  ERR_clear_error();
  if (key == nullptr) {
    return FileError(key_flag, key_path,
                     "holds no unencrypted PEM private key (expected a PEM block of type PRIVATE "
                     "KEY, EC PRIVATE KEY or RSA PRIVATE KEY)");
  }
  if (X509_check_private_key(leaf.get(), key.get()) != 1) {
    ERR_clear_error();
    return FileError(
        key_flag, key_path,
        absl::StrCat("the key does not match the certificate in ", cert_flag, " ", cert_path));
  }
  return absl::OkStatus();
}

}  // namespace certcast
