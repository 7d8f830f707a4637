// SecretSource reads a certificate from a kubernetes.io/tls Secret through the API (for
// `--certificate=NAME=secret:NAMESPACE/SECRET`) and notices changes with a watch on that one
// Secret. Needs only get, list and watch on it (resourceNames + field selector).
// Thread-safe. Does not own `api`.
#ifndef CERTCAST_SERVER_SECRET_SOURCE_H_
#define CERTCAST_SERVER_SECRET_SOURCE_H_

#include <memory>
#include <string>

#include "absl/synchronization/mutex.h"
#include "kube/api.h"
#include "kube/watcher.h"
#include "server/source.h"

namespace certcast {

class SecretSource final : public CertificateSource {
 public:
  SecretSource(kube::KubeApi* api, std::string ns, std::string name,
               kube::NamedObjectWatcher::Options watch = {});
  ~SecretSource() override;

  // NotFound (reason "missing") when the Secret does not exist; InvalidArgument (reason
  // "malformed_secret") when it lacks tls.crt/tls.key; Unavailable/PermissionDenied (reason
  // "unreadable") when the API refuses or cannot be reached.
  absl::StatusOr<CertificateMaterial> Read() override;
  // metadata.resourceVersion of the Secret the last successful Read returned.
  std::string LastReadRevision() override;
  bool WaitForChange(absl::Time deadline) override;
  void Interrupt() override;
  std::string Describe() const override { return "secret:" + namespace_ + "/" + name_; }

  kube::WatcherCounters watch_counters() { return watcher_->counters(); }

 private:
  kube::KubeApi* const api_;
  const std::string namespace_;
  const std::string name_;
  absl::Mutex mu_;
  bool changed_ ABSL_GUARDED_BY(mu_) = false;
  bool interrupted_ ABSL_GUARDED_BY(mu_) = false;
  std::string last_revision_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<kube::NamedObjectWatcher> watcher_;
};

// Parses "secret:NAMESPACE/NAME". InvalidArgument otherwise.
absl::Status ParseSecretReference(const std::string& text, std::string* ns, std::string* name);

}  // namespace certcast

#endif  // CERTCAST_SERVER_SECRET_SOURCE_H_
