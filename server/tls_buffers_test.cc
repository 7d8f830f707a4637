#include "server/tls_buffers.h"

#include <openssl/ssl.h>

#include <chrono>
#include <memory>
#include <string>

#include "grpcpp/generic/async_generic_service.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "tests/fixtures/cert_factory.h"

namespace certcast {
namespace {

TEST(TlsBuffersTest, ContextsCreatedHereReleaseIdleBuffers) {
  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> context(SSL_CTX_new(TLS_server_method()),
                                                            SSL_CTX_free);
  ASSERT_NE(context, nullptr);
  EXPECT_NE(SSL_CTX_get_mode(context.get()) & SSL_MODE_RELEASE_BUFFERS, 0u);
}

// The point of it: gRPC's own contexts, created inside libgrpc, get the mode too.
TEST(TlsBuffersTest, GrpcContextsGoThroughIt) {
  const fixtures::Chain chain = fixtures::MakeChain({"server.example.test"});
  const int before = ContextsReleasingTlsBuffers();

  grpc::SslServerCredentialsOptions server_options;
  server_options.pem_key_cert_pairs.push_back(
      {std::string(chain.material.key_pem.reveal()), chain.material.chain_pem});
  int port = 0;
  grpc::CallbackGenericService no_methods;  // a server needs a service to start
  grpc::ServerBuilder builder;
  builder.RegisterCallbackGenericService(&no_methods);
  builder.AddListeningPort("127.0.0.1:0", grpc::SslServerCredentials(server_options), &port);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);

  grpc::SslCredentialsOptions client_options;
  client_options.pem_root_certs = chain.root.cert_pem;
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("server.example.test");
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(
      "127.0.0.1:" + std::to_string(port), grpc::SslCredentials(client_options), args);
  // READY only after a completed handshake, so both sides have made their contexts.
  ASSERT_TRUE(
      channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(20)));

  EXPECT_GE(ContextsReleasingTlsBuffers() - before, 2);  // the server's and the channel's
  server->Shutdown();
}

}  // namespace
}  // namespace certcast
