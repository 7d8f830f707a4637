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
  // A connection attempt may take up to 60 s (gRPC's default: 20 s) before it counts as failed.
  // When a server restarts under thousands of clients, their TLS handshakes queue up behind each
  // other; clients that gave up after 20 s reconnected later and made the server do the work
  // again (bench/README.md: the 10,000-client TLS reconnect storm).
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 60'000);
  // Never reuse a connection from an earlier attempt: it may be the half-open one we left.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  // No bandwidth-delay probing: what arrives is a few kilobytes now and then, far inside the
  // default window, and every probe is a PING the server answers with a write of its own
  // (bench/README.md, optimization 15).
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
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
