// certcast-loadgen: simulated subscribers (and a control connection) for bench/run.
//
// --role=subscribers opens --clients streams, each on its own channel (one TCP connection and
// one stream per client, as real daemons have):
//   --system=certcast  Distribution/Subscribe, a hello naming --certificate with the version it
//                      holds, an Ack for every update. A stream that ends is reopened on a fresh
//                      channel after the real client's backoff (0.5 s doubling to 30 s, 20 %
//                      jitter, reset on the first message), saying what it holds, so a server
//                      restart is answered with InSync.
//   --system=etcd      etcdserverpb.Watch/Watch on --key.
// --role=control opens one channel for what the driver asks of the server:
//   certcast  Inspection/GetCertificate and ListClients; etcd  KV/Put and KV/Range.
//
// The driver (bench/run) sends one command per line on stdin; each gets one line on stdout that
// starts with the command's name. Times are wall-clock Unix nanoseconds (the driver, the server
// and the load generators share one host clock).
//   subscribers: ready | connect | arm | collect MS | resync-arm | resync-wait MS | quit
//   (collect and resync-wait answer with a count and then each client's time)
//   control:     ready MS | published | acks VERSION N MS | put FILE | quit
//
// Not thread-safe beyond what it needs: gRPC callbacks and the reconnect thread meet in Shared.

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "certcast/v1/certcast.grpc.pb.h"
#include "common/process.h"
#include "etcd/rpc.grpc.pb.h"
#include "grpcpp/grpcpp.h"

ABSL_FLAG(std::string, system, "certcast", "certcast or etcd.");
ABSL_FLAG(std::string, role, "subscribers", "subscribers or control.");
ABSL_FLAG(std::string, target, "", "HOST:PORT of the server.");
ABSL_FLAG(int, clients, 1, "Subscribers in this process.");
ABSL_FLAG(int, first, 0, "Index of the first subscriber (client ids bench-INDEX).");
ABSL_FLAG(std::string, tls_ca, "", "Root CA (PEM): use TLS. Empty: plaintext.");
ABSL_FLAG(std::string, tls_server_name, "", "Name checked against the server certificate.");
ABSL_FLAG(std::string, tokens, "",
          "File with one bearer token per line; subscriber i uses line i - --first (control: the "
          "first line). Empty: no token.");
ABSL_FLAG(std::string, certificate, "bench", "certcast: certificate name.");
ABSL_FLAG(std::string, namespace, "bench", "certcast: namespace in the hello.");
ABSL_FLAG(std::string, key, "/certcast/bench", "etcd: key to watch or put.");
ABSL_FLAG(int, connect_batch, 200,
          "Streams opened at once; the next batch opens when the previous one is served.");

namespace {

namespace v1 = certcast::v1;
namespace etcd = etcdserverpb;

int64_t WallNs() { return absl::ToUnixNanos(absl::Now()); }

int64_t ToUnixNs(const google::protobuf::Timestamp& t) {
  return t.seconds() * 1'000'000'000LL + t.nanos();
}

[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "certcast-loadgen: %s\n", message.c_str());
  std::fflush(stderr);
  std::_Exit(2);
}

std::string ReadFileOrDie(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) Die(absl::StrCat("cannot read ", path));
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Reply(const std::string& line) {
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

// --tls_ca becomes gRPC's default roots (before any gRPC call or thread), so that gRPC parses it
// once per process instead of once per connection attempt, as it does for roots passed in
// SslCredentialsOptions: with OpenSSL 3.0's decoders that parse took ~13 % of the load
// generators' CPU per TLS connection (perf), on the cores the server under test needs. A real
// client parses its CA once per attempt on its own CPU. (Debian's gRPC never asks
// grpc_set_ssl_roots_override_callback, so this goes through the environment.)
void UseCaAsDefaultRoots() {
  if (absl::GetFlag(FLAGS_tls_ca).empty()) return;
  ReadFileOrDie(absl::GetFlag(FLAGS_tls_ca));  // fail here, not in every handshake
  setenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", absl::GetFlag(FLAGS_tls_ca).c_str(), 1);
}

// Channels: TLS or plaintext; each call to NewChannel is its own connection.
class Channels {
 public:
  Channels() {
    if (absl::GetFlag(FLAGS_tls_ca).empty()) {
      credentials_ = grpc::InsecureChannelCredentials();
    } else {
      // No roots here: gRPC takes its default roots, the CA (UseCaAsDefaultRoots).
      credentials_ = grpc::SslCredentials(grpc::SslCredentialsOptions());
    }
  }
  std::shared_ptr<grpc::Channel> NewChannel() {
    grpc::ChannelArguments args;
    // A distinct argument and a local subchannel pool: gRPC shares no connection between them.
    args.SetInt("certcast.loadgen.channel", next_.fetch_add(1));
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    // What certcast-client sets (client/server_channel.cc), for both systems.
    args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30'000);
    args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 20'000);
    args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
    args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
    args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 60'000);
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    if (!absl::GetFlag(FLAGS_tls_server_name).empty()) {
      args.SetSslTargetNameOverride(absl::GetFlag(FLAGS_tls_server_name));
    }
    return grpc::CreateCustomChannel(absl::GetFlag(FLAGS_target), credentials_, args);
  }

 private:
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::atomic<int> next_{0};
};

std::vector<std::string> ReadTokens(size_t count, size_t skip) {
  std::vector<std::string> tokens(count);
  const std::string path = absl::GetFlag(FLAGS_tokens);
  if (path.empty()) return tokens;
  std::ifstream in(path);
  if (!in) Die(absl::StrCat("cannot read ", path));
  std::string line;
  for (size_t i = 0; std::getline(in, line) && i < skip + count; ++i) {
    if (i >= skip) tokens[i - skip] = absl::StrCat("Bearer ", line);
  }
  return tokens;
}

// What every subscriber reports to; guarded by mu.
struct Shared {
  explicit Shared(int clients)
      : receipt_ns(static_cast<size_t>(clients), 0),
        resync_ns(static_cast<size_t>(clients), 0),
        initial(static_cast<size_t>(clients), false),
        failed_first(static_cast<size_t>(clients), false) {}

  std::mutex mu;
  std::condition_variable cv;
  bool armed = false;
  std::vector<int64_t> receipt_ns;  // first update (certcast) or event (etcd) after `arm`
  int received = 0;
  bool resync_armed = false;
  std::vector<int64_t> resync_ns;  // when a new stream got its first message since `resync-arm`
  int resynced_count = 0;
  std::vector<bool> initial;  // the first stream got its first message
  int initial_count = 0;
  std::vector<bool> failed_first;  // the first stream ended unserved, no retry served it yet
  int failed = 0;                  // how many are so
  // Attempts that ended unserved while a resync is armed, by second since `resync-arm` and
  // status: why a storm is slow.
  int64_t resync_arm_ns = 0;
  std::map<std::pair<int64_t, std::string>, int> storm_failures;
  std::atomic<bool> stopping{false};

  // A stream's first message (certcast: InSync or Update; etcd: created).
  void FirstMessage(int index) {
    std::lock_guard<std::mutex> lock(mu);
    const size_t i = static_cast<size_t>(index);
    if (!initial[i]) {
      initial[i] = true;
      ++initial_count;
      if (failed_first[i]) {  // served on a retry
        failed_first[i] = false;
        --failed;
      }
    } else if (resync_armed && resync_ns[i] == 0) {
      resync_ns[i] = WallNs();
      ++resynced_count;
    }
    cv.notify_all();
  }
  void Delivered(int index, int64_t now_ns) {
    std::lock_guard<std::mutex> lock(mu);
    const size_t i = static_cast<size_t>(index);
    if (!armed || receipt_ns[i] != 0) return;
    receipt_ns[i] = now_ns;
    ++received;
    cv.notify_all();
  }
  void FailedBeforeFirst(int index, const grpc::Status& status) {
    std::lock_guard<std::mutex> lock(mu);
    const size_t i = static_cast<size_t>(index);
    if (resync_armed) {
      ++storm_failures[{(WallNs() - resync_arm_ns) / 1'000'000'000,
                        absl::StrCat(static_cast<int>(status.error_code()), " ",
                                     status.error_message().substr(0, 300))}];
    }
    if (initial[i] || failed_first[i]) return;
    failed_first[i] = true;
    if (failed++ < 5) {
      std::fprintf(stderr, "stream %d ended before its first message: code %d: %s\n", index,
                   static_cast<int>(status.error_code()), status.error_message().c_str());
    }
    cv.notify_all();
  }
};

// Runs callbacks at a time; one thread for all reconnects of the process.
class Scheduler {
 public:
  Scheduler() : thread_([this] { Run(); }) {}
  ~Scheduler() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void At(std::chrono::steady_clock::time_point when, std::function<void()> fn) {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.emplace(when, std::move(fn));
    cv_.notify_all();
  }

 private:
  void Run() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (queue_.empty()) {
        cv_.wait(lock);
        continue;
      }
      auto first = queue_.begin();
      if (first->first > std::chrono::steady_clock::now()) {
        cv_.wait_until(lock, first->first);
        continue;
      }
      std::function<void()> fn = std::move(first->second);
      queue_.erase(first);
      lock.unlock();
      fn();
      lock.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::multimap<std::chrono::steady_clock::time_point, std::function<void()>> queue_;
  bool stop_ = false;
  std::thread thread_;
};

// One write in flight per call, the rest queued (gRPC allows one outstanding write).
template <typename Request>
class WriteQueue {
 public:
  // Returns the request to start writing now, or null when a write is in flight.
  const Request* Push(Request request) {
    std::lock_guard<std::mutex> lock(mu_);
    if (in_flight_) {
      queue_.push_back(std::move(request));
      return nullptr;
    }
    in_flight_ = true;
    writing_ = std::move(request);
    return &writing_;
  }
  const Request* Done(bool ok) {
    std::lock_guard<std::mutex> lock(mu_);
    in_flight_ = false;
    if (!ok) queue_.clear();
    if (queue_.empty()) return nullptr;
    in_flight_ = true;
    writing_ = std::move(queue_.front());
    queue_.pop_front();
    return &writing_;
  }

 private:
  std::mutex mu_;
  std::deque<Request> queue_;
  Request writing_;
  bool in_flight_ = false;
};

// --- certcast subscribers ---------------------------------------------------------------------

class CertcastClient;

// One Subscribe call. Deletes itself in OnDone after telling its client.
class CertcastCall final
    : public grpc::ClientBidiReactor<v1::SubscribeRequest, v1::SubscribeResponse> {
 public:
  explicit CertcastCall(CertcastClient* client) : client_(client) {}

  void Start(v1::Distribution::Stub* stub, const std::string& authorization,
             v1::SubscribeRequest hello) {
    if (!authorization.empty()) context_.AddMetadata("authorization", authorization);
    stub->async()->Subscribe(&context_, this);
    Send(std::move(hello));
    StartRead(&response_);
    StartCall();
  }
  void Cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override {
    if (const v1::SubscribeRequest* next = writes_.Done(ok)) StartWrite(next);
  }
  void OnDone(const grpc::Status& status) override;

 private:
  void Send(v1::SubscribeRequest request) {
    if (const v1::SubscribeRequest* now = writes_.Push(std::move(request))) StartWrite(now);
  }

  CertcastClient* const client_;
  grpc::ClientContext context_;
  v1::SubscribeResponse response_;
  bool first_seen_ = false;
  WriteQueue<v1::SubscribeRequest> writes_;
};

// A simulated certcast-client: what it holds, and its reconnect backoff.
class CertcastClient {
 public:
  CertcastClient(int index, int global_index, std::string authorization, Shared* shared,
                 Channels* channels, Scheduler* scheduler)
      : index_(index),
        global_index_(global_index),
        authorization_(std::move(authorization)),
        shared_(shared),
        channels_(channels),
        scheduler_(scheduler),
        random_(static_cast<uint32_t>(global_index) * 7919u + 1) {}

  void Connect() {
    v1::SubscribeRequest hello;
    hello.mutable_hello()->set_client_id(absl::StrCat("bench-", global_index_));
    hello.mutable_hello()->set_namespace_(absl::GetFlag(FLAGS_namespace));
    v1::HeldCertificate* held = hello.mutable_hello()->add_certificates();
    held->set_name(absl::GetFlag(FLAGS_certificate));
    CertcastCall* call;
    {
      std::lock_guard<std::mutex> lock(mu_);
      held->set_version(version_);
      held->set_fingerprint(fingerprint_);
      // A fresh connection per attempt, as certcast-client makes. The previous attempt's channel
      // is normally gone already (ReleaseChannel).
      stub_ = v1::Distribution::NewStub(channels_->NewChannel());
      call = call_ = new CertcastCall(this);
    }
    call->Start(stub_.get(), authorization_, std::move(hello));
  }
  void Cancel() {
    std::lock_guard<std::mutex> lock(mu_);
    if (call_ != nullptr) call_->Cancel();
  }

  // The first message of a call: the stream is served; the backoff starts over.
  void FirstMessage() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      backoff_ = kInitialBackoff;
    }
    shared_->FirstMessage(index_);
  }
  void Updated(const v1::CertificateUpdate& update, int64_t now_ns) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      version_ = update.version();
      fingerprint_ = update.fingerprint();
    }
    shared_->Delivered(index_, now_ns);
  }
  // The call is ending: no Cancel() reaches it from now on.
  void Detach(CertcastCall* call) {
    std::lock_guard<std::mutex> lock(mu_);
    if (call_ == call) call_ = nullptr;
  }
  // After the call is gone (and with its context the context's reference to the channel).
  void Ended(const grpc::Status& status, bool first_seen) {
    if (!first_seen) shared_->FailedBeforeFirst(index_, status);
    double delay;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (shared_->stopping.load()) return;
      std::uniform_real_distribution<double> jitter(0.8, 1.2);
      delay = backoff_ * jitter(random_);
      backoff_ = std::min(backoff_ * 2, kMaxBackoff);
    }
    const auto now = std::chrono::steady_clock::now();
    // certcast-client closes its connection as soon as the stream ends (client/session.cc), so a
    // server shutting down does not wait for it; the stub holds the channel's last reference.
    scheduler_->At(now, [this] { ReleaseChannel(); });
    scheduler_->At(now + std::chrono::microseconds(static_cast<int64_t>(delay * 1e6)),
                   [this] { Connect(); });
  }

 private:
  // On the scheduler's thread: a channel destroyed inside its own callbacks trips gRPC's refcounts.
  void ReleaseChannel() {
    std::unique_ptr<v1::Distribution::Stub> released;
    std::lock_guard<std::mutex> lock(mu_);
    if (call_ == nullptr) released = std::move(stub_);
  }

  static constexpr double kInitialBackoff = 0.5;  // seconds, as certcast-client
  static constexpr double kMaxBackoff = 30;

  const int index_;
  const int global_index_;
  const std::string authorization_;
  Shared* const shared_;
  Channels* const channels_;
  Scheduler* const scheduler_;
  std::mutex mu_;
  std::unique_ptr<v1::Distribution::Stub> stub_;  // guarded by mu_; holds the channel
  CertcastCall* call_ = nullptr;                  // guarded by mu_
  uint64_t version_ = 0;                          // guarded by mu_
  std::string fingerprint_;                       // guarded by mu_
  double backoff_ = kInitialBackoff;
  std::minstd_rand random_;
};

void CertcastCall::OnReadDone(bool ok) {
  const int64_t now = WallNs();
  if (!ok) return;  // OnDone follows
  const bool first = !first_seen_;
  switch (response_.kind_case()) {
    case v1::SubscribeResponse::kUpdate: {
      const v1::CertificateUpdate& update = response_.update();
      if (first) {
        first_seen_ = true;
        client_->FirstMessage();
      }
      client_->Updated(update, now);
      v1::SubscribeRequest ack;
      ack.mutable_ack()->set_name(update.name());
      ack.mutable_ack()->set_version(update.version());
      ack.mutable_ack()->set_nonce(update.nonce());
      Send(std::move(ack));
      break;
    }
    case v1::SubscribeResponse::kInSync:
      if (first) {
        first_seen_ = true;
        client_->FirstMessage();
      }
      break;
    default:
      break;  // heartbeats
  }
  StartRead(&response_);
}

void CertcastCall::OnDone(const grpc::Status& status) {
  CertcastClient* client = client_;
  const bool first_seen = first_seen_;
  const grpc::Status ended = status;
  client->Detach(this);
  delete this;
  client->Ended(ended, first_seen);
}

// --- etcd watchers ------------------------------------------------------------------------------

class EtcdWatch final : public grpc::ClientBidiReactor<etcd::WatchRequest, etcd::WatchResponse> {
 public:
  EtcdWatch(int index, Shared* shared, std::shared_ptr<grpc::Channel> channel)
      : index_(index),
        shared_(shared),
        channel_(std::move(channel)),
        stub_(etcd::Watch::NewStub(channel_)) {}

  void Start(const std::string& authorization) {
    if (!authorization.empty()) context_.AddMetadata("authorization", authorization);
    stub_->async()->Watch(&context_, this);
    etcd::WatchRequest request;
    request.mutable_create_request()->set_key(absl::GetFlag(FLAGS_key));
    Send(std::move(request));
    StartRead(&response_);
    StartCall();
  }
  void Cancel() { context_.TryCancel(); }

  void OnReadDone(bool ok) override {
    const int64_t now = WallNs();
    if (!ok) return;
    if (response_.created() && !created_) {
      created_ = true;
      shared_->FirstMessage(index_);
    }
    if (response_.events_size() > 0) shared_->Delivered(index_, now);
    StartRead(&response_);
  }
  void OnWriteDone(bool ok) override {
    if (const etcd::WatchRequest* next = writes_.Done(ok)) StartWrite(next);
  }
  void OnDone(const grpc::Status& status) override {
    if (!created_) shared_->FailedBeforeFirst(index_, status);
  }

 private:
  void Send(etcd::WatchRequest request) {
    if (const etcd::WatchRequest* now = writes_.Push(std::move(request))) StartWrite(now);
  }

  const int index_;
  Shared* const shared_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<etcd::Watch::Stub> stub_;
  grpc::ClientContext context_;
  etcd::WatchResponse response_;
  bool created_ = false;
  WriteQueue<etcd::WatchRequest> writes_;
};

// --- the subscriber process ---------------------------------------------------------------------

int RunSubscribers() {
  const int clients = absl::GetFlag(FLAGS_clients);
  const int first = absl::GetFlag(FLAGS_first);
  const bool is_etcd = absl::GetFlag(FLAGS_system) == "etcd";
  const std::vector<std::string> tokens =
      ReadTokens(static_cast<size_t>(clients), static_cast<size_t>(first));
  Shared shared(clients);
  Channels channels;
  Scheduler scheduler;
  std::vector<std::unique_ptr<CertcastClient>> certcast_clients;
  std::vector<EtcdWatch*> watches;  // live until the process ends

  auto wait = [&](absl::Duration timeout, const std::function<bool()>& done) {
    std::unique_lock<std::mutex> lock(shared.mu);
    return shared.cv.wait_for(lock, absl::ToChronoNanoseconds(timeout), done);
  };

  std::string line;
  while (std::getline(std::cin, line)) {
    const std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (words.empty()) continue;
    const std::string& command = words[0];
    const absl::Duration timeout =
        absl::Milliseconds(words.size() > 1 ? std::atoll(words[1].c_str()) : 60'000);
    if (command == "connect") {
      const absl::Time start = absl::Now();
      const int batch = std::max(1, absl::GetFlag(FLAGS_connect_batch));
      for (int started = 0; started < clients;) {
        const int upto = std::min(clients, started + batch);
        for (int i = started; i < upto; ++i) {
          if (is_etcd) {
            watches.push_back(new EtcdWatch(i, &shared, channels.NewChannel()));
            watches.back()->Start(tokens[static_cast<size_t>(i)]);
          } else {
            certcast_clients.push_back(std::make_unique<CertcastClient>(
                i, first + i, tokens[static_cast<size_t>(i)], &shared, &channels, &scheduler));
            certcast_clients.back()->Connect();
          }
        }
        started = upto;
        wait(absl::Seconds(120), [&] { return shared.initial_count + shared.failed >= upto; });
      }
      std::lock_guard<std::mutex> lock(shared.mu);
      Reply(absl::StrCat("connect ", shared.initial_count, " ", shared.failed, " ",
                         absl::ToDoubleSeconds(absl::Now() - start)));
    } else if (command == "arm") {
      std::lock_guard<std::mutex> lock(shared.mu);
      std::fill(shared.receipt_ns.begin(), shared.receipt_ns.end(), 0);
      shared.received = 0;
      shared.armed = true;
      Reply("arm");
    } else if (command == "collect") {
      wait(timeout, [&] { return shared.received >= clients; });
      std::lock_guard<std::mutex> lock(shared.mu);
      shared.armed = false;
      std::string reply = absl::StrCat("collect ", shared.received);
      for (int64_t at : shared.receipt_ns) {
        if (at != 0) absl::StrAppend(&reply, " ", at);
      }
      Reply(reply);
    } else if (command == "resync-arm") {
      std::lock_guard<std::mutex> lock(shared.mu);
      std::fill(shared.resync_ns.begin(), shared.resync_ns.end(), 0);
      shared.resynced_count = 0;
      shared.resync_armed = true;
      shared.resync_arm_ns = WallNs();
      shared.storm_failures.clear();
      Reply("resync-arm");
    } else if (command == "resync-wait") {
      wait(timeout, [&] { return shared.resynced_count >= clients; });
      std::lock_guard<std::mutex> lock(shared.mu);
      shared.resync_armed = false;
      for (const auto& [when, count] : shared.storm_failures) {
        std::fprintf(stderr, "storm: second %lld: %d attempts ended unserved: code %s\n",
                     static_cast<long long>(when.first), count, when.second.c_str());
      }
      std::string reply = absl::StrCat("resync-wait ", shared.resynced_count);
      for (int64_t at : shared.resync_ns) {
        if (at != 0) absl::StrAppend(&reply, " ", at);
      }
      Reply(reply);
    } else if (command == "ready") {  // started: what it costs from here on is the run's
      Reply("ready");
    } else if (command == "quit") {
      break;
    } else {
      Reply(absl::StrCat("error unknown command ", command));
    }
  }
  // Skip tearing down thousands of channels one by one; the kernel closes the sockets.
  shared.stopping.store(true);
  std::fflush(stdout);
  std::_Exit(0);
}

// --- the control connection ---------------------------------------------------------------------

int RunControl() {
  const bool is_etcd = absl::GetFlag(FLAGS_system) == "etcd";
  const std::string authorization = ReadTokens(1, 0)[0];
  Channels channels;
  std::shared_ptr<grpc::Channel> channel = channels.NewChannel();
  auto inspection = v1::Inspection::NewStub(channel);
  auto kv = etcd::KV::NewStub(channel);
  auto context_for = [&](grpc::ClientContext* context, absl::Duration timeout) {
    if (!authorization.empty()) context->AddMetadata("authorization", authorization);
    context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  };
  const std::string name = absl::GetFlag(FLAGS_certificate);

  std::string line;
  while (std::getline(std::cin, line)) {
    const std::vector<std::string> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    if (words.empty()) continue;
    const std::string& command = words[0];
    if (command == "ready") {  // ready MS: the server answers
      const absl::Time deadline =
          absl::Now() +
          absl::Milliseconds(words.size() > 1 ? std::atoll(words[1].c_str()) : 30'000);
      grpc::Status status;
      do {
        grpc::ClientContext context;
        context_for(&context, absl::Seconds(2));
        context.set_wait_for_ready(true);
        if (is_etcd) {
          etcd::RangeRequest request;
          request.set_key(absl::GetFlag(FLAGS_key));
          etcd::RangeResponse response;
          status = kv->Range(&context, request, &response);
        } else {
          v1::GetCertificateRequest request;
          request.set_name(name);
          v1::Certificate response;
          status = inspection->GetCertificate(&context, request, &response);
        }
        if (!status.ok()) absl::SleepFor(absl::Milliseconds(50));
      } while (!status.ok() && absl::Now() < deadline);
      Reply(absl::StrCat("ready ", status.ok() ? "ok" : status.error_message()));
    } else if (command == "published") {  // the current version and when it was published
      grpc::ClientContext context;
      context_for(&context, absl::Seconds(10));
      v1::GetCertificateRequest request;
      request.set_name(name);
      v1::Certificate response;
      const grpc::Status status = inspection->GetCertificate(&context, request, &response);
      if (!status.ok()) {
        Reply(absl::StrCat("error GetCertificate: ", status.error_message()));
        continue;
      }
      Reply(absl::StrCat("published ", response.current().version(), " ",
                         ToUnixNs(response.current().published_at())));
    } else if (command == "acks" && words.size() == 4) {
      // acks VERSION N MS: waits until N connected clients acknowledged VERSION, then prints
      // how many did and when the server recorded each ACK.
      const uint64_t version = std::strtoull(words[1].c_str(), nullptr, 10);
      const int want = std::atoi(words[2].c_str());
      const absl::Time deadline = absl::Now() + absl::Milliseconds(std::atoll(words[3].c_str()));
      std::vector<int64_t> at;
      std::string error;
      while (true) {
        at.clear();
        std::string token;
        do {
          v1::ListClientsRequest request;
          request.set_page_size(1000);
          request.set_page_token(token);
          request.set_namespace_(absl::GetFlag(FLAGS_namespace));
          request.set_name(name);
          v1::ListClientsResponse response;
          grpc::ClientContext context;
          context_for(&context, absl::Seconds(10));
          const grpc::Status status = inspection->ListClients(&context, request, &response);
          if (!status.ok()) {
            error = status.error_message();
            break;
          }
          for (const v1::ClientInfo& client : response.clients()) {
            if (!client.connected()) continue;
            for (const v1::ClientCertificate& held : client.certificates()) {
              if (held.name() == name && held.acknowledged_version() == version) {
                at.push_back(ToUnixNs(held.acknowledged_at()));
              }
            }
          }
          token = response.next_page_token();
        } while (!token.empty());
        if (static_cast<int>(at.size()) >= want || absl::Now() > deadline || !error.empty()) break;
        absl::SleepFor(absl::Milliseconds(20));
      }
      if (!error.empty()) {
        Reply(absl::StrCat("error ListClients: ", error));
        continue;
      }
      std::string reply = absl::StrCat("acks ", at.size());
      for (int64_t t : at) absl::StrAppend(&reply, " ", t);
      Reply(reply);
    } else if (command == "put" && words.size() == 2) {  // put FILE: t0 is taken before the call
      etcd::PutRequest request;
      request.set_key(absl::GetFlag(FLAGS_key));
      request.set_value(ReadFileOrDie(words[1]));
      etcd::PutResponse response;
      grpc::ClientContext context;
      context_for(&context, absl::Seconds(30));
      const int64_t t0 = WallNs();
      const grpc::Status status = kv->Put(&context, request, &response);
      if (!status.ok()) {
        Reply(absl::StrCat("error Put: ", status.error_message()));
        continue;
      }
      Reply(absl::StrCat("put ", t0, " ", response.header().revision()));
    } else if (command == "quit") {
      break;
    } else {
      Reply(absl::StrCat("error unknown command ", line));
    }
  }
  std::fflush(stdout);
  std::_Exit(0);
}

}  // namespace

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Simulated subscribers for bench/run; commands on stdin (see the top of loadgen.cc).");
  absl::ParseCommandLine(argc, argv);
  certcast::RaiseOpenFileLimit();
  // As the server does: Debian's abseil keeps mutex deadlock detection on, whose bookkeeping
  // took 14 % of the load generators' CPU while 3,000 TLS subscribers connected (perf), CPU
  // the server under test then lacks on a 2-core machine.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  UseCaAsDefaultRoots();
  if (absl::GetFlag(FLAGS_target).empty()) Die("--target is required");
  const std::string system = absl::GetFlag(FLAGS_system);
  if (system != "certcast" && system != "etcd") Die("--system must be certcast or etcd");
  const std::string role = absl::GetFlag(FLAGS_role);
  if (role == "control") return RunControl();
  if (role == "subscribers") return RunSubscribers();
  Die("--role must be subscribers or control");
}
