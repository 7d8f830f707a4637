#include "client/stream_state.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/fixtures/fake_filesystem.h"

namespace certcast {
namespace {

using ::certcast::fixtures::Chain;
using ::certcast::fixtures::FakeFilesystem;
using ::certcast::fixtures::MakeChain;
using ::testing::HasSubstr;

// An in-memory sink that holds the last fingerprint applied.
class MemorySink final : public Sink {
 public:
  std::string name() const override { return "files"; }
  absl::StatusOr<ApplyResult> Apply(const VersionedMaterial& version) override {
    if (fingerprint_ == version.fingerprint) return ApplyResult::kUnchanged;
    fingerprint_ = version.fingerprint;
    return ApplyResult::kWritten;
  }
  absl::StatusOr<std::string> HeldFingerprint(const std::string&) override {
    if (fingerprint_.empty()) return absl::NotFoundError("nothing held");
    return fingerprint_;
  }
  absl::Status Remove(const std::string&) override { return absl::OkStatus(); }
  std::string LocationOf(const std::string&) const override { return ""; }

 private:
  std::string fingerprint_;
};

v1::SubscribeResponse Update(uint64_t version, const Chain& chain) {
  v1::SubscribeResponse response;
  v1::CertificateUpdate* update = response.mutable_update();
  update->set_name("wildcard");
  update->set_version(version);
  update->set_nonce(absl::StrCat("nonce-", version));
  update->set_fingerprint(chain.leaf.fingerprint);
  update->set_chain_pem(chain.material.chain_pem);
  update->set_private_key_pem(chain.leaf.key_pem);
  update->set_ca_pem(chain.material.ca_pem);
  return response;
}

class StreamStateTest : public ::testing::Test {
 protected:
  StreamStateTest() : store_(&fs_, "/state") {
    EXPECT_TRUE(store_.Init().ok());
    ServingVerifier::Options options;
    options.endpoints = {ServingEndpoint{"tenant-a.example.test", "443", "tenant-a:443"}};
    options.timeout = absl::Minutes(2);
    verifier_ = std::make_unique<ServingVerifier>(
        options,
        [this](const ServingEndpoint&, const std::string&,
               absl::Duration) -> absl::StatusOr<std::string> {
          ++probes_;
          if (served_.empty()) return absl::UnavailableError("tenant-a:443: connection refused");
          return served_;
        });
  }

  std::unique_ptr<StreamState> Make(bool verify) {
    StreamState::Options options;
    options.namespace_ = "tenant-a";
    options.client_id = "client-1";
    options.certificates = {"wildcard"};
    auto state =
        std::make_unique<StreamState>(options, std::vector<Sink*>{&sink_}, std::vector<Hook*>{},
                                      &store_, verify ? verifier_.get() : nullptr, &clock_);
    state->Init();
    state->Hello();
    return state;
  }

  // Advances past any backoff and runs what is due.
  std::vector<v1::SubscribeRequest> Later(StreamState& state, absl::Duration by) {
    clock_.Advance(by);
    return state.RunDue(clock_.Now());
  }

  FakeFilesystem fs_;
  ClientStateStore store_;
  MemorySink sink_;
  FakeClock clock_{absl::Now()};
  std::string served_;  // what the fake endpoint serves; empty: unreachable
  int probes_ = 0;
  std::unique_ptr<ServingVerifier> verifier_;
  const Chain v1_ = MakeChain();
  const Chain v2_ = MakeChain();
};

// Without --verify an applied version is ACKed at once and says nothing was verified.
TEST_F(StreamStateTest, WithoutVerifyAcksAtOnceUnverified) {
  std::unique_ptr<StreamState> state = Make(/*verify=*/false);
  v1::SubscribeResponse update = Update(1, v1_);
  std::vector<v1::SubscribeRequest> out = state->Receive(update);
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(out[0].has_ack());
  EXPECT_EQ(out[0].ack().nonce(), "nonce-1");
  EXPECT_FALSE(out[0].ack().serving_verified());
  EXPECT_EQ(probes_, 0);
}

// Any message from the server (a heartbeat too) marks the stream up and stamps the time;
// the transport's Disconnected() marks it down and keeps the time of the last message.
TEST_F(StreamStateTest, LivenessFollowsMessagesAndTheEndOfTheStream) {
  std::unique_ptr<StreamState> state = Make(/*verify=*/false);
  EXPECT_FALSE(state->liveness().connected);
  EXPECT_EQ(state->liveness().last_message_at, absl::InfinitePast());
  v1::SubscribeResponse heartbeat;
  heartbeat.mutable_heartbeat()->set_interval_seconds(30);
  state->Receive(heartbeat);
  const absl::Time first = clock_.Now();
  EXPECT_TRUE(state->liveness().connected);
  EXPECT_EQ(state->liveness().last_message_at, first);
  clock_.Advance(absl::Seconds(5));
  state->Disconnected();
  EXPECT_FALSE(state->liveness().connected);
  EXPECT_EQ(state->liveness().last_message_at, first);
  v1::SubscribeResponse update = Update(1, v1_);
  state->Receive(update);
  EXPECT_TRUE(state->liveness().connected);
  EXPECT_EQ(state->liveness().last_message_at, first + absl::Seconds(5));
}

// With --verify the ACK waits until the endpoint serves the new leaf, then says it was verified.
TEST_F(StreamStateTest, AcksOnlyOnceTheEndpointServesTheNewLeaf) {
  std::unique_ptr<StreamState> state = Make(/*verify=*/true);
  v1::SubscribeResponse update = Update(1, v1_);
  std::vector<v1::SubscribeRequest> out = state->Receive(update);
  EXPECT_TRUE(out.empty()) << "ACKed before the endpoint was reachable";
  EXPECT_TRUE(Later(*state, absl::Seconds(10)).empty());
  EXPECT_LT(state->NextDue(), absl::InfiniteFuture());

  served_ = v1_.leaf.fingerprint;
  out = Later(*state, absl::Seconds(10));
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(out[0].has_ack());
  EXPECT_EQ(out[0].ack().version(), 1u);
  EXPECT_EQ(out[0].ack().nonce(), "nonce-1");
  EXPECT_TRUE(out[0].ack().serving_verified());
  EXPECT_TRUE(state->applied()["wildcard"].serving_verified);
  EXPECT_EQ(state->NextDue(), absl::InfiniteFuture());
}

// An endpoint still serving the previous leaf after --verify-timeout: a transient NACK naming
// the address and the fingerprint it saw; the check goes on and ACKs once the endpoint reloads.
TEST_F(StreamStateTest, NacksWithTheSeenFingerprintThenAcksAfterTheReload) {
  std::unique_ptr<StreamState> state = Make(/*verify=*/true);
  served_ = v1_.leaf.fingerprint;
  v1::SubscribeResponse first = Update(1, v1_);
  ASSERT_EQ(state->Receive(first).size(), 1u);

  v1::SubscribeResponse second = Update(2, v2_);
  EXPECT_TRUE(state->Receive(second).empty());
  EXPECT_TRUE(Later(*state, absl::Minutes(1)).empty()) << "NACKed before the timeout";
  std::vector<v1::SubscribeRequest> out = Later(*state, absl::Minutes(2));
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(out[0].has_nack());
  EXPECT_EQ(out[0].nack().version(), 2u);
  ASSERT_EQ(out[0].nack().errors_size(), 1);
  const v1::SinkError& error = out[0].nack().errors(0);
  EXPECT_EQ(error.sink(), "serving");
  EXPECT_TRUE(error.transient());
  EXPECT_EQ(error.served_fingerprint(), v1_.leaf.fingerprint);
  EXPECT_EQ(error.error(),
            "written, but tenant-a:443 still serves the previous certificate "
            "(fingerprint " +
                v1_.leaf.fingerprint + ")");
  std::string why;
  EXPECT_FALSE(state->Ready(&why));
  EXPECT_THAT(why, HasSubstr("still serves the previous certificate"));
  EXPECT_TRUE(Later(*state, absl::Minutes(1)).empty()) << "NACKed twice";

  served_ = v2_.leaf.fingerprint;
  out = Later(*state, absl::Minutes(1));
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(out[0].has_ack());
  EXPECT_EQ(out[0].ack().version(), 2u);
  EXPECT_TRUE(out[0].ack().serving_verified());
  EXPECT_TRUE(state->Ready(&why)) << why;
  EXPECT_EQ(state->counters().serving_failures_by_certificate["wildcard"], 1u);
}

// On a new stream the server reports the client in sync; the client proves serving again and
// answers with that stream's nonce.
TEST_F(StreamStateTest, ProvesServingAgainWhenInSyncOnANewStream) {
  std::unique_ptr<StreamState> state = Make(/*verify=*/true);
  served_ = v1_.leaf.fingerprint;
  v1::SubscribeResponse update = Update(1, v1_);
  ASSERT_EQ(state->Receive(update).size(), 1u);

  state->Hello();
  v1::SubscribeResponse in_sync;
  in_sync.mutable_in_sync()->set_name("wildcard");
  in_sync.mutable_in_sync()->set_version(1);
  in_sync.mutable_in_sync()->set_nonce("stream-2");
  in_sync.mutable_in_sync()->set_fingerprint(v1_.leaf.fingerprint);
  std::vector<v1::SubscribeRequest> out = state->Receive(in_sync);
  ASSERT_EQ(out.size(), 1u);
  ASSERT_TRUE(out[0].has_ack());
  EXPECT_EQ(out[0].ack().nonce(), "stream-2");
  EXPECT_TRUE(out[0].ack().serving_verified());
}

}  // namespace
}  // namespace certcast
