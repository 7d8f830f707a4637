// Staged rollout and proof of serving (issue 15) with the real certcast-server and
// certcast-client binaries over mTLS: clients that prove their endpoint serves the new leaf
// (--verify against a TLS endpoint in this test), and a certificate whose policy rolls new
// versions out in waves of namespaces.
#include <signal.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/filesystem.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/child_process.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/fixtures/tls_endpoint.h"
#include "tests/test_subscriber.h"

namespace certcast {
namespace {

using ::certcast::fixtures::Chain;
using ::certcast::fixtures::MakeChain;
using ::certcast::fixtures::TempDir;
using ::certcast::fixtures::TlsEndpoint;
using ::certcast::scenario::ChildProcess;
using ::certcast::scenario::WaitFor;
using ::testing::HasSubstr;

void WriteText(const std::string& path, const std::string& text) {
  PosixFilesystem fs;
  ASSERT_TRUE(WriteFileAtomically(fs, path, text, 0600).ok());
}

constexpr char kPlainPolicy[] = R"(certificates:
  wildcard:
    namespaces: ["tenant-*", "canary"]
admins:
  - spiffe://cluster.local/ns/certcast-system/sa/operator
)";

class RolloutScenarioTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_ = fixtures::MakeRootCa("certcast test server ca");
    fixtures::CertOptions server;
    server.dns_names = {"localhost"};
    fixtures::Issued serving = fixtures::MakeCert(ca_, server);
    WriteText(tmp_.Join("ca.pem"), ca_.cert_pem);
    WriteText(tmp_.Join("server.crt"), serving.cert_pem);
    WriteText(tmp_.Join("server.key"), serving.key_pem);
    client_ca_ = fixtures::MakeRootCa("certcast test client ca");
    WriteText(tmp_.Join("client-ca.pem"), client_ca_.cert_pem);
    operator_ = Identity("certcast-system", "operator");
    chains_.push_back(MakeChain());
    fixtures::WriteKubeletDir(tmp_.Join("source"), chains_.back().material);
    port_ = scenario::PickFreePort();
  }

  // A client certificate for spiffe://cluster.local/ns/NS/sa/SA, written as NS-SA.{crt,key}.
  fixtures::Issued Identity(const std::string& ns, const std::string& sa) {
    fixtures::CertOptions options;
    options.uri_sans = {absl::StrCat("spiffe://cluster.local/ns/", ns, "/sa/", sa)};
    options.client_auth = true;
    fixtures::Issued issued = fixtures::MakeCert(client_ca_, options);
    WriteText(tmp_.Join(ns + "-" + sa + ".crt"), issued.cert_pem);
    WriteText(tmp_.Join(ns + "-" + sa + ".key"), issued.key_pem);
    return issued;
  }

  void StartServer(const std::string& policy, std::vector<std::string> extra = {}) {
    WriteText(tmp_.Join("policy.yaml"), policy);
    std::vector<std::string> args = {absl::StrCat("--listen=127.0.0.1:", port_),
                                     "--tls-cert=" + tmp_.Join("server.crt"),
                                     "--tls-key=" + tmp_.Join("server.key"),
                                     "--client-ca=" + tmp_.Join("client-ca.pem"),
                                     "--trust-domain=cluster.local",
                                     "--policy=" + tmp_.Join("policy.yaml"),
                                     "--certificate=wildcard=" + tmp_.Join("source"),
                                     "--state-dir=" + tmp_.Join("state"),
                                     "--quiet-period=20ms",
                                     "--confirm-delay=100ms"};
    args.insert(args.end(), extra.begin(), extra.end());
    server_ = std::make_unique<ChildProcess>(CERTCAST_SERVER_BINARY, args,
                                             tmp_.Join(absl::StrCat("server", ++starts_, ".log")));
    ASSERT_NE(server_->WaitForPort(), 0) << server_->log();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ca_.cert_pem;
    ssl.pem_cert_chain = operator_.cert_pem;
    ssl.pem_private_key = operator_.key_pem;
    grpc::ChannelArguments args_channel;
    args_channel.SetSslTargetNameOverride("localhost");
    args_channel.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    auto channel = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port_),
                                             grpc::SslCredentials(ssl), args_channel);
    inspection_ = v1::Inspection::NewStub(channel);
    admin_ = v1::Admin::NewStub(channel);
  }

  std::unique_ptr<ChildProcess> StartClient(const std::string& ns,
                                            std::vector<std::string> extra = {}) {
    Identity(ns, "certcast-client");
    std::vector<std::string> args = {absl::StrCat("--server=127.0.0.1:", port_),
                                     "--tls-server-name=localhost",
                                     "--ca=" + tmp_.Join("ca.pem"),
                                     "--namespace=" + ns,
                                     "--client-id=client-" + ns,
                                     "--certificate=wildcard",
                                     "--output-dir=" + tmp_.Join("out-" + ns),
                                     "--state-dir=" + tmp_.Join("state-" + ns),
                                     "--tls-cert=" + tmp_.Join(ns + "-certcast-client.crt"),
                                     "--tls-key=" + tmp_.Join(ns + "-certcast-client.key")};
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<ChildProcess>(CERTCAST_CLIENT_BINARY, args,
                                          tmp_.Join(absl::StrCat("client-", ns, ".log")));
  }

  // Publishes a new chain at the source; returns it.
  const Chain& Rotate() {
    chains_.push_back(MakeChain());
    fixtures::WriteKubeletDir(tmp_.Join("source"), chains_.back().material);
    return chains_.back();
  }

  // The fleet row of the connected client of `ns` (empty when none).
  v1::ClientCertificate Client(const std::string& ns) {
    grpc::ClientContext context;
    v1::ListClientsRequest request;
    request.set_namespace_(ns);
    v1::ListClientsResponse response;
    inspection_->ListClients(&context, request, &response);
    for (const auto& client : response.clients()) {
      if (client.connected() && client.certificates_size() > 0) return client.certificates(0);
    }
    return {};
  }

  std::map<std::string, uint64_t> Acked(const std::vector<std::string>& namespaces) {
    std::map<std::string, uint64_t> acked;
    for (const std::string& ns : namespaces) acked[ns] = Client(ns).acknowledged_version();
    return acked;
  }

  v1::Certificate Certificate() {
    grpc::ClientContext context;
    v1::GetCertificateRequest request;
    request.set_name("wildcard");
    v1::Certificate response;
    inspection_->GetCertificate(&context, request, &response);
    return response;
  }

  TempDir tmp_;
  fixtures::Issued ca_;
  fixtures::Issued client_ca_;
  fixtures::Issued operator_;
  std::vector<Chain> chains_;
  int port_ = 0;
  int starts_ = 0;
  std::unique_ptr<ChildProcess> server_;
  std::unique_ptr<v1::Inspection::Stub> inspection_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

// --verify: the files are written but the tenant's endpoint keeps serving the old leaf, so the
// client NACKs with the fingerprint it saw; once the endpoint reloads, it ACKs, verified.
TEST_F(RolloutScenarioTest, VerifyNacksWhileTheEndpointServesTheOldLeafThenAcksVerified) {
  StartServer(kPlainPolicy);
  TlsEndpoint endpoint(chains_[0].material.chain_pem, chains_[0].leaf.key_pem);
  auto client = StartClient(
      "tenant-a", {"--verify=" + endpoint.address(), "--verify-server-name=tenant-a.example.test",
                   "--verify-timeout=1s"});
  ASSERT_TRUE(WaitFor([&] {
    const v1::ClientCertificate row = Client("tenant-a");
    return row.acknowledged_version() == 1 && row.serving_verified();
  })) << client->log();

  const Chain& next = Rotate();
  ASSERT_TRUE(WaitFor([&] { return Client("tenant-a").last_error_version() == 2; }))
      << client->log();
  v1::ClientCertificate row = Client("tenant-a");
  EXPECT_EQ(row.acknowledged_version(), 1u);
  EXPECT_THAT(row.last_error(),
              HasSubstr(absl::StrCat("serving: written, but ", endpoint.address(),
                                     " still serves the previous certificate (fingerprint ",
                                     chains_[0].leaf.fingerprint, ")")));

  endpoint.Serve(next.material.chain_pem, next.leaf.key_pem);
  ASSERT_TRUE(WaitFor([&] {
    const v1::ClientCertificate now = Client("tenant-a");
    return now.acknowledged_version() == 2 && now.serving_verified();
  })) << client->log();
  EXPECT_TRUE(Client("tenant-a").last_error().empty());
}

}  // namespace
}  // namespace certcast
