// Proof of serving (--verify): after a version is applied and the hooks ran, the client opens a
// TLS connection to each endpoint that should now serve it and compares the leaf it is served
// with the version just applied. The chain is not verified (a private CA or a self-signed test
// certificate must not make the check fail): only the leaf's SHA-256 fingerprint counts.
//
// Thread-compatible: Check() is const and may run on several threads; the session calls it from
// its own thread only. Each probe is bounded by `attempt_timeout` (connect and handshake).
#ifndef CERTCAST_CLIENT_SERVING_VERIFIER_H_
#define CERTCAST_CLIENT_SERVING_VERIFIER_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace certcast {

struct ServingEndpoint {
  std::string host;  // a name, an IPv4 address or an IPv6 address without brackets
  std::string port;
  std::string address;  // as given: HOST:PORT or [V6]:PORT
};

// Parses HOST:PORT or [IPv6]:PORT. InvalidArgument naming `text` and what is wrong.
absl::StatusOr<ServingEndpoint> ParseServingEndpoint(const std::string& text);

// Connects to `endpoint`, completes a TLS handshake with SNI `server_name` (none when empty or
// an IP address) without verifying the chain, and returns the SHA-256 fingerprint (lowercase hex)
// of the leaf certificate served. The process must ignore SIGPIPE (certcast-client's main does):
// an endpoint that hangs up mid-handshake makes a write fail with EPIPE. Unavailable (naming the
// address) when it cannot connect or the handshake fails, DeadlineExceeded when `timeout` passes
// first.
absl::StatusOr<std::string> ServedLeafFingerprint(const ServingEndpoint& endpoint,
                                                  const std::string& server_name,
                                                  absl::Duration timeout);

class ServingVerifier {
 public:
  using Probe = std::function<absl::StatusOr<std::string>(
      const ServingEndpoint& endpoint, const std::string& server_name, absl::Duration timeout)>;

  struct Options {
    std::vector<ServingEndpoint> endpoints;
    // SNI sent to every endpoint; empty: the endpoint's host when it is a name.
    std::string server_name;
    // How long an applied version may take to be served before the client NACKs it (it keeps
    // checking afterwards and ACKs when the endpoint catches up).
    absl::Duration timeout = absl::Minutes(2);
    absl::Duration attempt_timeout = absl::Seconds(5);
  };

  // What one endpoint served.
  struct EndpointResult {
    std::string address;
    bool serves_expected = false;
    std::string fingerprint;  // the leaf it served; empty when unreachable
    absl::Status error;       // why it could not be checked; OK when a leaf was seen
  };
  struct Result {
    bool ok = false;  // every endpoint serves the expected leaf
    std::vector<EndpointResult> endpoints;
  };

  // `probe` defaults to ServedLeafFingerprint (tests of the session pass their own).
  explicit ServingVerifier(Options options, Probe probe = nullptr);

  // Probes every endpoint once and compares with `fingerprint`.
  Result Check(const std::string& fingerprint) const;

  // The NACK text for an endpoint that failed: "written, but HOST:PORT still serves the previous
  // certificate (fingerprint F)" when it served `previous_fingerprint`, otherwise what it served
  // or why it could not be reached.
  static std::string Explain(const EndpointResult& result, const std::string& previous_fingerprint);

  const Options& options() const { return options_; }
  bool enabled() const { return !options_.endpoints.empty(); }

 private:
  const Options options_;
  const Probe probe_;
};

}  // namespace certcast

#endif  // CERTCAST_CLIENT_SERVING_VERIFIER_H_
