#include "tests/pair_checker.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace certcast::scenario {
namespace {

// A broken writer fails on every read; the first few say enough.
constexpr size_t kMaxFailures = 100;

bool ReadWhole(const std::string& path, std::string* out) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buffer[8192];
  ssize_t n;
  out->clear();
  while ((n = read(fd, buffer, sizeof(buffer))) > 0) out->append(buffer, static_cast<size_t>(n));
  close(fd);
  return n == 0;
}

bool ReadLink(const std::string& path, std::string* target) {
  char buffer[4096];
  const ssize_t n = readlink(path.c_str(), buffer, sizeof(buffer));
  if (n <= 0) return false;
  target->assign(buffer, static_cast<size_t>(n));
  return true;
}

}  // namespace

PairChecker::PairChecker(std::string dir, std::map<std::string, std::string> pairs)
    : dir_(std::move(dir)), pairs_(std::move(pairs)) {
  thread_ = std::thread([this] { Run(); });
}

PairChecker::~PairChecker() { Stop(); }

void PairChecker::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

std::vector<std::string> PairChecker::failures() {
  absl::MutexLock lock(&mu_);
  return failures_;
}

void PairChecker::Run() {
  const std::string data_link = dir_ + "/..data";
  while (!stop_.load()) {
    // This loop never blocks: give the CPU away each round so the writer under test (and the
    // other test ctest -j2 runs on a two-core machine) are not starved.
    sched_yield();
    std::string target;
    if (!ReadLink(data_link, &target)) continue;  // nothing written yet
    const std::string base = absl::StartsWith(target, "/") ? target : dir_ + "/" + target;
    std::string chain, key;
    if (!ReadWhole(base + "/tls.crt", &chain) || !ReadWhole(base + "/tls.key", &key)) {
      std::string now;
      if (ReadLink(data_link, &now) && now == target) {
        absl::MutexLock lock(&mu_);
        if (failures_.size() < kMaxFailures)
          failures_.push_back(absl::StrCat("..data points at ", target,
                                           ", which lacks a readable tls.crt or tls.key"));
      }
      continue;  // else: the version was replaced and removed after the swap; read again
    }
    ++reads_;
    auto it = pairs_.find(chain);
    if (it == pairs_.end() || it->second != key) {
      absl::MutexLock lock(&mu_);
      if (failures_.size() < kMaxFailures)
        failures_.push_back(absl::StrCat("torn or mismatched pair in ", base, " (chain ",
                                         chain.size(), " bytes, key ", key.size(), " bytes)"));
    }
  }
}

}  // namespace certcast::scenario
