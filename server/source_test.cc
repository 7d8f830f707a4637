#include "server/source.h"

#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "common/forwarding_filesystem.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/fixtures/cert_factory.h"

namespace certcast {
namespace {

using ::certcast::fixtures::Chain;
using ::certcast::fixtures::MakeChain;
using ::certcast::fixtures::TempDir;
using ::testing::HasSubstr;

bool Eventually(const std::function<bool()>& condition) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    if (condition()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return condition();
}

class DirectorySourceTest : public ::testing::TestWithParam<bool /*use_inotify*/> {
 protected:
  std::unique_ptr<DirectorySource> Make(const std::string& dir) {
    DirectorySource::Options options;
    options.use_inotify = GetParam();
    options.poll_interval = absl::Milliseconds(20);
    return std::make_unique<DirectorySource>(&fs_, dir, options);
  }

  TempDir tmp_;
  PosixFilesystem fs_;
};

// The kubelet layout is read through ..data, giving the files of one version directory.
TEST_P(DirectorySourceTest, ReadsKubeletLayout) {
  Chain chain = MakeChain();
  fixtures::WriteKubeletDir(tmp_.Join("s"), chain.material);
  auto source = Make(tmp_.Join("s"));
  absl::StatusOr<CertificateMaterial> material = source->Read();
  ASSERT_TRUE(material.ok()) << material.status();
  EXPECT_EQ(*material, chain.material);
  EXPECT_EQ(source->Describe(), "dir:" + tmp_.Join("s"));
}

// A plain directory works too, and ca.crt is optional.
TEST_P(DirectorySourceTest, ReadsPlainDirectoryWithoutCa) {
  CertificateMaterial material = MakeChain().material;
  material.ca_pem.clear();
  fixtures::WritePlainDir(tmp_.Join("s"), material);
  absl::StatusOr<CertificateMaterial> read = Make(tmp_.Join("s"))->Read();
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(*read, material);
}

// The real filesystem, running `before_read(path)` before each ReadFile: a kubelet update that
// lands in the middle of a read.
class InterleavingFilesystem final : public ForwardingFilesystem {
 public:
  std::function<void(const std::string&)> before_read;

  absl::StatusOr<std::string> ReadFile(const std::string& path) override {
    if (before_read) before_read(path);
    return ForwardingFilesystem::ReadFile(path);
  }
};

// The kubelet swaps ..data and deletes the previous version directory while a read is between
// tls.key and ca.crt: the read must not return the previous version's pair without its CA (a
// content the source never held, which would be published as a new version). It reads again.
TEST(DirectorySourceReadTest, AnUpdateDuringAReadNeverMixesVersions) {
  TempDir tmp;
  const std::string dir = tmp.Join("s");
  Chain first = MakeChain(), second = MakeChain();
  ASSERT_FALSE(first.material.ca_pem.empty());
  fixtures::WriteKubeletDir(dir, first.material);
  InterleavingFilesystem fs;
  DirectorySource source(&fs, dir, DirectorySource::Options());
  bool updated = false;
  fs.before_read = [&](const std::string& path) {
    if (updated || !absl::EndsWith(path, "/ca.crt")) return;
    updated = true;
    fixtures::WriteKubeletDir(dir, second.material);  // swaps, then removes the first's directory
  };
  absl::StatusOr<CertificateMaterial> read = source.Read();
  ASSERT_TRUE(updated);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_FALSE(read->ca_pem.empty()) << "the first version's pair without its ca.crt";
  EXPECT_EQ(*read, second.material);
}

// A missing directory or file is NotFound with reason "missing", naming the path.
TEST_P(DirectorySourceTest, MissingIsNotFound) {
  absl::StatusOr<CertificateMaterial> read = Make(tmp_.Join("absent"))->Read();
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(RejectionReason(read.status()), "missing");
  EXPECT_THAT(std::string(read.status().message()), HasSubstr(tmp_.Join("absent")));

  fixtures::WritePlainDir(tmp_.Join("s"), MakeChain().material);
  ASSERT_EQ(unlink(tmp_.Join("s/tls.key").c_str()), 0);
  read = Make(tmp_.Join("s"))->Read();
  EXPECT_EQ(RejectionReason(read.status()), "missing");
  EXPECT_THAT(std::string(read.status().message()), HasSubstr("tls.key"));
}

// A kubelet swap is noticed (inotify or polling).
TEST_P(DirectorySourceTest, NoticesKubeletSwap) {
  fixtures::WriteKubeletDir(tmp_.Join("s"), MakeChain().material);
  auto source = Make(tmp_.Join("s"));
  Chain next = MakeChain();
  fixtures::WriteKubeletDir(tmp_.Join("s"), next.material);
  EXPECT_TRUE(source->WaitForChange(absl::Now() + absl::Seconds(20)));
  EXPECT_EQ(source->Read()->chain_pem, next.material.chain_pem);
}

// A directory that appears after start is picked up.
TEST_P(DirectorySourceTest, NoticesDirectoryAppearing) {
  auto source = Make(tmp_.Join("late"));
  fixtures::WriteKubeletDir(tmp_.Join("late"), MakeChain().material);
  EXPECT_TRUE(Eventually([&] {
    return source->WaitForChange(absl::Now() + absl::Milliseconds(100)) && source->Read().ok();
  }));
}

// Without changes WaitForChange returns false at the deadline; Interrupt wakes it at once.
TEST_P(DirectorySourceTest, WaitTimesOutAndInterrupts) {
  fixtures::WriteKubeletDir(tmp_.Join("s"), MakeChain().material);
  auto source = Make(tmp_.Join("s"));
  EXPECT_FALSE(source->WaitForChange(absl::Now() + absl::Milliseconds(50)));
  source->Interrupt();
  EXPECT_FALSE(source->WaitForChange(absl::InfiniteFuture()));
}

// Moved away and replaced: the new directory is watched, and once it is quiet, WaitForChange
// says so. The old watch's removal leaves a late IN_IGNORED for its descriptor in the queue;
// taken for the new watch's loss, it once made the source drop and re-add its watch on every call
// and report a change each time, so the watcher never saw the quiet it waits for to read the
// source (ServerScenarioTest.BadSourceKeepsLastGoodVersion hung that way, now and then).
TEST_P(DirectorySourceTest, ReplacedDirectoryGoesQuiet) {
  fixtures::WriteKubeletDir(tmp_.Join("s"), MakeChain().material);
  auto source = Make(tmp_.Join("s"));
  ASSERT_EQ(::rename(tmp_.Join("s").c_str(), tmp_.Join("old").c_str()), 0);
  Chain next = MakeChain();
  fixtures::WriteKubeletDir(tmp_.Join("s"), next.material);
  ASSERT_TRUE(Eventually([&] {
    return source->WaitForChange(absl::Now() + absl::Milliseconds(100)) &&
           source->Read().ok() && source->Read()->chain_pem == next.material.chain_pem;
  }));
  // Nothing changes any more: within a few calls one must reach its deadline.
  bool quiet = false;
  for (int call = 0; call < 20 && !quiet; ++call) {
    quiet = !source->WaitForChange(absl::Now() + absl::Milliseconds(100));
  }
  EXPECT_TRUE(quiet);
  // And the new directory's changes are still noticed.
  Chain third = MakeChain();
  fixtures::WriteKubeletDir(tmp_.Join("s"), third.material);
  EXPECT_TRUE(Eventually([&] {
    return source->WaitForChange(absl::Now() + absl::Milliseconds(100)) &&
           source->Read().ok() && source->Read()->chain_pem == third.material.chain_pem;
  }));
}

INSTANTIATE_TEST_SUITE_P(InotifyAndPolling, DirectorySourceTest, ::testing::Bool(),
                         [](const auto& param_info) {
                           return param_info.param ? "Inotify" : "Polling";
                         });

// A source whose changes the test triggers.
class TriggeredSource final : public CertificateSource {
 public:
  void Trigger() {
    absl::MutexLock lock(&mu_);
    ++pending_;
  }
  absl::StatusOr<CertificateMaterial> Read() override { return CertificateMaterial(); }
  bool WaitForChange(absl::Time deadline) override {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return pending_ > 0 || stop_; };
    mu_.AwaitWithDeadline(absl::Condition(&ready), deadline);
    if (stop_ || pending_ == 0) return false;
    --pending_;
    return true;
  }
  void Interrupt() override {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  std::string Describe() const override { return "triggered:"; }

 private:
  absl::Mutex mu_;
  int pending_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
};

struct Evaluations {
  absl::Mutex mu;
  std::vector<bool> confirmed ABSL_GUARDED_BY(mu);
  Verdict next ABSL_GUARDED_BY(mu) = Verdict::kSettled;
  size_t size() {
    absl::MutexLock lock(&mu);
    return confirmed.size();
  }
};

// A burst of changes is evaluated once, after the quiet period, unconfirmed; an unsettled
// verdict is re-evaluated, confirmed, after the confirmation delay.
TEST(SourceWatcherTest, DebouncesAndConfirms) {
  TriggeredSource source;
  Evaluations evaluations;
  SourceWatcher::Options options;
  options.quiet_period = absl::Milliseconds(30);
  options.confirm_delay = absl::Milliseconds(30);
  SourceWatcher watcher(
      &source,
      [&](bool confirmed) {
        absl::MutexLock lock(&evaluations.mu);
        evaluations.confirmed.push_back(confirmed);
        Verdict verdict = evaluations.next;
        evaluations.next = Verdict::kSettled;
        return verdict;
      },
      options);
  watcher.Start();
  {
    absl::MutexLock lock(&evaluations.mu);
    evaluations.next = Verdict::kUnsettled;
  }
  for (int i = 0; i < 5; ++i) source.Trigger();
  ASSERT_TRUE(Eventually([&] { return evaluations.size() >= 2; }));
  watcher.Stop();
  EXPECT_EQ(watcher.changes_seen(), 5);
  absl::MutexLock lock(&evaluations.mu);
  EXPECT_THAT(evaluations.confirmed, ::testing::ElementsAre(false, true));
}

// A failed read is retried with backoff, unconfirmed (the content is new each time), without a
// change notification, until a read settles.
TEST(SourceWatcherTest, RetriesFailedReadsWithBackoffUntilSettled) {
  TriggeredSource source;
  absl::Mutex mu;
  std::vector<bool> confirmed;
  SourceWatcher::Options options;
  options.quiet_period = absl::Milliseconds(5);
  options.retry = {absl::Milliseconds(5), absl::Milliseconds(40), 2.0, 0.2};
  SourceWatcher watcher(
      &source,
      [&](bool was_confirmed) {
        absl::MutexLock lock(&mu);
        confirmed.push_back(was_confirmed);
        return confirmed.size() <= 4 ? Verdict::kRetry : Verdict::kSettled;
      },
      options);
  watcher.Start();
  source.Trigger();
  ASSERT_TRUE(Eventually([&] { return watcher.evaluations() >= 5; }));
  watcher.Stop();
  EXPECT_EQ(watcher.retries(), 4);
  EXPECT_EQ(watcher.changes_seen(), 1);
  absl::MutexLock lock(&mu);
  ASSERT_EQ(confirmed.size(), 5u) << "settled: no further evaluation";
  EXPECT_THAT(confirmed, ::testing::Each(false));
}

}  // namespace
}  // namespace certcast
