// Scenario tests: the real CertcastServer in-process on port 0, real files, real gRPC.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/filesystem.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/json_util.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/health_check_service_interface.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/test_subscriber.h"

namespace certcast {
namespace {

using ::certcast::fixtures::Chain;
using ::certcast::fixtures::MakeChain;
using ::certcast::fixtures::TempDir;
using ::certcast::scenario::InsecureChannel;
using ::certcast::scenario::TestSubscriber;
using ::certcast::scenario::WaitFor;
using ::testing::HasSubstr;

constexpr char kName[] = "wildcard";

class ServerScenarioTest : public ::testing::Test {
 protected:
  void SetUp() override {
    source_dir_ = tmp_.Join("source");
    chain_ = MakeChain();
    fixtures::WriteKubeletDir(source_dir_, chain_.material);
    options_.listen = "127.0.0.1:0";
    options_.insecure = true;
    options_.state_dir = tmp_.Join("state");
    options_.certificates.push_back({kName, source_dir_, {}});
    options_.watcher.quiet_period = absl::Milliseconds(50);
    options_.watcher.confirm_delay = absl::Milliseconds(300);
  }

  void StartServer() {
    absl::StatusOr<std::unique_ptr<CertcastServer>> server =
        CertcastServer::Start(options_, &fs_, &clock_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    channel_ = InsecureChannel(server_->port());
    inspection_ = v1::Inspection::NewStub(channel_);
    admin_ = v1::Admin::NewStub(channel_);
  }

  void StopServer() {
    inspection_.reset();
    admin_.reset();
    channel_.reset();
    server_.reset();
  }

  v1::Certificate GetCertificate() {
    grpc::ClientContext context;
    v1::GetCertificateRequest request;
    request.set_name(kName);
    v1::Certificate response;
    grpc::Status status = inspection_->GetCertificate(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  uint64_t CurrentVersion() { return GetCertificate().current().version(); }

  v1::ListClientsResponse ListClients(const v1::ListClientsRequest& request = {}) {
    grpc::ClientContext context;
    v1::ListClientsResponse response;
    grpc::Status status = inspection_->ListClients(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  // Subscribes holding nothing and returns the first update.
  v1::CertificateUpdate SubscribeFresh(TestSubscriber& subscriber,
                                       const std::string& client_id = "pod-1") {
    v1::HeldCertificate held;
    held.set_name(kName);
    EXPECT_TRUE(subscriber.SendHello("tenant-a", client_id, {held}));
    std::optional<v1::SubscribeResponse> first = subscriber.Next();
    EXPECT_TRUE(first.has_value() && first->has_heartbeat());
    std::optional<v1::SubscribeResponse> update = subscriber.NextNonHeartbeat();
    EXPECT_TRUE(update.has_value() && update->has_update());
    return update.has_value() ? update->update() : v1::CertificateUpdate();
  }

  TempDir tmp_;
  std::string source_dir_;
  Chain chain_;
  PosixFilesystem fs_;
  RealClock clock_;
  ServerOptions options_;
  std::unique_ptr<CertcastServer> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Inspection::Stub> inspection_;
  std::unique_ptr<v1::Admin::Stub> admin_;
};

// A new subscriber gets the full material; a rotation in the kubelet layout reaches it.
TEST_F(ServerScenarioTest, RotationReachesSubscriber) {
  StartServer();
  TestSubscriber subscriber(channel_);
  v1::CertificateUpdate first = SubscribeFresh(subscriber);
  EXPECT_EQ(first.version(), 1u);
  EXPECT_EQ(first.fingerprint(), chain_.leaf.fingerprint);
  EXPECT_EQ(first.chain_pem(), chain_.material.chain_pem);
  EXPECT_EQ(first.private_key_pem(), chain_.material.key_pem.reveal());
  EXPECT_EQ(first.ca_pem(), chain_.material.ca_pem);
  EXPECT_THAT(first.dns_names(), ::testing::Contains("*.example.test"));

  Chain next = MakeChain();
  fixtures::WriteKubeletDir(source_dir_, next.material);
  std::optional<v1::SubscribeResponse> pushed = subscriber.NextNonHeartbeat();
  ASSERT_TRUE(pushed.has_value() && pushed->has_update());
  EXPECT_EQ(pushed->update().version(), 2u);
  EXPECT_EQ(pushed->update().fingerprint(), next.leaf.fingerprint);
  EXPECT_NE(pushed->update().nonce(), first.nonce());
}

// Resuming with the current version and fingerprint costs no payload: only an in-sync note.
TEST_F(ServerScenarioTest, ResumeWithCurrentFingerprintCostsNoPayload) {
  StartServer();
  const uint64_t updates_before = server_->hub().counters().updates_written;
  TestSubscriber subscriber(channel_);
  v1::HeldCertificate held;
  held.set_name(kName);
  held.set_version(1);
  held.set_fingerprint(chain_.leaf.fingerprint);
  ASSERT_TRUE(subscriber.SendHello("tenant-a", "pod-1", {held}));
  std::optional<v1::SubscribeResponse> response = subscriber.NextNonHeartbeat();
  ASSERT_TRUE(response.has_value());
  ASSERT_TRUE(response->has_in_sync()) << "expected in_sync, got a payload";
  EXPECT_EQ(response->in_sync().version(), 1u);
  EXPECT_EQ(server_->hub().counters().updates_written, updates_before);
  // Holding it counts as acknowledged.
  ASSERT_TRUE(WaitFor([&] {
    auto clients = ListClients();
    return clients.clients_size() == 1 &&
           clients.clients(0).certificates(0).acknowledged_version() == 1;
  }));
}

// A client holding another fingerprint gets the full material, even with a higher version.
TEST_F(ServerScenarioTest, ServerWinsOverHigherHeldVersion) {
  StartServer();
  TestSubscriber subscriber(channel_);
  v1::HeldCertificate held;
  held.set_name(kName);
  held.set_version(7);
  held.set_fingerprint(std::string(64, 'a'));
  ASSERT_TRUE(subscriber.SendHello("tenant-a", "pod-1", {held}));
  std::optional<v1::SubscribeResponse> response = subscriber.NextNonHeartbeat();
  ASSERT_TRUE(response.has_value() && response->has_update());
  EXPECT_EQ(response->update().version(), 1u);
}

// ACK and NACK are recorded per client; a NACK is visible in ListClients; stale nonces are ignored.
TEST_F(ServerScenarioTest, NackRecordedAndVisibleInListClients) {
  StartServer();
  TestSubscriber subscriber(channel_);
  v1::CertificateUpdate update = SubscribeFresh(subscriber);
  ASSERT_TRUE(subscriber.SendNack(update, "files", "disk full"));
  ASSERT_TRUE(WaitFor([&] {
    auto clients = ListClients();
    return clients.clients_size() == 1 &&
           clients.clients(0).certificates(0).last_error() == "files: disk full";
  }));
  v1::ClientInfo client = ListClients().clients(0);
  EXPECT_EQ(client.namespace_(), "tenant-a");
  EXPECT_EQ(client.client_id(), "pod-1");
  EXPECT_EQ(client.certificates(0).sent_version(), 1u);
  EXPECT_EQ(client.certificates(0).acknowledged_version(), 0u);
  EXPECT_TRUE(client.connected());

  v1::CertificateUpdate stale = update;
  stale.set_nonce("not-the-latest");
  ASSERT_TRUE(subscriber.SendAck(stale));
  ASSERT_TRUE(WaitFor([&] { return server_->hub().counters().stale_acks == 1; }));
  EXPECT_EQ(ListClients().clients(0).certificates(0).acknowledged_version(), 0u);

  ASSERT_TRUE(subscriber.SendAck(update, "reload hook exited 1"));
  ASSERT_TRUE(WaitFor(
      [&] { return ListClients().clients(0).certificates(0).acknowledged_version() == 1; }));
  client = ListClients().clients(0);
  EXPECT_EQ(client.certificates(0).last_error(), "");
  EXPECT_EQ(client.certificates(0).hook_warning(), "reload hook exited 1");
}

// Versions survive a restart: same number, same fingerprint, no new version.
TEST_F(ServerScenarioTest, RestartKeepsVersions) {
  StartServer();
  Chain next = MakeChain();
  fixtures::WriteKubeletDir(source_dir_, next.material);
  ASSERT_TRUE(WaitFor([&] { return CurrentVersion() == 2; }));
  StopServer();
  StartServer();
  v1::Certificate certificate = GetCertificate();
  EXPECT_EQ(certificate.current().version(), 2u);
  EXPECT_EQ(certificate.current().fingerprint(), next.leaf.fingerprint);
  EXPECT_EQ(certificate.history_size(), 2);
}

// If the source is invalid at start-up, the last good persisted version is served.
TEST_F(ServerScenarioTest, InvalidSourceAtStartServesPersistedVersion) {
  StartServer();
  StopServer();
  Chain other = MakeChain();
  CertificateMaterial broken = chain_.material;
  broken.key_pem = other.material.key_pem;  // key of another certificate
  fixtures::WriteKubeletDir(source_dir_, broken);
  StartServer();
  v1::Certificate certificate = GetCertificate();
  EXPECT_EQ(certificate.current().version(), 1u);
  EXPECT_EQ(certificate.last_rejection().reason(), "key_mismatch");
  TestSubscriber subscriber(channel_);
  EXPECT_EQ(SubscribeFresh(subscriber).fingerprint(), chain_.leaf.fingerprint);
}

// A bad source never replaces the current version; the rejection is counted once and shown.
TEST_F(ServerScenarioTest, BadSourceKeepsLastGoodVersion) {
  StartServer();
  TestSubscriber subscriber(channel_);
  SubscribeFresh(subscriber);
  Chain other = MakeChain();
  CertificateMaterial broken = other.material;
  broken.key_pem = chain_.material.key_pem;
  fixtures::WriteKubeletDir(source_dir_, broken);
  ASSERT_TRUE(WaitFor([&] { return GetCertificate().rejections() == 1; }));
  v1::Certificate certificate = GetCertificate();
  EXPECT_EQ(certificate.current().version(), 1u);
  EXPECT_EQ(certificate.last_rejection().reason(), "key_mismatch");
  EXPECT_THAT(certificate.last_rejection().message(), HasSubstr("certificate \"wildcard\""));
  EXPECT_THAT(certificate.last_rejection().message(), HasSubstr("tls.key"));
  // Nothing was pushed: the next message is at most a heartbeat.
  std::optional<v1::SubscribeResponse> more = subscriber.NextNonHeartbeat(absl::Milliseconds(500));
  EXPECT_FALSE(more.has_value());
  // Removing the source entirely is a rejection too and still keeps version 1.
  ASSERT_TRUE(fs_.RemoveAll(source_dir_).ok());
  ASSERT_TRUE(WaitFor([&] { return GetCertificate().last_rejection().reason() == "missing"; }));
  EXPECT_EQ(CurrentVersion(), 1u);
  // And a good source again is published.
  Chain good = MakeChain();
  fixtures::WriteKubeletDir(source_dir_, good.material);
  ASSERT_TRUE(WaitFor([&] { return CurrentVersion() == 2; }));
}

// A plain directory updated file by file: the half-done state is neither published nor counted
// as a rejection.
TEST_F(ServerScenarioTest, HalfDonePlainDirectoryUpdateIsNotPublishedNorRejected) {
  source_dir_ = tmp_.Join("plain");
  fixtures::WritePlainDir(source_dir_, chain_.material);
  options_.certificates[0].source = source_dir_;
  options_.watcher.confirm_delay = absl::Minutes(10);  // a half-done state must never be judged
  StartServer();
  SourceWatcher& watcher = server_->watcher(kName);
  Chain next = MakeChain();
  CertificateMaterial half = chain_.material;
  half.chain_pem = next.material.chain_pem;  // new certificate, old key
  const int evaluations = watcher.evaluations();
  fixtures::WritePlainDir(source_dir_, half);
  ASSERT_TRUE(WaitFor([&] { return watcher.evaluations() > evaluations; }));
  EXPECT_EQ(CurrentVersion(), 1u);
  fixtures::WritePlainDir(source_dir_, next.material);
  ASSERT_TRUE(WaitFor([&] { return CurrentVersion() == 2; }));
  v1::Certificate certificate = GetCertificate();
  EXPECT_EQ(certificate.rejections(), 0u);
  EXPECT_FALSE(certificate.has_last_rejection());
  EXPECT_EQ(certificate.current().fingerprint(), next.leaf.fingerprint);
}

// Rollback republishes old material as a new, pinned version until the source changes.
TEST_F(ServerScenarioTest, RollbackPinsUntilSourceChanges) {
  StartServer();
  TestSubscriber subscriber(channel_);
  SubscribeFresh(subscriber);
  Chain second = MakeChain();
  fixtures::WriteKubeletDir(source_dir_, second.material);
  std::optional<v1::SubscribeResponse> pushed = subscriber.NextNonHeartbeat();
  ASSERT_TRUE(pushed.has_value() && pushed->update().version() == 2);

  grpc::ClientContext context;
  v1::RollbackRequest request;
  request.set_name(kName);
  request.set_version(1);
  v1::RollbackResponse response;
  grpc::Status status = admin_->Rollback(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.version(), 3u);
  EXPECT_EQ(response.rolled_back_from(), 1u);
  EXPECT_EQ(response.fingerprint(), chain_.leaf.fingerprint);

  pushed = subscriber.NextNonHeartbeat();
  ASSERT_TRUE(pushed.has_value() && pushed->has_update());
  EXPECT_EQ(pushed->update().version(), 3u);
  EXPECT_EQ(pushed->update().fingerprint(), chain_.leaf.fingerprint);
  EXPECT_TRUE(pushed->update().pinned());
  v1::Certificate certificate = GetCertificate();
  EXPECT_TRUE(certificate.pin().pinned());
  EXPECT_EQ(certificate.pin().version(), 3u);
  EXPECT_EQ(certificate.current().origin(), "rollback");

  // The pin survives a restart, and rewriting the same source content does not end it.
  subscriber.CloseSend();
  StopServer();
  StartServer();
  const int evaluations = server_->watcher(kName).evaluations();
  fixtures::WriteKubeletDir(source_dir_, second.material);
  ASSERT_TRUE(WaitFor([&] { return server_->watcher(kName).evaluations() > evaluations; }));
  EXPECT_EQ(CurrentVersion(), 3u);
  EXPECT_TRUE(GetCertificate().pin().pinned());

  // New source content ends the pin.
  Chain third = MakeChain();
  fixtures::WriteKubeletDir(source_dir_, third.material);
  ASSERT_TRUE(WaitFor([&] { return CurrentVersion() == 4; }));
  certificate = GetCertificate();
  EXPECT_FALSE(certificate.pin().pinned());
  EXPECT_EQ(certificate.current().fingerprint(), third.leaf.fingerprint);
}

// Rollback refuses unknown versions, the current version and expired material.
TEST_F(ServerScenarioTest, RollbackRefusesBadRequests) {
  StartServer();
  auto rollback = [&](uint64_t version) {
    grpc::ClientContext context;
    v1::RollbackRequest request;
    request.set_name(kName);
    request.set_version(version);
    v1::RollbackResponse response;
    return admin_->Rollback(&context, request, &response);
  };
  EXPECT_EQ(rollback(1).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(rollback(9).error_code(), grpc::StatusCode::NOT_FOUND);
}

// No inspection response ever contains private key material.
TEST_F(ServerScenarioTest, NoKeyMaterialInInspectionOutput) {
  StartServer();
  TestSubscriber subscriber(channel_);
  v1::CertificateUpdate update = SubscribeFresh(subscriber);
  ASSERT_TRUE(subscriber.SendNack(update, "files", "permission denied"));
  Chain other = MakeChain();
  CertificateMaterial broken = other.material;
  broken.key_pem = chain_.material.key_pem;
  fixtures::WriteKubeletDir(source_dir_, broken);
  ASSERT_TRUE(WaitFor([&] { return GetCertificate().rejections() == 1; }));

  std::string all;
  auto append = [&](const google::protobuf::Message& message) {
    std::string json;
    ASSERT_TRUE(google::protobuf::util::MessageToJsonString(message, &json).ok());
    all += json + message.DebugString();
  };
  append(GetCertificate());
  append(ListClients());
  grpc::ClientContext context;
  v1::ListCertificatesResponse list;
  ASSERT_TRUE(inspection_->ListCertificates(&context, {}, &list).ok());
  append(list);
  EXPECT_THAT(all, HasSubstr(chain_.leaf.fingerprint));  // the output is not empty
  EXPECT_THAT(all, ::testing::Not(HasSubstr("PRIVATE KEY")));
  for (const std::string& key : {std::string(chain_.material.key_pem.reveal()),
                                 std::string(other.material.key_pem.reveal())}) {
    // Any 40-character run of the key's base64 body would be a leak.
    const size_t body = key.find('\n') + 1;
    EXPECT_THAT(all, ::testing::Not(HasSubstr(key.substr(body, 40))));
  }
}

// ListClients pages through large fleets and filters by namespace.
TEST_F(ServerScenarioTest, ListClientsPagesAndFilters) {
  StartServer();
  std::vector<std::unique_ptr<TestSubscriber>> subscribers;
  for (int i = 0; i < 5; ++i) {
    subscribers.push_back(std::make_unique<TestSubscriber>(channel_));
    v1::HeldCertificate held;
    held.set_name(kName);
    ASSERT_TRUE(subscribers.back()->SendHello(i < 3 ? "tenant-a" : "tenant-b",
                                              absl::StrCat("pod-", i), {held}));
    // One at a time, so the connection order (which paging follows) is known.
    ASSERT_TRUE(WaitFor([&] { return ListClients().clients_size() == i + 1; }));
  }
  v1::ListClientsRequest request;
  request.set_page_size(2);
  std::vector<std::string> seen;
  for (int page = 0; page < 5; ++page) {
    v1::ListClientsResponse response = ListClients(request);
    for (const auto& client : response.clients()) seen.push_back(client.client_id());
    if (response.next_page_token().empty()) break;
    request.set_page_token(response.next_page_token());
  }
  EXPECT_THAT(seen, ::testing::ElementsAre("pod-0", "pod-1", "pod-2", "pod-3", "pod-4"));
  v1::ListClientsRequest filtered;
  filtered.set_namespace_("tenant-b");
  EXPECT_EQ(ListClients(filtered).clients_size(), 2);
}

// Malformed input ends only the offending stream, with a clear code and message.
TEST_F(ServerScenarioTest, MalformedInputEndsOnlyThatStream) {
  options_.distribution.hello_timeout = absl::Seconds(2);  // generous: slow machines send late
  StartServer();
  TestSubscriber healthy(channel_);
  SubscribeFresh(healthy, "healthy");

  auto expect_rejected = [&](const v1::SubscribeRequest& request, grpc::StatusCode code,
                             const std::string& text) {
    TestSubscriber bad(channel_);
    bad.Send(request);
    grpc::Status status = bad.Finish();
    EXPECT_EQ(status.error_code(), code) << text << ": " << status.error_message();
    EXPECT_THAT(status.error_message(), HasSubstr(text));
  };
  v1::SubscribeRequest ack_first;
  ack_first.mutable_ack()->set_name(kName);
  expect_rejected(ack_first, grpc::StatusCode::INVALID_ARGUMENT, "first message must be a hello");
  v1::SubscribeRequest empty_ns;
  empty_ns.mutable_hello()->set_client_id("x");
  empty_ns.mutable_hello()->add_certificates()->set_name(kName);
  expect_rejected(empty_ns, grpc::StatusCode::INVALID_ARGUMENT, "empty namespace");
  v1::SubscribeRequest unknown = empty_ns;
  unknown.mutable_hello()->set_namespace_("tenant-a");
  unknown.mutable_hello()->mutable_certificates(0)->set_name("nope");
  expect_rejected(unknown, grpc::StatusCode::NOT_FOUND, "\"nope\" is not distributed");
  v1::SubscribeRequest too_many = unknown;
  too_many.mutable_hello()->clear_certificates();
  for (int i = 0; i < 65; ++i) {
    too_many.mutable_hello()->add_certificates()->set_name(absl::StrCat("c", i));
  }
  expect_rejected(too_many, grpc::StatusCode::INVALID_ARGUMENT, "the limit is 64");
  v1::SubscribeRequest oversized = unknown;
  oversized.mutable_hello()->set_client_id(std::string(100 * 1024, 'x'));
  expect_rejected(oversized, grpc::StatusCode::INVALID_ARGUMENT, "exceeds the limit");
  v1::SubscribeRequest nothing;
  expect_rejected(nothing, grpc::StatusCode::INVALID_ARGUMENT, "hello");

  {  // no hello at all before the deadline
    TestSubscriber silent(channel_);
    grpc::Status status = silent.Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
    EXPECT_THAT(status.error_message(), HasSubstr("no hello"));
  }
  {  // bytes that are not a SubscribeRequest, through the generic (raw bytes) API
    grpc::GenericStub generic(channel_);
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(20)));
    grpc::CompletionQueue cq;
    auto call = generic.PrepareCall(&context, "/certcast.v1.Distribution/Subscribe", &cq);
    void* tag;
    bool ok;
    call->StartCall(reinterpret_cast<void*>(1));
    ASSERT_TRUE(cq.Next(&tag, &ok) && ok);
    const char garbage[] = "\xff\xff\xff\xff\xff";
    grpc::Slice slice(garbage, sizeof(garbage) - 1);
    grpc::ByteBuffer bytes(&slice, 1);
    call->Write(bytes, reinterpret_cast<void*>(2));
    ASSERT_TRUE(cq.Next(&tag, &ok));
    grpc::Status status;
    call->Finish(&status, reinterpret_cast<void*>(3));
    while (cq.Next(&tag, &ok) && tag != reinterpret_cast<void*>(3)) {
    }
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(status.error_message(), HasSubstr("not a valid certcast.v1.SubscribeRequest"));
    cq.Shutdown();
    while (cq.Next(&tag, &ok)) {
    }
  }

  // The healthy stream was untouched and still receives rotations.
  Chain next = MakeChain();
  fixtures::WriteKubeletDir(source_dir_, next.material);
  std::optional<v1::SubscribeResponse> pushed = healthy.NextNonHeartbeat();
  ASSERT_TRUE(pushed.has_value() && pushed->has_update());
  EXPECT_EQ(pushed->update().version(), 2u);
}

// Heartbeats carry the interval and current versions.
TEST_F(ServerScenarioTest, HeartbeatsArriveEveryInterval) {
  options_.distribution.heartbeat_interval = absl::Milliseconds(200);
  StartServer();
  TestSubscriber subscriber(channel_);
  SubscribeFresh(subscriber);
  std::optional<v1::SubscribeResponse> heartbeat = subscriber.Next();
  ASSERT_TRUE(heartbeat.has_value() && heartbeat->has_heartbeat());
  ASSERT_EQ(heartbeat->heartbeat().versions_size(), 1);
  EXPECT_EQ(heartbeat->heartbeat().versions(0).version(), 1u);
  EXPECT_EQ(heartbeat->heartbeat().versions(0).fingerprint(), chain_.leaf.fingerprint);
}

// Health is NOT_SERVING until every certificate has a valid version, on gRPC and on /readyz.
TEST_F(ServerScenarioTest, HealthFollowsReadiness) {
  ASSERT_TRUE(fs_.RemoveAll(source_dir_).ok());
  options_.health_listen = "127.0.0.1:0";
  StartServer();
  auto health = [&] {
    grpc::GenericStub generic(channel_);
    grpc::ClientContext context;
    // grpc.health.v1.HealthCheckRequest{} is the empty message.
    grpc::ByteBuffer request;
    grpc::Slice empty("", 0);
    request = grpc::ByteBuffer(&empty, 1);
    grpc::CompletionQueue cq;
    grpc::ByteBuffer response;
    grpc::Status status;
    std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
        generic.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &cq);
    call->StartCall();
    call->Finish(&response, &status, reinterpret_cast<void*>(1));
    void* tag;
    bool ok;
    cq.Next(&tag, &ok);
    std::vector<grpc::Slice> slices;
    response.Dump(&slices);
    std::string bytes;
    for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    // HealthCheckResponse{status=1 SERVING} is 08 01; NOT_SERVING is 08 02.
    return bytes == std::string("\x08\x01", 2) ? std::string("SERVING")
                                               : std::string("NOT_SERVING");
  };
  EXPECT_EQ(health(), "NOT_SERVING");
  const int http = server_->health_port();
  std::string body;
  EXPECT_EQ(scenario::HttpGet(http, "/healthz"), 200);
  EXPECT_EQ(scenario::HttpGet(http, "/readyz", &body), 503);
  EXPECT_THAT(body, HasSubstr("no valid version yet for: wildcard"));
  EXPECT_EQ(scenario::HttpGet(http, "/other"), 404);
  fixtures::WriteKubeletDir(source_dir_, chain_.material);
  ASSERT_TRUE(WaitFor([&] { return health() == "SERVING"; }));
  EXPECT_EQ(scenario::HttpGet(http, "/readyz"), 200);
}

}  // namespace
}  // namespace certcast
