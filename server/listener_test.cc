#include "server/listener.h"

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace certcast {
namespace {

// Stands in for gRPC: takes each connection, and can be made to hold the first one (a hand-over
// that is slow, as gRPC's is for thousands of TLS connections on a busy machine).
class HoldingAcceptor : public grpc::experimental::ExternalConnectionAcceptor {
 public:
  void HandleNewConnection(NewConnectionParameters* parameters) override {
    release_.WaitForNotification();
    absl::MutexLock lock(&mu_);
    fds_.push_back(parameters->fd);
  }
  void Release() { release_.Notify(); }
  size_t taken() {
    absl::MutexLock lock(&mu_);
    return fds_.size();
  }
  ~HoldingAcceptor() override {
    for (int fd : fds_) close(fd);
  }

 private:
  absl::Notification release_;
  absl::Mutex mu_;
  std::vector<int> fds_ ABSL_GUARDED_BY(mu_);
};

int ConnectNonBlocking(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address));
  return fd;
}

// `count` clients that connect and send a first byte, as a TLS client sends its hello. (Until a
// client sends, a connection the kernel completed with a SYN cookie may not exist server-side.)
std::vector<int> ConnectAndSend(int port, int count) {
  std::vector<int> fds;
  for (int i = 0; i < count; ++i) fds.push_back(ConnectNonBlocking(port));
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  std::vector<int> pending = fds;
  while (!pending.empty() && absl::Now() < deadline) {
    std::vector<pollfd> polls;
    for (int fd : pending) polls.push_back({fd, POLLOUT, 0});
    poll(polls.data(), polls.size(), 100);
    pending.clear();
    for (const pollfd& p : polls) {
      if ((p.revents & POLLOUT) == 0 || write(p.fd, "x", 1) != 1) pending.push_back(p.fd);
    }
  }
  return fds;
}

template <typename Predicate>
bool WaitFor(Predicate done, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!done()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return true;
}

// The reproduction of a slow reconnect storm: while gRPC is busy taking one connection, the
// kernel's queue (here 4) fills and every further client's SYN is dropped, to be retransmitted
// 1, 3, 7, 15 s later. Accepting goes on while a hand-over is slow, so all of them get in.
TEST(ListenerTest, KeepsAcceptingWhileAHandOverIsSlow) {
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listener::Bind("127.0.0.1:0", 4);
  ASSERT_TRUE(listener.ok()) << listener.status();
  HoldingAcceptor acceptor;
  (*listener)->Start(&acceptor);

  const std::vector<int> clients = ConnectAndSend((*listener)->port(), 40);
  // One connection is in the held hand-over; every other one must be accepted meanwhile.
  EXPECT_TRUE(WaitFor([&] { return (*listener)->queued() == clients.size() - 1; },
                      absl::Seconds(20)))
      << "accepted while gRPC held one: " << (*listener)->queued() << " of " << clients.size() - 1;

  acceptor.Release();
  EXPECT_TRUE(WaitFor([&] { return acceptor.taken() == clients.size(); }, absl::Seconds(20)))
      << "handed over: " << acceptor.taken();
  (*listener)->Stop();
  for (int fd : clients) close(fd);
}

// Stop closes what was accepted but never handed over, at once: those clients see the
// connection end while a hand-over is still in progress.
TEST(ListenerTest, StopClosesConnectionsNotHandedOver) {
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listener::Bind("127.0.0.1:0", 4);
  ASSERT_TRUE(listener.ok()) << listener.status();
  HoldingAcceptor acceptor;
  (*listener)->Start(&acceptor);
  const std::vector<int> clients = ConnectAndSend((*listener)->port(), 8);
  ASSERT_TRUE(WaitFor([&] { return (*listener)->queued() == clients.size() - 1; },
                      absl::Seconds(20)));

  std::thread stopping([&] { (*listener)->Stop(); });
  size_t ended = 0;
  for (int fd : clients) {
    pollfd p = {fd, POLLIN, 0};
    char byte;
    if (poll(&p, 1, 10000) == 1 && read(fd, &byte, 1) <= 0) ++ended;
  }
  acceptor.Release();  // Stop returns once the hand-over in progress is done
  stopping.join();
  EXPECT_EQ(ended, clients.size() - 1);
  EXPECT_EQ(acceptor.taken(), 1u);
  for (int fd : clients) close(fd);
}

}  // namespace
}  // namespace certcast
