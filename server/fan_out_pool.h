// Threads that start a publication's writes beside the publishing thread.
#ifndef CERTCAST_SERVER_FAN_OUT_POOL_H_
#define CERTCAST_SERVER_FAN_OUT_POOL_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"

namespace certcast {

// Runs a batch of jobs on the calling thread and on up to `threads - 1` threads that live from
// their first batch until Stop(). They are kept rather than started per publication: a thread
// started per publication got whichever malloc arena was free, and the TLS write buffers a push
// frees in one arena were allocated again in another, so every page of them was faulted in again
// (bench/README.md, optimization 16). Kept threads keep their arenas, so every push allocates in
// the same few arenas the previous one freed into (any thread may take any job of a batch). A
// thread that cannot be started (std::system_error: a pod's pids limit) is tried again at the
// next batch; meanwhile the calling thread runs more.
// Thread-safe: batches from several threads share the pool.
class FanOutPool {
 public:
  using StartThread = std::function<std::thread(std::function<void()>)>;

  FanOutPool(int threads, StartThread start_thread);
  ~FanOutPool();  // Stop()

  // Runs every job once and returns when all have run; the calling thread takes part.
  void Run(std::vector<std::function<void()>> jobs);
  // Ends the threads once they are idle; a later Run() uses the calling thread alone.
  void Stop();

 private:
  struct Batch;
  // Claims and runs one job of `batch`; false when none was left.
  static bool RunOne(Batch* batch);
  void StartMissingThreads();
  void Serve();

  const size_t wanted_threads_;
  const StartThread start_thread_;
  absl::Mutex mu_;
  std::deque<std::shared_ptr<Batch>> batches_ ABSL_GUARDED_BY(mu_);  // with unclaimed jobs
  std::vector<std::thread> threads_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_FAN_OUT_POOL_H_
