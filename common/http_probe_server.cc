#include "common/http_probe_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace certcast {

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
  *host = h.empty() ? "0.0.0.0" : h;
  *port = p;
  return absl::OkStatus();
}

HttpProbeServer::~HttpProbeServer() { Stop(); }

absl::StatusOr<int> HttpProbeServer::Start(const std::string& host_port) {
  std::string host;
  int port = 0;
  absl::Status split = SplitHostPort(host_port, &host, &port);
  if (!split.ok()) return split;
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
  int fd = -1;
  int err = 0;
  for (struct addrinfo* a = addresses; a != nullptr && fd < 0; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 64) != 0) {
      err = errno;
      close(fd);
      fd = -1;
    }
  }
  freeaddrinfo(addresses);
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
  listen_fd_ = fd;
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  thread_ = std::thread([this] { Serve(); });
  return bound_port;
}

void HttpProbeServer::Stop() {
  if (stopping_.exchange(true)) return;
  if (wake_fd_ >= 0) {
    const uint64_t one = 1;
    if (write(wake_fd_, &one, sizeof(one)) < 0) {
      // Nothing to do: the eventfd cannot be full after one write.
    }
  }
  if (thread_.joinable()) thread_.join();
  if (listen_fd_ >= 0) close(listen_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
  listen_fd_ = wake_fd_ = -1;
}

void HttpProbeServer::Serve() {
  while (!stopping_.load()) {
    struct pollfd fds[2] = {{listen_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (stopping_.load()) return;
    if (!(fds[0].revents & POLLIN)) continue;
    const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    Respond(client);
    close(client);
  }
}

void HttpProbeServer::Respond(int fd) {
  // A probe request fits in one small read; wait at most 2 s for it.
  struct timeval timeout = {2, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
  char buffer[2048];
  std::string request;
  while (request.find("\r\n\r\n") == std::string::npos && request.size() < sizeof(buffer) * 4) {
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n <= 0) break;
    request.append(buffer, static_cast<size_t>(n));
  }
  std::vector<std::string> parts = absl::StrSplit(request.substr(0, request.find("\r\n")), ' ');
  int code = 404;
  std::string body = "not found\n";
  if (parts.size() < 2 || (parts[0] != "GET" && parts[0] != "HEAD")) {
    code = 405;
    body = "only GET is supported\n";
  } else {
    const std::string path = parts[1].substr(0, parts[1].find('?'));
    auto handler = handlers_.find(path);
    if (handler != handlers_.end()) {
      absl::Status status = handler->second();
      code = status.ok() ? 200 : 503;
      body = status.ok() ? "ok\n" : absl::StrCat(status.message(), "\n");
    }
  }
  const char* reason = code == 200   ? "OK"
                       : code == 503 ? "Service Unavailable"
                       : code == 405 ? "Method Not Allowed"
                                     : "Not Found";
  std::string response =
      absl::StrCat("HTTP/1.1 ", code, " ", reason,
                   "\r\nContent-Type: text/plain\r\nContent-Length: ", body.size(),
                   "\r\nConnection: close\r\n\r\n");
  if (parts.empty() || parts[0] != "HEAD") response += body;
  size_t written = 0;
  while (written < response.size()) {
    const ssize_t n = write(fd, response.data() + written, response.size() - written);
    if (n <= 0) return;
    written += static_cast<size_t>(n);
  }
}

}  // namespace certcast
