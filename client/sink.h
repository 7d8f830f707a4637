// A sink is one place where the client puts a certificate version: files or a Kubernetes Secret.
// The session applies every version to every sink and acknowledges only when all of them hold it.
#ifndef CERTCAST_CLIENT_SINK_H_
#define CERTCAST_CLIENT_SINK_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "common/certificate.h"

namespace certcast {

// One validated version of one certificate, as received from the server.
struct VersionedMaterial {
  std::string name;  // certificate name
  uint64_t version = 0;
  std::string fingerprint;  // leaf SHA-256, lowercase hex
  CertificateMaterial material;
};

enum class ApplyResult {
  kUnchanged,  // the sink already held identical content; nothing was written
  kWritten,
};

// Implementations must be safe to call from one session thread; they need not be thread-safe.
class Sink {
 public:
  virtual ~Sink() = default;

  // Short name used in NACK errors and logs, e.g. "files".
  virtual std::string name() const = 0;

  // Makes the sink hold `version`: OK once it holds it completely and durably. An error never
  // leaves a torn or mismatched state, but it does not promise that nothing changed: readers see
  // what the sink held before or, when the failure came after the switch (FileSink: `..data`
  // already names the new version and a link or fsync failed), `version` itself, not settled.
  // Either way the version does not count as applied: the session NACKs it, keeps reporting the
  // previous version as held, runs no hook, and calls Apply again until it succeeds (the sink
  // then finishes the work, also when the content is already visible). Errors describe the
  // cause (path, errno text, and that the switch happened) and never contain key bytes.
  virtual absl::StatusOr<ApplyResult> Apply(const VersionedMaterial& version) = 0;

  // Leaf fingerprint of what the sink holds for certificate `name`; NotFound when it holds
  // nothing. Used at start-up to cross-check the client's state.
  virtual absl::StatusOr<std::string> HeldFingerprint(const std::string& name) = 0;

  // Removes what the sink holds for certificate `name` (--delete-on-revoke). OK when it holds
  // nothing; never removes anything certcast does not manage.
  virtual absl::Status Remove(const std::string& name) = 0;

  // Where a hook finds the files of `name` (for CERTCAST_DIR); empty when not file-based.
  virtual std::string LocationOf(const std::string& name) const = 0;
};

}  // namespace certcast

#endif  // CERTCAST_CLIENT_SINK_H_
