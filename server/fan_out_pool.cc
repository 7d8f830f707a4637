#include "server/fan_out_pool.h"

#include <algorithm>
#include <atomic>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/logging.h"

namespace certcast {

struct FanOutPool::Batch {
  explicit Batch(std::vector<std::function<void()>> to_run)
      : jobs(std::move(to_run)), unfinished(jobs.size()) {}
  const std::vector<std::function<void()>> jobs;
  std::atomic<size_t> next{0};  // the next job to claim
  absl::Mutex mu;
  size_t unfinished ABSL_GUARDED_BY(mu);
};

FanOutPool::FanOutPool(int threads, StartThread start_thread)
    : wanted_threads_(static_cast<size_t>(std::max(threads, 1)) - 1),
      start_thread_(std::move(start_thread)) {}

FanOutPool::~FanOutPool() { Stop(); }

void FanOutPool::Run(std::vector<std::function<void()>> jobs) {
  if (jobs.empty()) return;
  auto batch = std::make_shared<Batch>(std::move(jobs));
  if (batch->jobs.size() > 1) {
    StartMissingThreads();
    absl::MutexLock lock(&mu_);
    if (!threads_.empty()) batches_.push_back(batch);
  }
  while (RunOne(batch.get())) {
  }
  absl::MutexLock lock(&batch->mu);
  auto done = [&batch]()
                  ABSL_EXCLUSIVE_LOCKS_REQUIRED(batch->mu) { return batch->unfinished == 0; };
  batch->mu.Await(absl::Condition(&done));
}

bool FanOutPool::RunOne(Batch* batch) {
  const size_t i = batch->next.fetch_add(1);
  if (i >= batch->jobs.size()) return false;
  batch->jobs[i]();
  absl::MutexLock lock(&batch->mu);
  --batch->unfinished;
  return true;
}

void FanOutPool::StartMissingThreads() {
  absl::MutexLock lock(&mu_);
  while (!stopping_ && threads_.size() < wanted_threads_) {
    try {
      threads_.push_back(start_thread_([this] { Serve(); }));
    } catch (const std::system_error& error) {
      LogWarn("no thread for a share of the fan-out; the publishing thread writes it too",
              {{"threads", absl::StrCat(threads_.size(), " of ", wanted_threads_)},
               {"error", error.what()}});
      return;
    }
  }
}

void FanOutPool::Serve() {
  while (true) {
    std::shared_ptr<Batch> batch;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stopping_ || !batches_.empty();
      };
      mu_.Await(absl::Condition(&ready));
      if (batches_.empty()) return;  // stopping, and nothing left to help with
      batch = batches_.front();
      // Each thread takes one job of a batch at a time; a batch leaves the queue when every job
      // is claimed, by whoever claims the last one or sees none left.
      if (batch->next.load() + 1 >= batch->jobs.size()) batches_.pop_front();
    }
    RunOne(batch.get());
  }
}

void FanOutPool::Stop() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    threads.swap(threads_);
  }
  for (std::thread& thread : threads) thread.join();
}

}  // namespace certcast
