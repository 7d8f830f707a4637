// Kubernetes scenarios against the fake API server (tests/kube_api_server): the server reading
// the source Secret through the API, clients writing their namespace's Secret, and every failure
// case of the Kubernetes issue. Real binaries, real HTTPS, real RBAC checks in the fake.
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <functional>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "client/file_sink.h"
#include "client/secret_sink.h"
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
using ::certcast::fixtures::MakeChain;
using ::certcast::fixtures::TempDir;
using ::certcast::kube::Json;
using ::certcast::scenario::ChildProcess;
using ::certcast::scenario::WaitFor;
using ::testing::HasSubstr;

constexpr char kClientA[] = "system:serviceaccount:tenant-a:certcast-client";
constexpr char kClientB[] = "system:serviceaccount:tenant-b:certcast-client";
constexpr char kServerSa[] = "system:serviceaccount:certcast-system:certcast-server";

void WriteText(const std::string& path, const std::string& text) {
  PosixFilesystem fs;
  ASSERT_TRUE(WriteFileAtomically(fs, path, text, 0600).ok());
}

Json SourceSecret(const Chain& chain) {
  Json secret = Json::object();
  kube::SetTlsSecret(&secret, "certcast-system", "wildcard-tls", "wildcard", 0,
                     chain.leaf.fingerprint, chain.material);
  // cert-manager's Secret, not certcast's.
  secret["metadata"].erase("labels");
  secret["metadata"].erase("annotations");
  return secret;
}

// The Role DESIGN.md gives a client: one Secret by name, create in its namespace, and patch on
// the Deployment it restarts.
Json ClientRole(const std::string& ns, const std::string& subject, bool can_delete = false) {
  Json role = Json::parse(R"({
    "rules": [
      {"apiGroups": [""], "resources": ["secrets"],
       "verbs": ["get", "update", "patch", "list", "watch"], "resourceNames": ["wildcard-tls"]},
      {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
      {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["patch"],
       "resourceNames": ["web"]}]})");
  role["namespace"] = ns;
  role["subjects"] = Json::array({subject});
  if (can_delete) {  // the delete-on-revoke component's extra rule
    role["rules"][0]["verbs"].push_back("delete");
  }
  return role;
}

// Polls tenant Secrets on its own thread and checks every managed one it sees: the pair matches
// one published chain exactly, and the annotations name that chain's version and fingerprint.
// "Never a wrong Secret": a mix of two versions, a stale annotation or a foreign pair all count.
class SecretChecker {
 public:
  SecretChecker(std::unique_ptr<kube::KubeApi> api, std::vector<std::string> namespaces)
      : api_(std::move(api)), namespaces_(std::move(namespaces)) {
    thread_ = std::thread([this] { Run(); });
  }
  ~SecretChecker() { Stop(); }

  // Chain i is version i + 1. Add a chain before it can be published.
  void AddChain(const Chain& chain) {
    absl::MutexLock lock(&mu_);
    chains_.push_back(chain);
  }
  void Stop() {
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }
  int observed() {
    absl::MutexLock lock(&mu_);
    return observed_;
  }
  // What was wrong: the count and the first few, to keep a failure readable.
  std::string wrong() {
    absl::MutexLock lock(&mu_);
    if (wrong_.empty()) return "";
    std::vector<std::string> first(wrong_.begin(),
                                   wrong_.begin() + std::min<size_t>(5, wrong_.size()));
    return absl::StrCat(wrong_.size(), " wrong Secrets seen, first: ", absl::StrJoin(first, "; "));
  }

 private:
  void Run() {
    for (;;) {
      for (const std::string& ns : namespaces_) {
        absl::StatusOr<Json> secret = api_->Request("GET", kube::SecretPath(ns, "wildcard-tls"));
        if (secret.ok() && kube::IsManagedByCertcast(*secret)) Check(ns, *secret);
      }
      absl::MutexLock lock(&mu_);
      auto stopping = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      // Pace the polls; a Stop() wakes it at once.
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping), absl::Milliseconds(10))) return;
    }
  }
  void Check(const std::string& ns, const Json& secret) {
    absl::StatusOr<CertificateMaterial> material = kube::MaterialFromSecret(secret);
    const Json annotations = secret["metadata"].value("annotations", Json::object());
    const std::string version = annotations.value(kube::kVersionAnnotation, "");
    const std::string fingerprint = annotations.value(kube::kFingerprintAnnotation, "");
    absl::MutexLock lock(&mu_);
    ++observed_;
    for (size_t i = 0; i < chains_.size(); ++i) {
      if (material.ok() && *material == chains_[i].material) {
        if (version == std::to_string(i + 1) && fingerprint == chains_[i].leaf.fingerprint) return;
        break;
      }
    }
    wrong_.push_back(absl::StrCat(ns, ": version annotation ", version, ", fingerprint ",
                                  fingerprint, material.ok() ? "" : " (unparsable material)"));
  }

  std::unique_ptr<kube::KubeApi> api_;
  const std::vector<std::string> namespaces_;
  absl::Mutex mu_;
  std::vector<Chain> chains_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int observed_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> wrong_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

class KubeScenarioTest : public ::testing::Test {
 protected:
  void SetUp() override {
    api_ca_ = fixtures::MakeRootCa("fake kube api ca");
    fixtures::CertOptions serving;
    serving.common_name = "kube-apiserver";
    serving.dns_names = {"localhost"};
    fixtures::Issued api_cert = fixtures::MakeCert(api_ca_, serving);
    WriteText(tmp_.Join("api.crt"), api_cert.cert_pem + api_ca_.cert_pem);
    WriteText(tmp_.Join("api.key"), api_cert.key_pem);
    WriteText(tmp_.Join("api-ca.crt"), api_ca_.cert_pem);
    for (const char* name : {"client-a", "client-b", "server", "admin"}) {
      WriteText(tmp_.Join(absl::StrCat(name, ".token")), absl::StrCat(name, "-token\n"));
    }
    chain_ = MakeChain();
    Json deployment = Json::parse(R"({
      "apiVersion": "apps/v1", "kind": "Deployment",
      "metadata": {"name": "web", "namespace": "tenant-a"},
      "spec": {"selector": {"matchLabels": {"app": "web"}},
               "template": {"metadata": {"labels": {"app": "web"}},
                            "spec": {"containers": [{"name": "web", "image": "nginx"}]}}}})");
    Json server_role = Json::parse(R"({
      "namespace": "certcast-system",
      "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"],
                 "resourceNames": ["wildcard-tls"]}]})");
    server_role["subjects"] = Json::array({kServerSa});
    Json config = Json::object();
    config["tokens"] = {
        {"client-a-token", kClientA}, {"client-b-token", kClientB}, {"server-token", kServerSa}};
    config["admin_tokens"] = Json::array({"admin-token"});
    config["roles"] = Json::array(
        {ClientRole("tenant-a", kClientA), ClientRole("tenant-b", kClientB, true), server_role});
    config["objects"] = Json::array({SourceSecret(chain_), deployment});
    WriteText(tmp_.Join("kube.json"), config.dump());
    StartApi();
    admin_ = Api("admin");
  }

  void StartApi(int port = 0) {
    api_process_ = std::make_unique<ChildProcess>(
        CERTCAST_PYTHON,
        std::vector<std::string>{CERTCAST_FAKE_KUBE_API, "--cert", tmp_.Join("api.crt"), "--key",
                                 tmp_.Join("api.key"), "--config", tmp_.Join("kube.json"), "--port",
                                 std::to_string(port)},
        tmp_.Join(absl::StrCat("api", ++api_starts_, ".log")));
    const std::string bound = api_process_->WaitForLog("listening on port ([0-9]+)");
    ASSERT_FALSE(bound.empty()) << api_process_->log();
    api_port_ = std::stoi(bound);
  }

  std::string ApiUrl() { return absl::StrCat("https://localhost:", api_port_); }

  std::unique_ptr<kube::KubeApi> Api(const std::string& who) {
    return std::make_unique<kube::CurlKubeApi>(
        kube::KubeConfig{ApiUrl(), tmp_.Join(who + ".token"), tmp_.Join("api-ca.crt")}, &fs_);
  }

  std::vector<std::string> KubeFlags(const std::string& who) {
    return {"--kube-api-url=" + ApiUrl(), "--kube-token-file=" + tmp_.Join(who + ".token"),
            "--kube-ca-file=" + tmp_.Join("api-ca.crt")};
  }

  // Control API of the fake (no authentication).
  Json Control(const std::string& method, const std::string& path, const Json& body = Json()) {
    absl::StatusOr<Json> result =
        admin_->Request(method, "/_control/" + path, body.is_null() ? nullptr : &body);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : Json();
  }

  void StartServer(const std::string& source = "secret:certcast-system/wildcard-tls") {
    std::vector<std::string> args = {
        "--listen=127.0.0.1:0", "--insecure", "--certificate=wildcard=" + source,
        "--state-dir=" + tmp_.Join("server-state"), "--quiet-period=20ms"};
    for (const std::string& flag : KubeFlags("server")) args.push_back(flag);
    server_ = std::make_unique<ChildProcess>(CERTCAST_SERVER_BINARY, args, tmp_.Join("server.log"));
    server_port_ = server_->WaitForPort();
    ASSERT_NE(server_port_, 0) << server_->log();
    inspection_ = v1::Inspection::NewStub(scenario::InsecureChannel(server_port_));
  }

  std::unique_ptr<ChildProcess> StartClient(const std::string& ns, const std::string& who,
                                            std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {absl::StrCat("--server=127.0.0.1:", server_port_),
                                     "--insecure",
                                     "--namespace=" + ns,
                                     "--client-id=client-" + ns,
                                     "--certificate=wildcard",
                                     "--secret-name=wildcard-tls",
                                     "--state-dir=" + tmp_.Join("state-" + ns)};
    for (const std::string& flag : KubeFlags(who)) args.push_back(flag);
    args.insert(args.end(), extra.begin(), extra.end());
    return std::make_unique<ChildProcess>(CERTCAST_CLIENT_BINARY, args,
                                          tmp_.Join(absl::StrCat("client-", ns, ".log")));
  }

  v1::Certificate GetCertificate() {
    grpc::ClientContext context;
    v1::GetCertificateRequest request;
    request.set_name("wildcard");
    v1::Certificate certificate;
    inspection_->GetCertificate(&context, request, &certificate);
    return certificate;
  }

  v1::ClientCertificate ClientState(const std::string& ns) {
    grpc::ClientContext context;
    v1::ListClientsRequest request;
    request.set_namespace_(ns);
    v1::ListClientsResponse response;
    inspection_->ListClients(&context, request, &response);
    for (const auto& client : response.clients()) {
      if (client.connected()) return client.certificates(0);
    }
    return {};
  }

  // The tenant Secret as the admin sees it; null when absent.
  Json TenantSecret(const std::string& ns) {
    absl::StatusOr<Json> secret = admin_->Request("GET", kube::SecretPath(ns, "wildcard-tls"));
    return secret.ok() ? *secret : Json();
  }

  bool TenantHolds(const std::string& ns, const Chain& chain) {
    Json secret = TenantSecret(ns);
    if (secret.is_null() || !kube::IsManagedByCertcast(secret)) return false;
    absl::StatusOr<CertificateMaterial> material = kube::MaterialFromSecret(secret);
    return material.ok() && *material == chain.material;
  }

  void RotateSource(const Chain& next) {
    Json secret = SourceSecret(next);
    absl::StatusOr<Json> updated =
        admin_->Request("PUT", kube::SecretPath("certcast-system", "wildcard-tls"), &secret);
    ASSERT_TRUE(updated.ok()) << updated.status();
  }

  int CountRequests(const std::string& method, const std::string& path_part, int status = 0) {
    int count = 0;
    for (const Json& request : Control("GET", "requests")) {
      if (request.value("method", "") == method &&
          request.value("path", "").find(path_part) != std::string::npos &&
          (status == 0 || request.value("status", 0) == status)) {
        ++count;
      }
    }
    return count;
  }

  TempDir tmp_;
  PosixFilesystem fs_;
  fixtures::Issued api_ca_;
  Chain chain_;
  std::unique_ptr<ChildProcess> api_process_;
  int api_port_ = 0;
  int api_starts_ = 0;
  std::unique_ptr<kube::KubeApi> admin_;
  std::unique_ptr<ChildProcess> server_;
  int server_port_ = 0;
  std::unique_ptr<v1::Inspection::Stub> inspection_;
};

// The server follows the source Secret through updates, dropped watches and 410 Expired.
TEST_F(KubeScenarioTest, ServerFollowsSourceSecret) {
  StartServer();
  ASSERT_TRUE(WaitFor([&] { return GetCertificate().current().version() == 1; })) << server_->log();
  EXPECT_EQ(GetCertificate().current().fingerprint(), chain_.leaf.fingerprint);
  EXPECT_EQ(GetCertificate().source(), "secret:certcast-system/wildcard-tls");

  Chain second = MakeChain();
  RotateSource(second);
  ASSERT_TRUE(WaitFor([&] { return GetCertificate().current().version() == 2; })) << server_->log();

  // A watch dropped without a goodbye is resumed; the next change still arrives.
  ASSERT_TRUE(WaitFor([&] { return !Control("GET", "watches").empty(); }));
  Control("POST", "drop_watches");
  Chain third = MakeChain();
  RotateSource(third);
  ASSERT_TRUE(WaitFor([&] { return GetCertificate().current().version() == 3; })) << server_->log();

  // 410 Expired: the server lists again and still sees the change.
  Control("POST", "expire", {{"on", true}});
  ASSERT_TRUE(WaitFor([&] { return !Control("GET", "watches").empty(); }));
  Control("POST", "drop_watches");
  Chain fourth = MakeChain();
  RotateSource(fourth);
  ASSERT_TRUE(WaitFor([&] { return GetCertificate().current().version() == 4; })) << server_->log();
  EXPECT_EQ(GetCertificate().current().fingerprint(), fourth.leaf.fingerprint);
  Control("POST", "expire", {{"on", false}});

  // Deleting the source keeps the last good version and says why.
  ASSERT_TRUE(admin_->Request("DELETE", kube::SecretPath("certcast-system", "wildcard-tls")).ok());
  ASSERT_TRUE(WaitFor([&] { return GetCertificate().last_rejection().reason() == "missing"; }))
      << server_->log();
  EXPECT_EQ(GetCertificate().current().version(), 4u);
}

// A renewal whose read fails (the API answers 503 just when cert-manager renewed) is read again
// with backoff until it succeeds. The failure is not a verdict on the content: no rejection.
TEST_F(KubeScenarioTest, RenewalIsReadAgainAfterApiErrors) {
  StartServer();
  ASSERT_TRUE(WaitFor([&] { return GetCertificate().current().version() == 1; })) << server_->log();
  const std::string source_path = kube::SecretPath("certcast-system", "wildcard-tls");
  Control("POST", "fail",
          {{"status", 503}, {"count", 4}, {"method", "GET"}, {"path_prefix", source_path}});
  Chain renewed = MakeChain();
  RotateSource(renewed);
  ASSERT_TRUE(WaitFor([&] { return GetCertificate().current().version() == 2; })) << server_->log();
  EXPECT_EQ(GetCertificate().current().fingerprint(), renewed.leaf.fingerprint);
  EXPECT_EQ(CountRequests("GET", source_path, 503), 4) << "every injected failure was hit";
  EXPECT_EQ(GetCertificate().rejections(), 0u) << "an unreadable source is not a rejection";
  EXPECT_TRUE(GetCertificate().source_present());
}

// Clients create their namespace's Secret, update it on rotation, and leave it alone when
// nothing changed. The full flow: source Secret → server → two tenants' Secrets.
TEST_F(KubeScenarioTest, ClientsWriteTenantSecretsAndFollowRotation) {
  StartServer();
  auto a = StartClient("tenant-a", "client-a");
  auto b = StartClient("tenant-b", "client-b");
  ASSERT_TRUE(WaitFor([&] {
    return TenantHolds("tenant-a", chain_) && TenantHolds("tenant-b", chain_);
  })) << a->log();
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-b").acknowledged_version() == 1; }));
  Json secret = TenantSecret("tenant-a");
  EXPECT_EQ(secret["type"], "kubernetes.io/tls");
  EXPECT_EQ(secret["metadata"]["annotations"][kube::kVersionAnnotation], "1");
  EXPECT_EQ(secret["metadata"]["annotations"][kube::kFingerprintAnnotation],
            chain_.leaf.fingerprint);
  EXPECT_EQ(secret["metadata"]["annotations"][kube::kCertificateAnnotation], "wildcard");

  Chain next = MakeChain();
  RotateSource(next);
  ASSERT_TRUE(WaitFor([&] {
    return TenantHolds("tenant-a", next) && TenantHolds("tenant-b", next);
  })) << a->log();
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-a").acknowledged_version() == 2; }));

  // A restart with the Secret current writes nothing.
  a->Signal(SIGTERM);
  ASSERT_EQ(a->Wait(absl::Seconds(20)), 0) << a->log();
  Control("DELETE", "requests");
  a = StartClient("tenant-a", "client-a");
  ASSERT_FALSE(a->WaitForLog("in sync at version 2").empty()) << a->log();
  EXPECT_EQ(CountRequests("PUT", "/namespaces/tenant-a/secrets"), 0);
  EXPECT_EQ(CountRequests("POST", "/namespaces/tenant-a/secrets"), 0);
}

// A Secret with the same name that certcast does not manage is never overwritten: NACK.
TEST_F(KubeScenarioTest, ForeignSecretIsUntouchedAndNacked) {
  Json foreign = {{"apiVersion", "v1"},
                  {"kind", "Secret"},
                  {"type", "Opaque"},
                  {"metadata", {{"name", "wildcard-tls"}, {"namespace", "tenant-a"}}},
                  {"data", {{"password", absl::Base64Escape("hunter2")}}}};
  ASSERT_TRUE(admin_->Request("POST", kube::SecretsPath("tenant-a"), &foreign).ok());
  StartServer();
  auto client = StartClient("tenant-a", "client-a");
  ASSERT_TRUE(WaitFor([&] { return !ClientState("tenant-a").last_error().empty(); }))
      << client->log();
  EXPECT_THAT(ClientState("tenant-a").last_error(), HasSubstr("not managed by certcast"));
  EXPECT_THAT(ClientState("tenant-a").last_error(), HasSubstr("tenant-a/wildcard-tls"));
  EXPECT_EQ(TenantSecret("tenant-a")["data"]["password"], absl::Base64Escape("hunter2"));
  EXPECT_EQ(CountRequests("PUT", "/namespaces/tenant-a/secrets"), 0);
}

// cert-manager's own kubernetes.io/tls Secret with the same name: same type and keys as certcast's,
// but not labelled as certcast's. It is never overwritten, whether it was there before the client
// started (tenant-a) or replaced certcast's Secret later, where the restoring watch sees it
// (tenant-b); the client NACKs naming it.
TEST_F(KubeScenarioTest, ForeignTlsSecretIsNeverOverwritten) {
  auto cert_manager_secret = [](const std::string& ns, const Chain& chain) {
    Json secret = Json::object();
    kube::SetTlsSecret(&secret, ns, "wildcard-tls", "wildcard", 0, chain.leaf.fingerprint,
                       chain.material);
    secret["metadata"].erase("labels");
    secret["metadata"]["annotations"] = {{"cert-manager.io/certificate-name", "wildcard"},
                                         {"cert-manager.io/issuer-name", "letsencrypt"}};
    return secret;
  };
  auto untouched = [&](const std::string& ns, const Json& before) {
    Json now = TenantSecret(ns);
    return !now.is_null() &&
           now["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"] &&
           now["data"] == before["data"] && !kube::IsManagedByCertcast(now);
  };
  Chain own_a = MakeChain();
  Json created = cert_manager_secret("tenant-a", own_a);
  ASSERT_TRUE(admin_->Request("POST", kube::SecretsPath("tenant-a"), &created).ok());
  const Json before_a = TenantSecret("tenant-a");
  StartServer();
  auto a = StartClient("tenant-a", "client-a");
  auto b = StartClient("tenant-b", "client-b");
  ASSERT_TRUE(WaitFor([&] { return !ClientState("tenant-a").last_error().empty(); })) << a->log();
  EXPECT_THAT(ClientState("tenant-a").last_error(), HasSubstr("not managed by certcast"));
  EXPECT_THAT(ClientState("tenant-a").last_error(), HasSubstr("tenant-a/wildcard-tls"));
  EXPECT_TRUE(untouched("tenant-a", before_a));

  // tenant-b: certcast's Secret, then deleted and replaced by cert-manager's.
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-b").acknowledged_version() == 1; }))
      << b->log();
  ASSERT_TRUE(WaitFor([&] { return !Control("GET", "watches").empty(); }));
  ASSERT_TRUE(admin_->Request("DELETE", kube::SecretPath("tenant-b", "wildcard-tls")).ok());
  created = cert_manager_secret("tenant-b", MakeChain());
  // The client may restore its own Secret first; cert-manager then takes the name over.
  ASSERT_TRUE(WaitFor([&] {
    admin_->Request("DELETE", kube::SecretPath("tenant-b", "wildcard-tls")).IgnoreError();
    return admin_->Request("POST", kube::SecretsPath("tenant-b"), &created).ok();
  }));
  const Json before_b = TenantSecret("tenant-b");
  ASSERT_FALSE(kube::IsManagedByCertcast(before_b));

  // A rotation reaches both clients; neither writes over the foreign Secrets.
  RotateSource(MakeChain());
  ASSERT_TRUE(WaitFor([&] {
    const v1::ClientCertificate state = ClientState("tenant-b");
    return state.last_error_version() == 2 &&
           state.last_error().find("not managed by certcast") != std::string::npos;
  })) << b->log();
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-a").last_error_version() == 2; }))
      << a->log();
  EXPECT_TRUE(untouched("tenant-a", before_a));
  EXPECT_TRUE(untouched("tenant-b", before_b));
  EXPECT_EQ(CountRequests("PUT", "/namespaces/tenant-a/secrets"), 0);
  EXPECT_EQ(CountRequests("PATCH", "/namespaces/tenant-a/secrets"), 0);
  EXPECT_EQ(CountRequests("DELETE", "/namespaces/tenant-a/secrets"), 0);
  EXPECT_EQ(ClientState("tenant-a").acknowledged_version(), 0u);
  EXPECT_EQ(ClientState("tenant-b").acknowledged_version(), 1u);
}

// With --output-dir and --secret-name together, a version is acknowledged only when both sinks
// hold it: the failing sink (the Secret, then the files) is named in the NACK, the other one
// already holds the version, and the ACK follows by itself once the failing one recovers.
TEST_F(KubeScenarioTest, TwoSinksAckOnlyWhenBothHoldTheVersion) {
  const std::string out = tmp_.Join("out-tenant-a");
  auto files_hold = [&](const Chain& chain) {
    RealClock clock;
    FileSink files(&fs_, &clock, {out, false});
    absl::StatusOr<CertificateMaterial> held = files.Read("wildcard");
    return held.ok() && *held == chain.material;
  };
  Control("POST", "fail",
          {{"status", 500}, {"count", -1}, {"path_prefix", "/api/v1/namespaces/tenant-a/secrets"}});
  StartServer();
  auto client = StartClient("tenant-a", "client-a", {"--output-dir=" + out});
  ASSERT_TRUE(WaitFor([&] { return !ClientState("tenant-a").last_error().empty(); }))
      << client->log();
  EXPECT_THAT(ClientState("tenant-a").last_error(), ::testing::StartsWith("secret: "));
  EXPECT_THAT(ClientState("tenant-a").last_error(), ::testing::Not(HasSubstr("files: ")));
  EXPECT_TRUE(WaitFor([&] { return files_hold(chain_); })) << "the healthy sink got it";
  EXPECT_EQ(ClientState("tenant-a").acknowledged_version(), 0u);
  Control("DELETE", "fail");
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-a").acknowledged_version() == 1; },
                      absl::Seconds(60)))
      << client->log();
  EXPECT_EQ(ClientState("tenant-a").last_error(), "");
  EXPECT_TRUE(TenantHolds("tenant-a", chain_));

  // Now the files fail (a plain file where the output directory was) and the Secret works.
  ASSERT_EQ(rename(out.c_str(), (out + ".moved").c_str()), 0);
  WriteText(out, "not a directory");
  Chain next = MakeChain();
  RotateSource(next);
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-a").last_error_version() == 2; }))
      << client->log();
  EXPECT_THAT(ClientState("tenant-a").last_error(), ::testing::StartsWith("files: "));
  EXPECT_THAT(ClientState("tenant-a").last_error(), ::testing::Not(HasSubstr("secret: ")));
  EXPECT_TRUE(WaitFor([&] { return TenantHolds("tenant-a", next); })) << "the healthy sink got it";
  EXPECT_EQ(ClientState("tenant-a").acknowledged_version(), 1u);
  ASSERT_EQ(unlink(out.c_str()), 0);
  ASSERT_EQ(rename((out + ".moved").c_str(), out.c_str()), 0);
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-a").acknowledged_version() == 2; },
                      absl::Seconds(60)))
      << client->log();
  EXPECT_TRUE(files_hold(next));
  EXPECT_TRUE(TenantHolds("tenant-a", next));
}

// A 409 conflict on update is re-read and retried.
TEST_F(KubeScenarioTest, ConflictIsRetried) {
  StartServer();
  auto client = StartClient("tenant-a", "client-a");
  ASSERT_TRUE(WaitFor([&] { return TenantHolds("tenant-a", chain_); })) << client->log();
  Control("POST", "conflict", {{"count", 2}, {"path_prefix", "/api/v1/namespaces/tenant-a"}});
  Chain next = MakeChain();
  RotateSource(next);
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-a").acknowledged_version() == 2; }))
      << client->log();
  EXPECT_TRUE(TenantHolds("tenant-a", next));
  EXPECT_EQ(CountRequests("PUT", "/namespaces/tenant-a/secrets", 409), 2);
}

// 403 gives a NACK naming the missing permission; once allowed again the client ACKs by itself.
TEST_F(KubeScenarioTest, ForbiddenIsReportedThenRecovered) {
  Control("POST", "fail",
          {{"status", 403},
           {"count", -1},
           {"method", "POST"},
           {"path_prefix", "/api/v1/namespaces/tenant-a/secrets"},
           {"reason", "Forbidden"},
           {"message",
            "secrets is forbidden: User \"system:serviceaccount:tenant-a:certcast-client\" "
            "cannot create resource \"secrets\" in API group \"\" in the namespace \"tenant-a\""}});
  StartServer();
  auto client = StartClient("tenant-a", "client-a");
  ASSERT_TRUE(WaitFor([&] { return !ClientState("tenant-a").last_error().empty(); }))
      << client->log();
  const std::string error = ClientState("tenant-a").last_error();
  EXPECT_THAT(error, HasSubstr("cannot create resource"));
  EXPECT_THAT(error, HasSubstr("create on secrets in namespace \"tenant-a\""));
  Control("DELETE", "fail");
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-a").acknowledged_version() == 1; },
                      absl::Seconds(60)))
      << client->log();
  EXPECT_EQ(ClientState("tenant-a").last_error(), "");
  EXPECT_TRUE(TenantHolds("tenant-a", chain_));
}

// The API server restarted (with a changed Secret): the server's watch fails, re-lists and
// converges; the clients follow.
TEST_F(KubeScenarioTest, ServerAndClientsSurviveApiServerRestart) {
  StartServer();
  auto client = StartClient("tenant-a", "client-a");
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-a").acknowledged_version() == 1; }))
      << client->log();
  const int port = api_port_;
  api_process_->Signal(SIGKILL);
  api_process_->Wait(absl::Seconds(10));
  Chain next = MakeChain();
  {
    // The restarted fake loads its objects from the config: put the new material there.
    absl::StatusOr<std::string> text = fs_.ReadFile(tmp_.Join("kube.json"));
    ASSERT_TRUE(text.ok());
    Json config = Json::parse(*text);
    config["objects"][0] = SourceSecret(next);
    WriteText(tmp_.Join("kube.json"), config.dump());
  }
  EXPECT_EQ(GetCertificate().current().version(), 1u) << "the last good version keeps serving";
  StartApi(port);
  ASSERT_TRUE(WaitFor([&] { return GetCertificate().current().version() == 2; }, absl::Seconds(60)))
      << server_->log();
  ASSERT_TRUE(WaitFor([&] { return TenantHolds("tenant-a", next); }, absl::Seconds(60)))
      << client->log();
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-a").acknowledged_version() == 2; }));
}

// With the API server unreachable the client NACKs (transient) and keeps retrying; when the API
// answers again it writes the Secret and ACKs without the server resending.
TEST_F(KubeScenarioTest, ClientNacksWhileApiIsDownThenAcks) {
  fixtures::WriteKubeletDir(tmp_.Join("source"), chain_.material);
  StartServer(tmp_.Join("source"));
  auto client = StartClient("tenant-a", "client-a");
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-a").acknowledged_version() == 1; }))
      << client->log();
  Control("POST", "down", {{"on", true}});
  Chain next = MakeChain();
  fixtures::WriteKubeletDir(tmp_.Join("source"), next.material);
  ASSERT_TRUE(WaitFor([&] { return !ClientState("tenant-a").last_error().empty(); }))
      << client->log();
  EXPECT_THAT(ClientState("tenant-a").last_error(), HasSubstr("secret: "));
  EXPECT_EQ(ClientState("tenant-a").acknowledged_version(), 1u);
  Control("POST", "down", {{"on", false}});
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-a").acknowledged_version() == 2; },
                      absl::Seconds(60)))
      << client->log();
  EXPECT_TRUE(TenantHolds("tenant-a", next));
}

// A managed Secret deleted or edited by someone else is restored within seconds.
TEST_F(KubeScenarioTest, DeletedOrEditedSecretIsRestored) {
  StartServer();
  auto client = StartClient("tenant-a", "client-a");
  ASSERT_TRUE(WaitFor([&] { return TenantHolds("tenant-a", chain_); })) << client->log();
  ASSERT_TRUE(WaitFor([&] { return !Control("GET", "watches").empty(); }));

  ASSERT_TRUE(admin_->Request("DELETE", kube::SecretPath("tenant-a", "wildcard-tls")).ok());
  ASSERT_TRUE(WaitFor([&] { return TenantHolds("tenant-a", chain_); })) << client->log();

  Json edited = TenantSecret("tenant-a");
  edited["data"]["tls.crt"] = absl::Base64Escape(MakeChain().material.chain_pem);
  ASSERT_TRUE(admin_->Request("PUT", kube::SecretPath("tenant-a", "wildcard-tls"), &edited).ok());
  ASSERT_TRUE(WaitFor([&] { return TenantHolds("tenant-a", chain_); })) << client->log();
  // The log line follows the write the test saw: wait for it rather than race it.
  EXPECT_FALSE(client->WaitForLog("was deleted by someone else; restored version 1").empty())
      << client->log();
  EXPECT_FALSE(client->WaitForLog("was edited by someone else; restored version 1").empty())
      << client->log();
}

// --rollout-restart patches the Deployment's pod template after every applied version.
TEST_F(KubeScenarioTest, RolloutRestartPatchesTheDeployment) {
  StartServer();
  auto client = StartClient("tenant-a", "client-a", {"--rollout-restart=deployment/web"});
  auto annotation = [&] {
    absl::StatusOr<Json> deployment =
        admin_->Request("GET", "/apis/apps/v1/namespaces/tenant-a/deployments/web");
    if (!deployment.ok()) return std::string();
    return (*deployment)["spec"]["template"]["metadata"]
        .value("annotations", Json::object())
        .value("certcast.io/version", "");
  };
  ASSERT_TRUE(WaitFor([&] { return annotation() == "wildcard-1"; })) << client->log();
  RotateSource(MakeChain());
  ASSERT_TRUE(WaitFor([&] { return annotation() == "wildcard-2"; })) << client->log();
  EXPECT_EQ(ClientState("tenant-a").hook_warning(), "");
}

// /readyz is 503 until the current version is applied to every sink, then 200.
TEST_F(KubeScenarioTest, ClientReadinessFollowsTheSinks) {
  Control("POST", "fail",
          {{"status", 503}, {"count", -1}, {"path_prefix", "/api/v1/namespaces/tenant-a/secrets"}});
  StartServer();
  const int health_port = scenario::PickFreePort();
  auto client = StartClient("tenant-a", "client-a",
                            {absl::StrCat("--health-listen=127.0.0.1:", health_port)});
  ASSERT_TRUE(WaitFor([&] { return scenario::HttpGet(health_port, "/healthz") == 200; }))
      << client->log();
  std::string body;
  ASSERT_TRUE(WaitFor([&] {
    return scenario::HttpGet(health_port, "/readyz", &body) == 503 &&
           body.find("secret") != std::string::npos;
  })) << body;
  Control("DELETE", "fail");
  ASSERT_TRUE(
      WaitFor([&] { return scenario::HttpGet(health_port, "/readyz") == 200; }, absl::Seconds(60)))
      << client->log();
}

// --delete-on-revoke's Secret removal deletes the managed Secret, and never a foreign one.
TEST_F(KubeScenarioTest, RevokedSecretSinkDeletesOnlyItsManagedSecret) {
  std::unique_ptr<kube::KubeApi> api = Api("client-b");
  SecretSink sink(api.get(), {"tenant-b", "wildcard-tls"});
  VersionedMaterial version{"wildcard", 1, chain_.leaf.fingerprint, chain_.material};
  ASSERT_TRUE(sink.Apply(version).ok());
  ASSERT_TRUE(TenantHolds("tenant-b", chain_));
  ASSERT_TRUE(sink.Remove("wildcard").ok());
  EXPECT_TRUE(TenantSecret("tenant-b").is_null()) << "the managed Secret is gone";

  Json foreign = {{"apiVersion", "v1"},
                  {"kind", "Secret"},
                  {"type", "Opaque"},
                  {"metadata", {{"name", "wildcard-tls"}, {"namespace", "tenant-b"}}},
                  {"data", {{"password", absl::Base64Escape("hunter2")}}}};
  ASSERT_TRUE(admin_->Request("POST", kube::SecretsPath("tenant-b"), &foreign).ok());
  ASSERT_TRUE(sink.Remove("wildcard").ok());
  EXPECT_EQ(TenantSecret("tenant-b")["data"]["password"], absl::Base64Escape("hunter2"));
}

// The API token is read for every request (the kubelet rotates projected tokens): a token file
// that turns invalid gives NACKs naming the 401, a valid one again lets the client ACK.
TEST_F(KubeScenarioTest, ApiTokenFileIsReReadOnEveryRequest) {
  fixtures::WriteKubeletDir(tmp_.Join("source"), chain_.material);
  StartServer(tmp_.Join("source"));
  auto client = StartClient("tenant-a", "client-a");
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-a").acknowledged_version() == 1; }))
      << client->log();
  WriteText(tmp_.Join("client-a.token"), "revoked-token\n");
  Chain next = MakeChain();
  fixtures::WriteKubeletDir(tmp_.Join("source"), next.material);
  ASSERT_TRUE(WaitFor([&] {
    return ClientState("tenant-a").last_error().find("HTTP 401") != std::string::npos;
  })) << client->log();
  WriteText(tmp_.Join("client-a.token"), "client-a-token\n");
  ASSERT_TRUE(WaitFor([&] { return ClientState("tenant-a").acknowledged_version() == 2; },
                      absl::Seconds(60)))
      << client->log();
  EXPECT_TRUE(TenantHolds("tenant-a", next));
}

// Fault 8: the API misbehaves at the moment of each rotation (slow answers, 500s and 503s on
// the source read and the tenant writes, truncated watch streams, expired resourceVersions, a
// conflict flood). The server's source and both clients' Secret sinks recover by themselves,
// and no tenant Secret is ever wrong (a mixed pair or annotations of another version).
TEST_F(KubeScenarioTest, MisbehavingApiNeverLeavesAWrongOrStaleSecret) {
  StartServer();
  auto a = StartClient("tenant-a", "client-a");
  auto b = StartClient("tenant-b", "client-b");
  SecretChecker checker(Api("admin"), {"tenant-a", "tenant-b"});
  checker.AddChain(chain_);
  ASSERT_TRUE(WaitFor([&] {
    return TenantHolds("tenant-a", chain_) && TenantHolds("tenant-b", chain_);
  })) << a->log();
  const std::string source_path = kube::SecretPath("certcast-system", "wildcard-tls");
  const std::string source_collection = kube::SecretsPath("certcast-system");
  struct Fault {
    std::string name;
    std::function<void()> before;  // before the rotation
    std::function<void()> after;   // right after it
  };
  const std::vector<Fault> faults = {
      {"slow answers",
       [&] {
         Control("POST", "fail",
                 {{"status", 0},
                  {"delay_seconds", 1.5},
                  {"count", 8},
                  {"path_prefix", "/api/v1/namespaces/"}});
       },
       [] {}},
      {"500 and 503 on the source read and the tenant writes",
       [&] {
         Control("POST", "fail",
                 {{"status", 500}, {"count", 3}, {"method", "GET"}, {"path_prefix", source_path}});
         Control("POST", "fail",
                 {{"status", 503},
                  {"count", 3},
                  {"method", "PUT"},
                  {"path_prefix", "/api/v1/namespaces/tenant-"}});
       },
       [] {}},
      {"truncated watch streams",
       [&] {
         Control("POST", "fail",
                 {{"status", 0},
                  {"close", true},
                  {"count", 3},
                  {"verb", "watch"},
                  {"path_prefix", source_collection}});
       },
       [&] { Control("POST", "drop_watches"); }},
      {"expired resourceVersions",
       [&] {
         Control("POST", "expire", {{"on", true}});
       },
       [&] { Control("POST", "drop_watches"); }},
      {"conflict flood",
       [&] {
         Control("POST", "conflict",
                 {{"count", 12}, {"path_prefix", "/api/v1/namespaces/tenant-"}});
       },
       [] {}},
  };
  for (const Fault& fault : faults) {
    SCOPED_TRACE(fault.name);
    Chain next = MakeChain();
    checker.AddChain(next);
    fault.before();
    RotateSource(next);
    fault.after();
    EXPECT_TRUE(
        WaitFor([&] { return TenantHolds("tenant-a", next) && TenantHolds("tenant-b", next); },
                absl::Seconds(90)))
        << fault.name << "\n"
        << server_->log() << a->log() << b->log();
    Control("DELETE", "fail");
    Control("DELETE", "conflict");
    Control("POST", "expire", {{"on", false}});
  }
  const uint64_t last = faults.size() + 1;
  EXPECT_TRUE(WaitFor([&] { return ClientState("tenant-a").acknowledged_version() == last; }));
  EXPECT_TRUE(WaitFor([&] { return ClientState("tenant-b").acknowledged_version() == last; }));
  checker.Stop();
  EXPECT_GT(checker.observed(), 0);
  EXPECT_EQ(checker.wrong(), "");
  // The server's history is exactly one version per rotation, in order.
  v1::Certificate certificate = GetCertificate();
  EXPECT_EQ(certificate.current().version(), last);
  EXPECT_EQ(certificate.rejections(), 0u);
}

// Fault 2: the client is killed (SIGKILL) at random moments while rotations flow through its
// Secret sink. The tenant Secret is always exactly one version (never a mix), and the
// restarted client converges. CERTCAST_LONG=1 runs 1,000 rotations instead of 20.
TEST_F(KubeScenarioTest, ClientKilledDuringRotationsNeverLeavesAMixedSecret) {
  const bool long_variant = getenv("CERTCAST_LONG") != nullptr;
  const int rotations = long_variant ? 1000 : 20;
  StartServer();
  auto client = StartClient("tenant-a", "client-a");
  SecretChecker checker(Api("admin"), {"tenant-a"});
  checker.AddChain(chain_);
  ASSERT_TRUE(WaitFor([&] { return TenantHolds("tenant-a", chain_); })) << client->log();
  std::mt19937 random(42);
  int kills = 0;
  Chain last = chain_;
  for (int i = 0; i < rotations; ++i) {
    Chain next = MakeChain();
    checker.AddChain(next);
    RotateSource(next);
    last = next;
    if (random() % 3 == 0) {
      // A random kill moment somewhere between the push and the write (this chooses when to
      // kill; it does not wait for anything).
      absl::SleepFor(absl::Milliseconds(random() % 120));
      client->Signal(SIGKILL);
      client->Wait(absl::Seconds(10));
      ++kills;
      client = StartClient("tenant-a", "client-a");
    } else {
      // Let the rotation land before the next one (a server test publishes faster than the
      // kubelet ever would).
      ASSERT_TRUE(WaitFor([&] { return TenantHolds("tenant-a", next); })) << client->log();
    }
  }
  ASSERT_TRUE(WaitFor([&] { return TenantHolds("tenant-a", last); }, absl::Seconds(60)))
      << client->log();
  checker.Stop();
  EXPECT_GT(kills, 0);
  EXPECT_GT(checker.observed(), rotations / 2);
  EXPECT_EQ(checker.wrong(), "");
  std::cout << "rotations " << rotations << ", client kills " << kills << ", Secret reads "
            << checker.observed() << std::endl;
}

}  // namespace
}  // namespace certcast
