// Channel credentials of the client, read from files so SIGHUP can pick up rotated ones.
// Thread-safe.
#ifndef CERTCAST_CLIENT_CREDENTIALS_H_
#define CERTCAST_CLIENT_CREDENTIALS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/filesystem.h"
#include "grpcpp/security/credentials.h"

namespace certcast {

class CredentialsProvider {
 public:
  struct Options {
    bool insecure = false;
    std::string ca_file;     // trusted roots for the server certificate
    std::string cert_file;   // optional client certificate chain (mTLS)
    std::string key_file;    // its key
    std::string token_file;  // optional bearer token (projected ServiceAccount or static token)
  };
  // Does not own `fs`.
  CredentialsProvider(Filesystem* fs, Options options) : fs_(fs), options_(std::move(options)) {}

  // (Re)reads and checks the files. On error the previously loaded credentials stay in use.
  // Errors name the flag and the file: FailedPrecondition for a missing --ca or an incomplete
  // --tls-cert/--tls-key pair, InvalidArgument for an empty or non-PEM file or a key that does
  // not match the certificate, otherwise the read error.
  absl::Status Reload();

  // The credentials of the last successful Reload (insecure ones with --insecure).
  std::shared_ptr<grpc::ChannelCredentials> Get();

  // The bearer token, read now (the kubelet rotates projected tokens); empty without
  // --token-file. An error names the file.
  absl::StatusOr<std::string> BearerToken();

 private:
  Filesystem* const fs_;
  const Options options_;
  absl::Mutex mu_;
  std::shared_ptr<grpc::ChannelCredentials> credentials_ ABSL_GUARDED_BY(mu_);
};

}  // namespace certcast

#endif  // CERTCAST_CLIENT_CREDENTIALS_H_
