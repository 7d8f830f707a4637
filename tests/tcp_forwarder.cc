#include "tests/tcp_forwarder.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace certcast::scenario {
namespace {

sockaddr_in Loopback(int port) {
  sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  return address;
}

}  // namespace

TcpForwarder::TcpForwarder(int target_port) : target_port_(target_port) {
  listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in address = Loopback(0);
  bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  listen(listen_fd_, 64);
  socklen_t length = sizeof(address);
  getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &length);
  port_ = ntohs(address.sin_port);
  acceptor_ = std::thread([this] { Accept(); });
}

TcpForwarder::~TcpForwarder() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (int fd : open_) shutdown(fd, SHUT_RDWR);
  }
  acceptor_.join();
  std::vector<std::thread> relays;
  {
    absl::MutexLock lock(&mu_);
    relays.swap(relays_);
  }
  for (std::thread& relay : relays) relay.join();
  close(listen_fd_);
}

void TcpForwarder::Cut() {
  absl::MutexLock lock(&mu_);
  cut_ = true;
  for (int fd : open_) shutdown(fd, SHUT_RDWR);
}

void TcpForwarder::Restore() {
  absl::MutexLock lock(&mu_);
  cut_ = false;
}

void TcpForwarder::Accept() {
  for (;;) {
    pollfd listening = {listen_fd_, POLLIN, 0};
    const int ready = poll(&listening, 1, 100);
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    if (ready <= 0) continue;
    const int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    absl::MutexLock lock(&mu_);
    if (cut_) {
      close(client);
      continue;
    }
    const int upstream = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in target = Loopback(target_port_);
    if (connect(upstream, reinterpret_cast<sockaddr*>(&target), sizeof(target)) != 0) {
      close(upstream);
      close(client);
      continue;
    }
    open_.insert(client);
    open_.insert(upstream);
    relays_.emplace_back([this, client, upstream] { Relay(client, upstream); });
  }
}

void TcpForwarder::Relay(int client, int upstream) {
  char buffer[16384];
  pollfd fds[2] = {{client, POLLIN, 0}, {upstream, POLLIN, 0}};
  for (bool open = true; open;) {
    if (poll(fds, 2, 200) < 0 && errno != EINTR) break;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ || cut_) break;
    }
    for (int i = 0; i < 2 && open; ++i) {
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      const ssize_t n = read(fds[i].fd, buffer, sizeof(buffer));
      if (n <= 0) {
        open = false;
        break;
      }
      for (ssize_t sent = 0; sent < n;) {
        const ssize_t w =
            send(fds[1 - i].fd, buffer + sent, static_cast<size_t>(n - sent), MSG_NOSIGNAL);
        if (w <= 0) {
          open = false;
          break;
        }
        sent += w;
      }
    }
  }
  absl::MutexLock lock(&mu_);
  open_.erase(client);
  open_.erase(upstream);
  shutdown(client, SHUT_RDWR);
  shutdown(upstream, SHUT_RDWR);
  close(client);
  close(upstream);
}

}  // namespace certcast::scenario
