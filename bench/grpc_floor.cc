// certcast-grpc-floor: what one push costs a bare gRPC 1.51 server on this machine, with the wire
// protocol certcast speaks and none of certcast's own work (no identities, policy, fleet,
// versions, heartbeats). It sits between certcast-tcp-floor (bare TCP) and bench/run (the real
// server), so a per-push figure can be split into what the kernel, gRPC and certcast each take.
//
// The server serves Distribution/Subscribe as raw bytes, as certcast-server does, with its channel
// arguments, abseil's deadlock detection off and, with --tls_dir, its TLS record buffers
// released while empty (server/tls_buffers.cc, linked in here too). Clients are certcast-loadgen
// subscriber processes (the ones bench/run starts): each sends a hello and is answered with an
// InSync; each round the server writes one pre-serialized ~5 KB CertificateUpdate to every stream,
// reads the ACK it is owed, and the round ends when every ACK is in. As in certcast-server, a
// stream reads only while an answer is owed (bench/README.md, optimization 15). One unmeasured
// round first, then --rounds measured ones.
//
// --api=callback  one reactor per stream (what certcast-server uses); a round's writes are started
//                 by --threads threads, each for a contiguous share of the streams, kept from one
//                 round to the next, as the hub does (server/fan_out_pool.h).
// --api=async     the completion-queue API: --threads queues, each with one thread that owns its
//                 streams, starts their writes and handles their completions. A write's completion
//                 lands on the queue of the thread that started it, so no other thread is woken
//                 for it; with the callback API every completion goes through gRPC's one callback
//                 queue and its "nexting" threads.
//
// Reported: the server's CPU per push (utime + stime of this process; the load generators are
// other processes), the round's time from the first write to the last ACK, and the server's RSS
// per idle stream ((RSS with every stream idle - RSS before any connected) / N). Output: a table
// on stdout and, with --json, a file.

#include <signal.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "certcast/v1/certcast.grpc.pb.h"
#include "common/process.h"
#include "grpcpp/alarm.h"
#include "grpcpp/grpcpp.h"
#include "server/fan_out_pool.h"
#include "server/server.h"

ABSL_FLAG(int, connections, 1000,
          "Streams, each on its own connection (one per simulated client).");
ABSL_FLAG(int, rounds, 5, "Measured rounds (after one unmeasured round).");
ABSL_FLAG(std::string, api, "callback", "callback or async (see the top of grpc_floor.cc).");
ABSL_FLAG(int, threads, 2, "callback: threads that start a round's writes; async: queues.");
ABSL_FLAG(int, payload, 5120, "Bytes of certificate chain in each update.");
ABSL_FLAG(int, per_process, 2500, "Subscribers per load-generator process (at least 2 processes).");
ABSL_FLAG(std::string, loadgen, "", "certcast-loadgen binary (default: the one beside this one).");
ABSL_FLAG(std::string, tls_dir, "",
          "TLS: a directory with server.crt, server.key (for 127.0.0.1) and ca.crt, as "
          "`bench/run --mint-only=DIR` writes them. Empty: plaintext.");
ABSL_FLAG(std::string, json, "", "Also write the results to this file.");

namespace {

namespace v1 = certcast::v1;

constexpr absl::Duration kTimeout = absl::Seconds(120);

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "certcast-grpc-floor: %s\n", what.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

grpc::ByteBuffer Bytes(const google::protobuf::MessageLite& message) {
  grpc::Slice slice(message.SerializeAsString());
  return grpc::ByteBuffer(&slice, 1);
}

bool Parse(const grpc::ByteBuffer& buffer, v1::SubscribeRequest* request) {
  grpc::Slice slice;
  return buffer.DumpToSingleSlice(&slice).ok() &&
         request->ParseFromArray(slice.begin(), static_cast<int>(slice.size()));
}

rusage Usage() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage;
}

double CpuSeconds(const rusage& usage) {
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

long RssKb() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return 0;
}

// What the streams report: hellos answered and ACKs of the current round.
class Tally {
 public:
  void Connected() {
    absl::MutexLock lock(&mu_);
    ++connected_;
  }
  void Acked(uint64_t version) {
    absl::MutexLock lock(&mu_);
    if (version == round_) ++acked_;
  }
  void StartRound(uint64_t version) {
    absl::MutexLock lock(&mu_);
    round_ = version;
    acked_ = 0;
  }
  bool AwaitConnected(int n) { return Await(&connected_, n); }
  bool AwaitAcked(int n) { return Await(&acked_, n); }

 private:
  bool Await(const int* count, int n) {
    absl::MutexLock lock(&mu_);
    auto reached = [count, n] { return *count >= n; };
    return mu_.AwaitWithTimeout(absl::Condition(&reached), kTimeout);
  }

  absl::Mutex mu_;
  int connected_ ABSL_GUARDED_BY(mu_) = 0;
  int acked_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t round_ ABSL_GUARDED_BY(mu_) = 0;
};

// Handles one message from a client; returns what to write back (an InSync for a hello).
std::optional<grpc::ByteBuffer> Handle(const grpc::ByteBuffer& bytes, Tally* tally) {
  v1::SubscribeRequest request;
  if (!Parse(bytes, &request)) Die("a client sent bytes that are not a SubscribeRequest");
  if (request.has_ack()) {
    tally->Acked(request.ack().version());
    return std::nullopt;
  }
  if (!request.has_hello() || request.hello().certificates_size() != 1) {
    Die("a client sent neither an ACK nor a hello for one certificate");
  }
  v1::SubscribeResponse response;
  response.mutable_in_sync()->set_name(request.hello().certificates(0).name());
  response.mutable_in_sync()->set_version(request.hello().certificates(0).version());
  tally->Connected();
  return Bytes(response);
}

// --- the callback API ---------------------------------------------------------------------------

class CallbackStream final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit CallbackStream(Tally* tally) : tally_(tally) { StartRead(&read_); }

  void Push(const grpc::ByteBuffer& update) {
    absl::MutexLock lock(&mu_);
    if (writing_ || finishing_) return;
    StartWriteLocked(update);
    StartRead(&read_);  // after the write: the window update rides with it
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnCancel or the server's shutdown ends the call
    std::optional<grpc::ByteBuffer> reply = Handle(read_, tally_);
    if (!reply.has_value()) return;  // an ACK: nothing owed, no read until the next push
    absl::MutexLock lock(&mu_);
    StartWriteLocked(*reply);
  }
  void OnWriteDone(bool /*ok*/) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (finishing_) Finish(grpc::Status::OK);
  }
  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    finishing_ = true;
    if (!writing_) Finish(grpc::Status::OK);
  }
  void OnDone() override {}  // the service owns the stream until the server is gone

 private:
  void StartWriteLocked(const grpc::ByteBuffer& bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    writing_ = true;
    write_ = bytes;
    StartWrite(&write_);
  }

  Tally* const tally_;
  grpc::ByteBuffer read_;
  absl::Mutex mu_;
  grpc::ByteBuffer write_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
};

class CallbackFloor final
    : public v1::Distribution::WithRawCallbackMethod_Subscribe<v1::Distribution::Service> {
 public:
  explicit CallbackFloor(Tally* tally) : tally_(tally) {}

  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* Subscribe(
      grpc::CallbackServerContext* /*context*/) override {
    auto stream = std::make_unique<CallbackStream>(tally_);
    absl::MutexLock lock(&mu_);
    streams_.push_back(std::move(stream));
    return streams_.back().get();
  }

  // Starts every stream's write of `update`: --threads contiguous shares, on the calling thread
  // and the threads certcast-server's hub keeps for that (server/fan_out_pool.h).
  void Push(const grpc::ByteBuffer& update) {
    std::vector<CallbackStream*> streams;
    {
      absl::MutexLock lock(&mu_);
      for (const auto& stream : streams_) streams.push_back(stream.get());
    }
    const size_t share =
        (streams.size() + static_cast<size_t>(threads_) - 1) / static_cast<size_t>(threads_);
    std::vector<std::function<void()>> jobs;
    for (size_t begin = 0; begin < streams.size(); begin += share) {
      jobs.push_back([&streams, &update, begin, share] {
        for (size_t i = begin; i < std::min(begin + share, streams.size()); ++i) {
          streams[i]->Push(update);
        }
      });
    }
    fan_out_.Run(std::move(jobs));
  }

 private:
  const int threads_ = std::max(absl::GetFlag(FLAGS_threads), 1);
  certcast::FanOutPool fan_out_{
      threads_, [](std::function<void()> run) { return std::thread(std::move(run)); }};
  Tally* const tally_;
  absl::Mutex mu_;
  std::vector<std::unique_ptr<CallbackStream>> streams_ ABSL_GUARDED_BY(mu_);
};

// --- the completion-queue API -------------------------------------------------------------------

using AsyncFloorService = v1::Distribution::WithRawMethod_Subscribe<
    v1::Distribution::WithAsyncMethod_ListWriterNamespaces<v1::Distribution::Service>>;

class AsyncQueue;

// One stream, touched only by its queue's thread.
struct AsyncStream {
  enum Kind { kRequested, kRead, kWritten, kDone };
  struct Tag {
    AsyncStream* stream;
    Kind kind;
  };

  AsyncStream() : stream(&context) {}

  grpc::ServerContext context;
  grpc::ServerAsyncReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer> stream;
  grpc::ByteBuffer read;
  grpc::ByteBuffer write;
  bool writing = false;
  bool open = false;  // served and not done
  Tag requested{this, kRequested}, read_done{this, kRead}, written{this, kWritten},
      done{this, kDone};
};

class AsyncQueue {
 public:
  AsyncQueue(AsyncFloorService* service, std::unique_ptr<grpc::ServerCompletionQueue> queue,
             Tally* tally)
      : service_(service), queue_(std::move(queue)), tally_(tally) {}

  void Start() {
    RequestOne();
    thread_ = std::thread([this] { Run(); });
  }

  // Has the queue's thread start every open stream's write of `update`.
  void Push(const grpc::ByteBuffer& update) {
    {
      absl::MutexLock lock(&mu_);
      update_ = update;
    }
    alarm_.Set(queue_.get(), gpr_now(GPR_CLOCK_MONOTONIC), &alarm_tag_);
  }

  // After the server's Shutdown: drains the queue and ends the thread.
  void Stop() {
    queue_->Shutdown();
    thread_.join();
  }

 private:
  void RequestOne() {
    streams_.push_back(std::make_unique<AsyncStream>());
    AsyncStream* next = streams_.back().get();
    next->context.AsyncNotifyWhenDone(&next->done);
    service_->RequestSubscribe(&next->context, &next->stream, queue_.get(), queue_.get(),
                               &next->requested);
  }

  void Run() {
    void* tag = nullptr;
    bool ok = false;
    while (queue_->Next(&tag, &ok)) {
      if (tag == &alarm_tag_) {
        PushAll();
        continue;
      }
      auto* event = static_cast<AsyncStream::Tag*>(tag);
      AsyncStream* s = event->stream;
      switch (event->kind) {
        case AsyncStream::kRequested:
          if (!ok) break;  // shutting down
          RequestOne();
          s->open = true;
          s->stream.Read(&s->read, &s->read_done);
          break;
        case AsyncStream::kRead: {
          if (!ok) break;
          std::optional<grpc::ByteBuffer> reply = Handle(s->read, tally_);
          if (reply.has_value()) Write(s, *reply);
          break;
        }
        case AsyncStream::kWritten:
          s->writing = false;
          break;
        case AsyncStream::kDone:
          s->open = false;
          break;
      }
    }
  }

  void PushAll() {
    grpc::ByteBuffer update;
    {
      absl::MutexLock lock(&mu_);
      update = update_;
    }
    for (const auto& s : streams_) {
      if (!s->open || s->writing) continue;
      Write(s.get(), update);
      s->stream.Read(&s->read, &s->read_done);  // after the write, as in the callback server
    }
  }

  static void Write(AsyncStream* s, const grpc::ByteBuffer& bytes) {
    s->writing = true;
    s->write = bytes;
    s->stream.Write(s->write, &s->written);
  }

  AsyncFloorService* const service_;
  const std::unique_ptr<grpc::ServerCompletionQueue> queue_;
  Tally* const tally_;
  std::vector<std::unique_ptr<AsyncStream>> streams_;  // the thread's; freed with the queue
  grpc::Alarm alarm_;
  int alarm_tag_ = 0;
  absl::Mutex mu_;
  grpc::ByteBuffer update_ ABSL_GUARDED_BY(mu_);
  std::thread thread_;
};

// --- load generators ----------------------------------------------------------------------------

// One certcast-loadgen subscriber process and its command pipes.
class Loadgen {
 public:
  Loadgen(const std::string& binary, const std::vector<std::string>& args) {
    int in[2], out[2];
    if (pipe(in) != 0 || pipe(out) != 0) Die("pipe failed");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    for (int fd : {in[0], in[1], out[0], out[1]}) posix_spawn_file_actions_addclose(&actions, fd);
    std::vector<char*> argv{const_cast<char*>(binary.c_str())};
    for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    if (posix_spawn(&pid_, binary.c_str(), &actions, nullptr, argv.data(), environ) != 0) {
      Die(absl::StrCat("cannot start ", binary));
    }
    posix_spawn_file_actions_destroy(&actions);
    close(in[0]);
    close(out[1]);
    to_ = fdopen(in[1], "w");
    from_ = fdopen(out[0], "r");
  }
  ~Loadgen() {
    Send("quit");
    fclose(to_);
    fclose(from_);
    waitpid(pid_, nullptr, 0);
  }
  void Send(const std::string& command) {
    std::fprintf(to_, "%s\n", command.c_str());
    std::fflush(to_);
  }
  std::string Receive() {
    std::string line;
    for (int c; (c = std::fgetc(from_)) != EOF && c != '\n';) line.push_back(static_cast<char>(c));
    return line;
  }

 private:
  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
};

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Die(absl::StrCat("cannot read ", path));
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::shared_ptr<grpc::ServerCredentials> Credentials(const std::string& tls_dir) {
  if (tls_dir.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options;
  options.pem_key_cert_pairs.push_back(
      {ReadFileOrDie(tls_dir + "/server.key"), ReadFileOrDie(tls_dir + "/server.crt")});
  return grpc::SslServerCredentials(options);
}

std::string LoadgenBinary() {
  if (!absl::GetFlag(FLAGS_loadgen).empty()) return absl::GetFlag(FLAGS_loadgen);
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) Die("cannot find this binary's directory; give --loadgen");
  std::string path(self, static_cast<size_t>(n));
  return path.substr(0, path.rfind('/') + 1) + "certcast-loadgen";
}

struct Round {
  double cpu_us_per_push;
  double ms;
};

double Mean(const std::vector<double>& values) {
  double sum = 0;
  for (double v : values) sum += v;
  return values.empty() ? 0 : sum / static_cast<double>(values.size());
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "certcast-grpc-floor [--connections=N] [--api=callback|async] [--threads=T] [--rounds=R] "
      "[--json=FILE]: the CPU per push of a bare gRPC server speaking certcast's protocol.");
  absl::ParseCommandLine(argc, argv);
  // As certcast-server: no abseil deadlock detection (common/process.h: it costs CPU and memory
  // per gRPC stream), sized read buffers, which need this experiment off (server/main.cc).
  certcast::HardenKeyHoldingProcess();
  setenv("GRPC_EXPERIMENTS", "-tcp_read_chunks", 0);
  certcast::RaiseOpenFileLimit();
  signal(SIGPIPE, SIG_IGN);

  const int connections = absl::GetFlag(FLAGS_connections);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int threads = absl::GetFlag(FLAGS_threads);
  const std::string api = absl::GetFlag(FLAGS_api);
  if (connections <= 0 || rounds <= 0 || threads <= 0) {
    Die("--connections, --rounds and --threads must be positive");
  }
  if (api != "callback" && api != "async") Die("--api must be callback or async");

  Tally tally;
  CallbackFloor callback_service(&tally);
  AsyncFloorService async_service;
  std::vector<std::unique_ptr<AsyncQueue>> queues;
  grpc::ServerBuilder builder;
  int port = 0;
  const std::string tls_dir = absl::GetFlag(FLAGS_tls_dir);
  builder.AddListeningPort("127.0.0.1:0", Credentials(tls_dir), &port);
  // certcast-server's, with its default heartbeat interval.
  certcast::AddStreamChannelArguments(absl::Seconds(30), &builder);
  std::vector<std::unique_ptr<grpc::ServerCompletionQueue>> completion_queues;
  if (api == "callback") {
    builder.RegisterService(&callback_service);
  } else {
    builder.RegisterService(&async_service);
    for (int i = 0; i < threads; ++i) completion_queues.push_back(builder.AddCompletionQueue());
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) Die("the server did not start");
  for (auto& queue : completion_queues) {
    queues.push_back(std::make_unique<AsyncQueue>(&async_service, std::move(queue), &tally));
    queues.back()->Start();
  }
  const long rss_before = RssKb();

  const int per_process = std::max(1, absl::GetFlag(FLAGS_per_process));
  const int processes =
      std::max(std::min(2, connections), (connections + per_process - 1) / per_process);
  const int per = (connections + processes - 1) / processes;
  std::vector<std::unique_ptr<Loadgen>> loadgens;
  for (int first = 0; first < connections; first += per) {
    std::vector<std::string> args{"--system=certcast", "--role=subscribers",
                                  absl::StrCat("--target=127.0.0.1:", port),
                                  absl::StrCat("--clients=", std::min(per, connections - first)),
                                  absl::StrCat("--first=", first)};
    if (!tls_dir.empty()) args.push_back(absl::StrCat("--tls_ca=", tls_dir, "/ca.crt"));
    loadgens.push_back(std::make_unique<Loadgen>(LoadgenBinary(), args));
  }
  for (auto& loadgen : loadgens) loadgen->Send("connect");
  for (auto& loadgen : loadgens) {
    const std::string reply = loadgen->Receive();
    if (reply.rfind("connect ", 0) != 0) Die(absl::StrCat("a load generator said: ", reply));
  }
  if (!tally.AwaitConnected(connections)) Die("not every stream said hello in time");
  absl::SleepFor(absl::Seconds(2));  // the idle state settles (a measurement, not a wait)
  const double rss_per_stream =
      static_cast<double>(RssKb() - rss_before) / static_cast<double>(connections);

  v1::SubscribeResponse response;
  v1::CertificateUpdate* update = response.mutable_update();
  update->set_name("bench");
  update->set_chain_pem(std::string(static_cast<size_t>(absl::GetFlag(FLAGS_payload)), 'c'));
  update->set_fingerprint(std::string(64, 'f'));
  std::vector<Round> measured;
  for (int r = 0; r <= rounds; ++r) {
    const uint64_t version = static_cast<uint64_t>(r) + 2;
    update->set_version(version);
    update->set_nonce(absl::StrCat("n", version));
    const grpc::ByteBuffer bytes = Bytes(response);
    tally.StartRound(version);
    const rusage before = Usage();
    const absl::Time start = absl::Now();
    if (api == "callback") {
      callback_service.Push(bytes);
    } else {
      for (auto& queue : queues) queue->Push(bytes);
    }
    if (!tally.AwaitAcked(connections)) Die(absl::StrCat("round ", r, ": ACKs missing"));
    const double ms = absl::ToDoubleMilliseconds(absl::Now() - start);
    const rusage after = Usage();
    const double cpu_us = (CpuSeconds(after) - CpuSeconds(before)) * 1e6 / connections;
    if (r > 0) measured.push_back({cpu_us, ms});
    std::printf("%s round %d: %.1f us per push, %.1f ms, %ld page faults%s\n", api.c_str(), r,
                cpu_us, ms, after.ru_minflt - before.ru_minflt, r == 0 ? " (unmeasured)" : "");
    std::fflush(stdout);
  }

  loadgens.clear();  // quit: the clients close their connections
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  for (auto& queue : queues) queue->Stop();

  std::vector<double> cpu, ms;
  for (const Round& round : measured) {
    cpu.push_back(round.cpu_us_per_push);
    ms.push_back(round.ms);
  }
  std::printf(
      "=== bare gRPC server, %s, %s API, %d threads, %d streams, %d rounds ===\n"
      "CPU per push (us): mean %.1f, min %.1f, max %.1f\n"
      "round, first write to last ACK (ms): mean %.1f, min %.1f, max %.1f\n"
      "RSS per idle stream: %.2f KiB\n",
      tls_dir.empty() ? "plaintext" : "TLS", api.c_str(), threads, connections, rounds, Mean(cpu),
      *std::min_element(cpu.begin(), cpu.end()), *std::max_element(cpu.begin(), cpu.end()),
      Mean(ms), *std::min_element(ms.begin(), ms.end()), *std::max_element(ms.begin(), ms.end()),
      rss_per_stream);
  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    std::ofstream out(path);
    out << "{\"api\": \"" << api << "\", \"tls\": " << (tls_dir.empty() ? "false" : "true")
        << ", \"threads\": " << threads << ", \"connections\": " << connections
        << ", \"cpu_us_per_push\": [" << absl::StrJoin(cpu, ", ")
        << "], \"cpu_us_per_push_mean\": " << Mean(cpu) << ", \"round_ms\": ["
        << absl::StrJoin(ms, ", ") << "], \"rss_per_stream_kb\": " << rss_per_stream << "}\n";
    if (!out) Die(absl::StrCat("cannot write ", path));
  }
  return 0;
}
