// Fuzzes how the server reads a TokenReview answer from the Kubernetes API (authenticated,
// audiences, user): any answer that is not a well-formed acceptance for our audience must be a
// refusal, never an exception or a crash. Input: the JSON the API returns.
#include <cstddef>
#include <cstdint>
#include <string>

#include "kube/api.h"
#include "server/authentication.h"

namespace {

// Answers every request with the fuzzer's document.
class CannedApi final : public certcast::kube::KubeApi {
 public:
  explicit CannedApi(certcast::kube::Json answer) : answer_(std::move(answer)) {}
  absl::StatusOr<certcast::kube::Json> Request(const std::string&, const std::string&,
                                               const certcast::kube::Json*,
                                               const std::string&) override {
    return answer_;
  }
  absl::Status Watch(const std::string&,
                     const std::function<bool(const certcast::kube::WatchEvent&)>&,
                     const std::atomic<bool>*, absl::Duration) override {
    return absl::UnimplementedError("no watches here");
  }

 private:
  const certcast::kube::Json answer_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  certcast::kube::Json answer = certcast::kube::Json::parse(text, nullptr, false);
  if (answer.is_discarded()) return 0;
  CannedApi api(std::move(answer));
  certcast::KubeTokenReviewer reviewer(&api, "certcast");
  (void)reviewer.Review("header.payload.signature");
  return 0;
}
