// Kubernetes API access shared by server and client: HTTPS with libcurl, JSON in and out.
// This folder depends on common/ only; common/ knows nothing of Kubernetes.
//
// The API's Status bodies become absl::Status errors with the most specific code (see
// StatusFromHttp) and a message naming the request, the API's message and the HTTP code.
#ifndef CERTCAST_KUBE_API_H_
#define CERTCAST_KUBE_API_H_

#include <atomic>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/filesystem.h"
#include "nlohmann/json.hpp"

namespace certcast::kube {

using Json = nlohmann::json;

// Where the API server is and how to authenticate to it.
struct KubeConfig {
  std::string api_url;     // https://HOST:PORT
  std::string token_file;  // re-read for every request: the kubelet rotates projected tokens
  std::string ca_file;     // CA bundle that verifies the API server

  // In-cluster configuration (KUBERNETES_SERVICE_HOST/PORT and the ServiceAccount token and CA
  // files), with every non-empty argument taking precedence. FailedPrecondition naming what is
  // missing when neither is available.
  static absl::StatusOr<KubeConfig> Resolve(const std::string& api_url,
                                            const std::string& token_file,
                                            const std::string& ca_file);
};

// Reads of API objects that never throw: nlohmann's value() throws when the object is not an
// object or the member has another type, and no answer from the API may crash a binary.
// The member `key` of `object`, or null when `object` is not an object or has no such member.
const Json& Member(const Json& object, const char* key);
// The string member `key` of `object`, or `fallback` when absent or not a string.
std::string StringMember(const Json& object, const char* key, const std::string& fallback = "");

struct WatchEvent {
  std::string type;  // ADDED, MODIFIED, DELETED, BOOKMARK (ERROR events become the result)
  Json object;
};

// Thread-safe implementations only.
class KubeApi {
 public:
  virtual ~KubeApi() = default;

  // One request; `path` includes the query string. `body` may be null.
  virtual absl::StatusOr<Json> Request(const std::string& method, const std::string& path,
                                       const Json* body = nullptr,
                                       const std::string& content_type = "application/json") = 0;

  // Streams a watch (`path` must carry watch=1 and its other parameters). Calls `on_event` for
  // every event until it returns false, the server ends the stream (OK), `*stop` becomes true
  // (Cancelled), no byte arrives for `idle_timeout` (Unavailable: a silent stall), or an error.
  // An ERROR event with code 410 gives an error for which IsExpired() is true.
  virtual absl::Status Watch(const std::string& path,
                             const std::function<bool(const WatchEvent&)>& on_event,
                             const std::atomic<bool>* stop, absl::Duration idle_timeout) = 0;
};

class CurlKubeApi final : public KubeApi {
 public:
  // Does not own `fs`.
  CurlKubeApi(KubeConfig config, Filesystem* fs) : config_(std::move(config)), fs_(fs) {}

  absl::StatusOr<Json> Request(const std::string& method, const std::string& path, const Json* body,
                               const std::string& content_type) override;
  absl::Status Watch(const std::string& path,
                     const std::function<bool(const WatchEvent&)>& on_event,
                     const std::atomic<bool>* stop, absl::Duration idle_timeout) override;

 private:
  absl::StatusOr<std::string> BearerToken();

  const KubeConfig config_;
  Filesystem* const fs_;
};

// Maps an HTTP status and the API's Status body to an absl::Status: 400 and 422 InvalidArgument,
// 401 Unauthenticated, 403 PermissionDenied, 404 NotFound, 409 AlreadyExists (reason
// AlreadyExists) or Aborted (a resourceVersion conflict), 410 FailedPrecondition (expired), 429
// and 5xx Unavailable. The message is "REQUEST: API MESSAGE (HTTP CODE REASON)".
absl::Status StatusFromHttp(long http_code, const std::string& body, const std::string& request);

// Decodes one line of a watch stream; `request` names the watch in errors. Unavailable when the
// line is not a JSON object with a "type"; an ERROR event becomes the error it carries
// (StatusFromHttp of its code and body, so a 410 gives an error for which IsExpired() is true).
absl::StatusOr<WatchEvent> ParseWatchEvent(const std::string& line, const std::string& request);

// True for a 410 Gone / Expired resourceVersion error: re-list, then watch again.
bool IsExpired(const absl::Status& status);
// True for an optimistic-concurrency conflict (409 Conflict).
inline bool IsConflict(const absl::Status& status) { return absl::IsAborted(status); }

// Percent-encodes a query parameter value.
std::string QueryEscape(const std::string& value);

}  // namespace certcast::kube

#endif  // CERTCAST_KUBE_API_H_
