#include "common/http_probe_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"

namespace certcast {
namespace {

// A generous bound for "served promptly": far above any scheduling delay, far below how long
// the attacks below would hold a one-at-a-time server.
constexpr absl::Duration kProbeDeadline = absl::Seconds(10);

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  struct sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<struct sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Reads until the peer closes, or DeadlineExceeded at `deadline`.
absl::StatusOr<std::string> ReadUntilClosed(int fd, absl::Time deadline) {
  std::string data;
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return absl::DeadlineExceededError(data);
    struct pollfd p = {fd, POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (ready < 0 && errno != EINTR) return absl::InternalError("poll failed");
    if (ready <= 0) continue;
    char buffer[1024];
    const ssize_t n = read(fd, buffer, sizeof(buffer));
    if (n == 0) return data;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      if (errno == ECONNRESET) return data;
      return absl::InternalError(absl::StrCat("read: ", errno));
    }
    data.append(buffer, static_cast<size_t>(n));
  }
}

// One probe: GET `path`, the whole response, within `deadline`.
absl::StatusOr<std::string> Get(int port, const std::string& path, absl::Time deadline) {
  const int fd = Connect(port);
  if (fd < 0) return absl::UnavailableError("cannot connect");
  const std::string request = absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: x\r\n\r\n");
  absl::StatusOr<std::string> response = absl::UnavailableError("cannot send");
  if (send(fd, request.data(), request.size(), MSG_NOSIGNAL) ==
      static_cast<ssize_t>(request.size())) {
    response = ReadUntilClosed(fd, deadline);
  }
  close(fd);
  return response;
}

// The attacker of issue 10 item 3: starts a request and then sends one byte a second, forever.
class SlowLoris {
 public:
  explicit SlowLoris(int port) : fd_(Connect(port)) {
    const std::string start = "GET /healthz HTTP/1.1\r\nX-Slow: ";
    if (fd_ >= 0) send(fd_, start.data(), start.size(), MSG_NOSIGNAL);
    thread_ = std::thread([this] {
      // Pacing the attacker, not waiting for the server: the test itself waits on conditions.
      while (!stop_.WaitForNotificationWithTimeout(absl::Seconds(1))) {
        if (send(fd_, "a", 1, MSG_NOSIGNAL) != 1) break;
        sent_.fetch_add(1);
      }
    });
  }
  ~SlowLoris() {
    stop_.Notify();
    thread_.join();
    if (fd_ >= 0) close(fd_);
  }
  int fd() const { return fd_; }
  int sent() const { return sent_.load(); }

 private:
  const int fd_;
  absl::Notification stop_;
  std::atomic<int> sent_{0};
  std::thread thread_;
};

class HttpProbeServerTest : public ::testing::Test {
 protected:
  int Start(HttpProbeServer::Options options = {}) {
    server_ = std::make_unique<HttpProbeServer>(options);
    server_->Handle("/healthz", [] { return absl::OkStatus(); });
    server_->Handle("/readyz", [] { return absl::UnavailableError("no certificate yet"); });
    absl::StatusOr<int> port = server_->Start("127.0.0.1:0");
    EXPECT_TRUE(port.ok()) << port.status();
    return port.ok() ? *port : 0;
  }
  std::unique_ptr<HttpProbeServer> server_;
};

// Proves the probes answer 200 when the check passes and 503 with the reason when it fails.
TEST_F(HttpProbeServerTest, AnswersChecks) {
  const int port = Start();
  absl::StatusOr<std::string> healthz = Get(port, "/healthz", absl::Now() + kProbeDeadline);
  ASSERT_TRUE(healthz.ok()) << healthz.status();
  EXPECT_TRUE(absl::StartsWith(*healthz, "HTTP/1.1 200 OK\r\n")) << *healthz;
  absl::StatusOr<std::string> readyz = Get(port, "/readyz?verbose", absl::Now() + kProbeDeadline);
  ASSERT_TRUE(readyz.ok()) << readyz.status();
  EXPECT_TRUE(absl::StartsWith(*readyz, "HTTP/1.1 503 ")) << *readyz;
  EXPECT_TRUE(absl::StrContains(*readyz, "no certificate yet")) << *readyz;
  absl::StatusOr<std::string> other = Get(port, "/other", absl::Now() + kProbeDeadline);
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_TRUE(absl::StartsWith(*other, "HTTP/1.1 404 ")) << *other;
}

// Proves a connection sending one byte a second does not delay a concurrent probe (issue 10
// item 3). The request deadline is far longer than the probe's, so only serving connections
// concurrently can pass.
TEST_F(HttpProbeServerTest, SlowLorisDoesNotDelayAConcurrentProbe) {
  HttpProbeServer::Options options;
  options.request_deadline = std::chrono::seconds(120);
  const int port = Start(options);
  SlowLoris slow(port);
  ASSERT_GE(slow.fd(), 0);
  absl::StatusOr<std::string> response = Get(port, "/healthz", absl::Now() + kProbeDeadline);
  ASSERT_TRUE(response.ok()) << response.status() << " (slow bytes sent: " << slow.sent() << ")";
  EXPECT_TRUE(absl::StartsWith(*response, "HTTP/1.1 200 OK\r\n")) << *response;
}

// Proves the deadline covers the whole request, not each read: a connection that keeps sending
// one byte a second is closed once its deadline passes.
TEST_F(HttpProbeServerTest, SlowRequestIsClosedAtItsDeadline) {
  HttpProbeServer::Options options;
  options.request_deadline = std::chrono::seconds(1);
  const int port = Start(options);
  SlowLoris slow(port);
  ASSERT_GE(slow.fd(), 0);
  absl::StatusOr<std::string> closed = ReadUntilClosed(slow.fd(), absl::Now() + absl::Seconds(30));
  EXPECT_TRUE(closed.ok()) << "still open after 30 s: " << closed.status();
}

// Proves many idle connections (more than the limit) cannot keep a probe from being served: the
// oldest give way to new ones.
TEST_F(HttpProbeServerTest, ManyIdleConnectionsDoNotStarveAProbe) {
  HttpProbeServer::Options options;
  options.request_deadline = std::chrono::seconds(120);
  options.max_connections = 8;
  const int port = Start(options);
  std::vector<int> idle;
  for (int i = 0; i < 40; ++i) {
    const int fd = Connect(port);
    ASSERT_GE(fd, 0);
    idle.push_back(fd);
  }
  absl::StatusOr<std::string> response = Get(port, "/healthz", absl::Now() + kProbeDeadline);
  for (int fd : idle) close(fd);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_TRUE(absl::StartsWith(*response, "HTTP/1.1 200 OK\r\n")) << *response;
}

}  // namespace
}  // namespace certcast
