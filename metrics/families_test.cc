#include "metrics/families.h"

#include <sstream>

#include "gtest/gtest.h"
#include "prometheus/text_serializer.h"
#include "tests/fixtures/metrics_text.h"

namespace certcast::metrics {
namespace {

using ::certcast::fixtures::MetricSamples;
using ::certcast::fixtures::MetricValue;

std::string Text(const std::vector<prometheus::MetricFamily>& families) {
  std::ostringstream out;
  prometheus::TextSerializer().Serialize(out, families);
  return out.str();
}

// Counters and gauges keep their names and exact label sets in the text format.
TEST(FamiliesTest, CountersAndGaugesKeepNamesAndLabels) {
  prometheus::MetricFamily acks =
      Family("certcast_acks_total", "ACKs.", prometheus::MetricType::Counter);
  AddSample(acks, {{"certificate", "wildcard"}}, 3);
  AddSample(acks, {{"certificate", "other"}}, 0);
  prometheus::MetricFamily version =
      Family("certcast_certificate_version", "Version.", prometheus::MetricType::Gauge);
  AddSample(version, {{"certificate", "wildcard"}}, 7);
  const std::string text = Text({acks, version});
  EXPECT_EQ(MetricValue(text, "certcast_acks_total", {{"certificate", "wildcard"}}), 3);
  EXPECT_EQ(MetricValue(text, "certcast_acks_total", {{"certificate", "other"}}), 0);
  EXPECT_EQ(MetricValue(text, "certcast_certificate_version", {{"certificate", "wildcard"}}), 7);
  EXPECT_FALSE(MetricValue(text, "certcast_certificate_version").has_value());
  EXPECT_NE(text.find("# TYPE certcast_acks_total counter"), std::string::npos);
}

// Histogram buckets are exported cumulatively, with +Inf, count and sum.
TEST(FamiliesTest, HistogramBucketsAreCumulative) {
  prometheus::MetricFamily latency =
      Family("certcast_push_to_ack_seconds", "Latency.", prometheus::MetricType::Histogram);
  AddHistogram(latency, {{"certificate", "wildcard"}}, {0.1, 1}, {2, 0, 1}, 12.5);
  const std::string text = Text({latency});
  EXPECT_EQ(MetricValue(text, "certcast_push_to_ack_seconds_bucket",
                        {{"certificate", "wildcard"}, {"le", "0.1"}}),
            2);
  EXPECT_EQ(MetricValue(text, "certcast_push_to_ack_seconds_bucket",
                        {{"certificate", "wildcard"}, {"le", "1"}}),
            2);
  EXPECT_EQ(MetricValue(text, "certcast_push_to_ack_seconds_bucket",
                        {{"certificate", "wildcard"}, {"le", "+Inf"}}),
            3);
  EXPECT_EQ(MetricValue(text, "certcast_push_to_ack_seconds_count", {{"certificate", "wildcard"}}),
            3);
  EXPECT_EQ(MetricValue(text, "certcast_push_to_ack_seconds_sum", {{"certificate", "wildcard"}}),
            12.5);
}

// Build info names the CMake project version.
TEST(FamiliesTest, BuildInfoNamesTheVersion) {
  ASSERT_FALSE(BuildVersion().empty());
  ASSERT_FALSE(BuildCommit().empty());
  const std::string text = Text({BuildInfo()});
  EXPECT_EQ(MetricValue(
                text, "certcast_build_info",
                {{"version", std::string(BuildVersion())}, {"commit", std::string(BuildCommit())}}),
            1);
  EXPECT_EQ(MetricSamples(text, "certcast_build_info"), 1);
}

}  // namespace
}  // namespace certcast::metrics
