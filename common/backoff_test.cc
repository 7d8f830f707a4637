#include "common/backoff.h"

#include "gtest/gtest.h"

namespace certcast {
namespace {

// Delays double from the initial value up to the maximum, each within the jitter band.
TEST(BackoffTest, GrowsWithinJitterUpToMax) {
  Backoff backoff({absl::Milliseconds(500), absl::Seconds(30), 2.0, 0.2}, /*seed=*/42);
  absl::Duration base = absl::Milliseconds(500);
  for (int i = 0; i < 12; ++i) {
    const absl::Duration delay = backoff.Next();
    EXPECT_GE(delay, base * 0.8) << i;
    EXPECT_LE(delay, base * 1.2) << i;
    base = std::min(base * 2, absl::Seconds(30));
  }
}

// Reset starts over at the initial delay.
TEST(BackoffTest, ResetStartsOver) {
  Backoff backoff({absl::Seconds(1), absl::Seconds(30), 2.0, 0.0}, 7);
  backoff.Next();
  backoff.Next();
  EXPECT_EQ(backoff.Next(), absl::Seconds(4));
  backoff.Reset();
  EXPECT_EQ(backoff.Next(), absl::Seconds(1));
}

// Two clients with different seeds do not retry in lockstep.
TEST(BackoffTest, JitterSpreadsClients) {
  Backoff a({}, 1), b({}, 2);
  EXPECT_NE(a.Next(), b.Next());
}

}  // namespace
}  // namespace certcast
