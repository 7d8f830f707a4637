#include "server/etcd_client.h"

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace certcast {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Endpoints and prefix from --store=etcd://...; a trailing slash of the prefix is dropped.
TEST(EtcdStoreUrlTest, ParsesEndpointsAndPrefix) {
  absl::StatusOr<EtcdStoreLocation> location =
      ParseEtcdStoreUrl("etcd://etcd-0.etcd:2379,10.0.0.2:2379,[::1]:2379/certcast/prod/");
  ASSERT_TRUE(location.ok()) << location.status();
  EXPECT_THAT(location->endpoints, ElementsAre("etcd-0.etcd:2379", "10.0.0.2:2379", "[::1]:2379"));
  EXPECT_EQ(location->prefix, "/certcast/prod");
}

// Anything else is refused naming the flag value and what is wrong.
TEST(EtcdStoreUrlTest, RefusesMalformedUrls) {
  const struct {
    const char* url;
    const char* why;
  } cases[] = {
      {"http://etcd:2379/certcast", "no etcd:// scheme"},
      {"etcd://etcd:2379", "no /PREFIX"},
      {"etcd://etcd/certcast", "\"etcd\" is not HOST:PORT"},
      {"etcd://etcd:0/certcast", "is not HOST:PORT"},
      {"etcd://etcd:2379,/certcast", "\"\" is not HOST:PORT"},
      {"etcd://etcd:2379/", "PREFIX must be"},
      {"etcd://etcd:2379/a//b", "PREFIX must be"},
      {"etcd://etcd:2379/a b", "PREFIX must be"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<EtcdStoreLocation> location = ParseEtcdStoreUrl(c.url);
    ASSERT_TRUE(absl::IsInvalidArgument(location.status())) << c.url;
    EXPECT_THAT(std::string(location.status().message()), HasSubstr(c.url));
    EXPECT_THAT(std::string(location.status().message()), HasSubstr(c.why)) << c.url;
  }
}

// The range end of a prefix covers exactly the keys that start with it.
TEST(EtcdStoreUrlTest, PrefixRangeEndCoversThePrefix) {
  EXPECT_EQ(PrefixRangeEnd("/certcast/state/"), "/certcast/state0");
  EXPECT_EQ(PrefixRangeEnd("a\xff"), "b");
  EXPECT_EQ(PrefixRangeEnd("\xff"), std::string(1, '\0'));
}

// A client certificate without its key (or the reverse) is refused at start.
TEST(EtcdClientTest, CertificateAndKeyGoTogether) {
  PosixFilesystem fs;
  absl::StatusOr<std::unique_ptr<EtcdClient>> client = EtcdClient::Create(
      fs, {"127.0.0.1:2379"}, {"", "/nonexistent/client.crt", ""}, absl::Seconds(1));
  EXPECT_TRUE(absl::IsInvalidArgument(client.status()));
  EXPECT_THAT(std::string(client.status().message()), HasSubstr("--store-cert and --store-key"));
  client =
      EtcdClient::Create(fs, {"127.0.0.1:2379"}, {"/nonexistent/ca.crt", "", ""}, absl::Seconds(1));
  EXPECT_TRUE(absl::IsInvalidArgument(client.status()));
  EXPECT_THAT(std::string(client.status().message()), HasSubstr("--store-ca=/nonexistent/ca.crt"));
}

}  // namespace
}  // namespace certcast
