#include "server/fleet_exchange.h"

#include <map>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace certcast {
namespace {

// A Replication that is only a shared map of summaries, as the store would hold them.
class SummaryBoard final : public Replication {
 public:
  VersionStore* store() override { return nullptr; }
  void Start(const std::vector<std::string>&, Callbacks) override {}
  void Stop() override {}
  ReplicationStatus Status() const override { return ReplicationStatus(); }
  bool IsLeader() const override { return leader; }
  std::string Leader() const override { return ""; }
  absl::Status PublishFleetSummary(const std::string& summary) override {
    ++writes;
    (*board)[identity] = summary;
    return absl::OkStatus();
  }
  absl::StatusOr<std::map<std::string, std::string>> FleetSummaries() override {
    std::map<std::string, std::string> others = *board;
    others.erase(identity);
    return others;
  }
  absl::Status RemoveFleetSummaries(const std::vector<std::string>& replicas) override {
    for (const std::string& replica : replicas) board->erase(replica);
    return absl::OkStatus();
  }

  std::string identity;
  std::map<std::string, std::string>* board = nullptr;
  int writes = 0;
  bool leader = false;
};

ClientRecord Client(const std::string& ns, const std::string& id) {
  ClientRecord record;
  record.namespace_ = ns;
  record.client_id = id;
  record.peer = "ipv4:10.0.0.7:5000";
  record.identity = "spiffe://cluster.local/ns/" + ns + "/sa/certcast-client";
  record.certificates.emplace_back();
  record.certificates.back().name = "wildcard";
  return record;
}

// What one replica's clients hold reaches the other replica's whole-fleet view, with the
// replica's identity; an unchanged fleet is rewritten only at the keepalive.
TEST(FleetExchangeTest, EachReplicaSeesTheOthersClients) {
  FakeClock clock;
  std::map<std::string, std::string> board;
  Fleet fleet_a(&clock, absl::Hours(1)), fleet_b(&clock, absl::Hours(1));
  SummaryBoard store_a, store_b;
  store_a.identity = "replica-a";
  store_b.identity = "replica-b";
  store_a.board = store_b.board = &board;
  FleetExchange::Options options;
  FleetExchange a(&fleet_a, &store_a, &clock, options), b(&fleet_b, &store_b, &clock, options);

  const uint64_t id = fleet_a.Connect(Client("tenant-a", "pod-1"));
  fleet_a.RecordSent(id, "wildcard", 4, "n4", false);
  fleet_a.RecordNack(id, "wildcard", 4, "n4", "secret: forbidden", "secret");
  a.SyncOnce();
  b.SyncOnce();
  Fleet::Page page = fleet_b.List("", "", 10, 0, FleetScope::kAllReplicas);
  ASSERT_EQ(page.clients.size(), 1u);
  const ClientRecord& seen = page.clients[0];
  EXPECT_EQ(seen.replica, "replica-a");
  EXPECT_EQ(seen.client_id, "pod-1");
  EXPECT_EQ(seen.identity, "spiffe://cluster.local/ns/tenant-a/sa/certcast-client");
  EXPECT_TRUE(seen.connected);
  ASSERT_EQ(seen.certificates.size(), 1u);
  EXPECT_EQ(seen.certificates[0].sent_version, 4u);
  EXPECT_EQ(seen.certificates[0].last_error_version, 4u);
  EXPECT_EQ(seen.certificates[0].last_error, "secret: forbidden");
  EXPECT_EQ(fleet_b.List("", "", 10, 0).clients.size(), 0u);

  const int writes = store_a.writes;
  clock.Advance(options.interval);
  a.SyncOnce();
  EXPECT_EQ(store_a.writes, writes) << "an unchanged fleet was rewritten before the keepalive";
  clock.Advance(options.keepalive);
  a.SyncOnce();
  EXPECT_EQ(store_a.writes, writes + 1) << "no keepalive write";

  // replica-a dies: after 3 keepalives without a change its clients leave b's view, and b, the
  // leader, deletes its summary after 12.
  store_b.leader = true;
  b.SyncOnce();  // sees a's last write
  clock.Advance(3 * options.keepalive);
  b.SyncOnce();
  EXPECT_EQ(fleet_b.List("", "", 10, 0, FleetScope::kAllReplicas).clients.size(), 0u);
  EXPECT_EQ(board.count("replica-a"), 1u);
  clock.Advance(9 * options.keepalive);
  b.SyncOnce();
  EXPECT_EQ(board.count("replica-a"), 0u);
}

// Above the size cap the texts go first, then the disconnected clients; connected clients and
// their versions always stay.
TEST(FleetExchangeTest, OversizedSummariesShedDetailNotClients) {
  std::vector<ClientRecord> records;
  for (int i = 0; i < 50; ++i) {
    ClientRecord record = Client("tenant-" + std::to_string(i), "pod");
    record.certificates[0].acknowledged_version = 7;
    record.certificates[0].last_error = std::string(200, 'x');
    record.connected = i % 2 == 0;
    records.push_back(record);
  }
  const std::string full = FleetExchange::Summarize(records, absl::Now(), 1 << 20);
  EXPECT_EQ(FleetExchange::Records(full).size(), 50u);
  const std::string shed = FleetExchange::Summarize(records, absl::Now(), full.size() - 1);
  std::vector<ClientRecord> kept = FleetExchange::Records(shed);
  ASSERT_EQ(kept.size(), 50u);
  EXPECT_EQ(kept[0].certificates[0].last_error, "");
  EXPECT_EQ(kept[0].certificates[0].acknowledged_version, 7u);
  const std::string connected_only = FleetExchange::Summarize(records, absl::Now(), 1000);
  kept = FleetExchange::Records(connected_only);
  ASSERT_EQ(kept.size(), 25u);
  for (const ClientRecord& record : kept) EXPECT_TRUE(record.connected);
  EXPECT_TRUE(FleetExchange::Records("not a summary \xff").empty());
}

}  // namespace
}  // namespace certcast
