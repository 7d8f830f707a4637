// NamespaceCache keeps every namespace of the cluster with its labels, followed through the API
// (list, then watch with bookmarks from the list's resourceVersion; re-list on 410 Expired and
// after errors, with backoff; a watch silent for `idle_timeout` is restarted). It needs only
// get/list/watch on namespaces, read-only. The server uses it to grant certificates by label
// selector and to find granted namespaces that have no client.
// Thread-safe; one background thread between Start() and Stop(). Does not own `api`.
#ifndef CERTCAST_KUBE_NAMESPACE_CACHE_H_
#define CERTCAST_KUBE_NAMESPACE_CACHE_H_

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kube/api.h"

namespace certcast::kube {

using Labels = std::map<std::string, std::string>;
// Every namespace by name, with its labels. Immutable once published.
using NamespaceSet = std::map<std::string, Labels>;

class NamespaceCache {
 public:
  struct Options {
    absl::Duration idle_timeout = absl::Seconds(90);  // bookmarks arrive about every minute
    int server_timeout_seconds = 300;
  };
  explicit NamespaceCache(KubeApi* api) : NamespaceCache(api, Options()) {}
  NamespaceCache(KubeApi* api, Options options) : api_(api), options_(options) {}
  ~NamespaceCache() { Stop(); }

  // `on_change` runs on the cache's thread after the set of namespaces or a namespace's labels
  // changed (not for bookmarks or unchanged re-lists). Set before Start().
  void OnChange(std::function<void()> on_change) { on_change_ = std::move(on_change); }
  void Start();
  void Stop();

  // False until the first list succeeded: callers must treat label grants as unknown (deny).
  bool synced() const;
  // Waits until synced() or `timeout`; returns synced().
  bool WaitSynced(absl::Duration timeout) const;
  // The current namespaces (an immutable snapshot; empty before the first list).
  std::shared_ptr<const NamespaceSet> snapshot() const;
  // The labels of `name`, or nullopt when it does not exist (or before the first list).
  std::optional<Labels> LabelsOf(const std::string& name) const;
  // The last list or watch error, empty while healthy.
  std::string last_error() const;

 private:
  void Run();
  void WaitUnlessStopping(absl::Duration delay);
  // Publishes `next` when it differs from the current set; runs on_change_ then.
  void Publish(NamespaceSet next);
  void SetError(std::string error);

  KubeApi* const api_;
  const Options options_;
  std::function<void()> on_change_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const NamespaceSet> namespaces_ ABSL_GUARDED_BY(mu_) =
      std::make_shared<const NamespaceSet>();
  bool synced_ ABSL_GUARDED_BY(mu_) = false;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

// The name and labels of a Namespace object; nullopt when it has no name.
std::optional<std::pair<std::string, Labels>> NamespaceFromJson(const Json& object);

}  // namespace certcast::kube

#endif  // CERTCAST_KUBE_NAMESPACE_CACHE_H_
