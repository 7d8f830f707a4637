#include "metrics/endpoint.h"

#include <exception>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"

namespace certcast::metrics {
namespace {

// civetweb takes a list of ports with options; accept exactly one HOST:PORT (an empty host means
// every interface, as for --health-listen) and return it in civetweb's spelling.
absl::StatusOr<std::string> CivetAddress(const std::string& listen) {
  const size_t colon = listen.rfind(':');
  const std::string port = colon == std::string::npos ? "" : listen.substr(colon + 1);
  uint32_t number = 0;
  bool digits = !port.empty();
  for (char c : port) digits &= absl::ascii_isdigit(c);
  if (!digits || !absl::SimpleAtoi(port, &number) || number > 65535 ||
      listen.find_first_of(", \t") != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", listen, "\" is not HOST:PORT (e.g. 0.0.0.0:9090 or :9090)"));
  }
  if (colon == 0) return absl::StrCat("0.0.0.0:", port);
  return listen;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsEndpoint>> MetricsEndpoint::Start(const std::string& listen) {
  absl::StatusOr<std::string> address = CivetAddress(listen);
  if (!address.ok()) return address.status();
  std::unique_ptr<MetricsEndpoint> endpoint(new MetricsEndpoint());
  // civetweb reports a failed bind by throwing from the Exposer's constructor.
  try {
    endpoint->exposer_ = std::make_unique<prometheus::Exposer>(*address, /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ", e.what()));
  }
  const std::vector<int> ports = endpoint->exposer_->GetListeningPorts();
  if (ports.empty() || ports.front() <= 0) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen));
  }
  endpoint->port_ = ports.front();
  return endpoint;
}

MetricsEndpoint::~MetricsEndpoint() = default;

void MetricsEndpoint::Register(std::shared_ptr<prometheus::Collectable> collectable) {
  exposer_->RegisterCollectable(collectable);
  collectables_.push_back(std::move(collectable));
}

}  // namespace certcast::metrics
