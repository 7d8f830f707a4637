#include "server/rollout.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/logging.h"
#include "google/protobuf/timestamp.pb.h"

namespace certcast {
namespace {

constexpr size_t kFleetPage = 1000;

void SetTime(absl::Time t, google::protobuf::Timestamp* out) { *out = ToProtoTime(t); }

absl::Time GetTime(const google::protobuf::Timestamp& t) { return FromProtoTime(t); }

std::string Key(const ClientRecord& record) {
  return absl::StrCat(record.namespace_, "/", record.client_id);
}

const ClientCertificateState* StateOf(const ClientRecord& record, const std::string& name) {
  for (const ClientCertificateState& state : record.certificates) {
    if (state.name == name) return &state;
  }
  return nullptr;
}

std::string WaveLabel(const RolloutSpec& spec, size_t wave) {
  return absl::StrCat(wave + 1, " (", spec.waves[wave].name, ")");
}

}  // namespace

RolloutController::RolloutController(PolicySource policy, Fleet* fleet, DistributionHub* hub,
                                     const Clock* clock, Options options)
    : policy_(std::move(policy)),
      fleet_(fleet),
      hub_(hub),
      clock_(clock),
      options_(std::move(options)) {}

RolloutController::~RolloutController() { Stop(); }

std::shared_ptr<const RolloutSpec> RolloutController::SpecOf(const std::string& name) {
  std::shared_ptr<const Policy> policy = policy_ ? policy_() : nullptr;
  return policy == nullptr ? nullptr : policy->RolloutOf(name);
}

size_t RolloutController::WaveOf(const RolloutSpec& spec, const kube::NamespaceSet* namespaces,
                                 const std::string& namespace_) {
  const NamespaceLabels* labels = nullptr;
  if (namespaces != nullptr) {
    auto it = namespaces->find(namespace_);
    if (it != namespaces->end()) labels = &it->second;
  }
  return spec.WaveOf(namespace_, labels);
}

void RolloutController::ApplyGate(const std::string& name, Entry& entry) {
  if (!entry.active() || entry.spec == nullptr) {
    entry.gate = nullptr;
  } else {
    auto gate = std::make_shared<RolloutGate>();
    gate->held_back = entry.previous;
    std::shared_ptr<const RolloutSpec> spec = entry.spec;
    const size_t released = entry.state.wave();
    // The labels as they are now; OnNamespacesChanged builds a new gate when they change.
    std::shared_ptr<const kube::NamespaceSet> namespaces =
        spec->UsesSelectors() ? Namespaces() : nullptr;
    gate->released = [spec, released, namespaces](const std::string& namespace_) {
      return WaveOf(*spec, namespaces.get(), namespace_) <= released;
    };
    entry.gate = std::move(gate);
  }
  hub_->SetGate(name, entry.gate);
}

state::v1::RolloutState RolloutController::Started(uint64_t version, uint64_t held_back) const {
  const absl::Time now = clock_->Now();
  state::v1::RolloutState state;
  state.set_version(version);
  state.set_previous_version(held_back);
  state.set_wave(0);
  SetTime(now, state.mutable_started_at());
  SetTime(now, state.mutable_wave_started_at());
  return state;
}

std::optional<std::string> RolloutController::RolloutStateFor(const std::string& name,
                                                              uint64_t version, bool pinned) {
  std::shared_ptr<const RolloutSpec> spec = SpecOf(name);
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(name);
  // The cases OnPublish sends to everyone: the stored state stays (an older version's).
  if (spec == nullptr || pinned || it == entries_.end() || it->second.current == nullptr ||
      it->second.current->version == version) {
    return std::nullopt;
  }
  const Entry& entry = it->second;
  state::v1::RolloutState state =
      Started(version, entry.active() ? entry.previous->version : entry.current->version);
  std::string bytes = state.SerializeAsString();
  pending_[name] = std::move(state);
  return bytes;
}

void RolloutController::OnPublish(std::shared_ptr<const Publication> publication) {
  const std::string name = publication->name;
  std::shared_ptr<const RolloutSpec> spec = SpecOf(name);
  absl::MutexLock lock(&mu_);
  Entry& entry = entries_[name];
  std::shared_ptr<const Publication> before = entry.current;
  entry.current = publication;
  if (before != nullptr && before->version == publication->version) {
    // The same version again (a pin that ended): nothing to roll out.
    hub_->OnPublish(std::move(publication));
    return;
  }
  if (spec == nullptr || before == nullptr || publication->pinned) {
    if (entry.active()) {
      Finish(name, entry, publication->pinned ? "rolled_back" : "promoted",
             publication->pinned
                 ? absl::StrCat("version ", publication->version,
                                " is a rollback: sent to everyone, ending the rollout")
                 : "the policy no longer gives this certificate a rollout: sent to everyone");
    }
    entry.previous = nullptr;
    entry.awaiting_stored = false;
    ApplyGate(name, entry);
    hub_->OnPublish(std::move(publication));
    return;
  }
  // Namespaces not reached yet keep what they run: the version before an unfinished rollout.
  std::shared_ptr<const Publication> held_back = entry.active() ? entry.previous : before;
  entry.previous = held_back;
  entry.spec = spec;
  auto stored = pending_.find(name);
  entry.awaiting_stored = false;
  if (stored != pending_.end() && stored->second.version() == publication->version) {
    entry.state = std::move(stored->second);  // RolloutStateFor: stored with the version
  } else {
    entry.state = Started(publication->version, held_back->version);
    if (options_.leadership != nullptr) {
      // Adopted from the store: the replica that published it stored its rollout with it, maybe
      // advanced since. Starting over here, on this clock, would overwrite that once this replica
      // leads; Follow takes the stored one (the Publisher's lock, held now, keeps it from here).
      entry.awaiting_stored = true;
    } else {
      dirty_.insert(name);
    }
  }
  pending_.erase(name);
  ApplyGate(name, entry);
  hub_->OnPublish(std::move(publication));
  LogInfo(
      absl::StrCat("rollout of version ", entry.state.version(), " started: wave ",
                   WaveLabel(*spec, 0), " gets it; the others keep version ", held_back->version),
      {{"certificate", name},
       {"version", entry.state.version()},
       {"previous_version", held_back->version},
       {"waves", spec->waves.size()}});
}

void RolloutController::Restore(Publisher* publisher) {
  struct Found {
    std::string name;
    state::v1::RolloutState state;
    std::shared_ptr<const Publication> previous;
  };
  std::vector<Found> found;
  for (const std::string& name : publisher->Names()) {
    const std::string bytes = publisher->RolloutState(name);
    if (bytes.empty()) continue;
    Found restored{name, {}, nullptr};
    if (!restored.state.ParseFromString(bytes)) {
      LogError("stored rollout state does not parse; ignoring it", {{"certificate", name}});
      continue;
    }
    restored.previous = publisher->PublicationOf(name, restored.state.previous_version());
    found.push_back(std::move(restored));
  }
  absl::MutexLock lock(&mu_);
  publisher_ = publisher;
  for (Found& restored : found) {
    Entry& entry = entries_[restored.name];
    const bool current =
        entry.current != nullptr && entry.current->version == restored.state.version();
    const bool unfinished = restored.state.outcome().empty();
    if (!current) continue;  // a rollout of an older version: the current one went to everyone
    entry.state = std::move(restored.state);
    if (unfinished && restored.previous == nullptr) {
      Finish(restored.name, entry, "promoted",
             absl::StrCat("version ", entry.state.previous_version(),
                          " is no longer stored, so nobody can be held back: sent to everyone"));
      continue;
    }
    if (!unfinished) continue;
    entry.previous = std::move(restored.previous);
    entry.spec = SpecOf(restored.name);
    ApplyGate(restored.name, entry);
    LogInfo(absl::StrCat("resuming the rollout of version ", entry.state.version(), " at wave ",
                         entry.state.wave() + 1, entry.state.halted() ? " (halted)" : ""),
            {{"certificate", restored.name},
             {"version", entry.state.version()},
             {"previous_version", entry.state.previous_version()}});
  }
}

void RolloutController::OnNamespacesChanged() {
  absl::MutexLock lock(&mu_);
  for (auto& [name, entry] : entries_) {
    if (entry.active() && entry.spec != nullptr && entry.spec->UsesSelectors()) {
      ApplyGate(name, entry);
    }
  }
}

void RolloutController::Start() {
  thread_ = std::thread([this] {
    while (true) {
      {
        absl::MutexLock lock(&mu_);
        mu_.AwaitWithTimeout(absl::Condition(&stopping_), options_.tick);
        if (stopping_) return;
      }
      Tick();
    }
  });
}

void RolloutController::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void RolloutController::Tick() {
  if (!MayAdvance()) {
    Follow(/*awaiting_only=*/false);
    return;
  }
  Follow(/*awaiting_only=*/true);  // a new leader continues what the previous one stored
  {
    absl::MutexLock lock(&mu_);
    if (MayAdvance()) {
      for (auto& [name, entry] : entries_) {
        if (entry.active() && !entry.awaiting_stored) Evaluate(name, entry);
      }
    }
  }
  Persist();
}

void RolloutController::Follow(bool awaiting_only) {
  Publisher* publisher = nullptr;
  std::vector<std::pair<std::string, uint64_t>> names;  // with the current version
  {
    absl::MutexLock lock(&mu_);
    publisher = publisher_;
    for (const auto& [name, entry] : entries_) {
      if (entry.current == nullptr || (awaiting_only && !entry.awaiting_stored)) continue;
      names.emplace_back(name, entry.current->version);
    }
  }
  if (publisher == nullptr) return;
  for (const auto& [name, version] : names) {
    // The Publisher stores a version's state before it tells OnPublish: read after `version`
    // was current here, this is `version`'s stored state, or a newer version already came.
    state::v1::RolloutState stored;
    if (!stored.ParseFromString(publisher->RolloutState(name))) stored.Clear();
    std::shared_ptr<const Publication> previous =
        publisher->PublicationOf(name, stored.previous_version());
    absl::MutexLock lock(&mu_);
    Entry& entry = entries_[name];
    if (entry.current == nullptr || entry.current->version != version) continue;  // newer came
    if (stored.version() != version) {
      if (entry.awaiting_stored && MayAdvance()) {
        // Stored without its rollout (by a replica without this policy, say): start it here.
        entry.awaiting_stored = false;
        dirty_.insert(name);
      }
      continue;
    }
    entry.awaiting_stored = false;
    dirty_.erase(name);  // what is stored: nothing to persist
    if (entry.state.SerializeAsString() == stored.SerializeAsString()) continue;
    entry.state = std::move(stored);
    entry.previous = entry.state.outcome().empty() ? std::move(previous) : nullptr;
    entry.spec = SpecOf(name);
    ApplyGate(name, entry);
  }
}

void RolloutController::Persist() {
  if (!MayAdvance()) return;
  absl::MutexLock persist_lock(&persist_mu_);
  Publisher* publisher = nullptr;
  std::vector<std::pair<std::string, std::string>> states;
  {
    absl::MutexLock lock(&mu_);
    publisher = publisher_;
    if (publisher == nullptr) return;  // before Restore: kept dirty
    for (auto it = dirty_.begin(); it != dirty_.end();) {
      const Entry& entry = entries_[*it];
      if (entry.awaiting_stored) {  // a stand-in: kept until Follow settles it
        ++it;
        continue;
      }
      states.emplace_back(*it, entry.state.SerializeAsString());
      it = dirty_.erase(it);
    }
  }
  for (const auto& [name, bytes] : states) {
    absl::Status saved = publisher->SaveRolloutState(name, bytes);
    if (saved.ok()) continue;
    LogError("cannot persist the rollout state; will retry",
             {{"certificate", name}, {"error", saved}});
    absl::MutexLock lock(&mu_);
    dirty_.insert(name);
  }
}

void RolloutController::Finish(const std::string& name, Entry& entry, const std::string& outcome,
                               const std::string& warning) {
  entry.state.set_outcome(outcome);
  entry.state.set_halted(false);
  if (!warning.empty()) entry.state.add_warnings(warning);
  entry.previous = nullptr;
  ApplyGate(name, entry);
  dirty_.insert(name);
  const LogFields fields = {{"certificate", name},
                            {"version", entry.state.version()},
                            {"outcome", outcome},
                            {"warning", warning}};
  if (outcome == "complete") {
    LogInfo(
        absl::StrCat("rollout of version ", entry.state.version(), " complete: every wave has it"),
        fields);
  } else {
    LogWarn(absl::StrCat("rollout of version ", entry.state.version(), " ended (", outcome,
                         "): everyone gets it"),
            fields);
  }
}

void RolloutController::Halt(const std::string& name, Entry& entry, const std::string& reason) {
  entry.state.set_halted(true);
  entry.state.set_halt_reason(reason);
  SetTime(clock_->Now(), entry.state.mutable_halted_at());
  dirty_.insert(name);
  LogWarn(absl::StrCat("rollout of version ", entry.state.version(), " HALTED at wave ",
                       entry.state.wave() + 1,
                       "; later waves keep the previous version until an admin resumes, promotes "
                       "or rolls back"),
          {{"certificate", name}, {"version", entry.state.version()}, {"reason", reason}});
  // The audit trail names who changed what: here the server itself stopped a rollout.
  LogWarn("audit", {{"identity", "certcast-server"},
                    {"method", "Rollout/Halt"},
                    {"certificate", name},
                    {"version", entry.state.version()},
                    {"wave", entry.state.wave() + 1},
                    {"reason", Peer(reason)}});
}

std::vector<RolloutController::WaveCounts> RolloutController::Count(const std::string& name,
                                                                    const Entry& entry) {
  const RolloutSpec& spec = *entry.spec;
  std::vector<WaveCounts> counts(spec.waves.size());
  const uint64_t version = entry.state.version();
  const std::set<std::string> excused(entry.state.excused().begin(), entry.state.excused().end());
  const absl::Time now = clock_->Now();
  const bool timed_out = now - GetTime(entry.state.wave_started_at()) >= spec.wave_timeout;
  const std::shared_ptr<const kube::NamespaceSet> namespaces = Namespaces();
  uint64_t after = 0;
  while (true) {
    Fleet::Page page = fleet_->List("", name, kFleetPage, after, FleetScope::kAllReplicas);
    for (const ClientRecord& record : page.clients) {
      const ClientCertificateState* state = StateOf(record, name);
      if (state == nullptr) continue;
      const size_t wave = WaveOf(spec, namespaces.get(), record.namespace_);
      WaveCounts& wave_counts = counts[wave];
      const bool required = spec.waves[wave].require_verified;
      const std::string key = Key(record);
      ++wave_counts.clients;
      const bool acknowledged = state->acknowledged_version == version;
      if (acknowledged) ++wave_counts.acknowledged;
      if (acknowledged && state->serving_verified) ++wave_counts.verified;
      if (acknowledged && (!required || state->serving_verified)) continue;  // done
      if (state->last_error_version == version) {
        ++wave_counts.refused;
        if (excused.count(key) == 0) {
          wave_counts.refusing.push_back(absl::StrCat(key, ": ", state->last_error));
        }
        continue;
      }
      if (excused.count(key) > 0) continue;
      if (acknowledged && required && timed_out) {
        wave_counts.unverified.push_back(key);
        continue;
      }
      if (!record.connected && timed_out) {
        ++wave_counts.missing;
        wave_counts.missing_clients.push_back(key);
        continue;
      }
      ++wave_counts.waiting;
    }
    if (page.next_page_token.empty()) break;
    after = std::stoull(page.next_page_token);
  }
  return counts;
}

void RolloutController::Evaluate(const std::string& name, Entry& entry) {
  std::shared_ptr<const RolloutSpec> spec = SpecOf(name);
  if (spec == nullptr) {
    Finish(name, entry, "promoted",
           "the policy no longer gives this certificate a rollout: sent to everyone");
    return;
  }
  if (spec != entry.spec) {  // the policy was reloaded: the waves may differ
    entry.spec = spec;
    if (entry.state.wave() >= spec->waves.size()) entry.state.set_wave(spec->waves.size() - 1);
    ApplyGate(name, entry);
  }
  const absl::Time now = clock_->Now();
  // Expiry beats caution, halted or not: waves never reached must not run an expired leaf.
  const absl::Time previous_expiry = entry.previous->info.not_after;
  if (previous_expiry - now <= spec->expiry_margin) {
    Finish(name, entry, "forced",
           absl::StrCat("version ", entry.previous->version,
                        ", which waves not reached yet run, expires at ",
                        absl::FormatTime(absl::RFC3339_sec, previous_expiry, absl::UTCTimeZone()),
                        " (within the expiry margin of ", absl::FormatDuration(spec->expiry_margin),
                        "): version ", entry.state.version(), " sent to everyone"));
    return;
  }
  if (entry.state.halted()) return;
  const size_t wave = entry.state.wave();
  const std::vector<WaveCounts> counts = Count(name, entry);
  for (size_t i = 0; i <= wave; ++i) {
    if (!counts[i].refusing.empty()) {
      Halt(name, entry,
           absl::StrCat("wave ", WaveLabel(*spec, i), ": client ", counts[i].refusing.front(),
                        counts[i].refusing.size() > 1
                            ? absl::StrCat(" (and ", counts[i].refusing.size() - 1, " more)")
                            : ""));
      return;
    }
    if (!counts[i].unverified.empty()) {
      Halt(name, entry,
           absl::StrCat("wave ", WaveLabel(*spec, i), " requires verified ACKs, but client ",
                        counts[i].unverified.front(),
                        " acknowledged without proof of serving (no --verify?) within the wave "
                        "timeout"));
      return;
    }
  }
  const WaveCounts& current = counts[wave];
  if (current.waiting > 0) return;
  // With several replicas the counts include the others' clients from their fleet summaries: a
  // wave is concluded only from a view taken after it started, so that a client connected to
  // another replica is never missed (each replica rewrites its summary at least every keepalive).
  if (options_.fleet_view_as_of &&
      options_.fleet_view_as_of() < GetTime(entry.state.wave_started_at())) {
    return;
  }
  if (!entry.state.has_soak_started_at()) {
    SetTime(now, entry.state.mutable_soak_started_at());
    dirty_.insert(name);
    LogInfo(absl::StrCat("wave ", WaveLabel(*spec, wave), " acknowledged version ",
                         entry.state.version(), "; soaking for ",
                         absl::FormatDuration(spec->waves[wave].soak)),
            {{"certificate", name},
             {"version", entry.state.version()},
             {"clients", current.clients},
             {"missing", current.missing}});
  }
  if (now < GetTime(entry.state.soak_started_at()) + spec->waves[wave].soak) return;
  if (current.missing > 0) {
    const std::string warning =
        absl::StrCat("wave ", WaveLabel(*spec, wave), " proceeded without ", current.missing,
                     " disconnected client(s), counted as missing after the wave timeout of ",
                     absl::FormatDuration(spec->wave_timeout), ": ",
                     absl::StrJoin(current.missing_clients, ", "));
    entry.state.add_warnings(warning);
    LogWarn(warning, {{"certificate", name}, {"version", entry.state.version()}});
  }
  entry.state.set_wave(wave + 1);
  SetTime(now, entry.state.mutable_wave_started_at());
  entry.state.clear_soak_started_at();
  dirty_.insert(name);
  if (wave + 1 + 1 >= spec->waves.size()) {
    Finish(name, entry, "complete", "");
    return;
  }
  ApplyGate(name, entry);
  LogInfo(absl::StrCat("rollout of version ", entry.state.version(), ": wave ",
                       WaveLabel(*spec, wave + 1), " gets it"),
          {{"certificate", name}, {"version", entry.state.version()}});
}

absl::StatusOr<v1::Rollout> RolloutController::Resume(const std::string& name) {
  v1::Rollout described;
  if (!MayAdvance()) return NotTheLeader(*options_.leadership, "advances rollouts");
  Follow(/*awaiting_only=*/true);  // a rollout adopted a moment ago: the stored one
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      return absl::NotFoundError(absl::StrCat("certificate \"", name, "\" is not configured"));
    }
    Entry& entry = it->second;
    if (!entry.active() || !entry.state.halted()) {
      return absl::FailedPreconditionError(
          absl::StrCat("the rollout of \"", name, "\" is not halted"));
    }
    // Excuse whoever stopped it: refusals, and ACKs without the proof a wave requires.
    if (entry.spec != nullptr) {
      const uint64_t version = entry.state.version();
      const std::shared_ptr<const kube::NamespaceSet> namespaces = Namespaces();
      uint64_t after = 0;
      while (true) {
        Fleet::Page page = fleet_->List("", name, kFleetPage, after, FleetScope::kAllReplicas);
        for (const ClientRecord& record : page.clients) {
          const ClientCertificateState* state = StateOf(record, name);
          if (state == nullptr) continue;
          const size_t wave = WaveOf(*entry.spec, namespaces.get(), record.namespace_);
          if (wave > entry.state.wave()) continue;
          const bool refused = state->last_error_version == version;
          const bool unverified = state->acknowledged_version == version &&
                                  !state->serving_verified &&
                                  entry.spec->waves[wave].require_verified;
          if (refused || unverified) entry.state.add_excused(Key(record));
        }
        if (page.next_page_token.empty()) break;
        after = std::stoull(page.next_page_token);
      }
    }
    LogInfo(absl::StrCat("rollout of version ", entry.state.version(), " resumed at wave ",
                         entry.state.wave() + 1),
            {{"certificate", name}, {"halt_reason", entry.state.halt_reason()}});
    entry.state.set_halted(false);
    entry.state.clear_halt_reason();
    entry.state.clear_halted_at();
    dirty_.insert(name);
    described = DescribeLocked(name, entry);
  }
  Persist();
  return described;
}

absl::StatusOr<v1::Rollout> RolloutController::Promote(const std::string& name) {
  v1::Rollout described;
  if (!MayAdvance()) return NotTheLeader(*options_.leadership, "advances rollouts");
  Follow(/*awaiting_only=*/true);  // a rollout adopted a moment ago: the stored one
  {
    absl::MutexLock lock(&mu_);
    auto it = entries_.find(name);
    if (it == entries_.end()) {
      return absl::NotFoundError(absl::StrCat("certificate \"", name, "\" is not configured"));
    }
    Entry& entry = it->second;
    if (!entry.active()) {
      return absl::FailedPreconditionError(
          absl::StrCat("no rollout of \"", name, "\" is in progress"));
    }
    Finish(name, entry, "promoted", "");
    described = DescribeLocked(name, entry);
  }
  Persist();
  return described;
}

std::optional<v1::Rollout> RolloutController::Describe(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(name);
  if (it == entries_.end() || it->second.state.version() == 0) return std::nullopt;
  return DescribeLocked(name, it->second);
}

v1::Rollout RolloutController::DescribeLocked(const std::string& name, const Entry& entry) {
  const state::v1::RolloutState& state = entry.state;
  v1::Rollout rollout;
  rollout.set_state(!state.outcome().empty() ? state.outcome()
                    : state.halted()         ? "halted"
                                             : "rolling");
  rollout.set_version(state.version());
  rollout.set_previous_version(state.previous_version());
  rollout.set_wave(state.wave() + 1);
  rollout.set_halt_reason(state.halt_reason());
  if (state.has_halted_at()) *rollout.mutable_halted_at() = state.halted_at();
  for (const std::string& warning : state.warnings()) rollout.add_warnings(warning);
  if (state.has_started_at()) *rollout.mutable_started_at() = state.started_at();
  std::shared_ptr<const RolloutSpec> spec = entry.spec != nullptr ? entry.spec : SpecOf(name);
  if (spec == nullptr) return rollout;
  Entry counted = entry;
  counted.spec = spec;
  const std::vector<WaveCounts> counts = Count(name, counted);
  for (size_t i = 0; i < spec->waves.size(); ++i) {
    const WaveSpec& wave = spec->waves[i];
    v1::RolloutWave* out = rollout.add_waves();
    out->set_name(wave.name);
    for (const std::string& pattern : wave.namespaces) out->add_namespaces(pattern);
    if (wave.selector.has_value()) out->set_namespace_selector(wave.selector->ToString());
    out->set_soak_seconds(static_cast<uint32_t>(absl::ToInt64Seconds(wave.soak)));
    out->set_require_verified(wave.require_verified);
    const bool finished = !state.outcome().empty();
    if (finished || i < state.wave()) {
      out->set_state("done");
    } else if (i > state.wave()) {
      out->set_state("waiting");
    } else {
      out->set_state(state.has_soak_started_at() ? "soaking" : "rolling");
      if (state.has_wave_started_at()) *out->mutable_started_at() = state.wave_started_at();
      if (state.has_soak_started_at()) {
        SetTime(GetTime(state.soak_started_at()) + wave.soak, out->mutable_soak_until());
      }
    }
    out->set_clients(counts[i].clients);
    out->set_acknowledged(counts[i].acknowledged);
    out->set_verified(counts[i].verified);
    out->set_refused(counts[i].refused);
    out->set_missing(counts[i].missing);
  }
  return rollout;
}

uint32_t RolloutController::WaitingFor(const std::string& name, const std::string& namespace_) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(name);
  if (it == entries_.end() || !it->second.active() || it->second.spec == nullptr) return 0;
  const size_t wave = WaveOf(*it->second.spec, Namespaces().get(), namespace_);
  return wave > it->second.state.wave() ? static_cast<uint32_t>(wave + 1) : 0;
}

std::map<std::string, RolloutController::Status> RolloutController::Statuses() {
  absl::MutexLock lock(&mu_);
  std::map<std::string, Status> statuses;
  for (const auto& [name, entry] : entries_) {
    if (entry.state.version() == 0) continue;
    Status& status = statuses[name];
    status.in_progress = entry.active();
    status.halted = entry.active() && entry.state.halted();
    status.wave = entry.active() ? entry.state.wave() + 1 : 0;
    std::shared_ptr<const RolloutSpec> spec = entry.spec;
    status.waves = spec != nullptr ? static_cast<uint32_t>(spec->waves.size()) : 0;
    status.version = entry.state.version();
    status.held_version = entry.state.previous_version();
  }
  return statuses;
}

Fleet::ExpectedVersion RolloutController::ExpectedVersions() {
  struct Held {
    std::shared_ptr<const RolloutGate> gate;
    uint64_t previous = 0;
  };
  auto gates = std::make_shared<std::map<std::string, Held>>();
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, entry] : entries_) {
      if (entry.gate != nullptr) (*gates)[name] = Held{entry.gate, entry.previous->version};
    }
  }
  return [gates](const std::string& certificate, const std::string& namespace_,
                 uint64_t current) -> uint64_t {
    auto it = gates->find(certificate);
    if (it == gates->end() || it->second.gate->released(namespace_)) return current;
    return it->second.previous;
  };
}

}  // namespace certcast
