// Unit tests of the staged rollout decisions, with a fake clock, the real fleet and hub (no
// streams), and policies parsed from YAML.
#include "server/rollout.h"

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/authorizer.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/fixtures/fake_filesystem.h"
#include "tests/fixtures/fake_source.h"

namespace certcast {
namespace {

using ::testing::HasSubstr;

constexpr char kPolicy[] = R"(certificates:
  wildcard:
    namespaces: ["*"]
    rollout:
      waves:
        - name: canary
          namespaces: ["canary"]
          soak: 10m
        - name: early
          namespaces: ["tenant-a*"]
      wave_timeout: 30m
      expiry_margin: 72h
)";

class RolloutControllerTest : public ::testing::Test {
 protected:
  RolloutControllerTest()
      : clock_(absl::Now()),
        fleet_(&clock_, absl::Hours(1)),
        hub_({"wildcard"}, DistributionHub::Options(), &fleet_, &authorizer_) {
    absl::StatusOr<Policy> policy = Policy::Parse(kPolicy, "test", {"wildcard"});
    EXPECT_TRUE(policy.ok()) << policy.status();
    policy_ = std::make_shared<const Policy>(*std::move(policy));
    controller_ = std::make_unique<RolloutController>([this] { return policy_; }, &fleet_, &hub_,
                                                      &clock_, RolloutController::Options());
  }

  // A wildcard chain and key valid for `lifetime` from now, issued `age` ago (replicas publish
  // only a leaf issued later than the current one).
  static CertificateMaterial Material(absl::Duration lifetime,
                                      absl::Duration age = absl::Hours(1)) {
    fixtures::Chain chain = fixtures::MakeChain();
    fixtures::CertOptions leaf;
    leaf.dns_names = {"*.example.test"};
    leaf.not_before = absl::Now() - age;
    leaf.not_after = absl::Now() + lifetime;
    fixtures::Issued issued = fixtures::MakeCert(chain.intermediate, leaf);
    CertificateMaterial material;
    material.chain_pem = issued.cert_pem + chain.intermediate.cert_pem;
    material.key_pem = SecretBytes(issued.key_pem);
    return material;
  }

  std::shared_ptr<const Publication> Publish(uint64_t version, absl::Duration lifetime) {
    CertificateMaterial material = Material(lifetime);
    ValidationOptions options;
    options.now = absl::Now();
    absl::StatusOr<CertificateInfo> info = ValidateMaterial("wildcard", material, options);
    EXPECT_TRUE(info.ok()) << info.status();
    auto publication = MakePublication("wildcard", version, false, *info, material);
    controller_->OnPublish(publication);
    return publication;
  }

  // A connected client of `ns` that was sent `publication`.
  uint64_t Connect(const std::string& ns, const Publication& publication) {
    ClientRecord record;
    record.client_id = "client-" + ns;
    record.namespace_ = ns;
    record.certificates.emplace_back();
    record.certificates.back().name = "wildcard";
    const uint64_t id = fleet_.Connect(std::move(record));
    fleet_.RecordSent(id, "wildcard", publication.version, publication.nonce, false);
    return id;
  }
  void Ack(uint64_t id, const Publication& publication) {
    fleet_.RecordSent(id, "wildcard", publication.version, publication.nonce, false);
    ASSERT_EQ(fleet_.RecordAck(id, "wildcard", publication.version, publication.nonce, ""),
              AckOutcome::kRecorded);
  }

  uint32_t Wave() { return controller_->Statuses()["wildcard"].wave; }

  // Replaces the policy and the controller; `options.namespaces` may give namespace labels.
  void UsePolicy(const std::string& yaml, RolloutController::Options options) {
    absl::StatusOr<Policy> policy = Policy::Parse(yaml, "test", {"wildcard"});
    ASSERT_TRUE(policy.ok()) << policy.status();
    policy_ = std::make_shared<const Policy>(*std::move(policy));
    controller_ = std::make_unique<RolloutController>([this] { return policy_; }, &fleet_, &hub_,
                                                      &clock_, std::move(options));
  }

  // Two replicas share a version store. The leader publishes version 2 (its rollout's start
  // stored with it) and moves it on to wave 2; the follower adopts version 2 from the store only
  // a second later, just before it is elected (or while it takes over), and leads before its next
  // tick. It must continue that rollout (same start, same wave), not start it over on its own
  // clock and overwrite the stored progress.
  void FailOverRightAfterTheFollowerAdoptsAVersion(bool adopted_before_election) {
    fixtures::FakeFilesystem fs;
    fs.AddDir("/state", 0700);
    auto opened = FileVersionStore::Open(&fs, "/state");
    ASSERT_TRUE(opened.ok()) << opened.status();
    std::unique_ptr<FileVersionStore> store = *std::move(opened);
    struct Lease final : Leadership {
      bool leader = false;
      bool IsLeader() const override { return leader; }
      std::string Leader() const override { return "the-other-replica"; }
    };
    struct Replica {
      Lease lease;
      std::unique_ptr<DistributionHub> hub;
      std::unique_ptr<RolloutController> rollout;
      std::unique_ptr<Publisher> publisher;
      fixtures::FakeSource* source = nullptr;
    };
    auto start = [&](Replica& replica) {
      replica.hub = std::make_unique<DistributionHub>(
          std::vector<std::string>{"wildcard"}, DistributionHub::Options(), &fleet_, &authorizer_);
      RolloutController::Options options;
      options.leadership = &replica.lease;
      replica.rollout = std::make_unique<RolloutController>([this] { return policy_; }, &fleet_,
                                                            replica.hub.get(), &clock_, options);
      PublisherOptions publisher_options;
      publisher_options.leadership = &replica.lease;
      replica.publisher = std::make_unique<Publisher>(store.get(), &clock_, replica.rollout.get(),
                                                      publisher_options);
      auto source = std::make_unique<fixtures::FakeSource>();
      replica.source = source.get();
      CertificateSpec spec;
      spec.name = "wildcard";
      spec.source = std::move(source);
      ASSERT_TRUE(replica.publisher->AddCertificate(std::move(spec)).ok());
      replica.rollout->Restore(replica.publisher.get());
    };
    Replica leader, follower;
    leader.lease.leader = true;
    start(leader);
    start(follower);
    leader.source->Set(Material(absl::Hours(24 * 60), absl::Hours(2)));
    ASSERT_EQ(leader.publisher->Evaluate("wildcard", true), Verdict::kSettled);
    ASSERT_TRUE(follower.publisher->Refresh("wildcard").ok());
    const uint64_t canary = Connect("canary", *leader.publisher->Current("wildcard"));
    Connect("tenant-a1", *leader.publisher->Current("wildcard"));
    leader.source->Set(Material(absl::Hours(24 * 90)));
    ASSERT_EQ(leader.publisher->Evaluate("wildcard", true), Verdict::kSettled);
    const std::optional<v1::Rollout> started = leader.rollout->Describe("wildcard");
    ASSERT_TRUE(started.has_value());
    Ack(canary, *leader.publisher->Current("wildcard"));
    leader.rollout->Tick();  // the canary acknowledged: its soak starts
    clock_.Advance(absl::Minutes(11));
    leader.rollout->Tick();  // soaked: wave 2 gets version 2, stored
    ASSERT_EQ(leader.rollout->Describe("wildcard")->wave(), 2u);

    clock_.Advance(absl::Seconds(1));
    if (adopted_before_election) {
      ASSERT_TRUE(follower.publisher->Refresh("wildcard").ok());  // adopts version 2
      ASSERT_EQ(follower.publisher->Current("wildcard")->version, 2u);
    }
    leader.lease.leader = false;  // the leader dies; the follower is elected before it ticks
    follower.lease.leader = true;
    ASSERT_TRUE(follower.publisher->TakeOver("wildcard").ok());  // adopts version 2 at the latest
    ASSERT_EQ(follower.publisher->Current("wildcard")->version, 2u);
    follower.rollout->Tick();

    const std::optional<v1::Rollout> continued = follower.rollout->Describe("wildcard");
    ASSERT_TRUE(continued.has_value());
    EXPECT_EQ(continued->version(), 2u);
    EXPECT_EQ(continued->state(), "rolling");
    EXPECT_EQ(continued->wave(), 2u) << "the new leader started the rollout over";
    EXPECT_EQ(FromProtoTime(continued->started_at()), FromProtoTime(started->started_at()))
        << "the new leader started the rollout over";
    state::v1::RolloutState stored;
    ASSERT_TRUE(stored.ParseFromString(follower.publisher->RolloutState("wildcard")));
    EXPECT_EQ(stored.wave(), 1u) << "the stored progress was overwritten";
    EXPECT_EQ(FromProtoTime(stored.started_at()), FromProtoTime(started->started_at()));
    EXPECT_EQ(follower.rollout->WaitingFor("wildcard", "tenant-a1"), 0u);
  }

  FakeClock clock_;
  Fleet fleet_;
  AllowAllAuthorizer authorizer_;
  DistributionHub hub_;
  std::shared_ptr<const Policy> policy_;
  std::unique_ptr<RolloutController> controller_;
};

// A new version reaches the canary wave first; the next wave starts only after every canary
// client acknowledged it and the 10-minute soak passed; the last wave completes the rollout.
TEST_F(RolloutControllerTest, WalksTheWavesAfterAcksAndSoak) {
  auto v1 = Publish(1, absl::Hours(24 * 60));
  const uint64_t canary = Connect("canary", *v1);
  const uint64_t early = Connect("tenant-a1", *v1);
  Connect("tenant-z", *v1);
  auto v2 = Publish(2, absl::Hours(24 * 90));
  EXPECT_EQ(Wave(), 1u);
  EXPECT_EQ(controller_->WaitingFor("wildcard", "canary"), 0u);
  EXPECT_EQ(controller_->WaitingFor("wildcard", "tenant-a1"), 2u);
  EXPECT_EQ(controller_->WaitingFor("wildcard", "tenant-z"), 3u);
  EXPECT_EQ(controller_->ExpectedVersions()("wildcard", "tenant-z", 2), 1u);

  controller_->Tick();
  EXPECT_EQ(Wave(), 1u) << "advanced before the canary acknowledged";
  Ack(canary, *v2);
  controller_->Tick();
  clock_.Advance(absl::Minutes(9));
  controller_->Tick();
  EXPECT_EQ(Wave(), 1u) << "advanced before the soak passed";
  EXPECT_EQ(controller_->Describe("wildcard")->waves(0).state(), "soaking");
  clock_.Advance(absl::Minutes(2));
  controller_->Tick();
  EXPECT_EQ(Wave(), 2u);
  EXPECT_EQ(controller_->WaitingFor("wildcard", "tenant-a1"), 0u);

  Ack(early, *v2);
  controller_->Tick();
  const v1::Rollout rollout = *controller_->Describe("wildcard");
  EXPECT_EQ(rollout.state(), "complete");
  EXPECT_EQ(controller_->WaitingFor("wildcard", "tenant-z"), 0u);
  EXPECT_EQ(controller_->ExpectedVersions()("wildcard", "tenant-z", 2), 2u);
}

// A wave chosen by label: the canary wave is every namespace labelled certcast.io/wave=canary.
// A namespace labelled while the rollout is under way joins the wave it now matches at once
// (OnNamespacesChanged), and the wave's progress counts the clients its labels put in it.
TEST_F(RolloutControllerTest, WavesChosenByLabelFollowLabelChanges) {
  auto namespaces = std::make_shared<std::shared_ptr<const kube::NamespaceSet>>(
      std::make_shared<const kube::NamespaceSet>(kube::NamespaceSet{
          {"shop-a", {{"certcast.io/wave", "canary"}}}, {"shop-b", {}}, {"shop-c", {}}}));
  RolloutController::Options options;
  options.namespaces = [namespaces] { return *namespaces; };
  UsePolicy(R"(certificates:
  wildcard:
    namespaces: ["*"]
    rollout:
      waves:
        - name: canary
          namespaceSelector: {matchLabels: {certcast.io/wave: canary}}
)",
            std::move(options));
  auto v1 = Publish(1, absl::Hours(24 * 60));
  const uint64_t canary = Connect("shop-a", *v1);
  const uint64_t joined = Connect("shop-b", *v1);
  Connect("shop-c", *v1);
  auto v2 = Publish(2, absl::Hours(24 * 90));
  EXPECT_EQ(controller_->WaitingFor("wildcard", "shop-a"), 0u);
  EXPECT_EQ(controller_->WaitingFor("wildcard", "shop-b"), 2u);
  EXPECT_EQ(controller_->ExpectedVersions()("wildcard", "shop-a", 2), 2u);
  EXPECT_EQ(controller_->ExpectedVersions()("wildcard", "shop-b", 2), 1u);

  *namespaces = std::make_shared<const kube::NamespaceSet>(
      kube::NamespaceSet{{"shop-a", {{"certcast.io/wave", "canary"}}},
                         {"shop-b", {{"certcast.io/wave", "canary"}}},
                         {"shop-c", {}}});
  controller_->OnNamespacesChanged();
  EXPECT_EQ(controller_->WaitingFor("wildcard", "shop-b"), 0u);
  EXPECT_EQ(controller_->ExpectedVersions()("wildcard", "shop-b", 2), 2u)
      << "the gate still holds back a namespace that joined the canary wave";
  EXPECT_EQ(controller_->ExpectedVersions()("wildcard", "shop-c", 2), 1u);

  Ack(canary, *v2);
  controller_->Tick();
  EXPECT_EQ(Wave(), 1u) << "advanced before shop-b, now in the canary wave, acknowledged";
  Ack(joined, *v2);
  controller_->Tick();
  EXPECT_EQ(controller_->Describe("wildcard")->state(), "complete");
  EXPECT_EQ(controller_->ExpectedVersions()("wildcard", "shop-c", 2), 2u);
}

// The start of a rollout is stored in the same write as its version. A server killed right after
// publishing, before the controller persisted anything (it never ticks here), resumes the rollout
// at wave 1 after a restart instead of sending the version to every wave.
TEST_F(RolloutControllerTest, ARestartRightAfterPublishingResumesTheRollout) {
  fixtures::FakeFilesystem fs;
  fs.AddDir("/state", 0700);
  struct Server {
    std::unique_ptr<FileVersionStore> store;
    std::unique_ptr<RolloutController> rollout;
    std::unique_ptr<Publisher> publisher;
    fixtures::FakeSource* source = nullptr;
  };
  auto start = [&](Server& server) {
    auto store = FileVersionStore::Open(&fs, "/state");
    ASSERT_TRUE(store.ok()) << store.status();
    server.store = *std::move(store);
    server.rollout = std::make_unique<RolloutController>([this] { return policy_; }, &fleet_, &hub_,
                                                         &clock_, RolloutController::Options());
    server.publisher =
        std::make_unique<Publisher>(server.store.get(), &clock_, server.rollout.get());
    auto source = std::make_unique<fixtures::FakeSource>();
    server.source = source.get();
    CertificateSpec spec;
    spec.name = "wildcard";
    spec.source = std::move(source);
    ASSERT_TRUE(server.publisher->AddCertificate(std::move(spec)).ok());
    server.rollout->Restore(server.publisher.get());
  };
  Server first;
  start(first);
  first.source->Set(Material(absl::Hours(24 * 60)));
  ASSERT_EQ(first.publisher->Evaluate("wildcard", true), Verdict::kSettled);
  first.source->Set(Material(absl::Hours(24 * 90)));
  ASSERT_EQ(first.publisher->Evaluate("wildcard", true), Verdict::kSettled);
  ASSERT_EQ(first.publisher->Current("wildcard")->version, 2u);
  ASSERT_EQ(first.rollout->WaitingFor("wildcard", "tenant-z"), 3u);

  Server restarted;  // the first one is never stopped cleanly: it persisted nothing itself
  start(restarted);
  std::optional<v1::Rollout> rollout = restarted.rollout->Describe("wildcard");
  ASSERT_TRUE(rollout.has_value()) << "the rollout's start was lost: version 2 went to everyone";
  EXPECT_EQ(rollout->state(), "rolling");
  EXPECT_EQ(rollout->version(), 2u);
  EXPECT_EQ(rollout->wave(), 1u);
  EXPECT_EQ(restarted.rollout->WaitingFor("wildcard", "tenant-z"), 3u);
  EXPECT_EQ(restarted.rollout->ExpectedVersions()("wildcard", "tenant-z", 2), 1u);
}

TEST_F(RolloutControllerTest, AFollowerElectedRightAfterAdoptingAVersionContinuesItsRollout) {
  FailOverRightAfterTheFollowerAdoptsAVersion(/*adopted_before_election=*/true);
}

TEST_F(RolloutControllerTest, ALeaderThatAdoptsAVersionWhileTakingOverContinuesItsRollout) {
  FailOverRightAfterTheFollowerAdoptsAVersion(/*adopted_before_election=*/false);
}

// On a replica that is not the leader, admin calls are refused with the leader's name instead of
// answering OK for a change that only the leader could persist (and the next refresh of the
// leader's state would undo).
TEST_F(RolloutControllerTest, AdminCallsOnAFollowerNameTheLeader) {
  struct Follower final : Leadership {
    bool IsLeader() const override { return false; }
    std::string Leader() const override { return "certcast-server-7d9f-abc12_0a1b2c3d"; }
  } follower;
  RolloutController::Options options;
  options.leadership = &follower;
  UsePolicy(kPolicy, options);
  auto v1 = Publish(1, absl::Hours(24 * 60));
  Publish(2, absl::Hours(24 * 90));
  for (auto call : {&RolloutController::Resume, &RolloutController::Promote}) {
    absl::StatusOr<v1::Rollout> answer = (controller_.get()->*call)("wildcard");
    ASSERT_FALSE(answer.ok());
    EXPECT_EQ(answer.status().code(), absl::StatusCode::kUnavailable);
    EXPECT_THAT(answer.status().message(), HasSubstr("not the leader"));
    EXPECT_THAT(answer.status().message(), HasSubstr("certcast-server-7d9f-abc12_0a1b2c3d"));
  }
  EXPECT_EQ(controller_->Describe("wildcard")->state(), "rolling");
}

// With replicas, a wave is concluded only from a fleet view taken after it started: a view from
// before could miss a client connected to another replica (its summary not read yet) and send the
// version on. Here the canary acknowledged, but the view is older than the wave: it waits.
TEST_F(RolloutControllerTest, AWaveWaitsForAFleetViewFromAfterItStarted) {
  auto view_as_of = std::make_shared<absl::Time>(absl::InfinitePast());
  RolloutController::Options options;
  options.fleet_view_as_of = [view_as_of] { return *view_as_of; };
  UsePolicy(kPolicy, options);
  auto v1 = Publish(1, absl::Hours(24 * 60));
  const uint64_t canary = Connect("canary", *v1);
  auto v2 = Publish(2, absl::Hours(24 * 90));
  Ack(canary, *v2);
  *view_as_of = clock_.Now() - absl::Seconds(1);
  controller_->Tick();
  EXPECT_FALSE(controller_->Describe("wildcard")->waves(0).has_soak_until())
      << "concluded the canary wave from a view older than the wave";
  *view_as_of = clock_.Now();
  controller_->Tick();
  EXPECT_TRUE(controller_->Describe("wildcard")->waves(0).has_soak_until());
}

// A refusal in the canary wave halts; resume excuses the refusing client and the rollout goes on.
TEST_F(RolloutControllerTest, NackHaltsAndResumeExcusesTheRefusingClient) {
  auto v1 = Publish(1, absl::Hours(24 * 60));
  const uint64_t canary = Connect("canary", *v1);
  auto v2 = Publish(2, absl::Hours(24 * 90));
  fleet_.RecordSent(canary, "wildcard", 2, v2->nonce, false);
  fleet_.RecordNack(canary, "wildcard", 2, v2->nonce, "files: disk full", "files");
  controller_->Tick();
  v1::Rollout rollout = *controller_->Describe("wildcard");
  EXPECT_EQ(rollout.state(), "halted");
  EXPECT_THAT(rollout.halt_reason(), HasSubstr("canary/client-canary: files: disk full"));
  EXPECT_TRUE(controller_->Statuses()["wildcard"].halted);
  EXPECT_EQ(controller_->Promote("other").status().code(), absl::StatusCode::kNotFound);

  absl::StatusOr<v1::Rollout> resumed = controller_->Resume("wildcard");
  ASSERT_TRUE(resumed.ok()) << resumed.status();
  EXPECT_EQ(resumed->state(), "rolling");
  EXPECT_EQ(controller_->Resume("wildcard").status().code(), absl::StatusCode::kFailedPrecondition);
  controller_->Tick();  // the excused canary is all the wave had: the soak starts
  clock_.Advance(absl::Minutes(11));
  controller_->Tick();
  EXPECT_EQ(Wave(), 2u);
}

// The version later waves still run comes within the expiry margin: the new one goes to
// everyone, halted or not, with a warning.
TEST_F(RolloutControllerTest, ExpiryMarginForcesAHaltedRolloutThrough) {
  auto v1 = Publish(1, absl::Hours(24 * 10));
  const uint64_t canary = Connect("canary", *v1);
  auto v2 = Publish(2, absl::Hours(24 * 90));
  fleet_.RecordSent(canary, "wildcard", 2, v2->nonce, false);
  fleet_.RecordNack(canary, "wildcard", 2, v2->nonce, "validation: bad", "validation");
  controller_->Tick();
  ASSERT_TRUE(controller_->Statuses()["wildcard"].halted);
  clock_.Advance(absl::Hours(24 * 7) + absl::Minutes(1));
  controller_->Tick();
  const v1::Rollout rollout = *controller_->Describe("wildcard");
  EXPECT_EQ(rollout.state(), "forced");
  ASSERT_EQ(rollout.warnings_size(), 1);
  EXPECT_THAT(rollout.warnings(0), HasSubstr("within the expiry margin"));
  EXPECT_EQ(controller_->WaitingFor("wildcard", "tenant-z"), 0u);
}

// A disconnected client of the wave counts as missing after the wave timeout; the wave then
// proceeds with a warning naming it.
TEST_F(RolloutControllerTest, DisconnectedClientIsMissingAfterTheWaveTimeout) {
  auto v1 = Publish(1, absl::Hours(24 * 60));
  const uint64_t canary = Connect("canary", *v1);
  Publish(2, absl::Hours(24 * 90));
  fleet_.Disconnect(canary);
  clock_.Advance(absl::Minutes(29));
  controller_->Tick();
  EXPECT_EQ(Wave(), 1u);
  clock_.Advance(absl::Minutes(2));
  controller_->Tick();  // counted as missing: soak starts
  clock_.Advance(absl::Minutes(11));
  controller_->Tick();
  EXPECT_EQ(Wave(), 2u);
  const v1::Rollout rollout = *controller_->Describe("wildcard");
  ASSERT_EQ(rollout.warnings_size(), 1);
  EXPECT_THAT(rollout.warnings(0), HasSubstr("canary/client-canary"));
}

// Without a rollout in the policy every version goes to everyone at once.
TEST_F(RolloutControllerTest, WithoutARolloutEveryVersionGoesToEveryone) {
  absl::StatusOr<Policy> plain =
      Policy::Parse("certificates:\n  wildcard:\n    namespaces: [\"*\"]\n", "test", {"wildcard"});
  ASSERT_TRUE(plain.ok());
  policy_ = std::make_shared<const Policy>(*std::move(plain));
  Publish(1, absl::Hours(24 * 60));
  Publish(2, absl::Hours(24 * 90));
  EXPECT_FALSE(controller_->Describe("wildcard").has_value());
  EXPECT_EQ(controller_->WaitingFor("wildcard", "tenant-z"), 0u);
  EXPECT_EQ(controller_->ExpectedVersions()("wildcard", "tenant-z", 2), 2u);
}

}  // namespace
}  // namespace certcast
