// Client robustness against scripted and misbehaving (fake) servers, and crash consistency of
// the files under SIGKILL at random moments during hundreds of rotations.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "client/credentials.h"
#include "client/file_sink.h"
#include "client/hooks.h"
#include "client/session.h"
#include "client/state_store.h"
#include "common/forwarding_filesystem.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/child_process.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/pair_checker.h"
#include "tests/test_subscriber.h"

namespace certcast {
namespace {

using ::certcast::fixtures::Chain;
using ::certcast::fixtures::MakeChain;
using ::certcast::fixtures::TempDir;
using ::certcast::scenario::ChildProcess;
using ::certcast::scenario::PairChecker;
using ::certcast::scenario::WaitFor;
using ::testing::HasSubstr;

v1::SubscribeResponse Update(uint64_t version, const Chain& chain, const std::string& key_pem) {
  v1::SubscribeResponse response;
  v1::CertificateUpdate* update = response.mutable_update();
  update->set_name("wildcard");
  update->set_version(version);
  update->set_nonce(absl::StrCat("nonce-", version));
  update->set_fingerprint(chain.leaf.fingerprint);
  update->set_chain_pem(chain.material.chain_pem);
  update->set_private_key_pem(key_pem);
  update->set_ca_pem(chain.material.ca_pem);
  return response;
}

// A Distribution server that plays a script: after the hello and a heartbeat it sends each
// scripted update and waits for the client's answer before the next. It records what the
// client sends.
class ScriptedServer final : public v1::Distribution::Service {
 public:
  explicit ScriptedServer(std::vector<v1::SubscribeResponse> script) : script_(std::move(script)) {}

  grpc::Status Subscribe(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::SubscribeResponse, v1::SubscribeRequest>* stream) override {
    v1::SubscribeRequest request;
    if (!stream->Read(&request) || !request.has_hello()) return grpc::Status::CANCELLED;
    Record(request);
    v1::SubscribeResponse heartbeat;
    heartbeat.mutable_heartbeat()->set_interval_seconds(30);
    stream->Write(heartbeat);
    for (const v1::SubscribeResponse& step : script_) {
      stream->Write(step);
      if (!stream->Read(&request)) return grpc::Status::CANCELLED;
      Record(request);
    }
    while (!context->IsCancelled() && stream->Read(&request)) Record(request);
    return grpc::Status::OK;
  }

  std::vector<v1::SubscribeRequest> received() {
    absl::MutexLock lock(&mu_);
    return received_;
  }

 private:
  void Record(const v1::SubscribeRequest& request) {
    absl::MutexLock lock(&mu_);
    received_.push_back(request);
  }

  const std::vector<v1::SubscribeResponse> script_;
  absl::Mutex mu_;
  std::vector<v1::SubscribeRequest> received_ ABSL_GUARDED_BY(mu_);
};

// Runs a client against a ScriptedServer until it has answered every step.
class ScriptedServerTest : public ::testing::Test {
 protected:
  std::vector<v1::SubscribeRequest> Run(std::vector<v1::SubscribeResponse> script) {
    const size_t expected = script.size() + 1;  // hello + one answer per step
    ScriptedServer service(std::move(script));
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
    client_ = std::make_unique<ChildProcess>(
        CERTCAST_CLIENT_BINARY,
        std::vector<std::string>{absl::StrCat("--server=127.0.0.1:", port), "--insecure",
                                 "--namespace=tenant-a", "--certificate=wildcard",
                                 "--output-dir=" + tmp_.Join("out"),
                                 "--state-dir=" + tmp_.Join("state")},
        tmp_.Join("client.log"));
    EXPECT_TRUE(WaitFor([&] { return service.received().size() >= expected; })) << client_->log();
    client_->Signal(SIGTERM);
    client_->Wait(absl::Seconds(20));
    server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
    return service.received();
  }

  absl::StatusOr<CertificateMaterial> Files() {
    FileSink files(&fs_, &clock_, {tmp_.Join("out"), false});
    return files.Read("wildcard");
  }

  TempDir tmp_;
  PosixFilesystem fs_;
  RealClock clock_;
  std::unique_ptr<ChildProcess> client_;
};

// Material that fails validation is NACKed with the reason, and the files keep the last good pair.
TEST_F(ScriptedServerTest, NackOnBadMaterialKeepsFiles) {
  Chain good = MakeChain();
  Chain bad = MakeChain();
  const std::string good_key(good.material.key_pem.reveal());
  std::vector<v1::SubscribeRequest> received =
      Run({Update(1, good, good_key), Update(2, bad, good_key)});  // v2: new cert, old key
  ASSERT_EQ(received.size(), 3u);
  ASSERT_TRUE(received[1].has_ack()) << received[1].DebugString();
  EXPECT_EQ(received[1].ack().version(), 1u);
  ASSERT_TRUE(received[2].has_nack());
  const v1::Nack& nack = received[2].nack();
  EXPECT_EQ(nack.version(), 2u);
  EXPECT_EQ(nack.nonce(), "nonce-2");
  ASSERT_EQ(nack.errors_size(), 1);
  EXPECT_EQ(nack.errors(0).sink(), "validation");
  EXPECT_FALSE(nack.errors(0).transient());
  EXPECT_THAT(nack.errors(0).error(), HasSubstr("tls.key"));
  absl::StatusOr<CertificateMaterial> held = Files();
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(*held, good.material);
  EXPECT_THAT(client_->log(), ::testing::Not(HasSubstr("PRIVATE KEY")));
}

// An update whose fingerprint is not its certificate's (a server bug or a tampered message) is
// refused: NACK naming both fingerprints, the files keep the last good pair untouched.
TEST_F(ScriptedServerTest, NackWhenFingerprintDoesNotMatchCertificate) {
  Chain good = MakeChain();
  Chain next = MakeChain();
  v1::SubscribeResponse lying = Update(2, next, std::string(next.material.key_pem.reveal()));
  const std::string claimed = MakeChain().leaf.fingerprint;
  lying.mutable_update()->set_fingerprint(claimed);
  std::vector<v1::SubscribeRequest> received =
      Run({Update(1, good, std::string(good.material.key_pem.reveal())), lying});
  ASSERT_EQ(received.size(), 3u);
  ASSERT_TRUE(received[1].has_ack()) << received[1].DebugString();
  ASSERT_TRUE(received[2].has_nack()) << "the update with a wrong fingerprint was acknowledged";
  const v1::Nack& nack = received[2].nack();
  EXPECT_EQ(nack.version(), 2u);
  ASSERT_EQ(nack.errors_size(), 1);
  EXPECT_EQ(nack.errors(0).sink(), "validation");
  EXPECT_FALSE(nack.errors(0).transient());
  EXPECT_THAT(nack.errors(0).error(), HasSubstr(claimed));
  EXPECT_THAT(nack.errors(0).error(), HasSubstr(next.leaf.fingerprint));
  absl::StatusOr<CertificateMaterial> held = Files();
  ASSERT_TRUE(held.ok()) << held.status();
  EXPECT_EQ(*held, good.material);
}

// Issue 10 item 9, through the real client: OUT/NAME planted as a symlink to another directory
// gets a NACK saying why, and no key is written where the link points.
TEST_F(ScriptedServerTest, NackWhenCertificateDirectoryIsASymlink) {
  Chain good = MakeChain();
  ASSERT_EQ(::mkdir(tmp_.Join("elsewhere").c_str(), 0777), 0);
  ASSERT_EQ(::mkdir(tmp_.Join("out").c_str(), 0755), 0);
  ASSERT_EQ(::symlink(tmp_.Join("elsewhere").c_str(), tmp_.Join("out/wildcard").c_str()), 0);
  std::vector<v1::SubscribeRequest> received =
      Run({Update(1, good, std::string(good.material.key_pem.reveal()))});
  ASSERT_GE(received.size(), 2u);
  ASSERT_TRUE(received[1].has_nack()) << received[1].DebugString();
  ASSERT_EQ(received[1].nack().errors_size(), 1);
  EXPECT_THAT(received[1].nack().errors(0).error(), HasSubstr("is a symlink"));
  absl::StatusOr<std::vector<std::string>> planted = fs_.ListDir(tmp_.Join("elsewhere"));
  ASSERT_TRUE(planted.ok()) << planted.status();
  EXPECT_TRUE(planted->empty());
}

// The server wins: a different fingerprint with a lower version number is applied, with a warning.
TEST_F(ScriptedServerTest, ServerWinsWhenVersionGoesBackwards) {
  Chain newer = MakeChain();
  Chain restored = MakeChain();
  std::vector<v1::SubscribeRequest> received =
      Run({Update(5, newer, std::string(newer.material.key_pem.reveal())),
           Update(3, restored, std::string(restored.material.key_pem.reveal()))});
  ASSERT_EQ(received.size(), 3u);
  ASSERT_TRUE(received[2].has_ack()) << received[2].DebugString();
  EXPECT_EQ(received[2].ack().version(), 3u);
  EXPECT_EQ(*Files(), restored.material);
  EXPECT_THAT(client_->log(), HasSubstr("went backwards (held 5, got 3)"));
}

// A real filesystem whose directory fsync fails (EIO) while `..data` of that directory names a
// version other than the first one ever swapped in: a failure after the swap, as Sink::Apply's
// contract describes it. Thread-safe.
class FailAfterSwapFilesystem final : public ForwardingFilesystem {
 public:
  void set_failing(bool failing) { failing_.store(failing); }

  absl::Status Rename(const std::string& from, const std::string& to) override {
    absl::Status status = ForwardingFilesystem::Rename(from, to);
    if (status.ok() && absl::EndsWith(to, "/..data")) {
      absl::MutexLock lock(&mu_);
      if (first_version_.empty()) first_version_ = ReadLink(to).value_or("");
    }
    return status;
  }
  absl::Status SyncDir(const std::string& path) override {
    if (failing_.load()) {
      absl::StatusOr<std::string> current = ReadLink(JoinPath(path, "..data"));
      absl::MutexLock lock(&mu_);
      if (current.ok() && !first_version_.empty() && *current != first_version_) {
        return absl::InternalError(absl::StrCat("fsync ", path, ": Input/output error"));
      }
    }
    return ForwardingFilesystem::SyncDir(path);
  }

 private:
  std::atomic<bool> failing_{false};
  absl::Mutex mu_;
  std::string first_version_ ABSL_GUARDED_BY(mu_);
};

// Records the versions it ran for.
class RecordingHook final : public Hook {
 public:
  std::string name() const override { return "recording"; }
  absl::Status Run(const HookContext& context) override {
    absl::MutexLock lock(&mu_);
    versions_.push_back(context.version);
    return absl::OkStatus();
  }
  std::vector<uint64_t> versions() {
    absl::MutexLock lock(&mu_);
    return versions_;
  }

 private:
  absl::Mutex mu_;
  std::vector<uint64_t> versions_ ABSL_GUARDED_BY(mu_);
};

// Sink::Apply's contract for an error after the switch (FileSink: `..data` already names the new
// version, the fsync after it failed): readers may see the new version, but it does not count as
// applied. The client NACKs it naming the sink, keeps reporting the previous version as held (in
// its hello, metrics and readiness), runs no hook, and retries until the sink settles; then it
// ACKs and runs the hooks once, without the server resending.
TEST(SinkContractTest, FailureAfterTheSwapIsNackedNotCountedAndRetried) {
  TempDir tmp;
  Chain first = MakeChain();
  Chain second = MakeChain();
  ScriptedServer service({Update(1, first, std::string(first.material.key_pem.reveal())),
                          Update(2, second, std::string(second.material.key_pem.reveal()))});
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();

  FailAfterSwapFilesystem fs;
  fs.set_failing(true);
  RealClock clock;
  FileSink files(&fs, &clock, {tmp.Join("out"), false});
  PosixFilesystem state_fs;
  ASSERT_TRUE(state_fs.CreateDir(tmp.Join("state"), 0700).ok());
  ClientStateStore store(&state_fs, tmp.Join("state"));
  CredentialsProvider::Options insecure;
  insecure.insecure = true;
  CredentialsProvider credentials(&state_fs, insecure);
  ASSERT_TRUE(credentials.Reload().ok());
  RecordingHook hook;
  SessionOptions options;
  options.server = absl::StrCat("127.0.0.1:", port);
  options.namespace_ = "tenant-a";
  options.client_id = "client-a";
  options.certificates = {"wildcard"};
  options.retry = {absl::Milliseconds(100), absl::Milliseconds(500), 2.0, 0.2};
  Session session(options, {&files}, {&hook}, &store, &credentials, &clock);
  session.Init();
  std::thread runner([&session] { session.Run(); });

  // hello, ACK 1, NACK 2 (and the NACKs of retries, which the script does not count)
  ASSERT_TRUE(WaitFor([&] { return service.received().size() >= 3; }));
  std::vector<v1::SubscribeRequest> received = service.received();
  ASSERT_TRUE(received[1].has_ack()) << received[1].DebugString();
  ASSERT_TRUE(received[2].has_nack()) << received[2].DebugString();
  const v1::Nack& nack = received[2].nack();
  EXPECT_EQ(nack.version(), 2u);
  ASSERT_EQ(nack.errors_size(), 1);
  EXPECT_EQ(nack.errors(0).sink(), "files");
  EXPECT_TRUE(nack.errors(0).transient());
  EXPECT_THAT(nack.errors(0).error(), HasSubstr("Input/output error"));
  EXPECT_THAT(nack.errors(0).error(), HasSubstr("already points at"));
  // Visible to readers, but not applied as far as the client reports.
  EXPECT_EQ(files.Read("wildcard").value(), second.material);
  HeldVersion held = session.held()["wildcard"];
  EXPECT_EQ(held.version, 1u);
  EXPECT_EQ(held.fingerprint, first.leaf.fingerprint);
  EXPECT_EQ(session.applied()["wildcard"].version, 1u);
  std::string why;
  EXPECT_FALSE(session.Ready(&why));
  EXPECT_THAT(why, HasSubstr("already points at"));
  EXPECT_EQ(hook.versions(), std::vector<uint64_t>{1});
  EXPECT_EQ(store.Load("wildcard").value_or(HeldVersion{}).version, 1u);

  fs.set_failing(false);
  auto acked_2 = [&] {
    for (const v1::SubscribeRequest& request : service.received()) {
      if (request.has_ack() && request.ack().version() == 2) return true;
    }
    return false;
  };
  ASSERT_TRUE(WaitFor(acked_2));
  EXPECT_EQ(session.held()["wildcard"].version, 2u);
  EXPECT_TRUE(session.Ready(&why)) << why;
  EXPECT_EQ(hook.versions(), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(store.Load("wildcard").value_or(HeldVersion{}).version, 2u);
  EXPECT_EQ(files.Read("wildcard").value(), second.material);
  int version_dirs = 0;
  absl::StatusOr<std::vector<std::string>> entries = state_fs.ListDir(tmp.Join("out/wildcard"));
  ASSERT_TRUE(entries.ok()) << entries.status();
  for (const std::string& entry : *entries) {
    if (absl::StartsWith(entry, "..2")) ++version_dirs;
  }
  EXPECT_EQ(version_dirs, 1) << "the first version is cleaned up once the second settled";

  session.Stop();
  runner.join();
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
}

// The checker itself: it reports a `..data` that names an incomplete version directory (instead
// of taking it for a version removed after a swap), and a mismatched pair; it passes a good one.
TEST(PairCheckerTest, ReportsIncompleteAndMismatchedVersionsAndPassesGoodOnes) {
  TempDir tmp;
  Chain chain = MakeChain();
  const std::string key(chain.material.key_pem.reveal());
  const std::map<std::string, std::string> pairs = {{chain.material.chain_pem, key}};
  auto make_version = [&](const std::string& dir, const std::string& version,
                          const std::string& chain_pem, const std::string* key_pem) {
    PosixFilesystem fs;
    ASSERT_TRUE(fs.CreateDir(tmp.Join(dir), 0755).ok() || fs.Exists(tmp.Join(dir)));
    ASSERT_TRUE(fs.CreateDir(tmp.Join(dir + "/" + version), 0755).ok());
    ASSERT_TRUE(fs.WriteFile(tmp.Join(dir + "/" + version + "/tls.crt"), chain_pem, 0644).ok());
    if (key_pem != nullptr) {
      ASSERT_TRUE(fs.WriteFile(tmp.Join(dir + "/" + version + "/tls.key"), *key_pem, 0600).ok());
    }
    ASSERT_EQ(symlink(version.c_str(), tmp.Join(dir + "/..data").c_str()), 0);
  };
  make_version("good", "..1", chain.material.chain_pem, &key);
  make_version("incomplete", "..1", chain.material.chain_pem, nullptr);
  const std::string other_key(MakeChain().material.key_pem.reveal());
  make_version("mismatched", "..1", chain.material.chain_pem, &other_key);

  PairChecker good(tmp.Join("good"), pairs);
  PairChecker incomplete(tmp.Join("incomplete"), pairs);
  PairChecker mismatched(tmp.Join("mismatched"), pairs);
  ASSERT_TRUE(WaitFor([&] {
    return good.reads() > 10 && !incomplete.failures().empty() && !mismatched.failures().empty();
  }));
  EXPECT_THAT(good.failures(), ::testing::IsEmpty());
  EXPECT_THAT(incomplete.failures().front(), HasSubstr("..data points at ..1, which lacks"));
  EXPECT_THAT(mismatched.failures().front(), HasSubstr("torn or mismatched pair"));
}

// SIGKILL of the client at random moments during 200 rotations never exposes a torn, empty or
// mismatched pair, and the client converges on the last version.
TEST(ClientRobustnessTest, SigkillDuringRotationsNeverTearsThePair) {
  constexpr int kRotations = 200;
  TempDir tmp;
  std::vector<Chain> chains;
  std::map<std::string, std::string> pairs;
  for (int i = 0; i <= kRotations; ++i) {
    chains.push_back(MakeChain());
    pairs[chains.back().material.chain_pem] = std::string(chains.back().material.key_pem.reveal());
  }
  fixtures::WriteKubeletDir(tmp.Join("source"), chains[0].material);
  ChildProcess server(
      CERTCAST_SERVER_BINARY,
      {"--listen=127.0.0.1:0", "--insecure", "--quiet-period=5ms",
       "--certificate=wildcard=" + tmp.Join("source"), "--state-dir=" + tmp.Join("server-state")},
      tmp.Join("server.log"));
  const int port = server.WaitForPort();
  ASSERT_NE(port, 0) << server.log();
  const std::vector<std::string> client_args = {absl::StrCat("--server=127.0.0.1:", port),
                                                "--insecure",
                                                "--namespace=tenant-a",
                                                "--certificate=wildcard",
                                                "--output-dir=" + tmp.Join("out"),
                                                "--state-dir=" + tmp.Join("client-state"),
                                                "--log-level=warn"};
  int starts = 0;
  auto start_client = [&] {
    return std::make_unique<ChildProcess>(CERTCAST_CLIENT_BINARY, client_args,
                                          tmp.Join(absl::StrCat("client", ++starts, ".log")));
  };
  auto client = start_client();
  PosixFilesystem fs;
  RealClock clock;
  FileSink files(&fs, &clock, {tmp.Join("out"), false});
  auto holds = [&](const Chain& chain) {
    absl::StatusOr<CertificateMaterial> held = files.Read("wildcard");
    return held.ok() && held->chain_pem == chain.material.chain_pem;
  };
  ASSERT_TRUE(WaitFor([&] { return holds(chains[0]); })) << client->log();

  PairChecker checker(tmp.Join("out/wildcard"), pairs);
  std::mt19937 random(20261128);
  int kills = 0;
  for (int i = 1; i <= kRotations; ++i) {
    fixtures::WriteKubeletDir(tmp.Join("source"), chains[i].material);
    if (random() % 3 == 0) {
      // Fault injection: the kill lands at a random point of receiving and writing.
      absl::SleepFor(absl::Microseconds(random() % 40'000));
      client->Signal(SIGKILL);
      client->Wait(absl::Seconds(10));
      ++kills;
      client = start_client();
    }
    ASSERT_TRUE(WaitFor([&] { return holds(chains[i]); }, absl::Seconds(60)))
        << "rotation " << i << ": " << client->log();
  }
  checker.Stop();
  EXPECT_GT(kills, 30);
  EXPECT_GT(checker.reads(), kRotations);
  const std::vector<std::string> failures = checker.failures();
  EXPECT_EQ(failures.size(), 0u) << "first: " << (failures.empty() ? "" : failures.front());
}

// A server that either goes silent after the first heartbeat, or denies every subscription.
class MisbehavingServer final : public v1::Distribution::Service {
 public:
  enum class Mode { kSilent, kDeny };
  explicit MisbehavingServer(Mode mode) : mode_(mode) {}

  grpc::Status Subscribe(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::SubscribeResponse, v1::SubscribeRequest>* stream) override {
    v1::SubscribeRequest hello;
    if (!stream->Read(&hello)) return grpc::Status::CANCELLED;
    ++subscriptions_;
    if (mode_ == Mode::kDeny) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          "namespace tenant-a may not receive certificate \"wildcard\"");
    }
    v1::SubscribeResponse heartbeat;
    heartbeat.mutable_heartbeat()->set_interval_seconds(1);
    stream->Write(heartbeat);
    // Then nothing at all, like a half-open connection, until the client gives up on us.
    v1::SubscribeRequest ignored;
    while (stream->Read(&ignored)) {
    }
    (void)context;
    return grpc::Status::OK;
  }
  int subscriptions() const { return subscriptions_.load(); }

 private:
  const Mode mode_;
  std::atomic<int> subscriptions_{0};
};

class MisbehavingServerTest : public ::testing::TestWithParam<MisbehavingServer::Mode> {};

// Silence longer than two heartbeat intervals ends the stream and the client reconnects; a
// denial is logged clearly and retried with backoff. The client never exits.
TEST_P(MisbehavingServerTest, ClientReconnectsAndNeverExits) {
  TempDir tmp;
  MisbehavingServer service(GetParam());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ChildProcess client(CERTCAST_CLIENT_BINARY,
                      {absl::StrCat("--server=127.0.0.1:", port), "--insecure",
                       "--namespace=tenant-a", "--certificate=wildcard",
                       "--output-dir=" + tmp.Join("out"), "--state-dir=" + tmp.Join("state")},
                      tmp.Join("client.log"));
  ASSERT_TRUE(WaitFor([&] { return service.subscriptions() >= 3; }, absl::Seconds(60)))
      << client.log();
  EXPECT_FALSE(client.Exited());
  if (GetParam() == MisbehavingServer::Mode::kSilent) {
    EXPECT_THAT(client.log(), HasSubstr("treating the stream as dead"));
  } else {
    EXPECT_THAT(client.log(), HasSubstr("the server refused this client"));
    EXPECT_THAT(client.log(), HasSubstr("may not receive certificate"));
  }
  client.Signal(SIGTERM);
  EXPECT_EQ(client.Wait(absl::Seconds(20)), 0) << client.log();
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
}

INSTANTIATE_TEST_SUITE_P(SilentAndDenying, MisbehavingServerTest,
                         ::testing::Values(MisbehavingServer::Mode::kSilent,
                                           MisbehavingServer::Mode::kDeny),
                         [](const auto& param_info) {
                           return param_info.param == MisbehavingServer::Mode::kSilent ? "Silent"
                                                                                       : "Deny";
                         });

// A server that hands out version 1, then ends every stream with PERMISSION_DENIED and the
// given denial reason in the trailers.
class RevokingServer final : public v1::Distribution::Service {
 public:
  RevokingServer(Chain chain, std::string reason) : chain_(std::move(chain)), reason_(reason) {}
  grpc::Status Subscribe(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::SubscribeResponse, v1::SubscribeRequest>* stream) override {
    v1::SubscribeRequest request;
    if (!stream->Read(&request)) return grpc::Status::CANCELLED;
    if (subscriptions_.fetch_add(1) == 0) {
      stream->Write(Update(1, chain_, std::string(chain_.material.key_pem.reveal())));
      stream->Read(&request);  // the ACK
    }
    context->AddTrailingMetadata("certcast-denial-reason", reason_);
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "denied (" + reason_ + ")");
  }
  int subscriptions() const { return subscriptions_.load(); }

 private:
  const Chain chain_;
  const std::string reason_;
  std::atomic<int> subscriptions_{0};
};

class DeleteOnRevokeTest : public ::testing::TestWithParam<std::string> {};

// --delete-on-revoke removes the files when the policy no longer allows the namespace
// ("not_allowed"), and only then: a server refusing for another reason (no policy configured,
// a namespace mismatch) must not make a fleet delete its certificates.
TEST_P(DeleteOnRevokeTest, DeletesOnlyOnRevocation) {
  TempDir tmp;
  RevokingServer service(MakeChain(), GetParam());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ChildProcess client(CERTCAST_CLIENT_BINARY,
                      {absl::StrCat("--server=127.0.0.1:", port), "--insecure",
                       "--namespace=tenant-a", "--certificate=wildcard", "--delete-on-revoke",
                       "--output-dir=" + tmp.Join("out"), "--state-dir=" + tmp.Join("state")},
                      tmp.Join("client.log"));
  auto holds = [&] {
    struct stat st;
    return stat(tmp.Join("out/wildcard/tls.key").c_str(), &st) == 0;
  };
  ASSERT_TRUE(WaitFor([&] { return service.subscriptions() >= 3; }, absl::Seconds(60)))
      << client.log();
  if (GetParam() == "not_allowed") {
    EXPECT_TRUE(WaitFor([&] { return !holds(); })) << client.log();
  } else {
    EXPECT_TRUE(holds()) << client.log();
    EXPECT_THAT(client.log(), ::testing::Not(HasSubstr("removed from every sink")));
  }
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
}

INSTANTIATE_TEST_SUITE_P(Reasons, DeleteOnRevokeTest,
                         ::testing::Values("not_allowed", "no_policy", "namespace_mismatch"));

}  // namespace
}  // namespace certcast
