// KubernetesVersionStore keeps each certificate's version history in a Secret of the server's
// namespace (`--store=kubernetes://NAMESPACE/NAME`): Secret NAME-CERTIFICATE, type Opaque, key
// `state` holding exactly the bytes the embedded store writes to its file (EncodeState), labels
// app.kubernetes.io/managed-by=certcast and certcast.io/store=NAME. Every write is a
// compare-and-swap on the Secret's resourceVersion (CertificateState::store_revision), so two
// replicas can never store different material under one version number.
//
// RBAC: get, update, list, watch on those Secrets (resourceNames), and create on Secrets in the
// namespace (create cannot be limited by name).
// Thread-safe (stateless between calls). Does not own `api`.
#ifndef CERTCAST_SERVER_KUBE_STORE_H_
#define CERTCAST_SERVER_KUBE_STORE_H_

#include <optional>
#include <string>

#include "kube/api.h"
#include "server/version_store.h"

namespace certcast {

// Where a Kubernetes store lives, from `kubernetes://NAMESPACE/NAME`.
struct KubeStoreLocation {
  std::string ns;
  std::string name;  // the Lease's name and the prefix of the state Secrets
};

// Parses `kubernetes://NAMESPACE/NAME`. InvalidArgument naming the flag value otherwise (NAME and
// NAMESPACE must be DNS labels).
absl::StatusOr<KubeStoreLocation> ParseKubeStoreUrl(const std::string& url);

inline constexpr char kStoreLabel[] = "certcast.io/store";
inline constexpr char kWriterAnnotation[] = "certcast.io/written-by";
inline constexpr char kClaimAnnotation[] = "certcast.io/claimed-by";
// The largest state a Secret may take here, well under the API's 1 MiB object limit.
inline constexpr size_t kMaxStoredStateBytes = 512 * 1024;

class KubernetesVersionStore final : public VersionStore {
 public:
  // `writer` (this replica's identity) is recorded on every write, for operators.
  KubernetesVersionStore(kube::KubeApi* api, KubeStoreLocation location, std::string writer,
                         int history_limit = FileVersionStore::kDefaultHistoryLimit)
      : api_(api),
        location_(std::move(location)),
        writer_(std::move(writer)),
        history_limit_(history_limit) {}

  // The Secret's state, with store_revision set to its resourceVersion; nullopt when there is
  // no Secret; DataLoss naming the Secret when it holds no valid state; the API's error (e.g.
  // Unavailable) otherwise.
  absl::StatusOr<std::optional<CertificateState>> Load(const std::string& name) override;
  // Creates the Secret (store_revision empty) or replaces it at store_revision. Aborted when
  // another replica wrote (or deleted) it since; InvalidArgument when the encoded state would
  // exceed kMaxStoredStateBytes.
  absl::StatusOr<std::string> Save(const std::string& name, const CertificateState& state) override;
  // Rewrites the Secret unchanged but for the claim annotation (this writer and the time), moving
  // its resourceVersion.
  absl::StatusOr<std::string> Claim(const std::string& name, const std::string& revision) override;
  int history_limit() const override { return history_limit_; }

  // NAME-CERTIFICATE.
  std::string SecretName(const std::string& certificate) const;
  const KubeStoreLocation& location() const { return location_; }

 private:
  kube::KubeApi* const api_;
  const KubeStoreLocation location_;
  const std::string writer_;
  const int history_limit_;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_KUBE_STORE_H_
