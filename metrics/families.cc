#include "metrics/families.h"

#include <limits>
#include <utility>

namespace certcast::metrics {

std::string_view BuildVersion() { return CERTCAST_VERSION; }

std::string_view BuildCommit() { return CERTCAST_GIT_COMMIT; }

prometheus::MetricFamily BuildInfo() {
  prometheus::MetricFamily family =
      Family("certcast_build_info",
             "Always 1; the labels name the certcast release and the commit it was built from.",
             prometheus::MetricType::Gauge);
  AddSample(family,
            {{"version", std::string(BuildVersion())}, {"commit", std::string(BuildCommit())}}, 1);
  return family;
}

prometheus::MetricFamily Family(std::string name, std::string help, prometheus::MetricType type) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = type;
  return family;
}

void AddSample(prometheus::MetricFamily& family, Labels labels, double value) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  if (family.type == prometheus::MetricType::Counter) {
    metric.counter.value = value;
  } else if (family.type == prometheus::MetricType::Gauge) {
    metric.gauge.value = value;
  } else {
    metric.untyped.value = value;
  }
  family.metric.push_back(std::move(metric));
}

void AddHistogram(prometheus::MetricFamily& family, Labels labels,
                  const std::vector<double>& bounds, const std::vector<uint64_t>& counts,
                  double sum) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds.size(); ++i) {
    cumulative += i < counts.size() ? counts[i] : 0;
    const double bound = i < bounds.size() ? bounds[i] : std::numeric_limits<double>::infinity();
    metric.histogram.bucket.push_back({cumulative, bound});
  }
  metric.histogram.sample_count = cumulative;
  metric.histogram.sample_sum = sum;
  family.metric.push_back(std::move(metric));
}

}  // namespace certcast::metrics
