#include "server/etcd_client.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/secret.h"

namespace certcast {
namespace {

constexpr char kScheme[] = "etcd://";

bool IsPrefixSegment(absl::string_view segment) {
  if (segment.empty()) return false;
  for (char c : segment) {
    if (!(absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-')) return false;
  }
  return true;
}

// HOST:PORT or [V6]:PORT with a port in range.
bool IsEndpoint(absl::string_view endpoint) {
  const size_t colon = endpoint.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) return false;
  int port = 0;
  return absl::SimpleAtoi(endpoint.substr(colon + 1), &port) && port > 0 && port <= 65535;
}

}  // namespace

absl::StatusOr<EtcdStoreLocation> ParseEtcdStoreUrl(const std::string& url) {
  const auto invalid = [&url](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--store=", url, ": expected etcd://HOST:PORT[,HOST:PORT...]/PREFIX (", why, ")"));
  };
  if (!absl::StartsWith(url, kScheme)) return invalid("no etcd:// scheme");
  const absl::string_view rest = absl::string_view(url).substr(sizeof(kScheme) - 1);
  const size_t slash = rest.find('/');
  if (slash == absl::string_view::npos) return invalid("no /PREFIX");
  EtcdStoreLocation location;
  for (absl::string_view endpoint : absl::StrSplit(rest.substr(0, slash), ',')) {
    if (!IsEndpoint(endpoint)) {
      return invalid(absl::StrCat("\"", endpoint, "\" is not HOST:PORT"));
    }
    location.endpoints.emplace_back(endpoint);
  }
  absl::string_view prefix = rest.substr(slash + 1);
  if (absl::EndsWith(prefix, "/")) prefix.remove_suffix(1);
  for (absl::string_view segment : absl::StrSplit(prefix, '/')) {
    if (!IsPrefixSegment(segment)) {
      return invalid("PREFIX must be segments of letters, digits, '.', '_', '-' separated by '/'");
    }
  }
  location.prefix = absl::StrCat("/", prefix);
  return location;
}

std::string PrefixRangeEnd(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    if (static_cast<unsigned char>(end.back()) < 0xff) {
      end.back() = static_cast<char>(end.back() + 1);
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

absl::StatusOr<std::unique_ptr<EtcdClient>> EtcdClient::Create(Filesystem& fs,
                                                               std::vector<std::string> endpoints,
                                                               const EtcdTlsFiles& tls,
                                                               absl::Duration timeout) {
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "--store-cert and --store-key go together (etcd client certificate and its key)");
  }
  if (!tls.ca_file.empty() || !tls.cert_file.empty()) {
    grpc::SslCredentialsOptions ssl;
    const auto read = [&fs](const char* flag, const std::string& path,
                            std::string* out) -> absl::Status {
      if (path.empty()) return absl::OkStatus();
      absl::StatusOr<std::string> content = fs.ReadFile(path);
      if (!content.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat(flag, "=", path, ": cannot read (", content.status().message(), ")"));
      }
      *out = *std::move(content);
      return absl::OkStatus();
    };
    if (absl::Status s = read("--store-ca", tls.ca_file, &ssl.pem_root_certs); !s.ok()) return s;
    if (absl::Status s = read("--store-cert", tls.cert_file, &ssl.pem_cert_chain); !s.ok()) {
      return s;
    }
    if (absl::Status s = read("--store-key", tls.key_file, &ssl.pem_private_key); !s.ok()) {
      return s;
    }
    credentials = grpc::SslCredentials(ssl);
    CleanseString(&ssl.pem_private_key);
  }
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 5000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  // etcd answers a Range of the whole prefix in one message; states are at most a few MiB.
  args.SetMaxReceiveMessageSize(64 * 1024 * 1024);
  std::vector<Endpoint> channels;
  for (std::string& address : endpoints) {
    Endpoint endpoint;
    endpoint.channel = grpc::CreateCustomChannel(address, credentials, args);
    endpoint.kv = etcdserverpb::KV::NewStub(endpoint.channel);
    endpoint.lease = etcdserverpb::Lease::NewStub(endpoint.channel);
    endpoint.address = std::move(address);
    channels.push_back(std::move(endpoint));
  }
  if (channels.empty()) return absl::InvalidArgumentError("no etcd endpoint");
  return std::unique_ptr<EtcdClient>(new EtcdClient(std::move(channels), timeout));
}

std::shared_ptr<grpc::Channel> EtcdClient::channel() const {
  absl::MutexLock lock(&mu_);
  return endpoints_[current_].channel;
}

std::string EtcdClient::endpoint() const {
  absl::MutexLock lock(&mu_);
  return endpoints_[current_].address;
}

void EtcdClient::NextEndpoint() {
  absl::MutexLock lock(&mu_);
  current_ = (current_ + 1) % endpoints_.size();
}

absl::Status EtcdClient::ToStatus(const grpc::Status& status, const char* method,
                                  const std::string& address) const {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      absl::StrCat("etcd ", address, " ", method, ": ", status.error_message()));
}

template <typename Response, typename Call>
absl::StatusOr<Response> EtcdClient::Unary(const char* method, Call call) {
  size_t index = 0;
  {
    absl::MutexLock lock(&mu_);
    index = current_;
  }
  Endpoint& endpoint = endpoints_[index];
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + timeout_));
  Response response;
  const grpc::Status status = call(endpoint, &context, &response);
  if (status.ok()) return response;
  if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
      status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
    absl::MutexLock lock(&mu_);
    if (current_ == index) current_ = (current_ + 1) % endpoints_.size();
  }
  return ToStatus(status, method, endpoint.address);
}

absl::StatusOr<etcdserverpb::RangeResponse> EtcdClient::Range(
    const etcdserverpb::RangeRequest& request) {
  return Unary<etcdserverpb::RangeResponse>(
      "Range", [&](Endpoint& e, grpc::ClientContext* c, etcdserverpb::RangeResponse* r) {
        return e.kv->Range(c, request, r);
      });
}

absl::StatusOr<etcdserverpb::TxnResponse> EtcdClient::Txn(const etcdserverpb::TxnRequest& request) {
  return Unary<etcdserverpb::TxnResponse>(
      "Txn", [&](Endpoint& e, grpc::ClientContext* c, etcdserverpb::TxnResponse* r) {
        return e.kv->Txn(c, request, r);
      });
}

absl::StatusOr<int64_t> EtcdClient::LeaseGrant(int64_t ttl) {
  etcdserverpb::LeaseGrantRequest request;
  request.set_ttl(ttl);
  absl::StatusOr<etcdserverpb::LeaseGrantResponse> granted =
      Unary<etcdserverpb::LeaseGrantResponse>(
          "LeaseGrant",
          [&](Endpoint& e, grpc::ClientContext* c, etcdserverpb::LeaseGrantResponse* r) {
            return e.lease->LeaseGrant(c, request, r);
          });
  if (!granted.ok()) return granted.status();
  if (!granted->error().empty()) {
    return absl::UnavailableError(absl::StrCat("etcd LeaseGrant: ", granted->error()));
  }
  return granted->id();
}

absl::Status EtcdClient::LeaseRevoke(int64_t id) {
  etcdserverpb::LeaseRevokeRequest request;
  request.set_id(id);
  return Unary<etcdserverpb::LeaseRevokeResponse>(
             "LeaseRevoke",
             [&](Endpoint& e, grpc::ClientContext* c, etcdserverpb::LeaseRevokeResponse* r) {
               return e.lease->LeaseRevoke(c, request, r);
             })
      .status();
}

absl::StatusOr<int64_t> EtcdClient::LeaseKeepAliveOnce(int64_t id) {
  absl::StatusOr<etcdserverpb::LeaseKeepAliveResponse> kept =
      Unary<etcdserverpb::LeaseKeepAliveResponse>(
          "LeaseKeepAlive",
          [&](Endpoint& e, grpc::ClientContext* c, etcdserverpb::LeaseKeepAliveResponse* r) {
            auto stream = e.lease->LeaseKeepAlive(c);
            etcdserverpb::LeaseKeepAliveRequest request;
            request.set_id(id);
            if (stream->Write(request) && stream->Read(r)) {
              stream->WritesDone();
              c->TryCancel();  // etcd keeps the stream open; nothing more to read
              stream->Finish().IgnoreError();
              return grpc::Status::OK;
            }
            stream->WritesDone();
            grpc::Status status = stream->Finish();
            return status.ok() ? grpc::Status(grpc::StatusCode::UNAVAILABLE,
                                              "keep-alive stream closed without an answer")
                               : status;
          });
  if (!kept.ok()) return kept.status();
  return kept->ttl();
}

}  // namespace certcast
