#ifndef CERTCAST_SERVER_TLS_BUFFERS_H_
#define CERTCAST_SERVER_TLS_BUFFERS_H_

// Linking tls_buffers.cc into an executable makes every OpenSSL context it creates, gRPC's
// included, release a TLS connection's record buffers while they are empty
// (SSL_MODE_RELEASE_BUFFERS): an idle stream then holds about 34 KiB less (bench/README.md).

namespace certcast {

// How many OpenSSL contexts were created with the mode set: a check that gRPC's own calls
// went through this definition.
int ContextsReleasingTlsBuffers();

}  // namespace certcast

#endif  // CERTCAST_SERVER_TLS_BUFFERS_H_
