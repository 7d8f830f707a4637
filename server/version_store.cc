#include "server/version_store.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "certcast/state/v1/state.pb.h"
#include "common/secret.h"
#include "common/status_macros.h"
#include "google/protobuf/timestamp.pb.h"

namespace certcast {
namespace {

namespace pb = ::certcast::state::v1;

// File layout: kHeader, then the SHA-256 of the payload (32 raw bytes), then the payload, a
// serialized certcast.state.v1.CertificateState. The SHA-256 detects corruption (a torn or
// damaged file), not tampering: anyone who can write the file can recompute it. Open refuses or
// tightens a directory others can write to; that is what keeps the state from being forged.
constexpr absl::string_view kHeader = "certcast-state v1\n";
constexpr size_t kDigestSize = 32;
constexpr size_t kMaxNameLength = 253;
constexpr absl::string_view kSuffix = ".state";

bool Sha256(absl::string_view data, unsigned char out[kDigestSize]) {
  unsigned int len = 0;
  return EVP_Digest(data.data(), data.size(), out, &len, EVP_sha256(), nullptr) == 1 &&
         len == kDigestSize;
}

// Names become file names: a DNS-label-like alphabet keeps "/", "..", hidden and temp names out.
absl::Status ValidateName(absl::string_view name) {
  auto inner_ok = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-';
  };
  auto edge_ok = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  bool ok = !name.empty() && name.size() <= kMaxNameLength && edge_ok(name.front()) &&
            edge_ok(name.back()) && std::all_of(name.begin(), name.end(), inner_ok);
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("invalid certificate name \"", name,
                     "\": want lowercase letters, digits, '.' and '-', starting and ending with a "
                     "letter or digit, at most ",
                     kMaxNameLength, " characters"));
  }
  return absl::OkStatus();
}

// Checks what Load relies on: versions strictly increasing and never above last_version.
absl::Status CheckVersions(const std::vector<uint64_t>& versions, uint64_t last_version) {
  for (size_t i = 0; i < versions.size(); ++i) {
    if (versions[i] == 0) return absl::InvalidArgumentError("version 0 is not a valid version");
    if (i > 0 && versions[i] <= versions[i - 1]) {
      return absl::InvalidArgumentError(absl::StrCat("versions not strictly increasing (",
                                                     versions[i - 1], " then ", versions[i], ")"));
    }
  }
  if (!versions.empty() && versions.back() > last_version) {
    return absl::InvalidArgumentError(
        absl::StrCat("version ", versions.back(), " is above last_version ", last_version));
  }
  return absl::OkStatus();
}

void ToProto(absl::Time t, google::protobuf::Timestamp* out) {
  if (t == absl::InfiniteFuture()) {
    out->set_seconds(std::numeric_limits<int64_t>::max());
    return;
  }
  if (t == absl::InfinitePast()) {
    out->set_seconds(std::numeric_limits<int64_t>::min());
    return;
  }
  const int64_t seconds = absl::ToUnixSeconds(t);  // rounds down, so nanos are non-negative
  out->set_seconds(seconds);
  out->set_nanos(static_cast<int32_t>((t - absl::FromUnixSeconds(seconds)) / absl::Nanoseconds(1)));
}

absl::Time FromProto(const google::protobuf::Timestamp& ts) {
  if (ts.seconds() == std::numeric_limits<int64_t>::max()) return absl::InfiniteFuture();
  if (ts.seconds() == std::numeric_limits<int64_t>::min()) return absl::InfinitePast();
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

// Wipes every key field of `state` (a proto that held key material).
void CleanseKeys(pb::CertificateState& state) {
  for (pb::StoredVersion& v : *state.mutable_versions()) {
    CleanseString(v.mutable_private_key_pem());
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<FileVersionStore>> FileVersionStore::Open(Filesystem* fs,
                                                                         std::string dir,
                                                                         int history_limit) {
  if (history_limit < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("version store history limit must be at least 1, got ", history_limit));
  }
  const bool existed = fs->Exists(dir);
  absl::Status status = fs->CreateDir(dir, 0700);
  // A fresh directory must itself be durable before files in it can be.
  if (status.ok() && !existed) status = fs->SyncDir(Dirname(dir));
  if (!status.ok()) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create state directory ", dir, ": ", status.message()));
  }
  // The files hold private keys and decide which version numbers are used; their checksum only
  // detects corruption, so only the directory's permissions keep others from forging them.
  RETURN_IF_ERROR(SecureDirectory(*fs, dir, "state directory", 0700));
  return std::unique_ptr<FileVersionStore>(new FileVersionStore(fs, std::move(dir), history_limit));
}

std::string FileVersionStore::PathFor(const std::string& name) const {
  return JoinPath(dir_, absl::StrCat(name, kSuffix));
}

namespace {

void SourceToProto(const SourceState& source, pb::SourceState* out) {
  out->set_revision(source.revision);
  if (source.leaf_not_before != absl::InfinitePast()) {
    ToProto(source.leaf_not_before, out->mutable_leaf_not_before());
  }
  out->set_leaf_serial(source.leaf_serial);
}

SourceState SourceFromProto(const pb::StoredVersion& v) {
  SourceState source;
  if (!v.has_source()) return source;
  source.revision = v.source().revision();
  if (v.source().has_leaf_not_before()) {
    source.leaf_not_before = FromProto(v.source().leaf_not_before());
  }
  source.leaf_serial = v.source().leaf_serial();
  return source;
}

}  // namespace

absl::Status ValidateStateName(absl::string_view name) { return ValidateName(name); }

absl::StatusOr<std::string> EncodeState(const std::string& name, const CertificateState& state,
                                        int history_limit) {
  RETURN_IF_ERROR(ValidateName(name));
  std::vector<uint64_t> numbers;
  for (const StoredVersion& v : state.versions) numbers.push_back(v.version);
  if (absl::Status s = CheckVersions(numbers, state.last_version); !s.ok()) {
    return Annotate(s, absl::StrCat("saving certificate \"", name, "\""));
  }

  pb::CertificateState proto;
  absl::Cleanup wipe_proto = [&proto] { CleanseKeys(proto); };
  proto.set_name(name);
  proto.set_last_version(state.last_version);
  // Keep the newest history_limit versions (always at least the current one).
  const size_t keep =
      std::min(state.versions.size(), static_cast<size_t>(std::max(1, history_limit)));
  for (size_t i = state.versions.size() - keep; i < state.versions.size(); ++i) {
    const StoredVersion& v = state.versions[i];
    pb::StoredVersion* out = proto.add_versions();
    out->set_version(v.version);
    out->set_chain_pem(v.material.chain_pem);
    const absl::string_view key = v.material.key_pem.reveal();
    out->set_private_key_pem(key.data(), key.size());
    out->set_ca_pem(v.material.ca_pem);
    ToProto(v.published_at, out->mutable_published_at());
    out->set_origin(v.origin);
    out->set_rolled_back_from(v.rolled_back_from);
    SourceToProto(v.source, out->mutable_source());
  }
  pb::PinState* pin = proto.mutable_pin();
  pin->set_version(state.pin.version);
  pin->set_rolled_back_from(state.pin.rolled_back_from);
  pin->set_source_digest(state.pin.source_digest);
  ToProto(state.pin.since, pin->mutable_since());
  if (!state.rollout.empty() && !proto.mutable_rollout()->ParseFromString(state.rollout)) {
    return absl::InvalidArgumentError(
        absl::StrCat("rollout state of certificate \"", name, "\" does not parse"));
  }

  // One exact-size allocation, so no copy of the key is left behind by a reallocation.
  const size_t payload_size = proto.ByteSizeLong();
  std::string file(kHeader.size() + kDigestSize + payload_size, '\0');
  char* const payload = file.data() + kHeader.size() + kDigestSize;
  if (!proto.SerializeToArray(payload, static_cast<int>(payload_size))) {
    CleanseString(&file);
    return absl::InternalError(
        absl::StrCat("cannot serialize state of certificate \"", name, "\""));
  }
  std::memcpy(file.data(), kHeader.data(), kHeader.size());
  unsigned char digest[kDigestSize];
  if (!Sha256(absl::string_view(payload, payload_size), digest)) {
    CleanseString(&file);
    return absl::InternalError("SHA-256 failed");
  }
  std::memcpy(file.data() + kHeader.size(), digest, kDigestSize);
  return file;
}

absl::StatusOr<CertificateState> DecodeState(const std::string& name, absl::string_view view,
                                             const std::string& where) {
  auto corrupt = [&where](absl::string_view what) {
    return absl::DataLossError(
        absl::StrCat(where, " is corrupt: ", what, "; move it away to start fresh"));
  };
  if (view.empty()) return corrupt("empty");
  if (view.size() < kHeader.size() + kDigestSize) {
    const absl::string_view start = view.substr(0, kHeader.size());
    return corrupt(start == kHeader.substr(0, start.size()) ? "truncated" : "bad header");
  }
  if (view.substr(0, kHeader.size()) != kHeader) return corrupt("bad header");
  const absl::string_view stored_digest = view.substr(kHeader.size(), kDigestSize);
  const absl::string_view payload = view.substr(kHeader.size() + kDigestSize);
  unsigned char digest[kDigestSize];
  if (!Sha256(payload, digest)) return absl::InternalError("SHA-256 failed");
  if (std::memcmp(digest, stored_digest.data(), kDigestSize) != 0) {
    return corrupt("checksum mismatch");
  }

  pb::CertificateState proto;
  absl::Cleanup wipe_proto = [&proto] { CleanseKeys(proto); };
  if (!proto.ParseFromArray(payload.data(), static_cast<int>(payload.size()))) {
    return corrupt("payload does not parse");
  }
  if (proto.name() != name) {
    return corrupt(absl::StrCat("it holds certificate \"", proto.name(), "\", not \"", name, "\""));
  }
  std::vector<uint64_t> numbers;
  for (const pb::StoredVersion& v : proto.versions()) numbers.push_back(v.version());
  if (absl::Status s = CheckVersions(numbers, proto.last_version()); !s.ok()) {
    return corrupt(s.message());
  }

  CertificateState state;
  state.last_version = proto.last_version();
  state.versions.reserve(proto.versions_size());
  for (pb::StoredVersion& v : *proto.mutable_versions()) {
    StoredVersion& out = state.versions.emplace_back();
    out.version = v.version();
    out.material.chain_pem = v.chain_pem();
    out.material.key_pem = SecretBytes(v.private_key_pem());
    CleanseString(v.mutable_private_key_pem());
    out.material.ca_pem = v.ca_pem();
    out.published_at = FromProto(v.published_at());
    out.origin = v.origin();
    out.rolled_back_from = v.rolled_back_from();
    out.source = SourceFromProto(v);
  }
  state.pin.version = proto.pin().version();
  state.pin.rolled_back_from = proto.pin().rolled_back_from();
  state.pin.source_digest = proto.pin().source_digest();
  state.pin.since = FromProto(proto.pin().since());
  if (proto.has_rollout()) state.rollout = proto.rollout().SerializeAsString();
  return state;
}

absl::StatusOr<std::optional<CertificateState>> FileVersionStore::Load(const std::string& name) {
  RETURN_IF_ERROR(ValidateName(name));
  const std::string path = PathFor(name);
  absl::StatusOr<std::string> read = fs_->ReadFile(path);
  if (absl::IsNotFound(read.status())) return std::nullopt;
  if (!read.ok()) {
    return Annotate(read.status(), absl::StrCat("loading certificate \"", name, "\""));
  }
  std::string contents = std::move(read).value();
  absl::Cleanup wipe_contents = [&contents] { CleanseString(&contents); };
  ASSIGN_OR_RETURN(CertificateState state,
                   DecodeState(name, contents, absl::StrCat("state file ", path)));
  return state;
}

absl::StatusOr<std::string> FileVersionStore::Save(const std::string& name,
                                                   const CertificateState& state) {
  ASSIGN_OR_RETURN(std::string file, EncodeState(name, state, history_limit_));
  absl::Cleanup wipe_file = [&file] { CleanseString(&file); };
  RETURN_IF_ERROR(Annotate(WriteFileAtomically(*fs_, PathFor(name), file, 0600),
                           absl::StrCat("saving certificate \"", name, "\"")));
  return std::string();
}

}  // namespace certcast
