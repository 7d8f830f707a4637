// SecretSink writes the certificate as a kubernetes.io/tls Secret in the client's namespace
// (DESIGN.md "Kubernetes Secret written by the client"). It never overwrites a Secret that
// certcast does not manage, updates with the API's optimistic concurrency (resourceVersion,
// re-read and retried on conflict), and skips the write when the Secret already matches.
//
// Start() also watches the Secret (fieldSelector=metadata.name=NAME, the only list/watch the
// Role allows) and restores the last applied version when someone deletes or edits it.
// Thread-safe: Apply and the restoring watcher serialize on one mutex. Does not own `api`.
#ifndef CERTCAST_CLIENT_SECRET_SINK_H_
#define CERTCAST_CLIENT_SECRET_SINK_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "client/sink.h"
#include "kube/api.h"
#include "kube/watcher.h"

namespace certcast {

struct SecretSinkCounters {
  uint64_t writes = 0;     // creates and updates
  uint64_t conflicts = 0;  // 409s retried
  uint64_t restores = 0;   // writes caused by someone else's delete or edit
};

class SecretSink final : public Sink {
 public:
  struct Options {
    std::string namespace_;
    std::string secret_name;
    int max_conflict_retries = 5;
    absl::Duration watch_idle_timeout = absl::Seconds(90);
    // Appended to a 403 instead of the client's own Role: what the namespace must grant (the
    // shared writer names the RoleBinding a tenant creates to opt in).
    std::string permission_hint = {};
  };
  SecretSink(kube::KubeApi* api, Options options) : api_(api), options_(std::move(options)) {}
  ~SecretSink() override { Stop(); }

  std::string name() const override { return "secret"; }
  // Errors: AlreadyExists for a Secret certcast does not manage; PermissionDenied naming the
  // missing permission; Unavailable when the API server cannot be reached; Aborted after
  // too many conflicts.
  absl::StatusOr<ApplyResult> Apply(const VersionedMaterial& version) override;
  absl::StatusOr<std::string> HeldFingerprint(const std::string& name) override;
  std::string LocationOf(const std::string&) const override { return ""; }
  // Deletes the Secret when certcast manages it (needs delete on it), and forgets the version
  // so the watcher does not restore it.
  absl::Status Remove(const std::string& name) override;

  // Starts and stops the restoring watch.
  void Start();
  void Stop();
  SecretSinkCounters counters();

 private:
  absl::StatusOr<ApplyResult> ApplyLocked(const VersionedMaterial& version)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Re-applies the last applied version when the Secret no longer matches it.
  void RestoreIfChanged(const std::string& why);
  std::string Describe() const;
  // "NAMESPACE/NAME" of the Secret, for log fields.
  std::string SecretRef() const;

  kube::KubeApi* const api_;
  const Options options_;
  absl::Mutex mu_;
  std::optional<VersionedMaterial> applied_ ABSL_GUARDED_BY(mu_);
  SecretSinkCounters counters_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<kube::NamedObjectWatcher> watcher_;
};

}  // namespace certcast

#endif  // CERTCAST_CLIENT_SECRET_SINK_H_
