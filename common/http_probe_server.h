// A minimal plain-HTTP server for Kubernetes probes (`/healthz`, `/readyz`), which cannot speak
// TLS. GET only, one short response per connection, served from one thread.
// Thread-safe: Start/Stop from the owner; the check callbacks run on the server's thread.
#ifndef CERTCAST_COMMON_HTTP_PROBE_SERVER_H_
#define CERTCAST_COMMON_HTTP_PROBE_SERVER_H_

#include <atomic>
#include <functional>
#include <map>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace certcast {

class HttpProbeServer {
 public:
  // OK → 200 "ok"; an error → 503 with the message as the body.
  using Check = std::function<absl::Status()>;

  HttpProbeServer() = default;
  ~HttpProbeServer();
  HttpProbeServer(const HttpProbeServer&) = delete;
  HttpProbeServer& operator=(const HttpProbeServer&) = delete;

  // Registers `path` (e.g. "/readyz"). Call before Start.
  void Handle(const std::string& path, Check check) { handlers_[path] = std::move(check); }

  // Binds HOST:PORT (port 0 picks one) and starts serving. Returns the bound port.
  absl::StatusOr<int> Start(const std::string& host_port);
  void Stop();

 private:
  void Serve();
  void Respond(int fd);

  std::map<std::string, Check> handlers_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

// Splits "HOST:PORT" or "[V6]:PORT". InvalidArgument when malformed.
absl::Status SplitHostPort(const std::string& host_port, std::string* host, int* port);

}  // namespace certcast

#endif  // CERTCAST_COMMON_HTTP_PROBE_SERVER_H_
