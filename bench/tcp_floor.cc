// certcast-tcp-floor: what one push costs a server on this machine when it does nothing but the
// system calls, no gRPC, no HTTP/2, no TLS. It is the floor under bench/run's "CPU per push".
//
// A server process accepts --connections TCP connections on loopback from --processes client
// processes (forked, one epoll loop each). Each round the server writes --payload bytes to every
// connection (one write each); a client that has read them answers with --ack bytes; after
// reading an ACK the server writes --reply bytes back (gRPC 1.51 answers each received message
// with a WINDOW_UPDATE frame in a write of its own; --reply=0 leaves it out). The round ends when
// the server has read every ACK. One unmeasured round first, then --rounds measured ones.
//
// Reported per round, as bench/run reports certcast's: the server's CPU (utime + stime of the
// process, all --server-threads threads) divided by the connections, and the time from the
// round's first write to its last ACK. Output: a table on stdout and, with --json, a file.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

ABSL_FLAG(int, connections, 1000, "Connections, one per simulated client.");
ABSL_FLAG(int, rounds, 5, "Measured rounds (after one unmeasured round).");
ABSL_FLAG(int, payload, 5120, "Bytes the server writes to each connection per round.");
ABSL_FLAG(int, ack, 16, "Bytes each client writes back once it has the payload.");
ABSL_FLAG(int, reply, 17, "Bytes the server writes after each ACK (0: none).");
ABSL_FLAG(int, processes, 4, "Client processes.");
ABSL_FLAG(int, server_threads, 2, "Server threads; each owns every n-th connection.");
ABSL_FLAG(std::string, json, "", "Also write the results to this file.");

namespace {

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "certcast-tcp-floor: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

void RaiseFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) Die("getrlimit");
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) Die("setrlimit");
}

// Writes all of `size` bytes, waiting for room if the socket is non-blocking and full.
void WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t n = write(fd, data, size);
    if (n > 0) {
      data += n;
      size -= static_cast<size_t>(n);
    } else if (n < 0 && errno == EAGAIN) {
      pollfd p{fd, POLLOUT, 0};
      poll(&p, 1, -1);
    } else if (!(n < 0 && errno == EINTR)) {
      Die("write");
    }
  }
}

// One client process: `count` connections to `port`, each answering every payload with an ACK
// and discarding the server's reply. Returns when the server has closed them all.
void RunClients(int port, int count, int payload, int ack, int reply) {
  const int epoll_fd = epoll_create1(0);
  if (epoll_fd < 0) Die("epoll_create1");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // By fd: bytes of the current round so far, and whether its ACK went out.
  std::vector<int> received;
  std::vector<bool> acked;
  int open = 0;
  for (int i = 0; i < count; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) Die("socket");
    if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) Die("connect");
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (static_cast<size_t>(fd) >= received.size()) {
      received.resize(static_cast<size_t>(fd) + 1);
      acked.resize(static_cast<size_t>(fd) + 1);
    }
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = fd;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0) Die("epoll_ctl");
    ++open;
  }
  const std::string ack_bytes(static_cast<size_t>(ack), 'a');
  std::vector<char> buffer(65536);
  std::vector<epoll_event> events(256);
  while (open > 0) {
    const int ready = epoll_wait(epoll_fd, events.data(), static_cast<int>(events.size()), -1);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) Die("epoll_wait");
    for (int e = 0; e < ready; ++e) {
      const int fd = events[static_cast<size_t>(e)].data.fd;
      const ssize_t n = read(fd, buffer.data(), buffer.size());
      if (n <= 0) {
        close(fd);
        --open;
        continue;
      }
      int& got = received[static_cast<size_t>(fd)];
      got += static_cast<int>(n);
      // One read may end a round's reply and begin the next round's payload (on a busy machine
      // the reply is read late), so the bytes are taken as a stream, round by round.
      while (true) {
        if (!acked[static_cast<size_t>(fd)] && got >= payload) {
          WriteAll(fd, ack_bytes.data(), ack_bytes.size());
          acked[static_cast<size_t>(fd)] = true;
        }
        if (!acked[static_cast<size_t>(fd)] || got < payload + reply) break;
        got -= payload + reply;
        acked[static_cast<size_t>(fd)] = false;
      }
    }
  }
  close(epoll_fd);
}

// The connections one server thread owns, registered once with its own epoll instance.
struct Share {
  int epoll_fd = -1;
  std::vector<int> fds;
};

void Register(Share& share, int fd) {
  if (share.epoll_fd < 0 && (share.epoll_fd = epoll_create1(0)) < 0) Die("epoll_create1");
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.fd = fd;
  if (epoll_ctl(share.epoll_fd, EPOLL_CTL_ADD, fd, &event) != 0) Die("epoll_ctl");
  share.fds.push_back(fd);
}

// One thread's part of a round: write the payload to each of its connections, then read one ACK
// from each (and answer it with the reply). Between rounds the connections are silent.
void ServeRound(const Share& share, const std::string& payload, int ack, const std::string& reply) {
  for (const int fd : share.fds) WriteAll(fd, payload.data(), payload.size());
  size_t acked = 0;
  std::vector<char> buffer(static_cast<size_t>(ack));
  std::vector<epoll_event> events(256);
  while (acked < share.fds.size()) {
    const int ready =
        epoll_wait(share.epoll_fd, events.data(), static_cast<int>(events.size()), -1);
    if (ready < 0 && errno == EINTR) continue;
    if (ready < 0) Die("epoll_wait");
    for (int e = 0; e < ready; ++e) {
      const int fd = events[static_cast<size_t>(e)].data.fd;
      // Loopback delivers the client's single small write whole.
      const ssize_t n = read(fd, buffer.data(), buffer.size());
      if (n != ack) Die(absl::StrCat("an ACK of ", n, " bytes instead of ", ack));
      if (!reply.empty()) WriteAll(fd, reply.data(), reply.size());
      ++acked;
    }
  }
}

double CpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto seconds = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return seconds(usage.ru_utime) + seconds(usage.ru_stime);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "certcast-tcp-floor [--connections=N] [--rounds=R] [--reply=BYTES] [--json=FILE]\n"
      "The server CPU per push of plain TCP writes and reads on loopback: the floor under\n"
      "bench/run's figure (see the header of bench/tcp_floor.cc).");
  absl::ParseCommandLine(argc, argv);
  const int connections = absl::GetFlag(FLAGS_connections);
  const int processes = std::max(1, absl::GetFlag(FLAGS_processes));
  const int threads = std::max(1, absl::GetFlag(FLAGS_server_threads));
  const int payload_size = absl::GetFlag(FLAGS_payload);
  const int ack = absl::GetFlag(FLAGS_ack);
  const int reply_size = absl::GetFlag(FLAGS_reply);
  if (connections < 1 || payload_size < 1 || ack < 1 || reply_size < 0) {
    std::fprintf(stderr,
                 "certcast-tcp-floor: --connections, --payload and --ack must be > 0, "
                 "--reply >= 0\n");
    return 2;
  }
  RaiseFileLimit();

  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  if (listener < 0) Die("socket");
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof(address);
  if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0) Die("bind");
  if (listen(listener, 65535) != 0) Die("listen");
  if (getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
    Die("getsockname");
  }
  const int port = ntohs(address.sin_port);

  std::vector<pid_t> children;
  for (int p = 0; p < processes; ++p) {
    const int share = connections / processes + (p < connections % processes ? 1 : 0);
    const pid_t pid = fork();
    if (pid < 0) Die("fork");
    if (pid == 0) {
      close(listener);
      RunClients(port, share, payload_size, ack, reply_size);
      _exit(0);
    }
    children.push_back(pid);
  }

  std::vector<Share> owned(static_cast<size_t>(threads));
  for (int i = 0; i < connections; ++i) {
    const int fd = accept(listener, nullptr, nullptr);
    if (fd < 0) Die("accept");
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    Register(owned[static_cast<size_t>(i % threads)], fd);
  }

  const std::string payload(static_cast<size_t>(payload_size), 'p');
  const std::string reply(static_cast<size_t>(reply_size), 'w');
  const int rounds = std::max(1, absl::GetFlag(FLAGS_rounds));
  std::vector<double> cpu;   // per push, by measured round (us)
  std::vector<double> wall;  // first write to last ACK, by measured round (ms)
  for (int r = 0; r <= rounds; ++r) {
    const double cpu_before = CpuSeconds();
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> workers;
    for (const Share& share : owned) {
      workers.emplace_back(ServeRound, std::cref(share), std::cref(payload), ack, std::cref(reply));
    }
    for (auto& worker : workers) worker.join();
    const std::chrono::duration<double, std::milli> elapsed =
        std::chrono::steady_clock::now() - start;
    const double cpu_us = (CpuSeconds() - cpu_before) * 1e6;
    if (r == 0) continue;  // unmeasured
    cpu.push_back(cpu_us / connections);
    wall.push_back(elapsed.count());
  }

  for (const Share& share : owned) {
    for (const int fd : share.fds) close(fd);
    close(share.epoll_fd);
  }
  for (const pid_t pid : children) waitpid(pid, nullptr, 0);

  std::vector<double> sorted = cpu;
  std::sort(sorted.begin(), sorted.end());
  const double median = sorted[sorted.size() / 2];
  double total = 0;
  for (const double c : cpu) total += c;
  const double mean = total / static_cast<double>(cpu.size());
  auto fixed = [](double v) { return absl::StrCat(static_cast<int64_t>(v * 10 + 0.5) / 10.0); };
  auto list = [&](const std::vector<double>& values) {
    std::vector<std::string> parts;
    for (const double v : values) parts.push_back(fixed(v));
    return absl::StrJoin(parts, ", ");
  };
  std::printf(
      "connections %d, payload %d B, ACK %d B, reply %d B, %d server thread(s), %d client "
      "processes\n",
      connections, payload_size, ack, reply_size, threads, processes);
  std::printf("server CPU per push (us), by round: %s; mean %s, median %s\n", list(cpu).c_str(),
              fixed(mean).c_str(), fixed(median).c_str());
  std::printf("first write to last ACK (ms), by round: %s\n", list(wall).c_str());

  const std::string json_path = absl::GetFlag(FLAGS_json);
  if (!json_path.empty()) {
    std::ofstream out(json_path);
    out << "{\"connections\": " << connections << ", \"payload\": " << payload_size
        << ", \"ack\": " << ack << ", \"reply\": " << reply_size
        << ", \"server_threads\": " << threads << ", \"processes\": " << processes
        << ", \"cpu_us_per_push\": [" << list(cpu) << "], \"cpu_us_per_push_mean\": " << fixed(mean)
        << ", \"round_ms\": [" << list(wall) << "]}\n";
    if (!out) Die("writing " + json_path);
  }
  return 0;
}
