#!/usr/bin/env bash
# certcast-client built with CERTCAST_STATIC_CLIENT (the default) carries gRPC, protobuf, abseil,
# OpenSSL, c-ares, re2, upb and spdlog itself: neither the binary (readelf -d) nor anything it
# loads (ldd) names a shared copy of them, libcurl is not linked (client/lazy_curl.h loads it on demand),
# and the executable exports no OpenSSL or curl symbols, so the libcurl it loads keeps its own
# OpenSSL instead of binding to the static one, and that no xDS, grpclb or RLS code is linked
# (client/grpc_plugins.cc), and that the code it runs was linked first and together
# (client/used_text.ld; a Debian update that renamed the archives' objects would empty it).
# Also runs the binary (--version) once.
# Usage: static_client_test.sh CLIENT_BINARY
set -euo pipefail
client=${1:?usage: $0 CLIENT_BINARY}
fail=0
static='lib(grpc|gpr|upb|address_sorting|protobuf|absl_|ssl|crypto|cares|re2|curl|spdlog)'

needed=$(readelf -d "$client" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
[[ -n $needed ]] || { echo "FAIL: readelf -d lists no NEEDED entry in $client" >&2; exit 1; }
if bad=$(grep -E "^$static" <<<"$needed"); then
  echo "FAIL: $client needs shared libraries it should carry statically:" $bad >&2
  fail=1
fi
loaded=$(ldd "$client")
if grep -q 'not found' <<<"$loaded"; then
  echo "FAIL: ldd finds no library for: $(grep 'not found' <<<"$loaded")" >&2
  fail=1
fi
if bad=$(grep -oE "^\s*$static[^ ]*" <<<"$loaded"); then
  echo "FAIL: $client loads, through its shared libraries:" $bad >&2
  fail=1
fi
if bad=$(nm -D --defined-only "$client" | awk '{ print $3 }' \
           | grep -E '^(SSL_|EVP_|OPENSSL_|X509_|CRYPTO_|curl_)'); then
  echo "FAIL: $client exports OpenSSL or curl symbols, which a loaded library would bind to:" \
    $(head -5 <<<"$bad") >&2
  fail=1
fi
# Only the gRPC plugins it uses (client/grpc_plugins.cc): no xDS, grpclb or RLS code linked.
symbols=$(nm -C "$client" 2>/dev/null || true)
if ! grep -q ' grpc_core::BuildCoreConfiguration(' <<<"$symbols"; then
  echo "FAIL: no symbol table, or no BuildCoreConfiguration, in $client: cannot check its plugins" >&2
  fail=1
elif bad=$(grep -oE 'grpc_core::(RegisterXdsResolver|RegisterGrpcLbPolicy|RegisterRlsLbPolicy|RegisterRingHashLbPolicy|XdsClient::XdsClient)\(' <<<"$symbols" | sort -u); then
  echo "FAIL: $client links gRPC plugins it never uses:" $bad >&2
  fail=1
fi
# The ordered code: 4.1 MiB when client/used_text.ld was generated; most of it must still match.
used=$(readelf -SW "$client" | awk '$2 == ".text.used" { print $6 }')
used=$((16#${used:-0}))
if ((used < 3 * 1024 * 1024)); then
  echo "FAIL: $client's .text.used holds $used bytes, not the ~4 MiB client/used_text.ld" \
    "listed: regenerate it with bench/client_text_order.sh" >&2
  fail=1
fi
version=$("$client" --version)
[[ $version == certcast-client* ]] || { echo "FAIL: --version printed: $version" >&2; fail=1; }
((fail == 0)) && echo "PASS: $client links gRPC, protobuf, abseil and OpenSSL statically" \
  "(NEEDED: $(tr '\n' ' ' <<<"$needed"))"
exit "$fail"
