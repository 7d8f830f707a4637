#include "kube/namespace_cache.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/backoff.h"
#include "common/logging.h"
#include "kube/secret.h"

namespace certcast::kube {

namespace {
constexpr char kNamespaces[] = "/api/v1/namespaces";
}  // namespace

std::optional<std::pair<std::string, Labels>> NamespaceFromJson(const Json& object) {
  const Json& metadata = Member(object, "metadata");
  std::string name = StringMember(metadata, "name");
  if (name.empty()) return std::nullopt;
  Labels labels;
  const Json& json_labels = Member(metadata, "labels");
  if (json_labels.is_object()) {
    for (const auto& [key, value] : json_labels.items()) {
      if (value.is_string()) labels[key] = value.get<std::string>();
    }
  }
  return std::make_pair(std::move(name), std::move(labels));
}

void NamespaceCache::Start() {
  thread_ = std::thread([this] { Run(); });
}

void NamespaceCache::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_.store(true);
  }
  if (thread_.joinable()) thread_.join();
}

bool NamespaceCache::synced() const {
  absl::MutexLock lock(&mu_);
  return synced_;
}

bool NamespaceCache::WaitSynced(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto synced_or_stopping = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return synced_ || stopping_.load();
  };
  mu_.AwaitWithTimeout(absl::Condition(&synced_or_stopping), timeout);
  return synced_;
}

std::shared_ptr<const NamespaceSet> NamespaceCache::snapshot() const {
  absl::MutexLock lock(&mu_);
  return namespaces_;
}

std::optional<Labels> NamespaceCache::LabelsOf(const std::string& name) const {
  std::shared_ptr<const NamespaceSet> namespaces = snapshot();
  auto it = namespaces->find(name);
  if (it == namespaces->end()) return std::nullopt;
  return it->second;
}

std::string NamespaceCache::last_error() const {
  absl::MutexLock lock(&mu_);
  return last_error_;
}

void NamespaceCache::SetError(std::string error) {
  absl::MutexLock lock(&mu_);
  if (error != last_error_ && !error.empty()) {
    LogWarn("namespace watch failed; label grants keep the last known labels",
            {{"error", error}});
  }
  last_error_ = std::move(error);
}

void NamespaceCache::Publish(NamespaceSet next) {
  bool changed;
  {
    absl::MutexLock lock(&mu_);
    changed = !synced_ || *namespaces_ != next;
    synced_ = true;
    if (changed) namespaces_ = std::make_shared<const NamespaceSet>(std::move(next));
  }
  if (changed && on_change_) on_change_();
}

void NamespaceCache::WaitUnlessStopping(absl::Duration delay) {
  absl::MutexLock lock(&mu_);
  auto stopping = [this] { return stopping_.load(); };
  mu_.AwaitWithTimeout(absl::Condition(&stopping), delay);
}

void NamespaceCache::Run() {
  Backoff backoff({absl::Milliseconds(500), absl::Seconds(30), 2.0, 0.2});
  std::string resource_version;
  bool expired_before = false;  // the previous watch ended in 410 without any event
  while (!stopping_.load()) {
    if (resource_version.empty()) {
      absl::StatusOr<Json> list = api_->Request("GET", kNamespaces);
      if (!list.ok()) {
        SetError(std::string(list.status().message()));
        WaitUnlessStopping(backoff.Next());
        continue;
      }
      resource_version = ResourceVersion(*list);
      NamespaceSet listed;
      const Json& items = Member(*list, "items");
      if (items.is_array()) {
        for (const Json& item : items) {
          if (auto entry = NamespaceFromJson(item)) listed.insert(std::move(*entry));
        }
      }
      Publish(std::move(listed));
      SetError("");
    }
    bool got_event = false;
    const std::string path =
        absl::StrCat(kNamespaces, "?watch=1&allowWatchBookmarks=true&timeoutSeconds=",
                     options_.server_timeout_seconds, "&resourceVersion=", resource_version);
    absl::Status watched = api_->Watch(
        path,
        [&](const WatchEvent& event) {
          got_event = true;
          backoff.Reset();
          resource_version = ResourceVersion(event.object, resource_version);
          if (event.type == "BOOKMARK") return !stopping_.load();
          auto entry = NamespaceFromJson(event.object);
          if (!entry) return !stopping_.load();
          NamespaceSet next = *snapshot();
          if (event.type == "DELETED") {
            next.erase(entry->first);
          } else {
            next[entry->first] = std::move(entry->second);
          }
          Publish(std::move(next));
          return !stopping_.load();
        },
        &stopping_, options_.idle_timeout);
    if (stopping_.load()) break;
    if (watched.ok()) continue;  // the server ended the watch: resume from resource_version
    resource_version.clear();
    if (IsExpired(watched)) {
      // A fresh list's version expiring at once again means something is wrong: don't spin.
      if (expired_before && !got_event) WaitUnlessStopping(backoff.Next());
      expired_before = !got_event;
      continue;
    }
    expired_before = false;
    SetError(std::string(watched.message()));
    WaitUnlessStopping(backoff.Next());
  }
}

}  // namespace certcast::kube
