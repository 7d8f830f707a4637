// ClientMetrics exports a Session's state and counters in the Prometheus format, computed at
// scrape time from the session (nothing is counted twice). Labels are bounded: the requested
// certificate names and the sink names.
//
// Thread-safe (Collect runs on the metrics endpoint's threads). Does not own `session`; it must
// outlive the scrapes (stop the endpoint first).
#ifndef CERTCAST_CLIENT_METRICS_H_
#define CERTCAST_CLIENT_METRICS_H_

#include <vector>

#include "client/session.h"
#include "client/shared_writer.h"
#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"

namespace certcast {

class ClientMetrics final : public prometheus::Collectable {
 public:
  explicit ClientMetrics(Session* session) : session_(session) {}

  // certcast_build_info; per certificate: certcast_client_applied_version,
  // certcast_client_not_after_seconds and certcast_client_last_apply_timestamp_seconds (when
  // known), certcast_client_apply_failures_total{sink}, certcast_client_hook_failures_total,
  // certcast_client_serving_verified, certcast_client_serving_failures_total; and
  // certcast_client_reconnects_total, certcast_client_heartbeat_misses_total,
  // certcast_client_connected and certcast_client_last_server_message_timestamp_seconds.
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  Session* const session_;
};

// WriterMetrics exports a SharedWriter's state (aggregated: one series each, whatever the number
// of namespaces; the server's fleet view and ListNamespaces have the per-namespace rows).
// Thread-safe. Does not own `writer`; it must outlive the scrapes.
class WriterMetrics final : public prometheus::Collectable {
 public:
  explicit WriterMetrics(SharedWriter* writer) : writer_(writer) {}

  // certcast_build_info, certcast_writer_leader, certcast_writer_namespaces,
  // certcast_writer_namespaces_connected, certcast_writer_namespaces_not_ready.
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  SharedWriter* const writer_;
};

}  // namespace certcast

#endif  // CERTCAST_CLIENT_METRICS_H_
