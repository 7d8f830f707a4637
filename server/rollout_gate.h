// RolloutGate: what a staged rollout (server/rollout.h) lets through to one certificate's
// streams. Namespaces it has not released yet keep `held_back` (the version they already run);
// the others get the current publication. The hub asks it per stream.
// Immutable once built; safe to share across threads. `released` must be pure: the hub calls it
// with its own lock held.
#ifndef CERTCAST_SERVER_ROLLOUT_GATE_H_
#define CERTCAST_SERVER_ROLLOUT_GATE_H_

#include <functional>
#include <memory>
#include <string>

#include "server/publication.h"

namespace certcast {

struct RolloutGate {
  std::shared_ptr<const Publication> held_back;
  std::function<bool(const std::string& namespace_)> released;

  // The publication a stream of `namespace_` should have, given the certificate's `current`.
  std::shared_ptr<const Publication> For(const std::string& namespace_,
                                         const std::shared_ptr<const Publication>& current) const {
    return released(namespace_) ? current : held_back;
  }
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_ROLLOUT_GATE_H_
