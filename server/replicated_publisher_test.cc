// The Publisher with a store several replicas share: two Publishers over one in-memory store with
// compare-and-swap semantics, each with its own source, like two replicas of the server.
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"
#include "server/publisher.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/fixtures/fake_source.h"

namespace certcast {
namespace {

using ::certcast::fixtures::FakeSource;

using ::certcast::fixtures::CertOptions;
using ::certcast::fixtures::Issued;

// A shared store with the Kubernetes store's contract: revisions, compare-and-swap on Save,
// Claim moving the revision.
class SharedMemoryStore final : public VersionStore {
 public:
  absl::StatusOr<std::optional<CertificateState>> Load(const std::string&) override {
    absl::MutexLock lock(&mu_);
    if (!state_.has_value()) return std::nullopt;
    CertificateState copy = *state_;
    copy.store_revision = std::to_string(revision_);
    return copy;
  }
  absl::StatusOr<std::string> Save(const std::string& name,
                                   const CertificateState& state) override {
    absl::MutexLock lock(&mu_);
    const std::string expected = state_.has_value() ? std::to_string(revision_) : "";
    if (state.store_revision != expected) {
      return absl::AbortedError(absl::StrCat(name, " changed since ", state.store_revision));
    }
    // What EncodeState keeps.
    absl::StatusOr<std::string> bytes = EncodeState(name, state, history_limit());
    if (!bytes.ok()) return bytes.status();
    absl::StatusOr<CertificateState> decoded = DecodeState(name, *bytes, "memory");
    if (!decoded.ok()) return decoded.status();
    state_ = *decoded;
    ++saves_;
    return std::to_string(++revision_);
  }
  absl::StatusOr<std::string> Claim(const std::string& name, const std::string& revision) override {
    absl::MutexLock lock(&mu_);
    if (revision != std::to_string(revision_)) {
      return absl::AbortedError(absl::StrCat(name, " changed since ", revision));
    }
    return std::to_string(++revision_);
  }
  int history_limit() const override { return 10; }

  std::optional<CertificateState> stored() {
    absl::MutexLock lock(&mu_);
    return state_;
  }
  int saves() {
    absl::MutexLock lock(&mu_);
    return saves_;
  }

 private:
  absl::Mutex mu_;
  std::optional<CertificateState> state_ ABSL_GUARDED_BY(mu_);
  uint64_t revision_ ABSL_GUARDED_BY(mu_) = 100;
  int saves_ ABSL_GUARDED_BY(mu_) = 0;
};

class FakeLeadership final : public Leadership {
 public:
  bool IsLeader() const override { return leader; }
  std::string Leader() const override { return leader ? "me" : "the other one"; }
  bool leader = false;
};

class NullListener final : public PublicationListener {
 public:
  void OnPublish(std::shared_ptr<const Publication> publication) override {
    last = std::move(publication);
  }
  std::shared_ptr<const Publication> last;
};

struct Replica {
  FakeLeadership leadership;
  NullListener listener;
  FakeSource* source = nullptr;
  std::unique_ptr<Publisher> publisher;

  uint64_t version() { return listener.last == nullptr ? 0 : listener.last->version; }
  std::string fingerprint() {
    return listener.last == nullptr ? "" : listener.last->info.fingerprint;
  }
};

class ReplicatedPublisherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fixtures::MakeRootCa("replicas root");
    for (Replica* replica : {&a_, &b_}) {
      PublisherOptions options;
      options.leadership = &replica->leadership;
      replica->publisher =
          std::make_unique<Publisher>(&store_, &clock_, &replica->listener, options);
      auto source = std::make_unique<FakeSource>();
      replica->source = source.get();
      CertificateSpec spec;
      spec.name = "wildcard";
      spec.source = std::move(source);
      ASSERT_TRUE(replica->publisher->AddCertificate(std::move(spec)).ok());
    }
  }

  // Material whose leaf became valid `minutes` minutes after a fixed base: later is newer. The
  // same `minutes` give the same material (what both replicas' sources hold).
  CertificateMaterial Leaf(int minutes) {
    if (auto it = materials_.find(minutes); it != materials_.end()) return it->second;
    CertOptions options;
    options.dns_names = {"*.example.test"};
    options.not_before = base_ + absl::Minutes(minutes);
    Issued leaf = fixtures::MakeCert(root_, options);
    CertificateMaterial material;
    material.chain_pem = leaf.cert_pem;
    material.key_pem = SecretBytes(leaf.key_pem);
    material.ca_pem = root_.cert_pem;
    fingerprints_[minutes] = leaf.fingerprint;
    materials_[minutes] = material;
    return material;
  }

  // The replica becomes the leader, as the election's callback does it.
  void Lead(Replica& replica, Replica& other) {
    other.leadership.leader = false;
    replica.leadership.leader = true;
    ASSERT_TRUE(replica.publisher->TakeOver("wildcard").ok());
    replica.publisher->Evaluate("wildcard", true);
  }

  uint64_t StoredVersion() {
    std::optional<CertificateState> stored = store_.stored();
    return stored.has_value() ? stored->versions.back().version : 0;
  }

  FakeClock clock_{absl::Now()};
  absl::Time base_ = absl::Now() - absl::Hours(2);
  Issued root_;
  std::map<int, std::string> fingerprints_;
  std::map<int, CertificateMaterial> materials_;
  SharedMemoryStore store_;
  Replica a_;
  Replica b_;
};

// Only the leader writes; the follower serves what the leader stored, with the same number.
TEST_F(ReplicatedPublisherTest, OnlyTheLeaderPublishesAndFollowersAdopt) {
  a_.source->Set(Leaf(1));
  b_.source->Set(Leaf(1));
  b_.publisher->Evaluate("wildcard", true);
  EXPECT_EQ(b_.version(), 0u) << "a follower never publishes";
  EXPECT_EQ(store_.saves(), 0);
  Lead(a_, b_);
  EXPECT_EQ(a_.version(), 1u);
  ASSERT_TRUE(b_.publisher->Refresh("wildcard").ok());
  EXPECT_EQ(b_.version(), 1u);
  EXPECT_EQ(b_.fingerprint(), fingerprints_[1]);
  EXPECT_EQ(b_.publisher->Snapshot("wildcard")->adopted, 1u);
  // A follower's Rollback names the reason.
  absl::StatusOr<RollbackResult> rollback = b_.publisher->Rollback("wildcard", 1);
  EXPECT_TRUE(absl::IsUnavailable(rollback.status())) << rollback.status();
}

// A deposed leader that still believes it leads cannot write: the new leader's Claim moved the
// revision, so its compare-and-swap fails, and it adopts what is stored instead.
TEST_F(ReplicatedPublisherTest, DeposedLeaderWriteFailsByCompareAndSwap) {
  a_.source->Set(Leaf(1));
  b_.source->Set(Leaf(1));
  Lead(a_, b_);
  ASSERT_EQ(StoredVersion(), 1u);
  b_.leadership.leader = true;  // a_ keeps believing it leads (a paused process, say)
  ASSERT_TRUE(b_.publisher->TakeOver("wildcard").ok());
  a_.leadership.leader = true;
  a_.source->Set(Leaf(2));
  a_.publisher->Evaluate("wildcard", true);
  EXPECT_EQ(StoredVersion(), 1u) << "the deposed leader's write must fail";
  EXPECT_EQ(store_.saves(), 1);
  a_.leadership.leader = false;
  b_.source->Set(Leaf(3));
  b_.publisher->Evaluate("wildcard", true);
  EXPECT_EQ(StoredVersion(), 2u);
  EXPECT_EQ(store_.stored()->last_version, 2u);
  ASSERT_TRUE(a_.publisher->Refresh("wildcard").ok());
  EXPECT_EQ(a_.version(), 2u);
  EXPECT_EQ(a_.fingerprint(), fingerprints_[3]);
}

// Without TakeOver's Claim, a stale leader's write still fails once anyone else has written.
TEST_F(ReplicatedPublisherTest, StaleLeaderLosesTheCompareAndSwapAndAdopts) {
  a_.source->Set(Leaf(1));
  Lead(a_, b_);
  b_.leadership.leader = true;
  ASSERT_TRUE(b_.publisher->Refresh("wildcard").ok());
  b_.source->Set(Leaf(2));
  b_.publisher->Evaluate("wildcard", true);
  ASSERT_EQ(StoredVersion(), 2u);
  // a_ has not seen version 2 and reads newer material still: version 2 must not be reused.
  a_.source->Set(Leaf(3));
  a_.publisher->Evaluate("wildcard", true);
  EXPECT_EQ(StoredVersion(), 2u);
  EXPECT_EQ(a_.version(), 2u) << "adopted after the lost compare-and-swap";
  a_.publisher->Evaluate("wildcard", true);  // the watcher's next look
  EXPECT_EQ(StoredVersion(), 3u);
  EXPECT_EQ(a_.fingerprint(), fingerprints_[3]);
}

// A leader whose Secret source lags (an older resourceVersion than the one behind the current
// version) publishes nothing; revisions compare as numbers ("9" is older than "10").
TEST_F(ReplicatedPublisherTest, LaggingSecretSourceNeverPublishesOlderMaterial) {
  a_.source->Set(Leaf(1), "10");
  Lead(a_, b_);
  ASSERT_EQ(StoredVersion(), 1u);
  b_.source->Set(Leaf(2), "9");  // different material, but an older source state
  Lead(b_, a_);
  EXPECT_EQ(StoredVersion(), 1u);
  EXPECT_EQ(b_.version(), 1u);
  EXPECT_EQ(b_.fingerprint(), fingerprints_[1]);
  EXPECT_EQ(b_.publisher->Snapshot("wildcard")->stale_sources, 1u);
  b_.source->Set(Leaf(0), "11");  // older leaf, newer revision: the source wins
  b_.publisher->Evaluate("wildcard", true);
  EXPECT_EQ(StoredVersion(), 2u);
  EXPECT_EQ(store_.stored()->versions.back().source.revision, "11");
}

// A leader whose directory source lags (an older leaf) publishes nothing; a newer leaf is
// published with the next version number.
TEST_F(ReplicatedPublisherTest, LaggingDirectorySourceNeverPublishesOlderLeaf) {
  a_.source->Set(Leaf(2));
  Lead(a_, b_);
  b_.source->Set(Leaf(1));
  Lead(b_, a_);
  EXPECT_EQ(StoredVersion(), 1u);
  EXPECT_EQ(b_.fingerprint(), fingerprints_[2]);
  b_.source->Set(Leaf(3));
  b_.publisher->Evaluate("wildcard", true);
  EXPECT_EQ(StoredVersion(), 2u);
  EXPECT_EQ(b_.fingerprint(), fingerprints_[3]);
}

// A rollback's pin survives a failover: the new leader, whose source holds what was current
// before the rollback, keeps the pinned version until its source holds something newer.
TEST_F(ReplicatedPublisherTest, RollbackPinSurvivesFailover) {
  a_.source->Set(Leaf(1));
  Lead(a_, b_);
  a_.source->Set(Leaf(2));
  a_.publisher->Evaluate("wildcard", true);
  absl::StatusOr<RollbackResult> rollback = a_.publisher->Rollback("wildcard", 1);
  ASSERT_TRUE(rollback.ok()) << rollback.status();
  ASSERT_EQ(StoredVersion(), 3u);
  b_.source->Set(Leaf(2));
  Lead(b_, a_);
  EXPECT_EQ(StoredVersion(), 3u);
  EXPECT_EQ(b_.version(), 3u);
  EXPECT_TRUE(b_.listener.last->pinned);
  EXPECT_EQ(b_.fingerprint(), fingerprints_[1]);
  b_.source->Set(Leaf(4));
  b_.publisher->Evaluate("wildcard", true);
  EXPECT_EQ(StoredVersion(), 4u);
  EXPECT_FALSE(b_.listener.last->pinned);
  EXPECT_EQ(store_.stored()->pin.version, 0u);
}

// Revisions compare as numbers when both parse, else only as equal or not; leaves by notBefore,
// then serial as a number.
TEST_F(ReplicatedPublisherTest, OrderOfSourceStates) {
  SourceState older{"9", absl::InfinitePast(), ""};
  SourceState newer{"10", absl::InfinitePast(), ""};
  EXPECT_EQ(CompareSources(newer, older), SourceOrder::kNewer);
  EXPECT_EQ(CompareSources(older, newer), SourceOrder::kOlder);
  EXPECT_EQ(CompareSources(older, older), SourceOrder::kSame);
  // Opaque revisions only tell equal from different.
  EXPECT_EQ(CompareSources({"b", absl::InfinitePast(), ""}, {"a", absl::InfinitePast(), ""}),
            SourceOrder::kNewer);
  EXPECT_EQ(CompareSources({"a", absl::InfinitePast(), ""}, {"b", absl::InfinitePast(), ""}),
            SourceOrder::kNewer);
  const absl::Time t = absl::FromUnixSeconds(1'800'000'000);
  EXPECT_EQ(CompareSources({"", t + absl::Seconds(1), "01"}, {"", t, "FF"}), SourceOrder::kNewer);
  EXPECT_EQ(CompareSources({"", t, "0100"}, {"", t, "FF"}), SourceOrder::kNewer);
  EXPECT_EQ(CompareSources({"", t, "00ff"}, {"", t, "FF"}), SourceOrder::kSame);
  EXPECT_EQ(CompareSources({"", t, "FE"}, {"", t, "FF"}), SourceOrder::kOlder);
  EXPECT_EQ(CompareSources({"", t, "FE"}, SourceState{}), SourceOrder::kNewer);
}

}  // namespace
}  // namespace certcast
