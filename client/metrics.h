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

}  // namespace certcast

#endif  // CERTCAST_CLIENT_METRICS_H_
