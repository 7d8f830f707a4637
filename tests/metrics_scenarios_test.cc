// End-to-end checks of /metrics on the real certcast-server and certcast-client binaries: the
// values move with rotations, ACKs, NACKs, source rejections, source removal and denials.
#include <signal.h>
#include <sys/stat.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/filesystem.h"
#include "gtest/gtest.h"
#include "tests/child_process.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/fixtures/metrics_text.h"
#include "tests/test_subscriber.h"

namespace certcast {
namespace {

using ::certcast::fixtures::Chain;
using ::certcast::fixtures::MakeChain;
using ::certcast::fixtures::MetricLabels;
using ::certcast::fixtures::TempDir;
using ::certcast::scenario::ChildProcess;
using ::certcast::scenario::WaitFor;

const MetricLabels kWildcard = {{"certificate", "wildcard"}};

void WriteText(const std::string& path, const std::string& text, mode_t mode = 0600) {
  PosixFilesystem fs;
  ASSERT_TRUE(WriteFileAtomically(fs, path, text, mode).ok());
}

// One /metrics endpoint of a child process.
class Scraper {
 public:
  Scraper() = default;
  explicit Scraper(int port) : port_(port) {}

  // The current exposition; empty when the endpoint does not answer 200.
  std::string Text() const {
    std::string body;
    return scenario::HttpGet(port_, "/metrics", &body) == 200 ? body : "";
  }
  // The value of `name` with exactly `labels`; -1 when absent.
  double Value(const std::string& name, const MetricLabels& labels = kWildcard) const {
    return fixtures::MetricValue(Text(), name, labels).value_or(-1);
  }
  // Waits (with a deadline) until `holds` accepts the value; adds the last exposition to the
  // failure message.
  ::testing::AssertionResult WaitUntil(const std::string& name, const MetricLabels& labels,
                                       const std::function<bool(double)>& holds,
                                       absl::Duration timeout = absl::Seconds(20)) const {
    std::string last;
    const bool held = WaitFor(
        [&] {
          last = Text();
          std::optional<double> value = fixtures::MetricValue(last, name, labels);
          return value.has_value() && holds(*value);
        },
        timeout);
    if (held) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << name << " never held; last scrape:\n" << last;
  }
  ::testing::AssertionResult WaitForValue(const std::string& name, const MetricLabels& labels,
                                          double expected) const {
    return WaitUntil(name, labels, [expected](double value) { return value == expected; });
  }

 private:
  int port_ = 0;
};

std::function<bool(double)> AtLeast(double minimum) {
  return [minimum](double value) { return value >= minimum; };
}

class MetricsScenarioTest : public ::testing::Test {
 protected:
  void SetUp() override {
    chain_ = MakeChain();
    fixtures::WriteKubeletDir(Source(), chain_.material);
  }

  std::string Source() const { return tmp_.Join("source"); }

  // An insecure server whose current version is "expiring soon" (the leaf is valid for 90 days).
  void StartServer(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--listen=127.0.0.1:0",
                                     "--insecure",
                                     "--certificate=wildcard=" + Source(),
                                     "--state-dir=" + tmp_.Join("server-state"),
                                     "--quiet-period=20ms",
                                     "--confirm-delay=100ms",
                                     "--expiry-warning=2400h",
                                     "--metrics-listen=127.0.0.1:0"};
    args.insert(args.end(), extra.begin(), extra.end());
    server_ = std::make_unique<ChildProcess>(CERTCAST_SERVER_BINARY, args, tmp_.Join("server.log"));
    port_ = server_->WaitForPort();
    ASSERT_NE(port_, 0) << server_->log();
    const std::string metrics = server_->WaitForLog("metrics on port ([0-9]+)");
    ASSERT_FALSE(metrics.empty()) << server_->log();
    server_metrics_ = Scraper(std::stoi(metrics));
  }

  // An insecure client of `ns`, writing to out-NS unless `output_dir` is given.
  std::unique_ptr<ChildProcess> StartClient(const std::string& ns, Scraper* metrics,
                                            std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {absl::StrCat("--server=127.0.0.1:", port_),
                                     "--insecure",
                                     "--namespace=" + ns,
                                     "--client-id=client-" + ns,
                                     "--certificate=wildcard",
                                     "--output-dir=" + tmp_.Join("out-" + ns),
                                     "--state-dir=" + tmp_.Join("state-" + ns),
                                     "--metrics-listen=127.0.0.1:0"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto client =
        std::make_unique<ChildProcess>(CERTCAST_CLIENT_BINARY, args, tmp_.Join("client-" + ns));
    const std::string port = client->WaitForLog("metrics on port ([0-9]+)");
    EXPECT_FALSE(port.empty()) << client->log();
    *metrics = Scraper(port.empty() ? 0 : std::stoi(port));
    return client;
  }

  v1::Certificate GetCertificate() {
    auto inspection = v1::Inspection::NewStub(scenario::InsecureChannel(port_));
    grpc::ClientContext context;
    v1::GetCertificateRequest request;
    request.set_name("wildcard");
    v1::Certificate response;
    EXPECT_TRUE(inspection->GetCertificate(&context, request, &response).ok());
    return response;
  }

  TempDir tmp_;
  Chain chain_;
  std::unique_ptr<ChildProcess> server_;
  int port_ = 0;
  Scraper server_metrics_;
};

// A first delivery and a rotation move the server's version gauge, publications and ACKs, and
// the client's applied version; once every client acknowledged, none is behind.
TEST_F(MetricsScenarioTest, RotationAndAcksMoveServerAndClientMetrics) {
  StartServer();
  EXPECT_EQ(server_metrics_.Value("certcast_certificate_version"), 1);
  EXPECT_EQ(server_metrics_.Value("certcast_publications_total"), 1);
  EXPECT_EQ(server_metrics_.Value("certcast_source_present"), 1);
  EXPECT_EQ(fixtures::MetricSamples(server_metrics_.Text(), "certcast_build_info"), 1);
  Scraper client_metrics;
  auto client = StartClient("tenant-a", &client_metrics);
  ASSERT_TRUE(client_metrics.WaitForValue("certcast_client_applied_version", kWildcard, 1))
      << client->log();
  ASSERT_TRUE(server_metrics_.WaitForValue("certcast_acks_total", kWildcard, 1));
  EXPECT_EQ(server_metrics_.Value("certcast_clients_connected"), 1);
  EXPECT_EQ(server_metrics_.Value("certcast_clients_behind"), 0);
  EXPECT_EQ(server_metrics_.Value("certcast_oldest_unacked_push_age_seconds"), 0);
  EXPECT_EQ(server_metrics_.Value("certcast_push_to_ack_seconds_count"), 1);
  EXPECT_GT(client_metrics.Value("certcast_client_last_apply_timestamp_seconds"), 0);
  EXPECT_GT(client_metrics.Value("certcast_client_not_after_seconds"),
            absl::ToUnixSeconds(absl::Now()));

  Chain next = MakeChain();
  fixtures::WriteKubeletDir(Source(), next.material);
  ASSERT_TRUE(server_metrics_.WaitForValue("certcast_certificate_version", kWildcard, 2));
  EXPECT_EQ(server_metrics_.Value("certcast_publications_total"), 2);
  ASSERT_TRUE(client_metrics.WaitForValue("certcast_client_applied_version", kWildcard, 2))
      << client->log();
  ASSERT_TRUE(server_metrics_.WaitForValue("certcast_acks_total", kWildcard, 2));
  EXPECT_TRUE(server_metrics_.WaitForValue("certcast_clients_behind", kWildcard, 0));
  EXPECT_EQ(server_metrics_.Value("certcast_push_to_ack_seconds_count"), 2);
  EXPECT_EQ(client_metrics.Value("certcast_client_reconnects_total", {}), 0);
  EXPECT_EQ(client_metrics.Value("certcast_client_apply_failures_total",
                                 {{"certificate", "wildcard"}, {"sink", "files"}}),
            -1)
      << "no failure, no sample";
}

// A client that cannot write its files NACKs: the server counts the NACK by sink and keeps the
// client behind with an ageing push; the client counts the failure for the files sink.
TEST_F(MetricsScenarioTest, NackShowsOnServerAndClient) {
  StartServer();
  const std::string blocked = tmp_.Join("out-tenant-b");
  ASSERT_EQ(mkdir(blocked.c_str(), 0755), 0);
  WriteText(blocked + "/wildcard", "a file where the directory should be", 0644);
  Scraper client_metrics;
  auto client = StartClient("tenant-b", &client_metrics);
  ASSERT_TRUE(server_metrics_.WaitUntil(
      "certcast_nacks_total", {{"certificate", "wildcard"}, {"reason", "files"}}, AtLeast(1)))
      << client->log();
  ASSERT_TRUE(client_metrics.WaitUntil("certcast_client_apply_failures_total",
                                       {{"certificate", "wildcard"}, {"sink", "files"}},
                                       AtLeast(1)));
  EXPECT_EQ(client_metrics.Value("certcast_client_applied_version"), 0);
  EXPECT_EQ(server_metrics_.Value("certcast_clients_behind"), 1);
  EXPECT_EQ(server_metrics_.Value("certcast_acks_total"), 0);
  EXPECT_TRUE(server_metrics_.WaitUntil("certcast_oldest_unacked_push_age_seconds", kWildcard,
                                        [](double age) { return age > 0; }));
}

// certcast_client_reconnects_total counts connections after the first, and
// certcast_client_heartbeat_misses_total streams given up because the server fell silent: a
// server restart moves only the first; a stopped (SIGSTOP) server moves both.
TEST_F(MetricsScenarioTest, ReconnectsAndHeartbeatMissesAreCounted) {
  // A fixed port, so the restarted server is found again; heartbeats every 2 s (silence: 4 s).
  const std::vector<std::string> flags = {
      absl::StrCat("--listen=127.0.0.1:", scenario::PickFreePort()), "--heartbeat-interval=2s"};
  StartServer(flags);
  Scraper client_metrics;
  auto client = StartClient("tenant-a", &client_metrics);
  ASSERT_TRUE(server_metrics_.WaitForValue("certcast_acks_total", kWildcard, 1)) << client->log();
  EXPECT_EQ(client_metrics.Value("certcast_client_reconnects_total", {}), 0);
  EXPECT_EQ(client_metrics.Value("certcast_client_heartbeat_misses_total", {}), 0);

  server_->Signal(SIGKILL);
  server_->Wait(absl::Seconds(10));
  StartServer(flags);
  ASSERT_TRUE(client_metrics.WaitUntil("certcast_client_reconnects_total", {}, AtLeast(1)))
      << client->log();
  ASSERT_TRUE(server_metrics_.WaitUntil("certcast_clients_connected", kWildcard, AtLeast(1)))
      << client->log();
  EXPECT_EQ(client_metrics.Value("certcast_client_heartbeat_misses_total", {}), 0)
      << "a stream that ended is not a missed heartbeat";
  const double reconnects = client_metrics.Value("certcast_client_reconnects_total", {});

  // Stopped, the server holds the connection open but says nothing: only heartbeats tell.
  server_->Signal(SIGSTOP);
  const bool missed = client_metrics.WaitUntil("certcast_client_heartbeat_misses_total", {},
                                               AtLeast(1), absl::Seconds(30));
  server_->Signal(SIGCONT);
  ASSERT_TRUE(missed) << client->log();
  EXPECT_TRUE(
      client_metrics.WaitUntil("certcast_client_reconnects_total", {}, AtLeast(reconnects + 1)))
      << "the client connects again after giving up on the silent stream";
}

// certcast_client_connected follows the stream: 1 while the server is up, 0 once it stops
// (killed, and stopped silent: only the heartbeat timeout tells), 1 again when it is back;
// certcast_client_last_server_message_timestamp_seconds keeps the last time it heard from it.
TEST_F(MetricsScenarioTest, ClientShowsWhetherItHearsTheServer) {
  const std::vector<std::string> flags = {
      absl::StrCat("--listen=127.0.0.1:", scenario::PickFreePort()), "--heartbeat-interval=2s"};
  StartServer(flags);
  Scraper client_metrics;
  auto client = StartClient("tenant-a", &client_metrics);
  ASSERT_TRUE(client_metrics.WaitForValue("certcast_client_connected", {}, 1)) << client->log();
  ASSERT_TRUE(client_metrics.WaitUntil("certcast_client_last_server_message_timestamp_seconds", {},
                                       AtLeast(absl::ToUnixSeconds(absl::Now()) - 60)));

  server_->Signal(SIGKILL);
  server_->Wait(absl::Seconds(10));
  ASSERT_TRUE(client_metrics.WaitForValue("certcast_client_connected", {}, 0)) << client->log();
  const double last_heard =
      client_metrics.Value("certcast_client_last_server_message_timestamp_seconds", {});
  EXPECT_GT(last_heard, 0) << "the last time it heard the server stays visible";
  EXPECT_LE(last_heard, absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()));

  StartServer(flags);
  ASSERT_TRUE(client_metrics.WaitForValue("certcast_client_connected", {}, 1)) << client->log();
  EXPECT_TRUE(client_metrics.WaitUntil("certcast_client_last_server_message_timestamp_seconds", {},
                                       [&](double at) { return at > last_heard; }));

  // Stopped, the server keeps the connection open and says nothing: 0 after the heartbeat
  // timeout (two intervals), not only when the connection breaks.
  server_->Signal(SIGSTOP);
  const bool silent = client_metrics.WaitForValue("certcast_client_connected", {}, 0);
  server_->Signal(SIGCONT);
  ASSERT_TRUE(silent) << client->log();
  EXPECT_TRUE(client_metrics.WaitForValue("certcast_client_connected", {}, 1)) << client->log();
}

// Invalid source content is counted by reason; a removed source reads as absent while the last
// good version is still served (metrics, inspection and a new subscriber agree).
TEST_F(MetricsScenarioTest, SourceRejectionAndRemoval) {
  StartServer();
  CertificateMaterial mismatched = MakeChain().material;
  mismatched.key_pem = chain_.material.key_pem;
  fixtures::WriteKubeletDir(Source(), mismatched);
  ASSERT_TRUE(
      server_metrics_.WaitForValue("certcast_source_rejections_total",
                                   {{"certificate", "wildcard"}, {"reason", "key_mismatch"}}, 1));
  EXPECT_EQ(server_metrics_.Value("certcast_source_present"), 1);
  EXPECT_EQ(server_metrics_.Value("certcast_certificate_version"), 1);

  std::filesystem::remove_all(Source());
  ASSERT_TRUE(server_metrics_.WaitForValue("certcast_source_present", kWildcard, 0));
  EXPECT_EQ(server_metrics_.Value("certcast_source_rejections_total",
                                  {{"certificate", "wildcard"}, {"reason", "missing"}}),
            1);
  EXPECT_EQ(server_metrics_.Value("certcast_certificate_version"), 1);
  EXPECT_GT(server_metrics_.Value("certcast_certificate_not_after_seconds"),
            absl::ToUnixSeconds(absl::Now()));
  const v1::Certificate certificate = GetCertificate();
  EXPECT_FALSE(certificate.source_present());
  EXPECT_TRUE(certificate.expiring_soon()) << "90-day leaf, --expiry-warning=2400h";
  EXPECT_EQ(certificate.current().version(), 1u);

  scenario::TestSubscriber late(scenario::InsecureChannel(port_));
  v1::HeldCertificate held;
  held.set_name("wildcard");
  ASSERT_TRUE(late.SendHello("tenant-late", "late", {held}));
  std::optional<v1::SubscribeResponse> update = late.NextNonHeartbeat();
  ASSERT_TRUE(update.has_value() && update->has_update());
  EXPECT_EQ(update->update().version(), 1u);
  EXPECT_EQ(update->update().fingerprint(), chain_.leaf.fingerprint);
}

// With mTLS and a policy, a client of a namespace the policy does not name is denied: the
// authorizer's reason and the stream's status code are counted.
TEST_F(MetricsScenarioTest, DenialsAreCounted) {
  fixtures::Issued server_ca = fixtures::MakeRootCa("certcast test server ca");
  fixtures::CertOptions serving;
  serving.common_name = "certcast-server";
  serving.dns_names = {"localhost"};
  fixtures::Issued server_cert = fixtures::MakeCert(server_ca, serving);
  fixtures::Issued client_ca = fixtures::MakeRootCa("certcast test client ca");
  fixtures::CertOptions identity;
  identity.common_name = "outsider/certcast-client";
  identity.uri_sans = {"spiffe://cluster.local/ns/outsider/sa/certcast-client"};
  identity.client_auth = true;
  fixtures::Issued client_cert = fixtures::MakeCert(client_ca, identity);
  WriteText(tmp_.Join("ca.pem"), server_ca.cert_pem);
  WriteText(tmp_.Join("server.crt"), server_cert.cert_pem);
  WriteText(tmp_.Join("server.key"), server_cert.key_pem);
  WriteText(tmp_.Join("client-ca.pem"), client_ca.cert_pem);
  WriteText(tmp_.Join("client.crt"), client_cert.cert_pem);
  WriteText(tmp_.Join("client.key"), client_cert.key_pem);
  WriteText(tmp_.Join("policy.yaml"),
            "certificates:\n  wildcard:\n    namespaces: [\"tenant-*\"]\n");

  server_ = std::make_unique<ChildProcess>(
      CERTCAST_SERVER_BINARY,
      std::vector<std::string>{
          "--listen=127.0.0.1:0", "--tls-cert=" + tmp_.Join("server.crt"),
          "--tls-key=" + tmp_.Join("server.key"), "--client-ca=" + tmp_.Join("client-ca.pem"),
          "--trust-domain=cluster.local", "--policy=" + tmp_.Join("policy.yaml"),
          "--certificate=wildcard=" + Source(), "--state-dir=" + tmp_.Join("server-state"),
          "--metrics-listen=127.0.0.1:0"},
      tmp_.Join("server-tls.log"));
  port_ = server_->WaitForPort();
  ASSERT_NE(port_, 0) << server_->log();
  const std::string metrics = server_->WaitForLog("metrics on port ([0-9]+)");
  ASSERT_FALSE(metrics.empty()) << server_->log();
  server_metrics_ = Scraper(std::stoi(metrics));

  Scraper client_metrics;
  auto client = StartClient(
      "outsider", &client_metrics,
      {"--insecure=false", "--ca=" + tmp_.Join("ca.pem"), "--tls-server-name=localhost",
       "--tls-cert=" + tmp_.Join("client.crt"), "--tls-key=" + tmp_.Join("client.key")});
  ASSERT_TRUE(server_metrics_.WaitUntil("certcast_auth_denials_total", {{"reason", "not_allowed"}},
                                        AtLeast(1)))
      << client->log();
  EXPECT_TRUE(server_metrics_.WaitUntil("certcast_stream_errors_total",
                                        {{"code", "PERMISSION_DENIED"}}, AtLeast(1)));
  EXPECT_EQ(server_metrics_.Value("certcast_clients_connected"), 0);
  EXPECT_EQ(client_metrics.Value("certcast_client_applied_version"), 0);
}

}  // namespace
}  // namespace certcast
