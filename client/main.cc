// certcast-client: the composition root. Parses flags, wires the files sink, hooks, state and
// credentials into a Session, and runs it until SIGTERM. SIGHUP re-reads the TLS files.
#include <signal.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "client/credentials.h"
#include "client/file_sink.h"
#include "client/hooks.h"
#include "client/lazy_curl.h"
#include "client/metrics.h"
#include "client/rollout_hook.h"
#include "client/secret_sink.h"
#include "client/serving_verifier.h"
#include "client/session.h"
#include "client/shared_writer.h"
#include "client/state_store.h"
#include "common/build_info.h"
#include "common/clock.h"
#include "common/directories.h"
#include "common/filesystem.h"
#include "common/flags_util.h"
#include "common/http_probe_server.h"
#include "common/leader_election.h"
#include "common/logging.h"
#include "common/process.h"
#include "kube/flags.h"
#include "kube/lease_lock.h"
#include "metrics/endpoint.h"

ABSL_FLAG(std::string, server, "", "certcast-server address, HOST:PORT.");
ABSL_FLAG(std::string, namespace, "",
          "Namespace this client serves. Default: the ServiceAccount namespace file "
          "/var/run/secrets/kubernetes.io/serviceaccount/namespace.");
ABSL_FLAG(std::string, client_id, "", "Name of this client in the fleet. Default: the hostname.");
ABSL_FLAG(std::vector<std::string>, certificate, {}, "NAME, repeatable: a certificate to receive.");
ABSL_FLAG(std::string, output_dir, "",
          "Write certificate NAME under DIR/NAME/ (kubelet layout: tls.crt, tls.key, ca.crt).");
ABSL_FLAG(std::string, secret_name, "",
          "Write the certificate (exactly one --certificate) as this kubernetes.io/tls Secret in "
          "the client's namespace. May be combined with --output-dir.");
ABSL_FLAG(std::vector<std::string>, rollout_restart, {},
          "deployment/NAME, repeatable: after each applied version, restart that Deployment in "
          "the client's namespace (patches its pod template annotation certcast.io/version).");
ABSL_FLAG(std::string, health_listen, "",
          "HOST:PORT for plain-HTTP /healthz (the session loop is alive) and /readyz (the "
          "current version is applied to every sink). Empty: disabled.");
ABSL_FLAG(std::string, metrics_listen, "",
          "HOST:PORT for Prometheus metrics (plain HTTP, GET /metrics; port 0 picks one). Empty: "
          "disabled.");
ABSL_FLAG(std::string, state_dir, "./certcast-client-state",
          "Where the client records which versions it applied (0700).");
ABSL_FLAG(std::string, ca, "", "CA bundle (PEM) that verifies the server's certificate.");
ABSL_FLAG(std::string, tls_cert, "", "Client certificate chain (PEM) for mutual TLS.");
ABSL_FLAG(std::string, tls_key, "", "Client private key (PEM) for mutual TLS.");
ABSL_FLAG(std::string, tls_server_name, "",
          "Name to verify in the server certificate, when it differs from the --server host.");
ABSL_FLAG(bool, insecure, false,
          "Connect without TLS. Private keys then cross the network in plaintext: local "
          "development only.");
ABSL_FLAG(std::string, on_update, "",
          "Shell command run after each applied version (30 s timeout) with CERTCAST_CERTIFICATE, "
          "CERTCAST_VERSION, CERTCAST_FINGERPRINT and CERTCAST_DIR in its environment.");
ABSL_FLAG(std::string, signal, "",
          "Signal (e.g. HUP, USR1) sent after each applied version to the process in --pid-file.");
ABSL_FLAG(std::string, pid_file, "", "File holding the pid that --signal is sent to.");
ABSL_FLAG(std::string, token_file, "",
          "Bearer token sent to the server (a projected ServiceAccount token with audience "
          "certcast, or a static token); re-read on every connect.");
ABSL_FLAG(bool, delete_on_revoke, false,
          "When the server revokes this client's permission, delete its files and Secret instead "
          "of keeping the last material (which is the default, so the tenant's TLS keeps "
          "working).");
ABSL_FLAG(bool, combined_pem, false, "Also write tls.pem: the key, then the chain, in one file.");
ABSL_FLAG(std::vector<std::string>, verify, {},
          "HOST:PORT, repeatable: after each applied version and its hooks, connect with TLS "
          "and check that this endpoint serves the new leaf (the chain is not verified) before "
          "acknowledging it; NACK when it still serves another one after --verify-timeout.");
ABSL_FLAG(std::string, verify_server_name, "",
          "Server name (SNI) sent to the --verify endpoints. Default: the host of each.");
ABSL_FLAG(bool, shared_writer, false,
          "Run as the shared writer: write the certificate as Secret --secret-name into every "
          "namespace the server names for this identity (granted the certificate, and the "
          "policy lists this identity in its writers), one stream per namespace, while this "
          "replica holds the Lease --writer-lease in --namespace. A namespace opts in with a "
          "RoleBinding on that Secret (docs/SHARED-WRITER.md).");
ABSL_FLAG(std::string, writer_lease, "certcast-writer",
          "--shared-writer: the coordination.k8s.io Lease in --namespace that elects the one "
          "replica that writes.");
ABSL_FLAG(absl::Duration, writer_refresh_interval, absl::Seconds(30),
          "--shared-writer: how often to ask the server for the namespaces to write.");
ABSL_FLAG(absl::Duration, verify_timeout, absl::Minutes(2),
          "How long a --verify endpoint may take to serve an applied version before the client "
          "NACKs it (it keeps checking, and ACKs once the endpoint serves it).");

namespace {

constexpr char kServiceAccountNamespace[] =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

constexpr char kProgram[] = "certcast-client";

int Fail(absl::string_view message) { return certcast::FailStartup(kProgram, message); }

// --help: the README's flag table, from the flag registry.
std::string Help() {
  return certcast::HelpText(
      absl::StrCat(certcast::VersionLine(kProgram),
                   "\nReceives certificates from certcast-server and writes them as files "
                   "(kubelet layout) and/or a kubernetes.io/tls Secret.\n\n"
                   "Usage:\n"
                   "  certcast-client --server=HOST:PORT --ca=FILE [--token-file=FILE | "
                   "--tls-cert=FILE --tls-key=FILE] --certificate=NAME --output-dir=DIR [flags]\n"
                   "  e.g. certcast-client --server=certcast.certcast-system:8443 --ca=ca.crt "
                   "--token-file=/var/run/secrets/tokens/certcast --certificate=wildcard "
                   "--output-dir=/etc/tls"),
      {
          {"Server and identity",
           {"server", "namespace", "client_id", "ca", "tls_cert", "tls_key", "token_file",
            "tls_server_name", "insecure"}},
          {"What to receive and where to write it",
           {"certificate", "output_dir", "secret_name", "combined_pem", "state_dir",
            "delete_on_revoke"}},
          {"After each applied version", {"on_update", "signal", "pid_file", "rollout_restart"}},
          {"Proof of serving", {"verify", "verify_server_name", "verify_timeout"}},
          {"Shared writer (one Deployment for every opted-in namespace)",
           {"shared_writer", "writer_lease", "writer_refresh_interval"}},
          {"Kubernetes API (--secret-name, --rollout-restart)",
           {"kube_api_url", "kube_token_file", "kube_ca_file"}},
          {"Probes, metrics and logs",
           {"health_listen", "metrics_listen", "log_level", "log_format"}},
      },
      "Flags may be spelled with dashes or underscores (--output-dir, --output_dir). SIGHUP "
      "re-reads the TLS files and reconnects.\n"
      "--version prints the version and commit; --helpfull lists abseil's own flags too.");
}

std::string Hostname() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0) return "certcast-client";
  std::string id;
  for (char c : std::string(name)) {
    id += absl::ascii_isalnum(c) || c == '-' || c == '.' || c == '_' ? c : '-';
  }
  return id.empty() ? "certcast-client" : id;
}

// Waits for SIGTERM/SIGINT; SIGHUP re-reads the TLS files and calls `reconnect`.
void ServeSignals(const sigset_t& signals, certcast::CredentialsProvider* credentials,
                  const std::function<void()>& reconnect) {
  while (true) {
    int signal_number = 0;
    sigwait(&signals, &signal_number);
    if (signal_number == SIGHUP) {
      absl::Status reloaded = credentials->Reload();
      if (reloaded.ok()) {
        certcast::LogInfo("SIGHUP: TLS files re-read; reconnecting");
        reconnect();
      } else {
        certcast::LogError("SIGHUP: cannot re-read the TLS files, keeping the previous ones",
                           {{"error", reloaded}});
      }
      continue;
    }
    certcast::LogInfo("signal received; stopping", {{"signal", signal_number}});
    return;
  }
}

// Serves `healthz` and `readyz` on --health-listen and `collector` on --metrics-listen, where
// those flags are given. Sets `*metrics` to the metrics endpoint (null without --metrics-listen).
// An error names the flag; `probes` may have started then.
absl::Status ServeProbesAndMetrics(certcast::HttpProbeServer::Check healthz,
                                   certcast::HttpProbeServer::Check readyz,
                                   std::shared_ptr<prometheus::Collectable> collector,
                                   certcast::HttpProbeServer* probes,
                                   std::unique_ptr<certcast::metrics::MetricsEndpoint>* metrics) {
  if (const std::string health = absl::GetFlag(FLAGS_health_listen); !health.empty()) {
    probes->Handle("/healthz", std::move(healthz));
    probes->Handle("/readyz", std::move(readyz));
    absl::StatusOr<int> port = probes->Start(health);
    if (!port.ok()) {
      return absl::Status(port.status().code(),
                          absl::StrCat("--health-listen: ", port.status().message()));
    }
    certcast::LogInfo(absl::StrCat("health endpoints on port ", *port), {{"port", *port}});
  }
  if (const std::string listen = absl::GetFlag(FLAGS_metrics_listen); !listen.empty()) {
    absl::StatusOr<std::unique_ptr<certcast::metrics::MetricsEndpoint>> started =
        certcast::metrics::MetricsEndpoint::Start(listen);
    if (!started.ok()) {
      return absl::Status(started.status().code(),
                          absl::StrCat("--metrics-listen: ", started.status().message()));
    }
    *metrics = *std::move(started);
    (*metrics)->Register(std::move(collector));
    certcast::LogInfo(absl::StrCat("metrics on port ", (*metrics)->port()),
                      {{"port", (*metrics)->port()}});
  }
  return absl::OkStatus();
}

// --shared-writer: the Lease election and the SharedWriter (client/shared_writer.h).
// `rollouts` and `verify` say whether those repeated flags (taken out of argv before parsing)
// were given.
int RunSharedWriter(certcast::SessionOptions options, bool rollouts, bool verify,
                    const sigset_t& signals, certcast::PosixFilesystem* fs,
                    certcast::RealClock* clock) {
  const std::string secret_name = absl::GetFlag(FLAGS_secret_name);
  if (secret_name.empty()) return Fail("--shared-writer needs --secret-name=NAME");
  if (options.certificates.size() != 1) {
    return Fail("--shared-writer needs exactly one --certificate");
  }
  for (const auto& [flag, set] : std::vector<std::pair<const char*, bool>>{
           {"--output-dir", !absl::GetFlag(FLAGS_output_dir).empty()},
           {"--rollout-restart", rollouts},
           {"--on-update", !absl::GetFlag(FLAGS_on_update).empty()},
           {"--signal", !absl::GetFlag(FLAGS_signal).empty()},
           {"--verify", verify},
           {"--combined-pem", absl::GetFlag(FLAGS_combined_pem)}}) {
    if (set) {
      return Fail(absl::StrCat("--shared-writer writes only Secrets; ", flag,
                               " needs a client in the tenant's namespace (per-namespace "
                               "clients, docs/SHARED-WRITER.md)"));
    }
  }
  if (absl::GetFlag(FLAGS_insecure)) {
    return Fail("--shared-writer needs a TLS server with a policy that names it in writers");
  }
  if (absl::GetFlag(FLAGS_writer_refresh_interval) <= absl::ZeroDuration()) {
    return Fail("--writer-refresh-interval must be positive");
  }
  absl::StatusOr<certcast::kube::KubeConfig> config = certcast::kube::KubeConfigFromFlags();
  if (!config.ok()) return Fail(config.status().message());
  if (absl::Status curl = certcast::LoadLibcurl(); !curl.ok()) return Fail(curl.message());
  certcast::kube::CurlKubeApi kube(*std::move(config), fs);
  const std::string state_dir = absl::GetFlag(FLAGS_state_dir);
  if (absl::Status parents = certcast::CreateParentDirectories(*fs, "--state-dir", state_dir);
      !parents.ok()) {
    return Fail(parents.message());
  }
  certcast::ClientStateStore root(fs, state_dir);
  if (absl::Status ready = root.Init(); !ready.ok()) return Fail(ready.message());
  certcast::CredentialsProvider credentials(
      fs, {false, absl::GetFlag(FLAGS_ca), absl::GetFlag(FLAGS_tls_cert),
           absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_token_file)});
  if (absl::Status loaded = credentials.Reload(); !loaded.ok()) return Fail(loaded.message());
  if (absl::GetFlag(FLAGS_token_file).empty() && absl::GetFlag(FLAGS_tls_cert).empty()) {
    return Fail(
        "--shared-writer needs an identity the policy names in writers: --token-file or "
        "--tls-cert/--tls-key");
  }
  options.delete_on_revoke = absl::GetFlag(FLAGS_delete_on_revoke);

  certcast::LeaderElectionOptions election;
  election.identity = certcast::MakeReplicaIdentity();
  election.duty = "writes the tenant Secrets";
  certcast::kube::LeaseLock lease(&kube, options.namespace_, absl::GetFlag(FLAGS_writer_lease),
                                  election);
  certcast::LeaderElector elector(&lease, clock, election);

  certcast::SharedWriter::Options writer_options;
  writer_options.session = options;
  writer_options.secret_name = secret_name;
  writer_options.state_dir = state_dir;
  writer_options.refresh_interval = absl::GetFlag(FLAGS_writer_refresh_interval);
  certcast::SharedWriter writer(std::move(writer_options), &kube, fs, &credentials, clock,
                                [&elector] { return elector.IsLeader(); });

  certcast::HttpProbeServer probes;
  std::unique_ptr<certcast::metrics::MetricsEndpoint> metrics;
  if (absl::Status served = ServeProbesAndMetrics(
          [&writer]() -> absl::Status {
            if (writer.Alive(absl::Minutes(3))) return absl::OkStatus();
            return absl::UnavailableError("the writer loop has not run for 3 minutes");
          },
          // Both replicas are ready: the standby takes over when the leader goes.
          []() -> absl::Status { return absl::OkStatus(); },
          std::make_shared<certcast::WriterMetrics>(&writer), &probes, &metrics);
      !served.ok()) {
    return Fail(served.message());
  }
  certcast::LogInfo("shared writer started; campaigning for the lease",
                    {{"lock", lease.Describe()},
                     {"identity", election.identity},
                     {"certificate", options.certificates.front()},
                     {"secret", secret_name}});
  // The elector logs when the Kubernetes API stops and starts answering the Lease requests.
  elector.Start({[&writer] { writer.Wake(); }, nullptr});
  std::thread runner([&writer] { writer.Run(); });
  ServeSignals(signals, &credentials, [&writer] { writer.Reconnect(); });
  writer.Stop();
  runner.join();
  metrics.reset();
  probes.Stop();
  elector.Stop();  // gives the Lease up: the other replica writes at once
  certcast::LogInfo("certcast-client stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // One malloc arena instead of one per thread that allocates (gRPC starts seven threads): the
  // client allocates little and rarely, and each extra arena kept a few pages (70 KB of RssAnon
  // idle, bench/README.md "The client's memory").
  certcast::UseOneMallocArena();
  certcast::HardenKeyHoldingProcess();
  certcast::KeepOpenSslUntilExit();
  // Block the control signals before anything can start a thread (gRPC starts its own while
  // credentials and channels are built): every thread inherits the mask, and this thread takes
  // them synchronously with sigwait once it is serving.
  const sigset_t signals = certcast::BlockControlSignals();
  // --verify probes write to endpoints that may hang up mid-handshake: EPIPE, not death.
  signal(SIGPIPE, SIG_IGN);
  if (std::optional<int> exit_status = certcast::BeginCommandLine(argc, argv, kProgram, Help)) {
    return *exit_status;
  }
  const std::vector<std::string> certificates =
      certcast::TakeRepeatedFlag(&argc, argv, "certificate");
  const std::vector<std::string> rollouts =
      certcast::TakeRepeatedFlag(&argc, argv, "rollout_restart");
  const std::vector<std::string> verify = certcast::TakeRepeatedFlag(&argc, argv, "verify");
  absl::ParseCommandLine(argc, argv);
  if (absl::Status logging = certcast::ConfigureLoggingFromFlags(); !logging.ok()) {
    return Fail(logging.message());
  }

  certcast::PosixFilesystem fs;
  certcast::RealClock clock;
  certcast::SessionOptions options;
  options.server = absl::GetFlag(FLAGS_server);
  if (options.server.empty()) return Fail("--server=HOST:PORT is required");
  options.tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  options.certificates = certificates;
  if (options.certificates.empty()) return Fail("name at least one --certificate=NAME");
  options.namespace_ = absl::GetFlag(FLAGS_namespace);
  if (options.namespace_.empty()) {
    absl::StatusOr<std::string> from_file = fs.ReadFile(kServiceAccountNamespace);
    if (!from_file.ok()) {
      return Fail(absl::StrCat("--namespace is required outside Kubernetes (",
                               kServiceAccountNamespace, " is not readable)"));
    }
    options.namespace_ = std::string(absl::StripAsciiWhitespace(*from_file));
  }
  options.client_id = absl::GetFlag(FLAGS_client_id);
  if (options.client_id.empty()) options.client_id = Hostname();
  if (absl::GetFlag(FLAGS_shared_writer)) {
    return RunSharedWriter(std::move(options), !rollouts.empty(), !verify.empty(), signals, &fs,
                           &clock);
  }

  const std::string output_dir = absl::GetFlag(FLAGS_output_dir);
  const std::string secret_name = absl::GetFlag(FLAGS_secret_name);
  if (output_dir.empty() && secret_name.empty()) {
    return Fail("name where to write: --output-dir=DIR and/or --secret-name=NAME");
  }
  if (!secret_name.empty() && options.certificates.size() != 1) {
    return Fail("--secret-name needs exactly one --certificate");
  }
  std::unique_ptr<certcast::kube::KubeApi> kube;
  if (!secret_name.empty() || !rollouts.empty()) {
    absl::StatusOr<certcast::kube::KubeConfig> config = certcast::kube::KubeConfigFromFlags();
    if (!config.ok()) return Fail(config.status().message());
    if (absl::Status curl = certcast::LoadLibcurl(); !curl.ok()) return Fail(curl.message());
    kube = std::make_unique<certcast::kube::CurlKubeApi>(*std::move(config), &fs);
  }
  std::vector<std::unique_ptr<certcast::Sink>> sinks;
  certcast::SecretSink* secret_sink = nullptr;
  if (!output_dir.empty()) {
    sinks.push_back(std::make_unique<certcast::FileSink>(
        &fs, &clock, certcast::FileSink::Options{output_dir, absl::GetFlag(FLAGS_combined_pem)}));
  }
  if (!secret_name.empty()) {
    auto sink = std::make_unique<certcast::SecretSink>(
        kube.get(), certcast::SecretSink::Options{options.namespace_, secret_name});
    secret_sink = sink.get();
    sinks.push_back(std::move(sink));
  }

  std::vector<std::unique_ptr<certcast::Hook>> hooks;
  if (!absl::GetFlag(FLAGS_on_update).empty()) {
    hooks.push_back(std::make_unique<certcast::CommandHook>(absl::GetFlag(FLAGS_on_update)));
  }
  if (absl::GetFlag(FLAGS_signal).empty() != absl::GetFlag(FLAGS_pid_file).empty()) {
    return Fail("--signal and --pid-file must be given together");
  }
  if (!absl::GetFlag(FLAGS_signal).empty()) {
    absl::StatusOr<int> signal = certcast::ParseSignal(absl::GetFlag(FLAGS_signal));
    if (!signal.ok()) return Fail(absl::StrCat("--signal: ", signal.status().message()));
    hooks.push_back(std::make_unique<certcast::SignalHook>(*signal, absl::GetFlag(FLAGS_pid_file)));
  }
  for (const std::string& rollout : rollouts) {
    absl::StatusOr<std::string> deployment = certcast::ParseRolloutTarget(rollout);
    if (!deployment.ok())
      return Fail(absl::StrCat("--rollout-restart: ", deployment.status().message()));
    hooks.push_back(std::make_unique<certcast::RolloutRestartHook>(kube.get(), options.namespace_,
                                                                   *deployment));
  }

  // The stores create the leaf directories with their modes; missing parents are created here.
  for (const auto& [flag, path] :
       {std::pair<const char*, std::string>{"--state-dir", absl::GetFlag(FLAGS_state_dir)},
        {"--output-dir", output_dir}}) {
    if (path.empty()) continue;
    if (absl::Status parents = certcast::CreateParentDirectories(fs, flag, path); !parents.ok()) {
      return Fail(parents.message());
    }
  }
  certcast::ClientStateStore store(&fs, absl::GetFlag(FLAGS_state_dir));
  if (absl::Status ready = store.Init(); !ready.ok()) return Fail(ready.message());

  certcast::CredentialsProvider credentials(
      &fs, {absl::GetFlag(FLAGS_insecure), absl::GetFlag(FLAGS_ca), absl::GetFlag(FLAGS_tls_cert),
            absl::GetFlag(FLAGS_tls_key), absl::GetFlag(FLAGS_token_file)});
  if (absl::GetFlag(FLAGS_insecure) && !absl::GetFlag(FLAGS_ca).empty()) {
    return Fail("--insecure cannot be combined with --ca");
  }
  if (absl::Status loaded = credentials.Reload(); !loaded.ok()) {
    return Fail(loaded.message());
  }
  if (absl::StatusOr<std::string> token = credentials.BearerToken(); !token.ok()) {
    return Fail(token.status().message());
  }
  // A TLS server hands nothing to a client it cannot identify: say so now, not as a refusal on
  // every reconnect.
  if (!absl::GetFlag(FLAGS_insecure) && absl::GetFlag(FLAGS_token_file).empty() &&
      absl::GetFlag(FLAGS_tls_cert).empty()) {
    return Fail(
        "no identity: a TLS server refuses clients it cannot identify (UNAUTHENTICATED). Pass "
        "--token-file=FILE (a projected ServiceAccount token or a static token) or "
        "--tls-cert=FILE --tls-key=FILE (a client certificate), or --insecure for a plaintext "
        "development server");
  }
  options.delete_on_revoke = absl::GetFlag(FLAGS_delete_on_revoke);
  if (absl::GetFlag(FLAGS_insecure)) {
    certcast::LogWarn(
        "*** --insecure: connecting WITHOUT TLS; private keys cross the network in plaintext. "
        "Use only for local development. ***",
        {{"server", options.server}});
  }

  certcast::ServingVerifier::Options verify_options;
  for (const std::string& address : verify) {
    absl::StatusOr<certcast::ServingEndpoint> endpoint = certcast::ParseServingEndpoint(address);
    if (!endpoint.ok()) return Fail(endpoint.status().message());
    verify_options.endpoints.push_back(*std::move(endpoint));
  }
  verify_options.server_name = absl::GetFlag(FLAGS_verify_server_name);
  verify_options.timeout = absl::GetFlag(FLAGS_verify_timeout);
  if (verify_options.timeout <= absl::ZeroDuration()) {
    return Fail("--verify-timeout must be positive");
  }
  if (verify_options.endpoints.empty() && !verify_options.server_name.empty()) {
    return Fail("--verify-server-name needs at least one --verify=HOST:PORT");
  }
  const certcast::ServingVerifier verifier(std::move(verify_options));

  std::vector<certcast::Hook*> hook_pointers;
  for (const auto& hook : hooks) hook_pointers.push_back(hook.get());
  std::vector<certcast::Sink*> sink_pointers;
  for (const auto& sink : sinks) sink_pointers.push_back(sink.get());
  certcast::Session session(options, sink_pointers, hook_pointers, &store, &credentials, &clock,
                            &verifier);
  session.Init();
  if (secret_sink != nullptr) secret_sink->Start();

  certcast::HttpProbeServer probes;
  // Declared after the session, so it stops (no scrape runs) before the session goes.
  std::unique_ptr<certcast::metrics::MetricsEndpoint> metrics;
  if (absl::Status served = ServeProbesAndMetrics(
          [&session]() -> absl::Status {
            if (session.Alive(absl::Minutes(3))) return absl::OkStatus();
            return absl::UnavailableError("the session loop has not run for 3 minutes");
          },
          [&session]() -> absl::Status {
            std::string why;
            if (session.Ready(&why)) return absl::OkStatus();
            return absl::UnavailableError(why);
          },
          std::make_shared<certcast::ClientMetrics>(&session), &probes, &metrics);
      !served.ok()) {
    return Fail(served.message());
  }
  std::thread runner([&session] { session.Run(); });
  ServeSignals(signals, &credentials, [&session] { session.Reconnect(); });
  session.Stop();
  runner.join();
  probes.Stop();
  metrics.reset();
  if (secret_sink != nullptr) secret_sink->Stop();
  certcast::LogInfo("certcast-client stopped");
  return 0;
}
