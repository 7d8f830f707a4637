#include "kube/watcher.h"

#include "absl/strings/str_cat.h"
#include "common/backoff.h"
#include "common/logging.h"
#include "kube/secret.h"

namespace certcast::kube {

NamedObjectWatcher::NamedObjectWatcher(KubeApi* api, std::string collection_path, std::string name,
                                       std::function<void(const std::string&)> on_event,
                                       Options options)
    : api_(api),
      collection_path_(std::move(collection_path)),
      name_(std::move(name)),
      on_event_(std::move(on_event)),
      options_(options) {}

void NamedObjectWatcher::Start() {
  thread_ = std::thread([this] { Run(); });
}

void NamedObjectWatcher::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_.store(true);
  }
  if (thread_.joinable()) thread_.join();
}

WatcherCounters NamedObjectWatcher::counters() {
  absl::MutexLock lock(&mu_);
  return counters_;
}

void NamedObjectWatcher::Count(uint64_t WatcherCounters::*field) {
  absl::MutexLock lock(&mu_);
  ++(counters_.*field);
}

void NamedObjectWatcher::WaitUnlessStopping(absl::Duration delay) {
  absl::MutexLock lock(&mu_);
  auto stopping = [this] { return stopping_.load(); };
  mu_.AwaitWithTimeout(absl::Condition(&stopping), delay);
}

void NamedObjectWatcher::Run() {
  Backoff backoff({absl::Milliseconds(500), absl::Seconds(30), 2.0, 0.2});
  const std::string selector = "fieldSelector=" + QueryEscape("metadata.name=" + name_);
  const std::string what = absl::StrCat(collection_path_, "/", name_);
  std::string resource_version;
  std::string last_error;
  bool expired_before = false;  // the previous watch ended in 410 without any event
  while (!stopping_.load()) {
    if (resource_version.empty()) {
      Count(&WatcherCounters::lists);
      absl::StatusOr<Json> list = api_->Request("GET", collection_path_ + "?" + selector);
      if (!list.ok()) {
        Count(&WatcherCounters::errors);
        const std::string error(list.status().message());
        if (error != last_error) LogWarn("watch failed", {{"watch", what}, {"error", error}});
        last_error = error;
        WaitUnlessStopping(backoff.Next());
        continue;
      }
      resource_version = ResourceVersion(*list);
      if (list->contains("items") && (*list)["items"].is_array()) {
        // Items may be Secrets: wipe what they carry before the list is dropped.
        for (auto& item : (*list)["items"]) WipeSecretData(&item);
      }
      on_event_("RESYNC");
    }
    Count(&WatcherCounters::watches);
    bool got_event = false;
    const std::string path = absl::StrCat(
        collection_path_, "?watch=1&allowWatchBookmarks=true&", selector,
        "&timeoutSeconds=", options_.server_timeout_seconds, "&resourceVersion=", resource_version);
    absl::Status watched = api_->Watch(
        path,
        [&](const WatchEvent& event) {
          got_event = true;
          backoff.Reset();
          last_error.clear();
          resource_version = ResourceVersion(event.object, resource_version);
          if (event.type != "BOOKMARK") on_event_(event.type);
          return !stopping_.load();
        },
        &stopping_, options_.idle_timeout);
    if (stopping_.load()) break;
    if (watched.ok()) continue;  // the server ended the watch: resume from resource_version
    if (IsExpired(watched)) {
      Count(&WatcherCounters::expired);
      LogDebug("watch: resourceVersion expired; listing again",
               {{"watch", what}, {"resource_version", resource_version}});
      resource_version.clear();
      // A fresh list's version expiring at once again means something is wrong: don't spin.
      if (expired_before && !got_event) WaitUnlessStopping(backoff.Next());
      expired_before = !got_event;
      continue;
    }
    expired_before = false;
    Count(&WatcherCounters::errors);
    const std::string error(watched.message());
    if (error != last_error) LogWarn("watch failed", {{"watch", what}, {"error", error}});
    last_error = error;
    resource_version.clear();
    WaitUnlessStopping(backoff.Next());
  }
}

}  // namespace certcast::kube
