// A listening TCP socket on HOST:PORT, for the servers certcast accepts on itself (the gRPC
// listener and the plain-HTTP probe endpoint).
#ifndef CERTCAST_COMMON_TCP_LISTEN_H_
#define CERTCAST_COMMON_TCP_LISTEN_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace certcast {

struct ListeningSocket {
  int fd = -1;  // non-blocking, close-on-exec; the caller closes it
  int port = 0;
};

// Binds and listens. An empty host, 0.0.0.0 and :: mean every interface, IPv6 and IPv4 alike
// (one dual-stack socket; IPv4 only where the kernel has no IPv6). Port 0 picks one.
absl::StatusOr<ListeningSocket> ListenTcp(const std::string& host_port, int backlog);

}  // namespace certcast

#endif  // CERTCAST_COMMON_TCP_LISTEN_H_
