#include "server/coverage.h"

#include <memory>

namespace certcast {

bool Coverage::known() const {
  return namespaces_ != nullptr && policy_ != nullptr && namespaces_->synced();
}

std::vector<NamespaceCoverage> Coverage::List(const std::string& certificate_filter,
                                              const std::string& namespace_filter,
                                              FleetScope scope) const {
  std::vector<NamespaceCoverage> rows;
  if (!known()) return rows;
  std::shared_ptr<const Policy> policy = policy_->current();
  std::shared_ptr<const kube::NamespaceSet> namespaces = namespaces_->snapshot();
  const Fleet::ExpectedVersion expected =
      rollout_ != nullptr ? rollout_->ExpectedVersions() : nullptr;
  for (const std::string& certificate : policy->Certificates()) {
    if (!certificate_filter.empty() && certificate != certificate_filter) continue;
    std::shared_ptr<const Publication> publication = publisher_->Current(certificate);
    const uint64_t current = publication != nullptr ? publication->version : 0;
    const std::map<std::string, Fleet::Counts> counts =
        fleet_->CountByNamespace(certificate, current, expected, scope);
    for (const auto& [name, labels] : *namespaces) {
      if (!namespace_filter.empty() && name != namespace_filter) continue;
      if (!policy->Allows(certificate, name, &labels)) continue;
      NamespaceCoverage row;
      row.certificate = certificate;
      row.namespace_ = name;
      row.granted_by = policy->Allows(certificate, name) ? "name" : "selector";
      const uint64_t should_run = expected ? expected(certificate, name, current) : current;
      auto found = counts.find(name);
      if (found != counts.end()) {
        row.clients = found->second.clients;
        row.clients_on_current = found->second.acknowledged;
      }
      if (should_run != current) row.waiting_for_wave = rollout_->WaitingFor(certificate, name);
      row.state = row.clients == 0 ? NamespaceCoverage::State::kNoClient
                  : row.clients_on_current > 0 || current == 0
                      ? NamespaceCoverage::State::kInSync
                      : NamespaceCoverage::State::kBehind;
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

CoverageReport Coverage::Report() const {
  CoverageReport report;
  if (!known()) return report;
  for (const std::string& certificate : policy_->current()->Certificates()) {
    report.missing[certificate] = 0;
  }
  report.rows = List("", "", FleetScope::kThisReplica);
  for (const NamespaceCoverage& row : report.rows) {
    if (row.state != NamespaceCoverage::State::kInSync) ++report.missing[row.certificate];
  }
  return report;
}

}  // namespace certcast
