// Reload hooks run after a version was written: a command, or a signal to a process named by a
// pid file. A failing hook does not undo the write; the session reports it as a warning on the
// ACK. Thread-compatible; each hook is used from the session thread.
#ifndef CERTCAST_CLIENT_HOOKS_H_
#define CERTCAST_CLIENT_HOOKS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace certcast {

struct HookContext {
  std::string name;  // certificate name
  uint64_t version = 0;
  std::string fingerprint;
  std::string directory;  // where the files are (FileSink::LocationOf), may be empty
};

class Hook {
 public:
  virtual ~Hook() = default;
  // e.g. "on-update" or "signal"
  virtual std::string name() const = 0;
  // OK when the hook succeeded; otherwise an error whose message explains it (exit code,
  // timeout, missing pid file) for the ACK's warning.
  virtual absl::Status Run(const HookContext& context) = 0;
};

// Runs `/bin/sh -c COMMAND` with CERTCAST_CERTIFICATE, CERTCAST_VERSION, CERTCAST_FINGERPRINT and
// CERTCAST_DIR added to the environment. Kills the command's process group after `timeout`
// (DeadlineExceeded). A non-zero exit is Internal with the exit code and the last few hundred
// bytes of its output. Blocks until the command ends; uses no polling loop while waiting.
class CommandHook final : public Hook {
 public:
  explicit CommandHook(std::string command, absl::Duration timeout = absl::Seconds(30));
  std::string name() const override { return "on-update"; }
  absl::Status Run(const HookContext& context) override;

 private:
  const std::string command_;
  const absl::Duration timeout_;
};

// Sends `signal` to the process whose pid is in `pid_file` (read at every run, since the process
// may have restarted). NotFound when the file or process is missing, InvalidArgument when the
// file holds no pid.
class SignalHook final : public Hook {
 public:
  SignalHook(int signal, std::string pid_file) : signal_(signal), pid_file_(std::move(pid_file)) {}
  std::string name() const override { return "signal"; }
  absl::Status Run(const HookContext& context) override;

 private:
  const int signal_;
  const std::string pid_file_;
};

// "HUP", "SIGHUP", "hup" or "1" → SIGHUP. InvalidArgument for unknown names.
absl::StatusOr<int> ParseSignal(const std::string& text);

}  // namespace certcast

#endif  // CERTCAST_CLIENT_HOOKS_H_
