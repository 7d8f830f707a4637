#include "client/metrics.h"

#include <map>
#include <string>

#include "absl/time/time.h"
#include "metrics/families.h"

namespace certcast {

using metrics::AddSample;
using metrics::Family;
using prometheus::MetricType;

std::vector<prometheus::MetricFamily> ClientMetrics::Collect() const {
  const SessionCounters counters = session_->counters();
  const std::map<std::string, AppliedCertificate> applied = session_->applied();

  auto version = Family("certcast_client_applied_version",
                        "Version the sinks hold (0: nothing yet).", MetricType::Gauge);
  auto not_after =
      Family("certcast_client_not_after_seconds",
             "Expiry (Unix time) of the leaf certificate the sinks hold.", MetricType::Gauge);
  auto last_apply =
      Family("certcast_client_last_apply_timestamp_seconds",
             "When a version was last applied to every sink (Unix time).", MetricType::Gauge);
  auto apply_failures = Family("certcast_client_apply_failures_total",
                               "Failed applies by sink (validation: the material was refused); "
                               "each retry counts.",
                               MetricType::Counter);
  auto hook_failures = Family("certcast_client_hook_failures_total",
                              "Hooks that failed after an applied version.", MetricType::Counter);
  auto serving_verified =
      Family("certcast_client_serving_verified",
             "1 when every --verify endpoint was seen serving the held version, else 0.",
             MetricType::Gauge);
  auto serving_failures = Family("certcast_client_serving_failures_total",
                                 "Versions NACKed because a --verify endpoint did not serve them "
                                 "within --verify-timeout.",
                                 MetricType::Counter);
  for (const auto& [name, certificate] : applied) {
    const metrics::Labels labels = {{"certificate", name}};
    AddSample(version, labels, static_cast<double>(certificate.version));
    if (certificate.not_after != absl::InfinitePast()) {
      AddSample(not_after, labels, static_cast<double>(absl::ToUnixSeconds(certificate.not_after)));
    }
    if (certificate.applied_at != absl::InfinitePast()) {
      AddSample(last_apply, labels,
                absl::ToDoubleSeconds(certificate.applied_at - absl::UnixEpoch()));
    }
    if (auto failures = counters.apply_failures_by_sink.find(name);
        failures != counters.apply_failures_by_sink.end()) {
      for (const auto& [sink, count] : failures->second) {
        AddSample(apply_failures, {{"certificate", name}, {"sink", sink}},
                  static_cast<double>(count));
      }
    }
    AddSample(serving_verified, labels, certificate.serving_verified ? 1 : 0);
    auto serving = counters.serving_failures_by_certificate.find(name);
    AddSample(serving_failures, labels,
              serving == counters.serving_failures_by_certificate.end()
                  ? 0
                  : static_cast<double>(serving->second));
    auto hooks = counters.hook_failures_by_certificate.find(name);
    AddSample(hook_failures, labels,
              hooks == counters.hook_failures_by_certificate.end()
                  ? 0
                  : static_cast<double>(hooks->second));
  }
  auto reconnects = Family("certcast_client_reconnects_total",
                           "Connection attempts after the first.", MetricType::Counter);
  AddSample(reconnects, {}, static_cast<double>(counters.reconnects));
  auto heartbeat_misses =
      Family("certcast_client_heartbeat_misses_total",
             "Streams given up because no message arrived within two heartbeat intervals.",
             MetricType::Counter);
  AddSample(heartbeat_misses, {}, static_cast<double>(counters.heartbeat_misses));

  const StreamLiveness liveness = session_->liveness();
  auto connected = Family("certcast_client_connected",
                          "1 while the stream to the server is up (a message arrived on it and it "
                          "has not ended), else 0.",
                          MetricType::Gauge);
  AddSample(connected, {}, liveness.connected ? 1 : 0);
  auto last_message =
      Family("certcast_client_last_server_message_timestamp_seconds",
             "When the server was last heard from (any message, heartbeats included; Unix time). "
             "Absent until the first message.",
             MetricType::Gauge);
  if (liveness.last_message_at != absl::InfinitePast()) {
    AddSample(last_message, {},
              absl::ToDoubleSeconds(liveness.last_message_at - absl::UnixEpoch()));
  }

  return {metrics::BuildInfo(),        std::move(version),          std::move(not_after),
          std::move(last_apply),       std::move(apply_failures),   std::move(hook_failures),
          std::move(reconnects),       std::move(heartbeat_misses), std::move(serving_verified),
          std::move(serving_failures), std::move(connected),        std::move(last_message)};
}

std::vector<prometheus::MetricFamily> WriterMetrics::Collect() const {
  const std::vector<WriterNamespaceStatus> namespaces = writer_->Namespaces();
  double connected_count = 0;
  double not_ready_count = 0;
  for (const WriterNamespaceStatus& status : namespaces) {
    if (status.liveness.connected) ++connected_count;
    if (!status.ready) ++not_ready_count;
  }
  auto leader = Family("certcast_writer_leader",
                       "1 while this shared-writer replica holds the Lease and writes, else 0.",
                       MetricType::Gauge);
  AddSample(leader, {}, writer_->leading() ? 1 : 0);
  auto total = Family("certcast_writer_namespaces",
                      "Namespaces this replica writes into (the server's list; 0 on the standby).",
                      MetricType::Gauge);
  AddSample(total, {}, static_cast<double>(namespaces.size()));
  auto connected = Family("certcast_writer_namespaces_connected",
                          "Namespaces whose stream to the server is up.", MetricType::Gauge);
  AddSample(connected, {}, connected_count);
  auto not_ready =
      Family("certcast_writer_namespaces_not_ready",
             "Namespaces whose Secret does not hold the newest version received (NACKed, e.g. "
             "no RoleBinding yet, or still being written).",
             MetricType::Gauge);
  AddSample(not_ready, {}, not_ready_count);
  return {metrics::BuildInfo(), std::move(leader), std::move(total), std::move(connected),
          std::move(not_ready)};
}

}  // namespace certcast
