// How the client reaches certcast-server: a gRPC channel with the keepalive settings that agree
// with the server's, and a limit on how many streams sharing one channel may wait for their
// first answer at once (the shared writer opens one stream per namespace on one connection;
// the server refuses more than 64 streams awaiting their hello per connection by default).
#ifndef CERTCAST_CLIENT_SERVER_CHANNEL_H_
#define CERTCAST_CLIENT_SERVER_CHANNEL_H_

#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/credentials.h"
#include "grpcpp/grpcpp.h"

namespace certcast {

// A new channel to `server` (HOST:PORT) with `credentials`; `tls_server_name` overrides the name
// checked in the server certificate when not empty. Keepalive finds a dead server or a half-open
// connection; the channel never shares a connection with another channel.
std::shared_ptr<grpc::Channel> MakeServerChannel(const std::string& server,
                                                 const std::string& tls_server_name,
                                                 CredentialsProvider* credentials);

// A counting semaphore for streams that wait for the server's first message. Thread-safe.
class ConnectLimiter {
 public:
  explicit ConnectLimiter(int slots) : free_(slots) {}
  // Takes a slot when one frees up within `timeout`; false otherwise (the caller checks
  // whether it should stop, then tries again).
  bool Acquire(absl::Duration timeout);
  void Release();

 private:
  absl::Mutex mu_;
  int free_ ABSL_GUARDED_BY(mu_);
};

}  // namespace certcast

#endif  // CERTCAST_CLIENT_SERVER_CHANNEL_H_
