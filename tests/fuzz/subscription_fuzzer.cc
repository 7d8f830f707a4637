// Fuzzes the hello/ACK/NACK sequence of a Subscribe stream: SubscriptionState
// (server/subscription.h) driven the way its transport (SubscribeStream, server/distribution.cc)
// drives it, with client messages, authentication results, new versions, heartbeats, policy
// changes, write completions and the end of the stream in the order the input chooses. Client
// messages are either raw bytes (any SubscribeRequest protobuf can parse) or built from the input
// around the names and nonces in play, so ACKs and NACKs can match what was sent.
//
// Besides "no crash, no leak, no undefined behaviour", it checks the contract the transport
// relies on: at most one write in flight, nothing handed out after Finish, at most one pending
// message per certificate plus a heartbeat, updates of a certificate in increasing versions
// (latest wins), and messages and heartbeats only about certificates the stream was admitted to.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "certcast/v1/certcast.pb.h"
#include "common/clock.h"
#include "google/protobuf/stubs/logging.h"
#include "server/authorizer.h"
#include "server/fleet.h"
#include "server/publication.h"
#include "server/subscription.h"
#include "spdlog/spdlog.h"

namespace certcast {
namespace {

const char* const kNames[] = {"web", "api", "db", "unknown"};

// Grants "web" and "api" (and "db" until a policy change takes it away) to tenant-a's proven
// identities; "unknown" is not distributed.
class FuzzAuthorizer final : public Authorizer {
 public:
  absl::Status AuthorizeSubscribe(const PeerIdentity& peer, const std::string& namespace_,
                                  const std::string& certificate) override {
    if (!peer.proven()) return absl::UnauthenticatedError("no identity");
    if (namespace_ != peer.namespace_) return absl::PermissionDeniedError("other namespace");
    if (certificate == "web" || certificate == "api") return absl::OkStatus();
    if (certificate == "db" && db_granted) return absl::OkStatus();
    return absl::PermissionDeniedError("not granted");
  }
  absl::Status AuthorizeAdmin(const PeerIdentity&) override {
    return absl::PermissionDeniedError("no");
  }
  absl::StatusOr<InspectionScope> AuthorizeInspection(const PeerIdentity&) override {
    return absl::PermissionDeniedError("no");
  }
  bool db_granted = true;
};

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "contract violated: %s\n", what);
    std::abort();
  }
}

std::string PickName(FuzzedDataProvider& in) {
  if (in.ConsumeBool()) return kNames[in.ConsumeIntegralInRange<size_t>(0, 3)];
  return in.ConsumeRandomLengthString(80);
}

class Driver {
 public:
  explicit Driver(FuzzedDataProvider& in)
      : in_(in),
        fleet_(&clock_, absl::Hours(1)),
        state_(
            SubscriptionState::Options{4, absl::Seconds(30)}, Transport(),
            [](const std::string& name) { return name != "unknown"; }, &fleet_, &authorizer_,
            &counters_) {}

  void Run() {
    while (in_.remaining_bytes() > 0 && !closed_) Step();
    if (in_flight_) WriteDone(true);
    if (!closed_) state_.Close();
  }

 private:
  static PeerIdentity Transport() {
    PeerIdentity identity;
    identity.peer = "ipv4:127.0.0.1:5000";
    return identity;
  }
  static PeerIdentity TenantA() {
    PeerIdentity identity = Transport();
    identity.identity = "spiffe://example.org/ns/tenant-a/sa/client";
    identity.kind = "mtls";
    identity.namespace_ = "tenant-a";
    identity.name = "client";
    return identity;
  }

  void Step() {
    switch (in_.ConsumeIntegralInRange<int>(0, 9)) {
      case 0:
      case 1:
        if (phase_ == Phase::kReading) Receive();
        break;
      case 2:
        if (phase_ == Phase::kAuthenticating) Admit();
        break;
      case 3:
        if (registered()) Offer();
        break;
      case 4:
        if (registered()) {
          state_.OfferHeartbeat();
          StartWrite();
        }
        break;
      case 5:
        if (in_flight_) WriteDone(in_.ConsumeIntegralInRange<int>(0, 7) != 0);
        break;
      case 6:
        if (registered() && !finished_) {
          authorizer_.db_granted = in_.ConsumeBool();
          if (std::optional<StreamEnd> end = state_.Reauthorize()) End();
        }
        break;
      case 7:
        if (!finished_) End();  // the client went away, or the hello deadline passed
        break;
      case 8:
        if (finished_ && !in_flight_) {
          state_.Close();
          closed_ = true;
        }
        break;
      default:
        CheckHeartbeat();
        break;
    }
    Check(state_.pending_writes() <= state_.names().size() + 1,
          "more than one pending message per certificate plus a heartbeat");
  }

  bool registered() const { return phase_ == Phase::kSubscribed; }

  void Receive() {
    v1::SubscribeRequest request;
    switch (in_.ConsumeIntegralInRange<int>(0, 3)) {
      case 0:
        if (!request.ParseFromString(in_.ConsumeRandomLengthString(256))) return;
        break;
      case 1: {
        v1::Hello* hello = request.mutable_hello();
        hello->set_namespace_(in_.ConsumeBool() ? "tenant-a" : in_.ConsumeRandomLengthString(70));
        hello->set_client_id(in_.ConsumeBool() ? "node-1" : in_.ConsumeRandomLengthString(300));
        const int count = in_.ConsumeIntegralInRange<int>(0, 6);
        for (int i = 0; i < count; ++i) {
          v1::HeldCertificate* held = hello->add_certificates();
          held->set_name(PickName(in_));
          held->set_version(in_.ConsumeIntegralInRange<uint64_t>(0, 4));
          held->set_fingerprint(in_.ConsumeBool() ? "fp-web-1" : in_.ConsumeRandomLengthString(20));
        }
        break;
      }
      default: {
        // An ACK or NACK, usually of something this stream was sent.
        std::string name = PickName(in_);
        uint64_t version = in_.ConsumeIntegralInRange<uint64_t>(0, 8);
        std::string nonce = in_.ConsumeRandomLengthString(40);
        if (!sent_.empty() && in_.ConsumeBool()) {
          const auto& [sent_name, sent_version, sent_nonce] =
              sent_[in_.ConsumeIntegralInRange<size_t>(0, sent_.size() - 1)];
          name = sent_name;
          version = sent_version;
          nonce = sent_nonce;
        }
        if (in_.ConsumeBool()) {
          v1::Ack* ack = request.mutable_ack();
          ack->set_name(name);
          ack->set_version(version);
          ack->set_nonce(nonce);
          if (in_.ConsumeBool()) ack->add_warnings(in_.ConsumeRandomLengthString(60));
        } else {
          v1::Nack* nack = request.mutable_nack();
          nack->set_name(name);
          nack->set_version(version);
          nack->set_nonce(nonce);
          v1::SinkError* error = nack->add_errors();
          error->set_sink(in_.ConsumeRandomLengthString(20));
          error->set_error(in_.ConsumeRandomLengthString(100));
          error->set_transient(in_.ConsumeBool());
        }
      }
    }
    absl::StatusOr<SubscriptionState::Next> next = state_.Receive(request);
    if (!next.ok()) {
      End();
      return;
    }
    if (*next == SubscriptionState::Next::kAuthenticate) phase_ = Phase::kAuthenticating;
  }

  void Admit() {
    absl::StatusOr<PeerIdentity> identity = TenantA();
    if (in_.ConsumeIntegralInRange<int>(0, 5) == 0) {
      identity = absl::UnauthenticatedError("token refused");
    } else if (in_.ConsumeIntegralInRange<int>(0, 5) == 0) {
      identity->namespace_ = "tenant-b";
    }
    std::string denial_reason;
    absl::StatusOr<std::vector<std::string>> names =
        state_.Admit(std::move(identity), &denial_reason);
    if (!names.ok()) {
      End();
      return;
    }
    admitted_ = std::set<std::string>(names->begin(), names->end());
    for (const std::string& name : *names) {
      Check(name != "unknown", "admitted a certificate this server does not distribute");
    }
    std::vector<std::shared_ptr<const Publication>> current;
    for (const std::string& name : *names) {
      current.push_back(in_.ConsumeBool() ? Publish(name) : nullptr);
    }
    state_.Subscribe(current);
    phase_ = Phase::kSubscribed;
    StartWrite();
  }

  // A new version of `name`, as the publisher makes them: versions only increase.
  std::shared_ptr<const Publication> Publish(const std::string& name) {
    const uint64_t version = ++versions_[name];
    CertificateInfo info;
    info.fingerprint = "fp-" + name + "-" + std::to_string(version);
    CertificateMaterial material;
    material.chain_pem = "chain";
    material.key_pem = SecretBytes("key");
    return MakePublication(name, version, false, info, material);
  }

  // The hub offers versions of the certificates it distributes, whether subscribed or not.
  void Offer() {
    state_.OfferUpdate(Publish(kNames[in_.ConsumeIntegralInRange<size_t>(0, 3)]));
    StartWrite();
  }

  void StartWrite() {
    if (finished_ || in_flight_) return;
    std::optional<Outgoing> next = state_.TakeWrite();
    if (!next.has_value()) return;
    in_flight_ = true;
    Check(!state_.TakeWrite().has_value(), "a second write handed out while one is in flight");
    if (next->kind == Outgoing::kHeartbeat) return;
    Check(next->publication != nullptr, "an update or in-sync without its publication");
    const std::string& name = next->publication->name;
    Check(admitted_.count(name) > 0,
          "a message about a certificate the stream was not admitted to");
    if (next->kind == Outgoing::kUpdate) {
      uint64_t& last = last_update_[name];
      Check(next->publication->version > last, "an update older than one already written");
      last = next->publication->version;
      sent_.push_back({name, next->publication->version, next->publication->nonce});
    }
  }

  void WriteDone(bool ok) {
    in_flight_ = false;
    state_.WriteDone(ok);
    if (!ok) {
      End();
      return;
    }
    StartWrite();
  }

  void End() {
    if (finished_) return;
    finished_ = true;
    state_.Finish();
    Check(!in_flight_ || !state_.TakeWrite().has_value(), "a write handed out after Finish");
    if (!in_flight_) Check(!state_.TakeWrite().has_value(), "a write handed out after Finish");
  }

  void CheckHeartbeat() {
    const v1::SubscribeResponse heartbeat = state_.Heartbeat();
    for (const auto& certificate : heartbeat.heartbeat().versions()) {
      Check(admitted_.count(certificate.name()) > 0,
            "a heartbeat names a certificate the stream was not admitted to");
    }
  }

  enum class Phase { kReading, kAuthenticating, kSubscribed };

  FuzzedDataProvider& in_;
  FakeClock clock_;
  Fleet fleet_;
  FuzzAuthorizer authorizer_;
  StreamCounters counters_;
  SubscriptionState state_;
  Phase phase_ = Phase::kReading;
  bool in_flight_ = false;
  bool finished_ = false;
  bool closed_ = false;
  std::set<std::string> admitted_;
  std::map<std::string, uint64_t> versions_;
  std::map<std::string, uint64_t> last_update_;
  struct Sent {
    std::string name;
    uint64_t version;
    std::string nonce;
  };
  std::vector<Sent> sent_;
};

}  // namespace
}  // namespace certcast

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // A log line per refused hello, and protobuf's complaints about the fuzzer's invalid UTF-8,
  // would swamp the output.
  spdlog::set_level(spdlog::level::off);
  google::protobuf::SetLogHandler(nullptr);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  certcast::Driver(in).Run();
  return 0;
}
