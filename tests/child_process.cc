#include "tests/child_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <regex>
#include <sstream>

#include "tests/test_subscriber.h"

extern char** environ;

namespace certcast::scenario {

std::string ReadFileOrEmpty(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

int PickFreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in address = {};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<struct sockaddr*>(&address), sizeof(address));
  socklen_t length = sizeof(address);
  getsockname(fd, reinterpret_cast<struct sockaddr*>(&address), &length);
  close(fd);
  return ntohs(address.sin_port);
}

ChildProcess::ChildProcess(const std::string& binary, const std::vector<std::string>& args,
                           const std::string& log_path)
    : log_path_(log_path) {
  std::vector<std::string> all = {binary};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : all) argv.push_back(arg.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 2, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0600);
  if (posix_spawn(&pid_, argv[0], &actions, nullptr, argv.data(), environ) != 0) pid_ = -1;
  posix_spawn_file_actions_destroy(&actions);
}

ChildProcess::~ChildProcess() {
  if (pid_ <= 0) return;
#if defined(__SANITIZE_ADDRESS__)
  // In the sanitized build the child gets SIGTERM first, so that it returns from main and
  // LeakSanitizer checks it at exit (a SIGKILLed process is never checked). SIGCONT in case a
  // test stopped it. SIGKILL only when it does not end in time.
  kill(pid_, SIGTERM);
  kill(pid_, SIGCONT);
  if (Wait(absl::Seconds(20)) != -1) return;
#endif
  kill(pid_, SIGKILL);
  Wait(absl::Seconds(10));
}

std::string ChildProcess::log() const { return ReadFileOrEmpty(log_path_); }

std::string ChildProcess::WaitForLog(const std::string& pattern, absl::Duration timeout) {
  const std::regex regex(pattern);
  std::string found;
  WaitFor(
      [&] {
        std::smatch match;
        const std::string text = log();
        if (std::regex_search(text, match, regex)) {
          found = match.size() > 1 ? match[1].str() : match[0].str();
          return true;
        }
        return Exited();
      },
      timeout);
  return found;
}

int ChildProcess::WaitForPort() {
  const std::string port = WaitForLog("listening on port ([0-9]+)");
  return port.empty() ? 0 : std::stoi(port);
}

bool ChildProcess::Exited() {
  if (pid_ <= 0) return true;
  int status = 0;
  if (waitpid(pid_, &status, WNOHANG) == pid_) {
    exit_status_ = status;
    pid_ = -1;
    return true;
  }
  return false;
}

int ChildProcess::Wait(absl::Duration timeout) {
  WaitFor([&] { return Exited(); }, timeout);
  return pid_ > 0 ? -1 : exit_status_;
}

void ChildProcess::Signal(int signal) {
  if (pid_ > 0) kill(pid_, signal);
}

}  // namespace certcast::scenario
