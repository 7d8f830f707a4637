// MetricsEndpoint serves the Prometheus text format on GET /metrics (prometheus-cpp's Exposer,
// civetweb underneath) for the collectables registered with it.
//
// Thread-safe: scrapes run on the endpoint's own threads and call Collect() concurrently with the
// rest of the process. Keeps registered collectables alive; whatever they point to must outlive
// the endpoint (destroy the endpoint first: no scrape runs after its destructor returns).
#ifndef CERTCAST_METRICS_ENDPOINT_H_
#define CERTCAST_METRICS_ENDPOINT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "prometheus/collectable.h"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace certcast::metrics {

class MetricsEndpoint {
 public:
  // Listens on `listen`: "HOST:PORT" (IPv4 address or host name; "[V6]:PORT"; ":PORT" for every
  // IPv4 interface; port 0 picks a free one). InvalidArgument when it is not one HOST:PORT;
  // Unavailable when it cannot be bound.
  static absl::StatusOr<std::unique_ptr<MetricsEndpoint>> Start(const std::string& listen);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // The bound port.
  int port() const { return port_; }

  // Exports what `collectable` collects on /metrics, from the next scrape on.
  void Register(std::shared_ptr<prometheus::Collectable> collectable);

 private:
  MetricsEndpoint() = default;

  std::vector<std::shared_ptr<prometheus::Collectable>> collectables_;
  // Destroyed first: its threads stop before the collectables go.
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace certcast::metrics

#endif  // CERTCAST_METRICS_ENDPOINT_H_
