// Coverage answers "which tenants should have this certificate and do not": every existing
// namespace the policy grants a certificate (by name or label selector), with the connected
// clients it has for that certificate and how many hold the version it should run (the current
// one, or the one a staged rollout holds it at: waiting for a wave is not missing). A deleted
// client Deployment shows as NO_CLIENT here (and in certcast_namespaces_missing) instead of
// silence.
// Thread-safe (reads snapshots; holds no lock of its own). Owns nothing.
#ifndef CERTCAST_SERVER_COVERAGE_H_
#define CERTCAST_SERVER_COVERAGE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kube/namespace_cache.h"
#include "server/fleet.h"
#include "server/policy.h"
#include "server/publisher.h"
#include "server/rollout.h"

namespace certcast {

struct NamespaceCoverage {
  enum class State { kInSync, kBehind, kNoClient };
  std::string certificate;
  std::string namespace_;
  State state = State::kNoClient;
  uint32_t clients = 0;
  uint32_t clients_on_current = 0;  // on the version it should run
  std::string granted_by;            // "name" or "selector"
  uint32_t waiting_for_wave = 0;     // 1-based, while a rollout holds it back
};

// Granted namespaces, and per certificate how many of them are not in sync.
struct CoverageReport {
  std::vector<NamespaceCoverage> rows;
  std::map<std::string, uint32_t> missing;  // every certificate of the policy
};

class Coverage {
 public:
  // `namespaces` and `policy` may be null (no namespace watch, no policy): nothing is known.
  // `rollout` (may be null) says which version each namespace should run.
  Coverage(const kube::NamespaceCache* namespaces, PolicyFile* policy, Fleet* fleet,
           const Publisher* publisher, RolloutController* rollout)
      : namespaces_(namespaces),
        policy_(policy),
        fleet_(fleet),
        publisher_(publisher),
        rollout_(rollout) {}

  // False without a namespace watch, before its first list, or without a policy.
  bool known() const;
  // Granted namespaces of `certificate_filter` (all certificates when empty), ordered by
  // certificate, then namespace. Only `namespace_filter` when not empty.
  // `scope`: this replica's clients (metrics) or every replica's (inspection).
  std::vector<NamespaceCoverage> List(const std::string& certificate_filter,
                                      const std::string& namespace_filter,
                                      FleetScope scope) const;
  // Every row, and per certificate the policy knows the granted namespaces not in sync (no
  // client, or none on the version it should run), from this replica's clients (metrics sum
  // the replicas' per-namespace series). Empty when !known().
  CoverageReport Report() const;

 private:
  const kube::NamespaceCache* const namespaces_;
  PolicyFile* const policy_;
  Fleet* const fleet_;
  const Publisher* const publisher_;
  RolloutController* const rollout_;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_COVERAGE_H_
