// The real certcast-server binary as a child process: versions survive kill -9, SIGTERM drains
// and exits cleanly, bad flags fail with a clear message.
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/child_process.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/test_subscriber.h"

namespace certcast {
namespace {

using ::certcast::fixtures::TempDir;
using ::certcast::scenario::TestSubscriber;
using ::certcast::scenario::WaitFor;
using ::testing::HasSubstr;

class ServerProcess : public scenario::ChildProcess {
 public:
  ServerProcess(const std::vector<std::string>& args, const std::string& log_path)
      : ChildProcess(CERTCAST_SERVER_BINARY, args, log_path) {}
};

class ServerProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    chain_ = fixtures::MakeChain();
    fixtures::WriteKubeletDir(tmp_.Join("source"), chain_.material);
  }
  std::vector<std::string> Args() {
    return {"--listen=127.0.0.1:0", "--insecure", "--quiet-period=20ms",
            "--certificate=wildcard=" + tmp_.Join("source"), "--state-dir=" + tmp_.Join("state")};
  }
  uint64_t CurrentVersion(int port, std::string* fingerprint = nullptr,
                          absl::Duration timeout = absl::Seconds(20)) {
    auto stub = v1::Inspection::NewStub(scenario::InsecureChannel(port));
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
    v1::GetCertificateRequest request;
    request.set_name("wildcard");
    v1::Certificate certificate;
    if (!stub->GetCertificate(&context, request, &certificate).ok()) return 0;
    if (fingerprint != nullptr) *fingerprint = certificate.current().fingerprint();
    return certificate.current().version();
  }

  TempDir tmp_;
  fixtures::Chain chain_;
};

// kill -9 right after rotations loses no version: the restarted server serves the same numbers.
TEST_F(ServerProcessTest, KillNineKeepsVersions) {
  std::string fingerprint;
  {
    ServerProcess server(Args(), tmp_.Join("server1.log"));
    const int port = server.WaitForPort();
    ASSERT_NE(port, 0) << server.log();
    for (uint64_t version = 2; version <= 3; ++version) {
      fixtures::Chain next = fixtures::MakeChain();
      fixtures::WriteKubeletDir(tmp_.Join("source"), next.material);
      ASSERT_TRUE(WaitFor([&] { return CurrentVersion(port) == version; })) << server.log();
    }
    CurrentVersion(port, &fingerprint);
    server.Signal(SIGKILL);
    ASSERT_NE(server.Wait(absl::Seconds(10)), -1);
  }
  ServerProcess restarted(Args(), tmp_.Join("server2.log"));
  const int port = restarted.WaitForPort();
  ASSERT_NE(port, 0) << restarted.log();
  std::string restored;
  EXPECT_EQ(CurrentVersion(port, &restored), 3u);
  EXPECT_EQ(restored, fingerprint);
}

// SIGTERM ends open streams within the grace period and exits 0.
TEST_F(ServerProcessTest, SigtermDrainsAndExitsCleanly) {
  std::vector<std::string> args = Args();
  args.push_back("--shutdown-grace=1s");
  ServerProcess server(args, tmp_.Join("server.log"));
  const int port = server.WaitForPort();
  ASSERT_NE(port, 0) << server.log();
  TestSubscriber subscriber(scenario::InsecureChannel(port));
  v1::HeldCertificate held;
  held.set_name("wildcard");
  ASSERT_TRUE(subscriber.SendHello("tenant-a", "pod-1", {held}));
  ASSERT_TRUE(subscriber.NextNonHeartbeat().has_value());
  server.Signal(SIGTERM);
  const int status = server.Wait(absl::Seconds(20));
  ASSERT_NE(status, -1) << "did not exit after SIGTERM";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << server.log();
  EXPECT_FALSE(subscriber.Finish().ok());
  EXPECT_THAT(server.log(), HasSubstr("certcast-server stopped took="));
}

// The shutdown grace is for streams still writing, not for clients to close their connections:
// with a 120 s grace and a client that keeps its channel, the server still exits promptly.
TEST_F(ServerProcessTest, ShutdownDoesNotWaitForClientsToCloseTheirConnections) {
  std::vector<std::string> args = Args();
  args.push_back("--shutdown-grace=120s");
  ServerProcess server(args, tmp_.Join("server.log"));
  const int port = server.WaitForPort();
  ASSERT_NE(port, 0) << server.log();
  std::shared_ptr<grpc::Channel> channel = scenario::InsecureChannel(port);
  TestSubscriber subscriber(channel);
  v1::HeldCertificate held;
  held.set_name("wildcard");
  ASSERT_TRUE(subscriber.SendHello("tenant-a", "pod-1", {held}));
  ASSERT_TRUE(subscriber.NextNonHeartbeat().has_value());
  server.Signal(SIGTERM);
  EXPECT_EQ(subscriber.Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  // The channel stays open here, as a client's does until it reconnects.
  const int status = server.Wait(absl::Seconds(30));
  ASSERT_NE(status, -1) << "still running 30 s after SIGTERM: " << server.log();
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << server.log();
}

// A corrupt state file is a clear start-up error naming the file, never a silent reset.
TEST_F(ServerProcessTest, CorruptStateFileIsAStartupError) {
  {
    ServerProcess server(Args(), tmp_.Join("server1.log"));
    ASSERT_NE(server.WaitForPort(), 0);
  }
  const std::string state_file = tmp_.Join("state/wildcard.state");
  std::string bytes = scenario::ReadFileOrEmpty(state_file);
  ASSERT_FALSE(bytes.empty());
  bytes[bytes.size() / 2] ^= 0x5a;
  std::ofstream(state_file, std::ios::binary | std::ios::trunc) << bytes;
  ServerProcess server(Args(), tmp_.Join("server2.log"));
  const int status = server.Wait(absl::Seconds(20));
  ASSERT_NE(status, -1);
  EXPECT_NE(WEXITSTATUS(status), 0);
  EXPECT_THAT(server.log(), HasSubstr(state_file));
}

// A directory source that changes while it cannot be read (here the key is a symlink to a path
// outside the watched directory that is briefly a symlink loop: ELOOP, as an EIO or EACCES
// would be) is read again with backoff, although nothing in the watched directory changes when
// it becomes readable. Before, the unreadable read was settled as a rejection and the renewal
// waited for the next change.
TEST_F(ServerProcessTest, UnreadableDirectorySourceIsRetried) {
  const std::string source = tmp_.Join("plain");
  const std::string outside = tmp_.Join("outside");
  ASSERT_EQ(mkdir(outside.c_str(), 0700), 0);
  CertificateMaterial without_ca = chain_.material;
  without_ca.ca_pem.clear();  // each renewal below comes from a new test CA
  fixtures::WritePlainDir(source, without_ca);
  const std::string key = outside + "/tls.key";
  std::ofstream(key) << chain_.material.key_pem.reveal();
  ASSERT_EQ(unlink((source + "/tls.key").c_str()), 0);
  ASSERT_EQ(symlink(key.c_str(), (source + "/tls.key").c_str()), 0);
  std::vector<std::string> args = Args();
  args[3] = "--certificate=wildcard=" + source;
  ServerProcess server(args, tmp_.Join("server.log"));
  const int port = server.WaitForPort();
  ASSERT_NE(port, 0) << server.log();
  ASSERT_TRUE(WaitFor([&] { return CurrentVersion(port) == 1; })) << server.log();

  // The key becomes unreadable, then the renewed certificate lands in the watched directory.
  ASSERT_EQ(unlink(key.c_str()), 0);
  ASSERT_EQ(symlink(key.c_str(), key.c_str()), 0);
  fixtures::Chain renewed = fixtures::MakeChain();
  const std::string staged = source + "/.tls.crt.new";
  std::ofstream(staged) << renewed.material.chain_pem;
  ASSERT_EQ(rename(staged.c_str(), (source + "/tls.crt").c_str()), 0);
  // The server tried to read it (today's message, or the rejection older versions logged).
  ASSERT_FALSE(server.WaitForLog("cannot read source|rejected \\(unreadable\\)").empty())
      << server.log();

  // Readable again, outside the watched directory: no inotify event reaches the server.
  ASSERT_EQ(unlink(key.c_str()), 0);
  std::ofstream(key) << renewed.material.key_pem.reveal();
  std::string fingerprint;
  ASSERT_TRUE(WaitFor([&] { return CurrentVersion(port, &fingerprint) == 2; })) << server.log();
  EXPECT_EQ(fingerprint, renewed.leaf.fingerprint);
  EXPECT_THAT(server.log(), ::testing::Not(HasSubstr("rejected")));
}

// --log-format=json writes one JSON object per line, quotes inside messages escaped (the
// rejection of a bad source names the certificate in quotes).
TEST_F(ServerProcessTest, JsonLogsAreOneObjectPerLine) {
  CertificateMaterial broken = fixtures::MakeChain().material;
  broken.key_pem = chain_.material.key_pem;
  fixtures::WriteKubeletDir(tmp_.Join("broken"), broken);
  ServerProcess server(
      {"--listen=127.0.0.1:0", "--insecure", "--log-format=json",
       "--certificate=wildcard=" + tmp_.Join("broken"), "--state-dir=" + tmp_.Join("state")},
      tmp_.Join("server.log"));
  ASSERT_NE(server.WaitForPort(), 0) << server.log();
  const std::string log = server.log();
  int lines = 0;
  for (absl::string_view line : absl::StrSplit(log, '\n', absl::SkipEmpty())) {
    ++lines;
    EXPECT_TRUE(absl::StartsWith(line, "{\"time\":\"") && absl::EndsWith(line, "\"}")) << line;
    EXPECT_THAT(std::string(line), HasSubstr("\"level\":\""));
  }
  EXPECT_GE(lines, 2);
  EXPECT_THAT(log, HasSubstr("certificate \\\"wildcard\\\"")) << "quotes must be escaped";
}

// A TCP connection to 127.0.0.1:port, not speaking anything; -1 when connect fails.
int ConnectRaw(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

size_t OpenFiles(pid_t pid) {
  size_t count = 0;
  for ([[maybe_unused]] const auto& entry :
       std::filesystem::directory_iterator(absl::StrCat("/proc/", pid, "/fd"))) {
    ++count;
  }
  return count;
}

// When the file table is full, accepting pauses instead of ending: gRPC 1.51's own listener
// stopped for good on the first EMFILE from accept4, so a 10,000-client reconnect storm (or a
// flood of idle connections) left a server that never accepted a connection again. The pause is
// counted for the operator (certcast_accept_pauses_total; CertcastAcceptPaused).
TEST_F(ServerProcessTest, AFullFileTableOnlyPausesAccepting) {
  std::vector<std::string> args = Args();
  args.push_back("--metrics-listen=127.0.0.1:0");
  ServerProcess server(args, tmp_.Join("server.log"));
  const int port = server.WaitForPort();
  ASSERT_NE(port, 0) << server.log();
  const int metrics_port = std::atoi(server.WaitForLog("metrics on port ([0-9]+)").c_str());
  ASSERT_NE(metrics_port, 0) << server.log();
  ASSERT_NE(CurrentVersion(port), 0u) << server.log();
  // A little room above what the server holds now; the connections below fill it.
  const rlim_t room = OpenFiles(server.pid()) + 8;
  const struct rlimit limit = {room, room};
  ASSERT_EQ(prlimit(server.pid(), RLIMIT_NOFILE, &limit, nullptr), 0);
  std::vector<int> idle;
  for (int i = 0; i < 40; ++i) {
    const int fd = ConnectRaw(port);
    if (fd >= 0) idle.push_back(fd);
  }
  ASSERT_FALSE(server.WaitForLog("Too many open files", absl::Seconds(20)).empty())
      << "the server never ran out of file descriptors: " << server.log();
  for (int fd : idle) close(fd);  // the server sees EOF and closes its ends
  EXPECT_TRUE(WaitFor([&] { return CurrentVersion(port, nullptr, absl::Seconds(2)) != 0; },
                      absl::Seconds(30)))
      << "the server accepts no connection after its file table was full once: " << server.log();
  std::string metrics;
  ASSERT_EQ(scenario::HttpGet(metrics_port, "/metrics", &metrics), 200);
  // At least once: accepting the dead connections of the backlog may fill the table again.
  EXPECT_THAT(metrics, ::testing::ContainsRegex("\ncertcast_accept_pauses_total [1-9]"));
  // Nothing waits for gRPC once the burst is over.
  EXPECT_THAT(metrics, ::testing::ContainsRegex("\ncertcast_accept_queue_connections 0\n"));
}

// --listen=:PORT (as the shipped Deployment has it) means every interface; gRPC's own listener
// refused it at start-up ("unparseable host:port").
TEST_F(ServerProcessTest, ListenWithoutAHostMeansEveryInterface) {
  std::vector<std::string> args = Args();
  args[0] = "--listen=:0";
  ServerProcess server(args, tmp_.Join("server.log"));
  const int port = server.WaitForPort();
  ASSERT_NE(port, 0) << server.log();
  EXPECT_NE(CurrentVersion(port), 0u) << server.log();
}

// gRPC 1.51 would give every connection an 8 KiB read buffer kept while it idles (its
// tcp_read_chunks experiment); the server turns that off so reads start at 256 bytes. gRPC's tcp
// tracer logs each read buffer of the sized reader only, with its sizes.
TEST_F(ServerProcessTest, ConnectionsReadIntoSmallBuffersThatGrow) {
  std::vector<std::string> args = {"-u", "GRPC_EXPERIMENTS", "GRPC_TRACE=tcp",
                                   CERTCAST_SERVER_BINARY, "--log-level=debug"};
  for (const std::string& arg : Args()) args.push_back(arg);
  scenario::ChildProcess server("/usr/bin/env", args, tmp_.Join("server.log"));
  const int port = server.WaitForPort();
  ASSERT_NE(port, 0) << server.log();
  EXPECT_NE(CurrentVersion(port), 0u) << server.log();
  EXPECT_NE(server.WaitForLog("alloc_slices; min_chunk=256 max_chunk=[0-9]+ target=256[.]"), "")
      << "no 256-byte read buffer in the log";
}

// gRPC 1.51 answers a received message with a stream WINDOW_UPDATE in a write of its own when
// the next read is already waiting (bench/README.md, optimization 15): one more sendmsg per ACK.
// The server reads a settled stream again only after the write that asks for an answer, so the
// update rides along with that write. gRPC's http tracer names why each write started; only the
// subscriber's connection counts (the inspection calls use another one).
TEST_F(ServerProcessTest, AcksCostTheServerNoWriteOfTheirOwn) {
  std::vector<std::string> args = {"GRPC_TRACE=http", CERTCAST_SERVER_BINARY, "--log-level=debug"};
  for (const std::string& arg : Args()) args.push_back(arg);
  scenario::ChildProcess server("/usr/bin/env", args, tmp_.Join("server.log"));
  const int port = server.WaitForPort();
  ASSERT_NE(port, 0) << server.log();
  ASSERT_NE(CurrentVersion(port), 0u) << server.log();
  auto inspection = v1::Inspection::NewStub(scenario::InsecureChannel(port));
  auto acknowledged = [&]() -> uint64_t {
    grpc::ClientContext context;
    v1::ListClientsResponse response;
    if (!inspection->ListClients(&context, {}, &response).ok()) return 0;
    if (response.clients_size() != 1 || response.clients(0).certificates_size() != 1) return 0;
    return response.clients(0).certificates(0).acknowledged_version();
  };

  grpc::ChannelArguments own_connection;
  own_connection.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  TestSubscriber subscriber(grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                                      grpc::InsecureChannelCredentials(),
                                                      own_connection));
  v1::HeldCertificate held;
  held.set_name("wildcard");
  ASSERT_TRUE(subscriber.SendHello("tenant-a", "pod-1", {held}));
  constexpr uint64_t kVersions = 6;
  for (uint64_t version = 1; version <= kVersions; ++version) {
    if (version > 1) fixtures::WriteKubeletDir(tmp_.Join("source"), fixtures::MakeChain().material);
    std::optional<v1::SubscribeResponse> pushed = subscriber.NextNonHeartbeat();
    ASSERT_TRUE(pushed.has_value() && pushed->has_update()) << server.log();
    ASSERT_EQ(pushed->update().version(), version);
    ASSERT_TRUE(subscriber.SendAck(pushed->update()));
    ASSERT_TRUE(WaitFor([&] { return acknowledged() == version; })) << "ACK of " << version;
  }
  const std::string peer =
      server.WaitForLog("stream subscribed peer=(ipv4:127[.]0[.]0[.]1:[0-9]+)");
  ASSERT_NE(peer, "") << server.log();
  const std::string connection = absl::StrCat("SERVER [", peer, "]");
  // Every write the transport starts or queues for the stream's window says so, whether the
  // transport was idle ("IDLE -> WRITING") or writing already ("WRITING -> WRITING+MORE").
  int window_writes = 0;
  int message_writes = 0;
  for (absl::string_view line : absl::StrSplit(server.log(), '\n')) {
    if (!absl::StrContains(line, connection)) continue;
    if (absl::StrContains(line, "[STREAM_FLOW_CONTROL]")) ++window_writes;
    if (absl::StrContains(line, "[SEND_MESSAGE]")) ++message_writes;
  }
  ASSERT_GE(message_writes, static_cast<int>(kVersions)) << "no http trace for " << connection;
  // Before: at least one such line per ACK (7 over the 6 ACKs with 24dcbe9). Now none, or
  // rarely the two of one event for the first ACK after the hello.
  EXPECT_LE(window_writes, 2) << "writes for a stream window update on " << connection << ", "
                              << kVersions << " ACKs";
  subscriber.CloseSend();
}

// Bad flags fail fast with a message that names the flag.
TEST_F(ServerProcessTest, BadFlagsFailWithClearMessage) {
  ServerProcess no_tls({"--listen=127.0.0.1:0", "--certificate=wildcard=" + tmp_.Join("source")},
                       tmp_.Join("a.log"));
  EXPECT_EQ(WEXITSTATUS(no_tls.Wait(absl::Seconds(20))), 2);
  EXPECT_THAT(no_tls.log(), HasSubstr("--insecure"));
  ServerProcess bad_cert({"--insecure", "--certificate=wildcard"}, tmp_.Join("b.log"));
  EXPECT_EQ(WEXITSTATUS(bad_cert.Wait(absl::Seconds(20))), 2);
  EXPECT_THAT(bad_cert.log(), HasSubstr("expected NAME=DIR"));
}

}  // namespace
}  // namespace certcast
