// Transport security scenarios: TLS, mutual TLS with SPIFFE identities, and serving
// certificate rotation without a restart.
#include <fstream>
#include <memory>
#include <string>

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

}  // namespace
}  // namespace certcast
