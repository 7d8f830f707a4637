// CertcastServer wires the server's parts together (the composition root used by main and by
// in-process tests): version store, publisher, source watchers, distribution hub, gRPC services
// with health and reflection, the plain-HTTP probe endpoint, and the metrics collectable (main
// serves it).
// Thread-safe accessors; Shutdown once. Does not own `fs` or `clock`.
#ifndef CERTCAST_SERVER_SERVER_H_
#define CERTCAST_SERVER_SERVER_H_

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/filesystem.h"
#include "common/http_probe_server.h"
#include "common/leader_election.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "kube/api.h"
#include "server/authentication.h"
#include "server/authorizer.h"
#include "server/distribution.h"
#include "server/etcd_client.h"
#include "server/fleet.h"
#include "server/fleet_exchange.h"
#include "server/inspection.h"
#include "server/listener.h"
#include "server/metrics.h"
#include "server/policy.h"
#include "server/publisher.h"
#include "server/replication.h"
#include "server/rollout.h"
#include "server/source.h"
#include "server/version_store.h"

namespace certcast {

struct ServerOptions {
  struct Certificate {
    std::string name;
    std::string source;  // a directory, or secret:NAMESPACE/NAME (read through the API)
    std::vector<std::string> required_dns_names;
  };
  // Kubernetes API access for secret: sources; empty values mean in-cluster defaults.
  std::string kube_api_url;
  std::string kube_token_file;
  std::string kube_ca_file;
  std::string listen = "0.0.0.0:8443";
  std::vector<Certificate> certificates;
  std::string state_dir = "./certcast-state";
  // Empty: the embedded state directory (one replica). "kubernetes://NAMESPACE/NAME": replicas
  // share the version history through the Kubernetes API (server/kube_replication.h).
  // "etcd://HOST:PORT[,HOST:PORT...]/PREFIX": through etcd (server/etcd_replication.h).
  std::string store;
  // Leader election with a shared store. The Lease or leader key comes from `store`; an empty
  // identity becomes MakeReplicaIdentity().
  LeaderElectionOptions election;
  // With an etcd store: client TLS, and the AES-256 keys that seal stored states (required).
  EtcdTlsFiles store_tls;
  std::string store_encryption_key_file;
  std::string store_encryption_previous_key_file;
  std::string tls_cert;
  std::string tls_key;
  std::string client_ca;       // client certificates verified (required unless tokens are accepted)
  std::string policy_file;     // who may receive what; without it a TLS server hands out nothing
  std::string token_audience;  // accept ServiceAccount tokens for this audience (TokenReview)
  std::string token_map_file;  // accept static tokens listed (by hash) in this file
  std::string trust_domain;    // client certificates must be from this SPIFFE domain ("*": any)
  std::set<std::string> admins;  // --admin: admins besides the policy's
  // Follow every namespace and its labels through the Kubernetes API: namespaceSelector grants
  // and the granted-but-missing view (Inspection/ListNamespaces, certcast_namespaces_missing).
  bool watch_namespaces = false;
  bool insecure = false;
  std::string health_listen;  // empty: no plain-HTTP probe endpoint
  absl::Duration tls_refresh_interval = absl::Seconds(10);
  absl::Duration client_retention = absl::Hours(1);
  FleetExchange::Options fleet_exchange;  // with a shared --store
  DistributionHub::Options distribution;
  PublisherOptions publisher;
  SourceWatcher::Options watcher;
  DirectorySource::Options directory;
};

class CertcastServer {
 public:
  // Validates `options`, restores persisted versions, evaluates every source once, and starts
  // serving. InvalidArgument for bad options, DataLoss for corrupt state, Unavailable when the
  // port cannot be bound.
  static absl::StatusOr<std::unique_ptr<CertcastServer>> Start(ServerOptions options,
                                                               Filesystem* fs, const Clock* clock);
  ~CertcastServer();

  // Stops watching sources, lets streams finish for up to `grace`, then cancels the rest.
  void Shutdown(absl::Duration grace);

  // Re-reads the policy file (SIGHUP). The previous policy stays when the file does not load.
  absl::Status ReloadPolicy();

  int port() const { return port_; }
  int health_port() const { return health_port_; }
  Publisher& publisher() { return *publisher_; }
  DistributionHub& hub() { return *hub_; }
  Fleet& fleet() { return *fleet_; }
  RolloutController& rollout() { return *rollout_; }
  // What /metrics exports; it reads this server's parts, so stop scraping before destroying it.
  std::shared_ptr<prometheus::Collectable> metrics() const { return metrics_; }
  // With a shared store: the replication and its gauges; null otherwise.
  Replication* replication() { return replication_.get(); }
  std::shared_ptr<prometheus::Collectable> replication_metrics() const {
    return replication_metrics_;
  }
  SourceWatcher& watcher(const std::string& name);

 private:
  class Readiness;
  CertcastServer() = default;
  // The Kubernetes API client, created on first use from the kube_* options.
  absl::StatusOr<kube::KubeApi*> Kube(Filesystem* fs);
  // Authorizer, policy file, token map and authenticator from the options.
  absl::Status SetUpIdentities(Filesystem* fs, const Clock* clock,
                               const std::vector<std::string>& names);

  ServerOptions options_;
  std::unique_ptr<kube::KubeApi> kube_;  // only when a source reads through the API
  std::unique_ptr<VersionStore> store_;  // the embedded store
  // The shared store and its election; before publisher_, which writes through it.
  std::unique_ptr<Replication> replication_;
  std::unique_ptr<Fleet> fleet_;
  std::unique_ptr<FleetExchange> fleet_exchange_;  // with a shared --store
  std::unique_ptr<PolicyFile> policy_;
  std::unique_ptr<kube::NamespaceCache> namespaces_;  // --watch-namespaces
  std::unique_ptr<Coverage> coverage_;
  std::unique_ptr<TokenMap> token_map_;
  std::unique_ptr<TokenReviewer> token_reviewer_;
  std::unique_ptr<Authorizer> authorizer_;
  std::unique_ptr<DistributionHub> hub_;
  // After the hub: its workers finish hellos on streams, so it must go first.
  std::unique_ptr<Authenticator> authenticator_;
  std::unique_ptr<RolloutController> rollout_;  // stopped in Shutdown
  std::unique_ptr<Readiness> readiness_;
  std::unique_ptr<Publisher> publisher_;
  std::vector<std::pair<std::string, std::unique_ptr<SourceWatcher>>> watchers_;
  std::unique_ptr<DistributionService> distribution_service_;
  std::unique_ptr<InspectionService> inspection_service_;
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<Listener> listener_;  // stopped before grpc_server_ shuts down
  std::unique_ptr<grpc::experimental::ExternalConnectionAcceptor> connection_acceptor_;
  std::unique_ptr<grpc::Server> grpc_server_;
  std::shared_ptr<ServerMetrics> metrics_;
  std::shared_ptr<ReplicationMetrics> replication_metrics_;
  HttpProbeServer probes_;
  int port_ = 0;
  int health_port_ = 0;
  bool shut_down_ = false;
};

// Certificate names become file names and label values: [a-z0-9]([a-z0-9.-]*[a-z0-9])?, ≤253.
bool ValidCertificateName(const std::string& name);

// The channel arguments of the streams' server (keepalive paced by `heartbeat`, no bandwidth
// probes, 4 KiB TLS records, small read buffers, no channelz or compression); each is explained
// where it is set. certcast-grpc-floor uses them too, so its floor is certcast's transport.
void AddStreamChannelArguments(absl::Duration heartbeat, grpc::ServerBuilder* builder);

}  // namespace certcast

#endif  // CERTCAST_SERVER_SERVER_H_
