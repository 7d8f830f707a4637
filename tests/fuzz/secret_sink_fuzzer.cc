// Fuzzes how the client's Secret sink reads the Secret the Kubernetes API returns (client/
// secret_sink.cc): whatever the API answers to the GET, PUT, POST and DELETE of Apply,
// HeldFingerprint and Remove must become a result or an error, never an exception or a crash.
// Input: one byte choosing which requests fail and how, then the JSON every request returns.
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "client/secret_sink.h"
#include "kube/api.h"

namespace {

namespace kube = certcast::kube;

// Answers every request with the fuzzer's document, or with an error the first byte chose.
class CannedApi final : public kube::KubeApi {
 public:
  CannedApi(uint8_t faults, kube::Json answer) : faults_(faults), answer_(std::move(answer)) {}
  absl::StatusOr<kube::Json> Request(const std::string& method, const std::string&,
                                     const kube::Json*, const std::string&) override {
    const int shift = method == "GET" ? 0 : method == "PUT" ? 2 : method == "POST" ? 4 : 6;
    switch ((faults_ >> shift) & 3) {
      case 1:
        return absl::NotFoundError("not found (HTTP 404)");
      case 2:
        return absl::AbortedError("conflict (HTTP 409)");
      case 3:
        return absl::AlreadyExistsError("already exists (HTTP 409)");
      default:
        return answer_;
    }
  }
  absl::Status Watch(const std::string&, const std::function<bool(const kube::WatchEvent&)>&,
                     const std::atomic<bool>*, absl::Duration) override {
    return absl::UnimplementedError("no watches here");
  }

 private:
  const uint8_t faults_;
  const kube::Json answer_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  kube::Json answer = kube::Json::parse(data + 1, data + size, nullptr, /*allow_exceptions=*/false);
  if (answer.is_discarded()) return 0;
  CannedApi api(data[0], std::move(answer));
  certcast::SecretSink sink(&api, {"tenant-a", "web-tls", /*max_conflict_retries=*/2});
  certcast::VersionedMaterial version;
  version.name = "web";
  version.version = 3;
  version.fingerprint = "sha256:00";
  version.material.chain_pem = "chain";
  version.material.key_pem = certcast::SecretBytes("key");
  (void)sink.Apply(version);
  (void)sink.HeldFingerprint("web");
  (void)sink.Remove("web");
  return 0;
}
