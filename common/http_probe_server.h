// A minimal plain-HTTP server for Kubernetes probes (`/healthz`, `/readyz`), which cannot speak
// TLS. GET only, one short response per connection.
//
// Anyone who can reach the port (every pod in the cluster, for a pod IP) must not be able to fail
// the probes, which would make the kubelet restart the pod. So connections are served
// concurrently by one poll(2) loop on non-blocking sockets: each has a deadline for the whole
// exchange (not per read, so one byte at a time cannot keep it open), and at most
// `max_connections` are open; a new connection beyond that closes the oldest one, so fresh
// probes are always served.
// Thread-safe: Start/Stop from the owner; the check callbacks run on the server's thread.
#ifndef CERTCAST_COMMON_HTTP_PROBE_SERVER_H_
#define CERTCAST_COMMON_HTTP_PROBE_SERVER_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <list>
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

  struct Options {
    // Time from accept to the last byte of the response; a connection still open then is closed.
    std::chrono::milliseconds request_deadline{2000};
    int max_connections = 64;
  };

  HttpProbeServer() : HttpProbeServer(Options()) {}
  explicit HttpProbeServer(Options options) : options_(options) {}
  ~HttpProbeServer();
  HttpProbeServer(const HttpProbeServer&) = delete;
  HttpProbeServer& operator=(const HttpProbeServer&) = delete;

  // Registers `path` (e.g. "/readyz"). Call before Start.
  void Handle(const std::string& path, Check check) { handlers_[path] = std::move(check); }

  // Binds HOST:PORT (port 0 picks one) and starts serving. Returns the bound port.
  absl::StatusOr<int> Start(const std::string& host_port);
  void Stop();

 private:
  struct Connection;

  void Serve();
  // Accepts every pending connection, closing the oldest ones beyond max_connections.
  void AcceptAll(std::list<Connection>& connections);
  // The full response to the request head in `request`.
  std::string Respond(const std::string& request);

  const Options options_;
  std::map<std::string, Check> handlers_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace certcast

#endif  // CERTCAST_COMMON_HTTP_PROBE_SERVER_H_
