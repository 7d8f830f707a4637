#include "server/kube_replication.h"

#include <cctype>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "kube/secret.h"

namespace certcast {

KubeReplication::KubeReplication(kube::KubeApi* api, const Clock* clock, KubeStoreLocation location,
                                 LeaderElectionOptions election)
    : ElectedReplication(&lock_, clock, election),
      api_(api),
      location_(location),
      identity_(election.identity),
      store_(api, location, election.identity),
      lock_(api, location.ns, location.name, election) {}

KubeReplication::~KubeReplication() { Stop(); }

void KubeReplication::Start(const std::vector<std::string>& certificates, Callbacks callbacks) {
  StartElection(certificates, std::move(callbacks));
  for (const std::string& name : certificates) {
    auto watcher = std::make_unique<kube::NamedObjectWatcher>(
        api_, kube::SecretsPath(store_.location().ns), store_.SecretName(name),
        [this, name](const std::string&) { MarkChanged(name); });
    watcher->Start();
    watchers_.push_back(std::move(watcher));
  }
}

void KubeReplication::Stop() {
  if (stopped_) return;
  stopped_ = true;
  for (auto& watcher : watchers_) watcher->Stop();
  StopElection();
}

namespace {

// `identity` as a ConfigMap key: letters, digits, '-', '_' and '.'.
std::string KeyOf(const std::string& identity) {
  std::string key;
  for (char c : identity) {
    key += std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.' ? c
                                                                                           : '-';
  }
  return key.substr(0, 200);
}

}  // namespace

std::string KubeReplication::FleetPath() const {
  return absl::StrCat("/api/v1/namespaces/", location_.ns, "/configmaps/", location_.name,
                      "-fleet");
}

absl::Status KubeReplication::PublishFleetSummary(const std::string& summary) {
  const std::string encoded = absl::Base64Escape(summary);
  absl::Status status;
  // Replicas share the object: a read-modify-write with the resourceVersion, retried on a
  // conflict with another replica's write.
  for (int attempt = 0; attempt < 5; ++attempt) {
    absl::StatusOr<kube::Json> object = api_->Request("GET", FleetPath());
    if (absl::IsNotFound(object.status())) {
      kube::Json created = {
          {"apiVersion", "v1"},
          {"kind", "ConfigMap"},
          {"metadata",
           {{"name", absl::StrCat(location_.name, "-fleet")},
            {"namespace", location_.ns},
            {"labels", {{"app.kubernetes.io/managed-by", "certcast"}}}}},
          {"binaryData", {{KeyOf(identity_), encoded}}}};
      status = api_->Request("POST", absl::StrCat("/api/v1/namespaces/", location_.ns,
                                                  "/configmaps"),
                             &created)
                   .status();
      if (!absl::IsAlreadyExists(status)) return status;
      continue;  // another replica created it first
    }
    if (!object.ok()) return object.status();
    (*object)["binaryData"][KeyOf(identity_)] = encoded;
    status = api_->Request("PUT", FleetPath(), &*object).status();
    if (!kube::IsConflict(status)) return status;
  }
  return status;
}

absl::StatusOr<std::map<std::string, std::string>> KubeReplication::FleetSummaries() {
  absl::StatusOr<kube::Json> object = api_->Request("GET", FleetPath());
  if (absl::IsNotFound(object.status())) return std::map<std::string, std::string>();
  if (!object.ok()) return object.status();
  std::map<std::string, std::string> summaries;
  const kube::Json& data = kube::Member(*object, "binaryData");
  for (auto it = data.begin(); data.is_object() && it != data.end(); ++it) {
    std::string bytes;
    if (it.key() == KeyOf(identity_) || !it.value().is_string() ||
        !absl::Base64Unescape(it.value().get_ref<const std::string&>(), &bytes)) {
      continue;
    }
    summaries[it.key()] = std::move(bytes);
  }
  return summaries;
}

absl::Status KubeReplication::RemoveFleetSummaries(const std::vector<std::string>& replicas) {
  absl::StatusOr<kube::Json> object = api_->Request("GET", FleetPath());
  if (absl::IsNotFound(object.status())) return absl::OkStatus();
  if (!object.ok()) return object.status();
  for (const std::string& replica : replicas) (*object)["binaryData"].erase(KeyOf(replica));
  // With the resourceVersion read: a conflict leaves them for the next round.
  return api_->Request("PUT", FleetPath(), &*object).status();
}

}  // namespace certcast
