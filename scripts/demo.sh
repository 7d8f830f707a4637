#!/usr/bin/env bash
# certcast in one minute: builds certcast-server, mints a throwaway wildcard certificate, serves
# it over TLS and walks through inspection, a live Subscribe stream, a rotation and a rollback
# with `buf curl`. On a fresh Debian 12 machine run it as root (or with sudo available): it first
# installs what is missing (scripts/install-deps.sh, idempotent). Everything it creates lives in
# .demo/, which is wiped at the start. Private keys are never printed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUF="$ROOT/.tools/node_modules/.bin/buf"
SERVER=build/server/certcast-server
DEMO=.demo   # relative to $ROOT, so that the commands shown read well

"$ROOT/scripts/install-deps.sh"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCERTCAST_BUF="$BUF" >/dev/null
cmake --build build -j2 --target certcast-server

SERVER_PID=""
STREAM_PID=""
cleanup() {
  exec 3>&-
  for pid in $STREAM_PID $SERVER_PID; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

rm -rf "$DEMO"
mkdir -p "$DEMO"
chmod 0700 "$DEMO"

if [[ -t 1 ]]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi
heading() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
wait_until() {  # wait_until SECONDS COMMAND...: polls every 0.1 s
  local deadline=$(($(now_ms) + $1 * 1000))
  shift
  until "$@"; do
    if (($(now_ms) >= deadline)); then
      echo "demo: timed out waiting for: $*" >&2
      return 1
    fi
    sleep 0.1
  done
}
# message_after LINE PATTERN: true once the stream output, from LINE on, holds a complete
# (pretty-printed) message containing PATTERN.
message_after() {
  tail -n +"$1" "$STREAM_OUT" | awk -v p="$2" '$0 ~ p {seen = 1} seen && /^}/ {found = 1} END {exit !found}'
}
# Hides private keys and shortens certificate PEM in buf curl's JSON output.
redact() {
  sed -u -E -e 's/("privateKeyPem": *)"[^"]*"/\1"<redacted>"/' \
    -e 's/("(chainPem|caPem)": *"-----BEGIN CERTIFICATE-----)[^"]*"/\1..."/'
}

heading "Minting a throwaway CA and a *.example.test wildcard chain in .demo/"
# issue NAME SUBJECT ISSUER EXTENSIONS: NAME.key + NAME.pem, self-signed when ISSUER is empty.
issue() {
  local name=$1 subject=$2 issuer=$3
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$DEMO/$name.key" 2>/dev/null
  openssl req -new -key "$DEMO/$name.key" -subj "$subject" -out "$DEMO/$name.csr" 2>/dev/null
  printf '%b\n' "$4" >"$DEMO/$name.ext"
  local signer=(-signkey "$DEMO/$name.key")
  [[ -n $issuer ]] && signer=(-CA "$DEMO/$issuer.pem" -CAkey "$DEMO/$issuer.key")
  openssl x509 -req -in "$DEMO/$name.csr" "${signer[@]}" -set_serial "0x$(openssl rand -hex 12)" \
    -days 30 -extfile "$DEMO/$name.ext" -out "$DEMO/$name.pem" 2>/dev/null
  rm -f "$DEMO/$name.csr" "$DEMO/$name.ext"
}
CA_EXT='basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash'
INT_EXT='basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid'
LEAF_EXT='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid'
WILDCARD_SAN='subjectAltName=DNS:*.example.test,DNS:example.test'
issue ca "/CN=certcast demo serving CA" "" "$CA_EXT"
issue serving "/CN=localhost" ca "$LEAF_EXT\nsubjectAltName=DNS:localhost,IP:127.0.0.1"
issue root "/CN=Example Test Root CA" "" "$CA_EXT"
issue intermediate "/CN=Example Test Intermediate CA" root "$INT_EXT"
issue wildcard-1 "/CN=*.example.test" intermediate "$LEAF_EXT\n$WILDCARD_SAN"
issue wildcard-2 "/CN=*.example.test" intermediate "$LEAF_EXT\n$WILDCARD_SAN"
echo "serving certificate: .demo/serving.pem (localhost, 127.0.0.1), trusted through .demo/ca.pem"
echo "wildcard chain:      Example Test Root CA -> Intermediate -> *.example.test (two leaves)"

# publish LEAF: lays the chain out like kubelet does for a mounted Secret: a new ..TIMESTAMP
# directory, then a ..data_tmp symlink renamed over ..data in one step.
SOURCE="$DEMO/wildcard"
publish() {
  local leaf=$1 stamp old
  stamp="..$(date -u +%Y_%m_%d_%H_%M_%S.%N)"
  mkdir -p "$SOURCE/$stamp"
  cat "$DEMO/$leaf.pem" "$DEMO/intermediate.pem" >"$SOURCE/$stamp/tls.crt"
  install -m 0600 "$DEMO/$leaf.key" "$SOURCE/$stamp/tls.key"
  cp "$DEMO/root.pem" "$SOURCE/$stamp/ca.crt"
  old=$(readlink "$SOURCE/..data" || true)
  ln -s "$stamp" "$SOURCE/..data_tmp"
  mv -T "$SOURCE/..data_tmp" "$SOURCE/..data"
  for file in tls.crt tls.key ca.crt; do
    [[ -L $SOURCE/$file ]] || ln -s "..data/$file" "$SOURCE/$file"
  done
  if [[ -n $old ]]; then rm -rf "${SOURCE:?}/$old"; fi
}
mkdir -p "$SOURCE"
publish wildcard-1
echo "source directory .demo/wildcard (kubelet layout of a mounted kubernetes.io/tls Secret):"
(cd "$SOURCE" && for entry in ..data tls.crt tls.key ca.crt; do
  printf '  %-8s -> %s\n' "$entry" "$(readlink "$entry")"
done)

heading "Starting certcast-server over TLS (state in .demo/state)"
LOG="$DEMO/server.log"
SERVER_ARGS=(--listen=127.0.0.1:0 --tls-cert="$DEMO/serving.pem" --tls-key="$DEMO/serving.key"
  --certificate=wildcard="$SOURCE" --state-dir="$DEMO/state")
echo "\$ $SERVER ${SERVER_ARGS[*]} 2>$LOG &"
"$SERVER" "${SERVER_ARGS[@]}" >"$LOG" 2>&1 &
SERVER_PID=$!
wait_until 20 grep -q 'listening on port [0-9]' "$LOG" || { cat "$LOG"; exit 1; }
PORT=$(sed -n 's/.*listening on port \([0-9][0-9]*\).*/\1/p' "$LOG" | head -n 1)
URL="https://127.0.0.1:$PORT"
cat "$LOG"

# call METHOD [JSON]: one unary call, echoed the way an operator would type it.
call() {
  local data=()
  [[ $# -ge 2 ]] && data=(-d "$2")
  echo "\$ buf curl --protocol grpc --cacert .demo/ca.pem ${2:+-d '$2' }$URL/$1"
  "$BUF" curl --timeout 20s --protocol grpc --cacert "$DEMO/ca.pem" "${data[@]}" "$URL/$1" | redact
}

heading "Services, through server reflection"
echo "\$ buf curl --protocol grpc --cacert .demo/ca.pem --list-services $URL"
"$BUF" curl --timeout 20s --protocol grpc --cacert "$DEMO/ca.pem" --list-services "$URL"

heading "What the server distributes"
call certcast.v1.Inspection/ListCertificates

heading "One certificate in detail: version 1 (no private key in inspection output)"
call certcast.v1.Inspection/GetCertificate '{"name":"wildcard"}'

heading "A client in namespace tenant-a subscribes, holding nothing yet"
FIFO="$DEMO/stream.in"
STREAM_OUT="$DEMO/stream.out"
mkfifo "$FIFO"
HELLO='{"hello":{"clientId":"demo-client","namespace":"tenant-a","certificates":[{"name":"wildcard","version":"0","fingerprint":""}]}}'
echo "\$ buf curl --protocol grpc --cacert .demo/ca.pem -d @- $URL/certcast.v1.Distribution/Subscribe"
echo "  stdin: $HELLO"
# The stream's output goes through redact before it touches the disk: no key bytes in .demo/.
"$BUF" curl --protocol grpc --cacert "$DEMO/ca.pem" -d @- \
  "$URL/certcast.v1.Distribution/Subscribe" <"$FIFO" 2>&1 | redact >"$STREAM_OUT" &
STREAM_PID=$!
exec 3>"$FIFO"
echo "$HELLO" >&3
wait_until 20 message_after 1 '"update"'
cat "$STREAM_OUT"
NONCE=$(sed -n 's/.*"nonce": "\([0-9a-f]*\)".*/\1/p' "$STREAM_OUT" | tail -n 1)
ACK="{\"ack\":{\"name\":\"wildcard\",\"version\":\"1\",\"nonce\":\"$NONCE\"}}"
echo "  stdin: $ACK   (the client applied version 1)"
echo "$ACK" >&3
SHOWN=$(wc -l <"$STREAM_OUT")

heading "Rotation: cert-manager renews, kubelet swaps ..data to a new leaf"
publish wildcard-2
(cd "$SOURCE" && printf '  ..data -> %s\n' "$(readlink ..data)")
current_version() {
  "$BUF" curl --timeout 20s --protocol grpc --cacert "$DEMO/ca.pem" -d '{"name":"wildcard"}' \
    "$URL/certcast.v1.Inspection/GetCertificate" | grep -q "\"version\": \"$1\""
}
wait_until 20 current_version 2
call certcast.v1.Inspection/GetCertificate '{"name":"wildcard"}'

heading "...and the open stream received version 2 without asking"
wait_until 20 message_after "$((SHOWN + 1))" '"update"'
tail -n +"$((SHOWN + 1))" "$STREAM_OUT"

heading "Which client runs which version (acknowledged 1, sent 2: this demo client does not apply)"
call certcast.v1.Inspection/ListClients

heading "Rollback to version 1: republished as version 3 and pinned"
call certcast.v1.Admin/Rollback '{"name":"wildcard","version":"1"}'
call certcast.v1.Inspection/ListCertificates

heading "Stopping: the client closes its stream, the server gets SIGTERM"
exec 3>&-
wait "$STREAM_PID" || true
STREAM_PID=""
kill -TERM "$SERVER_PID"
status=0
wait "$SERVER_PID" || status=$?
SERVER_PID=""
echo "certcast-server exited with status $status"
echo "server log (.demo/server.log):"
sed 's/^/  /' "$LOG"
heading "Done. Run scripts/test.sh for the full test suite."
