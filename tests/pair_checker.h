// PairChecker reads a kubelet-style certificate directory the way an application does (resolve
// `..data` once, open tls.crt and tls.key from there) on its own thread, over and over, and
// records every pair that is torn, mismatched or incomplete. Scenario tests run it while files
// are being replaced and assert that it found nothing.
//
// A read that fails because the version directory vanished is a retry only when `..data` moved
// on meanwhile (the writer removed the old version after the swap); when `..data` still names
// that directory, readers were pointed at an incomplete version, and that is a failure.
// Thread-safe; the destructor stops the thread.
#ifndef CERTCAST_TESTS_PAIR_CHECKER_H_
#define CERTCAST_TESTS_PAIR_CHECKER_H_

#include <atomic>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace certcast::scenario {

class PairChecker {
 public:
  // `dir` holds `..data`; `pairs` maps every chain that may legitimately appear to its key.
  PairChecker(std::string dir, std::map<std::string, std::string> pairs);
  ~PairChecker();
  PairChecker(const PairChecker&) = delete;
  PairChecker& operator=(const PairChecker&) = delete;

  void Stop();
  // Complete pairs read so far.
  int reads() const { return reads_.load(); }
  std::vector<std::string> failures();

 private:
  void Run();

  const std::string dir_;
  const std::map<std::string, std::string> pairs_;
  std::atomic<bool> stop_{false};
  std::atomic<int> reads_{0};
  absl::Mutex mu_;
  std::vector<std::string> failures_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

}  // namespace certcast::scenario

#endif  // CERTCAST_TESTS_PAIR_CHECKER_H_
