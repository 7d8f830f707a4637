#include "server/coverage.h"

#include <memory>

namespace certcast {

bool Coverage::known() const {
  return namespaces_ != nullptr && policy_ != nullptr && namespaces_->synced();
}

std::vector<NamespaceCoverage> Coverage::List(const std::string& certificate_filter,
                                              const std::string& namespace_filter) const {
  std::vector<NamespaceCoverage> rows;
  if (!known()) return rows;
  std::shared_ptr<const Policy> policy = policy_->current();
  std::shared_ptr<const kube::NamespaceSet> namespaces = namespaces_->snapshot();
  for (const std::string& certificate : policy->Certificates()) {
    if (!certificate_filter.empty() && certificate != certificate_filter) continue;
    std::optional<CertificateSnapshot> snapshot = publisher_->Snapshot(certificate);
    if (!snapshot.has_value()) continue;  // the policy names only served certificates
    const uint64_t current = snapshot->current.has_value() ? snapshot->current->version : 0;
    const std::map<std::string, Fleet::Counts> counts =
        fleet_->CountByNamespace(certificate, current);
    for (const auto& [name, labels] : *namespaces) {
      if (!namespace_filter.empty() && name != namespace_filter) continue;
      if (!policy->Allows(certificate, name, &labels)) continue;
      NamespaceCoverage row;
      row.certificate = certificate;
      row.namespace_ = name;
      row.granted_by = policy->Allows(certificate, name) ? "name" : "selector";
      auto found = counts.find(name);
      if (found != counts.end()) {
        row.clients = found->second.clients;
        row.clients_on_current = found->second.acknowledged;
      }
      row.state = row.clients == 0 ? NamespaceCoverage::State::kNoClient
                  : row.clients_on_current > 0 || current == 0
                      ? NamespaceCoverage::State::kInSync
                      : NamespaceCoverage::State::kBehind;
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

std::map<std::string, uint32_t> Coverage::MissingByCertificate() const {
  std::map<std::string, uint32_t> missing;
  if (!known()) return missing;
  for (const std::string& certificate : policy_->current()->Certificates()) {
    missing[certificate] = 0;
  }
  for (const NamespaceCoverage& row : List("", "")) {
    if (row.state != NamespaceCoverage::State::kInSync) ++missing[row.certificate];
  }
  return missing;
}

}  // namespace certcast
