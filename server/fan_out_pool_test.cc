#include "server/fan_out_pool.h"

#include <atomic>
#include <functional>
#include <set>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace certcast {
namespace {

FanOutPool::StartThread Counting(std::atomic<int>* started) {
  return [started](std::function<void()> run) {
    started->fetch_add(1);
    return std::thread(std::move(run));
  };
}

// Batches from two publishing threads at once: every job runs exactly once, and the pool's
// threads are started once, not per batch.
TEST(FanOutPoolTest, ConcurrentBatchesRunEveryJobOnce) {
  std::atomic<int> started{0};
  FanOutPool pool(3, Counting(&started));
  std::vector<std::atomic<int>> runs(2 * 50 * 4);
  auto publish = [&](int publisher) {
    for (int batch = 0; batch < 50; ++batch) {
      std::vector<std::function<void()>> jobs;
      for (int job = 0; job < 4; ++job) {
        const size_t slot = static_cast<size_t>((publisher * 50 + batch) * 4 + job);
        jobs.push_back([&runs, slot] { runs[slot].fetch_add(1); });
      }
      pool.Run(std::move(jobs));
    }
  };
  std::thread other(publish, 1);
  publish(0);
  other.join();
  for (size_t i = 0; i < runs.size(); ++i) EXPECT_EQ(runs[i].load(), 1) << "job " << i;
  EXPECT_EQ(started.load(), 2);
}

// After Stop the pool's threads are gone and the calling thread runs every job itself.
TEST(FanOutPoolTest, AfterStopTheCallerRunsEverything) {
  std::atomic<int> started{0};
  FanOutPool pool(3, Counting(&started));
  pool.Stop();
  absl::Mutex mu;
  std::set<std::thread::id> ran_on;
  std::vector<std::function<void()>> jobs;
  for (int job = 0; job < 3; ++job) {
    jobs.push_back([&] {
      absl::MutexLock lock(&mu);
      ran_on.insert(std::this_thread::get_id());
    });
  }
  pool.Run(std::move(jobs));
  EXPECT_EQ(started.load(), 0);
  EXPECT_EQ(ran_on, std::set<std::thread::id>{std::this_thread::get_id()});
}

}  // namespace
}  // namespace certcast
