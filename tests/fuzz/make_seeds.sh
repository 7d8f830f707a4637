#!/usr/bin/env bash
# Writes seed inputs for the fuzz targets into DIR/TARGET/ (DIR defaults to tests/fuzz/corpus).
#
#   tests/fuzz/make_seeds.sh [--with-keys] [DIR]
#
# Without --with-keys (how the committed corpus was made) certificate seeds carry certificates
# and deliberately broken key blocks, so nothing committed looks like a usable private key.
# With --with-keys, freshly minted keys that match the certificates are added: scripts/fuzz.sh
# writes those into the build directory at every run, never into the repository.
set -euo pipefail

WITH_KEYS=0
if [[ "${1:-}" == "--with-keys" ]]; then
  WITH_KEYS=1
  shift
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${1:-$ROOT/tests/fuzz/corpus}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

mkdir -p "$OUT/certificate"

# A CA, an intermediate and a leaf for *.example.com (EC P-256), valid for ten years, so they
# cover the fixed instant the certificate target validates at (2030-01-01).
ossl() { openssl "$@" 2>/dev/null; }
ossl ecparam -name prime256v1 -genkey -noout -out "$WORK/ca.key"
ossl req -x509 -new -key "$WORK/ca.key" -subj "/CN=fuzz root" -days 7300 -out "$WORK/ca.crt" \
  -addext "basicConstraints=critical,CA:true" -addext "keyUsage=critical,keyCertSign"
ossl ecparam -name prime256v1 -genkey -noout -out "$WORK/int.key"
ossl req -new -key "$WORK/int.key" -subj "/CN=fuzz intermediate" -out "$WORK/int.csr"
printf 'basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign\n' >"$WORK/int.ext"
ossl x509 -req -in "$WORK/int.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 7300 -extfile "$WORK/int.ext" -out "$WORK/int.crt"
ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/leaf.key"
ossl req -new -key "$WORK/leaf.key" -subj "/CN=*.example.com" -out "$WORK/leaf.csr"
printf 'subjectAltName=DNS:*.example.com,DNS:example.com\n' >"$WORK/leaf.ext"
ossl x509 -req -in "$WORK/leaf.csr" -CA "$WORK/int.crt" -CAkey "$WORK/int.key" -CAcreateserial \
  -days 3650 -extfile "$WORK/leaf.ext" -out "$WORK/leaf.crt"
ossl genpkey -algorithm ED25519 -out "$WORK/ed.key"
ossl req -x509 -new -key "$WORK/ed.key" -subj "/CN=ed.example.com" -days 3650 \
  -addext "subjectAltName=DNS:ed.example.com" -out "$WORK/ed.crt"

# certificate: tls.crt NUL tls.key NUL ca.crt NUL dns-name
seed() {  # NAME CHAIN KEY CA DNS
  { cat "$2"; printf '\0'; cat "$3"; printf '\0'; cat "$4"; printf '\0%s' "$5"; } \
    >"$OUT/certificate/$1"
}
cat "$WORK/leaf.crt" "$WORK/int.crt" >"$WORK/chain.crt"
cat "$WORK/int.crt" "$WORK/leaf.crt" >"$WORK/reversed.crt"
: >"$WORK/empty"
if ((WITH_KEYS)); then
  seed keyed-chain "$WORK/chain.crt" "$WORK/leaf.key" "$WORK/ca.crt" "www.example.com"
  seed keyed-ed25519 "$WORK/ed.crt" "$WORK/ed.key" "$WORK/empty" "ed.example.com"
  seed keyed-reversed "$WORK/reversed.crt" "$WORK/leaf.key" "$WORK/ca.crt" "a.example.com"
  seed keyed-mismatch "$WORK/chain.crt" "$WORK/ed.key" "$WORK/ca.crt" ""
  exit 0
fi
# A key block of the right shape whose contents are not a key.
printf -- '-----BEGIN PRIVATE KEY-----\n%s\n-----END PRIVATE KEY-----\n' \
  "$(head -c 96 /dev/zero | base64 -w 64)" >"$WORK/fake.key"
printf -- '-----BEGIN EC PRIVATE KEY-----\nnot base64 at all\n-----END EC PRIVATE KEY-----\n' \
  >"$WORK/broken.key"
seed chain "$WORK/chain.crt" "$WORK/fake.key" "$WORK/ca.crt" "www.example.com"
seed reversed "$WORK/reversed.crt" "$WORK/broken.key" "$WORK/ca.crt" "example.com"
seed self-signed-ed25519 "$WORK/ed.crt" "$WORK/fake.key" "$WORK/empty" "ed.example.com"
seed cert-only "$WORK/leaf.crt" "$WORK/empty" "$WORK/empty" "*.example.com"
