// End-to-end scenarios with the real certcast-server and certcast-client binaries over TLS.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/file_sink.h"
#include "common/filesystem.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/child_process.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/test_subscriber.h"

namespace certcast {
namespace {

using ::certcast::fixtures::Chain;
using ::certcast::fixtures::MakeChain;
using ::certcast::fixtures::TempDir;
using ::certcast::scenario::ChildProcess;
using ::certcast::scenario::ReadFileOrEmpty;
using ::certcast::scenario::WaitFor;
using ::testing::HasSubstr;

void WriteText(const std::string& path, const std::string& text, mode_t mode = 0600) {
  PosixFilesystem fs;
  ASSERT_TRUE(WriteFileAtomically(fs, path, text, mode).ok());
}

class ClientScenarioTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ca_ = fixtures::MakeRootCa("certcast test server ca");
    fixtures::CertOptions server;
    server.common_name = "certcast-server";
    server.dns_names = {"localhost"};
    fixtures::Issued serving = fixtures::MakeCert(ca_, server);
    WriteText(tmp_.Join("ca.pem"), ca_.cert_pem);
    // Identities: a client CA for per-tenant SPIFFE certificates, an operator (admin) identity
    // for the test's own inspection calls, and a policy for tenant namespaces.
    client_ca_ = fixtures::MakeRootCa("certcast test client ca");
    WriteText(tmp_.Join("client-ca.pem"), client_ca_.cert_pem);
    WriteText(tmp_.Join("policy.yaml"),
              "certificates:\n  wildcard:\n    namespaces: [\"tenant-*\"]\n"
              "admins:\n  - spiffe://cluster.local/ns/certcast-system/sa/operator\n");
    operator_ = ClientIdentity("certcast-system", "operator");
    WriteText(tmp_.Join("server.crt"), serving.cert_pem);
    WriteText(tmp_.Join("server.key"), serving.key_pem);
    chain_ = MakeChain();
    fixtures::WriteKubeletDir(tmp_.Join("source"), chain_.material);
    port_ = scenario::PickFreePort();
  }

  // A client certificate for spiffe://cluster.local/ns/NS/sa/SA, written as NS-SA.{crt,key}.
  fixtures::Issued ClientIdentity(const std::string& ns, const std::string& sa) {
    fixtures::CertOptions options;
    options.common_name = ns + "/" + sa;
    options.uri_sans = {absl::StrCat("spiffe://cluster.local/ns/", ns, "/sa/", sa)};
    options.client_auth = true;
    fixtures::Issued issued = fixtures::MakeCert(client_ca_, options);
    WriteText(tmp_.Join(ns + "-" + sa + ".crt"), issued.cert_pem);
    WriteText(tmp_.Join(ns + "-" + sa + ".key"), issued.key_pem);
    return issued;
  }

  void StartServer() {
    server_ = std::make_unique<ChildProcess>(
        CERTCAST_SERVER_BINARY,
        std::vector<std::string>{
            absl::StrCat("--listen=127.0.0.1:", port_), "--tls-cert=" + tmp_.Join("server.crt"),
            "--tls-key=" + tmp_.Join("server.key"), "--client-ca=" + tmp_.Join("client-ca.pem"),
            "--trust-domain=cluster.local", "--policy=" + tmp_.Join("policy.yaml"), "--certificate=wildcard=" + tmp_.Join("source"),
            "--state-dir=" + tmp_.Join("server-state"), "--quiet-period=20ms"},
        tmp_.Join(absl::StrCat("server", ++server_starts_, ".log")));
    ASSERT_NE(server_->WaitForPort(), 0) << server_->log();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ca_.cert_pem;
    ssl.pem_cert_chain = operator_.cert_pem;
    ssl.pem_private_key = operator_.key_pem;
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    inspection_ = v1::Inspection::NewStub(grpc::CreateCustomChannel(
        absl::StrCat("127.0.0.1:", port_), grpc::SslCredentials(ssl), args));
  }

  std::string OutputDir(const std::string& ns) { return tmp_.Join("out-" + ns); }

  std::vector<std::string> ClientArgs(const std::string& ns) {
    return {absl::StrCat("--server=127.0.0.1:", port_),
            "--tls-server-name=localhost",
            "--ca=" + tmp_.Join("ca.pem"),
            "--namespace=" + ns,
            "--client-id=client-" + ns,
            "--certificate=wildcard",
            "--output-dir=" + OutputDir(ns),
            "--state-dir=" + tmp_.Join("state-" + ns),
            "--tls-cert=" + tmp_.Join(ns + "-certcast-client.crt"),
            "--tls-key=" + tmp_.Join(ns + "-certcast-client.key")};
  }

  std::unique_ptr<ChildProcess> StartClient(const std::string& ns,
                                            std::vector<std::string> extra = {}) {
    ClientIdentity(ns, "certcast-client");
    std::vector<std::string> args = ClientArgs(ns);
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<ChildProcess>(
        CERTCAST_CLIENT_BINARY, args,
        tmp_.Join(absl::StrCat("client-", ns, "-", ++client_starts_, ".log")));
  }

  // Acknowledged version per namespace, connected clients only.
  std::map<std::string, uint64_t> Acked() {
    grpc::ClientContext context;
    v1::ListClientsResponse response;
    std::map<std::string, uint64_t> acked;
    if (!inspection_->ListClients(&context, {}, &response).ok()) return acked;
    for (const auto& client : response.clients()) {
      if (client.connected())
        acked[client.namespace_()] = client.certificates(0).acknowledged_version();
    }
    return acked;
  }

  v1::ClientCertificate ClientState(const std::string& ns) {
    grpc::ClientContext context;
    v1::ListClientsRequest request;
    request.set_namespace_(ns);
    v1::ListClientsResponse response;
    inspection_->ListClients(&context, request, &response);
    for (const auto& client : response.clients()) {
      if (client.connected()) return client.certificates(0);
    }
    return {};
  }

  absl::StatusOr<CertificateMaterial> Files(const std::string& ns) {
    FileSink sink(&fs_, &clock_, {OutputDir(ns), false});
    return sink.Read("wildcard");
  }

  std::string DataTarget(const std::string& ns) {
    char target[4096] = {};
    const ssize_t n =
        readlink((OutputDir(ns) + "/wildcard/..data").c_str(), target, sizeof(target));
    return n > 0 ? std::string(target, static_cast<size_t>(n)) : "";
  }

  TempDir tmp_;
  fixtures::Issued ca_;
  fixtures::Issued client_ca_;
  fixtures::Issued operator_;
  Chain chain_;
  int port_ = 0;
  int server_starts_ = 0;
  int client_starts_ = 0;
  PosixFilesystem fs_;
  RealClock clock_;
  std::unique_ptr<ChildProcess> server_;
  std::unique_ptr<v1::Inspection::Stub> inspection_;
};

// First delivery and a rotation reach three clients, which write the files and acknowledge.
TEST_F(ClientScenarioTest, RotationReachesThreeClients) {
  StartServer();
  std::vector<std::unique_ptr<ChildProcess>> clients;
  clients.push_back(StartClient("tenant-a"));
  clients.push_back(StartClient("tenant-b"));
  // By name, through gRPC's DNS resolver, as clients in a cluster dial the server's Service.
  clients.push_back(StartClient("tenant-c", {absl::StrCat("--server=dns:///localhost:", port_)}));
  const std::map<std::string, uint64_t> v1 = {{"tenant-a", 1}, {"tenant-b", 1}, {"tenant-c", 1}};
  ASSERT_TRUE(WaitFor([&] { return Acked() == v1; })) << clients[0]->log();
  for (const char* ns : {"tenant-a", "tenant-b", "tenant-c"}) {
    absl::StatusOr<CertificateMaterial> files = Files(ns);
    ASSERT_TRUE(files.ok()) << files.status();
    EXPECT_EQ(*files, chain_.material);
    struct stat key;
    ASSERT_EQ(stat((OutputDir(ns) + "/wildcard/tls.key").c_str(), &key), 0);
    EXPECT_EQ(key.st_mode & 0777, 0600u);
  }
  Chain next = MakeChain();
  fixtures::WriteKubeletDir(tmp_.Join("source"), next.material);
  const std::map<std::string, uint64_t> v2 = {{"tenant-a", 2}, {"tenant-b", 2}, {"tenant-c", 2}};
  ASSERT_TRUE(WaitFor([&] { return Acked() == v2; })) << clients[0]->log();
  for (const char* ns : {"tenant-a", "tenant-b", "tenant-c"}) EXPECT_EQ(*Files(ns), next.material);
}

// The client sends no bandwidth-delay probes: each would be a PING the server answers with a
// write of its own (bench/README.md, optimization 15). gRPC's http tracer names why each of the
// client's writes started.
TEST_F(ClientScenarioTest, ClientSendsNoBandwidthProbes) {
  StartServer();
  ClientIdentity("tenant-a", "certcast-client");
  std::vector<std::string> args = {"GRPC_TRACE=http", CERTCAST_CLIENT_BINARY, "--log-level=debug"};
  for (const std::string& arg : ClientArgs("tenant-a")) args.push_back(arg);
  ChildProcess client("/usr/bin/env", args, tmp_.Join("client.log"));
  ASSERT_TRUE(WaitFor([&] { return Acked()["tenant-a"] == 1; })) << client.log();
  fixtures::WriteKubeletDir(tmp_.Join("source"), MakeChain().material);
  ASSERT_TRUE(WaitFor([&] { return Acked()["tenant-a"] == 2; })) << client.log();
  const std::string log = client.log();
  ASSERT_TRUE(absl::StrContains(log, "CLIENT [")) << "no http trace in the client's log";
  EXPECT_FALSE(absl::StrContains(log, "[BDP_PING]")) << "the client sent a BDP ping";
}

// A client restarted with current files writes nothing and runs no hook.
TEST_F(ClientScenarioTest, RestartWithCurrentFilesRewritesNothing) {
  StartServer();
  const std::string hook_log = tmp_.Join("hook.log");
  std::vector<std::string> hook = {"--on-update=echo run >> " + hook_log};
  auto client = StartClient("tenant-a", hook);
  ASSERT_TRUE(WaitFor([&] { return Acked()["tenant-a"] == 1; })) << client->log();
  ASSERT_TRUE(WaitFor([&] { return ReadFileOrEmpty(hook_log) == "run\n"; }));
  const std::string target = DataTarget("tenant-a");
  client->Signal(SIGTERM);
  ASSERT_EQ(client->Wait(absl::Seconds(20)), 0) << client->log();

  client = StartClient("tenant-a", hook);
  ASSERT_FALSE(client->WaitForLog("in sync at version 1").empty()) << client->log();
  EXPECT_EQ(DataTarget("tenant-a"), target);
  EXPECT_EQ(ReadFileOrEmpty(hook_log), "run\n");
  EXPECT_THAT(client->log(), HasSubstr("holding version 1"));
}

// The server killed (SIGKILL) and restarted while the source changed: clients converge without
// a restart of their own.
TEST_F(ClientScenarioTest, ClientsConvergeAfterServerRestart) {
  StartServer();
  auto a = StartClient("tenant-a");
  auto b = StartClient("tenant-b");
  ASSERT_TRUE(WaitFor([&] { return Acked().size() == 2 && Acked()["tenant-a"] == 1; }));
  server_->Signal(SIGKILL);
  server_->Wait(absl::Seconds(10));
  Chain next = MakeChain();
  fixtures::WriteKubeletDir(tmp_.Join("source"), next.material);
  StartServer();
  const std::map<std::string, uint64_t> v2 = {{"tenant-a", 2}, {"tenant-b", 2}};
  ASSERT_TRUE(WaitFor([&] { return Acked() == v2; }, absl::Seconds(60))) << a->log();
  EXPECT_EQ(*Files("tenant-a"), next.material);
  EXPECT_FALSE(a->Exited());
}

// The server wins on an equal version with a different fingerprint: a server that lost its state
// restarts at version 1 with a new key while the client holds version 1 with the old one. The
// fleet view does not call the client in sync while it cannot write the new pair, and the client
// ends up with the new key.
TEST_F(ClientScenarioTest, EqualVersionWithNewKeyReplacesTheOldOne) {
  StartServer();
  auto client = StartClient("tenant-a");
  ASSERT_TRUE(WaitFor([&] { return Acked()["tenant-a"] == 1; })) << client->log();
  ASSERT_EQ(*Files("tenant-a"), chain_.material);

  server_->Signal(SIGKILL);
  server_->Wait(absl::Seconds(10));
  std::filesystem::remove_all(tmp_.Join("server-state"));
  Chain rekeyed = MakeChain();
  fixtures::WriteKubeletDir(tmp_.Join("source"), rekeyed.material);
  // The client cannot write until the directory is back: what it holds is still the old key.
  const std::string out = OutputDir("tenant-a");
  ASSERT_EQ(rename(out.c_str(), (out + ".moved").c_str()), 0);
  WriteText(out, "not a directory", 0644);
  StartServer();
  ASSERT_TRUE(WaitFor([&] {
    const v1::ClientCertificate state = ClientState("tenant-a");
    return state.last_error_version() == 1 || state.acknowledged_version() == 1;
  })) << client->log();
  v1::ClientCertificate state = ClientState("tenant-a");
  EXPECT_NE(state.acknowledged_version(), 1u)
      << "the fleet calls the client in sync before it holds the new key";
  EXPECT_THAT(state.last_error(), HasSubstr("files: "));
  grpc::ClientContext context;
  v1::ListCertificatesResponse certificates;
  ASSERT_TRUE(inspection_->ListCertificates(&context, {}, &certificates).ok());
  ASSERT_EQ(certificates.certificates_size(), 1);
  EXPECT_EQ(certificates.certificates(0).version(), 1u);
  EXPECT_EQ(certificates.certificates(0).fingerprint(), rekeyed.leaf.fingerprint);
  EXPECT_EQ(certificates.certificates(0).clients(), 1u);
  EXPECT_EQ(certificates.certificates(0).clients_acknowledged(), 0u);

  ASSERT_EQ(unlink(out.c_str()), 0);
  ASSERT_EQ(rename((out + ".moved").c_str(), out.c_str()), 0);
  ASSERT_TRUE(WaitFor([&] { return Acked()["tenant-a"] == 1; }, absl::Seconds(60)))
      << client->log();
  EXPECT_EQ(*Files("tenant-a"), rekeyed.material);
}

// --combined-pem writes tls.pem (key, then chain) next to the pair; hooks get the environment;
// --signal reaches the process in --pid-file.
TEST_F(ClientScenarioTest, HooksSignalAndCombinedPem) {
  StartServer();
  // A process that records SIGUSR1.
  const std::string got_signal = tmp_.Join("got-signal");
  const std::string pid_file = tmp_.Join("app.pid");
  ChildProcess app("/bin/sh",
                   {"-c", "trap 'echo usr1 >> " + got_signal + "' USR1; echo $$ > " + pid_file +
                              "; while :; do sleep 1 & wait; done"},
                   tmp_.Join("app.log"));
  ASSERT_TRUE(WaitFor([&] { return !ReadFileOrEmpty(pid_file).empty(); }));
  const std::string env_file = tmp_.Join("env");
  auto client = StartClient(
      "tenant-a", {"--combined-pem", "--signal=USR1", "--pid-file=" + pid_file,
                   "--on-update=echo \"$CERTCAST_CERTIFICATE $CERTCAST_VERSION $CERTCAST_DIR "
                   "$CERTCAST_FINGERPRINT\" > " +
                       env_file});
  ASSERT_TRUE(WaitFor([&] { return Acked()["tenant-a"] == 1; })) << client->log();
  EXPECT_TRUE(WaitFor([&] { return ReadFileOrEmpty(got_signal) == "usr1\n"; }));
  EXPECT_EQ(ReadFileOrEmpty(env_file), absl::StrCat("wildcard 1 ", OutputDir("tenant-a"),
                                                    "/wildcard ", chain_.leaf.fingerprint, "\n"));
  EXPECT_EQ(ReadFileOrEmpty(OutputDir("tenant-a") + "/wildcard/tls.pem"),
            absl::StrCat(chain_.material.key_pem.reveal(), chain_.material.chain_pem));
}

// A failing hook does not undo the write: the ACK carries the warning, visible in ListClients.
TEST_F(ClientScenarioTest, FailedHookIsAWarningOnTheAck) {
  StartServer();
  auto client = StartClient("tenant-a", {"--on-update=echo broken reload >&2; exit 3"});
  ASSERT_TRUE(WaitFor([&] { return Acked()["tenant-a"] == 1; })) << client->log();
  v1::ClientCertificate state = ClientState("tenant-a");
  EXPECT_THAT(state.hook_warning(), HasSubstr("exited with status 3"));
  EXPECT_THAT(state.hook_warning(), HasSubstr("broken reload"));
  EXPECT_EQ(*Files("tenant-a"), chain_.material);
}

// A sink failure is NACKed (visible in ListClients) and retried; once the cause is gone the
// client ACKs without the server resending.
TEST_F(ClientScenarioTest, TransientSinkFailureIsNackedThenAcked) {
  StartServer();
  ASSERT_EQ(mkdir(OutputDir("tenant-a").c_str(), 0755), 0);
  WriteText(OutputDir("tenant-a") + "/wildcard", "a file where the directory should be", 0644);
  auto client = StartClient("tenant-a");
  ASSERT_TRUE(WaitFor([&] { return !ClientState("tenant-a").last_error().empty(); }))
      << client->log();
  EXPECT_THAT(ClientState("tenant-a").last_error(), HasSubstr("files: "));
  EXPECT_EQ(ClientState("tenant-a").acknowledged_version(), 0u);
  ASSERT_EQ(unlink((OutputDir("tenant-a") + "/wildcard").c_str()), 0);
  ASSERT_TRUE(WaitFor([&] { return Acked()["tenant-a"] == 1; })) << client->log();
  EXPECT_EQ(ClientState("tenant-a").last_error(), "");
  EXPECT_EQ(*Files("tenant-a"), chain_.material);
}

// Local permanent errors end the client with a clear message and a non-zero status.
TEST_F(ClientScenarioTest, PermanentLocalErrorsExitNonZero) {
  ClientIdentity("tenant-a", "certcast-client");
  std::vector<std::string> args = ClientArgs("tenant-a");
  args[2] = "--ca=" + tmp_.Join("missing-ca.pem");
  ChildProcess unreadable_ca(CERTCAST_CLIENT_BINARY, args, tmp_.Join("bad1.log"));
  const int status = unreadable_ca.Wait(absl::Seconds(20));
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2);
  EXPECT_THAT(unreadable_ca.log(), HasSubstr("missing-ca.pem"));

  ChildProcess no_tls(CERTCAST_CLIENT_BINARY,
                      {"--server=127.0.0.1:1", "--namespace=a", "--certificate=w",
                       "--output-dir=" + tmp_.Join("o")},
                      tmp_.Join("bad2.log"));
  EXPECT_EQ(WEXITSTATUS(no_tls.Wait(absl::Seconds(20))), 2);
  EXPECT_THAT(no_tls.log(), HasSubstr("--insecure"));
}

// A server that is down, or a certificate the server does not have, never ends the client: it
// logs the reason and keeps retrying until things are fixed.
TEST_F(ClientScenarioTest, ClientKeepsRetryingWhileServerIsDown) {
  auto client = StartClient("tenant-a");
  ASSERT_FALSE(client->WaitForLog("code=UNAVAILABLE").empty()) << client->log();
  EXPECT_FALSE(client->Exited());
  StartServer();
  ASSERT_TRUE(WaitFor([&] { return Acked()["tenant-a"] == 1; }, absl::Seconds(60)))
      << client->log();
}

// SIGHUP re-reads the TLS files: a client started with the wrong CA connects once the right CA
// is in the file and it is told to reload.
TEST_F(ClientScenarioTest, SighupRereadsTlsFiles) {
  StartServer();
  WriteText(tmp_.Join("client-trust.pem"), fixtures::MakeRootCa("not the server's ca").cert_pem);
  ClientIdentity("tenant-a", "certcast-client");
  std::vector<std::string> args = ClientArgs("tenant-a");
  args[2] = "--ca=" + tmp_.Join("client-trust.pem");
  ChildProcess client(CERTCAST_CLIENT_BINARY, args, tmp_.Join("client-hup.log"));
  ASSERT_FALSE(client.WaitForLog("code=UNAVAILABLE").empty()) << client.log();
  WriteText(tmp_.Join("client-trust.pem"), ca_.cert_pem);
  client.Signal(SIGHUP);
  ASSERT_TRUE(WaitFor([&] { return Acked()["tenant-a"] == 1; })) << client.log();
  EXPECT_THAT(client.log(), HasSubstr("TLS files re-read"));
}

// When the state directory disagrees with the files on disk, the files win: the client
// resumes with their fingerprint, and identical content is not rewritten.
TEST_F(ClientScenarioTest, FilesOnDiskWinOverTheStateDirectory) {
  StartServer();
  auto client = StartClient("tenant-a");
  ASSERT_TRUE(WaitFor([&] { return Acked()["tenant-a"] == 1; })) << client->log();
  client->Signal(SIGTERM);
  ASSERT_EQ(client->Wait(absl::Seconds(20)), 0);
  const std::string target = DataTarget("tenant-a");
  WriteText(tmp_.Join("state-tenant-a/wildcard.held"),
            absl::StrCat("7 ", MakeChain().leaf.fingerprint, "\n"));

  client = StartClient("tenant-a");
  ASSERT_FALSE(client->WaitForLog("version 1 applied").empty()) << client->log();
  EXPECT_THAT(client->log(), HasSubstr("the files win"));
  EXPECT_THAT(client->log(), HasSubstr("already held it"));
  EXPECT_EQ(DataTarget("tenant-a"), target);
  // VERSION FINGERPRINT NOT_AFTER
  EXPECT_THAT(ReadFileOrEmpty(tmp_.Join("state-tenant-a/wildcard.held")),
              ::testing::StartsWith(absl::StrCat("1 ", chain_.leaf.fingerprint, " ")));
}

}  // namespace
}  // namespace certcast
