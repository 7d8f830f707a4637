#include "server/source.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "absl/strings/str_cat.h"
#include "common/logging.h"
#include "common/status_macros.h"

namespace certcast {
namespace {

constexpr char kDataLink[] = "..data";
constexpr int kReadAttempts = 3;

int TimeoutMs(absl::Time deadline) {
  if (deadline == absl::InfiniteFuture()) return -1;
  const absl::Duration left = deadline - absl::Now();
  if (left <= absl::ZeroDuration()) return 0;
  return static_cast<int>(std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1 << 30));
}

}  // namespace

DirectorySource::DirectorySource(Filesystem* fs, std::string dir, Options options)
    : fs_(fs), dir_(std::move(dir)), options_(options) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (options_.use_inotify) {
    inotify_fd_ = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    if (inotify_fd_ < 0) {
      LogWarn("inotify unavailable; polling", {{"source", Describe()},
                                               {"error", strerror(errno)},
                                               {"interval", options_.poll_interval}});
    }
  }
  EnsureWatch();
  last_signature_ = Signature();
}

DirectorySource::~DirectorySource() {
  if (inotify_fd_ >= 0) close(inotify_fd_);
  if (wake_fd_ >= 0) close(wake_fd_);
}

bool DirectorySource::EnsureWatch() {
  if (inotify_fd_ < 0) return false;
  if (watch_ >= 0) return true;
  watch_ = inotify_add_watch(inotify_fd_, dir_.c_str(),
                             IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE | IN_DELETE |
                                 IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR);
  return watch_ >= 0;
}

std::string DirectorySource::Signature() {
  std::string signature;
  for (const char* name : {kDataLink, "tls.crt", "tls.key", "ca.crt"}) {
    struct stat st;
    const std::string path = JoinPath(dir_, name);
    if (stat(path.c_str(), &st) != 0) {
      absl::StrAppend(&signature, name, ":-;");
      continue;
    }
    absl::StrAppend(&signature, name, ":", st.st_ino, ",", st.st_size, ",", st.st_mtim.tv_sec, ".",
                    st.st_mtim.tv_nsec, ";");
  }
  std::string target;
  if (auto link = fs_->ReadLink(JoinPath(dir_, kDataLink)); link.ok()) target = *link;
  return absl::StrCat(signature, target);
}

bool DirectorySource::WaitForChange(absl::Time deadline) {
  while (!interrupted_.load()) {
    const bool had_watch = watch_ >= 0;
    const bool watching = EnsureWatch();
    if (watching && !had_watch) {
      // A new watch (the directory appeared or was re-created) misses what happened before it.
      last_signature_ = Signature();
      return true;
    }
    absl::Time wake_at = deadline;
    if (!watching) wake_at = std::min(deadline, absl::Now() + options_.poll_interval);
    struct pollfd fds[2] = {{wake_fd_, POLLIN, 0}, {watching ? inotify_fd_ : -1, POLLIN, 0}};
    const int ready = poll(fds, 2, TimeoutMs(wake_at));
    if (interrupted_.load()) return false;
    if (ready < 0 && errno != EINTR) {
      LogError("poll failed", {{"source", Describe()}, {"error", strerror(errno)}});
      return false;
    }
    if (watching && ready > 0 && (fds[1].revents & POLLIN)) {
      alignas(struct inotify_event) char buffer[4096];
      bool changed = false;
      bool lost_watch = false;
      ssize_t n;
      while ((n = read(inotify_fd_, buffer, sizeof(buffer))) > 0) {
        for (char* p = buffer; p < buffer + n;) {
          const auto* event = reinterpret_cast<const struct inotify_event*>(p);
          p += sizeof(struct inotify_event) + event->len;
          // An earlier watch's last events (its IN_IGNORED arrives after we removed it) say
          // nothing about the directory now; taken for the current watch's loss, they once made
          // the source drop and re-add its watch on every call, reporting a change each time.
          // wd -1 is a queue overflow: events were lost, so assume a change.
          if (event->wd != watch_ && event->wd != -1) continue;
          changed = true;
          if (event->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF)) lost_watch = true;
        }
      }
      if (lost_watch) {
        inotify_rm_watch(inotify_fd_, watch_);
        watch_ = -1;
      }
      if (changed) {
        last_signature_ = Signature();
        return true;
      }
    }
    if (!watching) {
      std::string signature = Signature();
      if (signature != last_signature_) {
        last_signature_ = std::move(signature);
        return true;
      }
    }
    if (absl::Now() >= deadline) return false;
  }
  return false;
}

void DirectorySource::Interrupt() {
  interrupted_.store(true);
  const uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof(one)) < 0) {
    // The eventfd counter cannot overflow with a single write; nothing useful to do here.
  }
}

absl::StatusOr<CertificateMaterial> DirectorySource::ReadFrom(const std::string& base) {
  CertificateMaterial material;
  ASSIGN_OR_RETURN(material.chain_pem, fs_->ReadFile(JoinPath(base, "tls.crt")));
  ASSIGN_OR_RETURN(std::string key, fs_->ReadFile(JoinPath(base, "tls.key")));
  material.key_pem = SecretBytes(key);
  CleanseString(&key);
  absl::StatusOr<std::string> ca = fs_->ReadFile(JoinPath(base, "ca.crt"));
  if (ca.ok()) {
    material.ca_pem = *std::move(ca);
  } else if (!absl::IsNotFound(ca.status())) {
    return ca.status();
  }
  return material;
}

absl::StatusOr<CertificateMaterial> DirectorySource::Read() {
  if (!fs_->Exists(dir_)) {
    return WithReason(
        absl::NotFoundError(absl::StrCat("source directory ", dir_, " does not exist")), "missing");
  }
  absl::Status last_error;
  for (int attempt = 0; attempt < kReadAttempts; ++attempt) {
    // Resolve ..data once per read so tls.crt and tls.key come from the same version directory.
    absl::StatusOr<std::string> target = fs_->ReadLink(JoinPath(dir_, kDataLink));
    const bool kubelet_layout = target.ok();
    const std::string base =
        kubelet_layout ? (target->front() == '/' ? *target : JoinPath(dir_, *target)) : dir_;
    absl::StatusOr<CertificateMaterial> material = ReadFrom(base);
    if (kubelet_layout) {
      // ..data moved on during the read: the version directory read may be half deleted (a
      // vanished ca.crt reads as "no CA", a content the source never held). Read again.
      absl::StatusOr<std::string> again = fs_->ReadLink(JoinPath(dir_, kDataLink));
      if (!again.ok() || *again != *target) {
        last_error = material.ok() ? absl::UnavailableError(absl::StrCat(
                                         "source directory ", dir_, " changed during every read"))
                                   : material.status();
        continue;
      }
    }
    if (material.ok()) return material;
    last_error = material.status();
    break;
  }
  return WithReason(last_error, absl::IsNotFound(last_error) ? "missing" : "unreadable");
}

SourceWatcher::SourceWatcher(CertificateSource* source, Evaluate evaluate, Options options)
    : source_(source), evaluate_(std::move(evaluate)), options_(options) {}

SourceWatcher::~SourceWatcher() { Stop(); }

void SourceWatcher::Start() {
  thread_ = std::thread([this] { Run(); });
}

void SourceWatcher::Stop() {
  stopping_.store(true);
  source_->Interrupt();
  if (thread_.joinable()) thread_.join();
}

void SourceWatcher::Run() {
  Backoff retry_backoff(options_.retry);
  bool dirty = false;
  absl::Time quiet_until = absl::InfiniteFuture();
  absl::Time settle_by = absl::InfiniteFuture();  // a source that never goes quiet
  absl::Time recheck_at = absl::InfiniteFuture();
  bool recheck_is_retry = false;  // recheck_at re-reads after a failed read, unconfirmed
  absl::Time resync_at = absl::Now() + options_.resync_interval;
  auto evaluate = [&](bool confirmed) {
    ++evaluations_;
    const Verdict verdict = evaluate_(confirmed);
    recheck_is_retry = verdict == Verdict::kRetry;
    switch (verdict) {
      case Verdict::kSettled:
        retry_backoff.Reset();
        recheck_at = absl::InfiniteFuture();
        break;
      case Verdict::kUnsettled:
        retry_backoff.Reset();
        recheck_at = absl::Now() + options_.confirm_delay;
        break;
      case Verdict::kRetry:
        recheck_at = absl::Now() + retry_backoff.Next();
        break;
    }
  };
  while (!stopping_.load()) {
    const absl::Time deadline =
        std::min({dirty ? quiet_until : absl::InfiniteFuture(), recheck_at, resync_at});
    if (source_->WaitForChange(deadline)) {
      ++changes_seen_;
      if (!dirty) settle_by = absl::Now() + options_.max_settle;
      dirty = true;
      quiet_until = std::min(absl::Now() + options_.quiet_period, settle_by);
      recheck_at = absl::InfiniteFuture();
      continue;
    }
    if (stopping_.load()) break;
    const absl::Time now = absl::Now();
    if (dirty && now >= quiet_until) {
      dirty = false;
      evaluate(/*confirmed=*/false);
    } else if (now >= recheck_at) {
      if (recheck_is_retry) ++retries_;
      // A retry reads content seen for the first time: it still needs confirming if invalid.
      evaluate(/*confirmed=*/!recheck_is_retry);
    } else if (now >= resync_at) {
      resync_at = now + options_.resync_interval;
      evaluate(/*confirmed=*/false);
    }
  }
}

}  // namespace certcast
