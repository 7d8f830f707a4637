// EtcdClient speaks etcd's v3 gRPC API (protos/etcd, etcd's own messages and field numbers) to
// the endpoints of `--store=etcd://HOST:PORT[,HOST:PORT...]/PREFIX`: unary KV and Lease calls
// with a deadline, moving on to the next endpoint after a transport error, and the channel a
// Watch stream uses. Client TLS from `--store-ca`, `--store-cert`, `--store-key` (read once at
// start). Keepalive pings (10 s, above etcd's 5 s minimum) find dead connections; reconnects back
// off only up to 2 s, so a restarted etcd is found quickly.
// Thread-safe.
#ifndef CERTCAST_SERVER_ETCD_CLIENT_H_
#define CERTCAST_SERVER_ETCD_CLIENT_H_

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/filesystem.h"
#include "etcd/rpc.grpc.pb.h"

namespace certcast {

// Where an etcd store lives, from `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`.
struct EtcdStoreLocation {
  std::vector<std::string> endpoints;  // HOST:PORT
  std::string prefix;                  // "/PREFIX", no trailing slash
};

// Parses the URL. InvalidArgument naming the flag value otherwise: at least one HOST:PORT with a
// port in 1..65535, and a PREFIX of [A-Za-z0-9._-] segments separated by '/'.
absl::StatusOr<EtcdStoreLocation> ParseEtcdStoreUrl(const std::string& url);

// etcd client TLS: all empty for plaintext; a CA alone for server-authenticated TLS; cert and
// key together for client certificates.
struct EtcdTlsFiles {
  std::string ca_file;
  std::string cert_file;
  std::string key_file;
};

// The first key after every key that starts with `prefix` (etcd's range_end for a prefix).
std::string PrefixRangeEnd(const std::string& prefix);

class EtcdClient {
 public:
  // InvalidArgument naming the flag and the file when a TLS file cannot be read or cert and key
  // do not come together. `timeout`: the deadline of each unary call.
  static absl::StatusOr<std::unique_ptr<EtcdClient>> Create(Filesystem& fs,
                                                            std::vector<std::string> endpoints,
                                                            const EtcdTlsFiles& tls,
                                                            absl::Duration timeout);

  // The call's answer, or its gRPC error mapped to the same absl code with the endpoint and the
  // method named (Unavailable / DeadlineExceeded when etcd does not answer).
  absl::StatusOr<etcdserverpb::RangeResponse> Range(const etcdserverpb::RangeRequest& request);
  absl::StatusOr<etcdserverpb::TxnResponse> Txn(const etcdserverpb::TxnRequest& request);
  // A lease of `ttl` seconds (etcd may grant more); its ID.
  absl::StatusOr<int64_t> LeaseGrant(int64_t ttl);
  absl::Status LeaseRevoke(int64_t id);
  // One keep-alive of lease `id` on a short stream: the remaining TTL in seconds, 0 when the
  // lease is gone (expired or revoked).
  absl::StatusOr<int64_t> LeaseKeepAliveOnce(int64_t id);

  // The channel to the endpoint in use, for a Watch stream, and that endpoint.
  std::shared_ptr<grpc::Channel> channel() const;
  std::string endpoint() const;
  // After a stream failed: use the next endpoint.
  void NextEndpoint();

 private:
  struct Endpoint {
    std::string address;
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<etcdserverpb::KV::Stub> kv;
    std::unique_ptr<etcdserverpb::Lease::Stub> lease;
  };

  EtcdClient(std::vector<Endpoint> endpoints, absl::Duration timeout)
      : endpoints_(std::move(endpoints)), timeout_(timeout) {}

  // Runs `call` against the current endpoint; a transport error moves to the next one.
  template <typename Response, typename Call>
  absl::StatusOr<Response> Unary(const char* method, Call call);
  absl::Status ToStatus(const grpc::Status& status, const char* method,
                        const std::string& address) const;

  std::vector<Endpoint> endpoints_;
  const absl::Duration timeout_;
  mutable absl::Mutex mu_;
  size_t current_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_ETCD_CLIENT_H_
