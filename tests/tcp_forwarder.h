// A TCP forwarder on 127.0.0.1 for partition tests: every connection to port() is relayed to
// 127.0.0.1:target_port. Cut() breaks every relayed connection and refuses new ones (closes them
// at once) until Restore(), which is how a test cuts one replica off from its store while the
// others still reach it.
// Thread-safe. One thread accepts; each connection has a relay thread.
#ifndef CERTCAST_TESTS_TCP_FORWARDER_H_
#define CERTCAST_TESTS_TCP_FORWARDER_H_

#include <set>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace certcast::scenario {

class TcpForwarder {
 public:
  explicit TcpForwarder(int target_port);
  ~TcpForwarder();
  TcpForwarder(const TcpForwarder&) = delete;
  TcpForwarder& operator=(const TcpForwarder&) = delete;

  int port() const { return port_; }
  void Cut();
  void Restore();

 private:
  void Accept();
  void Relay(int client, int upstream);

  const int target_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  absl::Mutex mu_;
  bool cut_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::set<int> open_ ABSL_GUARDED_BY(mu_);  // relayed sockets, shut down by Cut
  std::vector<std::thread> relays_ ABSL_GUARDED_BY(mu_);
  std::thread acceptor_;
};

}  // namespace certcast::scenario

#endif  // CERTCAST_TESTS_TCP_FORWARDER_H_
