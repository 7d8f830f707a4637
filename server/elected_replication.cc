#include "server/elected_replication.h"

#include <utility>

namespace certcast {

void ElectedReplication::StartElection(const std::vector<std::string>& certificates,
                                       Callbacks callbacks) {
  callbacks_ = std::move(callbacks);
  certificates_ = certificates;
  follower_ = std::make_unique<StoredStateFollower>(callbacks_.stored_state_changed);
  follower_->Start();
  elector_.Start({callbacks_.started_leading, [this](bool reachable) {
                    if (reachable) MarkAllChanged();
                    if (callbacks_.store_reachability_changed) {
                      callbacks_.store_reachability_changed(reachable);
                    }
                  }});
}

void ElectedReplication::MarkAllChanged() {
  for (const std::string& name : certificates_) follower_->MarkChanged(name);
}

void ElectedReplication::StopElection() {
  if (follower_ != nullptr) follower_->Stop();
  elector_.Stop();
}

}  // namespace certcast
