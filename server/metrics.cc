#include "server/metrics.h"

#include <map>
#include <optional>
#include <string>

#include "absl/time/time.h"
#include "metrics/families.h"
#include "server/listener.h"

namespace certcast {

using metrics::AddHistogram;
using metrics::AddSample;
using metrics::Family;
using prometheus::MetricType;

std::vector<prometheus::MetricFamily> ServerMetrics::Collect() const {
  std::vector<CertificateSnapshot> snapshots;
  std::map<std::string, uint64_t> current;
  for (const std::string& name : publisher_->Names()) {
    std::optional<CertificateSnapshot> snapshot = publisher_->Snapshot(name);
    if (!snapshot.has_value()) continue;
    current[name] = snapshot->current.has_value() ? snapshot->current->version : 0;
    snapshots.push_back(*std::move(snapshot));
  }
  // Clients a rollout holds back run the version they should: waiting, not behind.
  const std::map<std::string, CertificateFleetStats> fleet =
      fleet_->Stats(current, rollout_ != nullptr ? rollout_->ExpectedVersions() : nullptr);
  const std::map<std::string, RolloutController::Status> rollouts =
      rollout_ != nullptr ? rollout_->Statuses()
                          : std::map<std::string, RolloutController::Status>();

  auto version = Family("certcast_certificate_version",
                        "Current version of the certificate (0: none yet).", MetricType::Gauge);
  auto not_after =
      Family("certcast_certificate_not_after_seconds",
             "Expiry (Unix time) of the current version's leaf certificate.", MetricType::Gauge);
  auto pinned = Family("certcast_certificate_pinned",
                       "1 while the current version is pinned by a rollback.", MetricType::Gauge);
  auto present =
      Family("certcast_source_present",
             "1 when the last read of the certificate's source succeeded.", MetricType::Gauge);
  auto rejections =
      Family("certcast_source_rejections_total",
             "Source contents refused (invalid or missing), by reason.", MetricType::Counter);
  auto read_failures = Family("certcast_source_read_failures_total",
                              "Reads of the certificate's source that failed (retried with "
                              "backoff; not a rejection).",
                              MetricType::Counter);
  auto publications =
      Family("certcast_publications_total",
             "Versions published since start (rotations and rollbacks).", MetricType::Counter);
  auto connected = Family("certcast_clients_connected",
                          "Connected clients subscribed to the certificate.", MetricType::Gauge);
  auto behind = Family("certcast_clients_behind",
                       "Connected clients that have not acknowledged the version they should run "
                       "(the current one, or the one a staged rollout holds them at).",
                       MetricType::Gauge);
  auto waiting = Family("certcast_clients_waiting_for_rollout",
                        "Connected clients a staged rollout holds at the previous version.",
                        MetricType::Gauge);
  auto rollout_in_progress = Family(
      "certcast_rollout_in_progress",
      "1 while a staged rollout of the current version is rolling or halted.", MetricType::Gauge);
  auto rollout_halted = Family("certcast_rollout_halted",
                               "1 while the staged rollout is halted (a client refused the "
                               "version; an admin resumes, promotes or rolls back).",
                               MetricType::Gauge);
  auto rollout_wave = Family("certcast_rollout_wave",
                             "1-based wave that has the version last (0: no rollout in progress).",
                             MetricType::Gauge);
  auto rollout_waves = Family("certcast_rollout_waves",
                              "Waves of the certificate's rollout, everyone else included (0: "
                              "none).",
                              MetricType::Gauge);
  auto rollout_held = Family("certcast_rollout_held_version",
                             "While a staged rollout is in progress: the version the namespaces "
                             "it has not reached yet keep running (0: none).",
                             MetricType::Gauge);
  auto verified = Family("certcast_clients_serving_verified",
                         "Connected clients whose ACK of the version they should run said their "
                         "--verify endpoints serve it.",
                         MetricType::Gauge);
  auto oldest = Family("certcast_oldest_unacked_push_age_seconds",
                       "Age of the oldest push a connected client has not acknowledged yet (0: "
                       "none).",
                       MetricType::Gauge);
  auto acks = Family("certcast_acks_total", "ACKs recorded.", MetricType::Counter);
  auto nacks =
      Family("certcast_nacks_total", "NACKs recorded, by reason (validation, files, secret, sink).",
             MetricType::Counter);
  auto hook_warnings = Family("certcast_hook_warnings_total", "ACKs that carried hook warnings.",
                              MetricType::Counter);
  auto push_to_ack =
      Family("certcast_push_to_ack_seconds", "Time from writing a version to a client to its ACK.",
             MetricType::Histogram);
  for (const CertificateSnapshot& snapshot : snapshots) {
    const metrics::Labels labels = {{"certificate", snapshot.name}};
    AddSample(version, labels, static_cast<double>(current[snapshot.name]));
    if (snapshot.current.has_value()) {
      AddSample(not_after, labels,
                static_cast<double>(absl::ToUnixSeconds(snapshot.current->info.not_after)));
    }
    AddSample(
        pinned, labels,
        snapshot.current.has_value() && snapshot.pin.version == snapshot.current->version ? 1 : 0);
    AddSample(present, labels, snapshot.source_present ? 1 : 0);
    for (const auto& [reason, count] : snapshot.rejections_by_reason) {
      AddSample(rejections, {{"certificate", snapshot.name}, {"reason", reason}},
                static_cast<double>(count));
    }
    AddSample(read_failures, labels, static_cast<double>(snapshot.read_failures));
    AddSample(publications, labels, static_cast<double>(snapshot.publications));

    const CertificateFleetStats& stats = fleet.at(snapshot.name);
    AddSample(connected, labels, stats.connected);
    AddSample(behind, labels, stats.behind);
    AddSample(verified, labels, stats.serving_verified);
    AddSample(waiting, labels, stats.waiting);
    const auto rollout = rollouts.find(snapshot.name);
    const RolloutController::Status status =
        rollout == rollouts.end() ? RolloutController::Status() : rollout->second;
    AddSample(rollout_in_progress, labels, status.in_progress ? 1 : 0);
    AddSample(rollout_halted, labels, status.halted ? 1 : 0);
    AddSample(rollout_wave, labels, status.wave);
    AddSample(rollout_waves, labels, status.waves);
    AddSample(rollout_held, labels, status.in_progress ? status.held_version : 0);
    AddSample(oldest, labels, absl::ToDoubleSeconds(stats.oldest_unacked_push_age));
    AddSample(acks, labels, static_cast<double>(stats.acks));
    for (const auto& [reason, count] : stats.nacks) {
      AddSample(nacks, {{"certificate", snapshot.name}, {"reason", reason}},
                static_cast<double>(count));
    }
    AddSample(hook_warnings, labels, static_cast<double>(stats.hook_warnings));
    AddHistogram(push_to_ack, labels, PushToAckBuckets(), stats.push_to_ack.counts,
                 stats.push_to_ack.sum_seconds);
  }

  auto stream_errors = Family("certcast_stream_errors_total",
                              "Subscribe streams the server ended with a non-OK status, by code.",
                              MetricType::Counter);
  for (const auto& [code, count] : hub_->counters().stream_errors) {
    AddSample(stream_errors, {{"code", code}}, static_cast<double>(count));
  }
  auto denials = Family("certcast_auth_denials_total", "Calls denied by the authorizer, by reason.",
                        MetricType::Counter);
  for (const auto& [reason, count] : authorizer_->audit_counters().denials) {
    AddSample(denials, {{"reason", reason}}, static_cast<double>(count));
  }

  std::vector<prometheus::MetricFamily> families = {
      metrics::BuildInfo(),      std::move(version),
      std::move(not_after),      std::move(pinned),
      std::move(present),        std::move(rejections),
      std::move(read_failures),  std::move(publications),
      std::move(connected),      std::move(behind),
      std::move(oldest),         std::move(acks),
      std::move(nacks),          std::move(hook_warnings),
      std::move(push_to_ack),    std::move(stream_errors),
      std::move(denials),        std::move(verified),
      std::move(waiting),        std::move(rollout_in_progress),
      std::move(rollout_halted), std::move(rollout_wave),
      std::move(rollout_waves),  std::move(rollout_held)};
  if (listener_ != nullptr) {
    auto pauses = Family("certcast_accept_pauses_total",
                         "Times the server stopped accepting connections because the process "
                         "had no file descriptor or memory left (it retries every 100 ms).",
                         MetricType::Counter);
    AddSample(pauses, {}, static_cast<double>(listener_->pauses()));
    families.push_back(std::move(pauses));
    auto queued = Family("certcast_accept_queue_connections",
                         "Connections accepted and not yet handed to gRPC: above 0 only while "
                         "connections arrive faster than gRPC takes them (a reconnect storm).",
                         MetricType::Gauge);
    AddSample(queued, {}, static_cast<double>(listener_->queued()));
    families.push_back(std::move(queued));
  }
  if (coverage_ != nullptr && coverage_->known()) {
    const CoverageReport report = coverage_->Report();
    auto missing = Family("certcast_namespaces_missing",
                          "Namespaces the policy grants the certificate that have no connected "
                          "client on the version it should run (no client, or behind; waiting "
                          "for a rollout wave is not missing).",
                          MetricType::Gauge);
    for (const auto& [certificate, count] : report.missing) {
      AddSample(missing, {{"certificate", certificate}}, count);
    }
    families.push_back(std::move(missing));
    // Per granted namespace, so that replicas (each with its own streams) add up in PromQL:
    // sum by (certificate, namespace) (...) == 0 is a namespace no replica serves.
    auto on_current = Family("certcast_namespace_clients_on_current",
                             "Per namespace the policy grants the certificate: this replica's "
                             "connected clients holding the version it should run (the current "
                             "one, or the one a staged rollout holds it at).",
                             MetricType::Gauge);
    for (const NamespaceCoverage& row : report.rows) {
      AddSample(on_current, {{"certificate", row.certificate}, {"namespace", row.namespace_}},
                row.clients_on_current);
    }
    families.push_back(std::move(on_current));
  }
  return families;
}

}  // namespace certcast
