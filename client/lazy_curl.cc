#include "client/lazy_curl.h"

#ifdef CERTCAST_LAZY_CURL
#include <dlfcn.h>

#include <cstdarg>
#include <utility>

#include "absl/strings/str_cat.h"

// The macros that type-check curl_easy_setopt's arguments would rename the definitions below.
#define CURL_DISABLE_TYPECHECK
#include <curl/curl.h>

namespace certcast {
namespace {

constexpr char kLibcurl[] = "libcurl.so.4";

// The libcurl functions this binary uses; all set, or all null when loading failed.
struct Libcurl {
  decltype(&::curl_global_init) global_init = nullptr;
  decltype(&::curl_easy_init) easy_init = nullptr;
  decltype(&::curl_easy_cleanup) easy_cleanup = nullptr;
  decltype(&::curl_easy_setopt) easy_setopt = nullptr;
  decltype(&::curl_easy_perform) easy_perform = nullptr;
  decltype(&::curl_easy_getinfo) easy_getinfo = nullptr;
  decltype(&::curl_easy_strerror) easy_strerror = nullptr;
  decltype(&::curl_slist_append) slist_append = nullptr;
  decltype(&::curl_slist_free_all) slist_free_all = nullptr;
  absl::Status status;
};

// Sets `*function` to `name` in `library`; on failure records the first missing name.
template <typename F>
void Resolve(void* library, const char* name, F* function, absl::Status* status) {
  *function = reinterpret_cast<F>(dlsym(library, name));
  if (*function == nullptr && status->ok()) {
    *status = absl::FailedPreconditionError(absl::StrCat(kLibcurl, " has no ", name));
  }
}

// Loaded once per process: libcurl is a process-wide C library, and kube/api.cc calls it as one.
const Libcurl& Loaded() {
  static const Libcurl* const libcurl = [] {
    auto* loaded = new Libcurl;
    void* library = dlopen(kLibcurl, RTLD_NOW | RTLD_LOCAL);
    if (library == nullptr) {
      loaded->status = absl::FailedPreconditionError(
          absl::StrCat("cannot load ", kLibcurl,
                       " (the Kubernetes API client; Debian package libcurl4): ", dlerror()));
      return loaded;
    }
    absl::Status status;
    Resolve(library, "curl_global_init", &loaded->global_init, &status);
    Resolve(library, "curl_easy_init", &loaded->easy_init, &status);
    Resolve(library, "curl_easy_cleanup", &loaded->easy_cleanup, &status);
    Resolve(library, "curl_easy_setopt", &loaded->easy_setopt, &status);
    Resolve(library, "curl_easy_perform", &loaded->easy_perform, &status);
    Resolve(library, "curl_easy_getinfo", &loaded->easy_getinfo, &status);
    Resolve(library, "curl_easy_strerror", &loaded->easy_strerror, &status);
    Resolve(library, "curl_slist_append", &loaded->slist_append, &status);
    Resolve(library, "curl_slist_free_all", &loaded->slist_free_all, &status);
    if (!status.ok()) {
      *loaded = Libcurl();  // all or nothing
      loaded->status = std::move(status);
    }
    return loaded;
  }();
  return *libcurl;
}

}  // namespace

absl::Status LoadLibcurl() { return Loaded().status; }

}  // namespace certcast

// The forwarding definitions of the functions <curl/curl.h> declares.
extern "C" {

CURLcode curl_global_init(long flags) {
  const auto& curl = certcast::Loaded();
  return curl.global_init == nullptr ? CURLE_FAILED_INIT : curl.global_init(flags);
}

CURL* curl_easy_init() {
  const auto& curl = certcast::Loaded();
  return curl.easy_init == nullptr ? nullptr : curl.easy_init();
}

void curl_easy_cleanup(CURL* handle) {
  // A handle exists only when libcurl is loaded.
  if (handle != nullptr) certcast::Loaded().easy_cleanup(handle);
}

// The option number says the argument's type (curl.h's CURLOPTTYPE_* ranges); pass it on as that
// type.
CURLcode curl_easy_setopt(CURL* handle, CURLoption option, ...) {
  const auto& curl = certcast::Loaded();
  if (curl.easy_setopt == nullptr) return CURLE_FAILED_INIT;
  va_list args;
  va_start(args, option);
  CURLcode rc;
  if (option < CURLOPTTYPE_OBJECTPOINT) {
    rc = curl.easy_setopt(handle, option, va_arg(args, long));
  } else if (option < CURLOPTTYPE_FUNCTIONPOINT) {
    rc = curl.easy_setopt(handle, option, va_arg(args, void*));
  } else if (option < CURLOPTTYPE_OFF_T) {
    rc = curl.easy_setopt(handle, option, va_arg(args, void (*)()));
  } else if (option < CURLOPTTYPE_BLOB) {
    rc = curl.easy_setopt(handle, option, va_arg(args, curl_off_t));
  } else {
    rc = curl.easy_setopt(handle, option, va_arg(args, void*));
  }
  va_end(args);
  return rc;
}

CURLcode curl_easy_perform(CURL* handle) {
  const auto& curl = certcast::Loaded();
  return curl.easy_perform == nullptr ? CURLE_FAILED_INIT : curl.easy_perform(handle);
}

// Every CURLINFO_* takes a pointer to where the value goes.
CURLcode curl_easy_getinfo(CURL* handle, CURLINFO info, ...) {
  const auto& curl = certcast::Loaded();
  if (curl.easy_getinfo == nullptr) return CURLE_FAILED_INIT;
  va_list args;
  va_start(args, info);
  const CURLcode rc = curl.easy_getinfo(handle, info, va_arg(args, void*));
  va_end(args);
  return rc;
}

const char* curl_easy_strerror(CURLcode code) {
  const auto& curl = certcast::Loaded();
  return curl.easy_strerror == nullptr ? "libcurl is not loaded" : curl.easy_strerror(code);
}

curl_slist* curl_slist_append(curl_slist* list, const char* value) {
  const auto& curl = certcast::Loaded();
  return curl.slist_append == nullptr ? nullptr : curl.slist_append(list, value);
}

void curl_slist_free_all(curl_slist* list) {
  // A list exists only when libcurl is loaded.
  if (list != nullptr) certcast::Loaded().slist_free_all(list);
}

}  // extern "C"

#else  // the binary links libcurl

namespace certcast {
absl::Status LoadLibcurl() { return absl::OkStatus(); }
}  // namespace certcast

#endif
