#include "common/backoff.h"

#include <algorithm>

namespace certcast {

Backoff::Backoff(Options options, uint64_t seed)
    : options_(options),
      base_(options.initial),
      random_(seed != 0 ? seed : std::random_device()()) {}

absl::Duration Backoff::Next() {
  std::uniform_real_distribution<double> factor(1.0 - options_.jitter, 1.0 + options_.jitter);
  const absl::Duration delay = base_ * factor(random_);
  base_ = std::min(base_ * options_.multiplier, options_.max);
  return delay;
}

}  // namespace certcast
