#include "server/subscription.h"

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "common/clock.h"
#include "gtest/gtest.h"

namespace certcast {
namespace {

// Grants the names in `allowed` to namespace tenant-a's identities.
class FakeAuthorizer final : public Authorizer {
 public:
  absl::Status AuthorizeSubscribe(const PeerIdentity& peer, const std::string& namespace_,
                                  const std::string& certificate) override {
    if (!peer.proven()) return absl::UnauthenticatedError("no identity");
    if (namespace_ == peer.namespace_ && allowed.count(certificate) > 0) return absl::OkStatus();
    return absl::PermissionDeniedError("namespace \"" + namespace_ +
                                       "\" may not receive certificate \"" + certificate + "\"");
  }
  absl::Status AuthorizeAdmin(const PeerIdentity&) override {
    return absl::PermissionDeniedError("no");
  }
  absl::StatusOr<InspectionScope> AuthorizeInspection(const PeerIdentity&) override {
    return absl::PermissionDeniedError("no");
  }
  std::set<std::string> allowed = {"web", "api"};
};

std::shared_ptr<const Publication> Version(const std::string& name, uint64_t version) {
  CertificateInfo info;
  info.fingerprint = name + "-fp-" + std::to_string(version);
  CertificateMaterial material;
  material.chain_pem = "chain";
  material.key_pem = SecretBytes("key");
  return MakePublication(name, version, false, info, material);
}

PeerIdentity Transport() {
  PeerIdentity identity;
  identity.peer = "ipv4:127.0.0.1:5000";
  return identity;
}

PeerIdentity TenantA() {
  PeerIdentity identity;
  identity.peer = "ipv4:127.0.0.1:5000";
  identity.identity = "spiffe://example.org/ns/tenant-a/sa/client";
  identity.kind = "mtls";
  identity.namespace_ = "tenant-a";
  identity.name = "client";
  return identity;
}

v1::SubscribeRequest Hello(const std::vector<std::string>& names, uint64_t held_version = 0,
                           const std::string& held_fingerprint = "") {
  v1::SubscribeRequest request;
  v1::Hello* hello = request.mutable_hello();
  hello->set_namespace_("tenant-a");
  hello->set_client_id("node-1");
  for (const std::string& name : names) {
    v1::HeldCertificate* held = hello->add_certificates();
    held->set_name(name);
    held->set_version(held_version);
    held->set_fingerprint(held_fingerprint);
  }
  return request;
}

v1::SubscribeRequest Ack(const std::string& name, uint64_t version, const std::string& nonce) {
  v1::SubscribeRequest request;
  request.mutable_ack()->set_name(name);
  request.mutable_ack()->set_version(version);
  request.mutable_ack()->set_nonce(nonce);
  return request;
}

class SubscriptionStateTest : public ::testing::Test {
 protected:
  SubscriptionStateTest()
      : fleet_(&clock_, absl::Hours(1)),
        state_(
            SubscriptionState::Options(), Transport(),
            [](const std::string& name) {
              return name == "web" || name == "api" || name == "secret-b";
            },
            &fleet_, &authorizer_, &counters_) {}

  // Hello for `names`, authenticated as tenant-a, subscribed with `current`.
  void Subscribe(const std::vector<std::string>& names,
                 const std::vector<std::shared_ptr<const Publication>>& current) {
    ASSERT_EQ(*state_.Receive(Hello(names)), SubscriptionState::Next::kAuthenticate);
    std::string denial;
    absl::StatusOr<std::vector<std::string>> admitted = state_.Admit(TenantA(), &denial);
    ASSERT_TRUE(admitted.ok()) << admitted.status();
    state_.Subscribe(current);
  }

  // Takes writes until none is due, completing each; returns their kinds.
  std::vector<Outgoing::Kind> Drain() {
    std::vector<Outgoing::Kind> kinds;
    while (std::optional<Outgoing> next = state_.TakeWrite()) {
      kinds.push_back(next->kind);
      state_.WriteDone(true);
    }
    return kinds;
  }

  FakeClock clock_;
  Fleet fleet_;
  FakeAuthorizer authorizer_;
  StreamCounters counters_;
  SubscriptionState state_;
};

// The first messages after an admitted hello: a heartbeat, then one update per certificate that
// has a version; one write at a time.
TEST_F(SubscriptionStateTest, WritesHeartbeatThenUpdatesOneAtATime) {
  Subscribe({"web", "api"}, {Version("web", 3), nullptr});
  std::optional<Outgoing> first = state_.TakeWrite();
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->kind, Outgoing::kHeartbeat);
  EXPECT_FALSE(state_.TakeWrite().has_value()) << "a second write while one is in flight";
  state_.WriteDone(true);
  std::optional<Outgoing> second = state_.TakeWrite();
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->kind, Outgoing::kUpdate);
  EXPECT_EQ(second->publication->version, 3u);
  state_.WriteDone(true);
  EXPECT_FALSE(state_.TakeWrite().has_value());
  EXPECT_EQ(counters_.updates_written.load(), 1u);
}

// A client that already holds the current version gets an in-sync, not the key again.
TEST_F(SubscriptionStateTest, ClientHoldingTheCurrentVersionGetsInSync) {
  std::shared_ptr<const Publication> web = Version("web", 3);
  ASSERT_EQ(*state_.Receive(Hello({"web"}, 3, web->info.fingerprint)),
            SubscriptionState::Next::kAuthenticate);
  std::string denial;
  ASSERT_TRUE(state_.Admit(TenantA(), &denial).ok());
  state_.Subscribe({web});
  EXPECT_EQ(Drain(), (std::vector<Outgoing::Kind>{Outgoing::kHeartbeat, Outgoing::kInSync}));
  EXPECT_EQ(counters_.updates_written.load(), 0u);
}

// Versions offered behind a slow write replace each other: only the newest is written.
TEST_F(SubscriptionStateTest, LatestVersionWinsWhileAWriteIsInFlight) {
  Subscribe({"web"}, {nullptr});
  ASSERT_TRUE(state_.TakeWrite().has_value());  // the heartbeat, in flight
  for (uint64_t version = 1; version <= 5; ++version) state_.OfferUpdate(Version("web", version));
  state_.OfferUpdate(Version("web", 2));  // older than queued: ignored
  EXPECT_EQ(state_.pending_writes(), 1u);
  state_.WriteDone(true);
  std::optional<Outgoing> next = state_.TakeWrite();
  ASSERT_TRUE(next.has_value());
  EXPECT_EQ(next->publication->version, 5u);
  EXPECT_EQ(counters_.updates_replaced.load(), 4u);
}

// The protocol's order: a hello first, exactly once; ACKs only for what was subscribed.
TEST_F(SubscriptionStateTest, RefusesMessagesOutOfOrder) {
  EXPECT_EQ(state_.Receive(Ack("web", 1, "n")).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(state_.Receive(v1::SubscribeRequest()).status().code(),
            absl::StatusCode::kInvalidArgument);
  Subscribe({"web"}, {Version("web", 1)});
  EXPECT_EQ(state_.Receive(Hello({"web"})).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(state_.Receive(Ack("api", 1, "n")).status().code(), absl::StatusCode::kInvalidArgument);
}

// An ACK with the nonce sent is recorded; one with an old nonce is counted as stale.
TEST_F(SubscriptionStateTest, RecordsAcksByNonce) {
  std::shared_ptr<const Publication> web = Version("web", 1);
  Subscribe({"web"}, {web});
  Drain();
  ASSERT_EQ(*state_.Receive(Ack("web", 1, web->nonce)), SubscriptionState::Next::kRead);
  EXPECT_EQ(counters_.acks.load(), 1u);
  ASSERT_TRUE(state_.Receive(Ack("web", 1, "another-nonce")).ok());
  EXPECT_EQ(counters_.stale_acks.load(), 1u);
}

// The transport reads while the client owes an answer: from an update or in-sync written until
// an ACK with its nonce; a NACK or a stale ACK leaves it owed, a heartbeat owes nothing.
TEST_F(SubscriptionStateTest, AnAnswerIsOwedFromAnUpdateUntilItsAck) {
  EXPECT_TRUE(state_.AwaitingAnswer()) << "before the hello";
  std::shared_ptr<const Publication> web = Version("web", 1);
  std::shared_ptr<const Publication> api = Version("api", 4);
  ASSERT_EQ(*state_.Receive(Hello({"web", "api"}, 4, api->info.fingerprint)),
            SubscriptionState::Next::kAuthenticate);
  std::string denial;
  ASSERT_TRUE(state_.Admit(TenantA(), &denial).ok());
  state_.Subscribe({nullptr, api});
  ASSERT_EQ(state_.TakeWrite()->kind, Outgoing::kHeartbeat);
  state_.WriteDone(true);
  EXPECT_FALSE(state_.AwaitingAnswer()) << "a heartbeat is not answered";
  ASSERT_EQ(state_.TakeWrite()->kind, Outgoing::kInSync);
  state_.WriteDone(true);
  EXPECT_TRUE(state_.AwaitingAnswer()) << "an in-sync is answered by a client that verifies";
  ASSERT_TRUE(state_.Receive(Ack("api", 4, api->nonce)).ok());
  EXPECT_FALSE(state_.AwaitingAnswer());

  state_.OfferUpdate(web);
  ASSERT_EQ(Drain(), (std::vector<Outgoing::Kind>{Outgoing::kUpdate}));
  EXPECT_TRUE(state_.AwaitingAnswer());
  v1::SubscribeRequest nack;
  nack.mutable_nack()->set_name("web");
  nack.mutable_nack()->set_version(1);
  nack.mutable_nack()->set_nonce(web->nonce);
  ASSERT_TRUE(state_.Receive(nack).ok());
  EXPECT_TRUE(state_.AwaitingAnswer()) << "a NACKing client retries and answers again";
  ASSERT_TRUE(state_.Receive(Ack("web", 1, "another-nonce")).ok());
  EXPECT_TRUE(state_.AwaitingAnswer()) << "a stale ACK answers nothing";
  ASSERT_TRUE(state_.Receive(Ack("web", 1, web->nonce)).ok());
  EXPECT_FALSE(state_.AwaitingAnswer());
}

// Malformed hellos never reach authentication.
TEST_F(SubscriptionStateTest, RefusesMalformedHellos) {
  v1::SubscribeRequest bad_namespace = Hello({"web"});
  bad_namespace.mutable_hello()->set_namespace_("Tenant_A");
  EXPECT_EQ(state_.Receive(bad_namespace).status().code(), absl::StatusCode::kInvalidArgument);
  v1::SubscribeRequest twice = Hello({"web", "web"});
  EXPECT_EQ(state_.Receive(twice).status().code(), absl::StatusCode::kInvalidArgument);
  v1::SubscribeRequest none = Hello({});
  EXPECT_EQ(state_.Receive(none).status().code(), absl::StatusCode::kInvalidArgument);
}

// A policy change that takes a certificate away ends the stream as a revocation.
TEST_F(SubscriptionStateTest, ReauthorizeReportsRevocation) {
  Subscribe({"web"}, {Version("web", 1)});
  EXPECT_FALSE(state_.Reauthorize().has_value());
  authorizer_.allowed.erase("web");
  std::optional<StreamEnd> end = state_.Reauthorize();
  ASSERT_TRUE(end.has_value());
  EXPECT_EQ(end->status.code(), absl::StatusCode::kPermissionDenied);
}

// Once finished, nothing more is handed out for writing.
TEST_F(SubscriptionStateTest, NothingIsWrittenAfterFinish) {
  Subscribe({"web"}, {Version("web", 1)});
  state_.Finish();
  state_.OfferUpdate(Version("web", 2));
  EXPECT_FALSE(state_.TakeWrite().has_value());
}

// A heartbeat names only the stream's own certificates (with their newest versions), never the
// other certificates the server distributes (issue 10, item 6).
TEST_F(SubscriptionStateTest, HeartbeatNamesOnlySubscribedCertificates) {
  Subscribe({"web"}, {Version("web", 1)});
  state_.OfferUpdate(Version("secret-b", 7));  // another tenant's certificate
  state_.OfferUpdate(Version("web", 2));
  const v1::SubscribeResponse heartbeat = state_.Heartbeat();
  ASSERT_EQ(heartbeat.heartbeat().versions_size(), 1);
  EXPECT_EQ(heartbeat.heartbeat().versions(0).name(), "web");
  EXPECT_EQ(heartbeat.heartbeat().versions(0).version(), 2u);
  EXPECT_EQ(heartbeat.heartbeat().versions(0).fingerprint(), "web-fp-2");
}

// Before authentication nothing is said about names; afterwards a name this server does not
// distribute gets exactly the answer of a name not granted (issue 10, item 7).
TEST_F(SubscriptionStateTest, UnknownAndNotGrantedNamesGetTheSameAnswer) {
  auto answer = [&](const std::string& name) {
    SubscriptionState state(
        SubscriptionState::Options(), Transport(),
        [](const std::string& known) { return known == "secret-b"; }, &fleet_, &authorizer_,
        &counters_);
    absl::StatusOr<SubscriptionState::Next> next = state.Receive(Hello({name}));
    EXPECT_TRUE(next.ok()) << "refused before authentication: " << next.status();
    std::string denial;
    absl::StatusOr<std::vector<std::string>> admitted = state.Admit(TenantA(), &denial);
    EXPECT_FALSE(admitted.ok());
    std::string message(admitted.status().message());
    message.replace(message.find(name), name.size(), "NAME");
    return std::make_pair(admitted.status().code(), message);
  };
  EXPECT_EQ(answer("does-not-exist"), answer("secret-b"));
  EXPECT_EQ(answer("secret-b").first, absl::StatusCode::kPermissionDenied);
}

// An unauthenticated peer learns nothing about names either: its hello is refused for its
// identity, whatever it names.
TEST_F(SubscriptionStateTest, UnauthenticatedPeerLearnsNothingAboutNames) {
  ASSERT_TRUE(state_.Receive(Hello({"does-not-exist"})).ok());
  std::string denial;
  absl::StatusOr<std::vector<std::string>> admitted =
      state_.Admit(absl::UnauthenticatedError("no client identity"), &denial);
  EXPECT_EQ(admitted.status().code(), absl::StatusCode::kUnauthenticated);
}

// A name granted (by the policy) but not distributed here is NotFound: only its grantee learns.
TEST_F(SubscriptionStateTest, GrantedButUnknownNameIsNotFound) {
  authorizer_.allowed.insert("retired");
  ASSERT_TRUE(state_.Receive(Hello({"retired"})).ok());
  std::string denial;
  EXPECT_EQ(state_.Admit(TenantA(), &denial).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace certcast
