#include "kube/api.h"

#include <cstdlib>

#include "gtest/gtest.h"
#include "kube/secret.h"
#include "tests/fixtures/cert_factory.h"

namespace certcast::kube {
namespace {

// The API's Status bodies become errors with the most specific code and a clear message.
TEST(StatusFromHttpTest, MapsCodesAndKeepsTheApiMessage) {
  const std::string forbidden =
      R"({"kind":"Status","apiVersion":"v1","status":"Failure","message":"secrets \"x\" is )"
      R"(forbidden: User \"u\" cannot update resource \"secrets\"","reason":"Forbidden","code":403})";
  absl::Status status = StatusFromHttp(403, forbidden, "PUT /api/v1/namespaces/a/secrets/x");
  EXPECT_EQ(status.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(status.message(),
            "PUT /api/v1/namespaces/a/secrets/x: secrets \"x\" is forbidden: User \"u\" cannot "
            "update resource \"secrets\" (HTTP 403 Forbidden)");
  EXPECT_EQ(StatusFromHttp(404, "{}", "GET x").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(StatusFromHttp(401, "", "GET x").code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(StatusFromHttp(422, "", "POST x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StatusFromHttp(503, "", "GET x").code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE(IsConflict(StatusFromHttp(409, R"({"kind":"Status","reason":"Conflict"})", "PUT")));
  EXPECT_TRUE(absl::IsAlreadyExists(
      StatusFromHttp(409, R"({"kind":"Status","reason":"AlreadyExists"})", "POST")));
  absl::Status expired = StatusFromHttp(410, R"({"kind":"Status","reason":"Expired"})", "WATCH");
  EXPECT_TRUE(IsExpired(expired));
  EXPECT_FALSE(IsExpired(StatusFromHttp(404, "", "GET")));
}

// Query values are percent-encoded (field selectors contain '=').
TEST(QueryEscapeTest, EncodesReservedCharacters) {
  EXPECT_EQ(QueryEscape("metadata.name=wildcard-tls"), "metadata.name%3Dwildcard-tls");
}

// Flags win over in-cluster settings; without either the error says what is missing.
TEST(KubeConfigTest, FlagsWinOverInCluster) {
  unsetenv("KUBERNETES_SERVICE_HOST");
  EXPECT_EQ(KubeConfig::Resolve("", "", "").status().code(), absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<KubeConfig> config = KubeConfig::Resolve("https://k:6443", "/t", "/c");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->api_url, "https://k:6443");
  EXPECT_EQ(config->token_file, "/t");
  setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1", 1);
  setenv("KUBERNETES_SERVICE_PORT", "443", 1);
  config = KubeConfig::Resolve("", "", "");
  ASSERT_TRUE(config.ok());
  EXPECT_EQ(config->api_url, "https://10.0.0.1:443");
  EXPECT_EQ(config->token_file, "/var/run/secrets/kubernetes.io/serviceaccount/token");
  unsetenv("KUBERNETES_SERVICE_HOST");
  unsetenv("KUBERNETES_SERVICE_PORT");
}

// A Secret written by certcast reads back as the same material, with label and annotations.
TEST(TlsSecretTest, RoundTripsMaterialLabelAndAnnotations) {
  fixtures::Chain chain = fixtures::MakeChain();
  Json secret = Json::object();
  SetTlsSecret(&secret, "tenant-a", "wildcard-tls", "wildcard", 7, chain.leaf.fingerprint,
               chain.material);
  EXPECT_EQ(secret["type"], "kubernetes.io/tls");
  EXPECT_TRUE(IsManagedByCertcast(secret));
  EXPECT_EQ(secret["metadata"]["annotations"][kVersionAnnotation], "7");
  EXPECT_EQ(ObjectName(secret), "tenant-a/wildcard-tls");
  absl::StatusOr<CertificateMaterial> material = MaterialFromSecret(secret);
  ASSERT_TRUE(material.ok()) << material.status();
  EXPECT_EQ(*material, chain.material);
  WipeSecretData(&secret);
  EXPECT_EQ(secret["data"]["tls.key"], "");
  EXPECT_FALSE(IsManagedByCertcast(Json::parse(R"({"metadata":{"labels":{"a":"b"}}})")));
  EXPECT_EQ(MaterialFromSecret(Json::parse(R"({"data":{"tls.crt":"!!"}})")).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Found by tests/fuzz (fuzz_kube_json): objects of the wrong shape (an array, members of other
// types) read as absent instead of throwing nlohmann::json's type_error, which ended the process.
TEST(TlsSecretTest, MalformedObjectsReadAsAbsentNotAsExceptions) {
  const Json array = Json::parse("[]");
  EXPECT_EQ(ObjectName(array), "/");
  EXPECT_EQ(ResourceVersion(array, "7"), "7");
  EXPECT_FALSE(IsManagedByCertcast(array));
  EXPECT_TRUE(absl::IsInvalidArgument(MaterialFromSecret(array).status()));
  const Json odd = Json::parse(
      R"({"metadata":{"resourceVersion":5,"name":[1],"labels":{"app.kubernetes.io/managed-by":1}},)"
      R"("data":{"tls.crt":1,"tls.key":"eA=="}})");
  EXPECT_EQ(ObjectName(odd), "/");
  EXPECT_EQ(ResourceVersion(odd), "");
  EXPECT_FALSE(IsManagedByCertcast(odd));
  EXPECT_TRUE(absl::IsInvalidArgument(MaterialFromSecret(odd).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(
      StatusFromHttp(400, R"({"kind":"Status","message":5,"reason":[]})", "GET x")));
}

// Watch lines: a type that is not a string is undecodable; an ERROR event's code of the wrong
// type counts as 500; a 410 is expired.
TEST(WatchEventTest, ParsesLinesAndRefusesMalformedOnes) {
  absl::StatusOr<WatchEvent> event =
      ParseWatchEvent(R"({"type":"MODIFIED","object":{"metadata":{"resourceVersion":"9"}}})", "w");
  ASSERT_TRUE(event.ok()) << event.status();
  EXPECT_EQ(event->type, "MODIFIED");
  EXPECT_EQ(ResourceVersion(event->object), "9");
  EXPECT_TRUE(absl::IsUnavailable(ParseWatchEvent(R"({"type":7,"object":{}})", "w").status()));
  EXPECT_TRUE(absl::IsUnavailable(ParseWatchEvent("not json", "w").status()));
  EXPECT_TRUE(absl::IsUnavailable(
      ParseWatchEvent(R"({"type":"ERROR","object":{"code":"410"}})", "w").status()));
  EXPECT_TRUE(
      IsExpired(ParseWatchEvent(R"({"type":"ERROR","object":{"code":410,"reason":"Expired"}})", "w")
                    .status()));
}

}  // namespace
}  // namespace certcast::kube
