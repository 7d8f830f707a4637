// Certificate sources: where the material of one certificate comes from, and the watcher that
// turns raw change notifications into settled evaluations.
//
// A source only reads and notices changes; deciding what the content means (validation,
// versions) is the Publisher's job. SourceWatcher adds the timing that makes half-done updates
// harmless: a quiet period after each change, and a confirmation delay before an invalid
// content counts as a rejection.
#ifndef CERTCAST_SERVER_SOURCE_H_
#define CERTCAST_SERVER_SOURCE_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/backoff.h"
#include "common/certificate.h"
#include "common/filesystem.h"

namespace certcast {

class CertificateSource {
 public:
  virtual ~CertificateSource() = default;

  // Reads the current material. NotFound (reason "missing") when the source or a required file
  // is absent; another error (reason "unreadable") when it cannot be read. Thread-safe.
  virtual absl::StatusOr<CertificateMaterial> Read() = 0;

  // The revision of what the last successful Read returned (a Secret's resourceVersion), which
  // orders source states across replicas; empty when the source has none (a directory). Called
  // right after Read by the same caller.
  virtual std::string LastReadRevision() { return ""; }

  // Blocks until the content may have changed (true) or `deadline` passes (false). Spurious
  // true results are fine. Called from one watcher thread only. Returns false promptly after
  // Interrupt().
  virtual bool WaitForChange(absl::Time deadline) = 0;

  // Wakes WaitForChange; later calls return false at once. Thread-safe.
  virtual void Interrupt() = 0;

  // e.g. "dir:/etc/certcast/wildcard", for inspection and logs.
  virtual std::string Describe() const = 0;
};

// A directory with the layout of a mounted kubernetes.io/tls Secret (tls.crt, tls.key, optional
// ca.crt), updated either by the kubelet's `..data` symlink swap or by renaming plain files.
// Watches with inotify; polls file signatures when inotify is unavailable or the directory is
// missing. Does not own `fs`.
class DirectorySource final : public CertificateSource {
 public:
  struct Options {
    absl::Duration poll_interval = absl::Seconds(2);  // polling mode only
    bool use_inotify = true;                          // false forces polling (tests)
  };
  DirectorySource(Filesystem* fs, std::string dir, Options options);
  ~DirectorySource() override;

  absl::StatusOr<CertificateMaterial> Read() override;
  bool WaitForChange(absl::Time deadline) override;
  void Interrupt() override;
  std::string Describe() const override { return "dir:" + dir_; }

 private:
  bool EnsureWatch();       // (re)adds the inotify watch; false when it cannot
  std::string Signature();  // identity of the current files, for polling
  absl::StatusOr<CertificateMaterial> ReadFrom(const std::string& base);

  Filesystem* const fs_;
  const std::string dir_;
  const Options options_;
  int inotify_fd_ = -1;
  int watch_ = -1;
  int wake_fd_ = -1;  // eventfd for Interrupt
  std::atomic<bool> interrupted_{false};
  std::string last_signature_;
};

// What the Publisher concluded about the source's current content.
enum class Verdict {
  kSettled,    // nothing more to do until the next change
  kUnsettled,  // invalid content: look again after the confirmation delay
  kRetry,      // the source could not be read: read again with backoff until it can be
};

// Runs one thread per source (the owner evaluates once at start before Start()): evaluates
// after each change once the source has been quiet for `quiet_period` (or, for a source that
// never stops changing, `max_settle` after the first change); re-evaluates unsettled content
// after `confirm_delay` (with confirmed=true, so only a persisting problem is a rejection);
// reads again with exponential backoff (`retry`) after a read that failed, until one succeeds;
// and re-reads every `resync_interval` in case a notification was missed. Thread-safe; Stop() is
// idempotent.
class SourceWatcher {
 public:
  struct Options {
    absl::Duration quiet_period = absl::Milliseconds(200);
    absl::Duration confirm_delay = absl::Seconds(2);
    absl::Duration resync_interval = absl::Minutes(2);
    absl::Duration max_settle = absl::Seconds(10);
    Backoff::Options retry = {absl::Milliseconds(500), absl::Seconds(30), 2.0, 0.2};
  };
  // `evaluate(confirmed)` is the Publisher's entry point for this source.
  using Evaluate = std::function<Verdict(bool confirmed)>;

  SourceWatcher(CertificateSource* source, Evaluate evaluate, Options options);
  ~SourceWatcher();
  void Start();
  void Stop();

  // Changes noticed so far (for tests that must know a change was seen before acting).
  int changes_seen() const { return changes_seen_.load(); }
  // Evaluations run so far.
  int evaluations() const { return evaluations_.load(); }
  // Evaluations that were retries after a failed read.
  int retries() const { return retries_.load(); }

 private:
  void Run();

  CertificateSource* const source_;
  const Evaluate evaluate_;
  const Options options_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> changes_seen_{0};
  std::atomic<int> evaluations_{0};
  std::atomic<int> retries_{0};
  std::thread thread_;
};

}  // namespace certcast

#endif  // CERTCAST_SERVER_SOURCE_H_
