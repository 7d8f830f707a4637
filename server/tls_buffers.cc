#include "server/tls_buffers.h"

#include <dlfcn.h>
#include <openssl/ssl.h>

#include <atomic>

namespace certcast {
namespace {
std::atomic<int> contexts_releasing_buffers{0};
}  // namespace

int ContextsReleasingTlsBuffers() { return contexts_releasing_buffers.load(); }

}  // namespace certcast

// gRPC creates its OpenSSL contexts out of reach (tsi). This definition, in the executable,
// comes before libssl's in the dynamic linker's search order, so libgrpc's calls land here.
// SSL_MODE_RELEASE_BUFFERS lets OpenSSL free a connection's 16 KiB read and write buffers
// whenever they hold nothing, which for an idle subscriber is almost always (nginx does the
// same). Without it every idle TLS stream keeps both.
extern "C" SSL_CTX* SSL_CTX_new(const SSL_METHOD* method) {
  using New = SSL_CTX* (*)(const SSL_METHOD*);
  static const New real_new = reinterpret_cast<New>(dlsym(RTLD_NEXT, "SSL_CTX_new"));
  SSL_CTX* context = real_new(method);
  if (context != nullptr) {
    SSL_CTX_set_mode(context, SSL_MODE_RELEASE_BUFFERS);
    certcast::contexts_releasing_buffers.fetch_add(1);
  }
  return context;
}
