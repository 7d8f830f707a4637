#include "server/fleet.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace certcast {
namespace {

ClientRecord Client(const std::string& ns, const std::string& id) {
  ClientRecord record;
  record.namespace_ = ns;
  record.client_id = id;
  record.certificates.emplace_back();
  record.certificates.back().name = "wildcard";
  return record;
}

// Only the nonce last sent on the stream is accepted; older ones are counted as stale.
TEST(FleetTest, AcksWithOutdatedNonceAreStale) {
  FakeClock clock;
  Fleet fleet(&clock, absl::Hours(1));
  const uint64_t id = fleet.Connect(Client("tenant-a", "pod"));
  fleet.RecordSent(id, "wildcard", 1, "n1", false);
  fleet.RecordSent(id, "wildcard", 2, "n2", false);
  EXPECT_EQ(fleet.RecordAck(id, "wildcard", 1, "n1", ""), AckOutcome::kStale);
  EXPECT_EQ(fleet.RecordNack(id, "wildcard", 1, "n1", "x", "sink"), AckOutcome::kStale);
  EXPECT_EQ(fleet.RecordAck(id, "wildcard", 2, "n2", ""), AckOutcome::kRecorded);
  EXPECT_EQ(fleet.RecordAck(id, "other", 2, "n2", ""), AckOutcome::kUnknownCertificate);
  EXPECT_EQ(fleet.counters().stale, 2u);
  EXPECT_EQ(fleet.counters().acks, 1u);
  EXPECT_EQ(fleet.CountFor("wildcard", 2).acknowledged, 1u);
}

// A NACK followed by an ACK of the same nonce (a transient failure retried by the client)
// clears the error.
TEST(FleetTest, AckAfterNackClearsTheError) {
  FakeClock clock;
  Fleet fleet(&clock, absl::Hours(1));
  const uint64_t id = fleet.Connect(Client("tenant-a", "pod"));
  fleet.RecordSent(id, "wildcard", 3, "n3", false);
  fleet.RecordNack(id, "wildcard", 3, "n3", "secret: 503", "secret");
  Fleet::Page page = fleet.List("", "", 10, 0);
  EXPECT_EQ(page.clients[0].certificates[0].last_error, "secret: 503");
  fleet.RecordAck(id, "wildcard", 3, "n3", "");
  page = fleet.List("", "", 10, 0);
  EXPECT_EQ(page.clients[0].certificates[0].last_error, "");
  EXPECT_EQ(page.clients[0].certificates[0].acknowledged_version, 3u);
}

// Disconnected clients stay visible for the retention period, then disappear; a reconnect of the
// same namespace and client id replaces the old record.
TEST(FleetTest, DisconnectedClientsAreKeptForRetention) {
  FakeClock clock;
  Fleet fleet(&clock, absl::Minutes(10));
  const uint64_t id = fleet.Connect(Client("tenant-a", "pod"));
  fleet.Disconnect(id);
  Fleet::Page page = fleet.List("", "", 10, 0);
  ASSERT_EQ(page.clients.size(), 1u);
  EXPECT_FALSE(page.clients[0].connected);
  EXPECT_EQ(fleet.CountFor("wildcard", 0).clients, 0u);

  fleet.Connect(Client("tenant-a", "pod"));
  page = fleet.List("", "", 10, 0);
  ASSERT_EQ(page.clients.size(), 1u);
  EXPECT_TRUE(page.clients[0].connected);

  const uint64_t other = fleet.Connect(Client("tenant-b", "pod"));
  fleet.Disconnect(other);
  clock.Advance(absl::Minutes(11));
  page = fleet.List("", "", 10, 0);
  ASSERT_EQ(page.clients.size(), 1u);
  EXPECT_EQ(page.clients[0].namespace_, "tenant-a");
  // The replaced and the expired records are gone for the lookups of a push and its ACK too
  // (the index beside the ordered records; ASan sees a stale entry).
  fleet.RecordSent(id, "wildcard", 1, "n1", false);
  fleet.RecordSent(other, "wildcard", 1, "n1", false);
  EXPECT_EQ(fleet.RecordAck(id, "wildcard", 1, "n1", ""), AckOutcome::kUnknownCertificate);
  EXPECT_EQ(fleet.RecordAck(other, "wildcard", 1, "n1", ""), AckOutcome::kUnknownCertificate);
}

// Other replicas' clients count with kAllReplicas only, after this replica's, and page through
// with tokens above kFirstRemoteId. A disconnected record of a client connected elsewhere (it
// moved) is left out, whichever replica holds which record.
TEST(FleetTest, OtherReplicasClientsJoinTheWholeFleetView) {
  FakeClock clock;
  Fleet fleet(&clock, absl::Hours(1));
  const uint64_t moved_here = fleet.Connect(Client("tenant-a", "moved-away"));
  fleet.Disconnect(moved_here);
  const uint64_t local = fleet.Connect(Client("tenant-a", "local"));
  fleet.RecordSent(local, "wildcard", 2, "n2", true);

  ClientRecord remote = Client("tenant-b", "remote");
  remote.certificates[0].acknowledged_version = 2;
  ClientRecord moved = Client("tenant-a", "moved-away");  // connected on replica-2 now
  ClientRecord gone = Client("tenant-a", "local");        // it was on replica-2 before
  gone.connected = false;
  fleet.SetRemote({{"replica-2", {remote, moved, gone}}});

  EXPECT_EQ(fleet.CountFor("wildcard", 2).clients, 1u) << "this replica's own";
  const Fleet::Counts all = fleet.CountFor("wildcard", 2, "", FleetScope::kAllReplicas);
  EXPECT_EQ(all.clients, 3u);
  EXPECT_EQ(all.acknowledged, 2u);
  EXPECT_EQ(fleet.CountByNamespace("wildcard", 2, nullptr, FleetScope::kAllReplicas)["tenant-b"]
                .acknowledged,
            1u);

  std::vector<std::string> listed;
  uint64_t after = 0;
  while (true) {
    Fleet::Page page = fleet.List("", "wildcard", 1, after, FleetScope::kAllReplicas);
    for (const ClientRecord& record : page.clients) {
      listed.push_back(absl::StrCat(record.client_id, "@", record.replica,
                                    record.connected ? "" : " (gone)"));
    }
    if (page.next_page_token.empty()) break;
    after = std::stoull(page.next_page_token);
  }
  EXPECT_EQ(listed, (std::vector<std::string>{"local@", "remote@replica-2", "moved-away@replica-2"}));
  EXPECT_EQ(fleet.List("", "", 10, 0).clients.size(), 2u) << "kThisReplica keeps its own";

  fleet.SetRemote({});  // replica-2 died
  EXPECT_EQ(fleet.CountFor("wildcard", 2, "", FleetScope::kAllReplicas).clients, 1u);
}

}  // namespace
}  // namespace certcast
