#include "common/process.h"

#include <pthread.h>
#include <sys/prctl.h>

#include <cstdio>

#include "absl/synchronization/mutex.h"

namespace certcast {

void HardenKeyHoldingProcess() {
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

sigset_t BlockControlSignals() {
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  return signals;
}

int FailStartup(const char* program, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", program, message.c_str());
  return 2;
}

}  // namespace certcast
