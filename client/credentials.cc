#include "client/credentials.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/credential_files.h"
#include "common/secret.h"
#include "common/status_macros.h"

namespace certcast {

absl::Status CredentialsProvider::Reload() {
  if (options_.insecure) {
    absl::MutexLock lock(&mu_);
    credentials_ = grpc::InsecureChannelCredentials();
    return absl::OkStatus();
  }
  if (options_.ca_file.empty()) {
    return absl::FailedPreconditionError(
        "no TLS configured: pass --ca (and --tls-cert/--tls-key for mTLS), or --insecure");
  }
  if (options_.cert_file.empty() != options_.key_file.empty()) {
    return absl::FailedPreconditionError("--tls-cert and --tls-key must be given together");
  }
  // gRPC takes any bytes here and fails every handshake later: check the files first.
  RETURN_IF_ERROR(CheckCertificateFile(*fs_, "--ca", options_.ca_file));
  if (!options_.cert_file.empty()) {
    RETURN_IF_ERROR(
        CheckKeyPairFiles(*fs_, "--tls-cert", options_.cert_file, "--tls-key", options_.key_file));
  }
  grpc::SslCredentialsOptions ssl;
  ASSIGN_OR_RETURN(ssl.pem_root_certs, fs_->ReadFile(options_.ca_file));
  if (!options_.cert_file.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_cert_chain, fs_->ReadFile(options_.cert_file));
    ASSIGN_OR_RETURN(ssl.pem_private_key, fs_->ReadFile(options_.key_file));
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::SslCredentials(ssl);
  CleanseString(&ssl.pem_private_key);
  absl::MutexLock lock(&mu_);
  credentials_ = std::move(credentials);
  return absl::OkStatus();
}

absl::StatusOr<std::string> CredentialsProvider::BearerToken() {
  // Never send a token in plaintext (an --insecure server needs none anyway).
  if (options_.token_file.empty() || options_.insecure) return std::string();
  absl::StatusOr<std::string> read = fs_->ReadFile(options_.token_file);
  if (!read.ok()) return Annotate(read.status(), "--token-file");
  std::string token = *std::move(read);
  std::string trimmed(absl::StripAsciiWhitespace(token));
  CleanseString(&token);
  if (trimmed.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("--token-file ", options_.token_file, " is empty"));
  }
  return trimmed;
}

std::shared_ptr<grpc::ChannelCredentials> CredentialsProvider::Get() {
  absl::MutexLock lock(&mu_);
  return credentials_;
}

}  // namespace certcast
