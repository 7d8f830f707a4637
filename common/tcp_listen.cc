#include "common/tcp_listen.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace certcast {
namespace {

bool IsWildcard(const std::string& host) {
  return host.empty() || host == "0.0.0.0" || host == "::";
}

// One socket bound to `address`; -1 with `*err` set when that fails.
int BindOne(const struct sockaddr* address, socklen_t length, int backlog, bool dual_stack,
            int* err) {
  const int fd = socket(address->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) {
    *err = errno;
    return -1;
  }
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (dual_stack) {
    const int zero = 0;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
  }
  if (bind(fd, address, length) != 0 || listen(fd, backlog) != 0) {
    *err = errno;
    close(fd);
    return -1;
  }
  return fd;
}

// Splits HOST:PORT ([V6]:PORT too); an empty host means every interface.
absl::Status SplitHostPort(const std::string& host_port, std::string* host, int* port) {
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("\"", host_port, "\" is not HOST:PORT"));
  }
  std::string h = host_port.substr(0, colon);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  int p = 0;
  if (!absl::SimpleAtoi(host_port.substr(colon + 1), &p) || p < 0 || p > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("\"", host_port, "\" has an invalid port"));
  }
  *host = h;
  *port = p;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ListeningSocket> ListenTcp(const std::string& host_port, int backlog) {
  std::string host;
  int port = 0;
  if (absl::Status split = SplitHostPort(host_port, &host, &port); !split.ok()) return split;
  int fd = -1;
  int err = 0;
  if (IsWildcard(host)) {
    struct sockaddr_in6 any6 = {};
    any6.sin6_family = AF_INET6;
    any6.sin6_addr = in6addr_any;
    any6.sin6_port = htons(static_cast<uint16_t>(port));
    fd = BindOne(reinterpret_cast<sockaddr*>(&any6), sizeof(any6), backlog, true, &err);
    if (fd < 0 && (err == EAFNOSUPPORT || err == EADDRNOTAVAIL)) {  // a kernel without IPv6
      struct sockaddr_in any4 = {};
      any4.sin_family = AF_INET;
      any4.sin_addr.s_addr = htonl(INADDR_ANY);
      any4.sin_port = htons(static_cast<uint16_t>(port));
      fd = BindOne(reinterpret_cast<sockaddr*>(&any4), sizeof(any4), backlog, false, &err);
    }
  } else {
    struct addrinfo hints = {};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    struct addrinfo* addresses = nullptr;
    const std::string port_text = std::to_string(port);
    if (int rc = getaddrinfo(host.c_str(), port_text.c_str(), &hints, &addresses); rc != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot resolve ", host_port, ": ", gai_strerror(rc)));
    }
    for (struct addrinfo* a = addresses; a != nullptr && fd < 0; a = a->ai_next) {
      fd = BindOne(a->ai_addr, a->ai_addrlen, backlog, false, &err);
    }
    freeaddrinfo(addresses);
  }
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", host_port, ": ", strerror(err)));
  }
  struct sockaddr_storage bound = {};
  socklen_t length = sizeof(bound);
  getsockname(fd, reinterpret_cast<struct sockaddr*>(&bound), &length);
  const int bound_port =
      ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                        : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  return ListeningSocket{fd, bound_port};
}

}  // namespace certcast
