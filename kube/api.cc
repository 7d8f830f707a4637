#include "kube/api.h"

#include <curl/curl.h>

#include <cstdlib>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "common/secret.h"
#include "common/status_macros.h"
#include "kube/secret.h"

namespace certcast::kube {
namespace {

constexpr char kServiceAccountDir[] = "/var/run/secrets/kubernetes.io/serviceaccount";
constexpr char kExpiredPayload[] = "certcast.io/kube-expired";

void InitCurlOnce() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

using CurlHandle = std::unique_ptr<CURL, decltype(&curl_easy_cleanup)>;
using HeaderList = std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)>;

size_t AppendToString(char* data, size_t size, size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

const char* ReasonPhrase(long code) {
  switch (code) {
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 409:
      return "Conflict";
    case 410:
      return "Gone";
    case 415:
      return "Unsupported Media Type";
    case 422:
      return "Unprocessable Entity";
    case 429:
      return "Too Many Requests";
    case 500:
      return "Internal Server Error";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    default:
      return "";
  }
}

// A handle with TLS verification, the bearer token and the common options set.
absl::StatusOr<CurlHandle> NewHandle(const KubeConfig& config, const std::string& url,
                                     const std::string& token, HeaderList* headers,
                                     const std::string& content_type) {
  InitCurlOnce();
  CurlHandle curl(curl_easy_init(), &curl_easy_cleanup);
  if (curl == nullptr) return absl::InternalError("curl_easy_init failed");
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_SSL_VERIFYHOST, 2L);
  if (!config.ca_file.empty()) curl_easy_setopt(curl.get(), CURLOPT_CAINFO, config.ca_file.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_CONNECTTIMEOUT_MS, 10'000L);
  // HTTPS only: the bearer token must never cross the network in plaintext.
  curl_easy_setopt(curl.get(), CURLOPT_PROTOCOLS_STR, "https");
  std::string authorization = "Authorization: Bearer " + token;
  curl_slist* list = curl_slist_append(nullptr, authorization.c_str());
  CleanseString(&authorization);
  list = curl_slist_append(list, "Accept: application/json");
  list = curl_slist_append(list, ("Content-Type: " + content_type).c_str());
  headers->reset(list);
  curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, list);
  return curl;
}

}  // namespace

absl::StatusOr<KubeConfig> KubeConfig::Resolve(const std::string& api_url,
                                               const std::string& token_file,
                                               const std::string& ca_file) {
  KubeConfig config;
  config.api_url = api_url;
  if (config.api_url.empty()) {
    const char* host = std::getenv("KUBERNETES_SERVICE_HOST");
    const char* port = std::getenv("KUBERNETES_SERVICE_PORT");
    if (host == nullptr || port == nullptr) {
      return absl::FailedPreconditionError(
          "no Kubernetes API configured: not running in a cluster (KUBERNETES_SERVICE_HOST is "
          "unset) and no --kube-api-url given");
    }
    const std::string h = host;
    config.api_url =
        absl::StrCat("https://", h.find(':') != std::string::npos ? "[" + h + "]" : h, ":", port);
  }
  config.token_file = token_file.empty() ? absl::StrCat(kServiceAccountDir, "/token") : token_file;
  config.ca_file = ca_file.empty() ? absl::StrCat(kServiceAccountDir, "/ca.crt") : ca_file;
  return config;
}

const Json& Member(const Json& object, const char* key) {
  static const Json kNull;
  if (!object.is_object()) return kNull;
  auto it = object.find(key);
  return it == object.end() ? kNull : *it;
}

std::string StringMember(const Json& object, const char* key, const std::string& fallback) {
  const Json& member = Member(object, key);
  return member.is_string() ? member.get<std::string>() : fallback;
}

absl::Status StatusFromHttp(long http_code, const std::string& body, const std::string& request) {
  std::string message;
  std::string reason;
  Json parsed = Json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (StringMember(parsed, "kind") == "Status") {
    message = StringMember(parsed, "message");
    reason = StringMember(parsed, "reason");
  }
  if (message.empty()) message = body.size() > 200 ? body.substr(0, 200) + "..." : body;
  const std::string text = absl::StrCat(request, ": ", message, " (HTTP ", http_code,
                                        reason.empty() ? ReasonPhrase(http_code) : "",
                                        reason.empty() ? "" : " ", reason, ")");
  switch (http_code) {
    case 400:
    case 415:
    case 422:
      return absl::InvalidArgumentError(text);
    case 401:
      return absl::UnauthenticatedError(text);
    case 403:
      return absl::PermissionDeniedError(text);
    case 404:
      return absl::NotFoundError(text);
    case 409:
      return reason == "AlreadyExists" ? absl::AlreadyExistsError(text) : absl::AbortedError(text);
    case 410: {
      absl::Status expired = absl::FailedPreconditionError(text);
      expired.SetPayload(kExpiredPayload, absl::Cord("1"));
      return expired;
    }
    default:
      if (http_code == 429 || http_code >= 500) return absl::UnavailableError(text);
      return absl::UnknownError(text);
  }
}

absl::StatusOr<WatchEvent> ParseWatchEvent(const std::string& line, const std::string& request) {
  Json parsed = Json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (!Member(parsed, "type").is_string()) {
    if (Member(parsed, "object").is_object()) WipeSecretData(&parsed["object"]);
    return absl::UnavailableError(request + ": undecodable watch event");
  }
  WatchEvent event{StringMember(parsed, "type"), Json::object()};
  // Moved, not copied: a Secret's data must not linger in a copy nobody wipes.
  if (Member(parsed, "object").is_object()) event.object = std::move(parsed["object"]);
  if (event.type == "ERROR") {
    const Json& code = Member(event.object, "code");
    absl::Status error =
        StatusFromHttp(code.is_number_integer() ? code.get<long>() : 500L,
                       event.object.dump(-1, ' ', false, Json::error_handler_t::replace), request);
    WipeSecretData(&event.object);
    return error;
  }
  return event;
}

bool IsExpired(const absl::Status& status) {
  return status.GetPayload(kExpiredPayload).has_value();
}

std::string QueryEscape(const std::string& value) {
  std::string out;
  for (unsigned char c : value) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += absl::StrFormat("%%%02X", c);
    }
  }
  return out;
}

absl::StatusOr<std::string> CurlKubeApi::BearerToken() {
  absl::StatusOr<std::string> token = fs_->ReadFile(config_.token_file);
  if (!token.ok()) return Annotate(token.status(), "reading the Kubernetes API token");
  std::string trimmed(absl::StripAsciiWhitespace(*token));
  CleanseString(&*token);
  return trimmed;
}

absl::StatusOr<Json> CurlKubeApi::Request(const std::string& method, const std::string& path,
                                          const Json* body, const std::string& content_type) {
  const std::string request = absl::StrCat(method, " ", path);
  ASSIGN_OR_RETURN(std::string token, BearerToken());
  HeaderList headers(nullptr, &curl_slist_free_all);
  absl::StatusOr<CurlHandle> curl =
      NewHandle(config_, config_.api_url + path, token, &headers, content_type);
  CleanseString(&token);
  if (!curl.ok()) return curl.status();
  CURL* handle = curl->get();
  std::string payload = body == nullptr ? "" : body->dump();
  curl_easy_setopt(handle, CURLOPT_CUSTOMREQUEST, method.c_str());
  if (body != nullptr) {
    curl_easy_setopt(handle, CURLOPT_POSTFIELDS, payload.data());
    curl_easy_setopt(handle, CURLOPT_POSTFIELDSIZE, static_cast<long>(payload.size()));
  }
  std::string response;
  curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, &AppendToString);
  curl_easy_setopt(handle, CURLOPT_WRITEDATA, &response);
  curl_easy_setopt(handle, CURLOPT_TIMEOUT_MS, 30'000L);
  const CURLcode rc = curl_easy_perform(handle);
  CleanseString(&payload);  // a Secret body carries key material
  if (rc != CURLE_OK) {
    return absl::UnavailableError(
        absl::StrCat(request, ": Kubernetes API unreachable: ", curl_easy_strerror(rc)));
  }
  long code = 0;
  curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &code);
  if (code < 200 || code >= 300) {
    absl::Status status = StatusFromHttp(code, response, request);
    CleanseString(&response);
    return status;
  }
  Json parsed = Json::parse(response, nullptr, /*allow_exceptions=*/false);
  CleanseString(&response);
  if (parsed.is_discarded()) {
    return absl::UnavailableError(absl::StrCat(request, ": the API returned invalid JSON"));
  }
  return parsed;
}

namespace {

// State of one streaming watch, shared with curl's callbacks.
struct WatchState {
  const std::function<bool(const WatchEvent&)>* on_event;
  const std::atomic<bool>* stop;
  std::string buffer;
  absl::Status result;
  bool ended_by_callback = false;
  absl::Time last_byte = absl::Now();
  absl::Duration idle_timeout;
  bool stalled = false;
  std::string request;
  CURL* handle = nullptr;
};

size_t OnWatchData(char* data, size_t size, size_t count, void* opaque) {
  auto* state = static_cast<WatchState*>(opaque);
  state->last_byte = absl::Now();
  state->buffer.append(data, size * count);
  long code = 0;
  curl_easy_getinfo(state->handle, CURLINFO_RESPONSE_CODE, &code);
  if (code >= 300) return size * count;  // a Status body, read whole after the transfer
  size_t newline;
  while ((newline = state->buffer.find('\n')) != std::string::npos) {
    std::string line = state->buffer.substr(0, newline);
    CleanseMemory(state->buffer.data(), newline + 1);  // events may carry Secret data
    state->buffer.erase(0, newline + 1);
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    absl::StatusOr<WatchEvent> event = ParseWatchEvent(line, state->request);
    CleanseString(&line);
    if (!event.ok()) {
      state->result = event.status();
      return 0;  // aborts the transfer
    }
    const bool go_on = (*state->on_event)(*event);
    WipeSecretData(&event->object);
    if (!go_on) {
      state->ended_by_callback = true;
      return 0;
    }
  }
  return size * count;
}

int OnWatchProgress(void* opaque, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* state = static_cast<WatchState*>(opaque);
  if (state->stop != nullptr && state->stop->load()) return 1;
  if (absl::Now() - state->last_byte > state->idle_timeout) {
    state->stalled = true;
    return 1;
  }
  return 0;
}

}  // namespace

absl::Status CurlKubeApi::Watch(const std::string& path,
                                const std::function<bool(const WatchEvent&)>& on_event,
                                const std::atomic<bool>* stop, absl::Duration idle_timeout) {
  WatchState state;
  state.on_event = &on_event;
  state.stop = stop;
  state.idle_timeout = idle_timeout;
  state.request = "WATCH " + path;
  ASSIGN_OR_RETURN(std::string token, BearerToken());
  HeaderList headers(nullptr, &curl_slist_free_all);
  absl::StatusOr<CurlHandle> curl =
      NewHandle(config_, config_.api_url + path, token, &headers, "application/json");
  CleanseString(&token);
  if (!curl.ok()) return curl.status();
  CURL* handle = curl->get();
  state.handle = handle;
  curl_easy_setopt(handle, CURLOPT_WRITEFUNCTION, &OnWatchData);
  curl_easy_setopt(handle, CURLOPT_WRITEDATA, &state);
  curl_easy_setopt(handle, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(handle, CURLOPT_XFERINFOFUNCTION, &OnWatchProgress);
  curl_easy_setopt(handle, CURLOPT_XFERINFODATA, &state);
  const CURLcode rc = curl_easy_perform(handle);
  long code = 0;
  curl_easy_getinfo(handle, CURLINFO_RESPONSE_CODE, &code);
  if (code >= 300) return StatusFromHttp(code, state.buffer, state.request);
  if (!state.result.ok()) return state.result;
  if (state.ended_by_callback) return absl::OkStatus();
  if (stop != nullptr && stop->load()) return absl::CancelledError(state.request + ": stopped");
  if (state.stalled) {
    return absl::UnavailableError(absl::StrCat(state.request, ": no data for ",
                                               absl::FormatDuration(idle_timeout),
                                               "; the watch stalled"));
  }
  if (rc != CURLE_OK) {
    return absl::UnavailableError(
        absl::StrCat(state.request, ": watch interrupted: ", curl_easy_strerror(rc)));
  }
  return absl::OkStatus();
}

}  // namespace certcast::kube
