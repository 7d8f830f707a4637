#include "common/http_probe_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <list>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/tcp_listen.h"

namespace certcast {

HttpProbeServer::~HttpProbeServer() { Stop(); }

absl::StatusOr<int> HttpProbeServer::Start(const std::string& host_port) {
  absl::StatusOr<ListeningSocket> socket = ListenTcp(host_port, 64);
  if (!socket.ok()) return socket.status();
  const int fd = socket->fd;
  const int bound_port = socket->port;
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

namespace {

// A probe request is one short line plus a few headers; more is not a probe.
constexpr size_t kMaxRequestBytes = 8 * 1024;

using SteadyClock = std::chrono::steady_clock;

}  // namespace

struct HttpProbeServer::Connection {
  int fd = -1;
  SteadyClock::time_point deadline;
  std::string request;   // bytes read so far
  std::string response;  // set once the request head is complete; then only writing remains
  size_t written = 0;
};

void HttpProbeServer::AcceptAll(std::list<Connection>& connections) {
  while (true) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) {
      // EAGAIN: nothing more pending. EMFILE and friends: retry on the next poll round.
      return;
    }
    // Oldest first: a slow or idle connection gives way to the newest, which is likely a probe.
    while (!connections.empty() &&
           static_cast<int>(connections.size()) >= std::max(1, options_.max_connections)) {
      close(connections.front().fd);
      connections.pop_front();
    }
    Connection connection;
    connection.fd = fd;
    connection.deadline = SteadyClock::now() + options_.request_deadline;
    connections.push_back(std::move(connection));
  }
}

void HttpProbeServer::Serve() {
  std::list<Connection> connections;
  std::vector<struct pollfd> fds;
  while (!stopping_.load()) {
    fds.clear();
    fds.push_back({listen_fd_, POLLIN, 0});
    fds.push_back({wake_fd_, POLLIN, 0});
    SteadyClock::time_point next_deadline = SteadyClock::time_point::max();
    for (const Connection& c : connections) {
      fds.push_back({c.fd, static_cast<short>(c.response.empty() ? POLLIN : POLLOUT), 0});
      next_deadline = std::min(next_deadline, c.deadline);
    }
    int timeout_ms = -1;
    if (!connections.empty()) {
      const auto left =
          std::chrono::ceil<std::chrono::milliseconds>(next_deadline - SteadyClock::now());
      timeout_ms = static_cast<int>(std::max<int64_t>(0, left.count()));
    }
    if (poll(fds.data(), fds.size(), timeout_ms) < 0 && errno != EINTR) break;
    if (stopping_.load()) break;

    // Serve the connections polled above (fds[2...] in list order) before accepting new ones.
    const SteadyClock::time_point now = SteadyClock::now();
    size_t i = 2;
    for (auto it = connections.begin(); it != connections.end(); ++i) {
      Connection& c = *it;
      const short revents = fds[i].revents;
      bool done = false;
      if (c.response.empty() && (revents & (POLLIN | POLLHUP | POLLERR))) {
        char buffer[2048];
        const ssize_t n = read(c.fd, buffer, sizeof(buffer));
        if (n > 0) c.request.append(buffer, static_cast<size_t>(n));
        const bool complete = c.request.find("\r\n\r\n") != std::string::npos ||
                              c.request.find("\n\n") != std::string::npos;
        if (complete || c.request.size() >= kMaxRequestBytes) {
          c.response = Respond(c.request);
        } else if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
          done = true;  // the peer went away before finishing its request
        }
      }
      if (!done && !c.response.empty()) {
        // Usually the whole response fits the socket buffer and goes out right away.
        const ssize_t n =
            send(c.fd, c.response.data() + c.written, c.response.size() - c.written, MSG_NOSIGNAL);
        if (n > 0) c.written += static_cast<size_t>(n);
        if (c.written == c.response.size() || (n < 0 && errno != EAGAIN && errno != EINTR)) {
          done = true;
        }
      }
      if (!done && now >= c.deadline) done = true;  // the whole exchange took too long
      if (done) {
        close(c.fd);
        it = connections.erase(it);
      } else {
        ++it;
      }
    }
    if (fds[0].revents & POLLIN) AcceptAll(connections);
  }
  for (const Connection& c : connections) close(c.fd);
}

std::string HttpProbeServer::Respond(const std::string& request) {
  const size_t line_end = request.find_first_of("\r\n");
  std::vector<std::string> parts = absl::StrSplit(request.substr(0, line_end), ' ');
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
  return response;
}

}  // namespace certcast
