// Helpers to build Prometheus metric families at scrape time, for the prometheus::Collectable
// implementations of the server and the client. Values come from the components' own counters
// and state, so nothing is counted twice.
//
// The rule of this folder: it depends on prometheus-cpp and abseil only and knows no certcast
// component. Names follow Prometheus conventions: certcast_ prefix, base units (_seconds,
// Unix-time gauges as _timestamp_seconds or _not_after_seconds), counters end in _total. Label
// values must come from bounded sets (certificate names, reasons, sinks, status codes).
// Stateless functions; thread-safe.
#ifndef CERTCAST_METRICS_FAMILIES_H_
#define CERTCAST_METRICS_FAMILIES_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "prometheus/client_metric.h"
#include "prometheus/metric_family.h"
#include "prometheus/metric_type.h"

namespace certcast::metrics {

using Labels = std::vector<prometheus::ClientMetric::Label>;

// The version of this build: the CMake project version.
std::string_view BuildVersion();

// The git commit this build comes from (`git describe --always --dirty`), "unknown" outside a
// git checkout.
std::string_view BuildCommit();

// certcast_build_info{version="...",commit="..."} 1.
prometheus::MetricFamily BuildInfo();

// An empty family. `type` is Counter, Gauge or Histogram.
prometheus::MetricFamily Family(std::string name, std::string help, prometheus::MetricType type);

// Appends a sample to a counter or gauge family.
void AddSample(prometheus::MetricFamily& family, Labels labels, double value);

// Appends a histogram sample. `counts[i]` is the number of observations in bucket i (not
// cumulative): `counts` has one entry per upper bound in `bounds`, plus one for +Inf.
void AddHistogram(prometheus::MetricFamily& family, Labels labels,
                  const std::vector<double>& bounds, const std::vector<uint64_t>& counts,
                  double sum);

}  // namespace certcast::metrics

#endif  // CERTCAST_METRICS_FAMILIES_H_
