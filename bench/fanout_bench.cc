// certcast-fanout-bench: opens N Distribution/Subscribe streams with the gRPC callback API
// (one ClientBidiReactor per stream, no thread per stream) and measures either
//   --mode=idle      the server's RSS once every stream got its initial message, or
//   --mode=rotation  publish-to-every-client latency and server CPU per rotation round: the
//                    bench itself rotates a kubelet-style source directory (..data symlink).
//   --mode=watch-acks  opens no stream: polls Inspection/ListClients (paged) every
//                    --poll-interval until every connected client (at least --clients of them)
//                    acknowledged --version. With --source-dir and --next-material-dir it first
//                    waits for the current version, then runs --rounds rotation rounds and times
//                    rename -> "every client acknowledged the new version" as seen by the server.
//                    Used with real certcast-client processes (bench/run_clients.sh).
//
// Rotation rounds: round i's material is read from NEXT_MATERIAL_DIR/i/{tls.crt,tls.key,ca.crt}
// and copied into SOURCE_DIR/..round_<run>_<i>/; a symlink ..data_tmp is pointed at it, the
// bench waits --round-gap (so the server settles the inotify events of the preparation), reads
// the server's CPU time, takes t0 and renames ..data_tmp over ..data (what kubelet does). Each
// stream records when it receives the CertificateUpdate whose fingerprint is round i's leaf.
//
// Flags accept dashes or underscores (--server-pid or --server_pid).
#include <dirent.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <chrono>
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
ABSL_FLAG(int, clients, 1000, "Number of Subscribe streams.");
ABSL_FLAG(int, connections, 0,
          "Number of HTTP/2 connections (distinct channels); streams are spread round-robin. "
          "0 (default): one connection per client.");
ABSL_FLAG(std::string, certificate, "bench", "Certificate name to subscribe to.");
ABSL_FLAG(std::string, ns, "bench", "Namespace sent in the hello (also --namespace).");
ABSL_FLAG(std::string, tls_ca, "", "Root CA (PEM): use TLS with this root. Empty: plaintext.");
ABSL_FLAG(std::string, tls_server_name, "",
          "Override of the name checked against the server certificate (default: the target host).");
ABSL_FLAG(std::string, token_file, "",
          "File with a bearer token sent as `authorization: Bearer TOKEN` on every call (servers "
          "with identities and a policy require one over TLS). Empty: none.");
ABSL_FLAG(bool, ack, false, "Send an Ack for every CertificateUpdate.");
ABSL_FLAG(std::string, mode, "idle", "idle, rotation or watch-acks.");
ABSL_FLAG(uint64_t, version, 0,
          "watch-acks without --source-dir: the version every client must acknowledge (0: the "
          "server's current version of --certificate).");
ABSL_FLAG(absl::Duration, poll_interval, absl::Milliseconds(2),
          "watch-acks: start-to-start interval of the ListClients polls.");
ABSL_FLAG(int, page_size, 1000, "watch-acks: ListClients page size (the server's maximum is 1000).");
ABSL_FLAG(absl::Duration, wait_timeout, absl::Seconds(120),
          "watch-acks: give up waiting for the initial version after this long.");
ABSL_FLAG(int, rounds, 5, "Rotation rounds.");
ABSL_FLAG(std::string, source_dir, "", "The server's source directory for --certificate (rotation).");
ABSL_FLAG(std::string, next_material_dir, "",
          "Directory with one subdirectory per round, 1..ROUNDS, each holding tls.crt, tls.key and "
          "optionally ca.crt (rotation).");
ABSL_FLAG(int, server_pid, 0, "PID of certcast-server, for RSS and CPU readings (0: none).");
ABSL_FLAG(double, hold_seconds, 0, "Idle mode: keep the streams open this long after measuring.");
ABSL_FLAG(absl::Duration, settle, absl::Seconds(2),
          "Idle mode: wait this long after the last initial message before reading the RSS.");
ABSL_FLAG(absl::Duration, round_gap, absl::Seconds(1),
          "Rotation: pause between preparing a round's directory and the rename (must exceed the "
          "server's quiet period so the preparation's inotify events are settled first).");
ABSL_FLAG(absl::Duration, round_timeout, absl::Seconds(60),
          "Rotation: give up waiting for a round after this long.");
ABSL_FLAG(absl::Duration, cpu_settle, absl::Milliseconds(200),
          "Rotation: after the last client got the update, wait this long before reading the "
          "server's CPU time (acks and write completions are still being processed).");
ABSL_FLAG(int, connect_batch, 200,
          "Streams started at once; the next batch starts when the previous one got its initial "
          "messages (avoids overflowing the listen backlog).");

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
  double sched_seconds = 0;  // sum of /proc/PID/task/*/schedstat run time (ns, live threads only)
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
  sample.ticks_seconds = static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
  const std::string task_dir = absl::StrCat("/proc/", pid, "/task");
  if (DIR* dir = opendir(task_dir.c_str())) {
    unsigned long long ns = 0;
    while (struct dirent* entry = readdir(dir)) {
      if (entry->d_name[0] == '.') continue;
      std::ifstream in(absl::StrCat(task_dir, "/", entry->d_name, "/schedstat"));
      unsigned long long run = 0;
      if (in >> run) ns += run;
    }
    closedir(dir);
    sample.sched_seconds = static_cast<double>(ns) / 1e9;
  }
  return sample;
}

// VmRSS / VmHWM of the server in KiB.
long ReadStatusKb(int pid, const char* key) {
  if (pid <= 0) return -1;
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  const std::string prefix = absl::StrCat(key, ":");
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) return std::strtol(line.c_str() + prefix.size(), nullptr, 10);
  }
  return -1;
}

int ReadThreads(int pid) { return static_cast<int>(ReadStatusKb(pid, "Threads")); }

// --- the load generator ---------------------------------------------------------------------

struct RoundTarget {
  int round = 0;
  std::string fingerprint;
};

struct RoundMaterial {
  std::string crt, key, ca;
  RoundTarget target;
};

class Bench;

class Subscriber final
    : public grpc::ClientBidiReactor<v1::SubscribeRequest, v1::SubscribeResponse> {
 public:
  Subscriber(Bench* bench, int index) : bench_(bench), index_(index) {}

  void Start(v1::Distribution::Stub* stub, const std::string& ns, const std::string& certificate);
  void Cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

  int updates() const { return updates_.load(std::memory_order_relaxed); }

 private:
  void Send(v1::SubscribeRequest request);

  Bench* const bench_;
  const int index_;
  grpc::ClientContext context_;
  v1::SubscribeResponse response_;
  bool initial_seen_ = false;  // touched only by the single outstanding read
  int last_round_ = 0;
  std::atomic<int> updates_{0};

  std::mutex write_mu_;
  std::deque<v1::SubscribeRequest> queue_;  // guarded by write_mu_
  v1::SubscribeRequest writing_;            // the request of the write in flight
  bool write_in_flight_ = false;            // guarded by write_mu_
};

class Bench {
 public:
  explicit Bench(int clients) : receipt_ns_(static_cast<size_t>(clients), 0) {}

  // Waits until `count()` reaches `target` or the deadline passes. True when reached.
  bool WaitFor(const std::atomic<int>& counter, int target, absl::Duration timeout) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout),
                        [&] { return counter.load() >= target; });
  }
  void Notify() {
    std::lock_guard<std::mutex> lock(mu_);
    cv_.notify_all();
  }

  void SetRound(const RoundTarget* target) {
    round_received_.store(0);
    std::fill(receipt_ns_.begin(), receipt_ns_.end(), 0);
    target_.store(target, std::memory_order_release);
  }
  const RoundTarget* round() const { return target_.load(std::memory_order_acquire); }

  void Initial() {
    if (initial_.fetch_add(1) + 1 >= watch_initial_.load()) Notify();
  }
  void Received(int index, int64_t now_ns) {
    receipt_ns_[static_cast<size_t>(index)] = now_ns;
    if (round_received_.fetch_add(1, std::memory_order_acq_rel) + 1 >= watch_round_.load()) {
      Notify();
    }
  }
  void Ended(const grpc::Status& status, bool before_initial) {
    if (!status.ok() && !shutting_down_.load()) {
      const int n = failed_.fetch_add(1);
      if (n < 5) {
        std::fprintf(stderr, "stream ended: code %d: %s\n", static_cast<int>(status.error_code()),
                     status.error_message().c_str());
      }
    }
    if (before_initial) failed_before_initial_.fetch_add(1);
    ended_.fetch_add(1);
    Notify();
  }
  void Unexpected() { unexpected_.fetch_add(1, std::memory_order_relaxed); }

  std::atomic<int> initial_{0};
  std::atomic<int> watch_initial_{0};
  std::atomic<int> round_received_{0};
  std::atomic<int> watch_round_{0};
  std::atomic<int> failed_{0};
  std::atomic<int> failed_before_initial_{0};
  std::atomic<int> ended_{0};
  std::atomic<int> unexpected_{0};
  std::atomic<bool> shutting_down_{false};
  std::vector<int64_t> receipt_ns_;  // per client, for the current round

 private:
  std::atomic<const RoundTarget*> target_{nullptr};
  std::mutex mu_;
  std::condition_variable cv_;
};

void Subscriber::Start(v1::Distribution::Stub* stub, const std::string& ns,
                       const std::string& certificate) {
  Authorize(&context_);
  stub->async()->Subscribe(&context_, this);
  v1::SubscribeRequest hello;
  hello.mutable_hello()->set_client_id(absl::StrCat("bench-", index_));
  hello.mutable_hello()->set_namespace_(ns);
  v1::HeldCertificate* held = hello.mutable_hello()->add_certificates();
  held->set_name(certificate);  // version 0, no fingerprint: a new client
  Send(std::move(hello));
  StartRead(&response_);
  StartCall();
}

void Subscriber::Send(v1::SubscribeRequest request) {
  std::lock_guard<std::mutex> lock(write_mu_);
  if (write_in_flight_) {
    queue_.push_back(std::move(request));
    return;
  }
  write_in_flight_ = true;
  writing_ = std::move(request);
  StartWrite(&writing_);
}

void Subscriber::OnWriteDone(bool ok) {
  std::lock_guard<std::mutex> lock(write_mu_);
  write_in_flight_ = false;
  if (!ok) {
    queue_.clear();
    return;
  }
  if (queue_.empty()) return;
  write_in_flight_ = true;
  writing_ = std::move(queue_.front());
  queue_.pop_front();
  StartWrite(&writing_);
}

void Subscriber::OnReadDone(bool ok) {
  const int64_t now = NowNs();
  if (!ok) return;  // the stream is over; OnDone follows
  switch (response_.kind_case()) {
    case v1::SubscribeResponse::kHeartbeat:
      break;
    case v1::SubscribeResponse::kInSync:
      if (!initial_seen_) {
        initial_seen_ = true;
        bench_->Initial();
      }
      break;
    case v1::SubscribeResponse::kUpdate: {
      const v1::CertificateUpdate& update = response_.update();
      updates_.fetch_add(1, std::memory_order_relaxed);
      if (!initial_seen_) {
        initial_seen_ = true;
        bench_->Initial();
      } else if (const RoundTarget* target = bench_->round();
                 target != nullptr && target->round > last_round_ &&
                 update.fingerprint() == target->fingerprint) {
        last_round_ = target->round;
        bench_->Received(index_, now);
      } else {
        bench_->Unexpected();  // an update that is not the current round's
      }
      if (absl::GetFlag(FLAGS_ack)) {
        v1::SubscribeRequest ack;
        ack.mutable_ack()->set_name(update.name());
        ack.mutable_ack()->set_version(update.version());
        ack.mutable_ack()->set_nonce(update.nonce());
        Send(std::move(ack));
      }
      break;
    }
    case v1::SubscribeResponse::KIND_NOT_SET:
      break;
  }
  StartRead(&response_);
}

void Subscriber::OnDone(const grpc::Status& status) { bench_->Ended(status, !initial_seen_); }

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
  int connected = 0;          // connected clients subscribed to the certificate
  int acknowledged = 0;       // ... of which acknowledged_version == the wanted version
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
            if (held.sent_version() == version) snapshot.sent_at_ns.push_back(ToUnixNs(held.sent_at()));
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
    const bool done = WaitForAcks(
        stub.get(), ns, certificate, version, clients,
        start + absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_wait_timeout)), &snapshot, &seen,
        &poll_start, &polls);
    std::printf("# %s: %d connected client(s), %d acknowledged version %llu after %.1f ms "
                "(%d polls)\n",
                done ? "ready" : "TIMEOUT", snapshot.connected, snapshot.acknowledged,
                static_cast<unsigned long long>(version), static_cast<double>(seen - start) / 1e6,
                polls);
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
    const bool done = WaitForAcks(
        stub.get(), ns, certificate, expected, clients,
        t0 + absl::ToInt64Nanoseconds(absl::GetFlag(FLAGS_round_timeout)), &snapshot, &seen,
        &poll_start, &polls);
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
      "Fan-out load generator for certcast-server.\n"
      "  certcast-fanout-bench --target=127.0.0.1:PORT --clients=1000 --mode=idle --server-pid=PID\n"
      "  certcast-fanout-bench --target=... --mode=rotation --rounds=5 --source-dir=DIR "
      "--next-material-dir=DIR --server-pid=PID [--ack] [--tls-ca=ca.crt]\n"
      "  certcast-fanout-bench --target=... --mode=watch-acks --clients=N [--version=V | "
      "--rounds=5 --source-dir=DIR --next-material-dir=DIR]");
  NormalizeFlagNames(argc, argv);
  absl::ParseCommandLine(argc, argv);
  RaiseFileLimit();
  if (!absl::GetFlag(FLAGS_token_file).empty()) {
    std::string token = ReadFileOrDie(absl::GetFlag(FLAGS_token_file));
    while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) {
      token.pop_back();
    }
    g_authorization = absl::StrCat("Bearer ", token);
  }

  const int clients = absl::GetFlag(FLAGS_clients);
  const int connections =
      absl::GetFlag(FLAGS_connections) > 0 ? std::min(absl::GetFlag(FLAGS_connections), clients)
                                           : clients;
  const std::string mode = absl::GetFlag(FLAGS_mode);
  const int pid = absl::GetFlag(FLAGS_server_pid);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  if (clients <= 0) Die("--clients must be positive");
  if (mode != "idle" && mode != "rotation" && mode != "watch-acks") {
    Die("--mode must be idle, rotation or watch-acks");
  }

  // Rotation material, read (and fingerprinted) before any stream exists.
  std::vector<RoundMaterial> material;
  const std::string source_dir = absl::GetFlag(FLAGS_source_dir);
  if (mode == "rotation" || (mode == "watch-acks" && !source_dir.empty())) {
    if (source_dir.empty() || absl::GetFlag(FLAGS_next_material_dir).empty()) {
      Die("--mode=rotation needs --source-dir and --next-material-dir");
    }
    for (int r = 1; r <= rounds; ++r) {
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

  // Channels: a distinct channel argument per connection, and a local subchannel pool, so that
  // gRPC does not share one HTTP/2 connection among them.
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (absl::GetFlag(FLAGS_tls_ca).empty()) {
    credentials = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFileOrDie(absl::GetFlag(FLAGS_tls_ca));
    credentials = grpc::SslCredentials(ssl);
  }
  if (mode == "watch-acks") return WatchAcks(credentials, material, clients);
  std::vector<std::unique_ptr<v1::Distribution::Stub>> stubs;
  stubs.reserve(static_cast<size_t>(connections));
  for (int i = 0; i < connections; ++i) {
    grpc::ChannelArguments args;
    args.SetInt("certcast.bench.channel", i);
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    if (!absl::GetFlag(FLAGS_tls_server_name).empty()) {
      args.SetSslTargetNameOverride(absl::GetFlag(FLAGS_tls_server_name));
    }
    stubs.push_back(v1::Distribution::NewStub(
        grpc::CreateCustomChannel(absl::GetFlag(FLAGS_target), credentials, args)));
  }

  Bench bench(clients);
  std::vector<std::unique_ptr<Subscriber>> subscribers;
  subscribers.reserve(static_cast<size_t>(clients));
  const std::string ns = absl::GetFlag(FLAGS_ns);
  const std::string certificate = absl::GetFlag(FLAGS_certificate);
  const int batch = std::max(1, absl::GetFlag(FLAGS_connect_batch));
  const absl::Time connect_start = absl::Now();
  for (int started = 0; started < clients;) {
    const int upto = std::min(clients, started + batch);
    bench.watch_initial_.store(upto);
    for (int i = started; i < upto; ++i) {
      subscribers.push_back(std::make_unique<Subscriber>(&bench, i));
      subscribers.back()->Start(stubs[static_cast<size_t>(i % connections)].get(), ns, certificate);
    }
    started = upto;
    // Wait until every started stream got its initial message or failed.
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (bench.initial_.load() + bench.failed_before_initial_.load() < upto) {
      if (absl::Now() > deadline) Die(absl::StrCat("streams did not get their initial message: ",
                                                   bench.initial_.load(), " of ", upto));
      bench.WaitFor(bench.initial_, upto, absl::Milliseconds(100));
    }
  }
  const absl::Duration connect_time = absl::Now() - connect_start;
  const int connected = bench.initial_.load();
  std::printf("# %d/%d streams got their initial message over %d connection(s) in %.2f s "
              "(%s, %d failed)\n",
              connected, clients, connections, absl::ToDoubleSeconds(connect_time),
              absl::GetFlag(FLAGS_tls_ca).empty() ? "plaintext" : "TLS", bench.failed_.load());
  if (connected < clients) Die("not every stream connected");
  std::fflush(stdout);

  auto shutdown = [&](int code) {
    bench.shutting_down_.store(true);
    for (auto& s : subscribers) s->Cancel();
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (bench.ended_.load() < clients && absl::Now() < deadline) {
      bench.WaitFor(bench.ended_, clients, absl::Milliseconds(100));
    }
    std::fflush(stdout);
    std::_Exit(code);  // skip tearing down thousands of channels one by one
  };

  if (mode == "idle") {
    absl::SleepFor(absl::GetFlag(FLAGS_settle));
    const long rss = ReadStatusKb(pid, "VmRSS");
    const long hwm = ReadStatusKb(pid, "VmHWM");
    std::printf("RESULT mode=idle clients=%d connections=%d server_rss_kb=%ld server_hwm_kb=%ld "
                "server_threads=%d connect_s=%.2f\n",
                clients, connections, rss, hwm, ReadThreads(pid),
                absl::ToDoubleSeconds(connect_time));
    std::fflush(stdout);
    absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_hold_seconds)));
    shutdown(0);
  }

  // --- rotation ---
  const long rss_connected = ReadStatusKb(pid, "VmRSS");
  // Background CPU of the server with every stream idle, over one gap's length.
  const absl::Duration gap = absl::GetFlag(FLAGS_round_gap);
  const CpuSample idle_before = ReadCpu(pid);
  absl::SleepFor(gap);
  const CpuSample idle_after = ReadCpu(pid);
  std::printf("# server RSS with %d streams: %ld KiB; idle server CPU over %.2f s: %.1f ms (ticks), "
              "%.1f ms (schedstat)\n",
              clients, rss_connected, absl::ToDoubleSeconds(gap),
              1e3 * (idle_after.ticks_seconds - idle_before.ticks_seconds),
              1e3 * (idle_after.sched_seconds - idle_before.sched_seconds));
  std::printf("%-5s %8s %8s %9s %9s %9s %9s %12s %12s %13s %12s\n", "round", "received", "first_ms",
              "p50_ms", "p99_ms", "max_ms", "last_ms", "srv_cpu_ms", "srv_sched_ms",
              "us_per_push", "bench_cpu_ms");
  std::fflush(stdout);

  const std::string run = absl::StrCat(getpid(), "_", absl::ToUnixMillis(absl::Now()));
  double total_ticks = 0, total_sched = 0;
  std::vector<double> p50s, p99s, maxes, firsts;
  int incomplete = 0;
  for (int r = 1; r <= rounds; ++r) {
    RoundMaterial& m = material[static_cast<size_t>(r - 1)];
    const std::string round_dir_name = absl::StrCat("..round_", run, "_", r);
    const std::string round_dir = absl::StrCat(source_dir, "/", round_dir_name);
    if (mkdir(round_dir.c_str(), 0755) != 0) Die(absl::StrCat("mkdir ", round_dir, ": ", std::strerror(errno)));
    WriteFileOrDie(round_dir + "/tls.crt", m.crt);
    WriteFileOrDie(round_dir + "/tls.key", m.key);
    if (!m.ca.empty()) WriteFileOrDie(round_dir + "/ca.crt", m.ca);
    const std::string tmp_link = source_dir + "/..data_tmp";
    unlink(tmp_link.c_str());
    if (symlink(round_dir_name.c_str(), tmp_link.c_str()) != 0) {
      Die(absl::StrCat("symlink ", tmp_link, ": ", std::strerror(errno)));
    }
    absl::SleepFor(gap);  // the server sees and settles the preparation's events

    bench.watch_round_.store(clients);
    bench.SetRound(&m.target);
    struct rusage self_before;
    getrusage(RUSAGE_SELF, &self_before);
    const CpuSample cpu_before = ReadCpu(pid);
    const int64_t t0 = NowNs();
    if (rename(tmp_link.c_str(), (source_dir + "/..data").c_str()) != 0) {
      Die(absl::StrCat("rename ..data_tmp over ..data: ", std::strerror(errno)));
    }
    const bool complete =
        bench.WaitFor(bench.round_received_, clients, absl::GetFlag(FLAGS_round_timeout));
    absl::SleepFor(absl::GetFlag(FLAGS_cpu_settle));
    const CpuSample cpu_after = ReadCpu(pid);
    struct rusage self_after;
    getrusage(RUSAGE_SELF, &self_after);
    if (!complete) ++incomplete;

    std::vector<double> latencies;
    latencies.reserve(static_cast<size_t>(clients));
    int64_t last = 0;
    for (int64_t ns_at : bench.receipt_ns_) {
      if (ns_at == 0) continue;
      latencies.push_back(static_cast<double>(ns_at - t0) / 1e6);
      last = std::max(last, ns_at);
    }
    const int received = static_cast<int>(latencies.size());
    const double ticks = cpu_after.ticks_seconds - cpu_before.ticks_seconds;
    const double sched = cpu_after.sched_seconds - cpu_before.sched_seconds;
    auto cpu_of = [](const struct rusage& u) {
      return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
             static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
    };
    const double bench_cpu = cpu_of(self_after) - cpu_of(self_before);
    total_ticks += ticks;
    total_sched += sched;
    const double first = latencies.empty() ? 0 : *std::min_element(latencies.begin(), latencies.end());
    const double p50 = Percentile(latencies, 50), p99 = Percentile(latencies, 99);
    const double mx = latencies.empty() ? 0 : *std::max_element(latencies.begin(), latencies.end());
    p50s.push_back(p50);
    p99s.push_back(p99);
    maxes.push_back(mx);
    firsts.push_back(first);
    std::printf("%-5d %8d %8.1f %9.1f %9.1f %9.1f %9.1f %12.1f %12.1f %13.1f %12.1f\n", r, received,
                first, p50, p99, mx, last > 0 ? static_cast<double>(last - t0) / 1e6 : 0.0,
                ticks * 1e3, sched * 1e3, sched * 1e6 / clients, bench_cpu * 1e3);
    std::fflush(stdout);
  }
  auto median = [](std::vector<double> v) { return Percentile(std::move(v), 50); };
  const long rss_after = ReadStatusKb(pid, "VmRSS");
  std::printf(
      "RESULT mode=rotation clients=%d connections=%d rounds=%d incomplete_rounds=%d "
      "first_ms_median=%.1f p50_ms_median=%.1f p99_ms_median=%.1f p99_ms_max=%.1f max_ms_max=%.1f "
      "server_cpu_ms_per_round_ticks=%.1f server_cpu_ms_per_round_sched=%.1f "
      "us_per_push_ticks=%.2f us_per_push_sched=%.2f server_rss_kb_connected=%ld "
      "server_rss_kb_after=%ld unexpected_updates=%d failed_streams=%d ack=%d\n",
      clients, connections, rounds, incomplete, median(firsts), median(p50s), median(p99s),
      *std::max_element(p99s.begin(), p99s.end()), *std::max_element(maxes.begin(), maxes.end()),
      total_ticks * 1e3 / rounds, total_sched * 1e3 / rounds,
      total_ticks * 1e6 / (static_cast<double>(rounds) * clients),
      total_sched * 1e6 / (static_cast<double>(rounds) * clients), rss_connected, rss_after,
      bench.unexpected_.load(), bench.failed_.load(), absl::GetFlag(FLAGS_ack) ? 1 : 0);
  shutdown(incomplete == 0 ? 0 : 1);
}
