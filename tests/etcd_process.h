// A real etcd (Debian's etcd-server) for scenario tests: one member on 127.0.0.1, its data
// directory under the test's temporary directory, optionally serving TLS and requiring client
// certificates. etcd cannot bind port 0, so free ports are picked by binding first and the start
// is retried when another process took one meanwhile.
// Not thread-safe; one per test.
#ifndef CERTCAST_TESTS_ETCD_PROCESS_H_
#define CERTCAST_TESTS_ETCD_PROCESS_H_

#include <memory>
#include <string>

#include "tests/child_process.h"

namespace certcast::scenario {

struct EtcdTls {
  std::string cert_file;  // serving certificate (SAN localhost) and key
  std::string key_file;
  std::string client_ca_file;  // clients must present a certificate this CA verifies
};

class EtcdProcess {
 public:
  // `dir`: data directory and logs go below it. `tls`: empty cert_file for plaintext.
  EtcdProcess(std::string dir, EtcdTls tls = {});
  ~EtcdProcess();

  // Starts etcd and waits until it serves clients; false (with log()) when it does not.
  bool Start();
  // kill -9, as a crash.
  void Kill();
  // Starts again on the same ports with the same data.
  bool Restart() { return Launch(); }
  // HOST:PORT for --store (localhost, which the TLS certificate names).
  std::string endpoint() const;
  int port() const { return client_port_; }
  std::string log() const;
  // Whether the etcd binary is installed (scripts/install-deps.sh).
  static bool Installed();

 private:
  bool Launch();

  const std::string dir_;
  const EtcdTls tls_;
  int client_port_ = 0;
  int peer_port_ = 0;
  int starts_ = 0;
  std::string log_path_;
  std::unique_ptr<ChildProcess> process_;
};

}  // namespace certcast::scenario

#endif  // CERTCAST_TESTS_ETCD_PROCESS_H_
