// Fuzzes the policy file parser (--policy), which an operator writes and the server re-reads on
// every change: Policy::Parse and the lookups done with what it returns.
#include <cstddef>
#include <cstdint>
#include <set>
#include <string>

#include "server/policy.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string yaml(reinterpret_cast<const char*>(data), size);
  static const std::set<std::string> kKnown = {"wildcard", "api", "internal-ca"};
  absl::StatusOr<certcast::Policy> policy = certcast::Policy::Parse(yaml, "fuzz.yaml", kKnown);
  if (!policy.ok()) return 0;
  for (const char* ns : {"tenant-a", "tenant-b", "kube-system", "", "*"}) {
    for (const std::string& certificate : kKnown) (void)policy->Allows(certificate, ns);
    (void)policy->CertificatesFor(ns);
  }
  (void)policy->IsAdmin("spiffe://cluster.local/ns/ops/sa/admin");
  (void)policy->IsAdmin("system:serviceaccount:ops:admin");
  return 0;
}
