#include "server/metrics.h"

#include <memory>
#include <sstream>
#include <string>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "metrics/families.h"
#include "prometheus/text_serializer.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/fixtures/fake_source.h"
#include "tests/fixtures/fake_filesystem.h"
#include "tests/fixtures/metrics_text.h"

namespace certcast {
namespace {

using ::certcast::fixtures::FakeSource;

using ::certcast::fixtures::Chain;
using ::certcast::fixtures::FakeFilesystem;
using ::certcast::fixtures::MakeChain;
using ::certcast::fixtures::MetricLabels;
using ::certcast::fixtures::MetricSamples;

const MetricLabels kWildcard = {{"certificate", "wildcard"}};

// Real Publisher, Fleet, hub and authorizer over fakes (filesystem, clock, source); the test
// drives them and reads what ServerMetrics collects, through the text format.
class ServerMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs_.AddDir("/state", 0700);
    auto store = FileVersionStore::Open(&fs_, "/state");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    publisher_ = std::make_unique<Publisher>(store_.get(), &clock_, &hub_);
    auto source = std::make_unique<FakeSource>();
    source_ = source.get();
    CertificateSpec spec;
    spec.name = "wildcard";
    spec.source = std::move(source);
    ASSERT_TRUE(publisher_->AddCertificate(std::move(spec)).ok());
    metrics_ = std::make_unique<ServerMetrics>(publisher_.get(), &fleet_, &hub_, &authorizer_);
  }

  std::string Scrape() {
    std::ostringstream out;
    prometheus::TextSerializer().Serialize(out, metrics_->Collect());
    return out.str();
  }
  double Value(const std::string& name, const MetricLabels& labels = kWildcard) {
    return fixtures::MetricValue(Scrape(), name, labels).value_or(-1);
  }

  uint64_t ConnectClient(const std::string& ns) {
    ClientRecord record;
    record.namespace_ = ns;
    record.client_id = "pod";
    record.certificates.emplace_back();
    record.certificates.back().name = "wildcard";
    return fleet_.Connect(std::move(record));
  }

  FakeFilesystem fs_;
  FakeClock clock_{absl::Now()};
  std::unique_ptr<VersionStore> store_;
  Fleet fleet_{&clock_, absl::Hours(1)};
  PolicyAuthorizer authorizer_{nullptr};
  DistributionHub hub_{{"wildcard"}, DistributionHub::Options(), &fleet_, &authorizer_};
  std::unique_ptr<Publisher> publisher_;
  FakeSource* source_ = nullptr;
  std::unique_ptr<ServerMetrics> metrics_;
};

// Before any version: version 0, no expiry sample, source absent, and the build info.
TEST_F(ServerMetricsTest, CertificateWithoutVersion) {
  const std::string text = Scrape();
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_certificate_version", kWildcard), 0);
  EXPECT_EQ(MetricSamples(text, "certcast_certificate_not_after_seconds"), 0);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_source_present", kWildcard), 0);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_clients_connected", kWildcard), 0);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_build_info",
                                  {{"version", std::string(metrics::BuildVersion())},
                                   {"commit", std::string(metrics::BuildCommit())}}),
            1);
}

// Publications move the version gauge, the expiry and publications_total; rejections are
// counted by reason; a vanished source reads 0 while the version stays.
TEST_F(ServerMetricsTest, SourceStateFollowsThePublisher) {
  Chain first = MakeChain();
  source_->Set(first.material);
  publisher_->Evaluate("wildcard", true);
  EXPECT_EQ(Value("certcast_certificate_version"), 1);
  EXPECT_EQ(Value("certcast_publications_total"), 1);
  EXPECT_EQ(Value("certcast_source_present"), 1);
  EXPECT_EQ(Value("certcast_certificate_pinned"), 0);
  EXPECT_EQ(
      Value("certcast_certificate_not_after_seconds"),
      static_cast<double>(absl::ToUnixSeconds(publisher_->Current("wildcard")->info.not_after)));

  CertificateMaterial mismatched = MakeChain().material;
  mismatched.key_pem = first.material.key_pem;
  source_->Set(mismatched);
  publisher_->Evaluate("wildcard", true);
  EXPECT_EQ(Value("certcast_source_rejections_total",
                  {{"certificate", "wildcard"}, {"reason", "key_mismatch"}}),
            1);
  EXPECT_EQ(Value("certcast_source_present"), 1) << "an invalid source was still read";

  source_->Set(WithReason(absl::NotFoundError("source directory /x does not exist"), "missing"));
  publisher_->Evaluate("wildcard", true);
  EXPECT_EQ(Value("certcast_source_present"), 0);
  EXPECT_EQ(Value("certcast_source_rejections_total",
                  {{"certificate", "wildcard"}, {"reason", "missing"}}),
            1);
  EXPECT_EQ(Value("certcast_certificate_version"), 1) << "the last good version is still served";

  source_->Set(MakeChain().material);
  publisher_->Evaluate("wildcard", true);
  EXPECT_EQ(Value("certcast_source_present"), 1);
  EXPECT_EQ(Value("certcast_certificate_version"), 2);
  ASSERT_TRUE(publisher_->Rollback("wildcard", 1).ok());
  EXPECT_EQ(Value("certcast_certificate_pinned"), 1);
  EXPECT_EQ(Value("certcast_publications_total"), 3);
}

// Fleet gauges count connected clients only; ACKs feed acks_total and the latency histogram,
// NACKs are counted by reason, and the oldest unacknowledged push ages with the clock.
TEST_F(ServerMetricsTest, FleetStateAndAcknowledgements) {
  source_->Set(MakeChain().material);
  publisher_->Evaluate("wildcard", true);
  const uint64_t a = ConnectClient("tenant-a");
  const uint64_t b = ConnectClient("tenant-b");
  const uint64_t gone = ConnectClient("tenant-c");
  fleet_.Disconnect(gone);
  fleet_.RecordSent(a, "wildcard", 1, "n1", false);
  fleet_.RecordSent(b, "wildcard", 1, "n1", false);
  clock_.Advance(absl::Seconds(3));
  EXPECT_EQ(Value("certcast_clients_connected"), 2);
  EXPECT_EQ(Value("certcast_clients_behind"), 2);
  EXPECT_EQ(Value("certcast_oldest_unacked_push_age_seconds"), 3);

  ASSERT_EQ(fleet_.RecordAck(a, "wildcard", 1, "n1", ""), AckOutcome::kRecorded);
  ASSERT_EQ(fleet_.RecordNack(b, "wildcard", 1, "n1", "validation: bad", "validation"),
            AckOutcome::kRecorded);
  clock_.Advance(absl::Seconds(2));
  std::string text = Scrape();
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_acks_total", kWildcard), 1);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_nacks_total",
                                  {{"certificate", "wildcard"}, {"reason", "validation"}}),
            1);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_clients_behind", kWildcard), 1);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_oldest_unacked_push_age_seconds", kWildcard), 5)
      << "a NACKed push is still unacknowledged";
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_push_to_ack_seconds_bucket",
                                  {{"certificate", "wildcard"}, {"le", "2.5"}}),
            0);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_push_to_ack_seconds_bucket",
                                  {{"certificate", "wildcard"}, {"le", "5"}}),
            1);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_push_to_ack_seconds_sum", kWildcard), 3);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_push_to_ack_seconds_count", kWildcard), 1);

  fleet_.RecordSent(b, "wildcard", 1, "n2", false);
  fleet_.RecordAck(b, "wildcard", 1, "n2", "on-update: exit status 1");
  text = Scrape();
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_clients_behind", kWildcard), 0);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_oldest_unacked_push_age_seconds", kWildcard), 0);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_hook_warnings_total", kWildcard), 1);
  EXPECT_EQ(fixtures::MetricValue(text, "certcast_acks_total", kWildcard), 2);

  // A client that already held the version counts as acknowledged, without an ACK.
  const uint64_t in_sync = ConnectClient("tenant-d");
  fleet_.RecordSent(in_sync, "wildcard", 1, "n1", /*in_sync=*/true);
  EXPECT_EQ(Value("certcast_clients_behind"), 0);
  EXPECT_EQ(Value("certcast_push_to_ack_seconds_count"), 2);
}

// Authorizer denials are exported by reason.
TEST_F(ServerMetricsTest, DenialsByReason) {
  PeerIdentity nobody;
  nobody.peer = "ipv4:127.0.0.1:1";
  const absl::Status denied = authorizer_.AuthorizeSubscribe(nobody, "tenant-a", "wildcard");
  ASSERT_FALSE(denied.ok());
  authorizer_.Audit(nobody, "Subscribe", "wildcard", denied);
  authorizer_.Audit(nobody, "Subscribe", "wildcard", denied);
  EXPECT_EQ(Value("certcast_auth_denials_total", {{"reason", "unauthenticated"}}), 2);
  EXPECT_EQ(MetricSamples(Scrape(), "certcast_stream_errors_total"), 0);
}

}  // namespace
}  // namespace certcast
