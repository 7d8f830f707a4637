// Who may receive the private key: a denial matrix through the real server binary over TLS, with
// identities from mTLS certificates (minted SPIFFE IDs), ServiceAccount tokens (TokenReview on
// the fake Kubernetes API) and static tokens; policy reload revoking a live stream; and
// --delete-on-revoke. No denied client ever receives a single message, let alone key bytes.
#include <signal.h>
#include <sys/stat.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/certificate.h"
#include "common/filesystem.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kube/api.h"
#include "tests/child_process.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/test_subscriber.h"

namespace certcast {
namespace {

using ::certcast::fixtures::Issued;
using ::certcast::fixtures::TempDir;
using ::certcast::kube::Json;
using ::certcast::scenario::ChildProcess;
using ::certcast::scenario::TestSubscriber;
using ::certcast::scenario::WaitFor;
using ::testing::HasSubstr;

constexpr char kPolicy[] = R"(certificates:
  wildcard:
    namespaces: ["tenant-*", "edge"]
admins:
  - spiffe://cluster.local/ns/certcast-system/sa/operator
)";

void WriteText(const std::string& path, const std::string& text) {
  PosixFilesystem fs;
  ASSERT_TRUE(WriteFileAtomically(fs, path, text, 0600).ok());
}

// A token shaped like a projected ServiceAccount token (a JWT; the fake API does not check the
// signature, the real one would) for `audience`, expiring at `exp`, unique by `id`.
std::string Jwt(const std::string& audience, absl::Time exp, const std::string& id) {
  auto b64 = [](const std::string& text) {
    std::string out;
    absl::WebSafeBase64Escape(text, &out);
    return out;
  };
  return absl::StrCat(b64(R"({"alg":"RS256","kid":"test"})"), ".",
                      b64(absl::StrCat(R"({"aud":[")", audience, R"("],"exp":)",
                                       absl::ToUnixSeconds(exp), R"(,"jti":")", id, R"("})")),
                      ".", b64("signature-" + id));
}

class IdentityScenarioTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_ca_ = fixtures::MakeRootCa("server ca");
    client_ca_ = fixtures::MakeRootCa("client ca");
    fixtures::CertOptions serving;
    serving.dns_names = {"localhost"};
    Issued serving_cert = fixtures::MakeCert(server_ca_, serving);
    WriteText(tmp_.Join("server.crt"), serving_cert.cert_pem);
    WriteText(tmp_.Join("server.key"), serving_cert.key_pem);
    WriteText(tmp_.Join("server-ca.pem"), server_ca_.cert_pem);
    WriteText(tmp_.Join("client-ca.pem"), client_ca_.cert_pem);
    WriteText(tmp_.Join("policy.yaml"), kPolicy);
    WriteText(
        tmp_.Join("tokens.yaml"),
        absl::StrCat("tokens:\n  - sha256: ", Sha256Hex("static-edge-secret"),
                     "\n    namespace: edge\n    name: host-1\n  - sha256: ",
                     Sha256Hex("static-lab-secret"), "\n    namespace: lab\n    name: bench\n"));
    fixtures::WriteKubeletDir(tmp_.Join("source"), fixtures::MakeChain().material);
    StartKubeApi();
    StartServer();
  }

  void StartKubeApi() {
    fixtures::CertOptions serving;
    serving.dns_names = {"localhost"};
    Issued api_cert = fixtures::MakeCert(server_ca_, serving);
    WriteText(tmp_.Join("api.crt"), api_cert.cert_pem);
    WriteText(tmp_.Join("api.key"), api_cert.key_pem);
    WriteText(tmp_.Join("server-sa.token"), "server-token");
    WriteText(tmp_.Join("admin.token"), "admin-token");
    // Namespaces for --watch-namespaces: tenant-a and tenant-c carry the selector's label.
    Json config = Json::parse(R"({
      "tokens": {"server-token": "system:serviceaccount:certcast-system:certcast-server"},
      "admin_tokens": ["admin-token"],
      "cluster_roles": [{"subjects": ["system:serviceaccount:certcast-system:certcast-server"],
                         "rules": [{"apiGroups": ["authentication.k8s.io"],
                                    "resources": ["tokenreviews"], "verbs": ["create"]},
                                   {"apiGroups": [""], "resources": ["namespaces"],
                                    "verbs": ["get", "list", "watch"]}]}],
      "objects": [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "tenant-a", "labels": {"certcast.io/wildcard": "true"}}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tenant-b"}},
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": "tenant-c", "labels": {"certcast.io/wildcard": "true"}}}],
      "reviewable_tokens": {}})");
    const Json tenant_a = {{"username", "system:serviceaccount:tenant-a:certcast-client"},
                           {"audiences", {"certcast"}}};
    config["reviewable_tokens"][sa_tenant_a_] = tenant_a;
    config["reviewable_tokens"][sa_short_lived_] = tenant_a;
    config["reviewable_tokens"][sa_renewed_] = tenant_a;
    config["reviewable_tokens"][sa_for_vault_] = {
        {"username", "system:serviceaccount:tenant-a:certcast-client"}, {"audiences", {"vault"}}};
    WriteText(tmp_.Join("kube.json"), config.dump());
    kube_ = std::make_unique<ChildProcess>(
        CERTCAST_PYTHON,
        std::vector<std::string>{CERTCAST_FAKE_KUBE_API, "--cert", tmp_.Join("api.crt"), "--key",
                                 tmp_.Join("api.key"), "--config", tmp_.Join("kube.json")},
        tmp_.Join("kube.log"));
    kube_port_ = std::stoi("0" + kube_->WaitForLog("listening on port ([0-9]+)"));
    ASSERT_NE(kube_port_, 0) << kube_->log();
  }

  void StartServer(const std::vector<std::string>& extra_args = {}) {
    std::vector<std::string> args{
            "--listen=127.0.0.1:0", "--tls-cert=" + tmp_.Join("server.crt"),
            "--tls-key=" + tmp_.Join("server.key"), "--client-ca=" + tmp_.Join("client-ca.pem"),
            "--policy=" + tmp_.Join("policy.yaml"), "--token-audience=certcast",
            "--token-map=" + tmp_.Join("tokens.yaml"), "--max-streams-per-identity=2",
            "--trust-domain=cluster.local", "--certificate=wildcard=" + tmp_.Join("source"),
            "--state-dir=" + tmp_.Join("state"),
            absl::StrCat("--kube-api-url=https://localhost:", kube_port_),
            "--kube-token-file=" + tmp_.Join("server-sa.token"),
            "--kube-ca-file=" + tmp_.Join("server-ca.pem"), "--quiet-period=20ms"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    server_ = std::make_unique<ChildProcess>(CERTCAST_SERVER_BINARY, args, tmp_.Join("server.log"));
    port_ = server_->WaitForPort();
    ASSERT_NE(port_, 0) << server_->log();
    operator_ = Spiffe("spiffe://cluster.local/ns/certcast-system/sa/operator");
  }

  // The fake API as its admin (no RBAC), e.g. to label namespaces.
  std::unique_ptr<kube::KubeApi> KubeAdmin() {
    return std::make_unique<kube::CurlKubeApi>(
        kube::KubeConfig{absl::StrCat("https://localhost:", kube_port_), tmp_.Join("admin.token"),
                         tmp_.Join("server-ca.pem")},
        &fs_);
  }
  // A stream of `who` that said hello for `ns`, asking for the wildcard.
  std::unique_ptr<TestSubscriber> Subscriber(const std::string& ns, Issued* who) {
    auto subscriber = std::make_unique<TestSubscriber>(Channel(who));
    v1::HeldCertificate held;
    held.set_name("wildcard");
    subscriber->SendHello(ns, "pod-" + ns, {held});
    return subscriber;
  }

  // A client certificate with `uri` as its URI SAN (none when empty).
  Issued Spiffe(const std::string& uri) {
    fixtures::CertOptions options;
    if (!uri.empty()) options.uri_sans = {uri};
    options.client_auth = true;
    return fixtures::MakeCert(client_ca_, options);
  }
  Issued Tenant(const std::string& ns) {
    return Spiffe(absl::StrCat("spiffe://cluster.local/ns/", ns, "/sa/certcast-client"));
  }

  std::shared_ptr<grpc::Channel> Channel(const Issued* client = nullptr) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = server_ca_.cert_pem;
    if (client != nullptr) {
      ssl.pem_cert_chain = client->cert_pem;
      ssl.pem_private_key = client->key_pem;
    }
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port_), grpc::SslCredentials(ssl),
                                     args);
  }

  struct Outcome {
    grpc::Status status;  // OK when an update arrived (the stream was then closed by us)
    bool got_update = false;
    size_t messages = 0;
  };

  // Subscribes with `hello_namespace` and reports what happened.
  Outcome Subscribe(const std::shared_ptr<grpc::Channel>& channel, const std::string& ns,
                    const std::string& token = "") {
    TestSubscriber subscriber(channel, /*start_reading=*/true, token);
    v1::HeldCertificate held;
    held.set_name("wildcard");
    subscriber.SendHello(ns, "probe", {held});
    Outcome outcome;
    std::optional<v1::SubscribeResponse> response = subscriber.NextNonHeartbeat(absl::Seconds(10));
    outcome.got_update = response.has_value() && response->has_update();
    if (outcome.got_update) {
      subscriber.CloseSend();
      subscriber.Finish();
      outcome.messages = subscriber.received().size();
      return outcome;
    }
    outcome.status = subscriber.Finish();
    outcome.messages = subscriber.received().size();
    return outcome;
  }

  void ExpectDenied(const Outcome& outcome, grpc::StatusCode code, const std::string& text) {
    EXPECT_FALSE(outcome.got_update);
    EXPECT_EQ(outcome.messages, 0u) << "a denied client received messages";
    EXPECT_EQ(outcome.status.error_code(), code) << outcome.status.error_message();
    EXPECT_THAT(outcome.status.error_message(), HasSubstr(text));
  }

  TempDir tmp_;
  PosixFilesystem fs_;
  Issued server_ca_;
  Issued client_ca_;
  Issued operator_;
  // ServiceAccount tokens the fake API knows (JWT-shaped, as the server's precheck requires).
  const std::string sa_tenant_a_ = Jwt("certcast", absl::Now() + absl::Hours(1), "tenant-a");
  const std::string sa_for_vault_ = Jwt("vault", absl::Now() + absl::Hours(1), "vault");
  const std::string sa_short_lived_ = Jwt("certcast", absl::Now() + absl::Seconds(10), "short");
  const std::string sa_renewed_ = Jwt("certcast", absl::Now() + absl::Hours(1), "renewed");
  std::unique_ptr<ChildProcess> kube_;
  int kube_port_ = 0;
  std::unique_ptr<ChildProcess> server_;
  int port_ = 0;
};

// The denial matrix: every way to be refused, each with its code and a message saying what is
// missing, and the allowed cases for contrast.
TEST_F(IdentityScenarioTest, DenialMatrix) {
  Issued tenant_a = Tenant("tenant-a");
  auto tenant_a_channel = Channel(&tenant_a);
  // 1. mTLS identity, its own namespace, allowed by the policy glob.
  EXPECT_TRUE(Subscribe(tenant_a_channel, "tenant-a").got_update);
  // 2. No identity at all (no client certificate, no token).
  ExpectDenied(Subscribe(Channel(), "tenant-a"), grpc::StatusCode::UNAUTHENTICATED,
               "no client identity");
  // 3. The hello claims another namespace than the certificate's.
  ExpectDenied(Subscribe(tenant_a_channel, "tenant-b"), grpc::StatusCode::PERMISSION_DENIED,
               "belongs to namespace \"tenant-a\"");
  // 4. A proven namespace the policy does not name.
  Issued intruder = Tenant("intruder");
  ExpectDenied(Subscribe(Channel(&intruder), "intruder"), grpc::StatusCode::PERMISSION_DENIED,
               "namespace \"intruder\" may not receive certificate \"wildcard\"");
  // 5. A verified certificate without any URI SAN proves nothing.
  Issued anonymous = Spiffe("");
  ExpectDenied(Subscribe(Channel(&anonymous), "tenant-a"), grpc::StatusCode::UNAUTHENTICATED,
               "no client identity");
  // 6. A SPIFFE ID that is not of the ns/NS/sa/SA form names no namespace.
  Issued workload = Spiffe("spiffe://cluster.local/workload/batch");
  ExpectDenied(Subscribe(Channel(&workload), "tenant-a"), grpc::StatusCode::PERMISSION_DENIED,
               "names no namespace");
  // 6b. A well-formed SPIFFE ID from another trust domain (a shared client CA).
  Issued foreign = Spiffe("spiffe://other.example/ns/tenant-a/sa/certcast-client");
  ExpectDenied(Subscribe(Channel(&foreign), "tenant-a"), grpc::StatusCode::PERMISSION_DENIED,
               "is not in trust domain \"cluster.local\"");
  // 7. A ServiceAccount token for the right audience.
  EXPECT_TRUE(Subscribe(Channel(), "tenant-a", sa_tenant_a_).got_update);
  // 8. A ServiceAccount token for another audience.
  ExpectDenied(Subscribe(Channel(), "tenant-a", sa_for_vault_), grpc::StatusCode::UNAUTHENTICATED,
               "audience \"certcast\"");
  // 9. A token that is not even a JWT (refused before any TokenReview).
  ExpectDenied(Subscribe(Channel(), "tenant-a", "made-up"), grpc::StatusCode::UNAUTHENTICATED,
               "not a usable JWT");
  // 9b. A JWT for the right audience that the API does not know.
  ExpectDenied(Subscribe(Channel(), "tenant-a", Jwt("certcast", absl::Now() + absl::Hours(1), "x")),
               grpc::StatusCode::UNAUTHENTICATED, "not accepted");
  // 10. A valid token whose namespace differs from the hello's.
  ExpectDenied(Subscribe(Channel(), "tenant-c", sa_tenant_a_), grpc::StatusCode::PERMISSION_DENIED,
               "belongs to namespace \"tenant-a\"");
  // 11. A static token for an allowed namespace (a host outside Kubernetes).
  EXPECT_TRUE(Subscribe(Channel(), "edge", "static-edge-secret").got_update);
  // 12. A static token for a namespace the policy does not name.
  ExpectDenied(Subscribe(Channel(), "lab", "static-lab-secret"),
               grpc::StatusCode::PERMISSION_DENIED, "namespace \"lab\" may not receive");
  // 13. A client certificate from another CA never gets past the TLS handshake.
  Issued stranger =
      fixtures::MakeCert(fixtures::MakeRootCa("stranger ca"), fixtures::CertOptions());
  EXPECT_EQ(Subscribe(Channel(&stranger), "tenant-a").status.error_code(),
            grpc::StatusCode::UNAVAILABLE);
  // 14. Too many streams for one identity (the limit is 2 here).
  TestSubscriber first(tenant_a_channel), second(tenant_a_channel);
  v1::HeldCertificate held;
  held.set_name("wildcard");
  first.SendHello("tenant-a", "one", {held});
  second.SendHello("tenant-a", "two", {held});
  ASSERT_TRUE(first.NextNonHeartbeat().has_value());
  ASSERT_TRUE(second.NextNonHeartbeat().has_value());
  ExpectDenied(Subscribe(tenant_a_channel, "tenant-a"), grpc::StatusCode::RESOURCE_EXHAUSTED,
               "limit per identity");

  // Every denial is in the audit log with identity, peer, method and decision.
  const std::string log = server_->log();
  EXPECT_THAT(log,
              HasSubstr("audit identity=spiffe://cluster.local/ns/intruder/sa/certcast-client"));
  EXPECT_THAT(log, HasSubstr("decision=denied reason=not_allowed"));
  EXPECT_THAT(log, HasSubstr("decision=denied reason=namespace_mismatch"));
  EXPECT_THAT(log, HasSubstr("identity=\"an unauthenticated peer\""));
  EXPECT_THAT(log, ::testing::Not(HasSubstr("PRIVATE KEY")));
}

// Admin calls need an admin identity; non-admins see only their namespace in Inspection.
TEST_F(IdentityScenarioTest, AdminAndInspectionScopes) {
  Issued tenant_a = Tenant("tenant-a");
  Issued tenant_b = Tenant("tenant-b");
  TestSubscriber a(Channel(&tenant_a)), b(Channel(&tenant_b));
  v1::HeldCertificate held;
  held.set_name("wildcard");
  a.SendHello("tenant-a", "pod-a", {held});
  b.SendHello("tenant-b", "pod-b", {held});
  ASSERT_TRUE(a.NextNonHeartbeat().has_value());
  ASSERT_TRUE(b.NextNonHeartbeat().has_value());

  auto list = [&](const Issued* who) {
    auto stub = v1::Inspection::NewStub(Channel(who));
    grpc::ClientContext context;
    v1::ListClientsResponse response;
    grpc::Status status = stub->ListClients(&context, {}, &response);
    std::vector<std::string> namespaces;
    for (const auto& client : response.clients()) namespaces.push_back(client.namespace_());
    return std::make_pair(status, namespaces);
  };
  EXPECT_THAT(list(&tenant_a).second, ::testing::ElementsAre("tenant-a"));
  // An identity without a namespace is not "every namespace".
  Issued workload = Spiffe("spiffe://cluster.local/workload/odd");
  EXPECT_EQ(list(&workload).first.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_TRUE(list(&workload).second.empty());
  EXPECT_THAT(list(&operator_).second, ::testing::UnorderedElementsAre("tenant-a", "tenant-b"));
  Issued intruder = Tenant("intruder");
  {
    auto stub = v1::Inspection::NewStub(Channel(&intruder));
    grpc::ClientContext context;
    v1::GetCertificateRequest request;
    request.set_name("wildcard");
    v1::Certificate certificate;
    EXPECT_EQ(stub->GetCertificate(&context, request, &certificate).error_code(),
              grpc::StatusCode::NOT_FOUND)
        << "a namespace that may not receive the certificate does not see it";
  }
  auto rollback = [&](const Issued* who) {
    auto stub = v1::Admin::NewStub(Channel(who));
    grpc::ClientContext context;
    v1::RollbackRequest request;
    request.set_name("wildcard");
    request.set_version(1);
    v1::RollbackResponse response;
    return stub->Rollback(&context, request, &response);
  };
  grpc::Status denied = rollback(&tenant_a);
  EXPECT_EQ(denied.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(denied.error_message(), HasSubstr("is not an admin"));
  // The operator is an admin: allowed (and refused only because version 1 is current).
  EXPECT_EQ(rollback(&operator_).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(server_->log(),
              HasSubstr("method=Admin/Rollback certificate=wildcard decision=denied"));
}

// A policy change revokes live streams that lost permission (others keep being served); the
// revoked client keeps its files by default, and deletes them with --delete-on-revoke.
// --admin names an admin besides the policy's `admins` (the manifests pass the operator's
// ServiceAccount in the pod's own namespace); without it that identity sees only its namespace.
TEST_F(IdentityScenarioTest, AdminFlagNamesAnAdminBesidesThePolicy) {
  Issued tenant_a = Tenant("tenant-a");
  Issued platform_operator = Spiffe("spiffe://cluster.local/ns/platform/sa/certcast-operator");
  auto list = [&](const Issued* who) {
    auto stub = v1::Inspection::NewStub(Channel(who));
    grpc::ClientContext context;
    v1::ListClientsResponse response;
    EXPECT_TRUE(stub->ListClients(&context, {}, &response).ok());
    std::vector<std::string> namespaces;
    for (const auto& client : response.clients()) namespaces.push_back(client.namespace_());
    return namespaces;
  };
  auto subscribe = [&] {
    auto subscriber = std::make_unique<TestSubscriber>(Channel(&tenant_a));
    v1::HeldCertificate held;
    held.set_name("wildcard");
    subscriber->SendHello("tenant-a", "pod-a", {held});
    EXPECT_TRUE(subscriber->NextNonHeartbeat().has_value());
    return subscriber;
  };
  {
    auto a = subscribe();
    EXPECT_TRUE(list(&platform_operator).empty()) << "not an admin: only namespace platform";
  }
  server_.reset();
  StartServer({"--admin=spiffe://cluster.local/ns/platform/sa/certcast-operator"});
  auto a = subscribe();
  EXPECT_THAT(list(&platform_operator), ::testing::ElementsAre("tenant-a"));
  EXPECT_THAT(list(&operator_), ::testing::ElementsAre("tenant-a")) << "the policy's admins stay";
  EXPECT_THAT(list(&tenant_a), ::testing::ElementsAre("tenant-a"));
}

TEST_F(IdentityScenarioTest, PolicyReloadRevokesAndDeleteOnRevoke) {
  auto client = [&](const std::string& ns, std::vector<std::string> extra) {
    Issued identity = Tenant(ns);
    WriteText(tmp_.Join(ns + ".crt"), identity.cert_pem);
    WriteText(tmp_.Join(ns + ".key"), identity.key_pem);
    std::vector<std::string> args = {absl::StrCat("--server=127.0.0.1:", port_),
                                     "--tls-server-name=localhost",
                                     "--ca=" + tmp_.Join("server-ca.pem"),
                                     "--tls-cert=" + tmp_.Join(ns + ".crt"),
                                     "--tls-key=" + tmp_.Join(ns + ".key"),
                                     "--namespace=" + ns,
                                     "--certificate=wildcard",
                                     "--output-dir=" + tmp_.Join("out-" + ns),
                                     "--state-dir=" + tmp_.Join("state-" + ns)};
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<ChildProcess>(CERTCAST_CLIENT_BINARY, args,
                                          tmp_.Join("client-" + ns + ".log"));
  };
  auto holds = [&](const std::string& ns) {
    struct stat st;
    return stat(tmp_.Join("out-" + ns + "/wildcard/tls.key").c_str(), &st) == 0;
  };
  auto a = client("tenant-a", {});
  auto b = client("tenant-b", {});
  auto c = client("tenant-c", {"--delete-on-revoke"});
  ASSERT_TRUE(WaitFor([&] { return holds("tenant-a") && holds("tenant-b") && holds("tenant-c"); }))
      << b->log();

  WriteText(tmp_.Join("policy.yaml"),
            "certificates:\n  wildcard:\n    namespaces: [tenant-a]\nadmins:\n"
            "  - spiffe://cluster.local/ns/certcast-system/sa/operator\n");
  server_->Signal(SIGHUP);  // the file watch would notice too; SIGHUP is immediate
  ASSERT_FALSE(b->WaitForLog("access revoked").empty()) << b->log();
  ASSERT_TRUE(WaitFor([&] { return !holds("tenant-c"); })) << c->log();
  EXPECT_TRUE(holds("tenant-b")) << "without --delete-on-revoke the last material stays";
  EXPECT_TRUE(holds("tenant-a"));
  EXPECT_FALSE(c->WaitForLog("removed from every sink").empty()) << c->log();
  EXPECT_FALSE(b->Exited()) << "a denied client keeps retrying";

  // tenant-a is still served: a rotation reaches it.
  fixtures::Chain next = fixtures::MakeChain();
  fixtures::WriteKubeletDir(tmp_.Join("source"), next.material);
  ASSERT_FALSE(a->WaitForLog("version 2 applied").empty()) << a->log();
}

// Label selector grants: a namespace gets the certificate while it carries the label, loses it
// (the stream ends, like a policy edit) when the label goes, and a granted namespace without a
// client is listed as NO_CLIENT by Inspection/ListNamespaces.
TEST_F(IdentityScenarioTest, NamespaceSelectorGrantsFollowLabels) {
  WriteText(tmp_.Join("policy.yaml"),
            "certificates:\n  wildcard:\n    namespaceSelector:\n      matchLabels: "
            "{certcast.io/wildcard: \"true\"}\nadmins:\n"
            "  - spiffe://cluster.local/ns/certcast-system/sa/operator\n");
  server_.reset();
  StartServer({"--watch-namespaces"});
  std::unique_ptr<kube::KubeApi> kube_admin = KubeAdmin();
  auto subscribe = [&](const std::string& ns, Issued* who) { return Subscriber(ns, who); };
  auto namespaces = [&](bool missing_only) {
    auto stub = v1::Inspection::NewStub(Channel(&operator_));
    grpc::ClientContext context;
    v1::ListNamespacesRequest request;
    request.set_missing_only(missing_only);
    v1::ListNamespacesResponse response;
    EXPECT_TRUE(stub->ListNamespaces(&context, request, &response).ok());
    std::map<std::string, std::string> states;
    for (const auto& row : response.namespaces()) {
      states[row.namespace_()] = v1::GrantedNamespace::State_Name(row.state()) + "/" +
                                 row.granted_by();
    }
    return std::make_pair(response.namespaces_known(), states);
  };

  Issued tenant_a = Tenant("tenant-a"), tenant_b = Tenant("tenant-b");
  auto a = subscribe("tenant-a", &tenant_a);
  std::optional<v1::SubscribeResponse> update = a->NextNonHeartbeat();
  ASSERT_TRUE(update.has_value() && update->has_update()) << server_->log();
  a->SendAck(update->update());
  auto b = subscribe("tenant-b", &tenant_b);
  EXPECT_EQ(b->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED)
      << "tenant-b has no label";

  ASSERT_TRUE(WaitFor([&] { return namespaces(false).second["tenant-a"] == "IN_SYNC/selector"; }))
      << server_->log();
  auto [known, states] = namespaces(false);
  EXPECT_TRUE(known);
  EXPECT_EQ(states["tenant-c"], "NO_CLIENT/selector") << "granted, but no client";
  EXPECT_EQ(states.count("tenant-b"), 0u) << "not granted";
  EXPECT_THAT(namespaces(true).second, ::testing::ElementsAre(::testing::Pair(
                                           "tenant-c", "NO_CLIENT/selector")));

  // The label goes: tenant-a loses its grant and its stream, like after a policy edit.
  Json patch = Json::parse(R"({"metadata": {"labels": {"certcast.io/wildcard": null}}})");
  ASSERT_TRUE(kube_admin->Request("PATCH", "/api/v1/namespaces/tenant-a", &patch,
                                  "application/merge-patch+json")
                  .ok());
  grpc::Status revoked = a->Finish();
  EXPECT_EQ(revoked.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_THAT(revoked.error_message(), HasSubstr("access revoked"));
  ASSERT_TRUE(WaitFor([&] { return namespaces(false).second.count("tenant-a") == 0; }));

  // tenant-b gains the label, and with it the certificate.
  patch = Json::parse(R"({"metadata": {"labels": {"certcast.io/wildcard": "true"}}})");
  ASSERT_TRUE(kube_admin->Request("PATCH", "/api/v1/namespaces/tenant-b", &patch,
                                  "application/merge-patch+json")
                  .ok());
  ASSERT_TRUE(WaitFor([&] { return namespaces(false).second.count("tenant-b") == 1; }));
  auto b2 = subscribe("tenant-b", &tenant_b);
  update = b2->NextNonHeartbeat();
  EXPECT_TRUE(update.has_value() && update->has_update());
}

// A rollout wave chosen by label: the canary wave is every namespace labelled
// certcast.io/wildcard=true. A new version reaches tenant-a (labelled) first while tenant-b waits
// for the last wave; labelling tenant-b moves it into the canary wave, and it gets the version at
// once, with tenant-a's ACK still outstanding (so the canary wave has not completed).
TEST_F(IdentityScenarioTest, RolloutWaveByLabelFollowsNamespaceLabels) {
  WriteText(tmp_.Join("policy.yaml"),
            "certificates:\n  wildcard:\n    namespaces: [\"tenant-*\"]\n    rollout:\n"
            "      waves:\n        - name: canary\n          namespaceSelector:\n"
            "            matchLabels: {certcast.io/wildcard: \"true\"}\nadmins:\n"
            "  - spiffe://cluster.local/ns/certcast-system/sa/operator\n");
  server_.reset();
  StartServer({"--watch-namespaces"});
  std::unique_ptr<kube::KubeApi> kube_admin = KubeAdmin();
  auto subscribe = [&](const std::string& ns, Issued* who) { return Subscriber(ns, who); };
  auto waiting_for_wave = [&](const std::string& ns) -> int {
    auto stub = v1::Inspection::NewStub(Channel(&operator_));
    grpc::ClientContext context;
    v1::ListClientsRequest request;
    request.set_namespace_(ns);
    v1::ListClientsResponse response;
    if (!stub->ListClients(&context, request, &response).ok() || response.clients_size() != 1 ||
        response.clients(0).certificates_size() != 1) {
      return -1;
    }
    return static_cast<int>(response.clients(0).certificates(0).waiting_for_wave());
  };

  Issued tenant_a = Tenant("tenant-a"), tenant_b = Tenant("tenant-b");
  auto a = subscribe("tenant-a", &tenant_a);
  auto b = subscribe("tenant-b", &tenant_b);
  for (TestSubscriber* subscriber : {a.get(), b.get()}) {
    std::optional<v1::SubscribeResponse> first = subscriber->NextNonHeartbeat();
    ASSERT_TRUE(first.has_value() && first->has_update()) << server_->log();
    ASSERT_EQ(first->update().version(), 1u);
    subscriber->SendAck(first->update());
  }

  fixtures::WriteKubeletDir(tmp_.Join("source"), fixtures::MakeChain().material);
  std::optional<v1::SubscribeResponse> canary = a->NextNonHeartbeat();
  ASSERT_TRUE(canary.has_value() && canary->has_update()) << server_->log();
  EXPECT_EQ(canary->update().version(), 2u);
  ASSERT_TRUE(WaitFor([&] { return waiting_for_wave("tenant-b") == 2; })) << server_->log();
  // Waiting for a wave is not missing: tenant-b holds the version it should run (version 1),
  // tenant-a, in the canary wave, has not acknowledged version 2 yet.
  auto coverage = [&] {
    auto stub = v1::Inspection::NewStub(Channel(&operator_));
    grpc::ClientContext context;
    v1::ListNamespacesRequest request;
    v1::ListNamespacesResponse response;
    EXPECT_TRUE(stub->ListNamespaces(&context, request, &response).ok());
    std::map<std::string, std::string> states;
    for (const auto& row : response.namespaces()) {
      states[row.namespace_()] = absl::StrCat(v1::GrantedNamespace::State_Name(row.state()), "/",
                                              row.waiting_for_wave());
    }
    return states;
  };
  EXPECT_THAT(coverage(), ::testing::ElementsAre(::testing::Pair("tenant-a", "BEHIND/0"),
                                                 ::testing::Pair("tenant-b", "IN_SYNC/2"),
                                                 ::testing::Pair("tenant-c", "NO_CLIENT/0")));
  {
    auto stub = v1::Inspection::NewStub(Channel(&operator_));
    grpc::ClientContext context;
    v1::GetCertificateRequest request;
    request.set_name("wildcard");
    v1::Certificate certificate;
    ASSERT_TRUE(stub->GetCertificate(&context, request, &certificate).ok());
    ASSERT_EQ(certificate.rollout().waves_size(), 2);
    EXPECT_EQ(certificate.rollout().waves(0).namespace_selector(), "certcast.io/wildcard=true");
    EXPECT_EQ(certificate.rollout().wave(), 1u);
  }

  Json patch = Json::parse(R"({"metadata": {"labels": {"certcast.io/wildcard": "true"}}})");
  ASSERT_TRUE(kube_admin->Request("PATCH", "/api/v1/namespaces/tenant-b", &patch,
                                  "application/merge-patch+json")
                  .ok());
  std::optional<v1::SubscribeResponse> joined = b->NextNonHeartbeat();
  ASSERT_TRUE(joined.has_value() && joined->has_update()) << server_->log();
  EXPECT_EQ(joined->update().version(), 2u);
  EXPECT_EQ(waiting_for_wave("tenant-b"), 0);
}

// A selector grant without the namespace watch is a start-up error that says what is missing.
TEST_F(IdentityScenarioTest, NamespaceSelectorNeedsTheNamespaceWatch) {
  WriteText(tmp_.Join("selector.yaml"),
            "certificates:\n  wildcard:\n    namespaceSelector:\n      matchLabels: {a: b}\n");
  ChildProcess server(CERTCAST_SERVER_BINARY,
                      {"--listen=127.0.0.1:0", "--tls-cert=" + tmp_.Join("server.crt"),
                       "--tls-key=" + tmp_.Join("server.key"),
                       "--client-ca=" + tmp_.Join("client-ca.pem"),
                       "--trust-domain=cluster.local", "--policy=" + tmp_.Join("selector.yaml"),
                       "--certificate=wildcard=" + tmp_.Join("source"),
                       "--state-dir=" + tmp_.Join("state2")},
                      tmp_.Join("server2.log"));
  EXPECT_NE(server.Wait(absl::Seconds(20)), 0);
  EXPECT_THAT(server.log(), HasSubstr("needs --watch-namespaces"));
}

// A policy that does not parse or names an unknown certificate is a start-up error.
TEST_F(IdentityScenarioTest, BadPolicyIsAStartupError) {
  WriteText(tmp_.Join("bad.yaml"), "certificates:\n  nope:\n    namespaces: [a]\n");
  ChildProcess server(
      CERTCAST_SERVER_BINARY,
      {"--listen=127.0.0.1:0", "--tls-cert=" + tmp_.Join("server.crt"),
       "--tls-key=" + tmp_.Join("server.key"), "--policy=" + tmp_.Join("bad.yaml"),
       "--certificate=wildcard=" + tmp_.Join("source"), "--state-dir=" + tmp_.Join("state2")},
      tmp_.Join("bad-server.log"));
  EXPECT_EQ(WEXITSTATUS(server.Wait(absl::Seconds(20))), 2);
  EXPECT_THAT(server.log(), HasSubstr("\"nope\""));
}

// The client's --token-file is its identity and is read again on every connect: a token that
// is refused keeps the client retrying; once the file holds a valid token it gets the
// certificate without a restart.
TEST_F(IdentityScenarioTest, ClientTokenFileIsReadOnEveryConnect) {
  WriteText(tmp_.Join("edge.token"), "not-a-token\n");
  ChildProcess client(
      CERTCAST_CLIENT_BINARY,
      {absl::StrCat("--server=127.0.0.1:", port_), "--tls-server-name=localhost",
       "--ca=" + tmp_.Join("server-ca.pem"), "--token-file=" + tmp_.Join("edge.token"),
       "--namespace=edge", "--certificate=wildcard", "--output-dir=" + tmp_.Join("out-edge"),
       "--state-dir=" + tmp_.Join("state-edge")},
      tmp_.Join("client-edge.log"));
  ASSERT_FALSE(client.WaitForLog("the server refused this client").empty()) << client.log();
  WriteText(tmp_.Join("edge.token"), "static-edge-secret\n");
  ASSERT_FALSE(client.WaitForLog("version 1 applied", absl::Seconds(60)).empty()) << client.log();
  struct stat st;
  EXPECT_EQ(stat(tmp_.Join("out-edge/wildcard/tls.key").c_str(), &st), 0);
  EXPECT_THAT(client.log(), ::testing::Not(HasSubstr("static-edge-secret")));
}

// The fake API's control endpoint (no authentication).
class FakeApiControl {
 public:
  FakeApiControl(int port, const std::string& ca_file, const std::string& token_file)
      : api_(kube::KubeConfig{absl::StrCat("https://localhost:", port), token_file, ca_file},
             &fs_) {}
  Json Call(const std::string& method, const std::string& path, const Json& body = Json()) {
    absl::StatusOr<Json> result = api_.Request(
        method, "/_control/" + path, body.is_null() ? nullptr : &body, "application/json");
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : Json();
  }
  // TokenReviews the API received since the last Clear.
  int TokenReviews() {
    int reviews = 0;
    for (const Json& request : Call("GET", "requests")) {
      if (request.value("path", "").find("tokenreviews") != std::string::npos) ++reviews;
    }
    return reviews;
  }

 private:
  PosixFilesystem fs_;
  kube::CurlKubeApi api_;
};

// Item 2: a flood of made-up bearer tokens over one connection sends no TokenReview at all
// (they cannot be JWTs for our audience), and legitimate ServiceAccount clients are served
// meanwhile.
TEST_F(IdentityScenarioTest, TokenFloodSendsNoReviewsAndLegitimateClientsAreServed) {
  FakeApiControl control(kube_port_, tmp_.Join("server-ca.pem"), tmp_.Join("server-sa.token"));
  control.Call("DELETE", "requests");
  auto flood_channel = Channel();
  std::vector<std::unique_ptr<TestSubscriber>> flood;
  v1::HeldCertificate held;
  held.set_name("wildcard");
  for (int i = 0; i < 300; ++i) {
    flood.push_back(
        std::make_unique<TestSubscriber>(flood_channel, true, absl::StrCat("made-up-", i)));
    flood.back()->SendHello("tenant-a", absl::StrCat("flood-", i), {held});
    if (i % 100 == 99) {
      // Legitimate clients, each on its own connection, during the flood.
      EXPECT_TRUE(Subscribe(Channel(), "tenant-a", sa_tenant_a_).got_update) << "at " << i;
    }
  }
  int unauthenticated = 0;
  for (auto& subscriber : flood) {
    const grpc::Status status = subscriber->Finish();
    if (status.error_code() == grpc::StatusCode::UNAUTHENTICATED) ++unauthenticated;
    EXPECT_TRUE(subscriber->received().empty());
  }
  EXPECT_GT(unauthenticated, 0);
  // One review for the legitimate token (then cached), none for the flood.
  EXPECT_LE(control.TokenReviews(), 1) << "made-up tokens were sent to the TokenReview API";
}

// Item 1: Inspection calls with made-up tokens while the API answers slowly do not hold gRPC
// threads: a static-token caller is served while every one of them still waits for its review.
TEST_F(IdentityScenarioTest, SlowTokenReviewsDoNotStallOtherCallers) {
  FakeApiControl control(kube_port_, tmp_.Join("server-ca.pem"), tmp_.Join("server-sa.token"));
  // Every TokenReview is answered only after 20 s (then normally).
  control.Call("POST", "fail",
               Json{{"status", 0},
                    {"count", -1},
                    {"path_prefix", "/apis/authentication.k8s.io/v1/tokenreviews"},
                    {"delay_seconds", 20}});
  constexpr int kCallers = 16;
  absl::Mutex mu;
  int finished = 0;
  std::vector<std::unique_ptr<grpc::ClientContext>> contexts;
  std::vector<std::unique_ptr<v1::ListCertificatesResponse>> responses;
  std::vector<std::unique_ptr<v1::Inspection::Stub>> stubs;
  const v1::ListCertificatesRequest request;
  for (int i = 0; i < kCallers; ++i) {
    stubs.push_back(v1::Inspection::NewStub(Channel()));
    contexts.push_back(std::make_unique<grpc::ClientContext>());
    contexts.back()->AddMetadata(
        "authorization",
        "Bearer " + Jwt("certcast", absl::Now() + absl::Hours(1), absl::StrCat("random-", i)));
    responses.push_back(std::make_unique<v1::ListCertificatesResponse>());
    stubs.back()->async()->ListCertificates(contexts.back().get(), &request, responses.back().get(),
                                            [&](grpc::Status) {
                                              absl::MutexLock lock(&mu);
                                              ++finished;
                                            });
  }
  // The legitimate caller, with a static token, on its own connection.
  grpc::ClientContext context;
  context.AddMetadata("authorization", "Bearer static-edge-secret");
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(15)));
  v1::ListCertificatesResponse response;
  const grpc::Status status =
      v1::Inspection::NewStub(Channel())->ListCertificates(&context, {}, &response);
  EXPECT_TRUE(status.ok()) << status.error_code() << ": " << status.error_message();
  {
    absl::MutexLock lock(&mu);
    EXPECT_EQ(finished, 0) << "the reviews were not slow: the test proves nothing";
  }
  control.Call("DELETE", "fail");
  for (auto& pending : contexts) pending->TryCancel();
  absl::MutexLock lock(&mu);
  auto all_done = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return finished == kCallers; };
  EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(&all_done), absl::Seconds(60)));
}

// Item 5: a stream authenticated with a ServiceAccount token ends when the token expires, with a
// status the client reconnects on (re-reading --token-file), and --delete-on-revoke does not
// treat it as a revocation: the files stay.
TEST_F(IdentityScenarioTest, StreamEndsWhenItsTokenExpiresAndTheClientReconnects) {
  WriteText(tmp_.Join("sa.token"), sa_short_lived_);
  ChildProcess client(
      CERTCAST_CLIENT_BINARY,
      {absl::StrCat("--server=127.0.0.1:", port_), "--tls-server-name=localhost",
       "--ca=" + tmp_.Join("server-ca.pem"), "--token-file=" + tmp_.Join("sa.token"),
       "--namespace=tenant-a", "--certificate=wildcard", "--delete-on-revoke",
       "--output-dir=" + tmp_.Join("out-sa"), "--state-dir=" + tmp_.Join("state-sa")},
      tmp_.Join("client-sa.log"));
  ASSERT_FALSE(client.WaitForLog("version 1 applied").empty()) << client.log();
  WriteText(tmp_.Join("sa.token"), sa_renewed_);  // what the kubelet does before exp
  ASSERT_FALSE(client.WaitForLog("token of this stream expired", absl::Seconds(30)).empty())
      << client.log() << server_->log();
  // The client says what happened: its credential expired, it was not refused.
  EXPECT_THAT(client.log(), HasSubstr("this client's credential expired"));
  EXPECT_THAT(client.log(), ::testing::Not(HasSubstr("the server refused this client")));
  // Reconnected with the renewed token: subscribed a second time.
  ASSERT_TRUE(WaitFor(
      [&] {
        const std::string log = client.log();
        size_t first = log.find("subscribed to");
        return first != std::string::npos &&
               log.find("subscribed to", first + 1) != std::string::npos;
      },
      absl::Seconds(60)))
      << client.log();
  struct stat st;
  EXPECT_EQ(stat(tmp_.Join("out-sa/wildcard/tls.key").c_str(), &st), 0);
  EXPECT_THAT(client.log(), ::testing::Not(HasSubstr("removed from every sink")));
  EXPECT_THAT(server_->log(), HasSubstr("expired at"));
}

}  // namespace
}  // namespace certcast
