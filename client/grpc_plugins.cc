// The gRPC plugins certcast-client registers: those of gRPC 1.51's BuildCoreConfiguration
// (src/core/plugin_registry/grpc_plugin_registry.cc, in Debian's libgrpc.a), in its order, less
// the ones a client that dials one server by name never uses: xDS (resolver, load-balancing
// policies, HTTP filters, RBAC, fault injection, certificate providers), RLS, grpclb, ring hash,
// priority, weighted target, outlier detection and the test-only fake resolver.
//
// Linked only into the static client (CERTCAST_STATIC_CLIENT): defining BuildCoreConfiguration
// here keeps the linker from taking grpc_plugin_registry.o out of libgrpc.a, and with it the code
// of those plugins (about 1 MB of the binary, parsers of xDS and grpclb messages included, which
// a process holding private keys is better without). gRPC calls this once, on first use of its
// configuration. These are gRPC-internal functions: tests/static_client checks that the client
// is linked this way, and every scenario test runs this client against a server.
//
// A service config asking for a policy left out (it could only come from DNS TXT records, which
// gRPC does not look up by default) is rejected by the channel as an unknown policy.

namespace grpc_core {

// Declared as in gRPC's core_configuration.h, which Debian does not install; only pointers to the
// builder pass through here.
class CoreConfiguration {
 public:
  class Builder;
};

void RegisterHttpConnectHandshaker(CoreConfiguration::Builder* builder);
void RegisterTCPConnectHandshaker(CoreConfiguration::Builder* builder);
void RegisterPickFirstLbPolicy(CoreConfiguration::Builder* builder);
void RegisterRoundRobinLbPolicy(CoreConfiguration::Builder* builder);
void BuildClientChannelConfiguration(CoreConfiguration::Builder* builder);
void SecurityRegisterHandshakerFactories(CoreConfiguration::Builder* builder);
void RegisterClientAuthorityFilter(CoreConfiguration::Builder* builder);
void RegisterChannelIdleFilters(CoreConfiguration::Builder* builder);
void RegisterHttpFilters(CoreConfiguration::Builder* builder);
void RegisterDeadlineFilter(CoreConfiguration::Builder* builder);
void RegisterMessageSizeFilter(CoreConfiguration::Builder* builder);
void RegisterServiceConfigChannelArgFilter(CoreConfiguration::Builder* builder);
void RegisterResourceQuota(CoreConfiguration::Builder* builder);
void RegisterAresDnsResolver(CoreConfiguration::Builder* builder);
void RegisterNativeDnsResolver(CoreConfiguration::Builder* builder);
void RegisterSockaddrResolver(CoreConfiguration::Builder* builder);
void RegisterHttpProxyMapper(CoreConfiguration::Builder* builder);
void RegisterSecurityFilters(CoreConfiguration::Builder* builder);
void RegisterBuiltins(CoreConfiguration::Builder* builder);

void BuildCoreConfiguration(CoreConfiguration::Builder* builder);

}  // namespace grpc_core

namespace grpc_event_engine::experimental {
void RegisterEventEngineChannelArgPreconditioning(
    grpc_core::CoreConfiguration::Builder* builder);
}  // namespace grpc_event_engine::experimental

void grpc_core::BuildCoreConfiguration(CoreConfiguration::Builder* builder) {
  grpc_event_engine::experimental::RegisterEventEngineChannelArgPreconditioning(builder);
  RegisterHttpConnectHandshaker(builder);  // HTTP CONNECT through $https_proxy / grpc.http_proxy
  RegisterTCPConnectHandshaker(builder);
  RegisterPickFirstLbPolicy(builder);
  RegisterRoundRobinLbPolicy(builder);
  BuildClientChannelConfiguration(builder);
  SecurityRegisterHandshakerFactories(builder);
  RegisterClientAuthorityFilter(builder);
  RegisterChannelIdleFilters(builder);
  RegisterHttpFilters(builder);
  RegisterDeadlineFilter(builder);
  RegisterMessageSizeFilter(builder);
  RegisterServiceConfigChannelArgFilter(builder);
  RegisterResourceQuota(builder);
  RegisterAresDnsResolver(builder);
  RegisterNativeDnsResolver(builder);
  RegisterSockaddrResolver(builder);
  RegisterHttpProxyMapper(builder);
  RegisterSecurityFilters(builder);
  RegisterBuiltins(builder);
}
