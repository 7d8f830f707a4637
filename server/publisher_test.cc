#include "server/publisher.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fixtures/cert_factory.h"
#include "tests/fixtures/fake_source.h"
#include "tests/fixtures/fake_filesystem.h"

namespace certcast {
namespace {

using ::certcast::fixtures::FakeSource;

using ::certcast::fixtures::Chain;
using ::certcast::fixtures::FakeFilesystem;
using ::certcast::fixtures::MakeChain;
using ::testing::HasSubstr;

class RecordingListener final : public PublicationListener {
 public:
  void OnPublish(std::shared_ptr<const Publication> publication) override {
    published.push_back(std::move(publication));
  }
  std::vector<std::shared_ptr<const Publication>> published;
};

class PublisherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs_.AddDir("/state", 0700);
    Open();
  }

  // (Re)creates store and publisher over the same fake filesystem, like a restart.
  void Open() {
    publisher_.reset();
    auto store = FileVersionStore::Open(&fs_, "/state");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    listener_ = RecordingListener();
    publisher_ = std::make_unique<Publisher>(store_.get(), &clock_, &listener_);
    auto source = std::make_unique<FakeSource>();
    source_ = source.get();
    source_->Set(source_content_);
    CertificateSpec spec;
    spec.name = "wildcard";
    spec.source = std::move(source);
    spec.required_dns_names = required_;
    ASSERT_TRUE(publisher_->AddCertificate(std::move(spec)).ok());
  }

  void SetSource(const CertificateMaterial& material) {
    source_content_ = material;
    source_->Set(material);
  }

  uint64_t CurrentVersion() {
    auto current = publisher_->Current("wildcard");
    return current == nullptr ? 0 : current->version;
  }

  FakeFilesystem fs_;
  FakeClock clock_{absl::Now()};
  std::unique_ptr<VersionStore> store_;
  RecordingListener listener_;
  std::unique_ptr<Publisher> publisher_;
  FakeSource* source_ = nullptr;
  absl::StatusOr<CertificateMaterial> source_content_ = absl::NotFoundError("nothing yet");
  std::vector<std::string> required_;
};

// Each content change gets the next version; identical content publishes nothing.
TEST_F(PublisherTest, VersionsIncreaseOnlyOnContentChange) {
  Chain first = MakeChain();
  SetSource(first.material);
  EXPECT_EQ(publisher_->Evaluate("wildcard", false), Verdict::kSettled);
  EXPECT_EQ(CurrentVersion(), 1u);
  EXPECT_EQ(publisher_->Evaluate("wildcard", false), Verdict::kSettled);
  EXPECT_EQ(listener_.published.size(), 1u);

  CertificateMaterial ca_changed = first.material;
  ca_changed.ca_pem = MakeChain().material.ca_pem + first.material.ca_pem;
  SetSource(ca_changed);
  publisher_->Evaluate("wildcard", false);
  EXPECT_EQ(CurrentVersion(), 2u) << "a CA-only change is a content change";
  EXPECT_EQ(listener_.published.back()->info.fingerprint, first.leaf.fingerprint);
  EXPECT_NE(listener_.published[0]->nonce, listener_.published[1]->nonce);
}

// Unconfirmed invalid content is neither published nor counted; confirmed, it is a rejection,
// counted once however often it is re-read.
TEST_F(PublisherTest, InvalidContentIsRejectedOnlyWhenConfirmedAndOnlyOnce) {
  Chain good = MakeChain();
  SetSource(good.material);
  publisher_->Evaluate("wildcard", true);
  CertificateMaterial mismatched = MakeChain().material;
  mismatched.key_pem = good.material.key_pem;
  SetSource(mismatched);
  EXPECT_EQ(publisher_->Evaluate("wildcard", false), Verdict::kUnsettled);
  EXPECT_EQ(publisher_->Snapshot("wildcard")->rejections, 0u);
  EXPECT_EQ(publisher_->Evaluate("wildcard", true), Verdict::kSettled);
  EXPECT_EQ(publisher_->Evaluate("wildcard", true), Verdict::kSettled);
  EXPECT_EQ(publisher_->Evaluate("wildcard", false), Verdict::kSettled);
  CertificateSnapshot snapshot = *publisher_->Snapshot("wildcard");
  EXPECT_EQ(snapshot.rejections, 1u);
  ASSERT_TRUE(snapshot.last_rejection.has_value());
  EXPECT_EQ(snapshot.last_rejection->reason, "key_mismatch");
  EXPECT_EQ(snapshot.last_rejection->time, clock_.Now());
  EXPECT_EQ(CurrentVersion(), 1u);
  EXPECT_EQ(listener_.published.size(), 1u);
}

// --require-san refuses material that does not cover the name.
TEST_F(PublisherTest, RequiredSanIsEnforced) {
  required_ = {"shop.other.test"};
  Open();
  SetSource(MakeChain().material);
  publisher_->Evaluate("wildcard", true);
  EXPECT_EQ(CurrentVersion(), 0u);
  EXPECT_EQ(publisher_->Snapshot("wildcard")->last_rejection->reason, "missing_san");
  std::string why;
  EXPECT_FALSE(publisher_->Ready(&why));
  EXPECT_THAT(why, HasSubstr("wildcard"));
}

// Material that expires while the server runs is not republished; new material is judged
// against the clock.
TEST_F(PublisherTest, ExpiredSourceIsRejected) {
  SetSource(MakeChain().material);
  clock_.Advance(absl::Hours(24 * 365));
  publisher_->Evaluate("wildcard", true);
  EXPECT_EQ(CurrentVersion(), 0u);
  EXPECT_EQ(publisher_->Snapshot("wildcard")->last_rejection->reason, "expired");
}

// A failed write to the version store publishes nothing and asks to be retried; the retry
// publishes the same version number.
TEST_F(PublisherTest, StoreFailureIsRetriedWithoutPublishing) {
  SetSource(MakeChain().material);
  fs_.FailNextWrite(absl::ResourceExhaustedError("disk full"));
  EXPECT_EQ(publisher_->Evaluate("wildcard", true), Verdict::kUnsettled);
  EXPECT_TRUE(listener_.published.empty());
  EXPECT_EQ(publisher_->Snapshot("wildcard")->rejections, 0u);
  EXPECT_EQ(publisher_->Evaluate("wildcard", true), Verdict::kSettled);
  EXPECT_EQ(CurrentVersion(), 1u);
}

// After a restart the persisted version is current before the source is read, and versions
// continue from the counter (never reused).
TEST_F(PublisherTest, RestartContinuesVersionNumbers) {
  SetSource(MakeChain().material);
  publisher_->Evaluate("wildcard", true);
  SetSource(MakeChain().material);
  publisher_->Evaluate("wildcard", true);
  Open();
  EXPECT_EQ(CurrentVersion(), 2u);
  ASSERT_EQ(listener_.published.size(), 1u) << "the restored version is handed to the listener";
  publisher_->Evaluate("wildcard", true);
  EXPECT_EQ(CurrentVersion(), 2u) << "unchanged source after restart: no new version";
  SetSource(MakeChain().material);
  publisher_->Evaluate("wildcard", true);
  EXPECT_EQ(CurrentVersion(), 3u);
}

// Only the last 10 versions are kept; the counter keeps counting.
TEST_F(PublisherTest, HistoryIsBoundedAndVersionsAreNeverReused) {
  for (int i = 0; i < 12; ++i) {
    SetSource(MakeChain().material);
    publisher_->Evaluate("wildcard", true);
  }
  CertificateSnapshot snapshot = *publisher_->Snapshot("wildcard");
  EXPECT_EQ(snapshot.current->version, 12u);
  ASSERT_EQ(snapshot.history.size(), 10u);
  EXPECT_EQ(snapshot.history.front().version, 12u);
  EXPECT_EQ(snapshot.history.back().version, 3u);
  auto rollback = publisher_->Rollback("wildcard", 2);
  EXPECT_EQ(rollback.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(rollback.status().message()), HasSubstr("3 to 12"));
}

// Rollback refuses material that has expired since it was published.
TEST_F(PublisherTest, RollbackRefusesExpiredMaterial) {
  Chain first = MakeChain();
  SetSource(first.material);
  publisher_->Evaluate("wildcard", true);
  SetSource(MakeChain().material);
  publisher_->Evaluate("wildcard", true);
  clock_.Advance(absl::Hours(24 * 365));
  auto rollback = publisher_->Rollback("wildcard", 1);
  EXPECT_EQ(rollback.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(rollback.status().message()), HasSubstr("refusing to roll back"));
  EXPECT_EQ(CurrentVersion(), 2u);
}

// A pin ends when the source changes, even if the new source equals the pinned material:
// then no new version is needed, only the pin is dropped (and persisted).
TEST_F(PublisherTest, PinEndsWhenSourceChangesToThePinnedMaterial) {
  Chain first = MakeChain();
  SetSource(first.material);
  publisher_->Evaluate("wildcard", true);
  SetSource(MakeChain().material);
  publisher_->Evaluate("wildcard", true);
  ASSERT_TRUE(publisher_->Rollback("wildcard", 1).ok());
  EXPECT_EQ(CurrentVersion(), 3u);
  EXPECT_TRUE(listener_.published.back()->pinned);
  SetSource(first.material);
  publisher_->Evaluate("wildcard", true);
  EXPECT_EQ(CurrentVersion(), 3u);
  EXPECT_EQ(publisher_->Snapshot("wildcard")->pin.version, 0u);
  Open();
  EXPECT_EQ(publisher_->Snapshot("wildcard")->pin.version, 0u) << "the unpin was persisted";
}

// A source that cannot be read is a rejection with its own reason, and the version stays.
TEST_F(PublisherTest, MissingSourceKeepsServing) {
  SetSource(MakeChain().material);
  publisher_->Evaluate("wildcard", true);
  source_->Set(WithReason(absl::NotFoundError("source directory /x does not exist"), "missing"));
  EXPECT_EQ(publisher_->Evaluate("wildcard", false), Verdict::kUnsettled);
  publisher_->Evaluate("wildcard", true);
  CertificateSnapshot snapshot = *publisher_->Snapshot("wildcard");
  EXPECT_EQ(snapshot.last_rejection->reason, "missing");
  EXPECT_THAT(snapshot.last_rejection->message, HasSubstr("certificate \"wildcard\""));
  EXPECT_EQ(CurrentVersion(), 1u);
}

// source_present follows settled reads: a transient failure does not flip it, a confirmed one
// does, and a readable (even invalid) source sets it again.
TEST_F(PublisherTest, SourcePresenceFollowsSettledReads) {
  EXPECT_FALSE(publisher_->Snapshot("wildcard")->source_present) << "nothing read yet";
  Chain good = MakeChain();
  SetSource(good.material);
  publisher_->Evaluate("wildcard", false);
  EXPECT_TRUE(publisher_->Snapshot("wildcard")->source_present);
  source_->Set(WithReason(absl::NotFoundError("source directory /x does not exist"), "missing"));
  publisher_->Evaluate("wildcard", false);
  EXPECT_TRUE(publisher_->Snapshot("wildcard")->source_present) << "not confirmed yet";
  publisher_->Evaluate("wildcard", true);
  EXPECT_FALSE(publisher_->Snapshot("wildcard")->source_present);
  EXPECT_EQ(publisher_->Snapshot("wildcard")->rejections_by_reason.at("missing"), 1u);
  CertificateMaterial mismatched = MakeChain().material;
  mismatched.key_pem = good.material.key_pem;
  SetSource(mismatched);
  publisher_->Evaluate("wildcard", true);
  CertificateSnapshot snapshot = *publisher_->Snapshot("wildcard");
  EXPECT_TRUE(snapshot.source_present);
  EXPECT_EQ(snapshot.rejections_by_reason.at("key_mismatch"), 1u);
  EXPECT_EQ(snapshot.rejections, 2u);
  EXPECT_EQ(CurrentVersion(), 1u);
}

// A source that cannot be read (an API error, EIO) is retried, never judged: no rejection, no
// settled verdict, the current version keeps being served, and the first good read publishes.
TEST_F(PublisherTest, UnreadableSourceIsRetriedNeverRejected) {
  SetSource(MakeChain().material);
  publisher_->Evaluate("wildcard", true);
  source_->Set(
      WithReason(absl::UnavailableError("GET secret: 503 Service Unavailable"), "unreadable"));
  EXPECT_EQ(publisher_->Evaluate("wildcard", false), Verdict::kRetry);
  EXPECT_TRUE(publisher_->Snapshot("wildcard")->source_present) << "one failed read is a blip";
  EXPECT_EQ(publisher_->Evaluate("wildcard", true), Verdict::kRetry) << "even when confirmed";
  CertificateSnapshot failing = *publisher_->Snapshot("wildcard");
  EXPECT_EQ(failing.rejections, 0u);
  EXPECT_FALSE(failing.last_rejection.has_value());
  EXPECT_FALSE(failing.source_present);
  EXPECT_EQ(failing.consecutive_read_failures, 2u);
  EXPECT_THAT(failing.read_error, HasSubstr("503"));
  EXPECT_EQ(CurrentVersion(), 1u);

  Chain renewed = MakeChain();
  SetSource(renewed.material);
  EXPECT_EQ(publisher_->Evaluate("wildcard", false), Verdict::kSettled);
  EXPECT_EQ(CurrentVersion(), 2u);
  CertificateSnapshot recovered = *publisher_->Snapshot("wildcard");
  EXPECT_TRUE(recovered.source_present);
  EXPECT_EQ(recovered.read_error, "");
  EXPECT_EQ(recovered.consecutive_read_failures, 0u);
  EXPECT_EQ(recovered.read_failures, 2u);
  EXPECT_EQ(recovered.rejections, 0u);
}

// The same failure twice in a row is still retried (a repeated error must not settle).
TEST_F(PublisherTest, RepeatedReadErrorIsStillRetried) {
  source_->Set(WithReason(absl::UnavailableError("connection refused"), "unreadable"));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(publisher_->Evaluate("wildcard", true), Verdict::kRetry) << "read " << i;
  }
  EXPECT_EQ(publisher_->Snapshot("wildcard")->rejections, 0u);
}

// The current version counts as expiring soon within expiry_warning (14 days) of its not_after,
// and is still served; a renewed version ends it.
TEST_F(PublisherTest, ExpiringSoonFollowsTheClockAndNewVersions) {
  Chain first = MakeChain();  // leaf valid for 90 days
  SetSource(first.material);
  publisher_->Evaluate("wildcard", true);
  EXPECT_FALSE(publisher_->Snapshot("wildcard")->expiring_soon);
  clock_.Advance(absl::Hours(24 * 80));
  publisher_->Evaluate("wildcard", false);
  EXPECT_TRUE(publisher_->Snapshot("wildcard")->expiring_soon);
  EXPECT_EQ(CurrentVersion(), 1u);

  fixtures::CertOptions leaf;
  leaf.dns_names = {"*.example.test"};
  leaf.not_after = absl::Now() + absl::Hours(24 * 300);
  fixtures::Issued renewed = fixtures::MakeCert(first.intermediate, leaf);
  CertificateMaterial material = first.material;
  material.chain_pem = renewed.cert_pem + first.intermediate.cert_pem;
  material.key_pem = SecretBytes(renewed.key_pem);
  SetSource(material);
  publisher_->Evaluate("wildcard", true);
  EXPECT_EQ(CurrentVersion(), 2u);
  EXPECT_FALSE(publisher_->Snapshot("wildcard")->expiring_soon);
}

}  // namespace
}  // namespace certcast
