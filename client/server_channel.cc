#include "client/server_channel.h"

namespace certcast {

std::shared_ptr<grpc::Channel> MakeServerChannel(const std::string& server,
                                                 const std::string& tls_server_name,
                                                 CredentialsProvider* credentials) {
  grpc::ChannelArguments args;
  // A dead server or half-open connection is noticed by keepalive as well as by heartbeats.
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Never reuse a connection from an earlier attempt: it may be the half-open one we left.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  if (!tls_server_name.empty()) args.SetSslTargetNameOverride(tls_server_name);
  return grpc::CreateCustomChannel(server, credentials->Get(), args);
}

bool ConnectLimiter::Acquire(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto available = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return free_ > 0; };
  if (!mu_.AwaitWithTimeout(absl::Condition(&available), timeout)) return false;
  --free_;
  return true;
}

void ConnectLimiter::Release() {
  absl::MutexLock lock(&mu_);
  ++free_;
}

}  // namespace certcast
