#include "common/certificate.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdint>
#include <ctime>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/cord.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/civil_time.h"
#include "common/status_macros.h"

namespace certcast {
namespace {

constexpr absl::string_view kReasonTypeUrl = "certcast.io/reason";
constexpr absl::string_view kChainFile = "tls.crt";
constexpr absl::string_view kKeyFile = "tls.key";
constexpr absl::string_view kCaFile = "ca.crt";
// Kubernetes caps a Secret at 1 MiB; anything larger is not a certificate file.
constexpr size_t kMaxFileSize = 1 << 20;

struct BioDeleter {
  void operator()(BIO* p) const { BIO_free(p); }
};
struct X509Deleter {
  void operator()(X509* p) const { X509_free(p); }
};
struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct BnDeleter {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
struct GeneralNamesDeleter {
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
};
struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
struct OpensslFree {
  void operator()(void* p) const { OPENSSL_free(p); }
};
using BioPtr = std::unique_ptr<BIO, BioDeleter>;
using X509Ptr = std::unique_ptr<X509, X509Deleter>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using BnPtr = std::unique_ptr<BIGNUM, BnDeleter>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, GeneralNamesDeleter>;
using MdCtxPtr = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

// OpenSSL's error strings can quote input, so they never reach a message; and the thread-local
// queue is emptied when validation returns so a later, unrelated report cannot pick them up.
class ErrorQueueGuard {
 public:
  ErrorQueueGuard() { ERR_clear_error(); }
  ~ErrorQueueGuard() { ERR_clear_error(); }
  ErrorQueueGuard(const ErrorQueueGuard&) = delete;
  ErrorQueueGuard& operator=(const ErrorQueueGuard&) = delete;
};

absl::Status Invalid(absl::string_view reason, absl::string_view detail) {
  return WithReason(absl::InvalidArgumentError(detail), reason);
}

// A read-only BIO over `bytes`, no copy (so key bytes are not duplicated).
BioPtr MemBio(absl::string_view bytes) {
  return BioPtr(BIO_new_mem_buf(bytes.data(), static_cast<int>(bytes.size())));
}

bool IsBlank(absl::string_view s) {
  for (char c : s) {
    if (!absl::ascii_isspace(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// PEM labels we may repeat in a message. Anything else is reported as "an unrecognized block" so a
// message never echoes arbitrary file content.
absl::string_view DisplayLabel(absl::string_view label) {
  static constexpr absl::string_view kKnown[] = {
      "CERTIFICATE",
      "X509 CERTIFICATE",
      "TRUSTED CERTIFICATE",
      "CERTIFICATE REQUEST",
      "NEW CERTIFICATE REQUEST",
      "X509 CRL",
      "PRIVATE KEY",
      "RSA PRIVATE KEY",
      "EC PRIVATE KEY",
      "DSA PRIVATE KEY",
      "ENCRYPTED PRIVATE KEY",
      "OPENSSH PRIVATE KEY",
      "PUBLIC KEY",
      "RSA PUBLIC KEY",
      "EC PARAMETERS",
      "DH PARAMETERS",
      "PKCS7",
  };
  for (absl::string_view known : kKnown) {
    if (label == known) return known;
  }
  return "unrecognized";
}

struct PemBlock {
  int index = 0;           // 1-based position in the file
  std::string label;       // e.g. "CERTIFICATE"
  absl::string_view text;  // BEGIN line through END line, pointing into the input
};

// Splits `data` into PEM blocks, strictly: only whitespace may appear outside blocks, every BEGIN
// needs its matching END before the next BEGIN. Says nothing about the block contents.
absl::StatusOr<std::vector<PemBlock>> SplitPem(absl::string_view data) {
  static constexpr absl::string_view kBegin = "-----BEGIN ";
  static constexpr absl::string_view kEnd = "-----END ";
  static constexpr absl::string_view kDashes = "-----";
  std::vector<PemBlock> blocks;
  size_t pos = 0;
  while (true) {
    const size_t begin = data.find(kBegin, pos);
    const absl::string_view gap =
        data.substr(pos, begin == absl::string_view::npos ? absl::string_view::npos : begin - pos);
    if (!IsBlank(gap)) {
      if (blocks.empty() && begin == absl::string_view::npos) {
        return Invalid(kReasonMalformedPem, "no PEM block found (the file is not PEM)");
      }
      const int n = static_cast<int>(blocks.size());
      if (n == 0) {
        return Invalid(kReasonTrailingData, "unexpected data before the first PEM block");
      }
      if (begin == absl::string_view::npos) {
        return Invalid(kReasonTrailingData, absl::StrCat("unexpected data after PEM block ", n));
      }
      return Invalid(kReasonTrailingData,
                     absl::StrCat("unexpected data between PEM blocks ", n, " and ", n + 1));
    }
    if (begin == absl::string_view::npos) break;

    PemBlock block;
    block.index = static_cast<int>(blocks.size()) + 1;
    const size_t label_start = begin + kBegin.size();
    size_t line_end = data.find('\n', label_start);
    if (line_end == absl::string_view::npos) line_end = data.size();
    absl::string_view line =
        absl::StripTrailingAsciiWhitespace(data.substr(label_start, line_end - label_start));
    if (!absl::EndsWith(line, kDashes)) {
      return Invalid(kReasonMalformedPem,
                     absl::StrCat("PEM block ", block.index, " has a malformed BEGIN line"));
    }
    line.remove_suffix(kDashes.size());
    if (line.empty() || line.find('-') != absl::string_view::npos) {
      return Invalid(kReasonMalformedPem,
                     absl::StrCat("PEM block ", block.index, " has a malformed BEGIN line"));
    }
    block.label = std::string(line);
    const size_t end = data.find(kEnd, line_end);
    const size_t next_begin = data.find(kBegin, line_end);
    if (end == absl::string_view::npos ||
        (next_begin != absl::string_view::npos && next_begin < end)) {
      return Invalid(kReasonMalformedPem,
                     absl::StrCat("PEM block ", block.index, " (", DisplayLabel(block.label),
                                  ") has no END line (truncated?)"));
    }
    const std::string end_line = absl::StrCat(kEnd, block.label, kDashes);
    if (!absl::StartsWith(data.substr(end), end_line)) {
      return Invalid(kReasonMalformedPem,
                     absl::StrCat("PEM block ", block.index, " (", DisplayLabel(block.label),
                                  ") ends with a different END line"));
    }
    const size_t block_end = end + end_line.size();
    block.text = data.substr(begin, block_end - begin);
    blocks.push_back(std::move(block));
    pos = block_end;
  }
  return blocks;
}

absl::StatusOr<X509Ptr> DecodeCertificate(const PemBlock& block) {
  BioPtr bio = MemBio(block.text);
  char* raw_name = nullptr;
  char* raw_header = nullptr;
  unsigned char* raw_data = nullptr;
  long len = 0;  // NOLINT(runtime/int): OpenSSL's type
  const int ok = bio != nullptr && PEM_read_bio(bio.get(), &raw_name, &raw_header, &raw_data, &len);
  std::unique_ptr<char, OpensslFree> name(raw_name);
  std::unique_ptr<char, OpensslFree> header(raw_header);
  std::unique_ptr<unsigned char, OpensslFree> der(raw_data);
  if (!ok) {
    return Invalid(kReasonMalformedPem, absl::StrCat("PEM block ", block.index,
                                                     " (CERTIFICATE) has an invalid base64 body"));
  }
  const unsigned char* p = der.get();
  X509Ptr cert(d2i_X509(nullptr, &p, len));
  if (cert == nullptr) {
    return Invalid(kReasonMalformedPem,
                   absl::StrCat("PEM block ", block.index,
                                " (CERTIFICATE) does not hold a valid DER X.509 certificate"));
  }
  if (p != der.get() + len) {
    return Invalid(kReasonMalformedPem,
                   absl::StrCat("PEM block ", block.index,
                                " (CERTIFICATE) has extra bytes after the certificate"));
  }
  return cert;
}

// Parses a file that must hold only certificates (tls.crt, ca.crt).
absl::StatusOr<std::vector<X509Ptr>> ParseCertificates(absl::string_view data) {
  ASSIGN_OR_RETURN(std::vector<PemBlock> blocks, SplitPem(data));
  std::vector<X509Ptr> certs;
  for (const PemBlock& block : blocks) {
    if (block.label != "CERTIFICATE") {
      if (absl::StrContains(block.label, "PRIVATE KEY")) {
        return Invalid(kReasonWrongBlockType,
                       absl::StrCat("PEM block ", block.index,
                                    " is a private key; only certificates belong in this file"));
      }
      return Invalid(kReasonWrongBlockType,
                     absl::StrCat("PEM block ", block.index, " is ", DisplayLabel(block.label),
                                  ", expected CERTIFICATE"));
    }
    ASSIGN_OR_RETURN(X509Ptr cert, DecodeCertificate(block));
    certs.push_back(std::move(cert));
  }
  return certs;
}

std::string NameString(const X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (bio == nullptr || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_RFC2253) < 0) return "";
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio.get(), &data);  // NOLINT(runtime/int)
  return std::string(data, static_cast<size_t>(len));
}

std::string Subject(const X509* cert) { return NameString(X509_get_subject_name(cert)); }
std::string Issuer(const X509* cert) { return NameString(X509_get_issuer_name(cert)); }

// True when `issuer` names `child`'s issuer (name, key identifiers) and its key verifies the
// signature on `child`.
bool IssuedBy(X509* child, X509* issuer) {
  if (X509_check_issued(issuer, child) != X509_V_OK) return false;
  EVP_PKEY* key = X509_get0_pubkey(issuer);
  return key != nullptr && X509_verify(child, key) == 1;
}

// Each certificate must be issued and signed by the next one. A chain whose certificates would
// link up in another order is reported as out of order; a certificate whose issuer is not in the
// chain as "not issued by the next certificate" (both kReasonChainOrder); a certificate that names
// the next one as issuer but whose signature does not verify as kReasonBadSignature.
absl::Status CheckChainOrder(const std::vector<X509Ptr>& chain) {
  for (size_t i = 0; i + 1 < chain.size(); ++i) {
    X509* child = chain[i].get();
    X509* parent = chain[i + 1].get();
    if (X509_check_issued(parent, child) == X509_V_OK) {
      EVP_PKEY* parent_key = X509_get0_pubkey(parent);
      if (parent_key == nullptr || X509_verify(child, parent_key) != 1) {
        return Invalid(kReasonBadSignature,
                       absl::StrCat("the signature on certificate ", i + 1, " (", Subject(child),
                                    ") does not verify with the key of certificate ", i + 2, " (",
                                    Subject(parent), "), which it names as its issuer"));
      }
      continue;
    }
    for (size_t j = 0; j < chain.size(); ++j) {
      if (j != i && IssuedBy(child, chain[j].get())) {
        return Invalid(
            kReasonChainOrder,
            absl::StrCat("certificates are out of order: certificate ", i + 1, " (", Subject(child),
                         ") is issued by certificate ", j + 1,
                         ", not by the next one; list the leaf first, then each issuer"));
      }
    }
    if (IssuedBy(parent, child)) {
      return Invalid(kReasonChainOrder,
                     absl::StrCat("certificates are out of order: certificate ", i + 2, " (",
                                  Subject(parent), ") is issued by certificate ", i + 1,
                                  "; list the leaf first, then each issuer"));
    }
    return Invalid(kReasonChainOrder,
                   absl::StrCat("certificate ", i + 1, " (", Subject(child), ", issuer ",
                                Issuer(child), ") is not issued by the next certificate ", i + 2,
                                " (", Subject(parent), ")"));
  }
  return absl::OkStatus();
}

absl::Status CheckCa(X509* last, const std::vector<X509Ptr>& cas) {
  for (const X509Ptr& ca : cas) {
    if (X509_cmp(last, ca.get()) == 0 || IssuedBy(last, ca.get())) return absl::OkStatus();
  }
  return Invalid(kReasonCaMismatch,
                 absl::StrCat("no certificate in ca.crt issued the last certificate of tls.crt (",
                              Subject(last), ", issuer ", Issuer(last), ")"));
}

int RefusePassword(char* /*buf*/, int /*size*/, int /*rwflag*/, void* /*userdata*/) { return -1; }

bool IsPlainKeyLabel(absl::string_view label) {
  return label == "PRIVATE KEY" || label == "RSA PRIVATE KEY" || label == "EC PRIVATE KEY";
}

// Parses tls.key: exactly one unencrypted private key; "EC PARAMETERS" blocks (as written by
// `openssl ecparam -genkey`) are tolerated.
absl::StatusOr<PkeyPtr> ParseKey(absl::string_view data) {
  ASSIGN_OR_RETURN(std::vector<PemBlock> blocks, SplitPem(data));
  const PemBlock* key_block = nullptr;
  int key_blocks = 0;
  for (const PemBlock& block : blocks) {
    const absl::string_view label = block.label;
    const bool legacy_encrypted =
        absl::StrContains(block.text, "Proc-Type:") && absl::StrContains(block.text, "ENCRYPTED");
    if (label == "ENCRYPTED PRIVATE KEY" || (IsPlainKeyLabel(label) && legacy_encrypted)) {
      return Invalid(kReasonEncryptedKey,
                     absl::StrCat("PEM block ", block.index,
                                  " is an encrypted private key; provide it unencrypted"));
    }
    if (IsPlainKeyLabel(label)) {
      ++key_blocks;
      key_block = &block;
      continue;
    }
    if (label == "EC PARAMETERS") continue;
    if (absl::EndsWith(label, "PRIVATE KEY")) {
      return Invalid(kReasonUnsupportedKey,
                     absl::StrCat("PEM block ", block.index, " is a ", DisplayLabel(label),
                                  "; supported are RSA, ECDSA and Ed25519 keys"));
    }
    if (absl::StrContains(label, "CERTIFICATE")) {
      return Invalid(kReasonWrongBlockType,
                     absl::StrCat("PEM block ", block.index,
                                  " is a certificate; certificates belong in tls.crt"));
    }
    return Invalid(kReasonWrongBlockType,
                   absl::StrCat("PEM block ", block.index, " is ", DisplayLabel(label),
                                ", expected a PRIVATE KEY"));
  }
  if (key_blocks > 1) {
    return Invalid(kReasonMultipleKeys,
                   absl::StrCat("holds ", key_blocks, " private keys, expected exactly one"));
  }
  if (key_block == nullptr) return Invalid(kReasonMalformedPem, "holds no private key");

  BioPtr bio = MemBio(key_block->text);
  PkeyPtr key(bio == nullptr
                  ? nullptr
                  : PEM_read_bio_PrivateKey(bio.get(), nullptr, &RefusePassword, nullptr));
  if (key == nullptr) {
    return Invalid(kReasonMalformedPem, absl::StrCat("PEM block ", key_block->index, " (",
                                                     DisplayLabel(key_block->label),
                                                     ") does not decode as a private key"));
  }
  return key;
}

// "RSA-2048", "EC-P256", "EC-P384", "EC-P521", "Ed25519"; anything else is unsupported.
absl::StatusOr<std::string> KeyTypeName(EVP_PKEY* key) {
  switch (EVP_PKEY_get_base_id(key)) {
    case EVP_PKEY_RSA: {
      const int bits = EVP_PKEY_get_bits(key);
      // Below 2048 bits OpenSSL's default security level refuses the key at handshake time.
      if (bits < 2048) {
        return Invalid(kReasonUnsupportedKey,
                       absl::StrCat("RSA key of ", bits, " bits is too small; use 2048 or more"));
      }
      return absl::StrCat("RSA-", bits);
    }
    case EVP_PKEY_EC: {
      char group[64] = {0};
      size_t len = 0;
      if (EVP_PKEY_get_group_name(key, group, sizeof(group), &len) == 1) {
        const absl::string_view g(group, len);
        if (g == "prime256v1" || g == "P-256") return std::string("EC-P256");
        if (g == "secp384r1" || g == "P-384") return std::string("EC-P384");
        if (g == "secp521r1" || g == "P-521") return std::string("EC-P521");
        return Invalid(kReasonUnsupportedKey,
                       absl::StrCat("EC key on curve ", absl::CEscape(g),
                                    " is not supported; use P-256, P-384 or P-521"));
      }
      return Invalid(kReasonUnsupportedKey, "EC key with unknown curve is not supported");
    }
    case EVP_PKEY_ED25519:
      return std::string("Ed25519");
    default: {
      const char* type = EVP_PKEY_get0_type_name(key);
      return Invalid(kReasonUnsupportedKey,
                     absl::StrCat(type != nullptr ? type : "this", " key type is not supported; ",
                                  "use RSA, ECDSA (P-256, P-384, P-521) or Ed25519"));
    }
  }
}

absl::StatusOr<absl::Time> AsnTimeToTime(const ASN1_TIME* t) {
  std::tm tm = {};
  if (t == nullptr || ASN1_TIME_to_tm(t, &tm) != 1) {
    return Invalid(kReasonMalformedPem, "leaf certificate has an unreadable validity period");
  }
  return absl::FromCivil(absl::CivilSecond(tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                                           tm.tm_min, tm.tm_sec),
                         absl::UTCTimeZone());
}

std::string Rfc3339(absl::Time t) {
  return absl::FormatTime("%Y-%m-%d%ET%H:%M:%SZ", t, absl::UTCTimeZone());
}

std::vector<std::string> DnsNames(X509* cert) {
  std::vector<std::string> names;
  GeneralNamesPtr sans(
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr)));
  if (sans == nullptr) return names;
  for (int i = 0; i < sk_GENERAL_NAME_num(sans.get()); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(sans.get(), i);
    if (gn->type != GEN_DNS) continue;
    const ASN1_IA5STRING* s = gn->d.dNSName;
    names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                       static_cast<size_t>(ASN1_STRING_length(s)));
  }
  return names;
}

std::string SerialHex(X509* cert) {
  BnPtr bn(ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr));
  if (bn == nullptr) return "";
  std::unique_ptr<char, OpensslFree> hex(BN_bn2hex(bn.get()));
  return hex == nullptr ? "" : std::string(hex.get());
}

std::string LeafFingerprint(X509* cert) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md, &len) != 1) return "";
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(md), len));
}

std::string FilePrefix(absl::string_view name, absl::string_view file) {
  return absl::StrCat("certificate \"", name, "\": ", file);
}

absl::StatusOr<CertificateInfo> Validate(absl::string_view name,
                                         const CertificateMaterial& material,
                                         const ValidationOptions& options) {
  const absl::string_view key_pem = material.key_pem.reveal();
  struct FileCheck {
    absl::string_view file;
    absl::string_view data;
  };
  for (const FileCheck& f : {FileCheck{kChainFile, material.chain_pem},
                             FileCheck{kKeyFile, key_pem}, FileCheck{kCaFile, material.ca_pem}}) {
    if (f.data.size() > kMaxFileSize) {
      return Annotate(Invalid(kReasonMalformedPem, "file is larger than 1 MiB"),
                      FilePrefix(name, f.file));
    }
  }

  // tls.crt
  if (IsBlank(material.chain_pem)) {
    return Annotate(Invalid(kReasonEmpty, "file is empty"), FilePrefix(name, kChainFile));
  }
  absl::StatusOr<std::vector<X509Ptr>> chain = ParseCertificates(material.chain_pem);
  if (!chain.ok()) return Annotate(chain.status(), FilePrefix(name, kChainFile));
  absl::Status status = CheckChainOrder(*chain);
  if (!status.ok()) return Annotate(status, FilePrefix(name, kChainFile));
  X509* leaf = chain->front().get();

  // ca.crt
  const bool has_ca = !IsBlank(material.ca_pem);
  if (has_ca) {
    absl::StatusOr<std::vector<X509Ptr>> cas = ParseCertificates(material.ca_pem);
    if (!cas.ok()) return Annotate(cas.status(), FilePrefix(name, kCaFile));
    status = CheckCa(chain->back().get(), *cas);
    if (!status.ok()) return Annotate(status, FilePrefix(name, kCaFile));
  }

  // tls.key
  if (IsBlank(key_pem)) {
    return Annotate(Invalid(kReasonEmpty, "file is empty"), FilePrefix(name, kKeyFile));
  }
  absl::StatusOr<PkeyPtr> key = ParseKey(key_pem);
  if (!key.ok()) return Annotate(key.status(), FilePrefix(name, kKeyFile));
  absl::StatusOr<std::string> key_type = KeyTypeName(key->get());
  if (!key_type.ok()) return Annotate(key_type.status(), FilePrefix(name, kKeyFile));
  EVP_PKEY* leaf_key = X509_get0_pubkey(leaf);
  if (leaf_key == nullptr || EVP_PKEY_eq(leaf_key, key->get()) != 1) {
    return Annotate(Invalid(kReasonKeyMismatch,
                            absl::StrCat("the private key does not match the leaf certificate (",
                                         Subject(leaf), ")")),
                    FilePrefix(name, kKeyFile));
  }

  // Validity and names of the leaf (tls.crt).
  CertificateInfo info;
  absl::StatusOr<absl::Time> not_before = AsnTimeToTime(X509_get0_notBefore(leaf));
  if (!not_before.ok()) return Annotate(not_before.status(), FilePrefix(name, kChainFile));
  absl::StatusOr<absl::Time> not_after = AsnTimeToTime(X509_get0_notAfter(leaf));
  if (!not_after.ok()) return Annotate(not_after.status(), FilePrefix(name, kChainFile));
  if (options.now < *not_before) {
    return Annotate(WithReason(absl::FailedPreconditionError(absl::StrCat(
                                   "leaf certificate (", Subject(leaf), ") is not valid before ",
                                   Rfc3339(*not_before), " (now ", Rfc3339(options.now), ")")),
                               kReasonNotYetValid),
                    FilePrefix(name, kChainFile));
  }
  if (options.now > *not_after) {
    return Annotate(WithReason(absl::FailedPreconditionError(absl::StrCat(
                                   "leaf certificate (", Subject(leaf), ") expired at ",
                                   Rfc3339(*not_after), " (now ", Rfc3339(options.now), ")")),
                               kReasonExpired),
                    FilePrefix(name, kChainFile));
  }
  info.dns_names = DnsNames(leaf);
  for (const std::string& required : options.required_dns_names) {
    bool covered = false;
    for (const std::string& san : info.dns_names) {
      if (DnsNameMatches(san, required)) {
        covered = true;
        break;
      }
    }
    if (!covered) {
      return Annotate(
          Invalid(kReasonMissingSan,
                  absl::StrCat(
                      "leaf certificate does not cover required DNS name \"",
                      absl::CEscape(required), "\" (DNS SANs: ",
                      info.dns_names.empty() ? "none" : absl::StrJoin(info.dns_names, ", "), ")")),
          FilePrefix(name, kChainFile));
    }
  }

  info.fingerprint = LeafFingerprint(leaf);
  info.subject = Subject(leaf);
  info.issuer = Issuer(leaf);
  info.serial = SerialHex(leaf);
  info.not_before = *not_before;
  info.not_after = *not_after;
  info.chain_length = static_cast<int>(chain->size());
  info.has_ca = has_ca;
  info.key_type = *std::move(key_type);
  return info;
}

absl::string_view StripTrailingDot(absl::string_view s) {
  if (absl::EndsWith(s, ".")) s.remove_suffix(1);
  return s;
}

// A hostname of non-empty labels with no wildcard.
bool HasOnlyPlainLabels(absl::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.') return false;
  if (absl::StrContains(s, "..") || absl::StrContains(s, "*")) return false;
  return true;
}

}  // namespace

absl::StatusOr<CertificateInfo> ValidateMaterial(absl::string_view name,
                                                 const CertificateMaterial& material,
                                                 const ValidationOptions& options) {
  ErrorQueueGuard guard;
  return Validate(name, material, options);
}

std::string RejectionReason(const absl::Status& status) {
  absl::optional<absl::Cord> payload = status.GetPayload(kReasonTypeUrl);
  if (!payload.has_value()) return "other";
  return std::string(*payload);
}

absl::Status WithReason(absl::Status status, absl::string_view reason) {
  if (!status.ok()) status.SetPayload(kReasonTypeUrl, absl::Cord(reason));
  return status;
}

std::string Sha256Hex(absl::string_view data) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md, &len, EVP_sha256(), nullptr) != 1) {
    ERR_clear_error();
    return "";
  }
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(md), len));
}

std::string ContentDigest(const CertificateMaterial& material) {
  MdCtxPtr ctx(EVP_MD_CTX_new());
  bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1;
  // Each part is prefixed with its 64-bit big-endian length so ("ab", "c") != ("a", "bc"); the
  // key is hashed in place, never copied.
  auto add = [&](absl::string_view part) {
    unsigned char len[8];
    const uint64_t n = part.size();
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (56 - 8 * i));
    ok = ok && EVP_DigestUpdate(ctx.get(), len, sizeof(len)) == 1 &&
         EVP_DigestUpdate(ctx.get(), part.data(), part.size()) == 1;
  };
  add(material.chain_pem);
  add(material.key_pem.reveal());
  add(material.ca_pem);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  ok = ok && EVP_DigestFinal_ex(ctx.get(), md, &md_len) == 1;
  if (!ok) {
    ERR_clear_error();
    return "";
  }
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(md), md_len));
}

bool DnsNameMatches(absl::string_view pattern, absl::string_view host) {
  pattern = StripTrailingDot(pattern);
  host = StripTrailingDot(host);
  if (!HasOnlyPlainLabels(host)) {
    // A wildcard "host" (e.g. a required name "*.example.test") is covered only by itself.
    return !host.empty() && absl::EqualsIgnoreCase(pattern, host) &&
           HasOnlyPlainLabels(absl::StartsWith(host, "*.") ? host.substr(2) : absl::string_view());
  }
  if (!absl::StartsWith(pattern, "*.")) {
    return HasOnlyPlainLabels(pattern) && absl::EqualsIgnoreCase(pattern, host);
  }
  const absl::string_view base = pattern.substr(2);  // "example.test" of "*.example.test"
  // Like OpenSSL and curl, a wildcard needs at least two labels after it: "*.test" matches nothing.
  if (!HasOnlyPlainLabels(base) || !absl::StrContains(base, ".")) return false;
  const size_t dot = host.find('.');
  if (dot == absl::string_view::npos) return false;
  return absl::EqualsIgnoreCase(host.substr(dot + 1), base);
}

}  // namespace certcast

namespace certcast {

absl::StatusOr<std::string> LeafFingerprint(absl::string_view chain_pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(
      BIO_new_mem_buf(chain_pem.data(), static_cast<int>(chain_pem.size())), &BIO_free);
  std::unique_ptr<X509, decltype(&X509_free)> leaf(
      bio == nullptr ? nullptr : PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr),
      &X509_free);
  ERR_clear_error();
  if (leaf == nullptr) return absl::InvalidArgumentError("no PEM certificate found");
  unsigned char* der = nullptr;
  const int length = i2d_X509(leaf.get(), &der);
  if (length <= 0) return absl::InvalidArgumentError("certificate cannot be encoded");
  std::string fingerprint =
      Sha256Hex(absl::string_view(reinterpret_cast<const char*>(der), static_cast<size_t>(length)));
  OPENSSL_free(der);
  return fingerprint;
}

}  // namespace certcast
