#include "server/authorizer.h"

#include "grpc/grpc_security_constants.h"

namespace certcast {

PeerIdentity IdentityOf(const grpc::ServerContextBase& context) {
  PeerIdentity identity;
  identity.peer = context.peer();
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth != nullptr && auth->IsPeerAuthenticated()) {
    for (const grpc::string_ref& value :
         auth->FindPropertyValues(GRPC_PEER_SPIFFE_ID_PROPERTY_NAME)) {
      identity.identity.assign(value.data(), value.size());
    }
  }
  return identity;
}

}  // namespace certcast
