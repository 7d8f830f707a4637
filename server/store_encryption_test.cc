#include "server/store_encryption.h"

#include <map>
#include <string>

#include <openssl/rand.h>

#include "absl/strings/escaping.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/fixtures/fake_filesystem.h"

namespace certcast {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// A private key minted for this run: what the store seals in practice.
const std::string& PrivateKeyPem() {
  static const std::string pem = fixtures::MakeRootCa("sealed").key_pem;
  return pem;
}

// A random 32-byte key per name, minted at run time; the same name gives the same key.
std::string RandomKey(char name) {
  static std::map<char, std::string> keys;
  std::string& key = keys[name];
  if (key.empty()) {
    key.resize(32);
    EXPECT_EQ(RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), 32), 1);
  }
  return key;
}

SecretBytes Key(char name) { return SecretBytes(RandomKey(name)); }

StoreEncryption Make(char current, std::optional<char> previous = std::nullopt) {
  std::optional<SecretBytes> previous_key;
  if (previous.has_value()) previous_key = Key(*previous);
  absl::StatusOr<StoreEncryption> encryption =
      StoreEncryption::FromKeys(Key(current), previous_key);
  EXPECT_TRUE(encryption.ok()) << encryption.status();
  return *std::move(encryption);
}

// A sealed value opens to the same bytes, and the envelope holds nothing of the plaintext.
TEST(StoreEncryptionTest, RoundTrip) {
  const StoreEncryption encryption = Make('a');
  absl::StatusOr<std::string> sealed = encryption.Seal(PrivateKeyPem(), "/certcast/state/wildcard");
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  EXPECT_TRUE(IsSealedEnvelope(*sealed));
  EXPECT_THAT(*sealed, Not(HasSubstr("PRIVATE KEY")));
  EXPECT_THAT(*sealed, HasSubstr(encryption.key_id()));
  EXPECT_TRUE(encryption.SealedWithCurrentKey(*sealed));
  absl::StatusOr<std::string> opened = encryption.Open(*sealed, "/certcast/state/wildcard", "k");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, PrivateKeyPem());
}

// Two seals of one value differ (a random nonce per value).
TEST(StoreEncryptionTest, NoncesDiffer) {
  const StoreEncryption encryption = Make('a');
  EXPECT_NE(*encryption.Seal(PrivateKeyPem(), "k"), *encryption.Seal(PrivateKeyPem(), "k"));
}

// A replica with another key cannot read the value; the error names the key id, not the key.
TEST(StoreEncryptionTest, WrongKeyIsRefused) {
  const std::string sealed = *Make('a').Seal(PrivateKeyPem(), "k");
  absl::StatusOr<std::string> opened = Make('b').Open(sealed, "k", "etcd key /p/state/x");
  EXPECT_TRUE(absl::IsFailedPrecondition(opened.status())) << opened.status();
  EXPECT_THAT(std::string(opened.status().message()), HasSubstr("etcd key /p/state/x"));
  EXPECT_THAT(std::string(opened.status().message()), HasSubstr(Make('a').key_id()));
}

// Any altered byte (header, nonce, ciphertext, tag), or a value moved to another key, fails
// authentication: DataLoss, never altered plaintext.
TEST(StoreEncryptionTest, TamperedCiphertextIsDataLoss) {
  const StoreEncryption encryption = Make('a');
  const std::string sealed = *encryption.Seal(PrivateKeyPem(), "k");
  for (size_t i = 36; i < sealed.size(); ++i) {
    std::string tampered = sealed;
    tampered[i] ^= 0x01;
    absl::StatusOr<std::string> opened = encryption.Open(tampered, "k", "v");
    EXPECT_TRUE(absl::IsDataLoss(opened.status())) << "byte " << i << ": " << opened.status();
  }
  EXPECT_TRUE(absl::IsDataLoss(encryption.Open(sealed, "other-key", "v").status()));
  EXPECT_TRUE(absl::IsDataLoss(encryption.Open(PrivateKeyPem(), "k", "v").status()));
  EXPECT_TRUE(absl::IsDataLoss(encryption.Open(sealed.substr(0, 40), "k", "v").status()));
}

// After a rotation the previous key still opens what it sealed; new values use the current one.
TEST(StoreEncryptionTest, PreviousKeyOpensOlderValues) {
  const std::string old_value = *Make('a').Seal(PrivateKeyPem(), "k");
  const StoreEncryption rotated = Make('b', 'a');
  absl::StatusOr<std::string> opened = rotated.Open(old_value, "k", "v");
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(*opened, PrivateKeyPem());
  EXPECT_FALSE(rotated.SealedWithCurrentKey(old_value));
  const std::string new_value = *rotated.Seal(PrivateKeyPem(), "k");
  EXPECT_TRUE(rotated.SealedWithCurrentKey(new_value));
  // The previous key alone does not open what the current key sealed.
  EXPECT_TRUE(absl::IsFailedPrecondition(Make('a').Open(new_value, "k", "v").status()));
}

// Key files: base64 of exactly 32 bytes; anything else is refused naming the flag and the file,
// never echoing the file's content.
TEST(StoreEncryptionTest, BadKeyFilesAreRefusedNamingTheFile) {
  fixtures::FakeFilesystem fs;
  ASSERT_TRUE(fs.CreateDir("/keys", 0700).ok());
  const std::string good = absl::Base64Escape(RandomKey('k'));
  ASSERT_TRUE(fs.WriteFile("/keys/good", good + "\n", 0600).ok());
  ASSERT_TRUE(fs.WriteFile("/keys/other", absl::Base64Escape(RandomKey('o')), 0600).ok());
  ASSERT_TRUE(fs.WriteFile("/keys/short", absl::Base64Escape("sixteen-byte-key"), 0600).ok());
  ASSERT_TRUE(fs.WriteFile("/keys/pem", PrivateKeyPem(), 0600).ok());
  EXPECT_TRUE(StoreEncryption::FromFiles(fs, "/keys/good", "").ok());
  EXPECT_TRUE(StoreEncryption::FromFiles(fs, "/keys/good", "/keys/other").ok());

  struct Case {
    std::string current, previous, expected;
  } cases[] = {
      {"", "", "--store-encryption-key-file is required"},
      {"/keys/missing", "", "--store-encryption-key-file=/keys/missing: cannot read"},
      {"/keys/short", "", "--store-encryption-key-file=/keys/short: holds 16 bytes"},
      {"/keys/pem", "", "--store-encryption-key-file=/keys/pem: not base64"},
      {"/keys/good", "/keys/short", "--store-encryption-previous-key-file=/keys/short: holds 16"},
      {"/keys/good", "/keys/good", "holds the same key"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<StoreEncryption> loaded = StoreEncryption::FromFiles(fs, c.current, c.previous);
    ASSERT_TRUE(absl::IsInvalidArgument(loaded.status())) << c.current << ": " << loaded.status();
    const std::string message(loaded.status().message());
    EXPECT_THAT(message, HasSubstr(c.expected));
    EXPECT_THAT(message, Not(HasSubstr(good)));
    EXPECT_THAT(message, Not(HasSubstr("PRIVATE KEY")));
  }
}

}  // namespace
}  // namespace certcast
