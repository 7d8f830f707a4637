#include "server/fleet_exchange.h"

#include <algorithm>
#include <utility>

#include "certcast/state/v1/state.pb.h"
#include "common/logging.h"
#include "server/publication.h"

namespace certcast {
namespace {

// More than any replica holds: the summary covers all of this replica's records.
constexpr size_t kAllRecords = size_t{1} << 30;

state::v1::FleetSummary ToSummary(const std::vector<ClientRecord>& records) {
  state::v1::FleetSummary summary;
  for (const ClientRecord& record : records) {
    state::v1::FleetClient* client = summary.add_clients();
    client->set_client_id(record.client_id);
    client->set_namespace_(record.namespace_);
    client->set_peer(record.peer);
    client->set_identity(record.identity);
    client->set_connected(record.connected);
    *client->mutable_connected_since() = ToProtoTime(record.connected_since);
    // A connected client's last_seen moves with every message; leaving it out keeps an idle
    // fleet's summary unchanged, so it is rewritten only at the keepalive.
    if (!record.connected) *client->mutable_last_seen() = ToProtoTime(record.last_seen);
    for (const ClientCertificateState& state : record.certificates) {
      state::v1::FleetClientCertificate* certificate = client->add_certificates();
      certificate->set_name(state.name);
      certificate->set_sent_version(state.sent_version);
      certificate->set_acknowledged_version(state.acknowledged_version);
      certificate->set_last_error(state.last_error);
      certificate->set_last_error_version(state.last_error_version);
      certificate->set_hook_warning(state.hook_warning);
      certificate->set_serving_verified(state.serving_verified);
      if (state.sent_at != absl::InfinitePast()) {
        *certificate->mutable_sent_at() = ToProtoTime(state.sent_at);
      }
      if (state.acknowledged_at != absl::InfinitePast()) {
        *certificate->mutable_acknowledged_at() = ToProtoTime(state.acknowledged_at);
      }
    }
  }
  return summary;
}

}  // namespace

FleetExchange::FleetExchange(Fleet* fleet, Replication* replication, const Clock* clock,
                             Options options)
    : fleet_(fleet), replication_(replication), clock_(clock), options_(options) {}

std::string FleetExchange::Summarize(const std::vector<ClientRecord>& records,
                                      absl::Time written_at, size_t max_bytes) {
  state::v1::FleetSummary summary = ToSummary(records);
  if (written_at != absl::InfinitePast()) *summary.mutable_written_at() = ToProtoTime(written_at);
  if (summary.ByteSizeLong() > max_bytes) {
    for (state::v1::FleetClient& client : *summary.mutable_clients()) {
      for (state::v1::FleetClientCertificate& certificate : *client.mutable_certificates()) {
        certificate.clear_last_error();
        certificate.clear_hook_warning();
      }
    }
  }
  if (summary.ByteSizeLong() > max_bytes) {
    state::v1::FleetSummary connected;
    if (summary.has_written_at()) *connected.mutable_written_at() = summary.written_at();
    for (state::v1::FleetClient& client : *summary.mutable_clients()) {
      if (client.connected()) *connected.add_clients() = std::move(client);
    }
    summary = std::move(connected);
  }
  return summary.SerializeAsString();
}

std::vector<ClientRecord> FleetExchange::Records(const std::string& bytes) {
  state::v1::FleetSummary summary;
  std::vector<ClientRecord> records;
  if (!summary.ParseFromString(bytes)) return records;
  for (const state::v1::FleetClient& client : summary.clients()) {
    ClientRecord record;
    record.client_id = client.client_id();
    record.namespace_ = client.namespace_();
    record.peer = client.peer();
    record.identity = client.identity();
    record.connected = client.connected();
    record.connected_since = FromProtoTime(client.connected_since());
    record.last_seen = client.has_last_seen() ? FromProtoTime(client.last_seen())
                                              : FromProtoTime(summary.written_at());
    for (const state::v1::FleetClientCertificate& certificate : client.certificates()) {
      ClientCertificateState state;
      state.name = certificate.name();
      state.sent_version = certificate.sent_version();
      state.acknowledged_version = certificate.acknowledged_version();
      state.last_error = certificate.last_error();
      state.last_error_version = certificate.last_error_version();
      state.hook_warning = certificate.hook_warning();
      state.serving_verified = certificate.serving_verified();
      if (certificate.has_sent_at()) state.sent_at = FromProtoTime(certificate.sent_at());
      if (certificate.has_acknowledged_at()) {
        state.acknowledged_at = FromProtoTime(certificate.acknowledged_at());
      }
      record.certificates.push_back(std::move(state));
    }
    records.push_back(std::move(record));
  }
  return records;
}

void FleetExchange::SyncOnce() {
  const absl::Time now = clock_->Now();
  const std::vector<ClientRecord> mine = fleet_->List("", "", kAllRecords, 0).clients;
  const std::string content = Summarize(mine, absl::InfinitePast(), options_.max_bytes);
  absl::Status status = absl::OkStatus();
  if (content != last_content_ || now - last_written_ >= options_.keepalive) {
    status = replication_->PublishFleetSummary(Summarize(mine, now, options_.max_bytes));
    if (status.ok()) {
      last_content_ = content;
      last_written_ = now;
    }
  }
  absl::StatusOr<std::map<std::string, std::string>> others = replication_->FleetSummaries();
  if (others.ok()) {
    std::map<std::string, std::vector<ClientRecord>> by_replica;
    std::map<std::string, std::pair<std::string, absl::Time>> seen;
    std::vector<std::string> dead;
    for (auto& [replica, summary] : *others) {
      auto before = seen_.find(replica);
      const absl::Time since =
          before != seen_.end() && before->second.first == summary ? before->second.second : now;
      if (now - since >= 12 * options_.keepalive) {
        dead.push_back(replica);
      } else if (now - since < 3 * options_.keepalive) {
        by_replica[replica] = Records(summary);
      }
      seen[replica] = {std::move(summary), since};
    }
    seen_ = std::move(seen);
    // A summary first seen at `since` was written after the read before it.
    absl::Time as_of = now;
    for (const auto& [replica, value] : seen_) {
      if (by_replica.count(replica) > 0) as_of = std::min(as_of, value.second - options_.interval);
    }
    fleet_->SetRemote(std::move(by_replica));
    {
      absl::MutexLock lock(&mu_);
      view_as_of_ = as_of;
    }
    // Best effort, by the leader only; a failure is retried next round.
    if (!dead.empty() && replication_->IsLeader()) {
      (void)replication_->RemoveFleetSummaries(dead);
    }
  } else if (status.ok()) {
    status = others.status();
  }
  // Other replicas' clients stay as last read while the store does not answer; the store's own
  // health (readiness, metrics) already says that it does not.
  const std::string error = status.ok() ? "" : std::string(status.message());
  if (error != last_error_) {
    if (error.empty()) {
      LogInfo("exchanging fleet summaries with the other replicas again");
    } else {
      LogWarn("cannot exchange fleet summaries with the other replicas; retrying",
              {{"error", status}});
    }
    last_error_ = error;
  }
}

absl::Time FleetExchange::ViewAsOf() const {
  absl::MutexLock lock(&mu_);
  return view_as_of_;
}

void FleetExchange::Start() {
  thread_ = std::thread([this] {
    while (true) {
      SyncOnce();
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.interval);
      if (stopping_) return;
    }
  });
}

void FleetExchange::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

}  // namespace certcast
