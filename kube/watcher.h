// NamedObjectWatcher follows one named object through the API the way a least-privilege Role
// allows (list and watch with fieldSelector=metadata.name=NAME): list to learn the
// resourceVersion, watch from it with bookmarks and a server-side timeout, resume from the last
// resourceVersion when a watch ends, re-list on 410 Expired and after errors (with backoff).
// A silent stall is impossible: a watch that delivers nothing for `idle_timeout` is restarted.
// Thread-safe; one background thread between Start() and Stop(). Does not own `api`.
#ifndef CERTCAST_KUBE_WATCHER_H_
#define CERTCAST_KUBE_WATCHER_H_

#include <atomic>
#include <functional>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kube/api.h"

namespace certcast::kube {

struct WatcherCounters {
  uint64_t lists = 0;
  uint64_t watches = 0;
  uint64_t expired = 0;  // 410s that forced a re-list
  uint64_t errors = 0;
};

class NamedObjectWatcher {
 public:
  struct Options {
    absl::Duration idle_timeout = absl::Seconds(90);  // bookmarks arrive about every minute
    int server_timeout_seconds = 300;
  };
  // `on_event` receives "ADDED", "MODIFIED", "DELETED", or "RESYNC" after every (re)list, when
  // changes may have been missed. It runs on the watcher thread.
  NamedObjectWatcher(KubeApi* api, std::string collection_path, std::string name,
                     std::function<void(const std::string&)> on_event, Options options);
  NamedObjectWatcher(KubeApi* api, std::string collection_path, std::string name,
                     std::function<void(const std::string&)> on_event)
      : NamedObjectWatcher(api, std::move(collection_path), std::move(name), std::move(on_event),
                           Options()) {}
  ~NamedObjectWatcher() { Stop(); }

  void Start();
  void Stop();
  WatcherCounters counters();

 private:
  void Run();
  void WaitUnlessStopping(absl::Duration delay);
  void Count(uint64_t WatcherCounters::*field);

  KubeApi* const api_;
  const std::string collection_path_;
  const std::string name_;
  const std::function<void(const std::string&)> on_event_;
  const Options options_;
  absl::Mutex mu_;
  WatcherCounters counters_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace certcast::kube

#endif  // CERTCAST_KUBE_WATCHER_H_
