#include "client/metrics.h"

#include <memory>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "metrics/families.h"
#include "prometheus/text_serializer.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/fixtures/fake_filesystem.h"
#include "tests/fixtures/metrics_text.h"

namespace certcast {
namespace {

using ::certcast::fixtures::Chain;
using ::certcast::fixtures::FakeFilesystem;
using ::certcast::fixtures::MakeChain;
using ::certcast::fixtures::MetricLabels;

const MetricLabels kWildcard = {{"certificate", "wildcard"}};

// An in-memory sink named "files" that fails its next `fail_next` applies.
class MemorySink final : public Sink {
 public:
  std::string name() const override { return "files"; }
  absl::StatusOr<ApplyResult> Apply(const VersionedMaterial& version) override {
    absl::MutexLock lock(&mu_);
    if (fail_next_ > 0) {
      --fail_next_;
      return absl::UnavailableError("disk unavailable");
    }
    fingerprint_ = version.fingerprint;
    return ApplyResult::kWritten;
  }
  absl::StatusOr<std::string> HeldFingerprint(const std::string&) override {
    absl::MutexLock lock(&mu_);
    if (fingerprint_.empty()) return absl::NotFoundError("nothing held");
    return fingerprint_;
  }
  absl::Status Remove(const std::string&) override { return absl::OkStatus(); }
  std::string LocationOf(const std::string&) const override { return ""; }
  void FailNext(int times) {
    absl::MutexLock lock(&mu_);
    fail_next_ = times;
  }

 private:
  absl::Mutex mu_;
  int fail_next_ ABSL_GUARDED_BY(mu_) = 0;
  std::string fingerprint_ ABSL_GUARDED_BY(mu_);
};

class FailingHook final : public Hook {
 public:
  std::string name() const override { return "on-update"; }
  absl::Status Run(const HookContext&) override { return absl::InternalError("exit status 1"); }
};

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

// Sends version 1, waits until it is acknowledged, then sends `refused` and waits for its NACK.
class TwoStepServer final : public v1::Distribution::Service {
 public:
  TwoStepServer(v1::SubscribeResponse good, v1::SubscribeResponse refused)
      : good_(std::move(good)), refused_(std::move(refused)) {}

  grpc::Status Subscribe(
      grpc::ServerContext* context,
      grpc::ServerReaderWriter<v1::SubscribeResponse, v1::SubscribeRequest>* stream) override {
    v1::SubscribeRequest request;
    if (!stream->Read(&request) || !request.has_hello()) return grpc::Status::CANCELLED;
    v1::SubscribeResponse heartbeat;
    heartbeat.mutable_heartbeat()->set_interval_seconds(30);
    stream->Write(heartbeat);
    stream->Write(good_);
    while (stream->Read(&request) && !request.has_ack()) {
    }
    stream->Write(refused_);
    while (stream->Read(&request) && !request.has_nack()) {
    }
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
    }
    while (!context->IsCancelled() && stream->Read(&request)) {
    }
    return grpc::Status::OK;
  }
  bool done() {
    absl::MutexLock lock(&mu_);
    return done_;
  }

 private:
  const v1::SubscribeResponse good_;
  const v1::SubscribeResponse refused_;
  absl::Mutex mu_;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

std::string Scrape(const ClientMetrics& metrics) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, metrics.Collect());
  return out.str();
}

// Before anything is received: version 0, no expiry or apply time, zero counters.
TEST(ClientMetricsTest, NothingHeldYet) {
  FakeFilesystem fs;
  ClientStateStore store(&fs, "/state");
  ASSERT_TRUE(store.Init().ok());
  CredentialsProvider credentials(&fs, {true, "", "", "", ""});
  FakeClock clock;
  MemorySink sink;
  SessionOptions options;
  options.server = "127.0.0.1:1";
  options.certificates = {"wildcard"};
  Session session(options, {&sink}, {}, &store, &credentials, &clock);
  session.Init();
  ClientMetrics metrics(&session);
  const std::string text = Scrape(metrics);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_client_applied_version", kWildcard), 0);
  EXPECT_EQ(fixtures::MetricSamples(text, "certcast_client_not_after_seconds"), 0);
  EXPECT_EQ(fixtures::MetricSamples(text, "certcast_client_last_apply_timestamp_seconds"), 0);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_client_hook_failures_total", kWildcard), 0);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_client_reconnects_total"), 0);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_client_heartbeat_misses_total"), 0);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_build_info",
                                  {{"version", std::string(metrics::BuildVersion())},
                                   {"commit", std::string(metrics::BuildCommit())}}),
            1);
}

// A sink failure, its successful retry, a failing hook and refused material show up per
// certificate and per sink; the applied version, its expiry and the apply time follow.
TEST(ClientMetricsTest, AppliesAndFailuresFollowTheSession) {
  Chain good = MakeChain();
  Chain other = MakeChain();
  TwoStepServer service(Update(1, good, std::string(good.material.key_pem.reveal())),
                        Update(2, other, std::string(good.material.key_pem.reveal())));
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(port, 0);

  FakeFilesystem fs;
  ClientStateStore store(&fs, "/state");
  ASSERT_TRUE(store.Init().ok());
  CredentialsProvider credentials(&fs, {true, "", "", "", ""});
  ASSERT_TRUE(credentials.Reload().ok());
  FakeClock clock(absl::FromUnixSeconds(absl::ToUnixSeconds(absl::Now())));
  MemorySink sink;
  sink.FailNext(1);
  FailingHook hook;
  SessionOptions options;
  options.server = absl::StrCat("127.0.0.1:", port);
  options.namespace_ = "tenant-a";
  options.client_id = "pod";
  options.certificates = {"wildcard"};
  options.retry = {absl::Milliseconds(10), absl::Milliseconds(10), 1.0, 0};
  Session session(options, {&sink}, {&hook}, &store, &credentials, &clock);
  session.Init();
  ClientMetrics metrics(&session);
  std::thread runner([&session] { session.Run(); });

  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (!service.done() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
  session.Stop();
  runner.join();
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  ASSERT_TRUE(service.done());

  const std::string text = Scrape(metrics);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_client_applied_version", kWildcard), 1) << text;
  ValidationOptions validation;
  validation.now = absl::Now();
  absl::StatusOr<CertificateInfo> info = ValidateMaterial("wildcard", good.material, validation);
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_client_not_after_seconds", kWildcard),
            static_cast<double>(absl::ToUnixSeconds(info->not_after)));
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_client_last_apply_timestamp_seconds", kWildcard),
            static_cast<double>(absl::ToUnixSeconds(clock.Now())));
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_client_apply_failures_total",
                                  {{"certificate", "wildcard"}, {"sink", "files"}}),
            1);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_client_apply_failures_total",
                                  {{"certificate", "wildcard"}, {"sink", "validation"}}),
            1);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_client_hook_failures_total", kWildcard), 1);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_client_reconnects_total"), 0);
}

}  // namespace
}  // namespace certcast
