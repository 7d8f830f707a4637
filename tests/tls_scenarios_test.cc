// Transport security scenarios: TLS, mutual TLS with SPIFFE identities, and serving
// certificate rotation without a restart.
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/filesystem.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/test_subscriber.h"

namespace certcast {
namespace {

using ::certcast::fixtures::CertOptions;
using ::certcast::fixtures::Issued;
using ::certcast::fixtures::TempDir;
using ::certcast::scenario::TestSubscriber;
using ::certcast::scenario::WaitFor;

constexpr char kSpiffeId[] = "spiffe://cluster.local/ns/tenant-a/sa/certcast-client";

void WriteText(const std::string& path, const std::string& text) {
  PosixFilesystem fs;
  ASSERT_TRUE(WriteFileAtomically(fs, path, text, 0600).ok());
}

class TlsScenarioTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fixtures::WriteKubeletDir(tmp_.Join("source"), fixtures::MakeChain().material);
    server_ca_ = fixtures::MakeRootCa("certcast server ca");
    client_ca_ = fixtures::MakeRootCa("certcast client ca");
    WriteServingCert(server_ca_);
    WriteText(tmp_.Join("client-ca.pem"), client_ca_.cert_pem);
    options_.listen = "127.0.0.1:0";
    options_.tls_cert = tmp_.Join("server.crt");
    options_.tls_key = tmp_.Join("server.key");
    options_.tls_refresh_interval = absl::Seconds(1);
    options_.state_dir = tmp_.Join("state");
    options_.certificates.push_back({"wildcard", tmp_.Join("source"), {}});
  }

  void WriteServingCert(const Issued& ca) {
    CertOptions server;
    server.common_name = "certcast-server";
    server.dns_names = {"certcast.test"};
    Issued issued = fixtures::MakeCert(ca, server);
    WriteText(tmp_.Join("server.key"), issued.key_pem);
    WriteText(tmp_.Join("server.crt"), issued.cert_pem);
  }

  void Start() {
    auto server = CertcastServer::Start(options_, &fs_, &clock_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  std::shared_ptr<grpc::Channel> Channel(const Issued& trusted_ca, const Issued* client = nullptr) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = trusted_ca.cert_pem;
    if (client != nullptr) {
      ssl.pem_private_key = client->key_pem;
      ssl.pem_cert_chain = client->cert_pem;
    }
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("certcast.test");
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a fresh connection per channel
    return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", server_->port()),
                                     grpc::SslCredentials(ssl), args);
  }

  // Whether a TLS connection comes up (health and reflection need no identity).
  bool CanConnect(const std::shared_ptr<grpc::Channel>& channel) {
    return channel->WaitForConnected(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  }

  TempDir tmp_;
  Issued server_ca_;
  Issued client_ca_;
  PosixFilesystem fs_;
  RealClock clock_;
  ServerOptions options_;
  std::unique_ptr<CertcastServer> server_;
};

// Without TLS flags and without --insecure the server refuses to start.
TEST_F(TlsScenarioTest, RefusesToStartWithoutTlsOrInsecure) {
  options_.tls_cert.clear();
  options_.tls_key.clear();
  auto server = CertcastServer::Start(options_, &fs_, &clock_);
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(server.status().message()), ::testing::HasSubstr("--insecure"));
}

// A serving key that does not match its certificate is a start-up error, not a handshake error.
TEST_F(TlsScenarioTest, RefusesMismatchedServingKey) {
  WriteText(tmp_.Join("server.key"), fixtures::MakeRootCa("other").key_pem);
  auto server = CertcastServer::Start(options_, &fs_, &clock_);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(std::string(server.status().message()), ::testing::HasSubstr("--tls-cert/--tls-key"));
}

// Clients that trust the server's CA are served over TLS; a plaintext client is not.
TEST_F(TlsScenarioTest, ServesOverTls) {
  Start();
  EXPECT_TRUE(CanConnect(Channel(server_ca_)));
  EXPECT_FALSE(CanConnect(scenario::InsecureChannel(server_->port())));
}

// The serving certificate is re-read when its files change: no restart needed.
TEST_F(TlsScenarioTest, ReloadsRotatedServingCertificate) {
  Start();
  ASSERT_TRUE(CanConnect(Channel(server_ca_)));
  Issued new_ca = fixtures::MakeRootCa("rotated server ca");
  WriteServingCert(new_ca);
  EXPECT_TRUE(WaitFor([&] { return CanConnect(Channel(new_ca)); }));
}

// With --client-ca, a client certificate is required and its SPIFFE ID is shown in ListClients.
TEST_F(TlsScenarioTest, MutualTlsRecordsSpiffeIdentity) {
  options_.client_ca = tmp_.Join("client-ca.pem");
  options_.trust_domain = "cluster.local";
  WriteText(tmp_.Join("policy.yaml"), "certificates:\n  wildcard:\n    namespaces: [tenant-a]\n");
  options_.policy_file = tmp_.Join("policy.yaml");
  Start();
  CertOptions client_options;
  client_options.common_name = "tenant-a client";
  client_options.uri_sans = {kSpiffeId};
  client_options.client_auth = true;
  Issued client = fixtures::MakeCert(client_ca_, client_options);

  EXPECT_FALSE(CanConnect(Channel(server_ca_)));  // no client certificate
  Issued stranger = fixtures::MakeCert(fixtures::MakeRootCa("stranger"), client_options);
  EXPECT_FALSE(CanConnect(Channel(server_ca_, &stranger)));  // unknown issuer

  auto channel = Channel(server_ca_, &client);
  TestSubscriber subscriber(channel);
  v1::HeldCertificate held;
  held.set_name("wildcard");
  ASSERT_TRUE(subscriber.SendHello("tenant-a", "pod-1", {held}));
  std::optional<v1::SubscribeResponse> update = subscriber.NextNonHeartbeat();
  ASSERT_TRUE(update.has_value() && update->has_update());

  auto stub = v1::Inspection::NewStub(channel);
  grpc::ClientContext context;
  v1::ListClientsResponse clients;
  ASSERT_TRUE(stub->ListClients(&context, {}, &clients).ok());
  ASSERT_EQ(clients.clients_size(), 1);
  EXPECT_EQ(clients.clients(0).identity(), kSpiffeId);
  EXPECT_THAT(clients.clients(0).peer(), ::testing::HasSubstr("127.0.0.1"));
}

// Secure by default: a TLS server without a policy hands out nothing, even to a proven client.
TEST_F(TlsScenarioTest, WithoutPolicyNothingIsHandedOut) {
  options_.client_ca = tmp_.Join("client-ca.pem");
  options_.trust_domain = "cluster.local";
  options_.health_listen = "127.0.0.1:0";
  Start();
  std::string body;
  EXPECT_EQ(scenario::HttpGet(server_->health_port(), "/readyz", &body), 503);
  EXPECT_THAT(body, ::testing::HasSubstr("hands out nothing"));
  CertOptions client_options;
  client_options.uri_sans = {kSpiffeId};
  client_options.client_auth = true;
  Issued client = fixtures::MakeCert(client_ca_, client_options);
  TestSubscriber subscriber(Channel(server_ca_, &client));
  v1::HeldCertificate held;
  held.set_name("wildcard");
  ASSERT_TRUE(subscriber.SendHello("tenant-a", "pod-1", {held}));
  EXPECT_FALSE(subscriber.NextNonHeartbeat(absl::Seconds(2)).has_value());
  grpc::Status status = subscriber.Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("no policy"));
}

// The hardening scenarios of issue 10 over mTLS: two certificates, tenant-a granted only
// "wildcard", tenant-b only "secret-b".
class HardenedServerTest : public TlsScenarioTest {
 protected:
  void SetUp() override {
    TlsScenarioTest::SetUp();
    fixtures::WriteKubeletDir(tmp_.Join("source-b"), fixtures::MakeChain().material);
    options_.certificates.push_back({"secret-b", tmp_.Join("source-b"), {}});
    options_.client_ca = tmp_.Join("client-ca.pem");
    options_.trust_domain = "cluster.local";
    WriteText(tmp_.Join("policy.yaml"),
              "certificates:\n  wildcard:\n    namespaces: [tenant-a]\n"
              "  secret-b:\n    namespaces: [tenant-b]\n");
    options_.policy_file = tmp_.Join("policy.yaml");
  }

  Issued Client(const std::string& ns, absl::Time not_after = absl::Now() + absl::Hours(24)) {
    CertOptions options;
    options.uri_sans = {absl::StrCat("spiffe://cluster.local/ns/", ns, "/sa/certcast-client")};
    options.client_auth = true;
    options.not_after = not_after;
    return fixtures::MakeCert(client_ca_, options);
  }

  static v1::HeldCertificate Held(const std::string& name) {
    v1::HeldCertificate held;
    held.set_name(name);
    return held;
  }
};

// Item 6: a stream's heartbeats name only the certificates it subscribed to and is granted,
// never another tenant's certificate (its name, version or fingerprint).
TEST_F(HardenedServerTest, HeartbeatsNameOnlyTheStreamsCertificates) {
  options_.distribution.heartbeat_interval = absl::Milliseconds(200);
  Start();
  Issued tenant_a = Client("tenant-a");
  TestSubscriber subscriber(Channel(server_ca_, &tenant_a));
  ASSERT_TRUE(subscriber.SendHello("tenant-a", "pod-1", {Held("wildcard")}));
  int heartbeats = 0;
  while (heartbeats < 3) {  // the first one, and periodic ones
    std::optional<v1::SubscribeResponse> message = subscriber.Next();
    ASSERT_TRUE(message.has_value()) << "stream ended";
    if (!message->has_heartbeat()) continue;
    ++heartbeats;
    ASSERT_EQ(message->heartbeat().versions_size(), 1) << message->ShortDebugString();
    EXPECT_EQ(message->heartbeat().versions(0).name(), "wildcard");
    EXPECT_EQ(message->heartbeat().versions(0).version(), 1u);
  }
}

// Item 7: the hello is answered only after authentication, and a name that does not exist gets
// the same answer as a name that exists but is granted to another tenant.
TEST_F(HardenedServerTest, UnknownAndNotGrantedNamesGetTheSameAnswer) {
  Start();
  Issued tenant_a = Client("tenant-a");
  auto channel = Channel(server_ca_, &tenant_a);
  auto answer = [&](const std::string& name) {
    TestSubscriber subscriber(channel);
    subscriber.SendHello("tenant-a", "prober", {Held(name)});
    const grpc::Status status = subscriber.Finish();
    EXPECT_TRUE(subscriber.received().empty());
    std::string message = status.error_message();
    if (size_t at = message.find(name); at != std::string::npos)
      message.replace(at, name.size(), "N");
    return std::make_pair(status.error_code(), message);
  };
  const auto not_granted = answer("secret-b");
  EXPECT_EQ(not_granted.first, grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(answer("no-such-name"), not_granted);
}

// Item 5: a stream ends when its client certificate expires, with UNAUTHENTICATED and the
// credential_expired reason (a reconnect, never a revocation); the key is not sent after it.
TEST_F(HardenedServerTest, StreamEndsWhenItsClientCertificateExpires) {
  Start();
  const absl::Time not_after = absl::Now() + absl::Seconds(3);
  Issued short_lived = Client("tenant-a", not_after);
  TestSubscriber subscriber(Channel(server_ca_, &short_lived));
  ASSERT_TRUE(subscriber.SendHello("tenant-a", "pod-1", {Held("wildcard")}));
  std::optional<v1::SubscribeResponse> update = subscriber.NextNonHeartbeat();
  ASSERT_TRUE(update.has_value() && update->has_update());
  const grpc::Status status = subscriber.Finish(absl::Seconds(30));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  EXPECT_THAT(status.error_message(),
              ::testing::HasSubstr("client certificate of this stream expired"));
  // notAfter has whole seconds.
  EXPECT_GE(absl::Now(), not_after - absl::Seconds(1)) << "ended before the certificate expired";
  EXPECT_EQ(server_->hub().counters().streams_expired, 1u);
}

// Item 4: streams that have not said hello are limited per connection and per address; streams
// beyond get RESOURCE_EXHAUSTED at once, and a client that says hello is still served.
TEST_F(HardenedServerTest, LimitsStreamsAwaitingTheirHello) {
  options_.distribution.max_awaiting_hello_per_connection = 3;
  options_.distribution.max_awaiting_hello_per_address = 5;
  Start();
  Issued tenant_a = Client("tenant-a");
  auto first_connection = Channel(server_ca_, &tenant_a);
  std::vector<std::unique_ptr<TestSubscriber>> silent;
  for (int i = 0; i < 3; ++i) silent.push_back(std::make_unique<TestSubscriber>(first_connection));
  ASSERT_TRUE(WaitFor([&] { return server_->hub().live_streams() == 3; }));
  TestSubscriber over_connection(first_connection);
  EXPECT_EQ(over_connection.Finish().error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);

  auto second_connection = Channel(server_ca_, &tenant_a);
  for (int i = 0; i < 2; ++i) silent.push_back(std::make_unique<TestSubscriber>(second_connection));
  ASSERT_TRUE(WaitFor([&] { return server_->hub().live_streams() == 5; }));
  TestSubscriber over_address(second_connection);
  const grpc::Status refused = over_address.Finish();
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), ::testing::HasSubstr("limit per address"));
  EXPECT_EQ(server_->hub().counters().hellos_over_limit, 2u);

  // A silent stream that says hello leaves the count: a new stream is accepted and served.
  ASSERT_TRUE(silent[0]->SendHello("tenant-a", "pod-1", {Held("wildcard")}));
  ASSERT_TRUE(silent[0]->NextNonHeartbeat().has_value());
  TestSubscriber served(second_connection);
  ASSERT_TRUE(served.SendHello("tenant-a", "pod-2", {Held("wildcard")}));
  std::optional<v1::SubscribeResponse> update = served.NextNonHeartbeat();
  EXPECT_TRUE(update.has_value() && update->has_update());
}

// Item 11: with --client-ca the server does not start without --trust-domain; "*" keeps the old
// behaviour (any domain the CA signs for) on purpose.
TEST_F(HardenedServerTest, ClientCaRequiresTrustDomain) {
  options_.trust_domain.clear();
  auto refused = CertcastServer::Start(options_, &fs_, &clock_);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(refused.status().message()), ::testing::HasSubstr("--trust-domain"));

  options_.trust_domain = "*";
  Start();
  CertOptions foreign_options;
  foreign_options.uri_sans = {"spiffe://evil.example/ns/tenant-a/sa/certcast-client"};
  foreign_options.client_auth = true;
  Issued foreign = fixtures::MakeCert(client_ca_, foreign_options);
  TestSubscriber subscriber(Channel(server_ca_, &foreign));
  ASSERT_TRUE(subscriber.SendHello("tenant-a", "pod-1", {Held("wildcard")}));
  std::optional<v1::SubscribeResponse> update = subscriber.NextNonHeartbeat();
  EXPECT_TRUE(update.has_value() && update->has_update()) << "--trust-domain=* accepts any domain";
}

}  // namespace
}  // namespace certcast
