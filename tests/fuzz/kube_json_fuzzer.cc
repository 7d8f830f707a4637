// Fuzzes the Kubernetes API JSON certcast reads: Secrets (source and sink), list and watch
// responses (each watch line, ERROR events, resourceVersions) and Status bodies. A malformed or
// hostile answer must become an error, never an exception or a crash. Input: one document, also
// fed whole as a watch line and as an error body.
#include <cstddef>
#include <cstdint>
#include <string>

#include "kube/api.h"
#include "kube/secret.h"

namespace kube = certcast::kube;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);

  absl::StatusOr<kube::WatchEvent> event = kube::ParseWatchEvent(text, "watch fuzz");
  if (event.ok()) {
    (void)kube::ResourceVersion(event->object);
    (void)kube::ObjectName(event->object);
  } else {
    (void)kube::IsExpired(event.status());
  }
  for (long code : {400L, 404L, 409L, 410L, 422L, 500L}) {
    (void)kube::StatusFromHttp(code, text, "GET fuzz");
  }

  kube::Json object = kube::Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (object.is_discarded()) return 0;
  (void)kube::ObjectName(object);
  (void)kube::ResourceVersion(object);
  (void)kube::IsManagedByCertcast(object);
  (void)kube::MaterialFromSecret(object);
  kube::WipeSecretData(&object);
  return 0;
}
