#include "common/certificate.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <ostream>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/civil_time.h"
#include "gtest/gtest.h"
#include "tests/fixtures/cert_factory.h"

namespace certcast {
namespace {

using fixtures::CertOptions;
using fixtures::Chain;
using fixtures::Issued;
using fixtures::KeyFormat;
using fixtures::KeyPem;
using fixtures::KeyType;
using fixtures::MakeCert;
using fixtures::MakeChain;
using fixtures::MakeRootCa;

constexpr char kName[] = "wildcard";

ValidationOptions Options(std::vector<std::string> required = {"a.example.test"}) {
  ValidationOptions options;
  options.now = absl::Now();
  options.required_dns_names = std::move(required);
  return options;
}

// ---- Test-side PEM/OpenSSL helpers, independent of the code under test. ----

std::string BioString(BIO* bio) {
  char* data = nullptr;
  const long len = BIO_get_mem_data(bio, &data);  // NOLINT(runtime/int)
  std::string out(data, static_cast<size_t>(len));
  BIO_free(bio);
  return out;
}

X509* ReadCert(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  return cert;
}

std::string PemOf(X509* cert) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(bio, cert);
  return BioString(bio);
}

std::string Pkcs8PemOf(EVP_PKEY* key) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(bio, key, nullptr, nullptr, 0, nullptr, nullptr);
  return BioString(bio);
}

// The leaf with the last byte of its signature flipped: still well-formed, no longer valid.
std::string TamperSignature(const std::string& pem) {
  X509* cert = ReadCert(pem);
  unsigned char* der = nullptr;
  const int len = i2d_X509(cert, &der);
  der[len - 1] ^= 0x01;
  const unsigned char* p = der;
  X509* tampered = d2i_X509(nullptr, &p, len);
  std::string out = PemOf(tampered);
  X509_free(tampered);
  OPENSSL_free(der);
  X509_free(cert);
  return out;
}

// The key in legacy encrypted PEM ("Proc-Type: 4,ENCRYPTED" header).
std::string LegacyEncryptedKeyPem(const Issued& issued) {
  static const char kPassword[] = "secret";
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey_traditional(
      bio, static_cast<EVP_PKEY*>(issued.key.get()), EVP_aes_128_cbc(),
      reinterpret_cast<const unsigned char*>(kPassword), sizeof(kPassword) - 1, nullptr, nullptr);
  return BioString(bio);
}

// "EC PARAMETERS", as `openssl ecparam -genkey` writes before the key.
std::string EcParametersPem(const Issued& issued) {
  BIO* bio = BIO_new(BIO_s_mem());
  PEM_write_bio_Parameters(bio, static_cast<EVP_PKEY*>(issued.key.get()));
  return BioString(bio);
}

std::string GeneratedKeyPem(const char* type) {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, type);
  std::string pem = Pkcs8PemOf(key);
  EVP_PKEY_free(key);
  return pem;
}

std::string RsaKeyPem(size_t bits) {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", bits);
  std::string pem = Pkcs8PemOf(key);
  EVP_PKEY_free(key);
  return pem;
}

std::string Sha256OfDer(const std::string& pem) {
  X509* cert = ReadCert(pem);
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  X509_digest(cert, EVP_sha256(), md, &len);
  X509_free(cert);
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(md), len));
}

// Replaces the first four base64 characters of the first block's body with invalid ones.
std::string CorruptBase64(std::string pem) {
  const size_t body = pem.find('\n') + 1;
  pem.replace(body, 4, "!!!!");
  return pem;
}

// Drops the middle body lines of the first block, keeping BEGIN and END.
std::string DropMiddleLines(const std::string& pem) {
  std::vector<std::string> lines = absl::StrSplit(pem, '\n');
  std::vector<std::string> kept;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (i == 0 || i + 3 >= lines.size() || i % 2 == 0) kept.push_back(lines[i]);
  }
  return absl::StrJoin(kept, "\n");
}

// Base64 body lines of every private key block in `pem`.
std::vector<std::string> KeyBodyLines(absl::string_view pem) {
  std::vector<std::string> out;
  bool in_key = false;
  for (absl::string_view line : absl::StrSplit(pem, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (absl::StartsWith(line, "-----BEGIN") && absl::StrContains(line, "PRIVATE KEY")) {
      in_key = true;
    } else if (absl::StartsWith(line, "-----END")) {
      in_key = false;
    } else if (in_key && line.size() >= 16 && !absl::StrContains(line, ":")) {
      out.emplace_back(line);
    }
  }
  return out;
}

// The message contains no PEM armour and not even 16 characters of any key line in `sources`.
void ExpectNoKeyBytes(const absl::Status& status, const std::vector<std::string>& sources) {
  EXPECT_FALSE(absl::StrContains(status.message(), "-----")) << status;
  int lines = 0;
  for (const std::string& source : sources) {
    for (const std::string& line : KeyBodyLines(source)) {
      ++lines;
      EXPECT_FALSE(absl::StrContains(status.message(), line.substr(0, 16)))
          << "message quotes key bytes: " << status;
    }
  }
  EXPECT_GT(lines, 0) << "the check saw no key bytes, so it could not fail";
}

// Fixed material shared by the bad-input matrix; built once.
struct World {
  Chain good = MakeChain();   // root -> intermediate -> leaf for *.example.test, example.test
  Chain other = MakeChain();  // same names, different keys
};

const World& TheWorld() {
  static const World* world = new World();
  return *world;
}

Issued LeafWithValidity(const World& w, absl::Time not_before, absl::Time not_after) {
  CertOptions options;
  options.common_name = "*.example.test";
  options.dns_names = {"*.example.test"};
  options.not_before = not_before;
  options.not_after = not_after;
  return MakeCert(w.good.intermediate, options);
}

absl::Time Utc(int y, int m, int d) {
  return absl::FromCivil(absl::CivilSecond(y, m, d, 0, 0, 0), absl::UTCTimeZone());
}

// ---- The bad-input matrix. ----

struct BadInput {
  std::string behaviour;  // test name
  std::function<void(const World&, CertificateMaterial*, ValidationOptions*)> mutate;
  absl::StatusCode code;
  absl::string_view reason;
  std::string file;
  std::string message_contains;  // optional extra detail the message must carry
};

void PrintTo(const BadInput& input, std::ostream* os) { *os << input.behaviour; }

constexpr absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;
constexpr absl::StatusCode kPrecondition = absl::StatusCode::kFailedPrecondition;

std::vector<BadInput> BadInputs() {
  return {
      // An empty tls.crt is reported as empty, not as a parse error.
      {"EmptyChain",
       [](const World&, CertificateMaterial* m, ValidationOptions*) { m->chain_pem = ""; },
       kInvalid, kReasonEmpty, "tls.crt", ""},
      // A tls.crt of only whitespace counts as empty too.
      {"WhitespaceOnlyChain",
       [](const World&, CertificateMaterial* m, ValidationOptions*) { m->chain_pem = " \n\t\n"; },
       kInvalid, kReasonEmpty, "tls.crt", ""},
      // An empty tls.key is reported as empty.
      {"EmptyKey",
       [](const World&, CertificateMaterial* m, ValidationOptions*) {
         m->key_pem = SecretBytes("");
       },
       kInvalid, kReasonEmpty, "tls.key", ""},
      // A certificate cut in the middle (no END line) is malformed PEM.
      {"TruncatedCertificate",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->chain_pem = w.good.leaf.cert_pem.substr(0, w.good.leaf.cert_pem.size() / 2);
       },
       kInvalid, kReasonMalformedPem, "tls.crt", "truncated"},
      // A truncated certificate followed by a complete one is not mistaken for one block.
      {"TruncatedCertificateBeforeAnother",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->chain_pem = w.good.leaf.cert_pem.substr(0, w.good.leaf.cert_pem.size() / 2) +
                        w.good.intermediate.cert_pem;
       },
       kInvalid, kReasonMalformedPem, "tls.crt", "PEM block 1"},
      // Invalid base64 characters inside a CERTIFICATE block are malformed PEM.
      {"BadBase64InCertificate",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->chain_pem = CorruptBase64(w.good.leaf.cert_pem) + w.good.intermediate.cert_pem;
       },
       kInvalid, kReasonMalformedPem, "tls.crt", "base64"},
      // Valid base64 that is not a DER certificate is malformed PEM.
      {"CertificateBlockNotDer",
       [](const World&, CertificateMaterial* m, ValidationOptions*) {
         m->chain_pem = "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n";
       },
       kInvalid, kReasonMalformedPem, "tls.crt", "DER"},
      // A file with no PEM armour at all is malformed PEM.
      {"ChainNotPem",
       [](const World&, CertificateMaterial* m, ValidationOptions*) {
         m->chain_pem = "this is not a certificate\n";
       },
       kInvalid, kReasonMalformedPem, "tls.crt", "not PEM"},
      // A BEGIN CERTIFICATE closed by a different END label is malformed PEM.
      {"MismatchedEndLine",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->chain_pem =
             absl::StrReplaceAll(w.good.leaf.cert_pem, {{"END CERTIFICATE", "END X509 CRL"}});
       },
       kInvalid, kReasonMalformedPem, "tls.crt", "END line"},
      // Anything but whitespace after the last certificate is rejected.
      {"TrailingGarbageAfterChain",
       [](const World&, CertificateMaterial* m, ValidationOptions*) {
         m->chain_pem += "garbage\n";
       },
       kInvalid, kReasonTrailingData, "tls.crt", "after PEM block 2"},
      // Anything but whitespace between certificates is rejected.
      {"GarbageBetweenCertificates",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->chain_pem = w.good.leaf.cert_pem + "junk\n" + w.good.intermediate.cert_pem;
       },
       kInvalid, kReasonTrailingData, "tls.crt", "between PEM blocks 1 and 2"},
      // A private key pasted into tls.crt is rejected without quoting it.
      {"PrivateKeyInChain",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->chain_pem = w.good.leaf.cert_pem + w.good.leaf.key_pem;
       },
       kInvalid, kReasonWrongBlockType, "tls.crt", "private key"},
      // A certificate in tls.key is rejected.
      {"CertificateInKeyFile",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->key_pem = SecretBytes(w.good.leaf.key_pem + w.good.leaf.cert_pem);
       },
       kInvalid, kReasonWrongBlockType, "tls.key", "certificate"},
      // Garbage after the key is rejected.
      {"TrailingGarbageAfterKey",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->key_pem = SecretBytes(w.good.leaf.key_pem + "x");
       },
       kInvalid, kReasonTrailingData, "tls.key", "after PEM block 1"},
      // An encrypted PKCS#8 key is reported as encrypted.
      {"EncryptedPkcs8Key",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->key_pem = SecretBytes(KeyPem(w.good.leaf, KeyFormat::kEncryptedPkcs8));
       },
       kInvalid, kReasonEncryptedKey, "tls.key", "encrypted"},
      // A legacy "Proc-Type: 4,ENCRYPTED" key is reported as encrypted too.
      {"EncryptedTraditionalKey",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->key_pem = SecretBytes(LegacyEncryptedKeyPem(w.good.leaf));
       },
       kInvalid, kReasonEncryptedKey, "tls.key", "encrypted"},
      // Two keys in tls.key are ambiguous.
      {"TwoKeys",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->key_pem = SecretBytes(w.good.leaf.key_pem + w.other.leaf.key_pem);
       },
       kInvalid, kReasonMultipleKeys, "tls.key", "2 private keys"},
      // A valid key for another certificate is a mismatch.
      {"KeyForAnotherCertificate",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->key_pem = SecretBytes(w.other.leaf.key_pem);
       },
       kInvalid, kReasonKeyMismatch, "tls.key", "does not match"},
      // A key cut in the middle is malformed PEM.
      {"TruncatedKey",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->key_pem = SecretBytes(w.good.leaf.key_pem.substr(0, w.good.leaf.key_pem.size() / 2));
       },
       kInvalid, kReasonMalformedPem, "tls.key", "truncated"},
      // A key block with lines missing (BEGIN and END intact) does not decode.
      {"KeyBodyNotDecodable",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->key_pem = SecretBytes(DropMiddleLines(KeyPem(w.good.leaf, KeyFormat::kTraditional)));
       },
       kInvalid, kReasonMalformedPem, "tls.key", "does not decode"},
      // An Ed448 key is outside the supported set.
      {"UnsupportedEd448Key",
       [](const World&, CertificateMaterial* m, ValidationOptions*) {
         m->key_pem = SecretBytes(GeneratedKeyPem("ED448"));
       },
       kInvalid, kReasonUnsupportedKey, "tls.key", "ED448"},
      // An RSA key below 2048 bits is refused.
      {"WeakRsa1024Key",
       [](const World&, CertificateMaterial* m, ValidationOptions*) {
         m->key_pem = SecretBytes(RsaKeyPem(1024));
       },
       kInvalid, kReasonUnsupportedKey, "tls.key", "1024 bits"},
      // The intermediate listed before the leaf is a chain-order error.
      {"IntermediateBeforeLeaf",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->chain_pem = w.good.intermediate.cert_pem + w.good.leaf.cert_pem;
       },
       kInvalid, kReasonChainOrder, "tls.crt", "out of order"},
      // A look-alike intermediate (same name, other key) does not link the chain.
      {"UnrelatedCertificateInChain",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->chain_pem = w.good.leaf.cert_pem + w.other.intermediate.cert_pem;
       },
       kInvalid, kReasonChainOrder, "tls.crt", "is not issued by the next certificate"},
      // Leaf followed by the root (intermediate missing) does not link either.
      {"MissingIntermediate",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->chain_pem = w.good.leaf.cert_pem + w.good.root.cert_pem;
       },
       kInvalid, kReasonChainOrder, "tls.crt", "is not issued by the next certificate"},
      // A leaf whose signature was altered is caught by signature verification.
      {"TamperedLeafSignature",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->chain_pem = TamperSignature(w.good.leaf.cert_pem) + w.good.intermediate.cert_pem;
       },
       kInvalid, kReasonBadSignature, "tls.crt", "signature"},
      // An expired leaf is FailedPrecondition and the message gives notAfter in RFC 3339.
      {"ExpiredLeaf",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         Issued leaf = LeafWithValidity(w, Utc(2020, 1, 1), Utc(2021, 1, 1));
         m->chain_pem = leaf.cert_pem + w.good.intermediate.cert_pem;
         m->key_pem = SecretBytes(leaf.key_pem);
       },
       kPrecondition, kReasonExpired, "tls.crt", "2021-01-01T00:00:00Z"},
      // A leaf valid only in the future is FailedPrecondition with its notBefore.
      {"NotYetValidLeaf",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         Issued leaf = LeafWithValidity(w, Utc(2090, 1, 1), Utc(2091, 1, 1));
         m->chain_pem = leaf.cert_pem + w.good.intermediate.cert_pem;
         m->key_pem = SecretBytes(leaf.key_pem);
       },
       kPrecondition, kReasonNotYetValid, "tls.crt", "2090-01-01T00:00:00Z"},
      // Unset options.now (InfinitePast) fails closed instead of skipping the validity check.
      {"DefaultNowFailsClosed",
       [](const World&, CertificateMaterial*, ValidationOptions* o) {
         o->now = ValidationOptions().now;
       },
       kPrecondition, kReasonNotYetValid, "tls.crt", "not valid before"},
      // A required name the leaf does not cover is rejected and named.
      {"MissingRequiredSan",
       [](const World&, CertificateMaterial*, ValidationOptions* o) {
         o->required_dns_names = {"a.example.test", "other.test"};
       },
       kInvalid, kReasonMissingSan, "tls.crt", "\"other.test\""},
      // The wildcard does not reach two labels down.
      {"RequiredNameTwoLabelsBelowWildcard",
       [](const World&, CertificateMaterial*, ValidationOptions* o) {
         o->required_dns_names = {"a.b.example.test"};
       },
       kInvalid, kReasonMissingSan, "tls.crt", "a.b.example.test"},
      // A ca.crt from another PKI does not issue the chain.
      {"CaDoesNotIssueChain",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->ca_pem = w.other.root.cert_pem;
       },
       kInvalid, kReasonCaMismatch, "ca.crt", "no certificate in ca.crt"},
      // A ca.crt that is not PEM is malformed.
      {"GarbageCa",
       [](const World&, CertificateMaterial* m, ValidationOptions*) { m->ca_pem = "not a ca\n"; },
       kInvalid, kReasonMalformedPem, "ca.crt", ""},
      // A private key in ca.crt is rejected without quoting it.
      {"PrivateKeyInCa",
       [](const World& w, CertificateMaterial* m, ValidationOptions*) {
         m->ca_pem = w.good.root.cert_pem + w.good.root.key_pem;
       },
       kInvalid, kReasonWrongBlockType, "ca.crt", "private key"},
  };
}

class RejectsBadInputTest : public ::testing::TestWithParam<BadInput> {};

// Proves each bad input yields its code and reason, a message naming certificate and file, no key
// bytes in the message, and an empty OpenSSL error queue afterwards.
TEST_P(RejectsBadInputTest, WithCodeReasonFileAndNoKeyBytes) {
  const World& w = TheWorld();
  const BadInput& input = GetParam();
  CertificateMaterial material = w.good.material;
  ValidationOptions options = Options();
  input.mutate(w, &material, &options);

  absl::StatusOr<CertificateInfo> result = ValidateMaterial(kName, material, options);

  ASSERT_FALSE(result.ok());
  const absl::Status& status = result.status();
  EXPECT_EQ(status.code(), input.code) << status;
  EXPECT_EQ(RejectionReason(status), input.reason) << status;
  EXPECT_TRUE(absl::StartsWith(status.message(),
                               absl::StrCat("certificate \"wildcard\": ", input.file, ": ")))
      << status;
  EXPECT_TRUE(absl::StrContains(status.message(), input.message_contains)) << status;
  ExpectNoKeyBytes(status, {std::string(material.key_pem.reveal()), material.chain_pem,
                            material.ca_pem, w.good.leaf.key_pem, w.other.leaf.key_pem});
  EXPECT_EQ(ERR_peek_error(), 0u);
}

INSTANTIATE_TEST_SUITE_P(ValidationMatrix, RejectsBadInputTest, ::testing::ValuesIn(BadInputs()),
                         [](const ::testing::TestParamInfo<BadInput>& param_info) {
                           return param_info.param.behaviour;
                         });

// Proves the matrix holds at least 18 distinct bad inputs with unique names.
TEST(BadInputMatrixTest, HasEnoughDistinctCases) {
  std::vector<BadInput> inputs = BadInputs();
  EXPECT_GE(inputs.size(), 18u);
  std::set<std::string> names;
  for (const BadInput& input : inputs) names.insert(input.behaviour);
  EXPECT_EQ(names.size(), inputs.size());
}

// ---- Valid material. ----

struct KeyCase {
  std::string behaviour;
  KeyType key_type;
  KeyFormat format;
  std::string expected_label;  // proves which encoding was exercised
  std::string expected_key_type;
};

void PrintTo(const KeyCase& c, std::ostream* os) { *os << c.behaviour; }

class AcceptsKeyTest : public ::testing::TestWithParam<KeyCase> {};

// Proves every supported key algorithm is accepted in each supported encoding.
TEST_P(AcceptsKeyTest, InEachEncoding) {
  const KeyCase& c = GetParam();
  Chain chain = MakeChain({"*.example.test"}, c.key_type);
  const std::string key = KeyPem(chain.leaf, c.format);
  ASSERT_TRUE(absl::StartsWith(key, "-----BEGIN " + c.expected_label + "-----\n")) << c.behaviour;
  chain.material.key_pem = SecretBytes(key);

  absl::StatusOr<CertificateInfo> info = ValidateMaterial(kName, chain.material, Options());

  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->key_type, c.expected_key_type);
}

INSTANTIATE_TEST_SUITE_P(
    KeyMatrix, AcceptsKeyTest,
    ::testing::Values(
        KeyCase{"Rsa2048Pkcs8", KeyType::kRsa2048, KeyFormat::kPkcs8, "PRIVATE KEY", "RSA-2048"},
        KeyCase{"Rsa2048Pkcs1", KeyType::kRsa2048, KeyFormat::kTraditional, "RSA PRIVATE KEY",
                "RSA-2048"},
        KeyCase{"EcP256Pkcs8", KeyType::kEcP256, KeyFormat::kPkcs8, "PRIVATE KEY", "EC-P256"},
        KeyCase{"EcP256Sec1", KeyType::kEcP256, KeyFormat::kTraditional, "EC PRIVATE KEY",
                "EC-P256"},
        KeyCase{"EcP384Pkcs8", KeyType::kEcP384, KeyFormat::kPkcs8, "PRIVATE KEY", "EC-P384"},
        KeyCase{"EcP384Sec1", KeyType::kEcP384, KeyFormat::kTraditional, "EC PRIVATE KEY",
                "EC-P384"},
        KeyCase{"Ed25519Pkcs8", KeyType::kEd25519, KeyFormat::kPkcs8, "PRIVATE KEY", "Ed25519"}),
    [](const ::testing::TestParamInfo<KeyCase>& param_info) { return param_info.param.behaviour; });

// Proves CertificateInfo reports the leaf's own fields, each checked against a value computed
// outside the code under test.
TEST(ValidateMaterialTest, ReportsLeafFieldsInCertificateInfo) {
  const Chain& base = TheWorld().good;
  const absl::Time not_before = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()) - 3600);
  const absl::Time not_after = not_before + absl::Hours(48);
  CertOptions options;
  options.common_name = "*.example.test";
  options.dns_names = {"*.example.test", "example.test"};
  options.uri_sans = {"spiffe://cluster.local/ns/a/sa/b"};
  options.not_before = not_before;
  options.not_after = not_after;
  Issued leaf = MakeCert(base.intermediate, options);
  CertificateMaterial material{leaf.cert_pem + base.intermediate.cert_pem,
                               SecretBytes(leaf.key_pem), base.root.cert_pem};

  absl::StatusOr<CertificateInfo> info = ValidateMaterial(kName, material, Options());

  ASSERT_TRUE(info.ok()) << info.status();
  X509* cert = ReadCert(leaf.cert_pem);
  BIGNUM* serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(cert), nullptr);
  char* serial_hex = BN_bn2hex(serial);
  EXPECT_EQ(info->serial, serial_hex);
  OPENSSL_free(serial_hex);
  BN_free(serial);
  X509_free(cert);
  EXPECT_EQ(info->fingerprint, Sha256OfDer(leaf.cert_pem));
  EXPECT_EQ(info->subject, "CN=*.example.test");
  EXPECT_EQ(info->issuer, "CN=certcast test intermediate");
  EXPECT_EQ(info->dns_names, (std::vector<std::string>{"*.example.test", "example.test"}));
  EXPECT_EQ(info->not_before, not_before);
  EXPECT_EQ(info->not_after, not_after);
  EXPECT_EQ(info->key_type, "EC-P256");
  EXPECT_EQ(info->chain_length, 2);
  EXPECT_TRUE(info->has_ca);
}

// Runs `command` and returns its stdout, or "" when it cannot run.
std::string RunCommand(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) return "";
  std::string out;
  char buf[256];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  return pclose(pipe) == 0 ? out : "";
}

// Proves fingerprint, serial and subject equal what the openssl command line prints.
TEST(ValidateMaterialTest, FingerprintSerialAndSubjectMatchOpensslCli) {
  const Chain& chain = TheWorld().good;
  absl::StatusOr<CertificateInfo> info = ValidateMaterial(kName, chain.material, Options());
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->fingerprint, chain.leaf.fingerprint);

  fixtures::TempDir dir;
  std::ofstream(dir.Join("leaf.pem")) << chain.leaf.cert_pem;
  const std::string out =
      RunCommand(absl::StrCat("openssl x509 -noout -fingerprint -sha256 -serial -subject ",
                              "-nameopt RFC2253 -in '", dir.Join("leaf.pem"), "' 2>/dev/null"));
  if (out.empty()) GTEST_SKIP() << "openssl command line not available";
  std::string fingerprint, serial, subject;
  for (absl::string_view line : absl::StrSplit(out, '\n', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
    const std::string key = absl::AsciiStrToLower(kv.first);
    if (key == "sha256 fingerprint") fingerprint = kv.second;
    if (key == "serial") serial = kv.second;
    if (key == "subject") subject = kv.second;
  }
  EXPECT_EQ(info->fingerprint,
            absl::AsciiStrToLower(absl::StrReplaceAll(fingerprint, {{":", ""}})));
  EXPECT_EQ(info->serial, serial);
  EXPECT_EQ(info->subject, subject);
}

// Proves a leaf signed directly by the root (no intermediate) validates against that root.
TEST(ValidateMaterialTest, AcceptsChainWithoutIntermediate) {
  Issued root = MakeRootCa();
  CertOptions options;
  options.dns_names = {"*.example.test"};
  Issued leaf = MakeCert(root, options);
  CertificateMaterial material{leaf.cert_pem, SecretBytes(leaf.key_pem), root.cert_pem};

  absl::StatusOr<CertificateInfo> info = ValidateMaterial(kName, material, Options());

  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->chain_length, 1);
  EXPECT_EQ(info->issuer, "CN=certcast test root");
}

// Proves ca.crt is optional and its absence is reported.
TEST(ValidateMaterialTest, AcceptsMissingCa) {
  CertificateMaterial material = TheWorld().good.material;
  material.ca_pem = "";

  absl::StatusOr<CertificateInfo> info = ValidateMaterial(kName, material, Options());

  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_FALSE(info->has_ca);
  EXPECT_EQ(info->chain_length, 2);
}

// Proves a chain that ends in the CA itself is accepted (last certificate identical to ca.crt).
TEST(ValidateMaterialTest, AcceptsChainEndingWithTheCa) {
  const Chain& chain = TheWorld().good;
  CertificateMaterial material = chain.material;
  material.chain_pem += chain.root.cert_pem;

  absl::StatusOr<CertificateInfo> info = ValidateMaterial(kName, material, Options());

  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->chain_length, 3);
}

// Proves a CA bundle is searched: the issuing root may come after unrelated ones.
TEST(ValidateMaterialTest, AcceptsCaBundleWithIssuerNotFirst) {
  CertificateMaterial material = TheWorld().good.material;
  material.ca_pem = TheWorld().other.root.cert_pem + "\n" + TheWorld().good.root.cert_pem;

  EXPECT_TRUE(ValidateMaterial(kName, material, Options()).ok());
}

// Proves ca.crt may hold the intermediate that issued a leaf-only tls.crt.
TEST(ValidateMaterialTest, AcceptsIntermediateAsCa) {
  const Chain& chain = TheWorld().good;
  CertificateMaterial material{chain.leaf.cert_pem, chain.material.key_pem,
                               chain.intermediate.cert_pem};

  EXPECT_TRUE(ValidateMaterial(kName, material, Options()).ok());
}

// Proves CRLF line endings (files edited on Windows) are accepted.
TEST(ValidateMaterialTest, AcceptsCrlfLineEndings) {
  const Chain& chain = TheWorld().good;
  CertificateMaterial material{
      absl::StrReplaceAll(chain.material.chain_pem, {{"\n", "\r\n"}}),
      SecretBytes(absl::StrReplaceAll(chain.leaf.key_pem, {{"\n", "\r\n"}})),
      absl::StrReplaceAll(chain.material.ca_pem, {{"\n", "\r\n"}})};

  absl::StatusOr<CertificateInfo> info = ValidateMaterial(kName, material, Options());

  EXPECT_TRUE(info.ok()) << info.status();
}

// Proves the "EC PARAMETERS" block `openssl ecparam -genkey` writes before a SEC1 key is tolerated.
TEST(ValidateMaterialTest, AcceptsEcParametersBeforeKey) {
  const Chain& chain = TheWorld().good;
  CertificateMaterial material = chain.material;
  material.key_pem =
      SecretBytes(EcParametersPem(chain.leaf) + KeyPem(chain.leaf, KeyFormat::kTraditional));

  absl::StatusOr<CertificateInfo> info = ValidateMaterial(kName, material, Options());

  EXPECT_TRUE(info.ok()) << info.status();
}

// Proves "*.example.test" covers a.example.test but neither a.b.example.test nor example.test.
TEST(ValidateMaterialTest, WildcardSanCoversExactlyOneLabel) {
  Chain chain = MakeChain({"*.example.test"});

  EXPECT_TRUE(ValidateMaterial(kName, chain.material, Options({"a.example.test"})).ok());
  EXPECT_TRUE(ValidateMaterial(kName, chain.material, Options({"A.Example.Test"})).ok());
  absl::StatusOr<CertificateInfo> deeper =
      ValidateMaterial(kName, chain.material, Options({"a.b.example.test"}));
  ASSERT_FALSE(deeper.ok());
  EXPECT_EQ(RejectionReason(deeper.status()), kReasonMissingSan);
  absl::StatusOr<CertificateInfo> apex =
      ValidateMaterial(kName, chain.material, Options({"example.test"}));
  ASSERT_FALSE(apex.ok());
  EXPECT_EQ(RejectionReason(apex.status()), kReasonMissingSan);
}

// Proves every required name must be covered, and no requirement accepts any SAN.
TEST(ValidateMaterialTest, RequiresEveryRequiredName) {
  const CertificateMaterial& material = TheWorld().good.material;

  EXPECT_TRUE(ValidateMaterial(kName, material, Options({"a.example.test", "example.test"})).ok());
  EXPECT_TRUE(ValidateMaterial(kName, material, Options({})).ok());
  EXPECT_FALSE(ValidateMaterial(kName, material, Options({"example.test", "b.other.test"})).ok());
}

// Proves the validity window is inclusive at both ends.
TEST(ValidateMaterialTest, ValidityBoundsAreInclusive) {
  const Chain& chain = TheWorld().good;
  const absl::Time not_before = absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now()) - 60);
  const absl::Time not_after = not_before + absl::Hours(1);
  CertOptions options;
  options.dns_names = {"*.example.test"};
  options.not_before = not_before;
  options.not_after = not_after;
  Issued leaf = MakeCert(chain.intermediate, options);
  CertificateMaterial material{leaf.cert_pem + chain.intermediate.cert_pem,
                               SecretBytes(leaf.key_pem), chain.root.cert_pem};
  ValidationOptions at = Options();

  at.now = not_before;
  EXPECT_TRUE(ValidateMaterial(kName, material, at).ok());
  at.now = not_after;
  EXPECT_TRUE(ValidateMaterial(kName, material, at).ok());
  at.now = not_after + absl::Seconds(1);
  EXPECT_EQ(RejectionReason(ValidateMaterial(kName, material, at).status()), kReasonExpired);
  at.now = not_before - absl::Seconds(1);
  EXPECT_EQ(RejectionReason(ValidateMaterial(kName, material, at).status()), kReasonNotYetValid);
}

// ---- DnsNameMatches. ----

// Proves exact names match case-insensitively and ignore one trailing dot.
TEST(DnsNameMatchesTest, ExactNamesMatchCaseInsensitively) {
  EXPECT_TRUE(DnsNameMatches("example.test", "example.test"));
  EXPECT_TRUE(DnsNameMatches("Example.TEST", "example.test"));
  EXPECT_TRUE(DnsNameMatches("example.test.", "example.test"));
  EXPECT_FALSE(DnsNameMatches("example.test", "example.tes"));
  EXPECT_FALSE(DnsNameMatches("example.test", "a.example.test"));
}

// Proves a wildcard stands for exactly one whole leftmost label.
TEST(DnsNameMatchesTest, WildcardMatchesOneLeftmostLabel) {
  EXPECT_TRUE(DnsNameMatches("*.example.test", "a.example.test"));
  EXPECT_TRUE(DnsNameMatches("*.example.test", "A.EXAMPLE.test"));
  EXPECT_FALSE(DnsNameMatches("*.example.test", "a.b.example.test"));
  EXPECT_FALSE(DnsNameMatches("*.example.test", "example.test"));
  EXPECT_FALSE(DnsNameMatches("*.example.test", ".example.test"));
  EXPECT_FALSE(DnsNameMatches("*.example.test", "a.example.test.evil"));
}

// Proves malformed or over-broad patterns match nothing.
TEST(DnsNameMatchesTest, RejectsMalformedPatterns) {
  EXPECT_FALSE(DnsNameMatches("*.test", "a.test"));  // wildcard needs two labels after it
  EXPECT_FALSE(DnsNameMatches("a.*.example.test", "a.b.example.test"));
  EXPECT_FALSE(DnsNameMatches("a*.example.test", "ab.example.test"));
  EXPECT_FALSE(DnsNameMatches("*", "a"));
  EXPECT_FALSE(DnsNameMatches("", ""));
  EXPECT_FALSE(DnsNameMatches("example.test", ""));
  EXPECT_FALSE(DnsNameMatches("a..test", "a..test"));
}

// Proves a wildcard requirement is covered only by the same wildcard, not by one host name.
TEST(DnsNameMatchesTest, WildcardHostNeedsSameWildcard) {
  EXPECT_TRUE(DnsNameMatches("*.example.test", "*.example.test"));
  EXPECT_FALSE(DnsNameMatches("a.example.test", "*.example.test"));
}

// ---- Digests and reasons. ----

// Proves Sha256Hex is lowercase hex SHA-256 (FIPS 180-2 "abc" vector).
TEST(DigestTest, Sha256HexMatchesKnownVector) {
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

// Proves ContentDigest changes when any one of chain, key or CA changes, and only then.
TEST(DigestTest, ContentDigestCoversChainKeyAndCa) {
  const CertificateMaterial& base = TheWorld().good.material;
  const std::string digest = ContentDigest(base);
  EXPECT_EQ(digest.size(), 64u);
  EXPECT_EQ(ContentDigest(CertificateMaterial(base)), digest);

  CertificateMaterial chain = base;
  chain.chain_pem += "\n";
  CertificateMaterial key = base;
  key.key_pem = SecretBytes(TheWorld().other.leaf.key_pem);
  CertificateMaterial ca = base;
  ca.ca_pem = "";
  EXPECT_NE(ContentDigest(chain), digest);
  EXPECT_NE(ContentDigest(key), digest);
  EXPECT_NE(ContentDigest(ca), digest);
}

// Proves bytes cannot move between fields without changing the digest.
TEST(DigestTest, ContentDigestSeparatesFields) {
  EXPECT_NE(ContentDigest({"ab", SecretBytes("c"), ""}),
            ContentDigest({"a", SecretBytes("bc"), ""}));
  EXPECT_NE(ContentDigest({"a", SecretBytes(""), "b"}), ContentDigest({"a", SecretBytes("b"), ""}));
}

// Proves a reason survives WithReason and a status without one reads as "other".
TEST(ReasonTest, WithReasonRoundTripsAndDefaultsToOther) {
  EXPECT_EQ(RejectionReason(absl::NotFoundError("x")), "other");
  EXPECT_EQ(RejectionReason(WithReason(absl::NotFoundError("x"), "missing")), "missing");
  EXPECT_EQ(RejectionReason(absl::OkStatus()), "other");
}


// LeafFingerprint agrees with validation's fingerprint and refuses non-certificates.
TEST(LeafFingerprintTest, MatchesValidationFingerprint) {
  fixtures::Chain chain = fixtures::MakeChain();
  absl::StatusOr<std::string> fingerprint = LeafFingerprint(chain.material.chain_pem);
  ASSERT_TRUE(fingerprint.ok()) << fingerprint.status();
  EXPECT_EQ(*fingerprint, chain.leaf.fingerprint);
  EXPECT_EQ(LeafFingerprint("garbage").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace certcast
