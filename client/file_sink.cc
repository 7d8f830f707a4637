#include "client/file_sink.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "common/logging.h"
#include "common/secret.h"
#include "common/status_macros.h"

namespace certcast {
namespace {

constexpr char kDataLink[] = "..data";
constexpr char kDataTmp[] = "..data_tmp";
// Where a top-level link is prepared before it is renamed into place.
constexpr char kLinkTmp[] = "..link_tmp";
constexpr char kChainFile[] = "tls.crt";
constexpr char kKeyFile[] = "tls.key";
constexpr char kCaFile[] = "ca.crt";
constexpr char kCombinedFile[] = "tls.pem";

// `..2026_11_28_10_00_00.123456789`, as kubelet names its versions.
std::string VersionDirName(absl::Time t) {
  return absl::FormatTime("..%Y_%m_%d_%H_%M_%E9S", t, absl::UTCTimeZone());
}

// Version directories start with ".." and a digit; `..data` and the temp links do not.
bool IsVersionDirName(absl::string_view name) {
  return name.size() > 2 && absl::StartsWith(name, "..") && absl::ascii_isdigit(name[2]);
}

// The certificate name becomes a directory name: it must not escape the output directory.
absl::Status CheckName(const std::string& name) {
  if (name.empty() || name == "." || name == ".." || absl::StrContains(name, '/') ||
      absl::StrContains(name, '\0')) {
    return absl::InvalidArgumentError(
        absl::StrCat("certificate name \"", absl::CEscape(name), "\" is not a directory name"));
  }
  return absl::OkStatus();
}

// OUTPUT_DIR/NAME must be a real directory only we (or root) can change: a symlink planted there,
// or a directory others can write to, would send the private key where someone else chose.
// OK when it does not exist yet (Apply creates it).
absl::Status CheckCertificateDir(Filesystem& fs, const std::string& dir) {
  if (absl::IsNotFound(fs.Stat(dir).status())) return absl::OkStatus();
  return SecureDirectory(fs, dir, "output directory", 07755);
}

// A version directory must be a directory Apply created (a name of its own, not a symlink);
// FailedPrecondition naming it otherwise.
absl::Status CheckVersionDir(Filesystem& fs, const std::string& dir, const std::string& version) {
  if (!IsVersionDirName(version) || absl::StrContains(version, '/')) {
    return absl::FailedPreconditionError(
        absl::StrCat(JoinPath(dir, kDataLink), " points at \"", absl::CEscape(version),
                     "\", which is not a version directory certcast writes: refusing to use it"));
  }
  const std::string path = JoinPath(dir, version);
  absl::StatusOr<FileInfo> info = fs.Stat(path);
  if (!info.ok()) return info.status();
  if (info->type != FileInfo::Type::kDirectory) {
    return absl::FailedPreconditionError(absl::StrCat(
        "version directory ", path,
        info->type == FileInfo::Type::kSymlink ? " is a symlink" : " is not a directory",
        ": refusing to use it (certcast writes keys only into directories it created)"));
  }
  return absl::OkStatus();
}

// Files a version exposes at the top level, given its material.
std::vector<std::string> ExposedFiles(const CertificateMaterial& material, bool combined_pem) {
  std::vector<std::string> files = {kChainFile, kKeyFile};
  if (!material.ca_pem.empty()) files.push_back(kCaFile);
  if (combined_pem) files.push_back(kCombinedFile);
  return files;
}

// Optional files that must not be exposed for this material.
std::vector<std::string> HiddenFiles(const CertificateMaterial& material, bool combined_pem) {
  std::vector<std::string> files;
  if (material.ca_pem.empty()) files.push_back(kCaFile);
  if (!combined_pem) files.push_back(kCombinedFile);
  return files;
}

std::string LinkTarget(absl::string_view file) { return absl::StrCat(kDataLink, "/", file); }

// Leftovers of an interrupted or older Apply: everything the clean-up removes.
bool IsLeftover(absl::string_view entry, absl::string_view current_version) {
  return entry == kDataTmp || entry == kLinkTmp ||
         (IsVersionDirName(entry) && entry != current_version);
}

absl::Status ForCertificate(const std::string& name, const absl::Status& status) {
  return Annotate(status, absl::StrCat("certificate \"", name, "\""));
}

// Writes every file of `material` into the new directory `version_dir` and makes them durable.
absl::Status WriteVersionDir(Filesystem& fs, const std::string& version_dir,
                             const CertificateMaterial& material, bool combined_pem) {
  RETURN_IF_ERROR(fs.CreateDir(version_dir, 0755));
  // CreateDir accepts an existing directory, or a symlink to one: make sure it made a new one.
  ASSIGN_OR_RETURN(FileInfo created, fs.Stat(version_dir));
  if (created.type != FileInfo::Type::kDirectory) {
    return absl::FailedPreconditionError(
        absl::StrCat("version directory ", version_dir, " is not a directory certcast created"));
  }
  RETURN_IF_ERROR(fs.WriteFile(JoinPath(version_dir, kChainFile), material.chain_pem, 0644));
  RETURN_IF_ERROR(fs.WriteFile(JoinPath(version_dir, kKeyFile), material.key_pem.reveal(), 0600));
  if (!material.ca_pem.empty()) {
    RETURN_IF_ERROR(fs.WriteFile(JoinPath(version_dir, kCaFile), material.ca_pem, 0644));
  }
  if (combined_pem) {
    // Sized up front so the buffer never reallocates (leaving key bytes behind), then wiped.
    const absl::string_view key = material.key_pem.reveal();
    const bool needs_newline = !key.empty() && key.back() != '\n';
    std::string combined;
    combined.reserve(key.size() + 1 + material.chain_pem.size());
    combined.append(key.data(), key.size());
    if (needs_newline) combined.push_back('\n');
    combined.append(material.chain_pem);
    absl::Status status = fs.WriteFile(JoinPath(version_dir, kCombinedFile), combined, 0600);
    CleanseString(&combined);
    RETURN_IF_ERROR(status);
  }
  return fs.SyncDir(version_dir);
}

// Points `dir/file` at `..data/file`, replacing whatever is there atomically.
absl::Status EnsureLink(Filesystem& fs, const std::string& dir, const std::string& file) {
  const std::string path = JoinPath(dir, file);
  const std::string target = LinkTarget(file);
  absl::StatusOr<std::string> current = fs.ReadLink(path);
  if (current.ok() && *current == target) return absl::OkStatus();
  const std::string tmp = JoinPath(dir, kLinkTmp);
  if (fs.Exists(tmp)) RETURN_IF_ERROR(fs.RemoveAll(tmp));
  RETURN_IF_ERROR(fs.Symlink(target, tmp));
  absl::Status status = fs.Rename(tmp, path);
  if (!status.ok()) fs.Remove(tmp).IgnoreError();
  return status;
}

// Whether `dir` already looks exactly as Settle would leave it (read-only checks).
bool IsSettled(Filesystem& fs, const std::string& dir, const std::string& version,
               const CertificateMaterial& material, bool combined_pem) {
  for (const std::string& file : ExposedFiles(material, combined_pem)) {
    absl::StatusOr<std::string> target = fs.ReadLink(JoinPath(dir, file));
    if (!target.ok() || *target != LinkTarget(file)) return false;
  }
  for (const std::string& file : HiddenFiles(material, combined_pem)) {
    if (fs.Exists(JoinPath(dir, file))) return false;
  }
  absl::StatusOr<std::vector<std::string>> entries = fs.ListDir(dir);
  if (!entries.ok()) return false;
  for (const std::string& entry : *entries) {
    if (IsLeftover(entry, version)) return false;
  }
  return true;
}

// The work after `..data` points at `version`: top-level links, fsync, removal of older versions.
// Only link and fsync failures are errors; the clean-up is best effort.
absl::Status Settle(Filesystem& fs, const std::string& dir, const std::string& version,
                    const CertificateMaterial& material, bool combined_pem) {
  for (const std::string& file : ExposedFiles(material, combined_pem)) {
    RETURN_IF_ERROR(EnsureLink(fs, dir, file));
  }
  // Only now that `..data` no longer holds these files may their links go.
  for (const std::string& file : HiddenFiles(material, combined_pem)) {
    absl::Status status = fs.Remove(JoinPath(dir, file));
    if (!status.ok() && !absl::IsNotFound(status)) return status;
  }
  RETURN_IF_ERROR(fs.SyncDir(dir));

  absl::StatusOr<std::vector<std::string>> entries = fs.ListDir(dir);
  if (!entries.ok()) {
    LogDebug("cannot list a directory to remove old versions",
             {{"dir", dir}, {"error", entries.status()}});
    return absl::OkStatus();
  }
  bool removed = false;
  for (const std::string& entry : *entries) {
    if (!IsLeftover(entry, version)) continue;
    absl::Status status = fs.RemoveAll(JoinPath(dir, entry));
    if (!status.ok()) {
      LogDebug("cannot remove an old version", {{"entry", entry}, {"dir", dir}, {"error", status}});
      continue;
    }
    removed = true;
  }
  if (removed) {
    absl::Status status = fs.SyncDir(dir);
    if (!status.ok()) {
      LogDebug("cannot sync a directory after clean-up", {{"dir", dir}, {"error", status}});
    }
  }
  return absl::OkStatus();
}

// Reads the material in version directory `version` of `dir` (checked with CheckVersionDir).
absl::StatusOr<CertificateMaterial> ReadVersionDir(Filesystem& fs, const std::string& dir,
                                                   const std::string& version) {
  RETURN_IF_ERROR(CheckVersionDir(fs, dir, version));
  const std::string version_dir = JoinPath(dir, version);
  CertificateMaterial material;
  ASSIGN_OR_RETURN(material.chain_pem, fs.ReadFile(JoinPath(version_dir, kChainFile)));
  ASSIGN_OR_RETURN(std::string key, fs.ReadFile(JoinPath(version_dir, kKeyFile)));
  material.key_pem = SecretBytes(key);
  CleanseString(&key);
  absl::StatusOr<std::string> ca = fs.ReadFile(JoinPath(version_dir, kCaFile));
  if (ca.ok()) {
    material.ca_pem = *std::move(ca);
  } else if (!absl::IsNotFound(ca.status())) {
    return ca.status();
  }
  return material;
}

}  // namespace

FileSink::FileSink(Filesystem* fs, const Clock* clock, Options options)
    : fs_(fs),
      clock_(clock),
      options_(std::move(options)),
      confined_(fs->ConfinedTo(options_.output_dir)),
      tree_(confined_ != nullptr ? *confined_ : *fs) {}

absl::StatusOr<ApplyResult> FileSink::Apply(const VersionedMaterial& version) {
  RETURN_IF_ERROR(CheckName(version.name));
  const std::string& name = version.name;
  const CertificateMaterial& material = version.material;
  const std::string dir = LocationOf(name);
  const std::string data_link = JoinPath(dir, kDataLink);
  RETURN_IF_ERROR(ForCertificate(name, CheckCertificateDir(tree_, dir)));

  // Identical content already visible: at most finish what an interrupted Apply left undone.
  if (absl::StatusOr<std::string> held_version = tree_.ReadLink(data_link); held_version.ok()) {
    // A planted version directory (a symlink, or `..data` pointing elsewhere) is refused, not
    // silently replaced: someone wrote into a directory only certcast should write to.
    // A dangling `..data` (NotFound) is merely replaced below.
    if (absl::Status planted = CheckVersionDir(tree_, dir, *held_version);
        absl::IsFailedPrecondition(planted)) {
      return ForCertificate(name, planted);
    }
    absl::StatusOr<CertificateMaterial> held = ReadVersionDir(tree_, dir, *held_version);
    const bool has_combined = tree_.Exists(JoinPath(JoinPath(dir, *held_version), kCombinedFile));
    if (held.ok() && *held == material && has_combined == options_.combined_pem) {
      if (unsettled_.count(name) == 0 &&
          IsSettled(tree_, dir, *held_version, material, options_.combined_pem)) {
        return ApplyResult::kUnchanged;
      }
      RETURN_IF_ERROR(
          ForCertificate(name, Settle(tree_, dir, *held_version, material, options_.combined_pem)));
      unsettled_.erase(name);
      return ApplyResult::kUnchanged;
    }
  }

  const auto failed = [&](const absl::Status& status) {
    return Annotate(status, absl::StrCat("certificate \"", name, "\": writing ", dir));
  };
  // The output directories, and their entries made durable (the parent of a new output_dir too).
  if (!fs_->Exists(options_.output_dir)) {
    RETURN_IF_ERROR(failed(fs_->CreateDir(options_.output_dir, 0755)));
    RETURN_IF_ERROR(failed(fs_->SyncDir(Dirname(options_.output_dir))));
  }
  if (!tree_.Exists(dir)) RETURN_IF_ERROR(failed(tree_.CreateDir(dir, 0755)));
  RETURN_IF_ERROR(failed(fs_->SyncDir(options_.output_dir)));

  const std::string data_tmp = JoinPath(dir, kDataTmp);
  if (tree_.Exists(data_tmp)) RETURN_IF_ERROR(failed(tree_.RemoveAll(data_tmp)));

  absl::Time stamp = clock_->Now();
  std::string new_version = VersionDirName(stamp);
  while (tree_.Exists(JoinPath(dir, new_version))) {
    stamp += absl::Nanoseconds(1);
    new_version = VersionDirName(stamp);
  }
  const std::string version_dir = JoinPath(dir, new_version);

  // Until the rename, readers (and a crash) see only the previous version.
  absl::Status status = WriteVersionDir(tree_, version_dir, material, options_.combined_pem);
  if (status.ok()) status = tree_.SyncDir(dir);  // the new directory exists before ..data names it
  if (status.ok()) status = tree_.Symlink(new_version, data_tmp);
  if (status.ok()) status = tree_.Rename(data_tmp, data_link);
  if (!status.ok()) {
    tree_.Remove(data_tmp).IgnoreError();
    tree_.RemoveAll(version_dir).IgnoreError();
    return failed(status);
  }

  status = Settle(tree_, dir, new_version, material, options_.combined_pem);
  if (!status.ok()) {
    unsettled_.insert(name);
    return Annotate(status, absl::StrCat("certificate \"", name, "\": ", data_link,
                                         " already points at ", new_version));
  }
  unsettled_.erase(name);
  LogDebug("wrote version", {{"certificate", name},
                             {"version", version.version},
                             {"fingerprint", version.fingerprint},
                             {"dir", version_dir}});
  return ApplyResult::kWritten;
}

absl::StatusOr<CertificateMaterial> FileSink::Read(const std::string& name) {
  RETURN_IF_ERROR(CheckName(name));
  const std::string dir = LocationOf(name);
  RETURN_IF_ERROR(ForCertificate(name, CheckCertificateDir(tree_, dir)));
  absl::StatusOr<std::string> held_version = tree_.ReadLink(JoinPath(dir, kDataLink));
  if (!held_version.ok()) return ForCertificate(name, held_version.status());
  absl::StatusOr<CertificateMaterial> material = ReadVersionDir(tree_, dir, *held_version);
  if (!material.ok()) return ForCertificate(name, material.status());
  return material;
}

absl::StatusOr<std::string> FileSink::HeldFingerprint(const std::string& name) {
  ASSIGN_OR_RETURN(CertificateMaterial material, Read(name));
  absl::StatusOr<std::string> fingerprint = LeafFingerprint(material.chain_pem);
  if (!fingerprint.ok()) {
    return ForCertificate(name,
                          Annotate(fingerprint.status(), JoinPath(LocationOf(name), kChainFile)));
  }
  return fingerprint;
}

std::string FileSink::LocationOf(const std::string& name) const {
  return JoinPath(options_.output_dir, name);
}

absl::Status FileSink::Remove(const std::string& name) {
  const std::string dir = LocationOf(name);
  RETURN_IF_ERROR(tree_.RemoveAll(dir));
  if (fs_->Exists(options_.output_dir)) RETURN_IF_ERROR(fs_->SyncDir(options_.output_dir));
  return absl::OkStatus();
}

}  // namespace certcast
