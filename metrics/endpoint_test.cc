#include "metrics/endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "metrics/families.h"
#include "tests/fixtures/metrics_text.h"

namespace certcast::metrics {
namespace {

using ::certcast::fixtures::MetricValue;

// GET http://127.0.0.1:port/path; the body, or "" when the connection fails.
std::string Get(int port, const std::string& path) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<struct sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return "";
  }
  const std::string request =
      absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
  if (write(fd, request.data(), request.size()) != static_cast<ssize_t>(request.size())) {
    close(fd);
    return "";
  }
  std::string response;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) response.append(buffer, size_t(n));
  close(fd);
  const size_t start = response.find("\r\n\r\n");
  return start == std::string::npos ? "" : response.substr(start + 4);
}

// Counts its scrapes, so a test sees values computed at scrape time.
class CountingCollectable final : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override {
    prometheus::MetricFamily family =
        Family("certcast_test_scrapes_total", "Scrapes.", prometheus::MetricType::Counter);
    AddSample(family, {}, static_cast<double>(++scrapes_));
    return {family, BuildInfo()};
  }

 private:
  mutable std::atomic<int> scrapes_{0};
};

// Port 0 binds a free port; /metrics serves what the collectable computes at each scrape.
TEST(MetricsEndpointTest, ServesCollectablesOnTheBoundPort) {
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint = MetricsEndpoint::Start("127.0.0.1:0");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  ASSERT_GT((*endpoint)->port(), 0);
  (*endpoint)->Register(std::make_shared<CountingCollectable>());
  const std::string first = Get((*endpoint)->port(), "/metrics");
  EXPECT_EQ(MetricValue(first, "certcast_test_scrapes_total"), 1) << first;
  EXPECT_EQ(MetricValue(
                first, "certcast_build_info",
                {{"version", std::string(BuildVersion())}, {"commit", std::string(BuildCommit())}}),
            1);
  EXPECT_EQ(MetricValue(Get((*endpoint)->port(), "/metrics"), "certcast_test_scrapes_total"), 2);
}

// ":PORT" listens on every interface, like --health-listen.
TEST(MetricsEndpointTest, EmptyHostMeansEveryInterface) {
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> endpoint = MetricsEndpoint::Start(":0");
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  (*endpoint)->Register(std::make_shared<CountingCollectable>());
  EXPECT_EQ(MetricValue(Get((*endpoint)->port(), "/metrics"), "certcast_test_scrapes_total"), 1);
}

// A port in use is Unavailable, a malformed address InvalidArgument: never an exception.
TEST(MetricsEndpointTest, ReportsBadAddressesAsStatus) {
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> first = MetricsEndpoint::Start("127.0.0.1:0");
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<std::unique_ptr<MetricsEndpoint>> taken =
      MetricsEndpoint::Start(absl::StrCat("127.0.0.1:", (*first)->port()));
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kUnavailable) << taken.status();
  for (const char* bad :
       {"", "9090", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:70000", "127.0.0.1:1,127.0.0.1:2"}) {
    EXPECT_EQ(MetricsEndpoint::Start(bad).status().code(), absl::StatusCode::kInvalidArgument)
        << bad;
  }
}

}  // namespace
}  // namespace certcast::metrics
