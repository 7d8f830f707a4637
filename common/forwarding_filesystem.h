// A Filesystem that passes every call on to another one: the base of test fakes that change one
// or two calls (a failure, a race) and leave the rest real. ConfinedTo is not passed on: like
// Filesystem's default it returns nullptr, since a confined view of the base would bypass the
// fake's own calls; a fake that wants one overrides it.
#ifndef CERTCAST_COMMON_FORWARDING_FILESYSTEM_H_
#define CERTCAST_COMMON_FORWARDING_FILESYSTEM_H_

#include <memory>
#include <string>
#include <vector>

#include "common/filesystem.h"

namespace certcast {

class ForwardingFilesystem : public Filesystem {
 public:
  // Over the real POSIX filesystem.
  ForwardingFilesystem()
      : owned_(std::make_unique<PosixFilesystem>()), base_(owned_.get()) {}
  // Over `base`, which must outlive this.
  explicit ForwardingFilesystem(Filesystem* base) : base_(base) {}

  absl::StatusOr<std::string> ReadFile(const std::string& path) override {
    return base_->ReadFile(path);
  }
  absl::Status WriteFile(const std::string& path, absl::string_view data, mode_t mode) override {
    return base_->WriteFile(path, data, mode);
  }
  absl::Status Rename(const std::string& from, const std::string& to) override {
    return base_->Rename(from, to);
  }
  absl::Status SyncDir(const std::string& path) override { return base_->SyncDir(path); }
  absl::Status CreateDir(const std::string& path, mode_t mode) override {
    return base_->CreateDir(path, mode);
  }
  absl::Status Remove(const std::string& path) override { return base_->Remove(path); }
  absl::Status RemoveAll(const std::string& path) override { return base_->RemoveAll(path); }
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override {
    return base_->ListDir(path);
  }
  absl::Status Symlink(const std::string& target, const std::string& path) override {
    return base_->Symlink(target, path);
  }
  absl::StatusOr<std::string> ReadLink(const std::string& path) override {
    return base_->ReadLink(path);
  }
  bool Exists(const std::string& path) override { return base_->Exists(path); }
  absl::StatusOr<FileInfo> Stat(const std::string& path) override { return base_->Stat(path); }
  absl::Status Chmod(const std::string& path, mode_t mode) override {
    return base_->Chmod(path, mode);
  }
  FileOwner Self() override { return base_->Self(); }

 protected:
  Filesystem* base() const { return base_; }

 private:
  std::unique_ptr<Filesystem> owned_;
  Filesystem* const base_;
};

}  // namespace certcast

#endif  // CERTCAST_COMMON_FORWARDING_FILESYSTEM_H_
