#include "client/secret_sink.h"

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kube/api.h"

namespace certcast {
namespace {

using ::testing::HasSubstr;

// Answers every GET with `secret`; records the other requests.
class CannedApi final : public kube::KubeApi {
 public:
  explicit CannedApi(kube::Json secret) : secret_(std::move(secret)) {}
  absl::StatusOr<kube::Json> Request(const std::string& method, const std::string&,
                                     const kube::Json*, const std::string&) override {
    if (method != "GET") writes.push_back(method);
    return secret_;
  }
  absl::Status Watch(const std::string&, const std::function<bool(const kube::WatchEvent&)>&,
                     const std::atomic<bool>*, absl::Duration) override {
    return absl::UnimplementedError("no watches here");
  }
  std::vector<std::string> writes;

 private:
  const kube::Json secret_;
};

VersionedMaterial Version() {
  VersionedMaterial version;
  version.name = "web";
  version.version = 3;
  version.fingerprint = "sha256:00";
  version.material.chain_pem = "chain";
  version.material.key_pem = SecretBytes("key");
  return version;
}

kube::Json ManagedSecret() {
  return kube::Json::parse(R"({
    "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
    "metadata": {"name": "web-tls", "namespace": "tenant-a", "uid": "u-1", "resourceVersion": "7",
                 "labels": {"app.kubernetes.io/managed-by": "certcast"},
                 "annotations": {"certcast.io/version": "2"}},
    "data": {"tls.crt": "Y2hhaW4=", "tls.key": "a2V5"}})");
}

// Issue 10 (fuzzing the Kubernetes JSON the client parses): a Secret of the wrong shape from the
// API (what a broken or hostile API server could send) is an error naming the Secret and the
// part that is wrong, never an exception that ends the client, and nothing is written. Each of
// these threw nlohmann::json::type_error before.
TEST(SecretSinkTest, MalformedSecretsAreErrorsNamingTheSecretNotExceptions) {
  struct Case {
    const char* what;
    kube::Json secret;
    const char* part;
  };
  std::vector<Case> cases;
  cases.push_back({"an array", kube::Json::array({1, 2}), "the object is a array"});
  cases.push_back({"a number", kube::Json(7), "the object is a number"});
  kube::Json secret = ManagedSecret();
  secret["metadata"] = "web-tls";
  cases.push_back({"metadata a string", secret, "metadata is a string"});
  secret = ManagedSecret();
  secret["metadata"]["annotations"] = kube::Json::array();
  cases.push_back({"annotations an array", secret, "metadata.annotations is a array"});
  secret = ManagedSecret();
  secret["metadata"]["labels"] = 3;
  cases.push_back({"labels a number", secret, "metadata.labels is a number"});
  secret = ManagedSecret();
  secret["data"] = "tls.crt";
  cases.push_back({"data a string", secret, "data is a string"});
  secret = ManagedSecret();
  secret["type"] = 1;
  cases.push_back({"type a number", secret, "type is a number"});
  for (const Case& c : cases) {
    CannedApi api(c.secret);
    SecretSink sink(&api, {"tenant-a", "web-tls"});
    absl::StatusOr<ApplyResult> applied = sink.Apply(Version());
    EXPECT_TRUE(absl::IsInvalidArgument(applied.status())) << c.what << ": " << applied.status();
    EXPECT_THAT(applied.status().message(), HasSubstr("Secret tenant-a/web-tls")) << c.what;
    EXPECT_THAT(applied.status().message(), HasSubstr(c.part)) << c.what;
    absl::StatusOr<std::string> held = sink.HeldFingerprint("web");
    EXPECT_TRUE(absl::IsInvalidArgument(held.status())) << c.what << ": " << held.status();
    EXPECT_TRUE(api.writes.empty()) << c.what;
    // Remove deletes only a Secret it can tell is certcast's; a malformed one is left alone.
    EXPECT_TRUE(absl::IsInvalidArgument(sink.Remove("web"))) << c.what;
    EXPECT_TRUE(api.writes.empty()) << c.what;
  }
}

// Members of other types where a string is expected (annotations, type, uid) read as absent.
TEST(SecretSinkTest, WrongTypedMembersReadAsAbsent) {
  kube::Json secret = ManagedSecret();
  secret["metadata"]["annotations"]["certcast.io/version"] = 3;
  secret["metadata"]["uid"] = kube::Json::object();
  CannedApi api(secret);
  SecretSink sink(&api, {"tenant-a", "web-tls"});
  absl::StatusOr<ApplyResult> applied = sink.Apply(Version());
  ASSERT_TRUE(applied.ok()) << applied.status();
  EXPECT_EQ(*applied, ApplyResult::kWritten);
  EXPECT_TRUE(sink.Remove("web").ok());
  EXPECT_THAT(api.writes, ::testing::ElementsAre("PUT", "DELETE"));
}

}  // namespace
}  // namespace certcast
