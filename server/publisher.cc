#include "server/publisher.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace certcast {
namespace {

// Compares two serials (hex, any case, leading zeros allowed) as unsigned integers.
int CompareSerials(absl::string_view a, absl::string_view b) {
  auto strip = [](absl::string_view s) {
    while (!s.empty() && s.front() == '0') s.remove_prefix(1);
    return absl::AsciiStrToUpper(s);
  };
  const std::string x = strip(a);
  const std::string y = strip(b);
  if (x.size() != y.size()) return x.size() < y.size() ? -1 : 1;
  return x.compare(y) < 0 ? -1 : (x == y ? 0 : 1);
}

// Validation results of stored versions, checked against the instant each was published.
absl::StatusOr<std::vector<CertificateInfo>> InfosFor(const std::string& name,
                                                      const CertificateState& state) {
  std::vector<CertificateInfo> infos;
  for (const StoredVersion& stored : state.versions) {
    ValidationOptions options;
    options.now = stored.published_at;
    absl::StatusOr<CertificateInfo> info = ValidateMaterial(name, stored.material, options);
    if (!info.ok()) {
      return absl::DataLossError(
          absl::StrCat("stored version ", stored.version, " of \"", name,
                       "\" is not valid material: ", info.status().message()));
    }
    infos.push_back(*std::move(info));
  }
  return infos;
}

}  // namespace

SourceOrder CompareSources(const SourceState& candidate, const SourceState& baseline) {
  if (!candidate.revision.empty() && !baseline.revision.empty()) {
    uint64_t a = 0;
    uint64_t b = 0;
    if (absl::SimpleAtoi(candidate.revision, &a) && absl::SimpleAtoi(baseline.revision, &b)) {
      return a > b ? SourceOrder::kNewer : (a == b ? SourceOrder::kSame : SourceOrder::kOlder);
    }
    return candidate.revision == baseline.revision ? SourceOrder::kSame : SourceOrder::kNewer;
  }
  if (baseline.leaf_not_before == absl::InfinitePast() && baseline.leaf_serial.empty()) {
    return SourceOrder::kNewer;
  }
  if (candidate.leaf_not_before != baseline.leaf_not_before) {
    return candidate.leaf_not_before > baseline.leaf_not_before ? SourceOrder::kNewer
                                                                : SourceOrder::kOlder;
  }
  const int serial = CompareSerials(candidate.leaf_serial, baseline.leaf_serial);
  return serial > 0 ? SourceOrder::kNewer
                    : (serial == 0 ? SourceOrder::kSame : SourceOrder::kOlder);
}

Publisher::Publisher(VersionStore* store, const Clock* clock, PublicationListener* listener,
                     PublisherOptions options)
    : store_(store), clock_(clock), listener_(listener), options_(options) {}

Publisher::Entry* Publisher::Find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : it->second.get();
}

absl::Status Publisher::AddCertificate(CertificateSpec spec) {
  const std::string name = spec.name;
  absl::StatusOr<std::optional<CertificateState>> loaded = store_->Load(name);
  auto entry = std::make_unique<Entry>();
  entry->spec = std::move(spec);
  if (!loaded.ok() && options_.leadership != nullptr && !absl::IsDataLoss(loaded.status()) &&
      !absl::IsInvalidArgument(loaded.status())) {
    // A shared store that cannot be reached now: start empty and follow it once it answers.
    LogWarn("cannot load the stored state yet; following the store once it answers",
            {{"certificate", name}, {"error", loaded.status()}});
    entry->loaded = false;
    loaded = std::optional<CertificateState>();
  }
  if (!loaded.ok()) return loaded.status();
  if (loaded->has_value()) {
    entry->state = **std::move(loaded);
    // Stored material was valid when published; check it against that instant.
    ASSIGN_OR_RETURN(entry->infos, InfosFor(name, entry->state));
  }
  absl::MutexLock lock(&mu_);
  if (entries_.count(name) > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate \"", name, "\" is configured twice"));
  }
  if (!entry->state.versions.empty()) {
    const StoredVersion& last = entry->state.versions.back();
    entry->current = MakePublication(name, last.version, entry->state.pin.version == last.version,
                                     entry->infos.back(), last.material);
    LogInfo("restored the last version from the version store",
            {{"certificate", name},
             {"version", last.version},
             {"fingerprint", entry->infos.back().fingerprint}});
    listener_->OnPublish(entry->current);
    NoteExpiry(*entry);
  }
  entries_.emplace(name, std::move(entry));
  return absl::OkStatus();
}

void Publisher::Reject(Entry& entry, const absl::Status& status, const std::string& settled_key,
                       const std::string& fingerprint) {
  const bool repeated = entry.settled_digest == settled_key;
  entry.settled_digest = settled_key;
  if (repeated) return;
  ++entry.rejections;
  entry.last_rejection =
      Rejection{RejectionReason(status), std::string(status.message()), fingerprint, clock_->Now()};
  ++entry.rejections_by_reason[entry.last_rejection->reason];
  const std::string serving = entry.current
                                  ? absl::StrCat("keeps serving version ", entry.current->version)
                                  : std::string("has no version to serve");
  LogWarn(absl::StrCat("source content rejected; ", serving),
          {{"certificate", entry.spec.name},
           {"source", entry.spec.source->Describe()},
           {"reason", entry.last_rejection->reason},
           {"error", status.message()}});
}

Verdict Publisher::Evaluate(const std::string& name, bool confirmed) {
  absl::MutexLock evaluating(&evaluate_mu_);
  CertificateSource* source = SourceOf(name);
  if (source == nullptr) return Verdict::kSettled;
  // Read outside mu_: the source may be slow, and inspection must not wait for it.
  absl::StatusOr<CertificateMaterial> material = source->Read();
  const std::string revision = material.ok() ? source->LastReadRevision() : std::string();

  absl::MutexLock lock(&mu_);
  Entry& entry = *Find(name);
  const Verdict verdict = Settle(entry, std::move(material), revision, confirmed);
  NoteExpiry(entry);
  return verdict;
}

Verdict Publisher::ReadFailed(Entry& entry, const absl::Status& status) {
  ++entry.read_failures;
  ++entry.consecutive_read_failures;
  entry.read_error = std::string(status.message());
  // One failed read can be a blip; two in a row mean the source is gone for now (metrics,
  // inspection and the source-missing alert see it). Either way nothing is settled: the watcher
  // reads again with backoff, so a renewal that arrives during an outage is not lost.
  if (entry.consecutive_read_failures >= 2) entry.source_present = false;
  const std::string serving = entry.current
                                  ? absl::StrCat("keeps serving version ", entry.current->version)
                                  : std::string("has no version to serve yet");
  if (entry.consecutive_read_failures == 1) {
    LogWarn(absl::StrCat("cannot read source; reading it again with backoff; ", serving),
            {{"certificate", entry.spec.name},
             {"source", entry.spec.source->Describe()},
             {"error", entry.read_error}});
  } else {
    LogDebug("source still unreadable", {{"certificate", entry.spec.name},
                                         {"source", entry.spec.source->Describe()},
                                         {"failed_reads", entry.consecutive_read_failures},
                                         {"error", entry.read_error}});
  }
  return Verdict::kRetry;
}

Verdict Publisher::Settle(Entry& entry, absl::StatusOr<CertificateMaterial> material,
                          const std::string& revision, bool confirmed) {
  const std::string& name = entry.spec.name;
  if (!material.ok() && RejectionReason(material.status()) == "unreadable") {
    return ReadFailed(entry, material.status());
  }
  if (!material.ok()) {
    const std::string key = absl::StrCat("error:", material.status().message());
    if (entry.settled_digest == key) return Verdict::kSettled;
    if (!confirmed) return Verdict::kUnsettled;
    // source_digest keeps the last content seen: an outage is not a content change for pins.
    // Reject warns once; the current version stays served.
    Reject(entry, Annotate(material.status(), absl::StrCat("certificate \"", name, "\"")), key, "");
    entry.source_present = false;
    entry.read_failed = true;
    return Verdict::kSettled;
  }
  entry.source_present = true;
  if (entry.read_failed || entry.consecutive_read_failures > 0) {
    LogInfo("source readable again", {{"certificate", name},
                                      {"source", entry.spec.source->Describe()},
                                      {"failed_reads", entry.consecutive_read_failures}});
    entry.read_failed = false;
    entry.consecutive_read_failures = 0;
    entry.read_error.clear();
  }

  const std::string digest = ContentDigest(*material);
  if (entry.settled_digest == digest) return Verdict::kSettled;

  ValidationOptions options;
  options.now = clock_->Now();
  options.required_dns_names = entry.spec.required_dns_names;
  absl::StatusOr<CertificateInfo> info = ValidateMaterial(name, *material, options);
  if (!info.ok()) {
    if (!confirmed) return Verdict::kUnsettled;
    entry.source_digest = digest;
    Reject(entry, info.status(), digest, "");
    return Verdict::kSettled;
  }

  if (options_.leadership != nullptr) {
    entry.source_state = SourceState{revision, info->not_before, info->serial};
    // Not settled: when this replica becomes the leader, it evaluates the source again.
    if (!options_.leadership->IsLeader()) return Verdict::kSettled;
    if (!entry.loaded) {
      if (absl::Status refreshed = RefreshLocked(entry); !refreshed.ok()) {
        LogWarn("cannot load the stored state; not publishing until it can be loaded",
                {{"certificate", name}, {"error", refreshed}});
        return Verdict::kRetry;
      }
    }
    if (!entry.state.versions.empty()) {
      const StoredVersion& current = entry.state.versions.back();
      const SourceOrder order = CompareSources(entry.source_state, current.source);
      if (order != SourceOrder::kNewer) {
        if (order == SourceOrder::kOlder && entry.stale_digest != digest) {
          ++entry.stale_sources;
          entry.stale_digest = digest;
          LogWarn(absl::StrCat("source holds older material than the current version; keeps "
                               "serving version ",
                               current.version, " (another replica published newer material)"),
                  {{"certificate", name},
                   {"source", entry.spec.source->Describe()},
                   {"source_revision", revision},
                   {"current_source_revision", current.source.revision},
                   {"fingerprint", info->fingerprint},
                   {"current_fingerprint", entry.infos.back().fingerprint}});
        }
        entry.settled_digest = digest;
        entry.source_digest = digest;
        return Verdict::kSettled;
      }
    }
  }

  PinState pin = entry.state.pin;
  if (pin.version != 0) {
    if (digest == pin.source_digest) {
      entry.settled_digest = digest;
      entry.source_digest = digest;
      return Verdict::kSettled;
    }
    LogInfo("source content changed; ending the pin",
            {{"certificate", name}, {"version", pin.version}});
    pin = PinState{};
  }
  const bool unchanged =
      entry.current != nullptr && ContentDigest(entry.state.versions.back().material) == digest;
  if (unchanged && pin.version == entry.state.pin.version) {
    entry.settled_digest = digest;
    entry.source_digest = digest;
    return Verdict::kSettled;
  }

  StoredVersion stored;
  stored.material = *std::move(material);
  stored.published_at = clock_->Now();
  stored.origin = "source";
  stored.source = SourceState{revision, info->not_before, info->serial};
  absl::Status committed =
      unchanged ? absl::OkStatus() : Commit(entry, std::move(stored), *info, pin);
  if (unchanged) {
    // Only the pin ended: persist that without a new version.
    CertificateState next = entry.state;
    next.pin = pin;
    committed = SaveLocked(entry, next);
    if (committed.ok()) {
      entry.state = std::move(next);
      // Same version, no longer pinned: new subscribers and heartbeats must say so.
      const StoredVersion& current = entry.state.versions.back();
      entry.current = MakePublication(name, current.version, /*pinned=*/false, entry.infos.back(),
                                      current.material);
      listener_->OnPublish(entry.current);
    }
  }
  if (!committed.ok()) {
    LogError("cannot persist the new state, will retry",
             {{"certificate", name}, {"error", committed}});
    return Verdict::kUnsettled;
  }
  entry.settled_digest = digest;
  entry.source_digest = digest;
  return Verdict::kSettled;
}

absl::Status Publisher::Commit(Entry& entry, StoredVersion version, CertificateInfo info,
                               PinState pin) {
  const std::string& name = entry.spec.name;
  CertificateState next = entry.state;
  std::vector<CertificateInfo> infos = entry.infos;
  version.version = next.last_version + 1;
  next.last_version = version.version;
  next.versions.push_back(std::move(version));
  infos.push_back(std::move(info));
  if (pin.version == kPinNewVersion) pin.version = next.last_version;
  next.pin = std::move(pin);
  if (std::optional<std::string> rollout = listener_->RolloutStateFor(
          name, next.last_version, next.pin.version == next.last_version)) {
    next.rollout = *std::move(rollout);
  }
  const size_t limit = static_cast<size_t>(store_->history_limit());
  while (next.versions.size() > limit) {
    next.versions.erase(next.versions.begin());
    infos.erase(infos.begin());
  }
  RETURN_IF_ERROR(SaveLocked(entry, next));

  entry.state = std::move(next);
  entry.infos = std::move(infos);
  const StoredVersion& stored = entry.state.versions.back();
  const CertificateInfo& current_info = entry.infos.back();
  entry.current = MakePublication(name, stored.version, entry.state.pin.version == stored.version,
                                  current_info, stored.material);
  ++entry.publications;
  const std::string not_after =
      absl::FormatTime(absl::RFC3339_sec, current_info.not_after, absl::UTCTimeZone());
  if (stored.origin == "rollback") {
    LogInfo(absl::StrCat("published version ", stored.version, " (a pinned rollback)"),
            {{"certificate", name},
             {"version", stored.version},
             {"fingerprint", current_info.fingerprint},
             {"rolled_back_from", stored.rolled_back_from},
             {"not_after", not_after}});
  } else {
    LogInfo(absl::StrCat("published version ", stored.version),
            {{"certificate", name},
             {"version", stored.version},
             {"fingerprint", current_info.fingerprint},
             {"source", entry.spec.source->Describe()},
             {"not_after", not_after}});
  }
  listener_->OnPublish(entry.current);
  return absl::OkStatus();
}

absl::StatusOr<RollbackResult> Publisher::Rollback(const std::string& name, uint64_t version) {
  absl::MutexLock lock(&mu_);
  Entry* entry = Find(name);
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("certificate \"", name, "\" is not configured"));
  }
  if (options_.leadership != nullptr && !options_.leadership->IsLeader()) {
    return NotTheLeader(*options_.leadership, "publishes");
  }
  if (options_.leadership != nullptr && !entry->loaded) {
    RETURN_IF_ERROR(RefreshLocked(*entry));
  }
  const std::vector<StoredVersion>& versions = entry->state.versions;
  if (versions.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("certificate \"", name, "\" has no versions yet"));
  }
  if (version == versions.back().version) {
    return absl::InvalidArgumentError(
        absl::StrCat("version ", version, " of \"", name, "\" is already the current version"));
  }
  const StoredVersion* target = nullptr;
  for (const StoredVersion& stored : versions) {
    if (stored.version == version) target = &stored;
  }
  if (target == nullptr) {
    return absl::NotFoundError(
        absl::StrCat("version ", version, " of \"", name, "\" is not stored; stored versions are ",
                     versions.front().version, " to ", versions.back().version));
  }
  ValidationOptions options;
  options.now = clock_->Now();
  options.required_dns_names = entry->spec.required_dns_names;
  absl::StatusOr<CertificateInfo> info = ValidateMaterial(name, target->material, options);
  if (!info.ok()) {
    return Annotate(info.status(),
                    absl::StrCat("refusing to roll back \"", name, "\" to version ", version));
  }
  StoredVersion stored;
  stored.material = target->material;
  stored.published_at = clock_->Now();
  stored.origin = "rollback";
  stored.rolled_back_from = version;
  // The pin lasts until the source holds something newer than what it holds now.
  stored.source = entry->source_state.revision.empty() &&
                          entry->source_state.leaf_not_before == absl::InfinitePast()
                      ? versions.back().source
                      : entry->source_state;
  PinState pin;
  pin.version = kPinNewVersion;
  pin.rolled_back_from = version;
  pin.source_digest = entry->source_digest;
  pin.since = clock_->Now();
  RETURN_IF_ERROR(Commit(*entry, std::move(stored), *info, std::move(pin)));
  NoteExpiry(*entry);
  return RollbackResult{entry->state.last_version, version, entry->infos.back().fingerprint};
}

absl::Status Publisher::SaveLocked(Entry& entry, CertificateState& state) {
  absl::StatusOr<std::string> revision = store_->Save(entry.spec.name, state);
  if (absl::IsAborted(revision.status())) {
    // Another replica wrote since this one loaded: adopt its state; the caller decides again.
    if (absl::Status refreshed = RefreshLocked(entry); !refreshed.ok()) {
      LogWarn("cannot load the stored state after a lost compare-and-swap",
              {{"certificate", entry.spec.name}, {"error", refreshed}});
    }
    return revision.status();
  }
  if (!revision.ok()) return revision.status();
  state.store_revision = *revision;
  ++entry.generation;
  return absl::OkStatus();
}

absl::Status Publisher::Adopt(Entry& entry, std::optional<CertificateState> loaded) {
  const std::string& name = entry.spec.name;
  ++entry.generation;
  entry.loaded = true;
  if (!loaded.has_value()) {
    if (!entry.state.store_revision.empty()) {
      LogWarn("the stored state is gone; the next publication stores it again",
              {{"certificate", name}, {"version", entry.state.last_version}});
    }
    entry.state.store_revision.clear();
    return absl::OkStatus();
  }
  if (loaded->last_version < entry.state.last_version) {
    // Restored from an old backup, say: never go back; the next write replaces it.
    LogWarn("the stored state is behind this replica's; keeping the higher versions",
            {{"certificate", name},
             {"stored_version", loaded->last_version},
             {"version", entry.state.last_version}});
    entry.state.store_revision = loaded->store_revision;
    return absl::OkStatus();
  }
  const uint64_t current_before =
      entry.state.versions.empty() ? 0 : entry.state.versions.back().version;
  const bool pinned_before = entry.state.pin.version != 0;
  if (loaded->last_version == entry.state.last_version &&
      loaded->pin.version == entry.state.pin.version &&
      (loaded->versions.empty() ? 0 : loaded->versions.back().version) == current_before) {
    entry.state.store_revision = loaded->store_revision;  // a Claim, or our own write
    entry.state.rollout = loaded->rollout;  // the leader's rollout progress (server/rollout.h)
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::vector<CertificateInfo> infos, InfosFor(name, *loaded));
  entry.state = *std::move(loaded);
  entry.infos = std::move(infos);
  entry.settled_digest.clear();
  if (entry.state.versions.empty()) return absl::OkStatus();
  const StoredVersion& current = entry.state.versions.back();
  const bool pinned = entry.state.pin.version == current.version;
  if (current.version == current_before && pinned == pinned_before) return absl::OkStatus();
  ++entry.adopted;
  entry.current =
      MakePublication(name, current.version, pinned, entry.infos.back(), current.material);
  LogInfo(absl::StrCat("following version ", current.version, " from the version store",
                       pinned ? " (a pinned rollback)" : ""),
          {{"certificate", name},
           {"version", current.version},
           {"fingerprint", entry.infos.back().fingerprint}});
  listener_->OnPublish(entry.current);
  NoteExpiry(entry);
  return absl::OkStatus();
}

absl::Status Publisher::RefreshLocked(Entry& entry) {
  ASSIGN_OR_RETURN(std::optional<CertificateState> loaded, store_->Load(entry.spec.name));
  return Adopt(entry, std::move(loaded));
}

absl::Status Publisher::Refresh(const std::string& name) {
  // Load outside mu_ (the store may be slow); adopt only if nothing changed the entry's store
  // revision meanwhile (a write or another refresh), else load again.
  for (int attempt = 0; attempt < 3; ++attempt) {
    uint64_t generation = 0;
    {
      absl::MutexLock lock(&mu_);
      Entry* entry = Find(name);
      if (entry == nullptr) {
        return absl::NotFoundError(absl::StrCat("certificate \"", name, "\" is not configured"));
      }
      generation = entry->generation;
    }
    ASSIGN_OR_RETURN(std::optional<CertificateState> loaded, store_->Load(name));
    absl::MutexLock lock(&mu_);
    Entry& entry = *Find(name);
    if (entry.generation == generation) return Adopt(entry, std::move(loaded));
  }
  absl::MutexLock lock(&mu_);
  return RefreshLocked(*Find(name));
}

absl::Status Publisher::TakeOver(const std::string& name) {
  RETURN_IF_ERROR(Refresh(name));
  absl::MutexLock lock(&mu_);
  Entry& entry = *Find(name);
  if (entry.state.store_revision.empty()) return absl::OkStatus();  // a create is a CAS already
  absl::StatusOr<std::string> claimed = store_->Claim(name, entry.state.store_revision);
  if (absl::IsAborted(claimed.status())) {
    RETURN_IF_ERROR(RefreshLocked(entry));
    claimed = store_->Claim(name, entry.state.store_revision);
  }
  if (!claimed.ok()) return claimed.status();
  entry.state.store_revision = *claimed;
  ++entry.generation;
  return absl::OkStatus();
}

std::vector<std::string> Publisher::Names() const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> names;
  for (const auto& [name, entry] : entries_) names.push_back(name);
  return names;
}

CertificateSource* Publisher::SourceOf(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  Entry* entry = Find(name);
  return entry == nullptr ? nullptr : entry->spec.source.get();
}

std::shared_ptr<const Publication> Publisher::Current(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  Entry* entry = Find(name);
  return entry == nullptr ? nullptr : entry->current;
}

std::optional<CertificateSnapshot> Publisher::Snapshot(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  Entry* entry = Find(name);
  if (entry == nullptr) return std::nullopt;
  CertificateSnapshot snapshot;
  snapshot.name = name;
  snapshot.source = entry->spec.source->Describe();
  snapshot.required_dns_names = entry->spec.required_dns_names;
  for (size_t i = entry->state.versions.size(); i-- > 0;) {
    const StoredVersion& stored = entry->state.versions[i];
    snapshot.history.push_back(VersionSummary{stored.version, entry->infos[i], stored.published_at,
                                              stored.origin, stored.rolled_back_from});
  }
  if (!snapshot.history.empty()) snapshot.current = snapshot.history.front();
  snapshot.pin = entry->state.pin;
  snapshot.pin.source_digest.clear();
  snapshot.last_rejection = entry->last_rejection;
  snapshot.rejections = entry->rejections;
  snapshot.rejections_by_reason = entry->rejections_by_reason;
  snapshot.publications = entry->publications;
  snapshot.source_present = entry->source_present;
  snapshot.read_error = entry->read_error;
  snapshot.consecutive_read_failures = entry->consecutive_read_failures;
  snapshot.read_failures = entry->read_failures;
  snapshot.stale_sources = entry->stale_sources;
  snapshot.adopted = entry->adopted;
  snapshot.expiring_soon = ExpiringSoon(*entry);
  return snapshot;
}

bool Publisher::ExpiringSoon(const Entry& entry) const {
  return entry.current != nullptr &&
         clock_->Now() >= entry.current->info.not_after - options_.expiry_warning;
}

void Publisher::NoteExpiry(Entry& entry) {
  const bool expiring = ExpiringSoon(entry);
  if (expiring == entry.expiring_logged) return;
  entry.expiring_logged = expiring;
  const Publication& current = *entry.current;
  const std::string not_after =
      absl::FormatTime(absl::RFC3339_sec, current.info.not_after, absl::UTCTimeZone());
  if (!expiring) {
    LogInfo("current version is not close to expiry", {{"certificate", entry.spec.name},
                                                       {"version", current.version},
                                                       {"fingerprint", current.info.fingerprint},
                                                       {"not_after", not_after}});
    return;
  }
  const absl::Duration left = current.info.not_after - clock_->Now();
  LogWarn(left > absl::ZeroDuration()
              ? "current version expires soon; still serving it until the source provides newer "
                "material"
              : "current version EXPIRED; still serving it until the source provides newer "
                "material",
          {{"certificate", entry.spec.name},
           {"version", current.version},
           {"fingerprint", current.info.fingerprint},
           {"not_after", not_after},
           {"days_left", absl::ToDoubleHours(left) / 24},
           {"expiry_warning", options_.expiry_warning},
           {"source", entry.spec.source->Describe()}});
}

std::string Publisher::RolloutState(const std::string& name) const {
  absl::MutexLock lock(&mu_);
  Entry* entry = Find(name);
  return entry == nullptr ? std::string() : entry->state.rollout;
}

absl::Status Publisher::SaveRolloutState(const std::string& name, std::string state) {
  absl::MutexLock lock(&mu_);
  Entry* entry = Find(name);
  if (entry == nullptr) {
    return absl::NotFoundError(absl::StrCat("certificate \"", name, "\" is not configured"));
  }
  if (options_.leadership != nullptr && !options_.leadership->IsLeader()) {
    return absl::FailedPreconditionError(
        absl::StrCat("not the leader: the rollout state of \"", name, "\" is the leader's"));
  }
  CertificateState next = entry->state;
  next.rollout = std::move(state);
  RETURN_IF_ERROR(SaveLocked(*entry, next));
  entry->state = std::move(next);
  return absl::OkStatus();
}

std::shared_ptr<const Publication> Publisher::PublicationOf(const std::string& name,
                                                            uint64_t version) const {
  absl::MutexLock lock(&mu_);
  Entry* entry = Find(name);
  if (entry == nullptr) return nullptr;
  for (size_t i = 0; i < entry->state.versions.size(); ++i) {
    const StoredVersion& stored = entry->state.versions[i];
    if (stored.version != version) continue;
    return MakePublication(name, version, entry->state.pin.version == version, entry->infos[i],
                           stored.material);
  }
  return nullptr;
}

bool Publisher::Ready(std::string* why) const {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> missing;
  for (const auto& [name, entry] : entries_) {
    if (entry->current == nullptr) missing.push_back(name);
  }
  if (why != nullptr && !missing.empty()) {
    *why = absl::StrCat("no valid version yet for: ", absl::StrJoin(missing, ", "));
  }
  return missing.empty();
}

}  // namespace certcast
