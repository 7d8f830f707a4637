// libcurl for the static certcast-client, loaded when a flag first needs the Kubernetes API
// (--secret-name, --rollout-restart, --shared-writer). libcurl is the one dependency of the
// client that cannot be linked statically on Debian (its GnuTLS, Kerberos, LDAP, SSH and RTMP
// dependencies ship no archives), and linking it shared would load about 30 libraries, and a
// second OpenSSL, into every client, also the ones that only write files. So in the static
// build (CERTCAST_STATIC_CLIENT) this file defines the few curl_* functions kube/api.cc calls and
// forwards them to libcurl.so.4 opened with dlopen; libcurl then has its own shared OpenSSL,
// which the executable does not export symbols to. In other builds the binary links libcurl and
// LoadLibcurl() does nothing. Thread-safe.
#ifndef CERTCAST_CLIENT_LAZY_CURL_H_
#define CERTCAST_CLIENT_LAZY_CURL_H_

#include "absl/status/status.h"

namespace certcast {

// Loads libcurl.so.4 and resolves the functions kube/api.cc uses, once; later calls return the
// first result. FailedPrecondition naming the library and dlerror()'s reason when it cannot be
// loaded (e.g. the libcurl4 package is missing). The forwarding functions load it too, so a path
// that forgot to call this fails like a libcurl that cannot initialize, not with a crash.
absl::Status LoadLibcurl();

}  // namespace certcast

#endif  // CERTCAST_CLIENT_LAZY_CURL_H_
