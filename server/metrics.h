// ServerMetrics exports the server's state and counters in the Prometheus format. Everything is
// computed at scrape time from the components' own state (Publisher snapshots, Fleet statistics,
// hub and audit counters), so nothing is counted twice. Labels are bounded: certificate names,
// reasons, status codes; never client ids or versions.
//
// Thread-safe (Collect runs on the metrics endpoint's threads). Does not own what it reads; all
// of it must outlive the scrapes (stop the endpoint first).
#ifndef CERTCAST_SERVER_METRICS_H_
#define CERTCAST_SERVER_METRICS_H_

#include <vector>

#include "prometheus/collectable.h"
#include "prometheus/metric_family.h"
#include "server/authorizer.h"
#include "server/coverage.h"
#include "server/distribution.h"
#include "server/fleet.h"
#include "server/publisher.h"
#include "server/rollout.h"

namespace certcast {

class Listener;

class ServerMetrics final : public prometheus::Collectable {
 public:
  // `coverage` may be null (no namespace watch): certcast_namespaces_missing is then absent.
  // `rollout` may be null (no staged rollouts).
  ServerMetrics(const Publisher* publisher, Fleet* fleet, DistributionHub* hub,
                Authorizer* authorizer, const Coverage* coverage = nullptr,
                RolloutController* rollout = nullptr, const Listener* listener = nullptr)
      : publisher_(publisher),
        fleet_(fleet),
        hub_(hub),
        authorizer_(authorizer),
        coverage_(coverage),
        rollout_(rollout),
        listener_(listener) {}

  // certcast_build_info, per certificate: certificate_version, certificate_not_after_seconds,
  // certificate_pinned, source_present, source_rejections_total{reason}, publications_total,
  // clients_connected, clients_behind, oldest_unacked_push_age_seconds, acks_total,
  // nacks_total{reason}, hook_warnings_total, push_to_ack_seconds (histogram); and
  // clients_serving_verified, clients_waiting_for_rollout, rollout_in_progress, rollout_halted,
  // rollout_wave, rollout_waves; stream_errors_total{code}, auth_denials_total{reason};
  // namespaces_missing (with a namespace watch); accept_pauses_total (with a listener).
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const Publisher* const publisher_;
  Fleet* const fleet_;
  DistributionHub* const hub_;
  Authorizer* const authorizer_;
  const Coverage* const coverage_;
  RolloutController* const rollout_;
  const Listener* const listener_;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_METRICS_H_
