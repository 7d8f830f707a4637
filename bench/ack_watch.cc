// certcast-ack-watch: what the server sees of real clients, for bench/run_clients.sh. Opens no
// stream: polls Inspection/ListClients (paged) every --poll-interval until every connected client
// (at least --clients of them) acknowledged --version. With --source-dir and --next-material-dir
// it first waits for the current version, then runs --rounds rotation rounds and times
// rename -> "every client acknowledged the new version" as seen by the server.
//
// Rotation rounds: round i's material is read from NEXT_MATERIAL_DIR/i/{tls.crt,tls.key,ca.crt}
// and copied into SOURCE_DIR/..round_<run>_<i>/; a symlink ..data_tmp is pointed at it, the
// tool waits --round-gap (so the server settles the inotify events of the preparation), reads
// the server's CPU time, takes t0 and renames ..data_tmp over ..data (what kubelet does).
//
// (The simulated-subscriber modes this tool had are bench/run and certcast-loadgen now.)
// Flags accept dashes or underscores (--server-pid or --server_pid).
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "certcast/v1/certcast.grpc.pb.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, target, "127.0.0.1:8443", "HOST:PORT of certcast-server.");
ABSL_FLAG(int, clients, 1000, "watch-acks: at least this many connected clients must acknowledge.");
ABSL_FLAG(std::string, certificate, "bench", "Certificate name to subscribe to.");
ABSL_FLAG(std::string, ns, "bench", "Namespace sent in the hello (also --namespace).");
ABSL_FLAG(std::string, tls_ca, "", "Root CA (PEM): use TLS with this root. Empty: plaintext.");
ABSL_FLAG(
    std::string, tls_server_name, "",
    "Override of the name checked against the server certificate (default: the target host).");
ABSL_FLAG(std::string, token_file, "",
          "File with a bearer token sent as `authorization: Bearer TOKEN` on every call (servers "
          "with identities and a policy require one over TLS). Empty: none.");
ABSL_FLAG(uint64_t, version, 0,
          "watch-acks without --source-dir: the version every client must acknowledge (0: the "
          "server's current version of --certificate).");
ABSL_FLAG(absl::Duration, poll_interval, absl::Milliseconds(2),
          "watch-acks: start-to-start interval of the ListClients polls.");
ABSL_FLAG(int, page_size, 1000,
          "watch-acks: ListClients page size (the server's maximum is 1000).");
ABSL_FLAG(absl::Duration, wait_timeout, absl::Seconds(120),
          "watch-acks: give up waiting for the initial version after this long.");
ABSL_FLAG(int, rounds, 5, "Rotation rounds.");
ABSL_FLAG(std::string, source_dir, "",
          "The server's source directory for --certificate (rotation).");
ABSL_FLAG(std::string, next_material_dir, "",
          "Directory with one subdirectory per round, 1..ROUNDS, each holding tls.crt, tls.key and "
          "optionally ca.crt (rotation).");
ABSL_FLAG(int, server_pid, 0, "PID of certcast-server, for RSS and CPU readings (0: none).");
ABSL_FLAG(absl::Duration, round_gap, absl::Seconds(1),
          "Rotation: pause between preparing a round's directory and the rename (must exceed the "
          "server's quiet period so the preparation's inotify events are settled first).");
ABSL_FLAG(absl::Duration, round_timeout, absl::Seconds(60),
          "Rotation: give up waiting for a round after this long.");

namespace {

namespace v1 = certcast::v1;
using Clock = std::chrono::steady_clock;

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

// "Bearer TOKEN" from --token-file, or empty; set once in main before any call.
std::string g_authorization;

void Authorize(grpc::ClientContext* context) {
  if (!g_authorization.empty()) context->AddMetadata("authorization", g_authorization);
}

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "certcast-fanout-bench: %s\n", message.c_str());
  std::fflush(stderr);
  std::_Exit(2);
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Die(absl::StrCat("cannot read ", path, ": ", std::strerror(errno)));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool FileExists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

void WriteFileOrDie(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  out.close();
  if (!out) Die(absl::StrCat("cannot write ", path));
}

// SHA-256 of the first certificate's DER in `pem`, lowercase hex (what certcast calls the
// fingerprint).
std::string LeafFingerprint(const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (cert == nullptr) Die("cannot parse the leaf certificate of a round");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  X509_digest(cert, EVP_sha256(), md, &len);
  X509_free(cert);
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) absl::StrAppendFormat(&hex, "%02x", md[i]);
  return hex;
}

// --- /proc readings -------------------------------------------------------------------------

struct CpuSample {
  double ticks_seconds = 0;  // utime+stime from /proc/PID/stat (USER_HZ resolution, all threads)
  // The process' CPU-time clock (ns; threads that ended included, which a sum of the live
  // threads' /proc/PID/task/*/schedstat, used before session 13, left out).
  double sched_seconds = 0;
};

CpuSample ReadCpu(int pid) {
  CpuSample sample;
  if (pid <= 0) return sample;
  const std::string stat = ReadFileOrDie(absl::StrCat("/proc/", pid, "/stat"));
  // Fields after the command name (which may hold spaces) start at "state" (field 3).
  const size_t close = stat.rfind(')');
  std::istringstream fields(stat.substr(close + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::strtoull(field.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(field.c_str(), nullptr, 10);
  }
  sample.ticks_seconds =
      static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
  clockid_t clock;
  timespec cpu{};
  if (clock_getcpuclockid(pid, &clock) == 0 && clock_gettime(clock, &cpu) == 0) {
    sample.sched_seconds = static_cast<double>(cpu.tv_sec) + static_cast<double>(cpu.tv_nsec) / 1e9;
  } else {
    sample.sched_seconds = sample.ticks_seconds;  // the coarser count rather than none
  }
  return sample;
}

struct RoundTarget {
  int round = 0;
  std::string fingerprint;
};

struct RoundMaterial {
  std::string crt, key, ca;
  RoundTarget target;
};

// --- statistics -----------------------------------------------------------------------------

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  // Nearest rank.
  size_t rank = static_cast<size_t>(std::ceil(p / 100.0 * static_cast<double>(values.size())));
  rank = std::max<size_t>(1, std::min(rank, values.size()));
  return values[rank - 1];
}

void RaiseFileLimit() {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  limit.rlim_cur = limit.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
    std::fprintf(stderr, "warning: cannot raise RLIMIT_NOFILE: %s\n", std::strerror(errno));
  }
  getrlimit(RLIMIT_NOFILE, &limit);
  std::printf("# RLIMIT_NOFILE=%llu\n", static_cast<unsigned long long>(limit.rlim_cur));
}

// Flags may be written with dashes (--server-pid); absl wants underscores.
void NormalizeFlagNames(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    char* arg = argv[i];
    if (std::strncmp(arg, "--", 2) != 0) continue;
    if (std::strcmp(arg, "--") == 0) break;
    if (std::strncmp(arg, "--namespace", 11) == 0 && (arg[11] == '=' || arg[11] == '\0')) {
      static std::string renamed;  // one --namespace flag at most is meaningful
      renamed = absl::StrCat("--ns", arg + 11);
      argv[i] = renamed.data();
      continue;
    }
    for (char* p = arg + 2; *p != '\0' && *p != '='; ++p) {
      if (*p == '-') *p = '_';
    }
  }
}

// --- watch-acks: what the server sees of real clients ---------------------------------------

int64_t ToUnixNs(const google::protobuf::Timestamp& t) {
  return t.seconds() * 1'000'000'000LL + t.nanos();
}

int64_t WallNs() { return absl::ToUnixNanos(absl::Now()); }

// One pass over every page of ListClients for --namespace and --certificate.
struct AckSnapshot {
  int connected = 0;     // connected clients subscribed to the certificate
  int acknowledged = 0;  // ... of which acknowledged_version == the wanted version
  int pages = 0;
  std::vector<int64_t> acknowledged_at_ns;  // server wall clock, per acknowledging client
  std::vector<int64_t> sent_at_ns;          // when the server pushed that version to it
  bool ok = true;
  std::string error;
};

AckSnapshot PollAcks(v1::Inspection::Stub* stub, const std::string& ns,
                     const std::string& certificate, uint64_t version, bool with_times) {
  AckSnapshot snapshot;
  std::string token;
  do {
    v1::ListClientsRequest request;
    request.set_page_size(static_cast<uint32_t>(absl::GetFlag(FLAGS_page_size)));
    request.set_page_token(token);
    request.set_namespace_(ns);
    request.set_name(certificate);
    v1::ListClientsResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    Authorize(&context);
    const grpc::Status status = stub->ListClients(&context, request, &response);
    if (!status.ok()) {
      snapshot.ok = false;
      snapshot.error = absl::StrCat("ListClients: code ", static_cast<int>(status.error_code()),
                                    ": ", status.error_message());
      return snapshot;
    }
    ++snapshot.pages;
    for (const v1::ClientInfo& client : response.clients()) {
      if (!client.connected()) continue;
      for (const v1::ClientCertificate& held : client.certificates()) {
        if (held.name() != certificate) continue;
        ++snapshot.connected;
        if (held.acknowledged_version() == version) {
          ++snapshot.acknowledged;
          if (with_times) {
            snapshot.acknowledged_at_ns.push_back(ToUnixNs(held.acknowledged_at()));
            if (held.sent_version() == version)
              snapshot.sent_at_ns.push_back(ToUnixNs(held.sent_at()));
          }
        }
      }
    }
    token = response.next_page_token();
  } while (!token.empty());
  return snapshot;
}

struct CurrentVersion {
  uint64_t version = 0;
  std::string fingerprint;
};

CurrentVersion ServerVersion(v1::Inspection::Stub* stub, const std::string& certificate) {
  v1::ListCertificatesResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  Authorize(&context);
  const grpc::Status status = stub->ListCertificates(&context, {}, &response);
  if (!status.ok()) Die(absl::StrCat("ListCertificates: ", status.error_message()));
  for (const v1::CertificateSummary& summary : response.certificates()) {
    if (summary.name() == certificate) return {summary.version(), summary.fingerprint()};
  }
  Die(absl::StrCat("the server does not distribute ", certificate));
}

// Polls every --poll-interval (start to start) until at least `clients` connected clients are
// subscribed and every one of them acknowledged `version`, or until `deadline`. Returns the
// final snapshot (with times) and sets *seen_ns to the steady-clock time its poll answered and
// *polls to the number of polls.
bool WaitForAcks(v1::Inspection::Stub* stub, const std::string& ns, const std::string& certificate,
                 uint64_t version, int clients, int64_t deadline_ns, AckSnapshot* final_snapshot,
                 int64_t* seen_ns, int64_t* poll_start_ns, int* polls) {
  const int64_t interval = absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_poll_interval));
  *polls = 0;
  int64_t next = NowNs();
  while (true) {
    const int64_t start = NowNs();
    AckSnapshot snapshot = PollAcks(stub, ns, certificate, version, /*with_times=*/false);
    const int64_t answered = NowNs();
    ++*polls;
    if (!snapshot.ok) Die(snapshot.error);
    if (snapshot.connected >= clients && snapshot.acknowledged == snapshot.connected) {
      *seen_ns = answered;
      *poll_start_ns = start;
      // Read the per-client timestamps once, outside the timed polls.
      *final_snapshot = PollAcks(stub, ns, certificate, version, /*with_times=*/true);
      return true;
    }
    if (answered > deadline_ns) {
      *final_snapshot = snapshot;
      return false;
    }
    next += interval;
    const int64_t now = NowNs();
    if (next > now) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(next - now));
    } else {
      next = now;  // a poll took longer than the interval: poll again at once
    }
  }
}

// Writes round r's material into SOURCE/..round_<run>_<r>/ and points ..data_tmp at it.
// Returns the path of ..data_tmp.
std::string PrepareRound(const std::string& source_dir, const std::string& run, int r,
                         const RoundMaterial& m) {
  const std::string round_dir_name = absl::StrCat("..round_", run, "_", r);
  const std::string round_dir = absl::StrCat(source_dir, "/", round_dir_name);
  if (mkdir(round_dir.c_str(), 0755) != 0) {
    Die(absl::StrCat("mkdir ", round_dir, ": ", std::strerror(errno)));
  }
  WriteFileOrDie(round_dir + "/tls.crt", m.crt);
  WriteFileOrDie(round_dir + "/tls.key", m.key);
  if (!m.ca.empty()) WriteFileOrDie(round_dir + "/ca.crt", m.ca);
  const std::string tmp_link = source_dir + "/..data_tmp";
  unlink(tmp_link.c_str());
  if (symlink(round_dir_name.c_str(), tmp_link.c_str()) != 0) {
    Die(absl::StrCat("symlink ", tmp_link, ": ", std::strerror(errno)));
  }
  return tmp_link;
}

int WatchAcks(const std::shared_ptr<grpc::ChannelCredentials>& credentials,
              const std::vector<RoundMaterial>& material, int clients) {
  grpc::ChannelArguments args;
  if (!absl::GetFlag(FLAGS_tls_server_name).empty()) {
    args.SetSslTargetNameOverride(absl::GetFlag(FLAGS_tls_server_name));
  }
  std::shared_ptr<grpc::Channel> channel =
      grpc::CreateCustomChannel(absl::GetFlag(FLAGS_target), credentials, args);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(10))) {
    Die(absl::StrCat("cannot connect to ", absl::GetFlag(FLAGS_target)));
  }
  std::unique_ptr<v1::Inspection::Stub> stub = v1::Inspection::NewStub(channel);
  const std::string ns = absl::GetFlag(FLAGS_ns);
  const std::string certificate = absl::GetFlag(FLAGS_certificate);
  const int pid = absl::GetFlag(FLAGS_server_pid);
  const std::string source_dir = absl::GetFlag(FLAGS_source_dir);

  // Phase 1: every client holds (and acknowledged) the version current now, or --version.
  uint64_t version = absl::GetFlag(FLAGS_version);
  if (version == 0 || !source_dir.empty()) version = ServerVersion(stub.get(), certificate).version;
  {
    const int64_t start = NowNs();
    AckSnapshot snapshot;
    int64_t seen = 0, poll_start = 0;
    int polls = 0;
    const bool done =
        WaitForAcks(stub.get(), ns, certificate, version, clients,
                    start + absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_wait_timeout)), &snapshot,
                    &seen, &poll_start, &polls);
    std::printf(
        "# %s: %d connected client(s), %d acknowledged version %llu after %.1f ms "
        "(%d polls)\n",
        done ? "ready" : "TIMEOUT", snapshot.connected, snapshot.acknowledged,
        static_cast<unsigned long long>(version), static_cast<double>(seen - start) / 1e6, polls);
    std::fflush(stdout);
    if (!done) return 1;
    if (source_dir.empty()) {
      std::printf("RESULT mode=watch-acks clients=%d connected=%d version=%llu wait_ms=%.1f\n",
                  clients, snapshot.connected, static_cast<unsigned long long>(version),
                  static_cast<double>(seen - start) / 1e6);
      return 0;
    }
  }

  // Phase 2: rotation rounds. t0 is the rename of ..data_tmp over ..data.
  const absl::Duration gap = absl::GetFlag(FLAGS_round_gap);
  const std::string run = absl::StrCat(getpid(), "_", absl::ToUnixMillis(absl::Now()));
  std::printf("%-5s %7s %8s %10s %9s %12s %12s %12s %12s %12s %6s %10s\n", "round", "version",
              "clients", "all_ack_ms", "poll_ms", "srv_last_ack", "srv_ack_p50", "srv_ack_min",
              "srv_push_min", "srv_push_max", "polls", "srv_cpu_ms");
  std::fflush(stdout);
  std::vector<double> observed, last_acks, p50_acks, first_pushes, last_pushes, poll_rtts;
  double total_cpu = 0;
  int incomplete = 0;
  for (int r = 1; r <= static_cast<int>(material.size()); ++r) {
    const RoundMaterial& m = material[static_cast<size_t>(r - 1)];
    const CurrentVersion before = ServerVersion(stub.get(), certificate);
    const std::string tmp_link = PrepareRound(source_dir, run, r, m);
    absl::SleepFor(gap);  // the server sees and settles the preparation's events
    const uint64_t expected = before.version + 1;
    const CpuSample cpu_before = ReadCpu(pid);
    const int64_t t0_wall = WallNs();
    const int64_t t0 = NowNs();
    if (rename(tmp_link.c_str(), (source_dir + "/..data").c_str()) != 0) {
      Die(absl::StrCat("rename ..data_tmp over ..data: ", std::strerror(errno)));
    }
    AckSnapshot snapshot;
    int64_t seen = 0, poll_start = 0;
    int polls = 0;
    const bool done = WaitForAcks(stub.get(), ns, certificate, expected, clients,
                                  t0 + absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_round_timeout)),
                                  &snapshot, &seen, &poll_start, &polls);
    const CpuSample cpu_after = ReadCpu(pid);
    const CurrentVersion after = ServerVersion(stub.get(), certificate);
    if (after.version != expected || after.fingerprint != m.target.fingerprint) {
      std::fprintf(stderr,
                   "round %d: the server's version is %llu (fingerprint %s), expected %llu (%s)\n",
                   r, static_cast<unsigned long long>(after.version), after.fingerprint.c_str(),
                   static_cast<unsigned long long>(expected), m.target.fingerprint.c_str());
    }
    if (!done) {
      ++incomplete;
      std::printf("%-5d %7llu TIMEOUT: %d of %d connected clients acknowledged\n", r,
                  static_cast<unsigned long long>(expected), snapshot.acknowledged,
                  snapshot.connected);
      std::fflush(stdout);
      continue;
    }
    auto rel = [t0_wall](int64_t unix_ns) { return static_cast<double>(unix_ns - t0_wall) / 1e6; };
    std::vector<double> acks, pushes;
    for (int64_t at : snapshot.acknowledged_at_ns) acks.push_back(rel(at));
    for (int64_t at : snapshot.sent_at_ns) pushes.push_back(rel(at));
    const double all_ack = static_cast<double>(seen - t0) / 1e6;
    const double poll_ms = static_cast<double>(seen - poll_start) / 1e6;
    const double last_ack = acks.empty() ? 0 : *std::max_element(acks.begin(), acks.end());
    const double first_ack = acks.empty() ? 0 : *std::min_element(acks.begin(), acks.end());
    const double p50_ack = Percentile(acks, 50);
    const double push_min = pushes.empty() ? 0 : *std::min_element(pushes.begin(), pushes.end());
    const double push_max = pushes.empty() ? 0 : *std::max_element(pushes.begin(), pushes.end());
    const double cpu_ms = 1e3 * (cpu_after.sched_seconds - cpu_before.sched_seconds);
    observed.push_back(all_ack);
    last_acks.push_back(last_ack);
    p50_acks.push_back(p50_ack);
    first_pushes.push_back(push_min);
    last_pushes.push_back(push_max);
    poll_rtts.push_back(poll_ms);
    total_cpu += cpu_ms;
    std::printf("%-5d %7llu %8d %10.1f %9.2f %12.1f %12.1f %12.1f %12.1f %12.1f %6d %10.1f\n", r,
                static_cast<unsigned long long>(expected), snapshot.connected, all_ack, poll_ms,
                last_ack, p50_ack, first_ack, push_min, push_max, polls, cpu_ms);
    std::fflush(stdout);
  }
  auto median = [](const std::vector<double>& v) { return Percentile(v, 50); };
  auto max_of = [](const std::vector<double>& v) {
    return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end());
  };
  std::printf(
      "RESULT mode=watch-acks clients=%d rounds=%zu incomplete_rounds=%d all_ack_ms_p50=%.1f "
      "all_ack_ms_max=%.1f srv_last_ack_ms_p50=%.1f srv_last_ack_ms_max=%.1f "
      "srv_client_ack_p50_ms_median=%.1f srv_first_push_ms_median=%.1f "
      "srv_last_push_ms_median=%.1f poll_ms_median=%.2f server_cpu_ms_per_round_sched=%.1f\n",
      clients, material.size(), incomplete, median(observed), max_of(observed), median(last_acks),
      max_of(last_acks), median(p50_acks), median(first_pushes), median(last_pushes),
      median(poll_rtts), observed.empty() ? 0.0 : total_cpu / static_cast<double>(observed.size()));
  std::fflush(stdout);
  return incomplete == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "What certcast-server sees of its clients' ACKs (bench/run_clients.sh).\n"
      "  certcast-ack-watch --target=... --clients=N [--version=V | --rounds=5 --source-dir=DIR "
      "--next-material-dir=DIR] [--server-pid=PID] [--tls-ca=ca.crt] [--token-file=FILE]");
  NormalizeFlagNames(argc, argv);
  absl::ParseCommandLine(argc, argv);
  RaiseFileLimit();
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    std::string token = ReadFileOrDie(absl::GetFlag(FLAGS_token_file));
    while (!token.empty() &&
           (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) {
      token.pop_back();
    }
    g_authorization = absl::StrCat("Bearer ", token);
  }
  const int clients = absl::GetFlag(FLAGS_clients);
  if (clients <= 0) Die("--clients must be positive");

  // Rotation material, read (and fingerprinted) before the first round.
  std::vector<RoundMaterial> material;
  const std::string source_dir = absl::GetFlag(FLAGS_source_dir);
  if (!source_dir.empty()) {
    if (absl::GetFlag(FLAGS_next_material_dir).empty()) {
      Die("--source-dir needs --next-material-dir");
    }
    for (int r = 1; r <= absl::GetFlag(FLAGS_rounds); ++r) {
      const std::string dir = absl::StrCat(absl::GetFlag(FLAGS_next_material_dir), "/", r);
      RoundMaterial m;
      m.crt = ReadFileOrDie(dir + "/tls.crt");
      m.key = ReadFileOrDie(dir + "/tls.key");
      if (FileExists(dir + "/ca.crt")) m.ca = ReadFileOrDie(dir + "/ca.crt");
      m.target.round = r;
      m.target.fingerprint = LeafFingerprint(m.crt);
      material.push_back(std::move(m));
    }
  }

  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (absl::GetFlag(FLAGS_tls_ca).empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFileOrDie(absl::GetFlag(FLAGS_tls_ca));
    credentials = grpc::SslCredentials(ssl);
  }
  return WatchAcks(credentials, material, clients);
}
