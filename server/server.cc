#include "server/server.h"

#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/logging.h"
#include "common/status_macros.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/server_builder.h"
#include "server/etcd_replication.h"
#include "server/kube_replication.h"
#include "server/secret_source.h"

namespace certcast {

bool ValidCertificateName(const std::string& name) {
  if (name.empty() || name.size() > 253) return false;
  for (char c : name) {
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '-' || c == '.')) return false;
  }
  return absl::ascii_isalnum(name.front()) && absl::ascii_isalnum(name.back());
}

// Forwards publications to the rollout controller (and from there to the hub) and tracks
// readiness (every certificate has a version) without calling back into the Publisher, whose lock
// is held during OnPublish.
class CertcastServer::Readiness final : public PublicationListener {
 public:
  Readiness(PublicationListener* next, size_t certificates)
      : next_(next), certificates_(certificates) {}

  // Forwarded: the rollout's start is stored in the same write as its version.
  std::optional<std::string> RolloutStateFor(const std::string& name, uint64_t version,
                                             bool pinned) override {
    return next_->RolloutStateFor(name, version, pinned);
  }

  void OnPublish(std::shared_ptr<const Publication> publication) override {
    const std::string name = publication->name;
    next_->OnPublish(std::move(publication));
    absl::MutexLock lock(&mu_);
    published_.insert(name);
    UpdateHealth();
  }

  void SetHealthService(grpc::HealthCheckServiceInterface* health) {
    absl::MutexLock lock(&mu_);
    health_ = health;
    UpdateHealth();
  }

  // A shared store that does not answer makes the replica NOT_SERVING (it keeps its streams).
  void SetStoreReachable(bool reachable) {
    absl::MutexLock lock(&mu_);
    store_reachable_ = reachable;
    UpdateHealth();
  }

 private:
  void UpdateHealth() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (health_ != nullptr) {
      health_->SetServingStatus(published_.size() == certificates_ && store_reachable_);
    }
  }

  PublicationListener* const next_;
  const size_t certificates_;
  absl::Mutex mu_;
  std::set<std::string> published_ ABSL_GUARDED_BY(mu_);
  bool store_reachable_ ABSL_GUARDED_BY(mu_) = true;
  grpc::HealthCheckServiceInterface* health_ ABSL_GUARDED_BY(mu_) = nullptr;
};

namespace {

absl::Status CheckOptions(const ServerOptions& options) {
  if (options.distribution.heartbeat_interval < absl::Milliseconds(100)) {
    return absl::InvalidArgumentError("--heartbeat-interval must be at least 100ms");
  }
  if (options.distribution.hello_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--hello-timeout must be positive");
  }
  if (options.watcher.quiet_period < absl::ZeroDuration() ||
      options.watcher.confirm_delay <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        "--quiet-period must not be negative and --confirm-delay must be positive");
  }
  if (options.watcher.resync_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--source-resync-interval must be positive");
  }
  if (options.certificates.empty()) {
    return absl::InvalidArgumentError("no certificate configured: pass --certificate=NAME=DIR");
  }
  std::set<std::string> names;
  for (const auto& certificate : options.certificates) {
    if (!ValidCertificateName(certificate.name)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "certificate name \"", certificate.name,
          "\" is invalid: use lowercase letters, digits, '-' and '.', starting and ending with "
          "a letter or digit"));
    }
    if (!names.insert(certificate.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("certificate \"", certificate.name, "\" is configured twice"));
    }
    if (certificate.source.empty()) {
      return absl::InvalidArgumentError(
          absl::StrCat("certificate \"", certificate.name, "\" has no source"));
    }
  }
  const bool tls = !options.tls_cert.empty() || !options.tls_key.empty();
  if (tls && (options.tls_cert.empty() || options.tls_key.empty())) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key must be given together");
  }
  if (!tls && !options.insecure) {
    return absl::InvalidArgumentError(
        "no TLS configured: pass --tls-cert and --tls-key, or --insecure for local development "
        "(private keys would cross the network in plaintext)");
  }
  if (tls && options.insecure) {
    return absl::InvalidArgumentError("--insecure cannot be combined with --tls-cert/--tls-key");
  }
  if (!options.client_ca.empty() && !tls) {
    return absl::InvalidArgumentError("--client-ca needs --tls-cert and --tls-key");
  }
  // A client CA may sign for several SPIFFE trust domains (clusters sharing a CA): without a
  // domain, cluster B's ns/tenant-a would be handed cluster A's tenant-a material.
  if (!options.client_ca.empty() && options.trust_domain.empty()) {
    return absl::InvalidArgumentError(
        "--client-ca needs --trust-domain (the SPIFFE trust domain of client certificates, e.g. "
        "cluster.local); --trust-domain=* accepts any domain the CA signs for (not recommended)");
  }
  if (options.publisher.expiry_warning < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("--expiry-warning must not be negative");
  }
  if (options.distribution.max_streams_per_identity < 1) {
    return absl::InvalidArgumentError("--max-streams-per-identity must be at least 1");
  }
  if (options.distribution.max_awaiting_hello_per_connection < 1 ||
      options.distribution.max_awaiting_hello_per_address < 1) {
    return absl::InvalidArgumentError(
        "--max-hello-pending-per-connection and --max-hello-pending-per-address must be at "
        "least 1");
  }
  return absl::OkStatus();
}

// Fails fast on unreadable or invalid serving files instead of failing every handshake later.
absl::Status CheckTlsFiles(Filesystem& fs, const ServerOptions& options) {
  CertificateMaterial material;
  ASSIGN_OR_RETURN(material.chain_pem, fs.ReadFile(options.tls_cert));
  ASSIGN_OR_RETURN(std::string key, fs.ReadFile(options.tls_key));
  material.key_pem = SecretBytes(key);
  CleanseString(&key);
  ValidationOptions validation;
  validation.now = absl::Now();
  absl::Status valid = ValidateMaterial("serving", material, validation).status();
  if (!valid.ok()) return Annotate(valid, "--tls-cert/--tls-key");
  if (!options.client_ca.empty()) RETURN_IF_ERROR(fs.ReadFile(options.client_ca).status());
  return absl::OkStatus();
}

std::shared_ptr<grpc::ServerCredentials> MakeCredentials(const ServerOptions& options) {
  if (options.insecure) return grpc::InsecureServerCredentials();
  const int refresh =
      static_cast<int>(std::max<int64_t>(1, absl::ToInt64Seconds(options.tls_refresh_interval)));
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider;
  if (options.client_ca.empty()) {
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        options.tls_key, options.tls_cert, refresh);
  } else {
    provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
        options.tls_key, options.tls_cert, options.client_ca, refresh);
  }
  grpc::experimental::TlsServerCredentialsOptions tls(provider);
  tls.watch_identity_key_cert_pairs();
  const bool tokens = !options.token_audience.empty() || !options.token_map_file.empty();
  if (options.client_ca.empty()) {
    tls.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  } else {
    tls.watch_root_certs();
    // With tokens too, a certificate is verified when presented but not required: every client
    // must still prove itself one way or the other (the authorizer checks that).
    tls.set_cert_request_type(tokens ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
                                     : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  }
  return grpc::experimental::TlsServerCredentials(tls);
}

}  // namespace

void AddStreamChannelArguments(absl::Duration heartbeat, grpc::ServerBuilder* builder) {
  // Idle streams live for days. A peer that went silent (crashed host, partition) is found by
  // HTTP/2 keepalive pings, paced by --heartbeat-interval like the client's own detection: a
  // ping every interval, answered within the interval (at least 5 s: a replica whose store is
  // unreachable answered pings late and lost healthy connections with 1 s; at most 20 s). The
  // server thus marks a silent client gone within an interval plus that timeout (default: 50 s).
  const absl::Duration ping_timeout = std::clamp(heartbeat, absl::Seconds(5), absl::Seconds(20));
  builder->AddChannelArgument(
      GRPC_ARG_KEEPALIVE_TIME_MS,
      static_cast<int>(absl::ToInt64Milliseconds(std::min(heartbeat, absl::Hours(24 * 24)))));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
                              static_cast<int>(absl::ToInt64Milliseconds(ping_timeout)));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10'000);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // No bandwidth-delay probing: the server only receives small hellos and ACKs, so a larger
  // receive window buys nothing, while the probe sent a PING after every ACK and woke a thread
  // for its answer (bench/README.md: half the recvmsg calls, futex calls and context switches
  // per push at 1,000 clients).
  builder->AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  // TLS records of at most 4 KiB instead of 16 KiB: the frame protector's buffers are per
  // connection and idle connections are the common case, while a push is rare. About 10 KiB less
  // per idle TLS client for about 17 % more instructions per TLS push (bench/README.md).
  builder->AddChannelArgument(GRPC_ARG_TSI_MAX_FRAME_SIZE, 4096);
  // A connection must finish its handshake within 70 s (gRPC's default: 120 s): certcast-client
  // waits up to 60 s for it (client/server_channel.cc), so a socket held longer belongs to a
  // client that left, and keeps a file descriptor from the next one.
  builder->AddChannelArgument(GRPC_ARG_SERVER_HANDSHAKE_TIMEOUT_MS, 70'000);
  // Memory per idle connection (bench/README.md: 36.9 -> 31.3 KiB per idle plaintext client,
  // 103.3 -> 96.7 KiB with TLS): reads start at 256 bytes and grow when a read fills its buffer
  // (gRPC doubles them), since a stream receives hellos and ACKs of a few dozen bytes; this needs
  // gRPC's tcp_read_chunks experiment off (main.cc). No channelz bookkeeping per connection
  // (certcast serves no channelz service), and no compression filter (nothing certcast sends is
  // compressed: key material must not be, and certificates gain nothing).
  builder->AddChannelArgument(GRPC_ARG_TCP_READ_CHUNK_SIZE, 256);
  builder->AddChannelArgument(GRPC_ARG_ENABLE_CHANNELZ, 0);
  builder->AddChannelArgument(GRPC_ARG_ENABLE_PER_MESSAGE_COMPRESSION, 0);
}

absl::StatusOr<std::unique_ptr<CertcastServer>> CertcastServer::Start(ServerOptions options,
                                                                      Filesystem* fs,
                                                                      const Clock* clock) {
  RETURN_IF_ERROR(CheckOptions(options));
  if (!options.insecure) RETURN_IF_ERROR(CheckTlsFiles(*fs, options));
  std::unique_ptr<CertcastServer> server(new CertcastServer());
  server->options_ = options;
  VersionStore* store = nullptr;
  if (options.store.empty()) {
    ASSIGN_OR_RETURN(server->store_, FileVersionStore::Open(fs, options.state_dir));
    store = server->store_.get();
  } else if (absl::StartsWith(options.store, "etcd://")) {
    ASSIGN_OR_RETURN(EtcdStoreLocation location, ParseEtcdStoreUrl(options.store));
    RETURN_IF_ERROR(CheckLeaderElectionOptions(options.election));
    ASSIGN_OR_RETURN(StoreEncryption encryption,
                     StoreEncryption::FromFiles(*fs, options.store_encryption_key_file,
                                                options.store_encryption_previous_key_file));
    // Each etcd call may take half the renew deadline (at most 5 s), so a leader notices a
    // silent etcd in time.
    const absl::Duration timeout = std::min(options.election.renew_deadline / 2, absl::Seconds(5));
    ASSIGN_OR_RETURN(std::unique_ptr<EtcdClient> client,
                     EtcdClient::Create(*fs, location.endpoints, options.store_tls, timeout));
    LeaderElectionOptions election = options.election;
    if (election.identity.empty()) election.identity = MakeReplicaIdentity();
    LogInfo("version history in etcd, encrypted; the leader key elects the replica that publishes",
            {{"store", options.store},
             {"identity", election.identity},
             {"encryption_key_id", encryption.key_id()},
             {"tls", options.store_tls.ca_file.empty() ? "no" : "yes"}});
    server->replication_ = std::make_unique<EtcdReplication>(
        std::move(client), clock, std::move(location), std::move(encryption), election);
    store = server->replication_->store();
    options.publisher.leadership = server->replication_.get();
  } else {
    ASSIGN_OR_RETURN(KubeStoreLocation location, ParseKubeStoreUrl(options.store));
    RETURN_IF_ERROR(CheckLeaderElectionOptions(options.election));
    ASSIGN_OR_RETURN(kube::KubeApi * api, server->Kube(fs));
    LeaderElectionOptions election = options.election;
    if (election.identity.empty()) election.identity = MakeReplicaIdentity();
    server->replication_ = std::make_unique<KubeReplication>(api, clock, location, election);
    store = server->replication_->store();
    options.publisher.leadership = server->replication_.get();
    LogInfo("version history in the Kubernetes API; the Lease elects the replica that publishes",
            {{"store", options.store}, {"identity", election.identity}});
  }
  server->fleet_ = std::make_unique<Fleet>(clock, options.client_retention);
  std::vector<std::string> names;
  for (const auto& certificate : options.certificates) names.push_back(certificate.name);
  RETURN_IF_ERROR(server->SetUpIdentities(fs, clock, names));
  server->hub_ =
      std::make_unique<DistributionHub>(names, options.distribution, server->fleet_.get(),
                                        server->authorizer_.get(), server->authenticator_.get());
  if (server->policy_ != nullptr) {
    DistributionHub* hub = server->hub_.get();
    server->policy_->OnChange([hub] { hub->ReauthorizeAll(); });
    server->policy_->Start();
  }
  PolicyFile* policy_file = server->policy_.get();
  RolloutController::Options rollout_options;
  if (server->replication_ != nullptr) {
    // Only the leader advances rollouts, counting every replica's clients.
    rollout_options.leadership = server->replication_.get();
    server->fleet_exchange_ = std::make_unique<FleetExchange>(
        server->fleet_.get(), server->replication_.get(), clock, options.fleet_exchange);
    const FleetExchange* exchange = server->fleet_exchange_.get();
    rollout_options.fleet_view_as_of = [exchange] { return exchange->ViewAsOf(); };
  }
  if (server->namespaces_ != nullptr) {
    const kube::NamespaceCache* namespaces = server->namespaces_.get();
    rollout_options.namespaces = [namespaces] { return namespaces->snapshot(); };
  }
  server->rollout_ = std::make_unique<RolloutController>(
      [policy_file]() -> std::shared_ptr<const Policy> {
        return policy_file == nullptr ? nullptr : policy_file->current();
      },
      server->fleet_.get(), server->hub_.get(), clock, rollout_options);
  if (server->namespaces_ != nullptr) {
    // A namespace that gains or loses a label gains or loses its grants, like a policy edit, and
    // may move to another rollout wave.
    DistributionHub* hub = server->hub_.get();
    RolloutController* rollout = server->rollout_.get();
    server->namespaces_->OnChange([hub, rollout] {
      hub->ReauthorizeAll();
      rollout->OnNamespacesChanged();
    });
    server->namespaces_->Start();
    // Label grants are unknown (denied) until the first list: wait for it a little, so that
    // clients reconnecting after a restart are not refused; /readyz says why while it lasts.
    if (!server->namespaces_->WaitSynced(absl::Seconds(10))) {
      LogWarn("namespaces not listed within 10s; namespaceSelector grants deny until they are",
              {{"error", server->namespaces_->last_error()}});
    }
  }
  server->readiness_ = std::make_unique<Readiness>(server->rollout_.get(), names.size());
  server->publisher_ =
      std::make_unique<Publisher>(store, clock, server->readiness_.get(), options.publisher);
  for (const auto& certificate : options.certificates) {
    CertificateSpec spec;
    spec.name = certificate.name;
    if (absl::StartsWith(certificate.source, "secret:")) {
      std::string ns, secret;
      RETURN_IF_ERROR(Annotate(ParseSecretReference(certificate.source, &ns, &secret),
                               absl::StrCat("certificate \"", certificate.name, "\"")));
      ASSIGN_OR_RETURN(kube::KubeApi * api, server->Kube(fs));
      spec.source = std::make_unique<SecretSource>(api, ns, secret);
    } else {
      spec.source = std::make_unique<DirectorySource>(fs, certificate.source, options.directory);
    }
    spec.required_dns_names = certificate.required_dns_names;
    RETURN_IF_ERROR(server->publisher_->AddCertificate(std::move(spec)));
  }
  Publisher* publisher = server->publisher_.get();
  server->rollout_->Restore(publisher);  // before any new version: rollouts resume where they were
  for (const std::string& name : names) {
    publisher->Evaluate(name, /*confirmed=*/true);
    auto watcher = std::make_unique<SourceWatcher>(
        publisher->SourceOf(name),
        [publisher, name](bool confirmed) { return publisher->Evaluate(name, confirmed); },
        options.watcher);
    watcher->Start();
    server->watchers_.emplace_back(name, std::move(watcher));
  }

  if (server->replication_ != nullptr) {
    Readiness* readiness = server->readiness_.get();
    Replication::Callbacks callbacks;
    // Runs on the replication's one follower thread: a failure warns once, its retries log at
    // debug, and the first success after failures says so.
    auto failing = std::make_shared<std::map<std::string, std::string>>();
    callbacks.stored_state_changed = [publisher, failing](const std::string& name) {
      absl::Status refreshed = publisher->Refresh(name);
      auto it = failing->find(name);
      if (refreshed.ok()) {
        if (it != failing->end()) {
          LogInfo("following the stored state again", {{"certificate", name}});
          failing->erase(it);
        }
      } else if (it == failing->end() || it->second != refreshed.message()) {
        LogWarn("cannot follow the stored state; retrying with backoff",
                {{"certificate", name}, {"error", refreshed}});
        (*failing)[name] = std::string(refreshed.message());
      } else {
        LogDebug("still cannot follow the stored state",
                 {{"certificate", name}, {"error", refreshed}});
      }
      return refreshed;
    };
    callbacks.started_leading = [publisher, names] {
      for (const std::string& name : names) {
        if (absl::Status taken = publisher->TakeOver(name); !taken.ok()) {
          LogWarn("cannot take over the stored state; the next write finds out",
                  {{"certificate", name}, {"error", taken}});
        }
        publisher->Evaluate(name, /*confirmed=*/true);
      }
    };
    callbacks.store_reachability_changed = [readiness](bool reachable) {
      readiness->SetStoreReachable(reachable);
    };
    server->replication_->Start(names, std::move(callbacks));
    server->replication_metrics_ = std::make_shared<ReplicationMetrics>(server->replication_.get());
    server->fleet_exchange_->Start();
  }

  server->distribution_service_ = std::make_unique<DistributionService>(
      server->hub_.get(), server->authorizer_.get(), server->authenticator_.get());
  server->coverage_ =
      std::make_unique<Coverage>(server->namespaces_.get(), server->policy_.get(),
                                 server->fleet_.get(), publisher, server->rollout_.get());
  server->inspection_service_ = std::make_unique<InspectionService>(
      publisher, server->fleet_.get(), server->authorizer_.get(), server->authenticator_.get(),
      server->coverage_.get(), server->rollout_.get());
  server->admin_service_ = std::make_unique<AdminService>(
      publisher, server->authorizer_.get(), server->authenticator_.get(), server->rollout_.get());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // certcast accepts connections itself and hands them to gRPC (server/listener.h says why).
  ASSIGN_OR_RETURN(server->listener_, Listener::Bind(options.listen));
  server->port_ = server->listener_->port();
  grpc::ServerBuilder builder;
  server->connection_acceptor_ = builder.experimental().AddExternalConnectionAcceptor(
      grpc::ServerBuilder::experimental_type::ExternalConnectionType::FROM_FD,
      MakeCredentials(options));
  builder.RegisterService(server->distribution_service_.get());
  builder.RegisterService(server->inspection_service_.get());
  builder.RegisterService(server->admin_service_.get());
  AddStreamChannelArguments(options.distribution.heartbeat_interval, &builder);
  // gRPC refuses anything larger outright; the hub gives a clearer error above its own limit.
  builder.SetMaxReceiveMessageSize(
      static_cast<int>(std::max<size_t>(options.distribution.max_message_bytes * 4, 256 * 1024)));
  server->grpc_server_ = builder.BuildAndStart();
  if (server->grpc_server_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("cannot start the gRPC server on ", options.listen));
  }
  server->listener_->Start(server->connection_acceptor_.get());
  server->readiness_->SetHealthService(server->grpc_server_->GetHealthCheckService());
  server->hub_->Start();
  server->rollout_->Start();
  server->metrics_ = std::make_shared<ServerMetrics>(
      publisher, server->fleet_.get(), server->hub_.get(), server->authorizer_.get(),
      server->coverage_.get(), server->rollout_.get(), server->listener_.get());

  if (!options.health_listen.empty()) {
    server->probes_.Handle("/healthz", [] { return absl::OkStatus(); });
    const bool hands_out_nothing = !options.insecure && options.policy_file.empty();
    Replication* replication = server->replication_.get();
    const kube::NamespaceCache* namespaces = server->namespaces_.get();
    server->probes_.Handle(
        "/readyz", [publisher, hands_out_nothing, replication, namespaces]() -> absl::Status {
          if (hands_out_nothing) {
            return absl::UnavailableError("no policy (--policy): this server hands out nothing");
          }
          if (replication != nullptr) {
            const ReplicationStatus status = replication->Status();
            if (!status.store_reachable) {
              return absl::UnavailableError(absl::StrCat(
                  "version store unreachable since ",
                  absl::FormatTime(absl::RFC3339_sec, status.unreachable_since,
                                   absl::UTCTimeZone()),
                  " (", status.store_error,
                  "): serving the versions this replica has to its streams, publishing nothing"));
            }
          }
          if (namespaces != nullptr && !namespaces->synced()) {
            return absl::UnavailableError(absl::StrCat(
                "namespaces not listed yet (--watch-namespaces): ", namespaces->last_error()));
          }
          std::string why;
          if (publisher->Ready(&why)) return absl::OkStatus();
          return absl::UnavailableError(why);
        });
    ASSIGN_OR_RETURN(server->health_port_, server->probes_.Start(options.health_listen));
  }
  if (options.insecure) {
    LogWarn(
        "*** --insecure: serving WITHOUT TLS. Private keys cross the network in plaintext. Use "
        "only for local development. ***",
        {{"listen", options.listen}});
  }
  LogInfo(
      absl::StrCat("certcast-server listening on port ", server->port_),
      {{"port", server->port_},
       {"transport", options.insecure ? "plaintext" : (options.client_ca.empty() ? "TLS" : "mTLS")},
       {"certificates", names.size()},
       {"store", options.store.empty() ? options.state_dir : options.store}});
  return server;
}

absl::StatusOr<kube::KubeApi*> CertcastServer::Kube(Filesystem* fs) {
  if (kube_ == nullptr) {
    ASSIGN_OR_RETURN(kube::KubeConfig config,
                     kube::KubeConfig::Resolve(options_.kube_api_url, options_.kube_token_file,
                                               options_.kube_ca_file));
    kube_ = std::make_unique<kube::CurlKubeApi>(std::move(config), fs);
  }
  return kube_.get();
}

absl::Status CertcastServer::SetUpIdentities(Filesystem* fs, const Clock* clock,
                                             const std::vector<std::string>& names) {
  if (!options_.policy_file.empty()) {
    ASSIGN_OR_RETURN(policy_, PolicyFile::Open(fs, options_.policy_file,
                                               std::set<std::string>(names.begin(), names.end())));
  }
  if (options_.insecure) {
    if (policy_ != nullptr) {
      LogWarn(
          "--insecure: clients have no identities, so the policy's grants and admins are "
          "NOT enforced (every client receives what it asks for); its rollouts apply",
          {{"policy", options_.policy_file}});
    }
    authorizer_ = std::make_unique<AllowAllAuthorizer>();
    return absl::OkStatus();
  }
  if (policy_ == nullptr) {
    LogWarn(
        "no --policy: this server hands out NO key material (every Subscribe is "
        "PERMISSION_DENIED) until a policy names who may receive what");
  }
  std::string trust_domain = options_.trust_domain;
  if (trust_domain == "*") {
    LogWarn(
        "--trust-domain=*: client certificates from ANY SPIFFE trust domain the --client-ca signs "
        "for are accepted; spiffe://other-cluster/ns/NS/... receives what NS may receive");
    trust_domain.clear();
  }
  if (options_.watch_namespaces) {
    ASSIGN_OR_RETURN(kube::KubeApi * api, Kube(fs));
    namespaces_ = std::make_unique<kube::NamespaceCache>(api);
  } else if (policy_ != nullptr && policy_->current()->UsesSelectors()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "policy ", options_.policy_file,
        " grants certificates by namespaceSelector, which needs --watch-namespaces (read-only "
        "get/list/watch on namespaces)"));
  }
  authorizer_ = std::make_unique<PolicyAuthorizer>(policy_.get(), trust_domain, options_.admins,
                                                   namespaces_.get());
  if (!options_.token_map_file.empty()) {
    ASSIGN_OR_RETURN(std::string text, fs->ReadFile(options_.token_map_file));
    ASSIGN_OR_RETURN(TokenMap map, TokenMap::Parse(text, options_.token_map_file));
    token_map_ = std::make_unique<TokenMap>(std::move(map));
  }
  if (!options_.token_audience.empty()) {
    ASSIGN_OR_RETURN(kube::KubeApi * api, Kube(fs));
    token_reviewer_ = std::make_unique<KubeTokenReviewer>(api, options_.token_audience);
  }
  Authenticator::Options authentication;
  authentication.jwt_audience = options_.token_audience;  // refuse non-JWTs before any review
  authenticator_ = std::make_unique<Authenticator>(token_reviewer_.get(), token_map_.get(), clock,
                                                   authentication);
  return absl::OkStatus();
}

absl::Status CertcastServer::ReloadPolicy() {
  if (policy_ == nullptr) return absl::FailedPreconditionError("no --policy to reload");
  return policy_->Reload();
}

SourceWatcher& CertcastServer::watcher(const std::string& name) {
  for (auto& [watched, watcher] : watchers_) {
    if (watched == name) return *watcher;
  }
  std::abort();
}

void CertcastServer::Shutdown(absl::Duration grace) {
  if (shut_down_) return;
  shut_down_ = true;
  for (auto& [name, watcher] : watchers_) watcher->Stop();
  if (rollout_ != nullptr) rollout_->Stop();  // before the lease goes: it persists as leader
  if (fleet_exchange_ != nullptr) fleet_exchange_->Stop();
  // Gives the lease up at once, so another replica publishes without waiting for it to expire.
  if (replication_ != nullptr) replication_->Stop();
  if (policy_ != nullptr) policy_->Stop();
  if (namespaces_ != nullptr) namespaces_->Stop();
  probes_.Stop();
  // New connections are refused from here: a restarting client goes to another replica.
  if (listener_ != nullptr) listener_->Stop();
  if (grpc_server_ != nullptr) {
    // Tell clients first, so they reconnect (to another replica, or to us after a restart)
    // instead of waiting for the grace period to cancel their streams.
    hub_->FinishAll(
        grpc::Status(grpc::StatusCode::UNAVAILABLE, "certcast-server is shutting down"));
    // The grace is for streams still writing. Once they are gone, other calls get at most 1 s
    // more: with the whole grace, gRPC's Shutdown waited for clients to close their connections
    // (5,000 clients: 4.6 s from SIGTERM to exit, now 1.6 s; bench/README.md).
    const absl::Time deadline = absl::Now() + grace;
    hub_->WaitUntilNoStreams(deadline);
    grpc_server_->Shutdown(absl::ToChronoTime(std::min(deadline, absl::Now() + absl::Seconds(1))));
    grpc_server_->Wait();
  }
  if (hub_ != nullptr) hub_->Stop();
}

CertcastServer::~CertcastServer() { Shutdown(absl::Seconds(1)); }

}  // namespace certcast
