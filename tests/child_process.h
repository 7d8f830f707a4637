// A child process for tests that run the real binaries: spawned with posix_spawn, stderr to a
// log file, killed (SIGKILL; in the sanitized build SIGTERM first, so LeakSanitizer checks it at
// exit) and reaped by the destructor.
#ifndef CERTCAST_TESTS_CHILD_PROCESS_H_
#define CERTCAST_TESTS_CHILD_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/time/time.h"

namespace certcast::scenario {

class ChildProcess {
 public:
  ChildProcess(const std::string& binary, const std::vector<std::string>& args,
               const std::string& log_path);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Waits until the log matches `pattern` (ECMAScript regex) and returns its first capture
  // group (or the whole match); empty when the process exits or `timeout` passes first.
  std::string WaitForLog(const std::string& pattern, absl::Duration timeout = absl::Seconds(20));
  // The port from the server's "listening on port N" line, or 0.
  int WaitForPort();

  bool Exited();
  // Exit status as from waitpid, or -1 when still running after `timeout`.
  int Wait(absl::Duration timeout);
  void Signal(int signal);
  pid_t pid() const { return pid_; }
  std::string log() const;

 private:
  std::string log_path_;
  pid_t pid_ = -1;
  int exit_status_ = 0;
};

std::string ReadFileOrEmpty(const std::string& path);

// A TCP port on 127.0.0.1 that was free a moment ago (for servers that must keep their port
// across restarts).
int PickFreePort();

}  // namespace certcast::scenario

#endif  // CERTCAST_TESTS_CHILD_PROCESS_H_
