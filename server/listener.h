// The server's listening socket, accepted by certcast and handed to gRPC connection by
// connection. gRPC 1.51's own listener stops accepting for good after one failed accept4: when
// the process' file table is full (EMFILE, e.g. in a reconnect storm of thousands of clients or
// under a flood of half-open connections), the server went on looking alive but never took a
// connection again. This one pauses and retries instead.
//
// Thread safety: Start and Stop are called from one thread; the accept loop has its own.
#ifndef CERTCAST_SERVER_LISTENER_H_
#define CERTCAST_SERVER_LISTENER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/server_builder.h"

namespace certcast {

class Listener {
 public:
  // Binds and listens on `address`, HOST:PORT. An empty host, 0.0.0.0 and [::] mean every
  // interface, IPv6 and IPv4 alike (as gRPC's own listener treats a wildcard); port 0 picks one.
  static absl::StatusOr<std::unique_ptr<Listener>> Bind(const std::string& address);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  int port() const { return port_; }
  // How often accepting paused because the process had no file descriptor or memory left.
  uint64_t pauses() const { return pauses_.load(std::memory_order_relaxed); }

  // Hands every accepted connection to `acceptor` (which must outlive Stop) from a thread of
  // its own. A full file table pauses accepting for `retry`, then accepting resumes.
  void Start(grpc::experimental::ExternalConnectionAcceptor* acceptor,
             absl::Duration retry = absl::Milliseconds(100));
  // Closes the socket: connections are refused from now on.
  void Stop();

 private:
  Listener(int fd, int wake_fd, int port) : fd_(fd), wake_fd_(wake_fd), port_(port) {}
  void Run(grpc::experimental::ExternalConnectionAcceptor* acceptor, absl::Duration retry);
  // Waits until the socket is readable, `timeout` passed (negative: no limit) or Stop was
  // called; false after Stop.
  bool Wait(int timeout_ms);

  int fd_;
  const int wake_fd_;  // an eventfd: Stop wakes the loop through it
  const int port_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> pauses_{0};
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_LISTENER_H_
