#include "client/hooks.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/filesystem.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fixtures/cert_factory.h"

namespace certcast {
namespace {

using ::certcast::fixtures::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

HookContext Context() {
  HookContext context;
  context.name = "web";
  context.version = 42;
  context.fingerprint = "ab12cd34";
  context.directory = "/var/run/certs/web";
  return context;
}

std::string ReadAll(const std::string& path) {
  PosixFilesystem fs;
  return fs.ReadFile(path).value_or("");
}

void WriteAll(const std::string& path, const std::string& contents) {
  PosixFilesystem fs;
  ASSERT_TRUE(fs.WriteFile(path, contents, 0644).ok());
}

pid_t ReadPid(const std::string& path) {
  int pid = 0;
  EXPECT_TRUE(absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadAll(path)), &pid)) << path;
  return pid;
}

// Whether `pid` is gone, or a zombie nobody reaps (an orphan in a container without init).
bool IsDead(pid_t pid) {
  if (::kill(pid, 0) != 0) return errno == ESRCH;
  const std::string stat = ReadAll(absl::StrCat("/proc/", pid, "/stat"));
  const size_t paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'Z';
}

// Waits, with a deadline, until `pid` is dead.
bool EventuallyDead(pid_t pid, absl::Duration deadline = absl::Seconds(5)) {
  const absl::Time end = absl::Now() + deadline;
  while (!IsDead(pid)) {
    if (absl::Now() > end) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return true;
}

// The command sees the certificate's name, version, fingerprint and directory, and keeps the
// client's own environment.
TEST(CommandHookTest, CommandSeesCertificateEnvironment) {
  TempDir tmp;
  const std::string out = tmp.Join("env");
  ASSERT_EQ(::setenv("CERTCAST_TEST_INHERITED", "kept", 1), 0);
  ASSERT_EQ(::setenv("CERTCAST_VERSION", "stale", 1), 0);  // overridden, not duplicated
  CommandHook hook(
      absl::StrCat("printf '%s|%s|%s|%s|%s\\n' \"$CERTCAST_CERTIFICATE\" \"$CERTCAST_VERSION\" "
                   "\"$CERTCAST_FINGERPRINT\" \"$CERTCAST_DIR\" \"$CERTCAST_TEST_INHERITED\" > ",
                   out));
  const absl::Status status = hook.Run(Context());
  ::unsetenv("CERTCAST_TEST_INHERITED");
  ::unsetenv("CERTCAST_VERSION");
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(ReadAll(out), "web|42|ab12cd34|/var/run/certs/web|kept\n");
}

// A failing command is Internal with its exit status and what it printed on stdout and stderr.
TEST(CommandHookTest, NonZeroExitReportsStatusAndOutput) {
  CommandHook hook("echo reloading; echo 'config test failed' >&2; exit 3");
  const absl::Status status = hook.Run(Context());
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_EQ(status.message(),
            "on-update command exited with status 3: reloading\nconfig test failed");
}

// Only the last part of a long output reaches the error message.
TEST(CommandHookTest, ErrorKeepsOnlyTheEndOfLongOutput) {
  CommandHook hook("i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); done; exit 1");
  const absl::Status status = hook.Run(Context());
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(status.message()), HasSubstr("line-199"));
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr("line-10\n")));
  EXPECT_LT(status.message().size(), 600u);
}

// A command that succeeds is OK; one that cannot be found is a failure (sh's status 127).
TEST(CommandHookTest, SuccessIsOkAndMissingProgramIsAnError) {
  EXPECT_TRUE(CommandHook("true").Run(Context()).ok());
  const absl::Status status = CommandHook("/nonexistent/reload-me").Run(Context());
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(status.message()),
              StartsWith("on-update command exited with status 127"));
}

// A command killed by a signal says which one.
TEST(CommandHookTest, KilledCommandReportsTheSignal) {
  const absl::Status status = CommandHook("kill -9 $$").Run(Context());
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(std::string(status.message()), HasSubstr("killed by signal 9"));
}

// A command that outlives its timeout is killed promptly, with everything it started, and the
// hook reports DeadlineExceeded.
TEST(CommandHookTest, TimeoutKillsTheCommandAndItsChildren) {
  TempDir tmp;
  const std::string pid_file = tmp.Join("pid");
  const std::string child_file = tmp.Join("child");
  CommandHook hook(absl::StrCat("sleep 30 & echo $! > ", child_file, "; echo $$ > ", pid_file,
                                "; exec sleep 30"),
                   absl::Milliseconds(200));
  const absl::Time start = absl::Now();
  const absl::Status status = hook.Run(Context());
  const absl::Duration took = absl::Now() - start;
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(status.message(), "on-update command timed out after 200ms");
  EXPECT_GE(took, absl::Milliseconds(200));
  EXPECT_LT(took, absl::Seconds(5));
  // The shell (exec'd into sleep) was reaped by the hook; its background sleep was killed too.
  const pid_t pid = ReadPid(pid_file);
  ASSERT_GT(pid, 0);
  EXPECT_NE(::kill(pid, 0), 0);
  const pid_t background = ReadPid(child_file);
  ASSERT_GT(background, 0);
  EXPECT_TRUE(EventuallyDead(background));
}

// A command that closes its output still cannot outlive the timeout.
TEST(CommandHookTest, TimeoutAppliesAfterOutputIsClosed) {
  CommandHook hook("exec >/dev/null 2>&1; exec sleep 30", absl::Milliseconds(200));
  const absl::Time start = absl::Now();
  EXPECT_EQ(hook.Run(Context()).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

// A command that leaves a background process holding its output open does not make the hook
// wait for that process.
TEST(CommandHookTest, BackgroundProcessDoesNotHoldTheHook) {
  TempDir tmp;
  const std::string child_file = tmp.Join("child");
  CommandHook hook(absl::StrCat("sleep 30 & echo $! > ", child_file, "; echo started"),
                   absl::Seconds(20));
  const absl::Time start = absl::Now();
  EXPECT_TRUE(hook.Run(Context()).ok());
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  const pid_t background = ReadPid(child_file);
  if (background > 0) ::kill(background, SIGKILL);
}

// The signal hook delivers the configured signal to the process named in the pid file.
TEST(SignalHookTest, DeliversSignalToProcessFromPidFile) {
  // Block SIGUSR1 before forking so the child cannot die of it before it starts waiting.
  sigset_t usr1, old_mask;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  ASSERT_EQ(::pthread_sigmask(SIG_BLOCK, &usr1, &old_mask), 0);
  const pid_t child = ::fork();
  if (child == 0) {
    const struct timespec timeout = {10, 0};
    ::_exit(::sigtimedwait(&usr1, nullptr, &timeout) == SIGUSR1 ? 0 : 1);
  }
  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ASSERT_GT(child, 0);

  TempDir tmp;
  WriteAll(tmp.Join("app.pid"), absl::StrCat(" ", child, "\n"));
  SignalHook hook(SIGUSR1, tmp.Join("app.pid"));
  const absl::Status status = hook.Run(Context());
  if (!status.ok()) ::kill(child, SIGKILL);
  EXPECT_TRUE(status.ok()) << status;
  int wait_status = 0;
  ASSERT_EQ(::waitpid(child, &wait_status, 0), child);
  ASSERT_TRUE(WIFEXITED(wait_status));
  EXPECT_EQ(WEXITSTATUS(wait_status), 0);  // it received SIGUSR1, not a timeout
}

// No pid file: NotFound naming the file.
TEST(SignalHookTest, MissingPidFileIsNotFound) {
  TempDir tmp;
  const absl::Status status = SignalHook(SIGHUP, tmp.Join("absent.pid")).Run(Context());
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr(tmp.Join("absent.pid")));
}

// A pid file without a positive number is InvalidArgument.
TEST(SignalHookTest, GarbagePidFileIsInvalidArgument) {
  TempDir tmp;
  const std::string path = tmp.Join("app.pid");
  for (const char* contents : {"", "  \n", "nginx", "12abc", "-5", "0", "99999999999"}) {
    WriteAll(path, contents);
    const absl::Status status = SignalHook(SIGHUP, path).Run(Context());
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << "\"" << contents << "\"";
    EXPECT_EQ(status.message(), absl::StrCat("pid file ", path, " holds no pid"));
  }
}

// A pid file naming a process that has exited is NotFound.
TEST(SignalHookTest, DeadProcessIsNotFound) {
  const pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  ASSERT_GT(child, 0);
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);
  TempDir tmp;
  WriteAll(tmp.Join("app.pid"), absl::StrCat(child));
  const absl::Status status = SignalHook(SIGHUP, tmp.Join("app.pid")).Run(Context());
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(),
            absl::StrCat("process ", child, " from ", tmp.Join("app.pid"), " is not running"));
}

// Signalling a process of another user is PermissionDenied (signal 0 probes without effect).
// As root, the check runs in a child that drops to the unprivileged "nobody" user first.
TEST(SignalHookTest, ForeignProcessIsPermissionDenied) {
  TempDir tmp;
  ASSERT_EQ(::chmod(tmp.path().c_str(), 0755), 0);
  WriteAll(tmp.Join("init.pid"), "1");
  ASSERT_EQ(::chmod(tmp.Join("init.pid").c_str(), 0644), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    if (::geteuid() == 0 && (::setgid(65534) != 0 || ::setuid(65534) != 0)) ::_exit(2);
    const absl::Status status = SignalHook(0, tmp.Join("init.pid")).Run(Context());
    ::_exit(status.code() == absl::StatusCode::kPermissionDenied ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: another code than PermissionDenied; 2: cannot drop root";
}

// Signal names with or without SIG, in any case, and numbers 1..64 are accepted.
TEST(ParseSignalTest, AcceptsNamesAndNumbers) {
  EXPECT_EQ(ParseSignal("HUP").value(), SIGHUP);
  EXPECT_EQ(ParseSignal("SIGHUP").value(), SIGHUP);
  EXPECT_EQ(ParseSignal("hup").value(), SIGHUP);
  EXPECT_EQ(ParseSignal("SigUsr1").value(), SIGUSR1);
  EXPECT_EQ(ParseSignal("usr2").value(), SIGUSR2);
  EXPECT_EQ(ParseSignal("TERM").value(), SIGTERM);
  EXPECT_EQ(ParseSignal("int").value(), SIGINT);
  EXPECT_EQ(ParseSignal("QUIT").value(), SIGQUIT);
  EXPECT_EQ(ParseSignal("KILL").value(), SIGKILL);
  EXPECT_EQ(ParseSignal("ALRM").value(), SIGALRM);
  EXPECT_EQ(ParseSignal("CONT").value(), SIGCONT);
  EXPECT_EQ(ParseSignal("STOP").value(), SIGSTOP);
  EXPECT_EQ(ParseSignal("SIGWINCH").value(), SIGWINCH);
  EXPECT_EQ(ParseSignal("1").value(), 1);
  EXPECT_EQ(ParseSignal("15").value(), 15);
  EXPECT_EQ(ParseSignal("64").value(), 64);
}

// Anything else is InvalidArgument.
TEST(ParseSignalTest, RejectsUnknownSignals) {
  for (const char* text : {"", "FOO", "SIG", "SIGSIGHUP", "0", "65", "-1", "1x", "HUP1"}) {
    EXPECT_EQ(ParseSignal(text).status().code(), absl::StatusCode::kInvalidArgument) << text;
  }
}

}  // namespace
}  // namespace certcast
