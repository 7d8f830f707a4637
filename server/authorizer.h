// Who the peer of a call is, and whether it may do what it asks. The policy-driven authorizer
// comes later; this seam is where it plugs in.
#ifndef CERTCAST_SERVER_AUTHORIZER_H_
#define CERTCAST_SERVER_AUTHORIZER_H_

#include <string>

#include "absl/status/status.h"
#include "grpcpp/server_context.h"

namespace certcast {

struct PeerIdentity {
  std::string peer;      // transport address, e.g. "ipv4:10.0.0.7:51234"
  std::string identity;  // SPIFFE ID of a verified client certificate; empty when none
};

// Reads the peer's address and its verified SPIFFE ID (when mTLS is on).
PeerIdentity IdentityOf(const grpc::ServerContextBase& context);

// Thread-safe implementations only.
class Authorizer {
 public:
  virtual ~Authorizer() = default;
  // OK, or PERMISSION_DENIED/UNAUTHENTICATED with a message naming what is missing.
  virtual absl::Status AuthorizeSubscribe(const PeerIdentity& peer, const std::string& namespace_,
                                          const std::string& certificate) = 0;
  virtual absl::Status AuthorizeAdmin(const PeerIdentity& peer) = 0;
};

// Allows everything: the behaviour until per-namespace policy exists.
class AllowAllAuthorizer final : public Authorizer {
 public:
  absl::Status AuthorizeSubscribe(const PeerIdentity&, const std::string&,
                                  const std::string&) override {
    return absl::OkStatus();
  }
  absl::Status AuthorizeAdmin(const PeerIdentity&) override { return absl::OkStatus(); }
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_AUTHORIZER_H_
