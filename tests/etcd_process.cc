#include "tests/etcd_process.h"

#include <signal.h>
#include <unistd.h>

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace certcast::scenario {
namespace {

constexpr char kEtcd[] = "/usr/bin/etcd";

}  // namespace

EtcdProcess::EtcdProcess(std::string dir, EtcdTls tls)
    : dir_(std::move(dir)), tls_(std::move(tls)) {}

EtcdProcess::~EtcdProcess() { Kill(); }

bool EtcdProcess::Installed() { return access(kEtcd, X_OK) == 0; }

bool EtcdProcess::Start() {
  for (int attempt = 0; attempt < 5; ++attempt) {
    client_port_ = PickFreePort();
    peer_port_ = PickFreePort();
    if (client_port_ == peer_port_) continue;
    if (Launch()) return true;
  }
  return false;
}

bool EtcdProcess::Launch() {
  Kill();
  const std::string scheme = tls_.cert_file.empty() ? "http" : "https";
  const std::string client_url = absl::StrCat(scheme, "://127.0.0.1:", client_port_);
  const std::string peer_url = absl::StrCat("http://127.0.0.1:", peer_port_);
  std::vector<std::string> args = {"--name=test",
                                   "--data-dir=" + dir_ + "/data",
                                   "--listen-client-urls=" + client_url,
                                   "--advertise-client-urls=" + client_url,
                                   "--listen-peer-urls=" + peer_url,
                                   "--initial-advertise-peer-urls=" + peer_url,
                                   "--initial-cluster=test=" + peer_url,
                                   "--logger=zap",
                                   "--log-outputs=stderr",
                                   "--log-level=info"};
  if (!tls_.cert_file.empty()) {
    args.push_back("--cert-file=" + tls_.cert_file);
    args.push_back("--key-file=" + tls_.key_file);
    if (!tls_.client_ca_file.empty()) {
      args.push_back("--client-cert-auth");
      args.push_back("--trusted-ca-file=" + tls_.client_ca_file);
    }
  }
  log_path_ = absl::StrCat(dir_, "/etcd", ++starts_, ".log");
  process_ = std::make_unique<ChildProcess>(kEtcd, args, log_path_);
  return !process_->WaitForLog("serving client traffic", absl::Seconds(30)).empty();
}

void EtcdProcess::Kill() {
  if (process_ == nullptr) return;
  process_->Signal(SIGKILL);
  process_->Wait(absl::Seconds(10));
  process_.reset();
}

std::string EtcdProcess::endpoint() const { return absl::StrCat("localhost:", client_port_); }

std::string EtcdProcess::log() const { return ReadFileOrEmpty(log_path_); }

}  // namespace certcast::scenario
