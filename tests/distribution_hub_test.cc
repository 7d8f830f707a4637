// The distribution hub with a real gRPC server and misbehaving clients: one that stops reading
// (latest wins keeps memory bounded), and hellos racing the hello deadline; and its fan-out in
// shards, with and without threads to run them.
#include <atomic>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "common/clock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "server/distribution.h"
#include "server/publication.h"
#include "tests/test_subscriber.h"

namespace certcast {
namespace {

using ::certcast::scenario::InsecureChannel;
using ::certcast::scenario::TestSubscriber;
using ::certcast::scenario::WaitFor;

std::shared_ptr<const Publication> BigPublication(uint64_t version) {
  CertificateInfo info;
  info.fingerprint = std::string(63, 'f') + std::to_string(version % 10);
  CertificateMaterial material;
  material.chain_pem = std::string(2 * 1024 * 1024, 'c');  // the hub never looks inside
  material.key_pem = SecretBytes("key");
  return MakePublication("wildcard", version, false, info, material);
}

// A hub with `options` behind a real gRPC server on a free loopback port, started; shut down in
// that order when it goes.
struct ServedHub {
  explicit ServedHub(const DistributionHub::Options& options)
      : hub({"wildcard"}, options, &fleet, &authorizer), service(&hub) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(&service);
    server = builder.BuildAndStart();
    hub.Start();
  }
  ~ServedHub() {
    server->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
    hub.Stop();
  }

  RealClock clock;
  Fleet fleet{&clock, absl::Hours(1)};
  AllowAllAuthorizer authorizer;
  DistributionHub hub;
  DistributionService service;
  int port = 0;
  std::unique_ptr<grpc::Server> server;
};

// A reader that is not reading gets only a bounded number of the 60 versions, ending with 60.
TEST(SlowReaderTest, LatestVersionWinsForAClientThatStopsReading) {
  ServedHub served{DistributionHub::Options()};
  DistributionHub& hub = served.hub;
  hub.OnPublish(BigPublication(1));

  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 * 1024 * 1024);
  // A fixed, small flow-control window: without BDP probing the client transport cannot buffer
  // many messages on the application's behalf, so "not reading" really stops the stream.
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 64 * 1024);
  TestSubscriber subscriber(grpc::CreateCustomChannel("127.0.0.1:" + std::to_string(served.port),
                                                      grpc::InsecureChannelCredentials(), args));
  v1::HeldCertificate held;
  held.set_name("wildcard");
  ASSERT_TRUE(subscriber.SendHello("tenant-a", "slow", {held}));
  ASSERT_TRUE(WaitFor([&] { return hub.counters().updates_written == 1; }));

  // The test subscriber's reader thread keeps reading, but 60 x 512 KiB published back to back
  // outruns one stream's flow-control window; superseded versions must be dropped, not queued.
  // Built first, so that nothing slows the publications down between them (under ASan building
  // each one took long enough for the reader to keep up, and nothing was replaced).
  constexpr uint64_t kVersions = 60;
  std::vector<std::shared_ptr<const Publication>> publications;
  for (uint64_t version = 2; version <= kVersions; ++version)
    publications.push_back(BigPublication(version));
  for (const auto& publication : publications) hub.OnPublish(publication);

  uint64_t last = 0;
  int updates = 0;
  while (last < kVersions) {
    std::optional<v1::SubscribeResponse> response = subscriber.NextNonHeartbeat();
    ASSERT_TRUE(response.has_value()) << "stream ended before version " << kVersions;
    ASSERT_TRUE(response->has_update());
    EXPECT_GT(response->update().version(), last) << "versions must only move forward";
    last = response->update().version();
    ++updates;
  }
  EXPECT_EQ(last, kVersions);
  // How many got through depends on gRPC's buffering; that some were replaced does not.
  EXPECT_LT(updates, static_cast<int>(kVersions)) << "superseded versions were queued";
  EXPECT_GT(hub.counters().updates_replaced, 0u);

  subscriber.CloseSend();
}

// A stream whose client has answered everything has no read pending (it reads again after its
// next write); a client that goes away then must still end it at once, not at the next
// heartbeat (OnCancel).
TEST(DistributionHubTest, SettledStreamEndsWhenItsClientGoesAway) {
  DistributionHub::Options options;
  options.heartbeat_interval = absl::Hours(1);
  ServedHub served(options);
  DistributionHub& hub = served.hub;
  hub.OnPublish(BigPublication(1));
  {
    TestSubscriber subscriber(InsecureChannel(served.port));
    v1::HeldCertificate held;
    held.set_name("wildcard");
    ASSERT_TRUE(subscriber.SendHello("tenant-a", "settled", {held}));
    std::optional<v1::SubscribeResponse> pushed = subscriber.NextNonHeartbeat();
    ASSERT_TRUE(pushed.has_value() && pushed->has_update());
    ASSERT_TRUE(subscriber.SendAck(pushed->update()));
    ASSERT_TRUE(WaitFor([&] { return hub.counters().acks == 1; }));
    EXPECT_EQ(hub.live_streams(), 1u);
  }  // cancels the call
  EXPECT_TRUE(WaitFor([&] { return hub.live_streams() == 0; }, absl::Seconds(10)))
      << "the stream outlived its client";
}

// A hello that arrives just as the hello deadline ends the stream must not make the stream
// write after Finish (gRPC aborts the whole process then).
TEST(DistributionHubTest, HelloRacingTheDeadlineNeverCrashes) {
  DistributionHub::Options options;
  options.hello_timeout = absl::Milliseconds(3);
  ServedHub served(options);
  DistributionHub& hub = served.hub;
  hub.OnPublish(BigPublication(1));
  auto channel = InsecureChannel(served.port);
  std::mt19937 random(7);
  int deadline_exceeded = 0;
  for (int i = 0; i < 150; ++i) {
    TestSubscriber subscriber(channel);
    absl::SleepFor(absl::Microseconds(random() % 6000));  // fault injection: race the deadline
    v1::HeldCertificate held;
    held.set_name("wildcard");
    subscriber.SendHello("tenant-a", "racer", {held});
    subscriber.CloseSend();
    const grpc::Status status = subscriber.Finish();
    if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) ++deadline_exceeded;
  }
  EXPECT_GT(deadline_exceeded, 0) << "the race was never exercised";
}

// Publishes two versions to 7 streams through a hub with `options` and requires every stream to
// get each version exactly once.
void ExpectEveryStreamGetsEachVersionOnce(const DistributionHub::Options& options) {
  ServedHub served(options);
  DistributionHub& hub = served.hub;
  auto channel = InsecureChannel(served.port);
  constexpr int kStreams = 7;
  std::vector<std::unique_ptr<TestSubscriber>> subscribers;
  for (int i = 0; i < kStreams; ++i) {
    subscribers.push_back(std::make_unique<TestSubscriber>(channel));
    v1::HeldCertificate held;
    held.set_name("wildcard");
    ASSERT_TRUE(subscribers.back()->SendHello("tenant-a", "client-" + std::to_string(i), {held}));
  }
  ASSERT_TRUE(WaitFor([&] { return hub.live_streams() == kStreams; }));
  for (uint64_t version = 1; version <= 2; ++version) {
    hub.OnPublish(BigPublication(version));
    for (int i = 0; i < kStreams; ++i) {
      std::optional<v1::SubscribeResponse> response = subscribers[i]->NextNonHeartbeat();
      ASSERT_TRUE(response.has_value()) << "stream " << i << " got no version " << version;
      ASSERT_TRUE(response->has_update());
      EXPECT_EQ(response->update().version(), version) << "stream " << i;
    }
  }
  EXPECT_EQ(hub.counters().updates_written, 2u * kStreams);
  for (auto& subscriber : subscribers) subscriber->CloseSend();
}

DistributionHub::Options ShardsOfThree() {
  DistributionHub::Options options;
  options.fan_out_threads = 3;
  options.min_streams_per_fan_out_thread = 1;
  return options;
}

// A publication's writes are started by several threads, each for a shard of the streams: with
// an uneven split (7 streams in shards of 3) every stream still gets each version exactly once.
TEST(DistributionHubTest, FanOutInShardsReachesEveryStreamOnce) {
  ExpectEveryStreamGetsEachVersionOnce(ShardsOfThree());
}

// No thread to be had (a pod's pids limit): the publishing thread writes every shard itself
// instead of the server ending on an uncaught std::system_error.
TEST(DistributionHubTest, FanOutWithoutThreadsStillReachesEveryStream) {
  DistributionHub::Options options = ShardsOfThree();
  int refused = 0;
  options.start_fan_out_thread = [&refused](std::function<void()>) -> std::thread {
    ++refused;
    throw std::system_error(EAGAIN, std::generic_category(), "pthread_create");
  };
  ExpectEveryStreamGetsEachVersionOnce(options);
  EXPECT_EQ(refused, 2) << "two publications, one attempt each";
}

// The fan-out threads outlive a publication: the next one finds them (and their malloc arenas,
// where the previous push freed its TLS buffers) instead of starting new ones.
TEST(DistributionHubTest, FanOutKeepsItsThreadsForTheNextPublication) {
  DistributionHub::Options options = ShardsOfThree();
  std::atomic<int> started{0};
  options.start_fan_out_thread = [&started](std::function<void()> run) {
    started.fetch_add(1);
    return std::thread(std::move(run));
  };
  ExpectEveryStreamGetsEachVersionOnce(options);
  EXPECT_EQ(started.load(), 2) << "three shards: the publishing thread and two kept threads";
}

}  // namespace
}  // namespace certcast
