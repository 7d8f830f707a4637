#include "client/serving_verifier.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/fixtures/tls_endpoint.h"

namespace certcast {
namespace {

using ::certcast::fixtures::Chain;
using ::certcast::fixtures::MakeChain;
using ::certcast::fixtures::TlsEndpoint;
using ::testing::HasSubstr;

ServingEndpoint Local(int port) {
  absl::StatusOr<ServingEndpoint> endpoint =
      ParseServingEndpoint("127.0.0.1:" + std::to_string(port));
  EXPECT_TRUE(endpoint.ok()) << endpoint.status();
  return *endpoint;
}

// A port with a bound socket that never listens: connecting to it is refused.
class RefusingPort {
 public:
  RefusingPort() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    bind(fd_, reinterpret_cast<struct sockaddr*>(&address), sizeof(address));
    getsockname(fd_, reinterpret_cast<struct sockaddr*>(&address), &length);
    port_ = ntohs(address.sin_port);
  }
  ~RefusingPort() { close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

// HOST:PORT and [IPv6]:PORT parse; a missing or out-of-range port, or a bare IPv6 address, is
// refused with the flag's value in the message.
TEST(ServingVerifierTest, ParsesHostPortAndRefusesMalformedAddresses) {
  absl::StatusOr<ServingEndpoint> name = ParseServingEndpoint("tenant-a.example.com:443");
  ASSERT_TRUE(name.ok()) << name.status();
  EXPECT_EQ(name->host, "tenant-a.example.com");
  EXPECT_EQ(name->port, "443");
  absl::StatusOr<ServingEndpoint> v6 = ParseServingEndpoint("[::1]:8443");
  ASSERT_TRUE(v6.ok()) << v6.status();
  EXPECT_EQ(v6->host, "::1");
  EXPECT_EQ(v6->address, "[::1]:8443");
  for (const char* bad : {"tenant-a", "tenant-a:", "tenant-a:0", "tenant-a:65536", "host:https",
                          ":443", "::1:443", "[::1]443"}) {
    absl::StatusOr<ServingEndpoint> parsed = ParseServingEndpoint(bad);
    EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(parsed.status().message(), HasSubstr(bad));
  }
}

// The fingerprint of the leaf a real TLS endpoint serves (chain from a private CA, not
// verified), and the new one once the endpoint reloads.
TEST(ServingVerifierTest, ReadsTheServedLeafOverRealTlsAndSeesAReload) {
  const Chain old_chain = MakeChain();
  const Chain new_chain = MakeChain();
  TlsEndpoint endpoint(old_chain.material.chain_pem, old_chain.leaf.key_pem);
  absl::StatusOr<std::string> served =
      ServedLeafFingerprint(Local(endpoint.port()), "tenant-a.example.test", absl::Seconds(10));
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ(*served, old_chain.leaf.fingerprint);

  endpoint.Serve(new_chain.material.chain_pem, new_chain.leaf.key_pem);
  served = ServedLeafFingerprint(Local(endpoint.port()), "", absl::Seconds(10));
  ASSERT_TRUE(served.ok()) << served.status();
  EXPECT_EQ(*served, new_chain.leaf.fingerprint);
}

// An endpoint that refuses the connection is Unavailable, naming the address.
TEST(ServingVerifierTest, RefusedConnectionIsUnavailableNamingTheAddress) {
  RefusingPort port;
  absl::StatusOr<std::string> served =
      ServedLeafFingerprint(Local(port.port()), "", absl::Seconds(5));
  EXPECT_EQ(served.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(served.status().message(), HasSubstr("127.0.0.1:" + std::to_string(port.port())));
}

// Check() compares every endpoint with the expected leaf; Explain() names the address and the
// fingerprint it saw, and says "previous" when that is what was held before.
TEST(ServingVerifierTest, CheckComparesEveryEndpointAndExplainsTheFailure) {
  const Chain old_chain = MakeChain();
  const Chain new_chain = MakeChain();
  TlsEndpoint reloaded(new_chain.material.chain_pem, new_chain.leaf.key_pem);
  TlsEndpoint stale(old_chain.material.chain_pem, old_chain.leaf.key_pem);
  ServingVerifier::Options options;
  options.endpoints = {Local(reloaded.port()), Local(stale.port())};
  ServingVerifier verifier(options);

  ServingVerifier::Result result = verifier.Check(new_chain.leaf.fingerprint);
  EXPECT_FALSE(result.ok);
  ASSERT_EQ(result.endpoints.size(), 2u);
  EXPECT_TRUE(result.endpoints[0].serves_expected);
  EXPECT_FALSE(result.endpoints[1].serves_expected);
  EXPECT_EQ(result.endpoints[1].fingerprint, old_chain.leaf.fingerprint);
  EXPECT_EQ(ServingVerifier::Explain(result.endpoints[1], old_chain.leaf.fingerprint),
            "written, but " + stale.address() +
                " still serves the previous certificate (fingerprint " +
                old_chain.leaf.fingerprint + ")");
  EXPECT_THAT(ServingVerifier::Explain(result.endpoints[1], ""),
              HasSubstr("serves another certificate"));

  stale.Serve(new_chain.material.chain_pem, new_chain.leaf.key_pem);
  EXPECT_TRUE(verifier.Check(new_chain.leaf.fingerprint).ok);
}

}  // namespace
}  // namespace certcast
