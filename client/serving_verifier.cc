#include "client/serving_verifier.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/certificate.h"

namespace certcast {
namespace {

bool IsIpAddress(const std::string& host) {
  unsigned char buffer[sizeof(struct in6_addr)];
  return inet_pton(AF_INET, host.c_str(), buffer) == 1 ||
         inet_pton(AF_INET6, host.c_str(), buffer) == 1;
}

std::string OpenSslError() {
  const unsigned long code = ERR_get_error();  // NOLINT(runtime/int): OpenSSL's type
  ERR_clear_error();
  if (code == 0) return "connection closed during the handshake";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

// Waits until `fd` is readable or writable as `events` asks, up to `deadline`.
absl::Status WaitFor(int fd, short events, absl::Time deadline, const std::string& address) {
  while (true) {
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(absl::StrCat(address,
                                                      ": no TLS handshake within the "
                                                      "attempt timeout"));
    }
    struct pollfd p = {fd, events, 0};
    const int ready = poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
    if (ready > 0) return absl::OkStatus();
    if (ready < 0 && errno != EINTR) {
      return absl::UnavailableError(absl::StrCat(address, ": poll: ", std::strerror(errno)));
    }
  }
}

// A connected non-blocking socket to one of the endpoint's addresses.
absl::StatusOr<int> Connect(const ServingEndpoint& endpoint, absl::Time deadline) {
  struct addrinfo hints = {};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  struct addrinfo* addresses = nullptr;
  const int resolved =
      getaddrinfo(endpoint.host.c_str(), endpoint.port.c_str(), &hints, &addresses);
  if (resolved != 0) {
    return absl::UnavailableError(
        absl::StrCat(endpoint.address, ": cannot resolve: ", gai_strerror(resolved)));
  }
  absl::Cleanup free_addresses = [addresses] { freeaddrinfo(addresses); };
  std::string last_error = "no address";
  for (struct addrinfo* a = addresses; a != nullptr; a = a->ai_next) {
    const int fd =
        socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      last_error = std::strerror(errno);
      continue;
    }
    if (connect(fd, a->ai_addr, a->ai_addrlen) == 0) return fd;
    if (errno == EINPROGRESS) {
      absl::Status writable = WaitFor(fd, POLLOUT, deadline, endpoint.address);
      int error = 0;
      socklen_t length = sizeof(error);
      if (writable.ok() && getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == 0 &&
          error == 0) {
        return fd;
      }
      last_error = writable.ok() ? std::strerror(error) : std::string(writable.message());
    } else {
      last_error = std::strerror(errno);
    }
    close(fd);
  }
  return absl::UnavailableError(absl::StrCat(endpoint.address, ": cannot connect: ", last_error));
}

}  // namespace

absl::StatusOr<ServingEndpoint> ParseServingEndpoint(const std::string& text) {
  ServingEndpoint endpoint;
  endpoint.address = text;
  std::string port;
  if (!text.empty() && text.front() == '[') {
    const size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return absl::InvalidArgumentError(absl::StrCat("--verify=", text, ": expected [IPv6]:PORT"));
    }
    endpoint.host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const size_t colon = text.rfind(':');
    if (colon == std::string::npos || text.find(':') != colon) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--verify=", text, ": expected HOST:PORT (an IPv6 address goes in brackets)"));
    }
    endpoint.host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  int number = 0;
  if (endpoint.host.empty() || !absl::SimpleAtoi(port, &number) || number < 1 || number > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--verify=", text, ": expected HOST:PORT with a port from 1 to 65535"));
  }
  endpoint.port = std::to_string(number);
  return endpoint;
}

absl::StatusOr<std::string> ServedLeafFingerprint(const ServingEndpoint& endpoint,
                                                  const std::string& server_name,
                                                  absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::StatusOr<int> connected = Connect(endpoint, deadline);
  if (!connected.ok()) return connected.status();
  const int fd = *connected;
  absl::Cleanup close_fd = [fd] { close(fd); };

  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> context(SSL_CTX_new(TLS_client_method()),
                                                            SSL_CTX_free);
  if (context == nullptr) return absl::InternalError("cannot create a TLS context");
  // The leaf is compared, not the chain: a private CA must not fail the check.
  SSL_CTX_set_verify(context.get(), SSL_VERIFY_NONE, nullptr);
  std::unique_ptr<SSL, decltype(&SSL_free)> ssl(SSL_new(context.get()), SSL_free);
  if (ssl == nullptr || SSL_set_fd(ssl.get(), fd) != 1) {
    return absl::InternalError("cannot create a TLS connection");
  }
  const std::string sni = server_name.empty() ? endpoint.host : server_name;
  if (!sni.empty() && !IsIpAddress(sni)) SSL_set_tlsext_host_name(ssl.get(), sni.c_str());
  while (true) {
    const int done = SSL_connect(ssl.get());
    if (done == 1) break;
    const int error = SSL_get_error(ssl.get(), done);
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      absl::Status ready =
          WaitFor(fd, error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, deadline, endpoint.address);
      if (!ready.ok()) return ready;
      continue;
    }
    return absl::UnavailableError(
        absl::StrCat(endpoint.address, ": TLS handshake failed: ", OpenSslError()));
  }
  std::unique_ptr<X509, decltype(&X509_free)> leaf(SSL_get1_peer_certificate(ssl.get()), X509_free);
  if (leaf == nullptr) {
    return absl::UnavailableError(absl::StrCat(endpoint.address, ": served no certificate"));
  }
  unsigned char* der = nullptr;
  const int length = i2d_X509(leaf.get(), &der);
  if (length <= 0) return absl::InternalError("cannot encode the served certificate");
  std::string fingerprint = Sha256Hex(absl::string_view(reinterpret_cast<char*>(der), length));
  OPENSSL_free(der);
  return fingerprint;  // no close_notify: closing the socket is enough for a probe
}

ServingVerifier::ServingVerifier(Options options, Probe probe)
    : options_(std::move(options)),
      probe_(probe != nullptr ? std::move(probe) : Probe(ServedLeafFingerprint)) {}

ServingVerifier::Result ServingVerifier::Check(const std::string& fingerprint) const {
  Result result;
  result.ok = true;
  for (const ServingEndpoint& endpoint : options_.endpoints) {
    EndpointResult checked;
    checked.address = endpoint.address;
    absl::StatusOr<std::string> served =
        probe_(endpoint, options_.server_name, options_.attempt_timeout);
    if (served.ok()) {
      checked.fingerprint = *served;
      checked.serves_expected = *served == fingerprint;
    } else {
      checked.error = served.status();
    }
    result.ok &= checked.serves_expected;
    result.endpoints.push_back(std::move(checked));
  }
  return result;
}

std::string ServingVerifier::Explain(const EndpointResult& result,
                                     const std::string& previous_fingerprint) {
  if (!result.error.ok()) {
    return absl::StrCat("written, but ", result.address,
                        " could not be checked: ", result.error.message());
  }
  if (!previous_fingerprint.empty() && result.fingerprint == previous_fingerprint) {
    return absl::StrCat("written, but ", result.address,
                        " still serves the previous certificate (fingerprint ", result.fingerprint,
                        ")");
  }
  return absl::StrCat("written, but ", result.address, " serves another certificate (fingerprint ",
                      result.fingerprint, ")");
}

}  // namespace certcast
