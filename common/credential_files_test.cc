#include "common/credential_files.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/fixtures/fake_filesystem.h"

namespace certcast {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;

class CredentialFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_ = fixtures::MakeRootCa();
    fixtures::CertOptions options;
    options.common_name = "client";
    options.client_auth = true;
    leaf_ = fixtures::MakeCert(ca_, options);
    ASSERT_TRUE(fs_.CreateDir("/etc", 0755).ok());
    Write("/etc/ca.pem", ca_.cert_pem);
    Write("/etc/client.crt", leaf_.cert_pem);
    Write("/etc/client.key", leaf_.key_pem);
    Write("/etc/empty.pem", "\n");
    Write("/etc/garbage.pem", "hello\n");
  }
  void Write(const std::string& path, const std::string& text) {
    ASSERT_TRUE(fs_.WriteFile(path, text, 0600).ok());
  }

  fixtures::FakeFilesystem fs_;
  fixtures::Issued ca_;
  fixtures::Issued leaf_;
};

// A good CA bundle passes; missing, empty and non-PEM files are errors naming flag and file.
TEST_F(CredentialFilesTest, CertificateFileErrorsNameFlagAndFile) {
  EXPECT_TRUE(CheckCertificateFile(fs_, "--ca", "/etc/ca.pem").ok());
  for (const std::string path : {"/etc/missing.pem", "/etc/empty.pem", "/etc/garbage.pem"}) {
    const absl::Status status = CheckCertificateFile(fs_, "--ca", path);
    EXPECT_FALSE(status.ok()) << path;
    EXPECT_THAT(status.message(), AllOf(HasSubstr("--ca"), HasSubstr(path)));
  }
  EXPECT_THAT(CheckCertificateFile(fs_, "--ca", "/etc/empty.pem").message(), HasSubstr("empty"));
  EXPECT_THAT(CheckCertificateFile(fs_, "--ca", "/etc/garbage.pem").message(),
              HasSubstr("not PEM"));
  // A private key is not a certificate.
  EXPECT_FALSE(CheckCertificateFile(fs_, "--ca", "/etc/client.key").ok());
}

// The key must parse and belong to the certificate; no key bytes appear in any error.
TEST_F(CredentialFilesTest, KeyPairMustMatch) {
  EXPECT_TRUE(
      CheckKeyPairFiles(fs_, "--tls-cert", "/etc/client.crt", "--tls-key", "/etc/client.key").ok());
  Write("/etc/other.key", ca_.key_pem);
  const absl::Status mismatch =
      CheckKeyPairFiles(fs_, "--tls-cert", "/etc/client.crt", "--tls-key", "/etc/other.key");
  EXPECT_EQ(mismatch.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(mismatch.message(), AllOf(HasSubstr("--tls-key /etc/other.key"),
                                        HasSubstr("does not match"), Not(HasSubstr("PRIVATE"))));
  const absl::Status not_a_key =
      CheckKeyPairFiles(fs_, "--tls-cert", "/etc/client.crt", "--tls-key", "/etc/client.crt");
  EXPECT_THAT(not_a_key.message(), HasSubstr("--tls-key /etc/client.crt: holds no unencrypted"));
  Write("/etc/encrypted.key", fixtures::KeyPem(leaf_, fixtures::KeyFormat::kEncryptedPkcs8));
  EXPECT_FALSE(
      CheckKeyPairFiles(fs_, "--tls-cert", "/etc/client.crt", "--tls-key", "/etc/encrypted.key")
          .ok());
  EXPECT_THAT(CheckKeyPairFiles(fs_, "--tls-cert", "/etc/empty.pem", "--tls-key", "/etc/client.key")
                  .message(),
              HasSubstr("--tls-cert /etc/empty.pem: the file is empty"));
}

}  // namespace
}  // namespace certcast
