#include "tests/subscriber_fleet.h"

#include <dirent.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <sys/resource.h>

#include <algorithm>
#include <fstream>
#include <memory>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/certificate.h"

namespace certcast::scenario {

class SubscriberFleet::Stream final
    : public grpc::ClientBidiReactor<v1::SubscribeRequest, v1::SubscribeResponse> {
 public:
  Stream(SubscriberFleet* fleet, int slot, std::shared_ptr<grpc::Channel> channel)
      : fleet_(fleet), slot_(slot), stub_(v1::Distribution::NewStub(channel)) {}

  // Called with fleet_->mu_ held.
  // Without `send_hello` the stream stays silent until the server ends it.
  void Start(v1::SubscribeRequest hello, bool send_hello) {
    stub_->async()->Subscribe(&context_, this);
    // Held while the read chain lives (released by its last read, or by Stop for a paused
    // stream), so that OnDone never races a resumed read.
    AddHold();
    if (send_hello) Send(std::move(hello));
    StartRead(&response_);
    StartCall();
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      absl::MutexLock lock(&fleet_->mu_);
      ReleaseHoldLocked();
      return;
    }
    const bool first = !got_first_;
    got_first_ = true;
    v1::SubscribeRequest reply;
    bool cancel = false;
    if (fleet_->OnMessage(slot_, response_, first, &reply, &cancel)) Send(std::move(reply));
    if (cancel) context_.TryCancel();
    absl::MutexLock lock(&fleet_->mu_);
    if (fleet_->slots_[static_cast<size_t>(slot_)].stalled && !fleet_->stopping_) {
      paused_ = true;  // SetStalled(false) or Stop picks the stream up again
      return;
    }
    StartRead(&response_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&write_mu_);
    write_in_flight_ = false;
    if (!ok) {
      queue_.clear();
      return;
    }
    if (queue_.empty()) return;
    write_in_flight_ = true;
    writing_ = std::move(queue_.front());
    queue_.erase(queue_.begin());
    StartWrite(&writing_);
  }

  // The fleet deletes the stream later, on its own thread: deleting it here would destroy the
  // channel (its last reference) on a thread of that channel's callback queue, which gRPC 1.51
  // answers with a double free.
  void OnDone(const grpc::Status&) override { fleet_->OnStreamDone(slot_, this, got_first_); }

  // With fleet_->mu_ held. The call is alive while the hold is (gRPC frees it before OnDone),
  // so these only touch it before the hold is released.
  void Cancel() {
    if (!hold_released_) context_.TryCancel();
  }
  void Resume() {
    if (!paused_) return;
    paused_ = false;
    StartRead(&response_);
  }
  void ReleasePaused() {
    if (!paused_) return;
    paused_ = false;
    ReleaseHoldLocked();
  }

 private:
  void Send(v1::SubscribeRequest request) {
    absl::MutexLock lock(&write_mu_);
    if (write_in_flight_) {
      queue_.push_back(std::move(request));
      return;
    }
    write_in_flight_ = true;
    writing_ = std::move(request);
    StartWrite(&writing_);
  }

  SubscriberFleet* const fleet_;
  const int slot_;
  std::unique_ptr<v1::Distribution::Stub> stub_;
  grpc::ClientContext context_;
  v1::SubscribeResponse response_;
  bool got_first_ = false;      // touched only by the single outstanding read
  bool paused_ = false;         // guarded by fleet_->mu_
  bool hold_released_ = false;  // guarded by fleet_->mu_

  // OnDone runs on another thread (RemoveHold never calls it inline).
  void ReleaseHoldLocked() {
    hold_released_ = true;
    RemoveHold();
  }
  absl::Mutex write_mu_;
  std::vector<v1::SubscribeRequest> queue_ ABSL_GUARDED_BY(write_mu_);
  v1::SubscribeRequest writing_;
  bool write_in_flight_ ABSL_GUARDED_BY(write_mu_) = false;
};

SubscriberFleet::SubscriberFleet(FleetOptions options, int clients)
    : options_(std::move(options)), slots_(static_cast<size_t>(clients)) {}

SubscriberFleet::~SubscriberFleet() { Stop(); }

void SubscriberFleet::Start() {
  {
    absl::MutexLock lock(&mu_);
    for (int i = 0; i < static_cast<int>(slots_.size()); ++i) Connect(i);
  }
  reconnector_ = std::thread([this] { ReconnectLoop(); });
}

bool SubscriberFleet::Stop(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  due_.clear();
  const absl::Condition all_ended(
      +[](int* open) { return *open == 0; }, &open_streams_);
  // In a churn every stream ends by itself (after its first message, or at the server's hello
  // deadline). Cancelling one whose channel is still connecting would leave gRPC 1.51 holding
  // that connection open in this process, where it counts against the server (seen under load:
  // a server socket whose peer was this process, 60 s after the storm). So let them end first.
  if (options_.churn && mu_.AwaitWithTimeout(all_ended, timeout)) {
    mu_.Unlock();
    if (reconnector_.joinable()) reconnector_.join();
    mu_.Lock();
    DeleteFinishedLocked();
    return true;
  }
  for (Slot& slot : slots_) {
    if (slot.stream == nullptr) continue;
    slot.stream->Cancel();
    slot.stream->ReleasePaused();
  }
  const bool ended = mu_.AwaitWithTimeout(all_ended, timeout);
  mu_.Unlock();
  if (reconnector_.joinable()) reconnector_.join();
  mu_.Lock();
  DeleteFinishedLocked();
  return ended;
}

void SubscriberFleet::Connect(int i) {
  Slot& slot = slots_[static_cast<size_t>(i)];
  ++slot.connects;
  // A distinct channel argument and a local subchannel pool: one TCP connection per client,
  // and a fresh one per attempt, as a real client process would have.
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetString("certcast.test.client", absl::StrCat(i, "-", slot.connects));
  if (options_.fixed_window) args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  auto channel =
      grpc::CreateCustomChannel(options_.target, grpc::InsecureChannelCredentials(), args);
  v1::SubscribeRequest hello;
  hello.mutable_hello()->set_client_id(absl::StrCat(options_.client_id_prefix, "-", i));
  hello.mutable_hello()->set_namespace_(options_.ns);
  v1::HeldCertificate* held = hello.mutable_hello()->add_certificates();
  held->set_name(options_.certificate);
  held->set_version(slot.version);
  held->set_fingerprint(slot.fingerprint);
  auto* stream = new Stream(this, i, std::move(channel));
  slot.stream = stream;
  ++open_streams_;
  ++stats_.streams_started;
  stream->Start(std::move(hello), !(options_.churn && slot.connects % 3 == 0));
}

bool SubscriberFleet::OnMessage(int i, const v1::SubscribeResponse& response, bool first,
                                v1::SubscribeRequest* reply, bool* cancel) {
  const bool is_update = response.kind_case() == v1::SubscribeResponse::kUpdate;
  const bool matches = !is_update || PairMatches(response.update());
  absl::MutexLock lock(&mu_);
  Slot& slot = slots_[static_cast<size_t>(i)];
  if (first) {
    ++stats_.live;
    slot.failures = 0;
    *cancel = options_.churn;
  }
  if (response.kind_case() == v1::SubscribeResponse::kInSync) ++stats_.in_syncs;
  if (!is_update) return false;
  const v1::CertificateUpdate& update = response.update();
  ++stats_.updates;
  ++slot.updates;
  if (!matches) ++stats_.torn_pairs;
  std::set<std::string>& fingerprints = seen_[update.version()];
  if (fingerprints.insert(update.fingerprint()).second && fingerprints.size() > 1) {
    ++stats_.version_conflicts;
  }
  slot.version = update.version();
  slot.fingerprint = update.fingerprint();
  if (!options_.ack) return false;
  v1::Ack* ack = reply->mutable_ack();
  ack->set_name(update.name());
  ack->set_version(update.version());
  ack->set_nonce(update.nonce());
  return true;
}

void SubscriberFleet::OnStreamDone(int i, Stream* stream, bool got_first) {
  absl::MutexLock lock(&mu_);
  Slot& slot = slots_[static_cast<size_t>(i)];
  if (slot.stream == stream) slot.stream = nullptr;
  finished_.push_back(stream);
  --open_streams_;
  ++stats_.streams_ended;
  if (got_first) --stats_.live;
  if (stopping_) return;
  absl::Duration delay;
  if (!options_.churn) {
    if (!got_first) ++slot.failures;
    // Exponential backoff with jitter, like the real client (but from 50 ms, capped at 2 s).
    static thread_local std::minstd_rand random(std::random_device{}());
    delay = std::min(absl::Milliseconds(50) * (1 << std::min(slot.failures, 6)), absl::Seconds(2));
    delay = delay * (0.8 + 0.4 * std::uniform_real_distribution<double>(0, 1)(random));
  }
  due_.emplace(absl::Now() + delay, i);
}

void SubscriberFleet::DeleteFinishedLocked() {
  std::vector<Stream*> finished;
  finished.swap(finished_);
  mu_.Unlock();
  for (Stream* stream : finished) delete stream;
  mu_.Lock();
}

void SubscriberFleet::ReconnectLoop() {
  absl::MutexLock lock(&mu_);
  while (!stopping_) {
    DeleteFinishedLocked();
    const absl::Time now = absl::Now();
    while (!due_.empty() && due_.begin()->first <= now) {
      const int i = due_.begin()->second;
      due_.erase(due_.begin());
      Connect(i);
    }
    const absl::Time next = due_.empty()
                                ? now + absl::Milliseconds(100)
                                : std::min(due_.begin()->first, now + absl::Milliseconds(100));
    mu_.AwaitWithDeadline(
        absl::Condition(
            +[](SubscriberFleet* fleet) ABSL_NO_THREAD_SAFETY_ANALYSIS {
              return fleet->stopping_ || !fleet->finished_.empty() ||
                     (!fleet->due_.empty() && fleet->due_.begin()->first <= absl::Now());
            },
            this),
        next);
  }
}

namespace {

// Checked with OpenSSL directly rather than with certcast's own validator, so that a broken
// validator cannot hide a torn pair: the key matches the leaf, the fingerprint is the leaf's, and
// a CA, when present, issued the last certificate of the chain.
bool IsMatchingPair(const v1::CertificateUpdate& update) {
  auto read_certs = [](const std::string& pem) {
    std::vector<std::unique_ptr<X509, decltype(&X509_free)>> certs;
    std::unique_ptr<BIO, decltype(&BIO_free)> bio(
        BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
    while (X509* cert = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
      certs.emplace_back(cert, X509_free);
    }
    ERR_clear_error();
    return certs;
  };
  auto chain = read_certs(update.chain_pem());
  if (chain.empty()) return false;
  std::unique_ptr<BIO, decltype(&BIO_free)> key_bio(
      BIO_new_mem_buf(update.private_key_pem().data(),
                      static_cast<int>(update.private_key_pem().size())),
      BIO_free);
  std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)> key(
      PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr), EVP_PKEY_free);
  if (key == nullptr || EVP_PKEY_eq(X509_get0_pubkey(chain.front().get()), key.get()) != 1) {
    return false;
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  X509_digest(chain.front().get(), EVP_sha256(), digest, &length);
  std::string hex;
  for (unsigned int i = 0; i < length; ++i) absl::StrAppendFormat(&hex, "%02x", digest[i]);
  if (hex != update.fingerprint()) return false;
  if (update.ca_pem().empty()) return true;
  auto cas = read_certs(update.ca_pem());
  for (const auto& ca : cas) {
    if (X509_check_issued(ca.get(), chain.back().get()) == X509_V_OK) return true;
  }
  return false;
}

}  // namespace

std::string SubscriberFleet::MaterialDigest(const std::string& chain_pem, absl::string_view key_pem,
                                            const std::string& ca_pem) {
  return Sha256Hex(absl::StrCat(chain_pem, "\n--\n", key_pem, "\n--\n", ca_pem));
}

std::set<std::string> SubscriberFleet::MaterialsSeen() {
  absl::MutexLock lock(&pairs_mu_);
  std::set<std::string> digests;
  for (const auto& [digest, matches] : pair_verdicts_) digests.insert(digest);
  return digests;
}

bool SubscriberFleet::PairMatches(const v1::CertificateUpdate& update) {
  const std::string digest =
      MaterialDigest(update.chain_pem(), update.private_key_pem(), update.ca_pem());
  {
    absl::MutexLock lock(&pairs_mu_);
    auto it = pair_verdicts_.find(digest);
    if (it != pair_verdicts_.end()) return it->second;
  }
  const bool ok = IsMatchingPair(update);
  absl::MutexLock lock(&pairs_mu_);
  pair_verdicts_[digest] = ok;
  return ok;
}

void SubscriberFleet::SetStalled(int i, bool stalled) {
  absl::MutexLock lock(&mu_);
  Slot& slot = slots_[static_cast<size_t>(i)];
  slot.stalled = stalled;
  if (!stalled && slot.stream != nullptr) slot.stream->Resume();
}

std::pair<uint64_t, std::string> SubscriberFleet::Held(int i) {
  absl::MutexLock lock(&mu_);
  const Slot& slot = slots_[static_cast<size_t>(i)];
  return {slot.version, slot.fingerprint};
}

int64_t SubscriberFleet::UpdatesOf(int i) {
  absl::MutexLock lock(&mu_);
  return slots_[static_cast<size_t>(i)].updates;
}

int SubscriberFleet::CountHolding(uint64_t version, const std::string& fingerprint, int first,
                                  int last) {
  absl::MutexLock lock(&mu_);
  if (last < 0) last = static_cast<int>(slots_.size());
  int count = 0;
  for (int i = first; i < last; ++i) {
    const Slot& slot = slots_[static_cast<size_t>(i)];
    if (slot.version == version && slot.fingerprint == fingerprint) ++count;
  }
  return count;
}

std::map<uint64_t, std::set<std::string>> SubscriberFleet::Seen() {
  absl::MutexLock lock(&mu_);
  return seen_;
}

bool SubscriberFleet::AwaitVersion(uint64_t version, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto received = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return !seen_.empty() && seen_.rbegin()->first >= version;
  };
  return mu_.AwaitWithTimeout(absl::Condition(&received), timeout);
}

FleetStats SubscriberFleet::stats() {
  absl::MutexLock lock(&mu_);
  return stats_;
}

long RssKb(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

int OpenFds(int pid) {
  DIR* dir = opendir(absl::StrCat("/proc/", pid, "/fd").c_str());
  if (dir == nullptr) return -1;
  int count = 0;
  while (struct dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count;
}

void RaiseFileLimit() {
  struct rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return;
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
}

}  // namespace certcast::scenario
