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

// Three waves: the canary namespace, tenant-a, then everyone else (tenant-b).
std::string WavesPolicy(const std::string& soak, const std::string& expiry_margin = "24h") {
  return absl::StrCat(R"(certificates:
  wildcard:
    namespaces: ["tenant-*", "canary"]
    rollout:
      waves:
        - name: canary
          namespaces: ["canary"]
          soak: )",
                      soak, R"(
        - name: early
          namespaces: ["tenant-a"]
          soak: )",
                      soak, R"(
      expiry_margin: )",
                      expiry_margin, R"(
admins:
  - spiffe://cluster.local/ns/certcast-system/sa/operator
)");
}

const std::vector<std::string> kNamespaces = {"canary", "tenant-a", "tenant-b"};

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
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
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

  // Starts a client in each of kNamespaces and waits until all acknowledged version 1.
  void StartFleet() {
    for (const std::string& ns : kNamespaces) clients_[ns] = StartClient(ns);
    ASSERT_TRUE(WaitFor([&] {
      return Acked(kNamespaces) ==
             std::map<std::string, uint64_t>{{"canary", 1}, {"tenant-a", 1}, {"tenant-b", 1}};
    })) << clients_["canary"]->log();
  }

  grpc::Status Admin(const std::string& method, v1::Rollout* response) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    v1::RolloutRequest request;
    request.set_name("wildcard");
    return method == "resume" ? admin_->ResumeRollout(&context, request, response)
                              : admin_->PromoteRollout(&context, request, response);
  }

  // Makes the canary's files unwritable (its output directory becomes a file): its next apply
  // fails and it NACKs.
  void BreakCanaryFiles() {
    const std::string out = tmp_.Join("out-canary");
    ASSERT_EQ(rename(out.c_str(), (out + ".moved").c_str()), 0);
    WriteText(out, "not a directory");
  }

  // The state of wave `index` (0-based) of the rollout, "" while there is none.
  std::string WaveState(int index) {
    const v1::Rollout rollout = Certificate().rollout();
    return index < rollout.waves_size() ? rollout.waves(index).state() : "";
  }

  v1::Certificate Certificate() {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
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
  std::map<std::string, std::unique_ptr<ChildProcess>> clients_;
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

// A good version walks the waves in order: the canary first; tenant-a only after the canary
// acknowledged and its soak ended; everyone else (tenant-b) last. Waiting clients are shown as
// waiting for their wave, not as behind.
TEST_F(RolloutScenarioTest, GoodVersionWalksTheWavesInOrderWithTheSoakHonoured) {
  StartServer(WavesPolicy("3s"));
  StartFleet();
  Rotate();
  ASSERT_TRUE(WaitFor([&] { return Client("canary").acknowledged_version() == 2; }))
      << clients_["canary"]->log();
  EXPECT_EQ(Client("tenant-a").acknowledged_version(), 1u);
  EXPECT_EQ(Client("tenant-a").waiting_for_wave(), 2u);
  EXPECT_EQ(Client("tenant-b").waiting_for_wave(), 3u);
  // The canary wave soaks; while it does, tenant-a has not been sent version 2.
  ASSERT_TRUE(WaitFor([&] { return WaveState(0) == "soaking"; })) << server_->log();
  const v1::Rollout soaking = Certificate().rollout();
  ASSERT_EQ(soaking.waves_size(), 3);
  EXPECT_EQ(soaking.state(), "rolling");
  EXPECT_EQ(soaking.version(), 2u);
  EXPECT_EQ(soaking.previous_version(), 1u);
  EXPECT_EQ(soaking.wave(), 1u);
  EXPECT_EQ(soaking.waves(0).acknowledged(), 1u);
  EXPECT_EQ(soaking.waves(1).state(), "waiting");
  EXPECT_EQ(Client("tenant-a").sent_version(), 1u);

  ASSERT_TRUE(WaitFor([&] { return Client("tenant-a").acknowledged_version() == 2; }))
      << server_->log();
  // Sent only once the canary's soak was over.
  const v1::ClientCertificate early = Client("tenant-a");
  EXPECT_GE(early.sent_at().seconds() * 1'000'000'000LL + early.sent_at().nanos(),
            soaking.waves(0).soak_until().seconds() * 1'000'000'000LL +
                soaking.waves(0).soak_until().nanos());
  ASSERT_TRUE(WaitFor([&] { return Client("tenant-b").acknowledged_version() == 2; }))
      << server_->log();
  EXPECT_EQ(Certificate().rollout().state(), "complete");
  EXPECT_EQ(Client("tenant-b").waiting_for_wave(), 0u);
}

// A version the canary refuses halts the rollout at wave 1: nobody else gets it, GetCertificate
// says why. An admin resumes it (the canary is excused) and it walks on to everyone.
TEST_F(RolloutScenarioTest, CanaryNackHaltsAtWaveOneUntilAnAdminResumes) {
  StartServer(WavesPolicy("1s"));
  StartFleet();
  BreakCanaryFiles();
  Rotate();
  ASSERT_TRUE(WaitFor([&] { return Certificate().rollout().state() == "halted"; }))
      << server_->log();
  const v1::Rollout halted = Certificate().rollout();
  EXPECT_EQ(halted.wave(), 1u);
  EXPECT_THAT(halted.halt_reason(), HasSubstr("canary/client-canary: files: "));
  EXPECT_THAT(server_->log(), HasSubstr("method=Rollout/Halt"));
  EXPECT_EQ(Client("tenant-a").acknowledged_version(), 1u);
  EXPECT_EQ(Client("tenant-a").sent_version(), 1u);
  EXPECT_EQ(Client("tenant-b").sent_version(), 1u);

  v1::Rollout resumed;
  grpc::Status status = Admin("resume", &resumed);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(resumed.state(), "rolling");
  ASSERT_TRUE(WaitFor(
      [&] {
        return Acked({"tenant-a", "tenant-b"}) ==
               std::map<std::string, uint64_t>{{"tenant-a", 2}, {"tenant-b", 2}};
      },
      absl::Seconds(60)))
      << server_->log();
  EXPECT_EQ(Certificate().rollout().state(), "complete");
  EXPECT_THAT(server_->log(), HasSubstr("method=Admin/ResumeRollout"));
}

// Expiry beats caution: a halted rollout whose held-back version comes within the expiry margin
// (here: the margin grows with a policy reload) goes to everyone, with a warning.
TEST_F(RolloutScenarioTest, ExpiryMarginForcesAHaltedRolloutThrough) {
  StartServer(WavesPolicy("1h", "1h"));
  StartFleet();
  BreakCanaryFiles();
  Rotate();
  ASSERT_TRUE(WaitFor([&] { return Certificate().rollout().state() == "halted"; }))
      << server_->log();
  // Version 1's leaf expires in 90 days: a 100-day margin puts it inside.
  WriteText(tmp_.Join("policy.yaml"), WavesPolicy("1h", "2400h"));
  ASSERT_TRUE(WaitFor(
      [&] {
        return Acked({"tenant-a", "tenant-b"}) ==
               std::map<std::string, uint64_t>{{"tenant-a", 2}, {"tenant-b", 2}};
      },
      absl::Seconds(60)))
      << server_->log();
  const v1::Rollout forced = Certificate().rollout();
  EXPECT_EQ(forced.state(), "forced");
  ASSERT_GE(forced.warnings_size(), 1);
  EXPECT_THAT(forced.warnings(0), HasSubstr("within the expiry margin"));
}

// A restart in the middle of a rollout resumes where it was: still wave 1, soaking until the
// same instant, tenant-a still held at version 1 after it reconnects. Promote then sends it to
// everyone.
TEST_F(RolloutScenarioTest, RestartMidRolloutResumesWhereItWas) {
  StartServer(WavesPolicy("1h"));
  StartFleet();
  Rotate();
  ASSERT_TRUE(WaitFor([&] { return WaveState(0) == "soaking"; })) << server_->log();
  const v1::Rollout before = Certificate().rollout();
  ASSERT_EQ(before.waves_size(), 3);

  server_->Signal(SIGTERM);
  ASSERT_EQ(server_->Wait(absl::Seconds(20)), 0) << server_->log();
  StartServer(WavesPolicy("1h"));
  ASSERT_TRUE(WaitFor([&] {
    return Client("tenant-a").acknowledged_version() == 1 &&
           Client("canary").acknowledged_version() == 2;
  })) << server_->log();
  const v1::Rollout after = Certificate().rollout();
  ASSERT_EQ(after.waves_size(), 3) << server_->log();
  EXPECT_EQ(after.state(), "rolling");
  EXPECT_EQ(after.version(), 2u);
  EXPECT_EQ(after.wave(), 1u);
  EXPECT_EQ(after.waves(0).state(), "soaking");
  EXPECT_EQ(after.waves(0).soak_until().seconds(), before.waves(0).soak_until().seconds());
  EXPECT_EQ(Client("tenant-a").sent_version(), 1u);
  EXPECT_EQ(Client("tenant-a").waiting_for_wave(), 2u);

  v1::Rollout promoted;
  grpc::Status status = Admin("promote", &promoted);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(promoted.state(), "promoted");
  ASSERT_TRUE(WaitFor([&] {
    return Acked(kNamespaces) ==
           std::map<std::string, uint64_t>{{"canary", 2}, {"tenant-a", 2}, {"tenant-b", 2}};
  })) << server_->log();
}

}  // namespace
}  // namespace certcast
