// The shared writer (certcast-client --shared-writer, docs/SHARED-WRITER.md) against the fake
// Kubernetes API with real binaries: a TLS server with a policy that names the writer, the
// writer writing into the namespaces that opted in with a RoleBinding (the fake enforces RBAC
// from stored Roles and RoleBindings), NACKing the one that did not with the RoleBinding to
// create, the writer identity refused where the policy does not name it, and two replicas of
// which exactly one writes.
#include <signal.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "certcast/v1/certcast.grpc.pb.h"
#include "common/certificate.h"
#include "common/filesystem.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kube/api.h"
#include "kube/secret.h"
#include "tests/child_process.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/test_subscriber.h"

namespace certcast {
namespace {

using ::certcast::fixtures::Chain;
using ::certcast::fixtures::Issued;
using ::certcast::fixtures::MakeChain;
using ::certcast::fixtures::TempDir;
using ::certcast::kube::Json;
using ::certcast::scenario::ChildProcess;
using ::certcast::scenario::TestSubscriber;
using ::certcast::scenario::WaitFor;
using ::testing::HasSubstr;

constexpr char kWriter[] = "system:serviceaccount:certcast-system:certcast-writer";
constexpr char kTenantA[] = "system:serviceaccount:tenant-a:certcast-client";
constexpr char kServerSa[] = "system:serviceaccount:certcast-system:certcast-server";
constexpr char kOperator[] = "system:serviceaccount:certcast-system:operator";
constexpr char kLabel[] = "certcast.io/wildcard";

void WriteText(const std::string& path, const std::string& text) {
  PosixFilesystem fs;
  ASSERT_TRUE(WriteFileAtomically(fs, path, text, 0600).ok());
}

// A token shaped like a projected ServiceAccount token (the server prechecks the JWT shape; the
// fake API does not check the signature).
std::string Jwt(const std::string& audience, const std::string& id) {
  auto b64 = [](const std::string& text) {
    std::string out;
    absl::WebSafeBase64Escape(text, &out);
    return out;
  };
  return absl::StrCat(b64(R"({"alg":"RS256","kid":"test"})"), ".",
                      b64(absl::StrCat(R"({"aud":[")", audience, R"("],"exp":)",
                                       absl::ToUnixSeconds(absl::Now() + absl::Hours(2)),
                                       R"(,"jti":")", id, R"("})")),
                      ".", b64("signature-" + id));
}

// VmRSS (KiB) and user+system CPU (seconds) of a process, from /proc.
struct Usage {
  double rss_kib = 0;
  double cpu_seconds = 0;
};
Usage UsageOf(pid_t pid) {
  Usage usage;
  std::ifstream status(absl::StrCat("/proc/", pid, "/status"));
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) usage.rss_kib = std::stod(line.substr(6));
  }
  std::ifstream stat(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  // Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
  std::vector<std::string> fields = absl::StrSplit(text.substr(text.rfind(')') + 2), ' ');
  if (fields.size() > 12) {
    usage.cpu_seconds =
        (std::stod(fields[11]) + std::stod(fields[12])) / static_cast<double>(sysconf(_SC_CLK_TCK));
  }
  return usage;
}

int Occurrences(const std::string& text, const std::string& what) {
  int count = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) {
    ++count;
  }
  return count;
}

Json Namespace(const std::string& name, bool labelled) {
  Json ns = {{"apiVersion", "v1"}, {"kind", "Namespace"}, {"metadata", {{"name", name}}}};
  if (labelled) ns["metadata"]["labels"] = {{kLabel, "true"}};
  return ns;
}

// What the shared-writer-tenant component creates in a namespace that opts in.
std::vector<Json> OptIn(const std::string& ns) {
  Json role = Json::parse(R"({
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
    "metadata": {"name": "certcast-writer"},
    "rules": [
      {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "update", "patch"],
       "resourceNames": ["wildcard-tls"]},
      {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}]})");
  Json binding = Json::parse(R"({
    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
    "metadata": {"name": "certcast-writer"},
    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                "name": "certcast-writer"},
    "subjects": [{"kind": "ServiceAccount", "name": "certcast-writer",
                  "namespace": "certcast-system"}]})");
  role["metadata"]["namespace"] = ns;
  binding["metadata"]["namespace"] = ns;
  return {role, binding};
}

class WriterScenarioTest : public ::testing::Test {
 protected:
  // `opted_in` namespaces carry the label and the RoleBinding; `labelled_only` only the label;
  // `unlabelled` neither.
  void StartApi(const std::vector<std::string>& opted_in,
                const std::vector<std::string>& labelled_only,
                const std::vector<std::string>& unlabelled) {
    ca_ = fixtures::MakeRootCa("writer test ca");
    fixtures::CertOptions serving;
    serving.dns_names = {"localhost"};
    Issued serving_cert = fixtures::MakeCert(ca_, serving);
    WriteText(tmp_.Join("tls.crt"), serving_cert.cert_pem);
    WriteText(tmp_.Join("tls.key"), serving_cert.key_pem);
    WriteText(tmp_.Join("ca.pem"), ca_.cert_pem);
    for (const char* name : {"server", "admin", "writer-a", "writer-b"}) {
      WriteText(tmp_.Join(absl::StrCat(name, ".kubetoken")), absl::StrCat(name, "-token\n"));
    }
    WriteText(tmp_.Join("writer.token"), writer_jwt_);
    Json config = Json::object();
    config["tokens"] = {{"server-token", kServerSa}};
    for (const char* pod : {"writer-a", "writer-b"}) {
      // Bound ServiceAccount tokens name their pod: the request log says which replica wrote.
      config["tokens"][absl::StrCat(pod, "-token")] = {
          {"username", kWriter},
          {"extra", {{"authentication.kubernetes.io/pod-name", Json::array({pod})}}}};
    }
    config["admin_tokens"] = Json::array({"admin-token"});
    config["cluster_roles"] = Json::array({Json::parse(R"({
        "rules": [{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"],
                   "verbs": ["create"]},
                  {"apiGroups": [""], "resources": ["namespaces"],
                   "verbs": ["get", "list", "watch"]}]})")});
    config["cluster_roles"][0]["subjects"] = Json::array({kServerSa});
    // The writer's own Role in certcast-system: its Lease, nothing cluster-wide.
    Json lease_role = Json::parse(R"({
        "namespace": "certcast-system",
        "rules": [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                   "verbs": ["get", "update"], "resourceNames": ["certcast-writer"]},
                  {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                   "verbs": ["create"]}]})");
    lease_role["subjects"] = Json::array({kWriter});
    config["roles"] = Json::array({lease_role});
    config["reviewable_tokens"] = Json::object();
    config["reviewable_tokens"][writer_jwt_] = {{"username", kWriter}, {"audiences", {"certcast"}}};
    config["reviewable_tokens"][tenant_a_jwt_] = {{"username", kTenantA},
                                                  {"audiences", {"certcast"}}};
    config["reviewable_tokens"][operator_jwt_] = {{"username", kOperator},
                                                  {"audiences", {"certcast"}}};
    Json objects = Json::array({Namespace("certcast-system", false)});
    for (const std::string& ns : opted_in) {
      objects.push_back(Namespace(ns, true));
      for (const Json& object : OptIn(ns)) objects.push_back(object);
    }
    for (const std::string& ns : labelled_only) objects.push_back(Namespace(ns, true));
    for (const std::string& ns : unlabelled) objects.push_back(Namespace(ns, false));
    config["objects"] = objects;
    WriteText(tmp_.Join("kube.json"), config.dump());
    api_process_ = std::make_unique<ChildProcess>(
        CERTCAST_PYTHON,
        std::vector<std::string>{CERTCAST_FAKE_KUBE_API, "--cert", tmp_.Join("tls.crt"), "--key",
                                 tmp_.Join("tls.key"), "--config", tmp_.Join("kube.json")},
        tmp_.Join("api.log"));
    const std::string bound = api_process_->WaitForLog("listening on port ([0-9]+)");
    ASSERT_FALSE(bound.empty()) << api_process_->log();
    api_port_ = std::stoi(bound);
    admin_ = std::make_unique<kube::CurlKubeApi>(
        kube::KubeConfig{ApiUrl(), tmp_.Join("admin.kubetoken"), tmp_.Join("ca.pem")}, &fs_);
  }

  std::string ApiUrl() const { return absl::StrCat("https://localhost:", api_port_); }

  // `wildcard` goes to labelled namespaces and may be written by the writer; `internal` goes to
  // tenant-a only and names no writer.
  void StartServer(std::vector<std::string> extra = {}) {
    fixtures::WriteKubeletDir(tmp_.Join("wildcard"), chain_.material);
    fixtures::WriteKubeletDir(tmp_.Join("internal"), MakeChain().material);
    WriteText(tmp_.Join("policy.yaml"),
              absl::StrCat("certificates:\n  wildcard:\n    namespaceSelector:\n      "
                           "matchLabels: {",
                           kLabel, ": \"true\"}\n    writers: [\"", kWriter,
                           "\"]\n  internal:\n    namespaces: [tenant-a]\nadmins: [\"", kOperator,
                           "\"]\n"));
    std::vector<std::string> args = {"--listen=127.0.0.1:0",
                                     "--tls-cert=" + tmp_.Join("tls.crt"),
                                     "--tls-key=" + tmp_.Join("tls.key"),
                                     "--policy=" + tmp_.Join("policy.yaml"),
                                     "--token-audience=certcast",
                                     "--watch-namespaces",
                                     "--certificate=wildcard=" + tmp_.Join("wildcard"),
                                     "--certificate=internal=" + tmp_.Join("internal"),
                                     "--state-dir=" + tmp_.Join("server-state"),
                                     "--kube-api-url=" + ApiUrl(),
                                     "--kube-token-file=" + tmp_.Join("server.kubetoken"),
                                     "--kube-ca-file=" + tmp_.Join("ca.pem"),
                                     "--quiet-period=20ms",
                                     "--heartbeat-interval=2s"};
    args.insert(args.end(), extra.begin(), extra.end());
    server_ = std::make_unique<ChildProcess>(CERTCAST_SERVER_BINARY, args, tmp_.Join("server.log"));
    port_ = server_->WaitForPort();
    ASSERT_NE(port_, 0) << server_->log();
  }

  std::unique_ptr<ChildProcess> StartWriter(const std::string& pod,
                                            std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {absl::StrCat("--server=127.0.0.1:", port_),
                                     "--tls-server-name=localhost",
                                     "--ca=" + tmp_.Join("ca.pem"),
                                     "--token-file=" + tmp_.Join("writer.token"),
                                     "--shared-writer",
                                     "--namespace=certcast-system",
                                     "--client-id=" + pod,
                                     "--certificate=wildcard",
                                     "--secret-name=wildcard-tls",
                                     "--writer-refresh-interval=1s",
                                     "--state-dir=" + tmp_.Join("state-" + pod),
                                     "--kube-api-url=" + ApiUrl(),
                                     "--kube-token-file=" + tmp_.Join(pod + ".kubetoken"),
                                     "--kube-ca-file=" + tmp_.Join("ca.pem")};
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<ChildProcess>(CERTCAST_CLIENT_BINARY, args, tmp_.Join(pod + ".log"));
  }

  std::shared_ptr<grpc::Channel> Channel() {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ca_.cert_pem;
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port_), grpc::SslCredentials(ssl),
                                     args);
  }

  // The fleet row of `ns` (the connected client's certificate state), as the operator sees it.
  v1::ClientCertificate ClientState(const std::string& ns) {
    auto stub = v1::Inspection::NewStub(Channel());
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + operator_jwt_);
    v1::ListClientsRequest request;
    request.set_namespace_(ns);
    v1::ListClientsResponse response;
    stub->ListClients(&context, request, &response);
    for (const auto& client : response.clients()) {
      if (client.connected() && client.certificates_size() > 0) return client.certificates(0);
    }
    return {};
  }

  // Granted namespaces and their state (IN_SYNC, BEHIND, NO_CLIENT), as the operator sees them.
  std::map<std::string, std::string> Coverage() {
    auto stub = v1::Inspection::NewStub(Channel());
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + operator_jwt_);
    v1::ListNamespacesRequest request;
    request.set_name("wildcard");
    v1::ListNamespacesResponse response;
    stub->ListNamespaces(&context, request, &response);
    std::map<std::string, std::string> states;
    for (const auto& row : response.namespaces()) {
      states[row.namespace_()] = v1::GrantedNamespace::State_Name(row.state());
    }
    return states;
  }

  uint64_t GetVersion() {
    auto stub = v1::Inspection::NewStub(Channel());
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + operator_jwt_);
    v1::GetCertificateRequest request;
    request.set_name("wildcard");
    v1::Certificate certificate;
    stub->GetCertificate(&context, request, &certificate);
    return certificate.current().version();
  }

  bool TenantHolds(const std::string& ns, const Chain& chain) {
    absl::StatusOr<Json> secret = admin_->Request("GET", kube::SecretPath(ns, "wildcard-tls"));
    if (!secret.ok() || !kube::IsManagedByCertcast(*secret)) return false;
    absl::StatusOr<CertificateMaterial> material = kube::MaterialFromSecret(*secret);
    return material.ok() && *material == chain.material;
  }

  void Rotate(const Chain& next) {
    fixtures::WriteKubeletDir(tmp_.Join("wildcard"), next.material);
  }

  void CreateOptIn(const std::string& ns) {
    for (Json object : OptIn(ns)) {
      const std::string plural = object["kind"] == "Role" ? "roles" : "rolebindings";
      absl::StatusOr<Json> created = admin_->Request(
          "POST", absl::StrCat("/apis/rbac.authorization.k8s.io/v1/namespaces/", ns, "/", plural),
          &object);
      ASSERT_TRUE(created.ok()) << created.status();
    }
  }

  Json Requests() {
    absl::StatusOr<Json> requests = admin_->Request("GET", "/_control/requests");
    return requests.ok() ? *requests : Json::array();
  }

  // Indexes (in the API's request log) of Secret writes by `pod`, in tenant namespaces.
  std::vector<size_t> SecretWrites(const Json& requests, const std::string& pod) {
    std::vector<size_t> writes;
    for (size_t i = 0; i < requests.size(); ++i) {
      const Json& request = requests[i];
      const std::string method = request.value("method", "");
      if (request.value("pod", "") == pod && method != "GET" &&
          request.value("path", "").find("/secrets") != std::string::npos) {
        writes.push_back(i);
      }
    }
    return writes;
  }

  TempDir tmp_;
  PosixFilesystem fs_;
  Issued ca_;
  Chain chain_ = MakeChain();
  const std::string writer_jwt_ = Jwt("certcast", "writer");
  const std::string tenant_a_jwt_ = Jwt("certcast", "tenant-a");
  const std::string operator_jwt_ = Jwt("certcast", "operator");
  std::unique_ptr<ChildProcess> api_process_;
  int api_port_ = 0;
  std::unique_ptr<kube::KubeApi> admin_;
  std::unique_ptr<ChildProcess> server_;
  int port_ = 0;
};

// The writer writes every granted namespace that opted in; the one that did not is NACKed with
// the RoleBinding to create, and written (and ACKed) once it exists; a namespace that is not
// granted never gets a Secret; every namespace has its own row in the fleet view and coverage.
TEST_F(WriterScenarioTest, WritesOptedInNamespacesAndNamesTheMissingRoleBinding) {
  StartApi({"tenant-a", "tenant-b"}, {"tenant-c"}, {"tenant-x"});
  StartServer();
  auto writer = StartWriter("writer-a");
  ASSERT_TRUE(
      WaitFor([&] { return TenantHolds("tenant-a", chain_) && TenantHolds("tenant-b", chain_); },
              absl::Seconds(60)))
      << writer->log();
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-b").acknowledged_version() == 1; }))
      << server_->log();
  EXPECT_EQ(ClientState("tenant-a").acknowledged_version(), 1u);

  // tenant-c is granted but gave no RoleBinding: NACKed, with the exact RoleBinding to create.
  ASSERT_TRUE(WaitFor([&] { return !ClientState("tenant-c").last_error().empty(); }))
      << writer->log();
  const std::string error = ClientState("tenant-c").last_error();
  EXPECT_THAT(error, HasSubstr("Secret tenant-c/wildcard-tls"));
  EXPECT_THAT(error, HasSubstr("create RoleBinding \"certcast-writer\" in namespace \"tenant-c\""));
  EXPECT_THAT(error, HasSubstr("roleRef: Role \"certcast-writer\""));
  EXPECT_THAT(error, HasSubstr("subject: ServiceAccount \"certcast-writer\" of namespace "
                               "\"certcast-system\""));
  EXPECT_EQ(ClientState("tenant-c").acknowledged_version(), 0u);
  std::map<std::string, std::string> coverage = Coverage();
  EXPECT_EQ(coverage["tenant-a"], "IN_SYNC");
  EXPECT_EQ(coverage["tenant-c"], "BEHIND") << "connected, not on the current version";
  EXPECT_EQ(coverage.count("tenant-x"), 0u);

  // The tenant opts in: the writer's retry writes it and ACKs.
  CreateOptIn("tenant-c");
  ASSERT_TRUE(WaitFor([&] { return TenantHolds("tenant-c", chain_); }, absl::Seconds(60)))
      << writer->log();
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-c").acknowledged_version() == 1; }));

  // A rotation reaches every namespace, each ACKing on its own stream.
  Chain next = MakeChain();
  Rotate(next);
  ASSERT_TRUE(WaitFor(
      [&] {
        return TenantHolds("tenant-a", next) && TenantHolds("tenant-b", next) &&
               TenantHolds("tenant-c", next);
      },
      absl::Seconds(60)))
      << writer->log();
  for (const char* ns : {"tenant-a", "tenant-b", "tenant-c"}) {
    EXPECT_TRUE(WaitFor([&] { return ClientState(ns).acknowledged_version() == 2; })) << ns;
  }
  absl::StatusOr<Json> none = admin_->Request("GET", kube::SecretPath("tenant-x", "wildcard-tls"));
  EXPECT_TRUE(absl::IsNotFound(none.status())) << "tenant-x is not granted the certificate";

  // Onboarding = one label + one RoleBinding: tenant-x gets the label and opts in.
  CreateOptIn("tenant-x");
  Json label = {{"metadata", {{"labels", {{kLabel, "true"}}}}}};
  ASSERT_TRUE(
      admin_
          ->Request("PATCH", "/api/v1/namespaces/tenant-x", &label, "application/merge-patch+json")
          .ok());
  ASSERT_TRUE(WaitFor([&] { return TenantHolds("tenant-x", next); }, absl::Seconds(60)))
      << writer->log();
  EXPECT_TRUE(WaitFor([&] { return ClientState("tenant-x").acknowledged_version() == 2; }));
}

// The writer identity is accepted for a namespace only where the policy names it in `writers`
// of a certificate granted there; any other identity still gets only its own namespace; only a
// writer may ask for the writer's namespace list.
TEST_F(WriterScenarioTest, WriterIdentityOnlyWhereThePolicyNamesIt) {
  StartApi({"tenant-a", "tenant-b"}, {}, {"tenant-x"});
  StartServer();
  auto subscribe = [&](const std::string& token, const std::string& ns,
                       const std::string& certificate) {
    TestSubscriber subscriber(Channel(), /*start_reading=*/true, token);
    v1::HeldCertificate held;
    held.set_name(certificate);
    subscriber.SendHello(ns, "probe", {held});
    std::optional<v1::SubscribeResponse> response = subscriber.NextNonHeartbeat(absl::Seconds(10));
    if (response.has_value() && response->has_update()) {
      subscriber.CloseSend();
      subscriber.Finish();
      return grpc::Status::OK;
    }
    return subscriber.Finish();
  };
  // The writer, for a namespace granted wildcard: allowed (wildcard names it).
  EXPECT_TRUE(subscribe(writer_jwt_, "tenant-b", "wildcard").ok()) << server_->log();
  // The writer for a certificate whose grant names no writer, though granted to tenant-a.
  grpc::Status internal = subscribe(writer_jwt_, "tenant-a", "internal");
  EXPECT_EQ(internal.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(internal.error_message(), HasSubstr("is not a writer of certificate \"internal\""));
  // The writer for a namespace the certificate is not granted to.
  grpc::Status ungranted = subscribe(writer_jwt_, "tenant-x", "wildcard");
  EXPECT_EQ(ungranted.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(ungranted.error_message(),
              HasSubstr("namespace \"tenant-x\" may not receive certificate \"wildcard\""));
  // Another identity: its own namespace only.
  EXPECT_TRUE(subscribe(tenant_a_jwt_, "tenant-a", "wildcard").ok());
  grpc::Status other = subscribe(tenant_a_jwt_, "tenant-b", "wildcard");
  EXPECT_EQ(other.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(other.error_message(), HasSubstr("belongs to namespace \"tenant-a\""));

  auto list = [&](const std::string& token, v1::ListWriterNamespacesResponse* response) {
    auto stub = v1::Distribution::NewStub(Channel());
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + token);
    v1::ListWriterNamespacesRequest request;
    request.set_certificate("wildcard");
    return stub->ListWriterNamespaces(&context, request, response);
  };
  v1::ListWriterNamespacesResponse response;
  ASSERT_TRUE(WaitFor([&] {
    response.Clear();
    return list(writer_jwt_, &response).ok() && response.namespaces_size() == 2;
  })) << server_->log();
  EXPECT_THAT(response.namespaces(), ::testing::ElementsAre("tenant-a", "tenant-b"));
  EXPECT_EQ(response.identity(), kWriter);
  grpc::Status refused = list(tenant_a_jwt_, &response);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(refused.error_message(), HasSubstr("is not a writer"));
}

// Two replicas: exactly one writes. The standby writes nothing; when the leader freezes, the
// standby takes the Lease and writes, and the old leader, thawed, writes nothing more (it lost
// the Lease); killing the new leader hands writing back.
TEST_F(WriterScenarioTest, OneReplicaWritesAndTheOtherTakesOver) {
  StartApi({"tenant-a", "tenant-b"}, {}, {});
  StartServer();
  auto a = StartWriter("writer-a");
  ASSERT_FALSE(a->WaitForLog("now the leader").empty()) << a->log();
  auto b = StartWriter("writer-b");
  ASSERT_FALSE(b->WaitForLog("campaigning for the lease").empty()) << b->log();
  ASSERT_TRUE(
      WaitFor([&] { return TenantHolds("tenant-a", chain_) && TenantHolds("tenant-b", chain_); },
              absl::Seconds(60)))
      << a->log();
  Chain second = MakeChain();
  Rotate(second);
  ASSERT_TRUE(
      WaitFor([&] { return TenantHolds("tenant-a", second) && TenantHolds("tenant-b", second); },
              absl::Seconds(60)))
      << a->log();
  EXPECT_FALSE(SecretWrites(Requests(), "writer-a").empty());
  EXPECT_TRUE(SecretWrites(Requests(), "writer-b").empty()) << "the standby wrote";

  // The leader freezes: after the lease expires the standby takes over and writes.
  a->Signal(SIGSTOP);
  ASSERT_FALSE(b->WaitForLog("now the leader", absl::Seconds(60)).empty()) << b->log();
  Chain third = MakeChain();
  Rotate(third);
  const bool b_wrote =
      WaitFor([&] { return TenantHolds("tenant-a", third) && TenantHolds("tenant-b", third); },
              absl::Seconds(60));
  a->Signal(SIGCONT);
  ASSERT_TRUE(b_wrote) << b->log();
  const std::vector<size_t> b_writes = SecretWrites(Requests(), "writer-b");
  ASSERT_FALSE(b_writes.empty());

  // Thawed, the old leader finds the Lease taken and writes nothing, also on the next rotation.
  ASSERT_FALSE(a->WaitForLog("lost the lease|not the leader", absl::Seconds(30)).empty())
      << a->log();
  Chain fourth = MakeChain();
  Rotate(fourth);
  ASSERT_TRUE(
      WaitFor([&] { return TenantHolds("tenant-a", fourth) && TenantHolds("tenant-b", fourth); },
              absl::Seconds(60)))
      << b->log();
  for (size_t write : SecretWrites(Requests(), "writer-a")) {
    EXPECT_LT(write, b_writes.front()) << "writer-a wrote after writer-b took over";
  }

  // Killing the leader hands writing back to the other replica.
  b->Signal(SIGKILL);
  b->Wait(absl::Seconds(10));
  ASSERT_TRUE(
      WaitFor([&] { return Occurrences(a->log(), "now the leader") == 2; }, absl::Seconds(60)))
      << a->log();
  Chain fifth = MakeChain();
  Rotate(fifth);
  ASSERT_TRUE(
      WaitFor([&] { return TenantHolds("tenant-a", fifth) && TenantHolds("tenant-b", fifth); },
              absl::Seconds(60)))
      << a->log();
  EXPECT_TRUE(WaitFor([&] { return ClientState("tenant-a").acknowledged_version() == 5; }));
}

// The writer's footprint with 1,000 opted-in namespaces (README, "The 1,000-tenant shape").
// Not part of the suite (minutes of both cores); run it on a quiet machine with
//   build/tests/writer_scenarios_test --gtest_also_run_disabled_tests
//     --gtest_filter='*ThousandNamespaces*'
TEST_F(WriterScenarioTest, DISABLED_FootprintWithAThousandNamespaces) {
  constexpr int kTenants = 1000;
  std::vector<std::string> tenants;
  for (int i = 0; i < kTenants; ++i) tenants.push_back(absl::StrCat("tenant-", i));
  StartApi(tenants, {}, {});
  StartServer({"--heartbeat-interval=30s"});
  auto missing = [&](uint64_t version, size_t* in_sync) {
    auto stub = v1::Inspection::NewStub(Channel());
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Bearer " + operator_jwt_);
    v1::ListNamespacesRequest request;
    request.set_name("wildcard");
    v1::ListNamespacesResponse response;
    if (!stub->ListNamespaces(&context, request, &response).ok()) return kTenants;
    int left = 0;
    *in_sync = 0;
    for (const auto& row : response.namespaces()) {
      if (row.state() != v1::GrantedNamespace::IN_SYNC) ++left;
    }
    *in_sync = response.namespaces_size() - left;
    (void)version;
    return response.namespaces_size() == kTenants ? left : kTenants;
  };
  const Usage server_before = UsageOf(server_->pid());
  const absl::Time started = absl::Now();
  auto writer = StartWriter("writer-a", {"--writer-refresh-interval=30s", "--log-level=warn"});
  size_t in_sync = 0;
  ASSERT_TRUE(WaitFor([&] { return missing(1, &in_sync) == 0; }, absl::Minutes(10)))
      << "in sync: " << in_sync << "\n"
      << writer->log();
  const absl::Duration first_write = absl::Now() - started;
  // Settle, then the idle footprint.
  absl::SleepFor(absl::Seconds(10));
  const Usage writer_idle = UsageOf(writer->pid());
  const Usage server_idle = UsageOf(server_->pid());
  absl::SleepFor(absl::Seconds(30));
  const Usage writer_idle_later = UsageOf(writer->pid());
  const Usage server_idle_later = UsageOf(server_->pid());

  Chain next = MakeChain();
  const absl::Time rotated = absl::Now();
  Rotate(next);
  ASSERT_TRUE(WaitFor([&] { return GetVersion() == 2; }, absl::Seconds(30)));
  ASSERT_TRUE(WaitFor([&] { return missing(2, &in_sync) == 0; }, absl::Minutes(10)))
      << "in sync: " << in_sync;
  const absl::Duration rotation = absl::Now() - rotated;
  const Usage writer_after = UsageOf(writer->pid());
  const Usage server_after = UsageOf(server_->pid());
  int holding = 0;
  for (int i = 0; i < kTenants; i += 100) holding += TenantHolds(tenants[i], next) ? 1 : 0;
  EXPECT_EQ(holding, kTenants / 100) << "sampled Secrets hold the new version";

  std::ostringstream report;
  report << "tenants=" << kTenants << "\n"
         << "first write of every Secret (start to all ACKed): " << first_write << "\n"
         << "writer RSS idle: " << writer_idle.rss_kib / 1024
         << " MiB; after the rotation: " << writer_after.rss_kib / 1024 << " MiB\n"
         << "writer CPU idle: " << (writer_idle_later.cpu_seconds - writer_idle.cpu_seconds) / 30
         << " cores over 30 s\n"
         << "rotation: rename to every namespace ACKed: " << rotation << "\n"
         << "writer CPU for the rotation: "
         << writer_after.cpu_seconds - writer_idle_later.cpu_seconds << " s\n"
         << "server RSS before the writer: " << server_before.rss_kib / 1024
         << " MiB; with 1,000 streams: " << server_idle.rss_kib / 1024
         << " MiB; after: " << server_after.rss_kib / 1024 << " MiB\n"
         << "server CPU idle: " << (server_idle_later.cpu_seconds - server_idle.cpu_seconds) / 30
         << " cores over 30 s\n"
         << "server CPU for the rotation: "
         << server_after.cpu_seconds - server_idle_later.cpu_seconds << " s\n";
  std::cout << report.str();
  RecordProperty("footprint", report.str());
}

}  // namespace
}  // namespace certcast
