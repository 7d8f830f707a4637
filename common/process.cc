#include "common/process.h"

#include <malloc.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "absl/synchronization/mutex.h"
#include "common/build_info.h"
#include "common/flags_util.h"
#include "common/logging.h"

namespace certcast {

void HardenKeyHoldingProcess() {
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
}

void UseOneMallocArena() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  if (std::getenv("MALLOC_ARENA_MAX") != nullptr ||
      (tunables != nullptr && std::strstr(tunables, "glibc.malloc.arena_max") != nullptr)) {
    return;
  }
  mallopt(M_ARENA_MAX, 1);
}

void KeepOpenSslUntilExit() { OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, nullptr); }

long RaiseOpenFileLimit() {
  struct rlimit limit = {};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return -1;
  if (limit.rlim_cur < limit.rlim_max) {
    struct rlimit raised = limit;
    raised.rlim_cur = limit.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) limit = raised;
  }
  return static_cast<long>(limit.rlim_cur);
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

int FailStartup(absl::string_view program, absl::string_view message) {
  if (LogsAsJson()) {
    LogError(message, {{"program", program}, {"event", "startup_failed"}});
  } else {
    const std::string line = EscapeAndCap(message, kMaxMessageBytes);
    std::fprintf(stderr, "%.*s: %s\n", static_cast<int>(program.size()), program.data(),
                 line.c_str());
  }
  return 2;
}

std::optional<int> BeginCommandLine(int argc, char** argv, absl::string_view program,
                                    absl::FunctionRef<std::string()> help) {
  NormalizeFlagNames(argc, argv);
  if (WantsHelp(argc, argv)) {
    std::cout << help();
    return 0;
  }
  if (WantsVersion(argc, argv)) {
    std::cout << VersionLine(program) << "\n";
    return 0;
  }
  ConfigureLoggingFromArgv(argc, argv);
  if (absl::Status durations = CheckDurationFlags(argc, argv); !durations.ok()) {
    return FailStartup(program, durations.message());
  }
  return std::nullopt;
}

}  // namespace certcast
