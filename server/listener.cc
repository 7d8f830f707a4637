#include "server/listener.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/tcp_listen.h"

namespace certcast {

absl::StatusOr<std::unique_ptr<Listener>> Listener::Bind(const std::string& address,
                                                          int backlog) {
  absl::StatusOr<ListeningSocket> socket = ListenTcp(address, backlog);
  if (!socket.ok()) return socket.status();
  const int wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd < 0) {
    close(socket->fd);
    return absl::InternalError(absl::StrCat("eventfd: ", strerror(errno)));
  }
  return std::unique_ptr<Listener>(new Listener(socket->fd, wake_fd, socket->port));
}

Listener::~Listener() {
  Stop();
  close(wake_fd_);
}

void Listener::Start(grpc::experimental::ExternalConnectionAcceptor* acceptor,
                     absl::Duration retry, size_t max_queued) {
  max_queued_ = max_queued;
  accepting_ = std::thread([this, retry] { AcceptLoop(retry); });
  handing_over_ = std::thread([this, acceptor] { HandOverLoop(acceptor); });
}

size_t Listener::queued() const {
  absl::MutexLock lock(&mu_);
  return accepted_.size();
}

void Listener::Stop() {
  if (stopping_.exchange(true)) return;
  const uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof(one)) < 0) {
    // Cannot fail after one write to a fresh eventfd; the loop also checks stopping_.
  }
  {
    // Under mu_ after stopping_ is set, so that both loops' conditions see it.
    absl::MutexLock lock(&mu_);
    for (int connection : accepted_) close(connection);  // never handed over
    accepted_.clear();
  }
  if (accepting_.joinable()) accepting_.join();
  if (handing_over_.joinable()) handing_over_.join();
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
}

bool Listener::Wait(int timeout_ms) {
  struct pollfd fds[2] = {{fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  while (poll(fds, 2, timeout_ms) < 0 && errno == EINTR) {
  }
  return !stopping_.load();
}

void Listener::AcceptLoop(absl::Duration retry) {
  const int retry_ms = static_cast<int>(absl::ToInt64Milliseconds(retry));
  bool paused = false;  // one log line per episode, not one per retry
  while (Wait(-1)) {
    for (;;) {
      {
        absl::MutexLock lock(&mu_);
        mu_.Await(absl::Condition(
            +[](Listener* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
              return self->stopping_.load() || self->accepted_.size() < self->max_queued_;
            },
            this));
        if (stopping_.load()) return;
      }
      const int connection = accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (connection >= 0) {
        if (paused) {
          LogInfo("accepting connections again", {{"port", port_}});
          paused = false;
        }
        const int one = 1;  // what gRPC's own listener sets: pushes are not held back
        setsockopt(connection, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        absl::MutexLock lock(&mu_);
        if (stopping_.load()) {
          close(connection);
          return;
        }
        accepted_.push_back(connection);
        continue;
      }
      const int err = errno;
      if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) break;
      // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays in the backlog until a file
      // descriptor or memory is free again.
      if (!paused) {
        LogWarn(absl::StrCat("cannot accept connections: ", strerror(err), "; retrying every ",
                             absl::FormatDuration(retry)),
                {{"port", port_}});
        paused = true;
        pauses_.fetch_add(1, std::memory_order_relaxed);
      }
      // Waits on the wake-up only: the socket stays readable while the backlog is full.
      struct pollfd wake = {wake_fd_, POLLIN, 0};
      while (poll(&wake, 1, retry_ms) < 0 && errno == EINTR) {
      }
      if (stopping_.load()) return;
    }
  }
}

void Listener::HandOverLoop(grpc::experimental::ExternalConnectionAcceptor* acceptor) {
  for (;;) {
    int connection;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Listener* self) ABSL_EXCLUSIVE_LOCKS_REQUIRED(self->mu_) {
            return self->stopping_.load() || !self->accepted_.empty();
          },
          this));
      if (stopping_.load()) return;
      connection = accepted_.front();
      accepted_.pop_front();
    }
    grpc::experimental::ExternalConnectionAcceptor::NewConnectionParameters parameters;
    parameters.listener_fd = fd_;
    parameters.fd = connection;  // gRPC owns it from here
    acceptor->HandleNewConnection(&parameters);
  }
}

}  // namespace certcast
