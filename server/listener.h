// The server's listening socket, accepted by certcast and handed to gRPC connection by
// connection. gRPC 1.51's own listener stops accepting for good after one failed accept4: when
// the process' file table is full (EMFILE, e.g. in a reconnect storm of thousands of clients or
// under a flood of half-open connections), the server went on looking alive but never took a
// connection again. This one pauses and retries instead.
//
// Accepting and handing over run on two threads. gRPC sets a connection up on the thread that
// hands it over (its transport and, with TLS, the handshake's first steps: 70-160 us), so one
// loop doing both took a few thousand connections a second on a busy machine, while a reconnect
// storm brings ten thousand at once: the kernel's queue (net.core.somaxconn) overflowed, and
// each dropped SYN cost its client 1, 3, 7 or 15 s of TCP retransmission. The accepting thread
// only accepts, into a queue of its own that the handing-over thread drains in order.
//
// Thread safety: Start and Stop are called from one thread; the two loops have their own.
#ifndef CERTCAST_SERVER_LISTENER_H_
#define CERTCAST_SERVER_LISTENER_H_

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server_builder.h"

namespace certcast {

class Listener {
 public:
  // Binds and listens on `address`, HOST:PORT. An empty host, 0.0.0.0 and [::] mean every
  // interface, IPv6 and IPv4 alike (as gRPC's own listener treats a wildcard); port 0 picks one.
  // The kernel caps `backlog` at net.core.somaxconn.
  static absl::StatusOr<std::unique_ptr<Listener>> Bind(const std::string& address,
                                                        int backlog = SOMAXCONN);
  ~Listener();
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;

  int port() const { return port_; }
  // How often accepting paused because the process had no file descriptor or memory left.
  uint64_t pauses() const { return pauses_.load(std::memory_order_relaxed); }

  // Accepted connections waiting to be handed to gRPC.
  size_t queued() const;

  // Hands every accepted connection to `acceptor` (which must outlive Stop). A full file table
  // pauses accepting for `retry`, then accepting resumes. At most `max_queued` accepted
  // connections wait for `acceptor`; beyond that the kernel's queue holds them.
  void Start(grpc::experimental::ExternalConnectionAcceptor* acceptor,
             absl::Duration retry = absl::Milliseconds(100), size_t max_queued = 65536);
  // Closes the socket and the accepted connections not handed over yet: connections are
  // refused from now on. Waits for a hand-over in progress.
  void Stop();

 private:
  Listener(int fd, int wake_fd, int port) : fd_(fd), wake_fd_(wake_fd), port_(port) {}
  void AcceptLoop(absl::Duration retry);
  void HandOverLoop(grpc::experimental::ExternalConnectionAcceptor* acceptor);
  // Waits until the socket is readable, `timeout` passed (negative: no limit) or Stop was
  // called; false after Stop.
  bool Wait(int timeout_ms);

  int fd_;
  const int wake_fd_;  // an eventfd: Stop wakes the accept loop through it
  const int port_;
  std::thread accepting_;
  std::thread handing_over_;
  std::atomic<bool> stopping_{false};
  std::atomic<uint64_t> pauses_{0};
  mutable absl::Mutex mu_;
  size_t max_queued_ = 0;  // set by Start
  std::deque<int> accepted_ ABSL_GUARDED_BY(mu_);  // not handed to gRPC yet
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_LISTENER_H_
