// certcast-server: the composition root. Parses flags, configures logging, starts a
// CertcastServer and waits for SIGTERM/SIGINT.
#include <signal.h>
#include <stdlib.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/build_info.h"
#include "common/clock.h"
#include "common/credential_files.h"
#include "common/directories.h"
#include "common/filesystem.h"
#include "common/flags_util.h"
#include "common/logging.h"
#include "common/process.h"
#include "kube/flags.h"
#include "metrics/endpoint.h"
#include "server/server.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:8443",
          "HOST:PORT for the gRPC API (TLS unless --insecure).");
ABSL_FLAG(std::vector<std::string>, certificate, {},
          "NAME=DIR or NAME=secret:NAMESPACE/SECRET, repeatable: distribute under NAME the "
          "certificate in DIR (a mounted kubernetes.io/tls Secret: tls.crt, tls.key, optional "
          "ca.crt) or in that Secret, read and watched through the Kubernetes API.");
ABSL_FLAG(std::vector<std::string>, require_san, {},
          "NAME=DNSNAME, repeatable: refuse material for NAME whose leaf "
          "does not cover DNSNAME.");
ABSL_FLAG(std::string, state_dir, "./certcast-state",
          "Directory for persisted versions (created 0700; files 0600).");
ABSL_FLAG(std::string, store, "",
          "Where the version history lives. Empty: --state-dir (one replica). "
          "kubernetes://NAMESPACE/NAME: Secrets NAME-CERTIFICATE in NAMESPACE, shared by every "
          "replica; the Lease NAME elects the one that publishes. "
          "etcd://HOST:PORT[,HOST:PORT...]/PREFIX: keys under PREFIX in etcd, encrypted; the "
          "leader key PREFIX/leader elects the one that publishes (docs/REPLICAS.md).");
ABSL_FLAG(std::string, store_ca, "",
          "With an etcd --store: CA bundle (PEM) that verifies etcd's serving certificate "
          "(TLS to etcd). Empty: plaintext unless --store-cert is set.");
ABSL_FLAG(std::string, store_cert, "",
          "With an etcd --store: client certificate (PEM) presented to etcd (with --store-key).");
ABSL_FLAG(std::string, store_key, "", "With an etcd --store: private key (PEM) of --store-cert.");
ABSL_FLAG(std::string, store_encryption_key_file, "",
          "With an etcd --store (required): file holding the base64 of 32 random bytes, the "
          "AES-256-GCM key that encrypts every stored state before it is written to etcd.");
ABSL_FLAG(std::string, store_encryption_previous_key_file, "",
          "With an etcd --store: a second key file accepted for reading only, for key rotation "
          "(docs/REPLICAS.md); values are re-encrypted with the current key when a leader "
          "takes over.");
ABSL_FLAG(absl::Duration, leader_lease_duration, absl::Seconds(15),
          "With a shared --store: how long the leader's Lease lasts without renewal before "
          "another replica takes over (whole seconds).");
ABSL_FLAG(absl::Duration, leader_renew_deadline, absl::Seconds(10),
          "With a shared --store: a leader that could not renew its Lease for this long stops "
          "publishing (shorter than --leader-lease-duration).");
ABSL_FLAG(absl::Duration, leader_retry_period, absl::Seconds(2),
          "With a shared --store: how often the leader renews and the others try to take over.");
ABSL_FLAG(absl::Duration, fleet_sync_interval, absl::Seconds(2),
          "With a shared --store: how often a replica writes its clients' summary (when it "
          "changed; at least every 5 intervals) and reads the other replicas', so that any "
          "replica lists the whole fleet and a rollout counts every client. A summary "
          "unchanged for 15 intervals is a dead replica's.");
ABSL_FLAG(std::string, tls_cert, "", "Serving certificate chain (PEM); re-read when it changes.");
ABSL_FLAG(std::string, tls_key, "", "Serving private key (PEM); re-read when it changes.");
ABSL_FLAG(std::string, client_ca, "",
          "CA bundle (PEM): when set, clients must present a certificate it verifies; the "
          "client's SPIFFE ID is recorded.");
ABSL_FLAG(std::string, policy, "",
          "Policy file (YAML): which namespaces may receive which certificate, and the admins. "
          "Re-read when it changes and on SIGHUP. Without it a TLS server hands out nothing.");
ABSL_FLAG(std::vector<std::string>, admin, {},
          "IDENTITY, repeatable: an admin in addition to the policy's admins (e.g. "
          "system:serviceaccount:NS:certcast-operator; the manifests set it from the pod's "
          "namespace).");
ABSL_FLAG(bool, watch_namespaces, false,
          "Follow every namespace and its labels through the Kubernetes API (read-only "
          "get/list/watch on namespaces): needed for namespaceSelector grants in the policy, and "
          "shows granted namespaces without a client (Inspection/ListNamespaces, "
          "certcast_namespaces_missing).");
ABSL_FLAG(std::string, token_audience, "",
          "Accept Kubernetes ServiceAccount tokens (authorization: Bearer) for this audience, "
          "checked with the TokenReview API (needs the system:auth-delegator binding).");
ABSL_FLAG(std::string, token_map, "",
          "File mapping SHA-256 hashes of static tokens to a namespace and name, for hosts "
          "outside Kubernetes (the file never holds the tokens).");
ABSL_FLAG(std::string, trust_domain, "",
          "SPIFFE trust domain of client certificates (e.g. cluster.local): certificates from "
          "other domains are refused. Required with --client-ca; \"*\" accepts any domain the "
          "--client-ca verifies (with a warning).");
ABSL_FLAG(int, max_streams_per_identity, 16,
          "Concurrent Subscribe streams one identity may hold per namespace (RESOURCE_EXHAUSTED "
          "beyond; a shared writer holds one per namespace it serves).");
ABSL_FLAG(int, max_hello_pending_per_connection, 64,
          "Streams one connection may hold open before their hello is authenticated "
          "(RESOURCE_EXHAUSTED beyond).");
ABSL_FLAG(int, max_hello_pending_per_address, 512,
          "Streams one peer address may hold open, over all its connections, before their hello "
          "is authenticated (RESOURCE_EXHAUSTED beyond).");
ABSL_FLAG(bool, insecure, false,
          "Serve without TLS. Private keys then cross the network in plaintext: local "
          "development only.");
ABSL_FLAG(std::string, health_listen, "",
          "HOST:PORT for plain-HTTP /healthz and /readyz (Kubernetes probes cannot speak TLS). "
          "Empty: disabled.");
ABSL_FLAG(std::string, metrics_listen, "",
          "HOST:PORT for Prometheus metrics (plain HTTP, GET /metrics; port 0 picks one). Empty: "
          "disabled.");
ABSL_FLAG(absl::Duration, expiry_warning, absl::Hours(24 * 14),
          "Warn (log once, GetCertificate expiring_soon) when the current version expires within "
          "this time; the server keeps serving it.");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::Seconds(30),
          "Interval of heartbeats on every stream; clients treat two missed intervals as a dead "
          "stream.");
ABSL_FLAG(absl::Duration, hello_timeout, absl::Seconds(10),
          "A stream that sends no hello within this time is ended with DEADLINE_EXCEEDED.");
ABSL_FLAG(absl::Duration, quiet_period, absl::Milliseconds(200),
          "After a change in a source directory, wait until it has been quiet this long.");
ABSL_FLAG(absl::Duration, confirm_delay, absl::Seconds(2),
          "Invalid source content counts as a rejection only if it persists this long.");
ABSL_FLAG(absl::Duration, source_resync_interval, absl::Minutes(2),
          "Read every source again this often even without a change notification, so a missed "
          "watch event or inotify event delays a renewal by at most this long.");
ABSL_FLAG(absl::Duration, client_retention, absl::Hours(1),
          "How long ListClients keeps showing clients after they disconnect.");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(5),
          "On SIGTERM, how long open streams may take to finish before they are cancelled.");

namespace {

constexpr char kProgram[] = "certcast-server";

int Fail(absl::string_view message) { return certcast::FailStartup(kProgram, message); }

// --help: the README's flag tables, from the flag registry.
std::string Help() {
  return certcast::HelpText(
      absl::StrCat(
          certcast::VersionLine(kProgram),
          "\nDistributes TLS certificates to certcast clients over gRPC.\n\n"
          "Usage:\n"
          "  certcast-server --certificate=NAME=DIR --tls-cert=FILE --tls-key=FILE "
          "--policy=FILE [--client-ca=FILE --trust-domain=TD] [--token-audience=AUD] [flags]\n"
          "  certcast-server --certificate=NAME=DIR --insecure   (local development)"),
      {
          {"Certificates",
           {"certificate", "require_san", "state_dir", "expiry_warning", "quiet_period",
            "confirm_delay", "source_resync_interval"}},
          {"Serving and identities",
           {"listen", "tls_cert", "tls_key", "client_ca", "trust_domain", "token_audience",
            "token_map", "policy", "admin", "watch_namespaces", "max_streams_per_identity",
            "insecure"}},
          {"Streams",
           {"heartbeat_interval", "hello_timeout", "max_hello_pending_per_connection",
            "max_hello_pending_per_address", "client_retention", "shutdown_grace"}},
          {"Replicas (shared version store)",
           {"store", "leader_lease_duration", "leader_renew_deadline", "leader_retry_period",
            "store_ca", "store_cert", "store_key", "store_encryption_key_file",
            "store_encryption_previous_key_file", "fleet_sync_interval"}},
          {"Kubernetes API (secret: sources, TokenReview, the Kubernetes store)",
           {"kube_api_url", "kube_token_file", "kube_ca_file"}},
          {"Probes, metrics and logs",
           {"health_listen", "metrics_listen", "log_level", "log_format"}},
      },
      "Flags may be spelled with dashes or underscores (--state-dir, --state_dir). Durations "
      "take a unit: 500ms, 30s, 5m, 1h30m. SIGHUP re-reads the policy; SIGTERM drains streams.\n"
      "--version prints the version and commit; --helpfull lists abseil's own flags too.");
}

// gRPC 1.51 reads each connection into 8 KiB buffers that stay allocated while the connection
// idles (its "tcp_read_chunks" experiment, on by default). A server holds thousands of streams
// that idle for days and receive only hellos and ACKs, so it turns the experiment off and gRPC
// sizes reads by GRPC_ARG_TCP_READ_CHUNK_SIZE (server.cc) instead. Must run before gRPC reads
// its configuration and before any thread starts (setenv). An operator's GRPC_EXPERIMENTS stays.
void UseSizedReadBuffers() { setenv("GRPC_EXPERIMENTS", "-tcp_read_chunks", /*overwrite=*/0); }

}  // namespace

int main(int argc, char** argv) {
  UseSizedReadBuffers();
  certcast::HardenKeyHoldingProcess();
  certcast::KeepOpenSslUntilExit();
  certcast::RaiseOpenFileLimit();  // a socket per client stream
  // Block the control signals before anything can start a thread (gRPC starts its own while
  // credentials and channels are built): every thread inherits the mask, and this thread takes
  // them synchronously with sigwait once it is serving.
  const sigset_t signals = certcast::BlockControlSignals();
  if (std::optional<int> exit_status = certcast::BeginCommandLine(argc, argv, kProgram, Help)) {
    return *exit_status;
  }
  const std::vector<std::string> certificates =
      certcast::TakeRepeatedFlag(&argc, argv, "certificate");
  const std::vector<std::string> sans = certcast::TakeRepeatedFlag(&argc, argv, "require_san");
  const std::vector<std::string> admins = certcast::TakeRepeatedFlag(&argc, argv, "admin");
  absl::ParseCommandLine(argc, argv);

  if (absl::Status logging = certcast::ConfigureLoggingFromFlags(); !logging.ok()) {
    return Fail(logging.message());
  }

  certcast::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  std::map<std::string, std::vector<std::string>> required;
  for (const std::string& san : sans) {
    std::string name, dns;
    if (!certcast::SplitKeyValue(san, &name, &dns)) {
      return Fail(absl::StrCat("--require-san=", san, ": expected NAME=DNSNAME"));
    }
    required[name].push_back(dns);
  }
  for (const std::string& flag : certificates) {
    certcast::ServerOptions::Certificate certificate;
    if (!certcast::SplitKeyValue(flag, &certificate.name, &certificate.source)) {
      return Fail(
          absl::StrCat("--certificate=", flag, ": expected NAME=DIR or NAME=secret:NS/NAME"));
    }
    certificate.required_dns_names = required[certificate.name];
    required.erase(certificate.name);
    options.certificates.push_back(std::move(certificate));
  }
  if (!required.empty()) {
    return Fail(absl::StrCat("--require-san names certificate \"", required.begin()->first,
                             "\", which no --certificate configures"));
  }
  options.kube_api_url = absl::GetFlag(FLAGS_kube_api_url);
  options.kube_token_file = absl::GetFlag(FLAGS_kube_token_file);
  options.kube_ca_file = absl::GetFlag(FLAGS_kube_ca_file);
  options.state_dir = absl::GetFlag(FLAGS_state_dir);
  options.store = absl::GetFlag(FLAGS_store);
  options.election.lease_duration = absl::GetFlag(FLAGS_leader_lease_duration);
  options.election.renew_deadline = absl::GetFlag(FLAGS_leader_renew_deadline);
  options.election.retry_period = absl::GetFlag(FLAGS_leader_retry_period);
  options.store_tls.ca_file = absl::GetFlag(FLAGS_store_ca);
  options.store_tls.cert_file = absl::GetFlag(FLAGS_store_cert);
  options.store_tls.key_file = absl::GetFlag(FLAGS_store_key);
  options.store_encryption_key_file = absl::GetFlag(FLAGS_store_encryption_key_file);
  options.store_encryption_previous_key_file =
      absl::GetFlag(FLAGS_store_encryption_previous_key_file);
  options.tls_cert = absl::GetFlag(FLAGS_tls_cert);
  options.tls_key = absl::GetFlag(FLAGS_tls_key);
  options.client_ca = absl::GetFlag(FLAGS_client_ca);
  options.policy_file = absl::GetFlag(FLAGS_policy);
  options.token_audience = absl::GetFlag(FLAGS_token_audience);
  options.token_map_file = absl::GetFlag(FLAGS_token_map);
  options.trust_domain = absl::GetFlag(FLAGS_trust_domain);
  options.watch_namespaces = absl::GetFlag(FLAGS_watch_namespaces);
  for (const std::string& admin : admins) {
    if (admin.empty()) return Fail("--admin needs an identity (--admin=IDENTITY)");
    options.admins.insert(admin);
  }
  options.distribution.max_streams_per_identity = absl::GetFlag(FLAGS_max_streams_per_identity);
  options.distribution.max_awaiting_hello_per_connection =
      absl::GetFlag(FLAGS_max_hello_pending_per_connection);
  options.distribution.max_awaiting_hello_per_address =
      absl::GetFlag(FLAGS_max_hello_pending_per_address);
  options.insecure = absl::GetFlag(FLAGS_insecure);
  options.health_listen = absl::GetFlag(FLAGS_health_listen);
  options.distribution.heartbeat_interval = absl::GetFlag(FLAGS_heartbeat_interval);
  options.distribution.hello_timeout = absl::GetFlag(FLAGS_hello_timeout);
  options.watcher.quiet_period = absl::GetFlag(FLAGS_quiet_period);
  options.watcher.confirm_delay = absl::GetFlag(FLAGS_confirm_delay);
  options.watcher.resync_interval = absl::GetFlag(FLAGS_source_resync_interval);
  options.client_retention = absl::GetFlag(FLAGS_client_retention);
  options.fleet_exchange.interval = absl::GetFlag(FLAGS_fleet_sync_interval);
  options.fleet_exchange.keepalive = 5 * options.fleet_exchange.interval;
  options.publisher.expiry_warning = absl::GetFlag(FLAGS_expiry_warning);

  certcast::PosixFilesystem fs;
  // Credential files fail at start with the flag and the file named, not as failed handshakes.
  if (!options.tls_cert.empty() && !options.tls_key.empty()) {
    if (absl::Status checked = certcast::CheckKeyPairFiles(fs, "--tls-cert", options.tls_cert,
                                                           "--tls-key", options.tls_key);
        !checked.ok()) {
      return Fail(checked.message());
    }
  }
  if (!options.client_ca.empty()) {
    if (absl::Status checked = certcast::CheckCertificateFile(fs, "--client-ca", options.client_ca);
        !checked.ok()) {
      return Fail(checked.message());
    }
  }

  if (options.store.empty()) {
    if (absl::Status parents =
            certcast::CreateParentDirectories(fs, "--state-dir", options.state_dir);
        !parents.ok()) {
      return Fail(parents.message());
    }
  }
  certcast::RealClock clock;
  absl::StatusOr<std::unique_ptr<certcast::CertcastServer>> server =
      certcast::CertcastServer::Start(options, &fs, &clock);
  if (!server.ok()) return Fail(server.status().message());
  // Declared after the server, so it stops (no scrape runs) before the server goes.
  std::unique_ptr<certcast::metrics::MetricsEndpoint> metrics;
  if (const std::string listen = absl::GetFlag(FLAGS_metrics_listen); !listen.empty()) {
    absl::StatusOr<std::unique_ptr<certcast::metrics::MetricsEndpoint>> started =
        certcast::metrics::MetricsEndpoint::Start(listen);
    if (!started.ok()) {
      return Fail(absl::StrCat("--metrics-listen: ", started.status().message()));
    }
    metrics = *std::move(started);
    metrics->Register((*server)->metrics());
    if ((*server)->replication_metrics() != nullptr) {
      metrics->Register((*server)->replication_metrics());
    }
    certcast::LogInfo(absl::StrCat("metrics on port ", metrics->port()),
                      {{"port", metrics->port()}});
  }

  int signal_number = 0;
  while (sigwait(&signals, &signal_number) == 0 && signal_number == SIGHUP) {
    absl::Status reloaded = (*server)->ReloadPolicy();
    if (reloaded.ok()) {
      certcast::LogInfo("SIGHUP: policy re-read", {{"policy", options.policy_file}});
    } else {
      certcast::LogError("SIGHUP: the policy does not load; the previous policy stays",
                         {{"policy", options.policy_file}, {"error", reloaded}});
    }
  }
  certcast::LogInfo("signal received; draining streams",
                    {{"signal", signal_number}, {"grace", absl::GetFlag(FLAGS_shutdown_grace)}});
  const absl::Time signalled = absl::Now();
  (*server)->Shutdown(absl::GetFlag(FLAGS_shutdown_grace));
  metrics.reset();
  // How long the drain took, for sizing the pod's terminationGracePeriodSeconds.
  certcast::LogInfo("certcast-server stopped", {{"took", absl::Now() - signalled}});
  return 0;
}
