// Exponential backoff with jitter, for reconnects and retries: each delay is the current base
// times a random factor in [1 - jitter, 1 + jitter]; the base doubles (by `multiplier`) up to
// `max`. Reset() after success. Not thread-safe.
#ifndef CERTCAST_COMMON_BACKOFF_H_
#define CERTCAST_COMMON_BACKOFF_H_

#include <cstdint>
#include <random>

#include "absl/time/time.h"

namespace certcast {

class Backoff {
 public:
  struct Options {
    absl::Duration initial = absl::Milliseconds(500);
    absl::Duration max = absl::Seconds(30);
    double multiplier = 2.0;
    double jitter = 0.2;
  };
  // `seed` makes the jitter reproducible in tests; 0 seeds from std::random_device.
  explicit Backoff(Options options, uint64_t seed = 0);

  // The delay to wait now; grows the next one.
  absl::Duration Next();
  void Reset() { base_ = options_.initial; }

 private:
  const Options options_;
  absl::Duration base_;
  std::mt19937_64 random_;
};

}  // namespace certcast

#endif  // CERTCAST_COMMON_BACKOFF_H_
