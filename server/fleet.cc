#include "server/fleet.h"

#include <algorithm>

namespace certcast {
namespace {

// Client-supplied texts are shown, not trusted: keep them short.
constexpr size_t kMaxTextBytes = 1024;

std::string Capped(const std::string& text) {
  if (text.size() <= kMaxTextBytes) return text;
  return text.substr(0, kMaxTextBytes) + "...";
}

}  // namespace

void LatencyHistogram::Observe(absl::Duration latency) {
  const double seconds = absl::ToDoubleSeconds(std::max(latency, absl::ZeroDuration()));
  const std::vector<double>& bounds = PushToAckBuckets();
  size_t bucket = 0;
  while (bucket < bounds.size() && seconds > bounds[bucket]) ++bucket;
  ++counts[bucket];
  sum_seconds += seconds;
  ++count;
}

uint64_t Fleet::Connect(ClientRecord record) {
  absl::MutexLock lock(&mu_);
  Prune();
  const auto key = std::make_pair(record.namespace_, record.client_id);
  if (auto it = by_key_.find(key); it != by_key_.end()) {
    auto old = records_.find(it->second);
    if (old != records_.end() && !old->second.connected) Erase(old);
  }
  record.id = next_id_++;
  record.connected = true;
  record.connected_since = record.last_seen = clock_->Now();
  by_key_[key] = record.id;
  const uint64_t id = record.id;
  index_[id] = &records_.emplace(id, std::move(record)).first->second;
  return id;
}

void Fleet::Disconnect(uint64_t id) {
  absl::MutexLock lock(&mu_);
  auto it = records_.find(id);
  if (it == records_.end()) return;
  it->second.connected = false;
  it->second.last_seen = clock_->Now();
  disconnected_.emplace(it->second.last_seen, id);
  Prune();
}

void Fleet::Erase(std::map<uint64_t, ClientRecord>::iterator record) {
  const ClientRecord& gone = record->second;
  auto key = by_key_.find(std::make_pair(gone.namespace_, gone.client_id));
  if (key != by_key_.end() && key->second == record->first) by_key_.erase(key);
  if (!gone.connected) {
    auto [begin, end] = disconnected_.equal_range(gone.last_seen);
    for (auto it = begin; it != end; ++it) {
      if (it->second == record->first) {
        disconnected_.erase(it);
        break;
      }
    }
  }
  index_.erase(record->first);
  records_.erase(record);
}

void Fleet::Prune() {
  const absl::Time cutoff = clock_->Now() - retention_;
  while (!disconnected_.empty() &&
         (disconnected_.begin()->first < cutoff || disconnected_.size() > kMaxDisconnected)) {
    const uint64_t id = disconnected_.begin()->second;
    disconnected_.erase(disconnected_.begin());
    auto record = records_.find(id);
    if (record != records_.end()) Erase(record);
  }
}

ClientRecord* Fleet::FindRecord(uint64_t id) {
  auto it = index_.find(id);
  return it == index_.end() ? nullptr : it->second;
}

ClientCertificateState* Fleet::Find(uint64_t id, const std::string& name) {
  ClientRecord* record = FindRecord(id);
  if (record == nullptr) return nullptr;
  for (ClientCertificateState& state : record->certificates) {
    if (state.name == name) return &state;
  }
  return nullptr;
}

void Fleet::RecordSent(uint64_t id, const std::string& name, uint64_t version,
                       const std::string& nonce, bool in_sync) {
  absl::MutexLock lock(&mu_);
  ClientCertificateState* state = Find(id, name);
  if (state == nullptr) return;
  const absl::Time now = clock_->Now();
  state->sent_version = version;
  state->sent_nonce = nonce;
  state->sent_at = now;
  if (in_sync) {
    // Holding is not serving: only an ACK on this stream proves that again.
    state->acknowledged_version = version;
    state->acknowledged_at = now;
    state->serving_verified = false;
  }
}

ClientCertificateState* Fleet::Answered(uint64_t id, const std::string& name, uint64_t version,
                                        const std::string& nonce, AckOutcome* outcome) {
  ClientCertificateState* state = Find(id, name);
  if (state == nullptr) {
    *outcome = AckOutcome::kUnknownCertificate;
    return nullptr;
  }
  FindRecord(id)->last_seen = clock_->Now();
  if (nonce != state->sent_nonce || version != state->sent_version) {
    ++counters_.stale;
    *outcome = AckOutcome::kStale;
    return nullptr;
  }
  *outcome = AckOutcome::kRecorded;
  return state;
}

AckOutcome Fleet::RecordAck(uint64_t id, const std::string& name, uint64_t version,
                            const std::string& nonce, const std::string& warnings,
                            bool serving_verified) {
  absl::MutexLock lock(&mu_);
  AckOutcome outcome;
  ClientCertificateState* state = Answered(id, name, version, nonce, &outcome);
  if (state == nullptr) return outcome;
  ++counters_.acks;
  const absl::Time now = clock_->Now();
  CertificateFleetStats& stats = per_certificate_[name];
  ++stats.acks;
  if (!warnings.empty()) ++stats.hook_warnings;
  if (state->sent_at != absl::InfinitePast()) stats.push_to_ack.Observe(now - state->sent_at);
  state->acknowledged_version = version;
  state->acknowledged_at = now;
  state->hook_warning = Capped(warnings);
  state->serving_verified = serving_verified;
  state->last_error.clear();
  state->last_error_version = 0;
  return outcome;
}

AckOutcome Fleet::RecordNack(uint64_t id, const std::string& name, uint64_t version,
                             const std::string& nonce, const std::string& errors,
                             const std::string& reason) {
  absl::MutexLock lock(&mu_);
  AckOutcome outcome;
  ClientCertificateState* state = Answered(id, name, version, nonce, &outcome);
  if (state == nullptr) return outcome;
  ++counters_.nacks;
  ++per_certificate_[name].nacks[reason];
  state->last_error = Capped(errors);
  state->last_error_version = version;
  return outcome;
}

void Fleet::Visit(FleetScope scope, uint64_t after_id,
                  const std::function<bool(const ClientRecord&)>& visit) {
  const bool everywhere = scope == FleetScope::kAllReplicas;
  auto moved = [&](const ClientRecord& record) {
    if (!everywhere || record.connected) return false;
    const auto key = std::make_pair(record.namespace_, record.client_id);
    if (remote_connected_.count(key) > 0) return true;
    if (record.replica.empty()) return false;
    auto local = by_key_.find(key);
    if (local == by_key_.end()) return false;
    auto found = records_.find(local->second);
    return found != records_.end() && found->second.connected;
  };
  if (after_id < kFirstRemoteId) {
    for (auto it = records_.upper_bound(after_id); it != records_.end(); ++it) {
      if (!moved(it->second) && !visit(it->second)) return;
    }
  }
  if (!everywhere) return;
  size_t start = after_id < kFirstRemoteId ? 0 : after_id - kFirstRemoteId + 1;
  for (size_t i = start; i < remote_.size(); ++i) {
    if (!moved(remote_[i]) && !visit(remote_[i])) return;
  }
}

Fleet::Page Fleet::List(const std::string& namespace_filter, const std::string& name_filter,
                        size_t page_size, uint64_t after_id, FleetScope scope) {
  absl::MutexLock lock(&mu_);
  Prune();
  Page page;
  Visit(scope, after_id, [&](const ClientRecord& record) {
    if (!namespace_filter.empty() && record.namespace_ != namespace_filter) return true;
    if (!name_filter.empty()) {
      bool subscribed = false;
      for (const auto& state : record.certificates) subscribed |= state.name == name_filter;
      if (!subscribed) return true;
    }
    if (page.clients.size() == page_size) {
      page.next_page_token = std::to_string(page.clients.back().id);
      return false;
    }
    page.clients.push_back(record);
    return true;
  });
  return page;
}

void Fleet::SetRemote(std::map<std::string, std::vector<ClientRecord>> by_replica) {
  absl::MutexLock lock(&mu_);
  remote_.clear();
  remote_connected_.clear();
  for (auto& [replica, records] : by_replica) {
    for (ClientRecord& record : records) {
      record.id = kFirstRemoteId + remote_.size();
      record.replica = replica;
      if (record.connected) remote_connected_.emplace(record.namespace_, record.client_id);
      remote_.push_back(std::move(record));
    }
  }
}

Fleet::Counts Fleet::CountFor(const std::string& name, uint64_t version,
                              const std::string& namespace_filter, FleetScope scope) {
  absl::MutexLock lock(&mu_);
  Counts counts;
  Visit(scope, 0, [&](const ClientRecord& record) {
    if (!record.connected) return true;
    if (!namespace_filter.empty() && record.namespace_ != namespace_filter) return true;
    for (const auto& state : record.certificates) {
      if (state.name != name) continue;
      ++counts.clients;
      if (version != 0 && state.acknowledged_version == version) ++counts.acknowledged;
    }
    return true;
  });
  return counts;
}

std::map<std::string, Fleet::Counts> Fleet::CountByNamespace(const std::string& name,
                                                             uint64_t version,
                                                             const ExpectedVersion& expected,
                                                             FleetScope scope) {
  absl::MutexLock lock(&mu_);
  std::map<std::string, Counts> counts;
  Visit(scope, 0, [&](const ClientRecord& record) {
    if (!record.connected) return true;
    for (const auto& state : record.certificates) {
      if (state.name != name) continue;
      Counts& namespace_counts = counts[record.namespace_];
      ++namespace_counts.clients;
      const uint64_t should_run = expected ? expected(name, record.namespace_, version) : version;
      if (should_run != 0 && state.acknowledged_version == should_run) {
        ++namespace_counts.acknowledged;
      }
    }
    return true;
  });
  return counts;
}

std::map<std::string, CertificateFleetStats> Fleet::Stats(
    const std::map<std::string, uint64_t>& current, const ExpectedVersion& expected) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  std::map<std::string, CertificateFleetStats> stats;
  for (const auto& [name, version] : current) {
    auto counted = per_certificate_.find(name);
    stats[name] = counted == per_certificate_.end() ? CertificateFleetStats() : counted->second;
  }
  for (const auto& [id, record] : records_) {
    if (!record.connected) continue;
    for (const ClientCertificateState& state : record.certificates) {
      auto entry = stats.find(state.name);
      if (entry == stats.end()) continue;
      CertificateFleetStats& certificate = entry->second;
      ++certificate.connected;
      const uint64_t newest = current.at(state.name);
      const uint64_t should_run =
          expected == nullptr ? newest : expected(state.name, record.namespace_, newest);
      if (should_run != newest) ++certificate.waiting;
      if (state.acknowledged_version != should_run) {
        ++certificate.behind;
      } else if (state.serving_verified) {
        ++certificate.serving_verified;
      }
      if (state.sent_version != 0 && state.acknowledged_version != state.sent_version) {
        certificate.oldest_unacked_push_age =
            std::max(certificate.oldest_unacked_push_age, now - state.sent_at);
      }
    }
  }
  return stats;
}

FleetCounters Fleet::counters() {
  absl::MutexLock lock(&mu_);
  return counters_;
}

}  // namespace certcast
