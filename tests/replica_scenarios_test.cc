// Several certcast-server replicas sharing one version history, for both shared stores:
// - the Kubernetes API (--store=kubernetes://NAMESPACE/NAME) against the fake API server
//   (tests/kube_api_server): real HTTPS, the Role a replica needs checked by the fake's RBAC;
// - etcd (--store=etcd://HOST:PORT/PREFIX) against a real etcd on loopback (tests/etcd_process.h)
//   with TLS and client certificates, each replica reaching it through its own TCP forwarder
//   (tests/tcp_forwarder.h), which a test cuts to partition that replica from the store.
// The scenarios run once per store (parameter "kubernetes" or "etcd"). Each replica reads its own
// directory source, as pods reading their own Secret volume, which kubelet may update minutes
// apart.
//
// CERTCAST_LONG=1 runs the fleet test with 1,000 clients (docs/REPLICAS.md); the default is 300.
#include <openssl/rand.h>
#include <signal.h>

#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/filesystem.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kube/api.h"
#include "kube/secret.h"
#include "server/etcd_client.h"
#include "server/etcd_store.h"
#include "server/kube_store.h"
#include "server/store_encryption.h"
#include "tests/child_process.h"
#include "tests/etcd_process.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/subscriber_fleet.h"
#include "tests/tcp_forwarder.h"
#include "tests/test_subscriber.h"

namespace certcast {
namespace {

using ::certcast::fixtures::TempDir;
using ::certcast::kube::Json;
using ::certcast::scenario::ChildProcess;
using ::certcast::scenario::TestSubscriber;
using ::certcast::scenario::WaitFor;
using ::testing::HasSubstr;

constexpr char kNamespace[] = "certcast-system";
constexpr char kKubeStore[] = "kubernetes://certcast-system/certcast";
constexpr char kStateSecret[] = "certcast-wildcard";
constexpr char kLeasePath[] =
    "/apis/coordination.k8s.io/v1/namespaces/certcast-system/leases/certcast";
constexpr char kEtcdPrefix[] = "/certcast";
constexpr int kReplicas = 3;
// Short election times (the defaults are 15 s / 10 s / 2 s).
constexpr char kLeaseDuration[] = "2s";
constexpr char kRenewDeadline[] = "1500ms";
constexpr char kRetryPeriod[] = "200ms";

std::string ReplicaUser(int i) {
  return absl::StrCat("system:serviceaccount:certcast-system:certcast-server-", i);
}

// A hello asking for the certificate, holding `version` (0: nothing yet).
bool Hello(TestSubscriber& subscriber, const std::string& client_id, uint64_t version = 0,
           const std::string& fingerprint = "", const std::string& ns = "tenant-a") {
  v1::HeldCertificate held;
  held.set_name("wildcard");
  held.set_version(version);
  held.set_fingerprint(fingerprint);
  return subscriber.SendHello(ns, client_id, {held});
}

void WriteText(const std::string& path, const std::string& text) {
  PosixFilesystem fs;
  ASSERT_TRUE(WriteFileAtomically(fs, path, text, 0600).ok());
}

// 32 random bytes: an AES-256 key.
std::string RandomKey() {
  std::string key(32, '\0');
  RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), static_cast<int>(key.size()));
  return key;
}

// A leaf of one test CA whose notBefore is `minutes` after a fixed base: a larger number is
// newer material in the directory sources' order.
struct Leaf {
  CertificateMaterial material;
  std::string fingerprint;
};

// The shared store under test, as the scenarios need it: started, reached by each replica's
// flags, read by the test itself, cut off from one replica, crashed and restarted.
class StoreUnderTest {
 public:
  virtual ~StoreUnderTest() = default;
  // The --store flag and its credentials for replica `i`.
  virtual std::vector<std::string> ReplicaFlags(int i) = 0;
  // The leader's identity as the store records it ("" when none).
  virtual std::string LeaderIdentity() = 0;
  // The stored state of certificate "wildcard", read with the test's own client.
  virtual absl::StatusOr<std::optional<CertificateState>> LoadState() = 0;
  // Replica `i` gets no answer from the store until Reconnect().
  virtual void CutOff(int i) = 0;
  virtual void Reconnect() = 0;
  // kill -9 of the store, then the same address and data again.
  virtual void Crash() = 0;
  virtual void Restart() = 0;
};

// The fake Kubernetes API server, with a token per replica and the Role a replica needs.
class KubeStore final : public StoreUnderTest {
 public:
  explicit KubeStore(const TempDir& tmp) : tmp_(tmp) {
    api_ca_ = fixtures::MakeRootCa("fake kube api ca");
    fixtures::CertOptions serving;
    serving.common_name = "kube-apiserver";
    serving.dns_names = {"localhost"};
    fixtures::Issued api_cert = fixtures::MakeCert(api_ca_, serving);
    WriteText(tmp_.Join("api.crt"), api_cert.cert_pem + api_ca_.cert_pem);
    WriteText(tmp_.Join("api.key"), api_cert.key_pem);
    WriteText(tmp_.Join("api-ca.crt"), api_ca_.cert_pem);
    WriteText(tmp_.Join("admin.token"), "admin-token\n");
    Json config = Json::object();
    config["admin_tokens"] = Json::array({"admin-token"});
    Json subjects = Json::array();
    for (int i = 0; i < kReplicas; ++i) {
      WriteText(tmp_.Join(absl::StrCat("replica", i, ".token")), absl::StrCat("replica-", i, "\n"));
      config["tokens"][absl::StrCat("replica-", i)] = ReplicaUser(i);
      subjects.push_back(ReplicaUser(i));
    }
    // The Role a replica needs (docs/REPLICAS.md): its state Secrets and Lease by name, create
    // (which RBAC cannot limit by name) on both, and reading the source Secret wildcard-tls.
    Json role = Json::parse(R"({
      "namespace": "certcast-system",
      "rules": [
        {"apiGroups": [""], "resources": ["secrets"],
         "verbs": ["get", "update", "list", "watch"], "resourceNames": ["certcast-wildcard"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "watch"],
         "resourceNames": ["wildcard-tls"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "verbs": ["get", "update"], "resourceNames": ["certcast"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "update"],
         "resourceNames": ["certcast-fleet"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]})");
    role["subjects"] = subjects;
    config["roles"] = Json::array({role});
    config["bookmark_interval"] = 0.5;
    WriteText(tmp_.Join("kube.json"), config.dump());
    StartApi();
    admin_ = std::make_unique<kube::CurlKubeApi>(
        kube::KubeConfig{ApiUrl(), tmp_.Join("admin.token"), tmp_.Join("api-ca.crt")}, &fs_);
  }

  std::vector<std::string> ReplicaFlags(int i) override {
    return {absl::StrCat("--store=", kKubeStore), "--kube-api-url=" + ApiUrl(),
            "--kube-token-file=" + tmp_.Join(absl::StrCat("replica", i, ".token")),
            "--kube-ca-file=" + tmp_.Join("api-ca.crt")};
  }

  std::string LeaderIdentity() override {
    absl::StatusOr<Json> lease = admin_->Request("GET", kLeasePath);
    if (!lease.ok()) return "";
    return kube::StringMember(kube::Member(*lease, "spec"), "holderIdentity");
  }

  absl::StatusOr<std::optional<CertificateState>> LoadState() override {
    KubernetesVersionStore store(admin_.get(), {kNamespace, "certcast"}, "test");
    return store.Load("wildcard");
  }

  // The fake's per-user failure rule: every request of replica `i` gets 503.
  void CutOff(int i) override {
    Control("POST", "fail", {{"status", 503}, {"count", -1}, {"user", ReplicaUser(i)}});
  }
  void Reconnect() override { Control("DELETE", "fail"); }
  void Crash() override {
    api_process_->Signal(SIGKILL);
    api_process_->Wait(absl::Seconds(10));
  }
  void Restart() override { StartApi(api_port_); }

  kube::KubeApi* admin() { return admin_.get(); }
  std::string ApiUrl() { return absl::StrCat("https://localhost:", api_port_); }

 private:
  void StartApi(int port = 0) {
    api_process_.reset();
    api_process_ = std::make_unique<ChildProcess>(
        CERTCAST_PYTHON,
        std::vector<std::string>{CERTCAST_FAKE_KUBE_API, "--cert", tmp_.Join("api.crt"), "--key",
                                 tmp_.Join("api.key"), "--config", tmp_.Join("kube.json"),
                                 "--data-file", tmp_.Join("kube-data.json"), "--port",
                                 std::to_string(port)},
        tmp_.Join(absl::StrCat("api", ++api_starts_, ".log")));
    const std::string bound = api_process_->WaitForLog("listening on port ([0-9]+)");
    ASSERT_FALSE(bound.empty()) << api_process_->log();
    api_port_ = std::stoi(bound);
  }

  Json Control(const std::string& method, const std::string& path, const Json& body = Json()) {
    absl::StatusOr<Json> result =
        admin_->Request(method, "/_control/" + path, body.is_null() ? nullptr : &body);
    EXPECT_TRUE(result.ok()) << result.status();
    return result.ok() ? *result : Json();
  }

  const TempDir& tmp_;
  PosixFilesystem fs_;
  fixtures::Issued api_ca_;
  std::unique_ptr<ChildProcess> api_process_;
  int api_port_ = 0;
  int api_starts_ = 0;
  std::unique_ptr<kube::KubeApi> admin_;
};

// A real etcd with TLS and client certificates; each replica reaches it through a forwarder of
// its own; stored states encrypted with one key every replica is given.
class EtcdStore final : public StoreUnderTest {
 public:
  explicit EtcdStore(const TempDir& tmp) : tmp_(tmp) {
    const fixtures::Issued ca = fixtures::MakeRootCa("etcd ca");
    fixtures::CertOptions serving;
    serving.common_name = "etcd";
    serving.dns_names = {"localhost"};
    const fixtures::Issued server = fixtures::MakeCert(ca, serving);
    fixtures::CertOptions client;
    client.common_name = "certcast-server";
    client.client_auth = true;
    const fixtures::Issued replica = fixtures::MakeCert(ca, client);
    WriteText(tmp_.Join("etcd-ca.crt"), ca.cert_pem);
    WriteText(tmp_.Join("etcd-server.crt"), server.cert_pem);
    WriteText(tmp_.Join("etcd-server.key"), server.key_pem);
    WriteText(tmp_.Join("etcd-client.crt"), replica.cert_pem);
    WriteText(tmp_.Join("etcd-client.key"), replica.key_pem);
    WriteText(tmp_.Join("store.key"), absl::Base64Escape(RandomKey()) + "\n");
    etcd_ = std::make_unique<scenario::EtcdProcess>(
        tmp_.path(), scenario::EtcdTls{tmp_.Join("etcd-server.crt"), tmp_.Join("etcd-server.key"),
                                       tmp_.Join("etcd-ca.crt")});
    if (!etcd_->Start()) ADD_FAILURE() << "etcd does not start:\n" << etcd_->log();
    for (int i = 0; i < kReplicas; ++i) {
      forwarders_.push_back(std::make_unique<scenario::TcpForwarder>(etcd_->port()));
    }
    PosixFilesystem fs;
    client_ = *EtcdClient::Create(fs, {etcd_->endpoint()}, Tls(), absl::Seconds(5));
    encryption_ = std::make_unique<StoreEncryption>(
        *StoreEncryption::FromFiles(fs, tmp_.Join("store.key"), ""));
  }

  EtcdTlsFiles Tls() const {
    return {tmp_.Join("etcd-ca.crt"), tmp_.Join("etcd-client.crt"), tmp_.Join("etcd-client.key")};
  }

  std::vector<std::string> ReplicaFlags(int i) override {
    std::vector<std::string> flags = {
        absl::StrCat("--store=etcd://localhost:", forwarders_[i]->port(), kEtcdPrefix),
        "--store-ca=" + tmp_.Join("etcd-ca.crt"), "--store-cert=" + tmp_.Join("etcd-client.crt"),
        "--store-key=" + tmp_.Join("etcd-client.key"),
        "--store-encryption-key-file=" + tmp_.Join(key_files_[i].first)};
    if (!key_files_[i].second.empty()) {
      flags.push_back("--store-encryption-previous-key-file=" + tmp_.Join(key_files_[i].second));
    }
    return flags;
  }

  // Replica `i`'s next start uses key file `current` (and `previous`, unless empty), both under
  // the test's directory; "store.key" is the key every replica starts with.
  void SetKeyFiles(int i, const std::string& current, const std::string& previous) {
    key_files_[i] = {current, previous};
  }

  std::string LeaderIdentity() override {
    etcdserverpb::RangeRequest request;
    request.set_key(absl::StrCat(kEtcdPrefix, "/leader"));
    absl::StatusOr<etcdserverpb::RangeResponse> range = client_->Range(request);
    if (!range.ok() || range->kvs_size() == 0) return "";
    return range->kvs(0).value();
  }

  absl::StatusOr<std::optional<CertificateState>> LoadState() override {
    EtcdVersionStore store(client_.get(), kEtcdPrefix, encryption_.get(), nullptr);
    return store.Load("wildcard");
  }

  // Every key under the prefix with its value, as etcd holds it.
  std::map<std::string, std::string> ReadAll() {
    etcdserverpb::RangeRequest request;
    request.set_key(kEtcdPrefix);
    request.set_range_end(PrefixRangeEnd(kEtcdPrefix));
    absl::StatusOr<etcdserverpb::RangeResponse> range = client_->Range(request);
    EXPECT_TRUE(range.ok()) << range.status();
    std::map<std::string, std::string> values;
    if (range.ok()) {
      for (const mvccpb::KeyValue& kv : range->kvs()) values[kv.key()] = kv.value();
    }
    return values;
  }

  void CutOff(int i) override { forwarders_[i]->Cut(); }
  void Reconnect() override {
    for (auto& forwarder : forwarders_) forwarder->Restore();
  }
  void Crash() override { etcd_->Kill(); }
  void Restart() override { ASSERT_TRUE(etcd_->Restart()) << etcd_->log(); }

  EtcdClient* client() { return client_.get(); }
  const StoreEncryption* encryption() { return encryption_.get(); }

 private:
  const TempDir& tmp_;
  std::unique_ptr<scenario::EtcdProcess> etcd_;
  std::vector<std::unique_ptr<scenario::TcpForwarder>> forwarders_;
  std::unique_ptr<EtcdClient> client_;
  std::unique_ptr<StoreEncryption> encryption_;
  std::pair<std::string, std::string> key_files_[kReplicas] = {
      {"store.key", ""}, {"store.key", ""}, {"store.key", ""}};
};

// A history of one version: `leaf`, read from source revision `source_revision`.
CertificateState FirstVersion(const Leaf& leaf, const std::string& source_revision) {
  CertificateState state;
  state.last_version = 1;
  StoredVersion version;
  version.version = 1;
  version.material = leaf.material;
  version.published_at = absl::Now();
  version.source.revision = source_revision;
  state.versions.push_back(version);
  return state;
}

class ReplicaScenarioTest : public ::testing::TestWithParam<std::string> {
 protected:
  // The store under test: the parameter, or a subclass's fixed choice.
  virtual std::string Kind() { return GetParam(); }

  void SetUp() override {
    scenario::RaiseFileLimit();
    if (Kind() == "etcd") {
      if (!scenario::EtcdProcess::Installed()) {
        if (std::getenv("CI") != nullptr) FAIL() << "etcd is not installed";
        GTEST_SKIP() << "etcd is not installed (scripts/install-deps.sh)";
      }
      auto etcd = std::make_unique<EtcdStore>(tmp_);
      etcd_ = etcd.get();
      store_ = std::move(etcd);
    } else {
      auto kube = std::make_unique<KubeStore>(tmp_);
      kube_ = kube.get();
      store_ = std::move(kube);
    }
    ca_ = fixtures::MakeRootCa("replicas root");
    replicas_.resize(kReplicas);
  }

  void TearDown() override {
    replicas_.clear();  // the replicas go before the store they write to
  }

  Leaf MakeLeaf(int minutes) {
    fixtures::CertOptions options;
    options.dns_names = {"*.example.test"};
    options.not_before = base_ + absl::Minutes(minutes);
    fixtures::Issued issued = fixtures::MakeCert(ca_, options);
    Leaf leaf;
    leaf.material.chain_pem = issued.cert_pem;
    leaf.material.key_pem = SecretBytes(issued.key_pem);
    leaf.material.ca_pem = ca_.cert_pem;
    leaf.fingerprint = issued.fingerprint;
    return leaf;
  }

  std::string SourceDir(int i) { return tmp_.Join(absl::StrCat("source", i)); }
  void SetSource(int i, const Leaf& leaf) {
    fixtures::WriteKubeletDir(SourceDir(i), leaf.material);
  }

  struct Replica {
    std::unique_ptr<ChildProcess> process;
    int port = 0;
    int health_port = 0;
    int metrics_port = 0;
    std::string identity;
    std::unique_ptr<v1::Inspection::Stub> inspection;
  };

  // `source`: empty for the replica's own directory; `election`: the three election flags' values.
  // `store_flags`: instead of the store's own flags for replica `i`.
  void StartReplica(int i, const std::string& source = "",
                    std::vector<std::string> election = {kLeaseDuration, kRenewDeadline,
                                                         kRetryPeriod},
                    std::optional<std::vector<std::string>> store_flags = std::nullopt) {
    Replica& replica = replicas_[i];
    replica = Replica();
    replica.health_port = scenario::PickFreePort();
    std::vector<std::string> args = {
        "--listen=127.0.0.1:0",
        "--insecure",
        "--certificate=wildcard=" + (source.empty() ? SourceDir(i) : source),
        absl::StrCat("--leader-lease-duration=", election[0]),
        absl::StrCat("--leader-renew-deadline=", election[1]),
        absl::StrCat("--leader-retry-period=", election[2]),
        absl::StrCat("--health-listen=127.0.0.1:", replica.health_port),
        "--metrics-listen=127.0.0.1:0",
        "--quiet-period=20ms",
        "--confirm-delay=300ms",
        "--heartbeat-interval=1s",
        "--shutdown-grace=1s",
        "--fleet-sync-interval=200ms",
        "--log-format=json"};
    for (std::string& flag : store_flags.has_value() ? *store_flags : store_->ReplicaFlags(i)) {
      args.push_back(std::move(flag));
    }
    args.insert(args.end(), extra_args_.begin(), extra_args_.end());
    replica.process = std::make_unique<ChildProcess>(
        CERTCAST_SERVER_BINARY, args,
        tmp_.Join(absl::StrCat("replica", i, "-", ++starts_, ".log")));
    replica.port = replica.process->WaitForPort();
    ASSERT_NE(replica.port, 0) << replica.process->log();
    replica.identity = replica.process->WaitForLog("\"identity\":\"([^\"]+)\"");
    ASSERT_FALSE(replica.identity.empty()) << replica.process->log();
    const std::string metrics = replica.process->WaitForLog("metrics on port ([0-9]+)");
    ASSERT_FALSE(metrics.empty()) << replica.process->log();
    replica.metrics_port = std::stoi(metrics);
    replica.inspection = v1::Inspection::NewStub(scenario::InsecureChannel(replica.port));
  }

  void StartAll(const Leaf& leaf) {
    for (int i = 0; i < kReplicas; ++i) SetSource(i, leaf);
    for (int i = 0; i < kReplicas; ++i) StartReplica(i);
    ASSERT_TRUE(WaitFor([&] { return AllServe(1, leaf.fingerprint); })) << Logs();
  }

  void Kill(int i) {
    replicas_[i].process->Signal(SIGKILL);
    replicas_[i].process->Wait(absl::Seconds(10));
    replicas_[i].process.reset();
  }

  v1::Certificate GetCertificate(int i) {
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::GetCertificateRequest request;
    request.set_name("wildcard");
    v1::Certificate certificate;
    replicas_[i].inspection->GetCertificate(&context, request, &certificate);
    return certificate;
  }

  bool Serves(int i, uint64_t version, const std::string& fingerprint) {
    v1::Certificate certificate = GetCertificate(i);
    return certificate.current().version() == version &&
           certificate.current().fingerprint() == fingerprint;
  }

  bool AllServe(uint64_t version, const std::string& fingerprint) {
    for (int i = 0; i < kReplicas; ++i) {
      if (replicas_[i].process != nullptr && !Serves(i, version, fingerprint)) return false;
    }
    return true;
  }

  bool AllReady(int status) {
    for (int i = 0; i < kReplicas; ++i) {
      if (replicas_[i].process != nullptr &&
          scenario::HttpGet(replicas_[i].health_port, "/readyz") != status) {
        return false;
      }
    }
    return true;
  }

  // Index of the replica holding the leadership, or -1.
  int Leader() {
    const std::string holder = store_->LeaderIdentity();
    for (int i = 0; i < kReplicas; ++i) {
      if (replicas_[i].process != nullptr && replicas_[i].identity == holder) return i;
    }
    return -1;
  }

  // The stored history: last_version and version -> fingerprint of the material.
  struct Stored {
    uint64_t last_version = 0;
    std::map<uint64_t, std::string> fingerprints;
    std::string revision;
  };
  Stored StoredState() {
    Stored stored;
    absl::StatusOr<std::optional<CertificateState>> loaded = store_->LoadState();
    if (!loaded.ok() || !loaded->has_value()) return stored;
    stored.last_version = (*loaded)->last_version;
    stored.revision = (*loaded)->store_revision;
    for (const StoredVersion& version : (*loaded)->versions) {
      ValidationOptions options;
      options.now = version.published_at;
      absl::StatusOr<CertificateInfo> info =
          ValidateMaterial("wildcard", version.material, options);
      stored.fingerprints[version.version] = info.ok() ? info->fingerprint : "invalid";
    }
    return stored;
  }

  // version -> fingerprint as GetCertificate's history shows it on replica `i`.
  std::map<uint64_t, std::string> History(int i) {
    std::map<uint64_t, std::string> history;
    const v1::Certificate certificate = GetCertificate(i);
    for (const auto& version : certificate.history()) {
      history[version.version()] = version.fingerprint();
    }
    return history;
  }

  std::string Logs() {
    std::string logs;
    for (int i = 0; i < kReplicas; ++i) {
      if (replicas_[i].process != nullptr) {
        std::string log = replicas_[i].process->log();
        if (log.size() > 6000) log = "..." + log.substr(log.size() - 6000);
        absl::StrAppend(&logs, "--- replica ", i, ":\n", log);
      }
    }
    return logs;
  }

  TempDir tmp_;
  fixtures::Issued ca_;
  absl::Time base_ = absl::Now() - absl::Hours(2);
  int starts_ = 0;
  std::unique_ptr<StoreUnderTest> store_;
  KubeStore* kube_ = nullptr;  // one of these is store_
  EtcdStore* etcd_ = nullptr;
  std::vector<Replica> replicas_;
  std::vector<std::string> extra_args_;  // for every replica started
};

// Scenarios that only one store has.
class KubeReplicaScenarioTest : public ReplicaScenarioTest {
 protected:
  std::string Kind() override { return "kubernetes"; }
};
class EtcdReplicaScenarioTest : public ReplicaScenarioTest {
 protected:
  std::string Kind() override { return "etcd"; }
};

// Three replicas, one history: a rotation every replica's source sees becomes ONE new version,
// pushed to the clients of every replica; versions and material are identical everywhere; a
// client that reconnects to another replica resumes without a payload.
TEST_P(ReplicaScenarioTest, RotationReachesClientsOfEveryReplicaWithOneHistory) {
  const Leaf first = MakeLeaf(1);
  StartAll(first);
  ASSERT_TRUE(WaitFor([&] { return Leader() >= 0; })) << Logs();
  std::vector<std::unique_ptr<TestSubscriber>> subscribers;
  for (int i = 0; i < kReplicas; ++i) {
    subscribers.push_back(
        std::make_unique<TestSubscriber>(scenario::InsecureChannel(replicas_[i].port)));
    ASSERT_TRUE(Hello(*subscribers[i], absl::StrCat("client-", i)));
    std::optional<v1::SubscribeResponse> update = subscribers[i]->NextNonHeartbeat();
    ASSERT_TRUE(update.has_value() && update->has_update()) << i;
    EXPECT_EQ(update->update().version(), 1u);
    ASSERT_TRUE(subscribers[i]->SendAck(update->update()));
  }

  const Leaf second = MakeLeaf(2);
  for (int i = 0; i < kReplicas; ++i) SetSource(i, second);
  ASSERT_TRUE(WaitFor([&] { return AllServe(2, second.fingerprint); })) << Logs();
  for (int i = 0; i < kReplicas; ++i) {
    std::optional<v1::SubscribeResponse> update = subscribers[i]->NextNonHeartbeat();
    ASSERT_TRUE(update.has_value() && update->has_update()) << i;
    EXPECT_EQ(update->update().version(), 2u) << i;
    EXPECT_EQ(update->update().fingerprint(), second.fingerprint) << i;
  }
  const Stored stored = StoredState();
  EXPECT_EQ(stored.last_version, 2u) << "three sources changing are one new version";
  const std::map<uint64_t, std::string> expected = {{1, first.fingerprint},
                                                    {2, second.fingerprint}};
  EXPECT_EQ(stored.fingerprints, expected);
  for (int i = 0; i < kReplicas; ++i) EXPECT_EQ(History(i), expected) << "replica " << i;

  // A client of replica 0 reconnects to replica 2 holding version 2: in sync, no payload.
  TestSubscriber moved(scenario::InsecureChannel(replicas_[2].port));
  ASSERT_TRUE(Hello(moved, "client-0", 2, second.fingerprint));
  std::optional<v1::SubscribeResponse> answer = moved.NextNonHeartbeat();
  ASSERT_TRUE(answer.has_value());
  EXPECT_TRUE(answer->has_in_sync()) << "a client in sync gets no payload from another replica";

  if (etcd_ != nullptr) {
    // Every value under the prefix, read with the test's own etcd client: the state is sealed,
    // no value holds a PEM private key (nor the key's base64 body).
    const std::map<std::string, std::string> values = etcd_->ReadAll();
    ASSERT_EQ(values.count("/certcast/state/wildcard"), 1u);
    EXPECT_TRUE(IsSealedEnvelope(values.at("/certcast/state/wildcard")));
    for (const auto& [key, value] : values) {
      EXPECT_EQ(value.find("PRIVATE KEY"), std::string::npos) << key;
      EXPECT_EQ(value.find(std::string(second.material.key_pem.reveal().substr(40, 32))),
                std::string::npos)
          << key;
    }
  }
}

// Any replica lists every replica's clients: each replica's summary travels through the store
// (the ConfigMap certcast-fleet, or the etcd keys PREFIX/fleet/REPLICA), marked with the replica
// that holds the stream. The clients of a replica that died disappear once its summary stopped
// changing (15 x --fleet-sync-interval).
TEST_P(ReplicaScenarioTest, AnyReplicaListsTheWholeFleet) {
  StartAll(MakeLeaf(1));
  std::vector<std::unique_ptr<TestSubscriber>> subscribers;
  for (int i = 0; i < kReplicas; ++i) {
    subscribers.push_back(
        std::make_unique<TestSubscriber>(scenario::InsecureChannel(replicas_[i].port)));
    ASSERT_TRUE(Hello(*subscribers[i], absl::StrCat("client-", i)));
    std::optional<v1::SubscribeResponse> update = subscribers[i]->NextNonHeartbeat();
    ASSERT_TRUE(update.has_value() && update->has_update()) << i;
    ASSERT_TRUE(subscribers[i]->SendAck(update->update()));
  }
  // client id -> the replica listed for it, as replica `i` answers ListClients.
  auto listed = [&](int i) {
    std::map<std::string, std::string> clients;
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
    v1::ListClientsRequest request;
    v1::ListClientsResponse response;
    if (!replicas_[i].inspection->ListClients(&context, request, &response).ok()) return clients;
    for (const v1::ClientInfo& client : response.clients()) {
      if (client.connected() && client.certificates_size() == 1 &&
          client.certificates(0).acknowledged_version() == 1) {
        clients[client.client_id()] = client.replica();
      }
    }
    return clients;
  };
  auto whole_fleet_from = [&](int i) {
    std::map<std::string, std::string> expected;
    for (int j = 0; j < kReplicas; ++j) {
      if (replicas_[j].process == nullptr) continue;
      expected[absl::StrCat("client-", j)] = j == i ? "" : replicas_[j].identity;
    }
    return listed(i) == expected;
  };
  for (int i = 0; i < kReplicas; ++i) {
    ASSERT_TRUE(WaitFor([&] { return whole_fleet_from(i); })) << i << "\n" << Logs();
  }
  {
    grpc::ClientContext context;
    v1::ListCertificatesResponse certificates;
    ASSERT_TRUE(
        replicas_[1]
            .inspection->ListCertificates(&context, v1::ListCertificatesRequest(), &certificates)
            .ok());
    ASSERT_EQ(certificates.certificates_size(), 1);
    EXPECT_EQ(certificates.certificates(0).clients(), 3u) << "counts every replica's clients";
    EXPECT_EQ(certificates.certificates(0).clients_acknowledged(), 3u);
  }

  Kill(2);
  for (int i = 0; i < 2; ++i) {
    ASSERT_TRUE(WaitFor([&] { return whole_fleet_from(i); })) << i << "\n" << Logs();
  }
}

// A staged rollout across replicas (--insecure with a policy gives rollouts without identities).
// The canary's client is connected to a follower: the leader counts it through the fleet
// summaries and waits for its ACK, while tenant-b's client, on the other follower, keeps version
// 1 (that follower gates by the leader's stored progress). After the ACK, tenant-b gets version
// 2. Then kill -9 of the leader in the middle of the next rollout: the new leader continues that
// same rollout (same start, same wave) instead of starting over or sending it to everyone.
TEST_P(ReplicaScenarioTest, RolloutCountsEveryReplicasClientsAndSurvivesFailover) {
  WriteText(tmp_.Join("policy.yaml"),
            "certificates:\n  wildcard:\n    namespaces: [\"*\"]\n    rollout:\n"
            "      waves:\n        - {name: canary, namespaces: [canary]}\n");
  extra_args_ = {"--policy=" + tmp_.Join("policy.yaml")};
  StartAll(MakeLeaf(1));
  ASSERT_TRUE(WaitFor([&] { return Leader() >= 0; })) << Logs();
  const int leader = Leader();
  const int canary_replica = (leader + 1) % kReplicas, tenant_replica = (leader + 2) % kReplicas;
  TestSubscriber canary(scenario::InsecureChannel(replicas_[canary_replica].port));
  TestSubscriber tenant(scenario::InsecureChannel(replicas_[tenant_replica].port));
  ASSERT_TRUE(Hello(canary, "canary-pod", 0, "", "canary"));
  ASSERT_TRUE(Hello(tenant, "tenant-pod", 0, "", "tenant-b"));
  for (TestSubscriber* subscriber : {&canary, &tenant}) {
    std::optional<v1::SubscribeResponse> first = subscriber->NextNonHeartbeat();
    ASSERT_TRUE(first.has_value() && first->has_update()) << Logs();
    ASSERT_TRUE(subscriber->SendAck(first->update()));
  }
  // What replica `i` says of tenant-b's client: "sent/waiting_for_wave".
  auto tenant_state = [&](int i) -> std::string {
    grpc::ClientContext context;
    v1::ListClientsRequest request;
    request.set_namespace_("tenant-b");
    v1::ListClientsResponse response;
    if (!replicas_[i].inspection->ListClients(&context, request, &response).ok() ||
        response.clients_size() != 1 || response.clients(0).certificates_size() != 1) {
      return "?";
    }
    const v1::ClientCertificate& held = response.clients(0).certificates(0);
    return absl::StrCat(held.sent_version(), "/", held.waiting_for_wave());
  };
  // The leader's view of the rollout: "version wave state clients-of-wave-1".
  auto rollout_on = [&](int i) -> std::string {
    const v1::Rollout rollout = GetCertificate(i).rollout();
    return absl::StrCat(rollout.version(), " ", rollout.wave(), " ", rollout.state(), " ",
                        rollout.waves_size() > 0 ? rollout.waves(0).clients() : 0);
  };

  auto rotate_and_hold = [&](int minutes, uint64_t version, int at) {
    const Leaf next = MakeLeaf(minutes);
    for (int i = 0; i < kReplicas; ++i) {
      if (replicas_[i].process != nullptr) SetSource(i, next);
    }
    std::optional<v1::SubscribeResponse> update = canary.NextNonHeartbeat();
    ASSERT_TRUE(update.has_value() && update->has_update()) << Logs();
    ASSERT_EQ(update->update().version(), version);
    // The leader counts the follower's canary client, and holds tenant-b back meanwhile.
    ASSERT_TRUE(WaitFor([&] { return rollout_on(at) == absl::StrCat(version, " 1 rolling 1"); }))
        << rollout_on(at) << "\n"
        << Logs();
    ASSERT_TRUE(WaitFor([&] {
      return tenant_state(tenant_replica) == absl::StrCat(version - 1, "/2");
    })) << tenant_state(tenant_replica);
    EXPECT_TRUE(WaitFor([&] { return tenant_state(at) == absl::StrCat(version - 1, "/2"); }))
        << "seen from the leader: " << tenant_state(at);
    ASSERT_TRUE(canary.SendAck(update->update()));
    update = tenant.NextNonHeartbeat();
    ASSERT_TRUE(update.has_value() && update->has_update()) << Logs();
    EXPECT_EQ(update->update().version(), version);
    ASSERT_TRUE(tenant.SendAck(update->update()));
  };
  rotate_and_hold(2, 2, leader);
  ASSERT_TRUE(WaitFor([&] { return GetCertificate(leader).rollout().state() == "complete"; }))
      << rollout_on(leader);

  // The next rollout, interrupted by kill -9 of the leader once it started.
  const Leaf third = MakeLeaf(3);
  for (int i = 0; i < kReplicas; ++i) SetSource(i, third);
  std::optional<v1::SubscribeResponse> update = canary.NextNonHeartbeat();
  ASSERT_TRUE(update.has_value() && update->has_update()) << Logs();
  ASSERT_EQ(update->update().version(), 3u);
  ASSERT_TRUE(WaitFor([&] { return rollout_on(leader) == "3 1 rolling 1"; })) << Logs();
  const auto started_at = GetCertificate(leader).rollout().started_at();
  Kill(leader);
  ASSERT_TRUE(WaitFor([&] { return Leader() >= 0; })) << Logs();
  const int next = Leader();
  ASSERT_TRUE(WaitFor([&] { return rollout_on(next) == "3 1 rolling 1"; }))
      << rollout_on(next) << "\n"
      << Logs();
  // To the nanosecond: a replica that starts the rollout over on its own clock, even within the
  // same second, is caught.
  const auto next_started_at = GetCertificate(next).rollout().started_at();
  EXPECT_EQ(absl::StrCat(next_started_at.seconds(), ".", next_started_at.nanos()),
            absl::StrCat(started_at.seconds(), ".", started_at.nanos()))
      << "the new leader started the rollout over";
  EXPECT_EQ(tenant_state(tenant_replica), "2/2") << "tenant-b got version 3 early";
  ASSERT_TRUE(canary.SendAck(update->update()));
  update = tenant.NextNonHeartbeat();
  ASSERT_TRUE(update.has_value() && update->has_update()) << Logs();
  EXPECT_EQ(update->update().version(), 3u);
}

// kill -9 of the leader: another replica takes the Lease within about the lease duration, and
// the next rotation gets the next version number, identical on the survivors.
TEST_P(ReplicaScenarioTest, LeaderKilledAnotherLeadsAndVersionsContinue) {
  const Leaf first = MakeLeaf(1);
  StartAll(first);
  ASSERT_TRUE(WaitFor([&] { return Leader() >= 0; })) << Logs();
  const int leader = Leader();
  const absl::Time killed = absl::Now();
  Kill(leader);
  ASSERT_TRUE(WaitFor([&] { return Leader() >= 0; })) << Logs();
  const absl::Duration failover = absl::Now() - killed;
  std::cout << "failover after kill -9 of the leader: " << failover << " (lease duration "
            << kLeaseDuration << ", retry period " << kRetryPeriod << ")\n";
  const int next = Leader();
  EXPECT_NE(next, leader);

  const Leaf second = MakeLeaf(2);
  for (int i = 0; i < kReplicas; ++i) {
    if (i != leader) SetSource(i, second);
  }
  ASSERT_TRUE(WaitFor([&] { return AllServe(2, second.fingerprint); })) << Logs();
  EXPECT_EQ(StoredState().last_version, 2u);
  // The killed replica comes back and follows the history.
  SetSource(leader, second);
  StartReplica(leader);
  ASSERT_TRUE(WaitFor([&] { return Serves(leader, 2, second.fingerprint); })) << Logs();
  EXPECT_EQ(StoredState().last_version, 2u);
}

// A replica cut off from the API (the leader, here) stops publishing, keeps serving what it
// has, says so on /readyz, gRPC health and /metrics; another replica takes over; once the API
// answers again it follows the history by itself.
TEST_P(ReplicaScenarioTest, ReplicaCutOffFromTheStoreNeverPublishes) {
  const Leaf first = MakeLeaf(1);
  StartAll(first);
  ASSERT_TRUE(WaitFor([&] { return Leader() >= 0; })) << Logs();
  const int cut = Leader();
  store_->CutOff(cut);
  const Leaf second = MakeLeaf(2);
  SetSource(cut, second);  // only the cut-off replica's source changes
  ASSERT_TRUE(WaitFor([&] { return Leader() >= 0 && Leader() != cut; })) << Logs();
  std::string body;
  ASSERT_TRUE(WaitFor([&] {
    return scenario::HttpGet(replicas_[cut].health_port, "/readyz", &body) == 503;
  })) << body;
  EXPECT_THAT(body, HasSubstr("version store unreachable"));
  std::string metrics;
  scenario::HttpGet(replicas_[cut].metrics_port, "/metrics", &metrics);
  EXPECT_THAT(metrics, HasSubstr("certcast_version_store_up 0"));
  EXPECT_THAT(metrics, HasSubstr("certcast_replica_leader 0"));
  EXPECT_TRUE(Serves(cut, 1, first.fingerprint)) << "it keeps serving what it has";
  EXPECT_EQ(StoredState().last_version, 1u) << "the cut-off replica published";
  // Its clients are still served.
  TestSubscriber client(scenario::InsecureChannel(replicas_[cut].port));
  ASSERT_TRUE(Hello(client, "client-cut"));
  std::optional<v1::SubscribeResponse> update = client.NextNonHeartbeat();
  ASSERT_TRUE(update.has_value() && update->has_update());
  EXPECT_EQ(update->update().version(), 1u);

  // The others publish the rotation when their sources have it.
  const Leaf third = MakeLeaf(3);
  for (int i = 0; i < kReplicas; ++i) {
    if (i != cut) SetSource(i, third);
  }
  ASSERT_TRUE(WaitFor([&] {
    for (int i = 0; i < kReplicas; ++i) {
      if (i != cut && !Serves(i, 2, third.fingerprint)) return false;
    }
    return true;
  })) << Logs();
  EXPECT_TRUE(Serves(cut, 1, first.fingerprint));

  store_->Reconnect();
  ASSERT_TRUE(WaitFor([&] { return Serves(cut, 2, third.fingerprint); })) << Logs();
  EXPECT_TRUE(
      WaitFor([&] { return scenario::HttpGet(replicas_[cut].health_port, "/readyz") == 200; }));
  update = client.NextNonHeartbeat();
  ASSERT_TRUE(update.has_value() && update->has_update());
  EXPECT_EQ(update->update().version(), 2u);
  EXPECT_EQ(StoredState().last_version, 2u);
  EXPECT_EQ(StoredState().fingerprints.at(2), third.fingerprint);
}

// A replica whose source lags (still the previous leaf) becomes the only one left: it leads,
// but never publishes the older material; it keeps serving the newer version it followed, and
// publishes the next version once its source catches up with something newer.
TEST_P(ReplicaScenarioTest, ReplicaWhoseSourceLagsNeverPublishesOlderMaterial) {
  const Leaf first = MakeLeaf(1);
  StartAll(first);
  const int lagging = 2;
  const Leaf second = MakeLeaf(2);
  SetSource(0, second);
  SetSource(1, second);
  ASSERT_TRUE(WaitFor([&] { return AllServe(2, second.fingerprint); })) << Logs();
  Kill(0);
  Kill(1);
  ASSERT_TRUE(WaitFor([&] { return Leader() == lagging; })) << Logs();
  // It has evaluated its source as the leader: the stale content was seen and refused.
  const std::string refused = replicas_[lagging].process->WaitForLog(
      "source holds older material than the current version");
  EXPECT_FALSE(refused.empty()) << Logs();
  EXPECT_TRUE(Serves(lagging, 2, second.fingerprint));
  EXPECT_EQ(StoredState().last_version, 2u);

  const Leaf third = MakeLeaf(3);
  SetSource(lagging, third);
  ASSERT_TRUE(WaitFor([&] { return Serves(lagging, 3, third.fingerprint); })) << Logs();
  const std::map<uint64_t, std::string> expected = {
      {1, first.fingerprint}, {2, second.fingerprint}, {3, third.fingerprint}};
  EXPECT_EQ(StoredState().fingerprints, expected);
}

// A replica that starts while the API does not answer it is not ready and publishes nothing;
// once the API answers, it follows the stored history by itself.
TEST_P(ReplicaScenarioTest, ReplicaStartedWithoutTheStoreFollowsItOnceItAnswers) {
  const Leaf first = MakeLeaf(1);
  StartAll(first);
  Kill(2);
  const Leaf second = MakeLeaf(2);
  SetSource(0, second);
  SetSource(1, second);
  ASSERT_TRUE(WaitFor([&] { return AllServe(2, second.fingerprint); })) << Logs();
  store_->CutOff(2);
  const Leaf third = MakeLeaf(3);
  SetSource(2, third);  // newer than anything stored, but it cannot know what is stored
  StartReplica(2);
  std::string body;
  ASSERT_TRUE(WaitFor([&] {
    return scenario::HttpGet(replicas_[2].health_port, "/readyz", &body) == 503 &&
           body.find("version store unreachable") != std::string::npos;
  })) << body
      << Logs();
  EXPECT_EQ(GetCertificate(2).current().version(), 0u);
  EXPECT_EQ(StoredState().last_version, 2u);
  store_->Reconnect();
  // It follows version 2, then (its source being newer) may lead and publish version 3 — never a
  // second version 2 or a version 1 of other material.
  ASSERT_TRUE(WaitFor([&] {
    return scenario::HttpGet(replicas_[2].health_port, "/readyz") == 200 &&
           GetCertificate(2).current().version() >= 2;
  })) << Logs();
  const Stored stored = StoredState();
  EXPECT_EQ(stored.fingerprints.at(2), second.fingerprint);
  if (stored.last_version == 3) {
    EXPECT_EQ(stored.fingerprints.at(3), third.fingerprint);
  }
  EXPECT_EQ(History(2).at(2), second.fingerprint);
}

// The API server restarts (kill -9, then the same port and data): replicas say the store is
// unreachable meanwhile, then recover by themselves; versions continue.
TEST_P(ReplicaScenarioTest, RestartedStoreIsRecoveredFrom) {
  const Leaf first = MakeLeaf(1);
  StartAll(first);
  ASSERT_TRUE(WaitFor([&] { return Leader() >= 0; })) << Logs();
  store_->Crash();
  ASSERT_TRUE(WaitFor([&] { return AllReady(503); })) << Logs();
  store_->Restart();
  ASSERT_TRUE(WaitFor([&] { return AllReady(200) && Leader() >= 0; })) << Logs();
  const Leaf second = MakeLeaf(2);
  for (int i = 0; i < kReplicas; ++i) SetSource(i, second);
  ASSERT_TRUE(WaitFor([&] { return AllServe(2, second.fingerprint); })) << Logs();
  EXPECT_EQ(StoredState().last_version, 2u);
}

// A rollback's pin is in the stored history: it survives the leader's death, and ends only when
// a source holds something newer than what was current when it was pinned.
TEST_P(ReplicaScenarioTest, RollbackPinSurvivesFailover) {
  const Leaf first = MakeLeaf(1);
  StartAll(first);
  const Leaf second = MakeLeaf(2);
  for (int i = 0; i < kReplicas; ++i) SetSource(i, second);
  ASSERT_TRUE(WaitFor([&] { return AllServe(2, second.fingerprint); })) << Logs();
  // Rollback is the leader's: call whichever replica holds the Lease (retried, in case the
  // Lease moved between reading it and the call).
  int leader = -1;
  grpc::Status status;
  ASSERT_TRUE(WaitFor([&] {
    leader = Leader();
    if (leader < 0) return false;
    auto admin = v1::Admin::NewStub(scenario::InsecureChannel(replicas_[leader].port));
    grpc::ClientContext context;
    v1::RollbackRequest request;
    request.set_name("wildcard");
    request.set_version(1);
    v1::RollbackResponse response;
    status = admin->Rollback(&context, request, &response);
    return status.ok();
  })) << status.error_message();
  ASSERT_TRUE(WaitFor([&] { return AllServe(3, first.fingerprint); })) << Logs();
  Kill(leader);
  ASSERT_TRUE(WaitFor([&] { return Leader() >= 0; })) << Logs();
  const int next = Leader();
  // The new leader has evaluated its source (which still holds version 2's leaf): still pinned.
  ASSERT_FALSE(replicas_[next].process->WaitForLog("now the leader").empty());
  ASSERT_TRUE(WaitFor([&] { return GetCertificate(next).pin().version() == 3; })) << Logs();
  EXPECT_TRUE(Serves(next, 3, first.fingerprint));
  EXPECT_EQ(StoredState().last_version, 3u);
  const Leaf third = MakeLeaf(3);
  for (int i = 0; i < kReplicas; ++i) {
    if (i != leader) SetSource(i, third);
  }
  ASSERT_TRUE(WaitFor([&] { return AllServe(4, third.fingerprint); })) << Logs();
  EXPECT_EQ(GetCertificate(next).pin().version(), 0u);
}

// Many clients spread over the replicas (each client's target lists every replica, its own
// first, as a Service would spread them): the leader dies, its clients reconnect to the others,
// and after the next rotation every client holds it; no version number ever carried two
// different certificates, no pushed pair was torn.
TEST_P(ReplicaScenarioTest, ClientsConvergeAfterAReplicaDies) {
  const int per_replica = std::getenv("CERTCAST_LONG") != nullptr ? 334 : 100;
  const Leaf first = MakeLeaf(1);
  StartAll(first);
  ASSERT_TRUE(WaitFor([&] { return Leader() >= 0; })) << Logs();
  std::vector<std::unique_ptr<scenario::SubscriberFleet>> fleets;
  for (int i = 0; i < kReplicas; ++i) {
    scenario::FleetOptions options;
    options.target = "ipv4:";
    for (int k = 0; k < kReplicas; ++k) {
      absl::StrAppend(&options.target, k == 0 ? "" : ",",
                      "127.0.0.1:", replicas_[(i + k) % kReplicas].port);
    }
    options.client_id_prefix = absl::StrCat("fleet", i);
    fleets.push_back(std::make_unique<scenario::SubscriberFleet>(options, per_replica));
    fleets.back()->Start();
  }
  auto all_hold = [&](uint64_t version, const std::string& fingerprint) {
    for (auto& fleet : fleets) {
      if (fleet->CountHolding(version, fingerprint) != fleet->size()) return false;
    }
    return true;
  };
  ASSERT_TRUE(WaitFor([&] { return all_hold(1, first.fingerprint); }, absl::Seconds(60)));
  const int leader = Leader();
  Kill(leader);
  const Leaf second = MakeLeaf(2);
  for (int i = 0; i < kReplicas; ++i) {
    if (i != leader) SetSource(i, second);
  }
  const absl::Time rotated = absl::Now();
  ASSERT_TRUE(WaitFor([&] { return all_hold(2, second.fingerprint); }, absl::Seconds(120)))
      << Logs();
  std::cout << fleets.size() * per_replica << " clients hold the rotation " << absl::Now() - rotated
            << " after it was written (leader killed just before)\n";
  for (auto& fleet : fleets) {
    const scenario::FleetStats stats = fleet->stats();
    EXPECT_EQ(stats.version_conflicts, 0);
    EXPECT_EQ(stats.torn_pairs, 0);
    for (const auto& [version, fingerprints] : fleet->Seen()) {
      EXPECT_EQ(fingerprints.size(), 1u) << "version " << version;
    }
    EXPECT_TRUE(fleet->Stop());
  }
}

// The in-cluster shape: every replica reads the cert-manager Secret through the API. A renewal is
// one new version (whichever replica leads), recorded with the source Secret's resourceVersion.
TEST_F(KubeReplicaScenarioTest, SecretSourceRenewalIsOneVersionOnEveryReplica) {
  const Leaf first = MakeLeaf(1);
  auto put_source = [&](const Leaf& leaf) {
    Json secret = Json::object();
    kube::SetTlsSecret(&secret, kNamespace, "wildcard-tls", "wildcard", 0, leaf.fingerprint,
                       leaf.material);
    secret["metadata"].erase("labels");
    secret["metadata"].erase("annotations");
    absl::StatusOr<Json> existing =
        kube_->admin()->Request("GET", kube::SecretPath(kNamespace, "wildcard-tls"));
    absl::StatusOr<Json> written =
        existing.ok()
            ? kube_->admin()->Request("PUT", kube::SecretPath(kNamespace, "wildcard-tls"), &secret)
            : kube_->admin()->Request("POST", kube::SecretsPath(kNamespace), &secret);
    EXPECT_TRUE(written.ok()) << written.status();
    return written.ok() ? kube::ResourceVersion(*written) : std::string();
  };
  put_source(first);
  for (int i = 0; i < kReplicas; ++i) StartReplica(i, "secret:certcast-system/wildcard-tls");
  ASSERT_TRUE(WaitFor([&] { return AllServe(1, first.fingerprint); })) << Logs();
  const Leaf second = MakeLeaf(2);
  const std::string revision = put_source(second);
  ASSERT_TRUE(WaitFor([&] { return AllServe(2, second.fingerprint); })) << Logs();
  PosixFilesystem fs;
  kube::CurlKubeApi api(
      kube::KubeConfig{kube_->ApiUrl(), tmp_.Join("admin.token"), tmp_.Join("api-ca.crt")}, &fs);
  KubernetesVersionStore store(&api, {kNamespace, "certcast"}, "test");
  absl::StatusOr<std::optional<CertificateState>> loaded = store.Load("wildcard");
  ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
  EXPECT_EQ((*loaded)->last_version, 2u);
  EXPECT_EQ((*loaded)->versions.back().source.revision, revision);
}

// SIGTERM of the leader gives the Lease up: another replica leads long before the (here 30 s)
// lease would have expired.
TEST_P(ReplicaScenarioTest, StoppedLeaderGivesTheLeaseUp) {
  const Leaf first = MakeLeaf(1);
  for (int i = 0; i < 2; ++i) SetSource(i, first);
  for (int i = 0; i < 2; ++i) StartReplica(i, "", {"30s", "20s", "200ms"});
  ASSERT_TRUE(WaitFor([&] { return Leader() >= 0 && Serves(1 - Leader(), 1, first.fingerprint); }))
      << Logs();
  const int leader = Leader();
  replicas_[leader].process->Signal(SIGTERM);
  EXPECT_EQ(replicas_[leader].process->Wait(absl::Seconds(20)), 0);
  replicas_[leader].process.reset();
  ASSERT_TRUE(WaitFor([&] { return Leader() == 1 - leader; }, absl::Seconds(15)))
      << "the leadership was not given up: " << store_->LeaderIdentity() << "\n"
      << Logs();
  const Leaf second = MakeLeaf(2);
  SetSource(1 - leader, second);
  ASSERT_TRUE(WaitFor([&] { return Serves(1 - leader, 2, second.fingerprint); })) << Logs();
}

// The Kubernetes store itself: compare-and-swap on every write, Claim moves the revision, the
// Secret holds the same checksummed bytes as the state file, corruption is DataLoss.
TEST_F(KubeReplicaScenarioTest, KubernetesStoreWritesAreCompareAndSwap) {
  PosixFilesystem fs;
  kube::CurlKubeApi api(
      kube::KubeConfig{kube_->ApiUrl(), tmp_.Join("replica0.token"), tmp_.Join("api-ca.crt")}, &fs);
  KubernetesVersionStore store(&api, {kNamespace, "certcast"}, "replica-0");
  absl::StatusOr<std::optional<CertificateState>> loaded = store.Load("wildcard");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->has_value());

  const Leaf leaf = MakeLeaf(1);
  const CertificateState state = FirstVersion(leaf, "42");
  absl::StatusOr<std::string> created = store.Save("wildcard", state);
  ASSERT_TRUE(created.ok()) << created.status();
  // A second create (another replica that also found nothing) loses.
  EXPECT_TRUE(absl::IsAborted(store.Save("wildcard", state).status()));
  loaded = store.Load("wildcard");
  ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
  EXPECT_EQ((*loaded)->store_revision, *created);
  EXPECT_EQ((*loaded)->versions.back().source.revision, "42");
  EXPECT_EQ((*loaded)->versions.back().material, leaf.material);

  CertificateState next = **loaded;
  next.last_version = 2;
  next.versions.back().version = 2;
  absl::StatusOr<std::string> claimed = store.Claim("wildcard", *created);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_NE(*claimed, *created);
  EXPECT_TRUE(absl::IsAborted(store.Save("wildcard", next).status()))
      << "a write based on the revision before a Claim must fail";
  next.store_revision = *claimed;
  absl::StatusOr<std::string> saved = store.Save("wildcard", next);
  ASSERT_TRUE(saved.ok()) << saved.status();

  // The Secret: labelled, the state's bytes under `state`, nothing in annotations but names.
  absl::StatusOr<Json> secret =
      kube_->admin()->Request("GET", kube::SecretPath(kNamespace, kStateSecret));
  ASSERT_TRUE(secret.ok()) << secret.status();
  EXPECT_EQ((*secret)["metadata"]["labels"][kStoreLabel], "certcast");
  EXPECT_EQ((*secret)["metadata"]["annotations"][kube::kVersionAnnotation], "2");
  EXPECT_EQ((*secret)["type"], "Opaque");
  std::string bytes;
  ASSERT_TRUE(absl::Base64Unescape((*secret)["data"]["state"].get<std::string>(), &bytes));
  EXPECT_EQ(bytes.rfind("certcast-state v1\n", 0), 0u);
  EXPECT_EQ(secret->dump().find("PRIVATE KEY"), std::string::npos)
      << "the key is inside the base64 state only";
  // Damaged bytes are DataLoss naming the Secret, never a silent reset.
  bytes[bytes.size() - 1] ^= 1;
  (*secret)["data"]["state"] = absl::Base64Escape(bytes);
  ASSERT_TRUE(
      kube_->admin()->Request("PUT", kube::SecretPath(kNamespace, kStateSecret), &*secret).ok());
  loaded = store.Load("wildcard");
  EXPECT_TRUE(absl::IsDataLoss(loaded.status())) << loaded.status();
  EXPECT_THAT(std::string(loaded.status().message()),
              HasSubstr("state Secret certcast-system/certcast-wildcard is corrupt"));
}

// The etcd store itself, with the test's own client: every write is a transaction that needs the
// state key's revision AND the leader key bound to the writer's lease, so a replica that lost
// the leader key can never write; values are sealed; a tampered value is DataLoss naming the key;
// another encryption key cannot read them.
TEST_F(EtcdReplicaScenarioTest, EtcdStoreWritesNeedTheRevisionAndTheLeaderKey) {
  EtcdClient* client = etcd_->client();
  absl::StatusOr<int64_t> lease = client->LeaseGrant(30);
  ASSERT_TRUE(lease.ok()) << lease.status();
  int64_t held = 0;  // the lease the store believes it holds
  EtcdVersionStore store(client, kEtcdPrefix, etcd_->encryption(), [&held] { return held; });
  auto put = [&](const std::string& key, const std::string& value, int64_t with_lease) {
    etcdserverpb::TxnRequest txn;
    etcdserverpb::PutRequest* request = txn.add_success()->mutable_request_put();
    request->set_key(key);
    request->set_value(value);
    request->set_lease(with_lease);
    ASSERT_TRUE(client->Txn(txn).ok());
  };
  const Leaf leaf = MakeLeaf(1);
  const CertificateState state = FirstVersion(leaf, "");
  absl::StatusOr<std::optional<CertificateState>> loaded = store.Load("wildcard");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_FALSE(loaded->has_value());
  // Not holding the leader key: no write, even a first one.
  EXPECT_TRUE(absl::IsAborted(store.Save("wildcard", state).status()));
  held = *lease;
  absl::StatusOr<std::string> refused = store.Save("wildcard", state);
  EXPECT_TRUE(absl::IsAborted(refused.status())) << "the leader key does not exist yet";
  EXPECT_THAT(std::string(refused.status().message()), HasSubstr("/certcast/leader"));
  put("/certcast/leader", "test-replica", *lease);
  absl::StatusOr<std::string> created = store.Save("wildcard", state);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(absl::IsAborted(store.Save("wildcard", state).status()))
      << "a second create (another replica that also found nothing) loses";
  loaded = store.Load("wildcard");
  ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
  EXPECT_EQ((*loaded)->store_revision, *created);
  EXPECT_EQ((*loaded)->versions.back().material, leaf.material);

  // Claim re-seals and moves the revision: a write based on the older one fails.
  CertificateState next = **loaded;
  next.last_version = 2;
  next.versions.back().version = 2;
  const std::string before = etcd_->ReadAll().at("/certcast/state/wildcard");
  absl::StatusOr<std::string> claimed = store.Claim("wildcard", *created);
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_NE(*claimed, *created);
  EXPECT_NE(etcd_->ReadAll().at("/certcast/state/wildcard"), before) << "a fresh nonce";
  EXPECT_TRUE(absl::IsAborted(store.Save("wildcard", next).status()));
  next.store_revision = *claimed;

  // The leader key now belongs to another lease (this replica was deposed while it believed
  // it led): its write fails although the state's revision is right.
  absl::StatusOr<int64_t> other = client->LeaseGrant(30);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(client->LeaseRevoke(*lease).ok());  // deletes the leader key
  put("/certcast/leader", "another-replica", *other);
  absl::StatusOr<std::string> deposed = store.Save("wildcard", next);
  EXPECT_TRUE(absl::IsAborted(deposed.status())) << deposed.status();
  EXPECT_THAT(std::string(deposed.status().message()), HasSubstr("another-replica"));
  held = *other;
  absl::StatusOr<std::string> saved = store.Save("wildcard", next);
  ASSERT_TRUE(saved.ok()) << saved.status();

  // Stored bytes: sealed, no key material; a flipped byte is DataLoss naming the key.
  std::string sealed = etcd_->ReadAll().at("/certcast/state/wildcard");
  EXPECT_TRUE(IsSealedEnvelope(sealed));
  EXPECT_EQ(sealed.find("PRIVATE KEY"), std::string::npos);
  EXPECT_EQ(sealed.find("certcast-state v1"), std::string::npos);
  absl::StatusOr<StoreEncryption> other_key =
      StoreEncryption::FromKeys(SecretBytes(std::string(32, 'x')), std::nullopt);
  EtcdVersionStore stranger(client, kEtcdPrefix, &*other_key, nullptr);
  EXPECT_TRUE(absl::IsFailedPrecondition(stranger.Load("wildcard").status()));
  sealed[sealed.size() - 1] ^= 1;
  put("/certcast/state/wildcard", sealed, 0);
  loaded = store.Load("wildcard");
  EXPECT_TRUE(absl::IsDataLoss(loaded.status())) << loaded.status();
  EXPECT_THAT(std::string(loaded.status().message()),
              HasSubstr("etcd key /certcast/state/wildcard fails authentication"));
}

// An etcd store without an encryption key, or with a bad one, does not start: the error names
// the flag and the file, never the file's content.
TEST_F(EtcdReplicaScenarioTest, StartupRefusesAMissingOrBadEncryptionKey) {
  SetSource(0, MakeLeaf(1));
  std::vector<std::string> flags = etcd_->ReplicaFlags(0);
  flags.pop_back();  // --store-encryption-key-file
  std::vector<std::string> args = {"--listen=127.0.0.1:0", "--insecure",
                                   "--certificate=wildcard=" + SourceDir(0)};
  args.insert(args.end(), flags.begin(), flags.end());
  ChildProcess missing(CERTCAST_SERVER_BINARY, args, tmp_.Join("missing.log"));
  EXPECT_NE(missing.Wait(absl::Seconds(20)), 0);
  EXPECT_THAT(missing.log(), HasSubstr("--store-encryption-key-file is required"));
  WriteText(tmp_.Join("short.key"), absl::Base64Escape("0123456789abcdef") + "\n");
  args.push_back("--store-encryption-key-file=" + tmp_.Join("short.key"));
  ChildProcess short_key(CERTCAST_SERVER_BINARY, args, tmp_.Join("short.log"));
  EXPECT_NE(short_key.Wait(absl::Seconds(20)), 0);
  EXPECT_THAT(short_key.log(), HasSubstr(tmp_.Join("short.key") + ": holds 16 bytes"));
  EXPECT_THAT(short_key.log(), ::testing::Not(HasSubstr(absl::Base64Escape("0123456789abcdef"))));
}

// The documented key rotation (docs/REPLICAS.md), as rolling restarts of three replicas: first
// every replica may read the new key, then every replica writes with it; the leader that takes
// over re-seals the stored state with the new key, nobody ever fails to read a value, and the
// old key is then not needed.
TEST_F(EtcdReplicaScenarioTest, KeyRotationReSealsTheHistoryWithoutAGap) {
  WriteText(tmp_.Join("new.key"), absl::Base64Escape(RandomKey()) + "\n");
  PosixFilesystem fs;
  absl::StatusOr<StoreEncryption> new_only =
      StoreEncryption::FromFiles(fs, tmp_.Join("new.key"), "");
  ASSERT_TRUE(new_only.ok()) << new_only.status();
  const Leaf first = MakeLeaf(1);
  StartAll(first);
  auto roll = [&](const std::string& current, const std::string& previous) {
    for (int i = 0; i < kReplicas; ++i) {
      replicas_[i].process->Signal(SIGTERM);
      ASSERT_EQ(replicas_[i].process->Wait(absl::Seconds(20)), 0);
      etcd_->SetKeyFiles(i, current, previous);
      StartReplica(i);
      ASSERT_TRUE(WaitFor([&] { return AllServe(1, first.fingerprint) && Leader() >= 0; }))
          << Logs();
    }
  };
  roll("store.key", "new.key");  // 1. the new key may be read everywhere
  roll("new.key", "store.key");  // 2. the new key writes everywhere
  auto sealed_with_new_key = [&] {
    const std::map<std::string, std::string> values = etcd_->ReadAll();
    auto state = values.find("/certcast/state/wildcard");
    return state != values.end() && new_only->SealedWithCurrentKey(state->second);
  };
  ASSERT_TRUE(WaitFor(sealed_with_new_key)) << Logs();
  const Leaf second = MakeLeaf(2);
  for (int i = 0; i < kReplicas; ++i) SetSource(i, second);
  ASSERT_TRUE(WaitFor([&] { return AllServe(2, second.fingerprint); })) << Logs();
  // 3. The old key is no longer needed: the new key alone reads the history.
  EtcdVersionStore reader(etcd_->client(), kEtcdPrefix, &*new_only, nullptr);
  absl::StatusOr<std::optional<CertificateState>> loaded = reader.Load("wildcard");
  ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
  EXPECT_EQ((*loaded)->last_version, 2u);
  for (int start = 1; start <= starts_; ++start) {
    for (int i = 0; i < kReplicas; ++i) {
      const std::string log =
          scenario::ReadFileOrEmpty(tmp_.Join(absl::StrCat("replica", i, "-", start, ".log")));
      EXPECT_EQ(log.find("which is neither --store-encryption-key-file"), std::string::npos)
          << "replica " << i << " met a value it could not read:\n"
          << log;
    }
  }
}

// A replica that cannot read the stored history (started with another encryption key) may
// lead, but never publishes over it: the stored version stays the one sealed with the right
// key; given the right key as the previous one, it follows the history and publishes the next
// version.
TEST_F(EtcdReplicaScenarioTest, ReplicaWithTheWrongKeyNeverOverwritesTheHistory) {
  WriteText(tmp_.Join("other.key"), absl::Base64Escape(RandomKey()) + "\n");
  const Leaf first = MakeLeaf(1);
  StartAll(first);
  Kill(1);
  Kill(2);
  Kill(0);
  const Leaf second = MakeLeaf(2);
  SetSource(0, second);
  etcd_->SetKeyFiles(0, "other.key", "");
  StartReplica(0);
  ASSERT_TRUE(WaitFor([&] { return Leader() == 0; })) << Logs();
  ASSERT_FALSE(
      replicas_[0].process->WaitForLog("which is neither --store-encryption-key-file").empty())
      << Logs();
  ASSERT_FALSE(replicas_[0].process->WaitForLog("not publishing until it can be loaded").empty())
      << Logs();
  EXPECT_EQ(GetCertificate(0).current().version(), 0u);
  EXPECT_EQ(StoredState().last_version, 1u) << "a replica that cannot read the history wrote it";
  EXPECT_EQ(StoredState().fingerprints.at(1), first.fingerprint);

  replicas_[0].process->Signal(SIGTERM);
  ASSERT_EQ(replicas_[0].process->Wait(absl::Seconds(20)), 0);
  etcd_->SetKeyFiles(0, "other.key", "store.key");
  StartReplica(0);
  ASSERT_TRUE(WaitFor([&] { return Serves(0, 2, second.fingerprint); })) << Logs();
  const std::map<uint64_t, std::string> expected = {{1, first.fingerprint},
                                                    {2, second.fingerprint}};
  EXPECT_EQ(History(0), expected);
  // Version 2 is sealed with the replica's current key.
  PosixFilesystem fs;
  absl::StatusOr<StoreEncryption> other =
      StoreEncryption::FromFiles(fs, tmp_.Join("other.key"), "");
  ASSERT_TRUE(other.ok());
  EtcdVersionStore reader(etcd_->client(), kEtcdPrefix, &*other, nullptr);
  absl::StatusOr<std::optional<CertificateState>> loaded = reader.Load("wildcard");
  ASSERT_TRUE(loaded.ok() && loaded->has_value()) << loaded.status();
  EXPECT_EQ((*loaded)->last_version, 2u);
}

// etcd without TLS, named by IP address, behind a first endpoint that does not answer: the
// replica moves on to the next endpoint, leads and publishes.
TEST_F(EtcdReplicaScenarioTest, PlaintextEtcdBehindADeadFirstEndpoint) {
  PosixFilesystem fs;
  ASSERT_TRUE(fs.CreateDir(tmp_.Join("plain"), 0700).ok());
  scenario::EtcdProcess plain(tmp_.Join("plain"));
  ASSERT_TRUE(plain.Start()) << plain.log();
  const Leaf first = MakeLeaf(1);
  SetSource(0, first);
  StartReplica(
      0, "", {kLeaseDuration, kRenewDeadline, kRetryPeriod},
      std::vector<std::string>{absl::StrCat("--store=etcd://127.0.0.1:", scenario::PickFreePort(),
                                            ",127.0.0.1:", plain.port(), "/plain"),
                               "--store-encryption-key-file=" + tmp_.Join("store.key")});
  ASSERT_TRUE(WaitFor([&] { return Serves(0, 1, first.fingerprint); })) << Logs();
  std::unique_ptr<EtcdClient> client =
      *EtcdClient::Create(fs, {absl::StrCat("127.0.0.1:", plain.port())}, {}, absl::Seconds(5));
  etcdserverpb::RangeRequest request;
  request.set_key("/plain/leader");
  absl::StatusOr<etcdserverpb::RangeResponse> leader = client->Range(request);
  ASSERT_TRUE(leader.ok() && leader->kvs_size() == 1) << leader.status();
  EXPECT_EQ(leader->kvs(0).value(), replicas_[0].identity);
}

INSTANTIATE_TEST_SUITE_P(Stores, ReplicaScenarioTest, ::testing::Values("kubernetes", "etcd"),
                         [](const ::testing::TestParamInfo<std::string>& param) {
                           return param.param;
                         });

}  // namespace
}  // namespace certcast
