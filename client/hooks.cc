#include "client/hooks.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <csignal>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/filesystem.h"
#include "common/logging.h"
#include "common/status_macros.h"

extern char** environ;

namespace certcast {
namespace {

// How much of the command's output an error message carries.
constexpr size_t kOutputTail = 512;
// A line longer than this is logged in pieces.
constexpr size_t kMaxLogLine = 4096;

// Owns a file descriptor.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { Close(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // close(2) is not retried on EINTR: Linux releases the descriptor anyway.
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  void Reset(int fd) {
    Close();
    fd_ = fd;
  }

 private:
  int fd_;
};

absl::Status SysError(absl::string_view what) {
  return ErrnoToStatus(errno, "on-update command:", what);
}

// The child maps descriptors onto 0, 1 and 2; none of its sources may already sit there.
absl::Status MoveAbove2(Fd& fd) {
  if (fd.get() > 2) return absl::OkStatus();
  int moved = ::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3);
  if (moved < 0) return SysError("fcntl");
  fd.Reset(moved);
  return absl::OkStatus();
}

// Makes output safe for an error message, a log line and a protobuf string: printable ASCII,
// newlines and tabs; anything else becomes '?'.
std::string Printable(absl::string_view text) {
  std::string out(text);
  for (char& c : out) {
    const unsigned char u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\n' && c != '\t') || u >= 0x7f) c = '?';
  }
  return out;
}

// Collects the command's output: keeps its tail for the error and forwards lines to the debug log
// (not info: a command may print anything).
class OutputCollector {
 public:
  explicit OutputCollector(std::string certificate) : certificate_(std::move(certificate)) {}

  void Append(absl::string_view data) {
    tail_.append(data.data(), data.size());
    if (tail_.size() > kOutputTail) {
      tail_.erase(0, tail_.size() - kOutputTail);
      truncated_ = true;
    }
    for (char c : data) {
      if (c == '\n') {
        LogLine();
      } else {
        line_.push_back(c);
        if (line_.size() >= kMaxLogLine) LogLine();
      }
    }
  }

  // Logs a last line without newline.
  void Flush() {
    if (!line_.empty()) LogLine();
  }

  // The last bytes of output, trimmed, with "..." when earlier output was dropped.
  std::string Tail() const {
    std::string tail(absl::StripAsciiWhitespace(Printable(tail_)));
    if (truncated_ && !tail.empty()) tail = absl::StrCat("...", tail);
    return tail;
  }

 private:
  void LogLine() {
    LogDebug("on-update command output", {{"certificate", certificate_}, {"line", line_}});
    line_.clear();
  }

  const std::string certificate_;
  std::string tail_;
  bool truncated_ = false;
  std::string line_;
};

// The current environment with the CERTCAST_* variables of `context` set (replacing any
// inherited ones).
std::vector<std::string> CommandEnvironment(const HookContext& context) {
  const std::vector<std::pair<std::string, std::string>> ours = {
      {"CERTCAST_CERTIFICATE", context.name},
      {"CERTCAST_VERSION", absl::StrCat(context.version)},
      {"CERTCAST_FINGERPRINT", context.fingerprint},
      {"CERTCAST_DIR", context.directory},
  };
  std::vector<std::string> env;
  for (char** entry = environ; entry != nullptr && *entry != nullptr; ++entry) {
    const absl::string_view var = *entry;
    const bool replaced = std::any_of(ours.begin(), ours.end(), [&](const auto& kv) {
      return absl::StartsWith(var, absl::StrCat(kv.first, "="));
    });
    if (!replaced) env.emplace_back(var);
  }
  for (const auto& [key, value] : ours) env.push_back(absl::StrCat(key, "=", value));
  return env;
}

// dup2 that also works when `from == to` (then only clears FD_CLOEXEC). Async-signal-safe.
bool DupTo(int from, int to) {
  if (from == to) return ::fcntl(to, F_SETFD, 0) == 0;
  while (::dup2(from, to) < 0) {
    if (errno != EINTR) return false;
  }
  return true;
}

// Waits for `pid` to end; returns its wait status.
int Reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// Milliseconds until `deadline` for poll(2), rounded up so poll never wakes just before it.
int PollTimeoutMs(absl::Time deadline) {
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(std::min<int64_t>(
      absl::ToInt64Milliseconds(absl::Ceil(left, absl::Milliseconds(1))), INT_MAX));
}

// Reads what `pipe` has; closes it at end of file or on error.
void ReadOutput(Fd& pipe, OutputCollector& output) {
  char buf[4096];
  const ssize_t n = ::read(pipe.get(), buf, sizeof(buf));
  if (n > 0) {
    output.Append(absl::string_view(buf, static_cast<size_t>(n)));
  } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
    pipe.Close();
  }
}

// After the command exited, takes the output already in the pipe without waiting for a
// background process that may still hold it open.
void DrainOutput(Fd& pipe, OutputCollector& output) {
  while (pipe.valid()) {
    struct pollfd pfd = {pipe.get(), POLLIN, 0};
    const int ready = ::poll(&pfd, 1, 0);
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) return;
    ReadOutput(pipe, output);
  }
}

}  // namespace

CommandHook::CommandHook(std::string command, absl::Duration timeout)
    : command_(std::move(command)), timeout_(timeout) {}

absl::Status CommandHook::Run(const HookContext& context) {
  // Everything the child needs is prepared here: between fork and exec only async-signal-safe
  // calls are allowed (no allocation, no locks).
  std::vector<std::string> env = CommandEnvironment(context);
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (std::string& var : env) envp.push_back(var.data());
  envp.push_back(nullptr);
  std::string arg0 = "sh", arg1 = "-c", arg2 = command_;
  char* argv[] = {arg0.data(), arg1.data(), arg2.data(), nullptr};
  sigset_t empty_mask;
  sigemptyset(&empty_mask);
  struct sigaction default_action = {};
  default_action.sa_handler = SIG_DFL;
  sigemptyset(&default_action.sa_mask);

  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return SysError("pipe2");
  Fd out_read(pipe_fds[0]);
  Fd out_write(pipe_fds[1]);
  Fd dev_null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!dev_null.valid()) return SysError("open /dev/null");
  RETURN_IF_ERROR(MoveAbove2(out_write));
  RETURN_IF_ERROR(MoveAbove2(dev_null));

  const pid_t pid = ::fork();
  if (pid < 0) return SysError("fork");
  if (pid == 0) {
    // Child. Its own session and process group, so a timeout kills everything it started.
    ::setsid();
    if (!DupTo(dev_null.get(), 0) || !DupTo(out_write.get(), 1) || !DupTo(out_write.get(), 2)) {
      ::_exit(127);
    }
#ifdef SYS_close_range
    // Descriptors other threads opened without O_CLOEXEC stay with us (best effort, Linux 5.9+).
    ::syscall(SYS_close_range, 3U, ~0U, 0U);
#endif
    // The session thread's blocked or ignored signals must not leak into the command.
    ::sigprocmask(SIG_SETMASK, &empty_mask, nullptr);
    ::sigaction(SIGPIPE, &default_action, nullptr);
    ::execve("/bin/sh", argv, envp.data());
    ::_exit(127);
  }

  out_write.Close();
  dev_null.Close();
  const absl::Time deadline = absl::Now() + timeout_;
  OutputCollector output(context.name);
  Fd pid_fd;
#ifdef SYS_pidfd_open
  pid_fd.Reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));  // always close-on-exec
#endif
  int wait_status = 0;
  bool exited = false;
  absl::Duration nap = absl::Milliseconds(1);
  while (!exited && absl::Now() < deadline) {
    struct pollfd fds[2];
    nfds_t count = 0;
    int pipe_index = -1, pid_index = -1;
    if (out_read.valid()) {
      pipe_index = static_cast<int>(count);
      fds[count++] = {out_read.get(), POLLIN, 0};
    }
    if (pid_fd.valid()) {
      pid_index = static_cast<int>(count);
      fds[count++] = {pid_fd.get(), POLLIN, 0};
    }
    if (count == 0) {
      // No pidfd (kernel before 5.3) and the output is closed: nothing to block on, so check for
      // the exit with short, growing naps until the deadline. Reached only in that fallback.
      const pid_t done = ::waitpid(pid, &wait_status, WNOHANG);
      if (done == pid) {
        exited = true;
      } else if (done < 0 && errno != EINTR) {
        return SysError("waitpid");
      } else {
        absl::SleepFor(std::min(nap, deadline - absl::Now()));
        nap = std::min(nap * 2, absl::Milliseconds(50));
      }
      continue;
    }
    const int ready = ::poll(fds, count, PollTimeoutMs(deadline));
    if (ready < 0) {
      if (errno == EINTR) continue;
      const absl::Status error = SysError("poll");
      if (::kill(-pid, SIGKILL) != 0) ::kill(pid, SIGKILL);
      Reap(pid);
      return error;
    }
    if (pipe_index >= 0 && fds[pipe_index].revents != 0) ReadOutput(out_read, output);
    if (pid_index >= 0 && fds[pid_index].revents != 0) {
      wait_status = Reap(pid);
      exited = true;
    }
  }

  if (!exited) {
    // The group id is the child's pid; before its setsid() the group does not exist yet.
    if (::kill(-pid, SIGKILL) != 0) ::kill(pid, SIGKILL);
    Reap(pid);
    output.Flush();
    return absl::DeadlineExceededError(
        absl::StrCat("on-update command timed out after ", absl::FormatDuration(timeout_)));
  }
  DrainOutput(out_read, output);
  output.Flush();

  const std::string tail = output.Tail();
  const std::string suffix = tail.empty() ? "" : absl::StrCat(": ", tail);
  if (WIFEXITED(wait_status)) {
    const int code = WEXITSTATUS(wait_status);
    if (code == 0) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("on-update command exited with status ", code, suffix));
  }
  if (WIFSIGNALED(wait_status)) {
    return absl::InternalError(
        absl::StrCat("on-update command was killed by signal ", WTERMSIG(wait_status), suffix));
  }
  return absl::InternalError(
      absl::StrCat("on-update command ended with wait status ", wait_status, suffix));
}

absl::Status SignalHook::Run(const HookContext& context) {
  int raw_fd;
  do {
    raw_fd = ::open(pid_file_.c_str(), O_RDONLY | O_CLOEXEC);
  } while (raw_fd < 0 && errno == EINTR);
  if (raw_fd < 0) return ErrnoToStatus(errno, "open pid file", pid_file_);
  Fd fd(raw_fd);
  // A pid file is a few bytes; anything past this is not a pid anyway.
  std::string contents;
  char buf[256];
  while (contents.size() < 4096) {
    const ssize_t n = ::read(fd.get(), buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, "read pid file", pid_file_);
    }
    if (n == 0) break;
    contents.append(buf, static_cast<size_t>(n));
  }

  int pid = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(contents), &pid) || pid <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("pid file ", pid_file_, " holds no pid"));
  }
  if (::kill(pid, signal_) != 0) {
    const int err = errno;
    if (err == ESRCH) {
      return absl::NotFoundError(
          absl::StrCat("process ", pid, " from ", pid_file_, " is not running"));
    }
    if (err == EPERM) {
      return absl::PermissionDeniedError(
          absl::StrCat("not permitted to signal process ", pid, " from ", pid_file_));
    }
    return ErrnoToStatus(err, absl::StrCat("kill ", pid, " from"), pid_file_);
  }
  LogDebug(
      "signal sent",
      {{"certificate", context.name}, {"signal", signal_}, {"pid", pid}, {"pid_file", pid_file_}});
  return absl::OkStatus();
}

absl::StatusOr<int> ParseSignal(const std::string& text) {
  static constexpr std::pair<absl::string_view, int> kSignals[] = {
      {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT},   {"USR1", SIGUSR1},
      {"USR2", SIGUSR2}, {"TERM", SIGTERM}, {"KILL", SIGKILL},   {"ALRM", SIGALRM},
      {"CONT", SIGCONT}, {"STOP", SIGSTOP}, {"WINCH", SIGWINCH},
  };
  const std::string name = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(text));
  int number = 0;
  if (!name.empty() && absl::ascii_isdigit(name[0])) {
    if (absl::SimpleAtoi(name, &number) && number >= 1 && number <= 64) return number;
  } else {
    absl::string_view bare = name;
    absl::ConsumePrefix(&bare, "SIG");
    for (const auto& [signal_name, value] : kSignals) {
      if (bare == signal_name) return value;
    }
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown signal \"", text,
                   "\": use HUP, INT, QUIT, USR1, USR2, TERM, KILL, ALRM, CONT, STOP, "
                   "WINCH or a number from 1 to 64"));
}

}  // namespace certcast
