#!/usr/bin/env bash
# Interop check with an independent gRPC implementation: `buf curl` (Go, server reflection)
# talks to a real certcast-server over TLS and plaintext, the way operators and scripts will.
#
# Usage: buf_curl_test.sh CERTCAST_SERVER BUF
#
# Mints throwaway certificates with the openssl CLI (serving chain, a client CA and SPIFFE client
# certificates for an admin and for tenants), lays the wildcard out like a kubelet secret volume,
# and checks, against a server with --client-ca and --policy: the mTLS handshake, reflection,
# inspection and its scoping, health, a bidi Subscribe, a rotation, a rollback (admins only) and
# the denials; then a TLS server without --policy, then a plaintext --insecure one.
# Prints PASS/FAIL per check and exits 1 if any check failed.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 CERTCAST_SERVER BUF" >&2
  exit 2
fi
SERVER=$1
BUF=$2
for tool in "$SERVER" "$BUF"; do
  [[ -x $tool ]] || { echo "FAIL: $tool is not an executable" >&2; exit 1; }
done
for tool in openssl node ps; do
  command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed" >&2; exit 1; }
done

W=$(mktemp -d "${TMPDIR:-/tmp}/certcast-buf-curl.XXXXXX")
SERVER_PIDS=()
SUB_PID=""
cleanup() {
  exec 3>&-
  for pid in "${SERVER_PIDS[@]}" $SUB_PID; do
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$W"
}
trap cleanup EXIT

FAILURES=0
pass() { echo "PASS: $*"; }
fail() {
  echo "FAIL: $*"
  FAILURES=$((FAILURES + 1))
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# wait_until SECONDS COMMAND...: runs COMMAND every 0.1 s until it succeeds or time runs out.
wait_until() {
  local deadline=$(($(now_ms) + $1 * 1000))
  shift
  until "$@"; do
    (($(now_ms) < deadline)) || return 1
    sleep 0.1
  done
}

# json FILE PATH: prints the value at a dotted PATH (array indexes allowed) of a JSON document.
json() {
  node -e '
    let v = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    for (const k of process.argv[2].split(".")) v = v == null ? undefined : v[k];
    if (v !== undefined) console.log(typeof v === "object" ? JSON.stringify(v) : String(v));
  ' "$1" "$2"
}

# ---------------------------------------------------------------------------------------------
# Throwaway certificates.

# issue NAME SUBJECT ISSUER EXTENSIONS: key NAME.key and certificate NAME.pem signed by ISSUER
# (self-signed when ISSUER is empty).
issue() {
  local name=$1 subject=$2 issuer=$3 extensions=$4
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$W/$name.key" 2>/dev/null
  openssl req -new -key "$W/$name.key" -subj "$subject" -out "$W/$name.csr" 2>/dev/null
  printf '%b\n' "$extensions" >"$W/$name.ext"
  local signer=(-signkey "$W/$name.key")
  [[ -n $issuer ]] && signer=(-CA "$W/$issuer.pem" -CAkey "$W/$issuer.key")
  openssl x509 -req -in "$W/$name.csr" "${signer[@]}" -set_serial "0x$(openssl rand -hex 12)" \
    -days 2 -extfile "$W/$name.ext" -out "$W/$name.pem" 2>/dev/null
}
CA_EXT='basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash'
INT_EXT='basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid'
LEAF_EXT='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nauthorityKeyIdentifier=keyid'
CLIENT_EXT='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nauthorityKeyIdentifier=keyid'

# Serving certificate of the server itself.
issue ca "/CN=certcast interop serving CA" "" "$CA_EXT"
issue serving "/CN=localhost" ca "$LEAF_EXT\nsubjectAltName=DNS:localhost,IP:127.0.0.1"
# The distributed wildcard: root -> intermediate -> *.example.test (twice, for a rotation).
issue root "/CN=Example Test Root" "" "$CA_EXT"
issue int "/CN=Example Test Intermediate" root "$INT_EXT"
issue leaf1 "/CN=*.example.test" int "$LEAF_EXT\nsubjectAltName=DNS:*.example.test,DNS:example.test"
issue leaf2 "/CN=*.example.test" int "$LEAF_EXT\nsubjectAltName=DNS:*.example.test,DNS:example.test"
# Client identities: a client CA (the server's --client-ca) and SPIFFE IDs in URI SANs.
issue clientca "/CN=certcast interop client CA" "" "$CA_EXT"
client_cert() {  # client_cert NAME NAMESPACE SERVICEACCOUNT [ISSUER]
  issue "$1" "/CN=$3.$2" "${4:-clientca}" "$CLIENT_EXT\nsubjectAltName=URI:spiffe://cluster.local/ns/$2/sa/$3"
}
client_cert admin certcast-system operator              # listed under admins
client_cert tenant tenant-a certcast-client             # a namespace the policy allows
client_cert tenant-b tenant-b certcast-client           # another allowed namespace
client_cert zzz tenant-zzz certcast-client              # valid certificate, namespace not allowed
issue strangerca "/CN=some other CA" "" "$CA_EXT"
client_cert stranger tenant-a certcast-client strangerca  # right SPIFFE ID, wrong CA

POLICY=$W/policy.yaml
cat >"$POLICY" <<'EOF'
certificates:
  wildcard:
    namespaces: ["tenant-a", "tenant-b"]
admins:
  - spiffe://cluster.local/ns/certcast-system/sa/operator
EOF

fingerprint() {
  openssl x509 -in "$W/$1.pem" -noout -fingerprint -sha256 | sed 's/^.*=//; s/://g' | tr 'A-F' 'a-f'
}
FP1=$(fingerprint leaf1)
FP2=$(fingerprint leaf2)

# publish LEAF: the chain of LEAF, laid out the way kubelet updates a mounted Secret.
SOURCE=$W/source
# shellcheck source=scripts/lib/kubelet.sh
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/kubelet.sh"
publish() { kubelet_publish "$SOURCE" "$W/$1.key" "$W/root.pem" "$W/$1.pem" "$W/int.pem"; }
mkdir -p "$SOURCE"
publish leaf1

# ---------------------------------------------------------------------------------------------
# Server processes.

# start_server LOG ARGS...: starts certcast-server in the background; sets PORT from its log.
start_server() {
  local log=$1
  shift
  "$SERVER" --listen=127.0.0.1:0 --certificate=wildcard="$SOURCE" --health-listen=127.0.0.1:0 \
    "$@" >"$log" 2>&1 &
  local pid=$!
  SERVER_PIDS+=("$pid")
  LAST_PID=$pid
  if ! wait_until 20 grep -qs 'listening on port [0-9]' "$log"; then
    echo "--- server log:"; cat "$log"
    fail "certcast-server did not report its port within 20 s"
    exit 1
  fi
  PORT=$(sed -n 's/.*listening on port \([0-9][0-9]*\).*/\1/p' "$log" | head -n 1)
}

alive() { [[ -n $(ps -o stat= -p "$1" 2>/dev/null | grep -v Z) ]]; }
dead() { ! alive "$1"; }

# stop_server PID NAME: SIGTERM, then the process must exit with status 0 within 15 s.
stop_server() {
  local pid=$1 name=$2 status=0
  kill -TERM "$pid"
  if wait_until 15 dead "$pid"; then
    wait "$pid" || status=$?
    if [[ $status -eq 0 ]]; then pass "$name stops on SIGTERM with status 0"
    else fail "$name exited with status $status after SIGTERM"; fi
  else
    fail "$name did not exit within 15 s of SIGTERM"
  fi
}

# ---------------------------------------------------------------------------------------------
# TLS server with client certificates (no token options: the handshake requires one) and a policy.
LOG=$W/server.log
start_server "$LOG" --tls-cert="$W/serving.pem" --tls-key="$W/serving.key" --state-dir="$W/state" \
  --client-ca="$W/clientca.pem" --trust-domain=cluster.local --policy="$POLICY"
TLS_PID=$LAST_PID
URL=https://127.0.0.1:$PORT
echo "certcast-server (TLS) listening on port $PORT"

OUT=$W/out   # every response that must never hold a private key
mkdir -p "$OUT"
N=0
# as WHO: buf curl options for the client certificate WHO (admin, tenant, ...; none: no cert).
as() {
  [[ $1 == none ]] || echo "--cert=$W/$1.pem --key=$W/$1.key"
}
# call WHO METHOD [DATA]: unary call over TLS with WHO's client certificate; response in $RESP,
# stderr in $ERR, exit code in $RC.
call() {
  N=$((N + 1))
  RESP=$OUT/$N.json
  ERR=$OUT/$N.err
  RC=0
  local data=() who
  read -r -a who <<<"$(as "$1")"
  [[ $# -ge 3 ]] && data=(-d "$3")
  "$BUF" curl --timeout 20s --protocol grpc --cacert "$W/ca.pem" "${who[@]}" "${data[@]}" \
    "$URL/$2" >"$RESP" 2>"$ERR" || RC=$?
}
show() { echo "--- stdout:"; cat "$RESP"; echo "--- stderr:"; cat "$ERR"; }
# buf exits with the gRPC code shifted left by 3: not_found 5 -> 40, permission_denied 7 -> 56.
denied() { [[ $RC -eq 56 ]] && grep -q '"code": "permission_denied"' "$ERR"; }

# The handshake: without a client certificate, or with one from another CA, nothing works, not
# even reflection (with --client-ca and no token options the certificate is required by TLS).
for who in none stranger; do
  read -r -a opts <<<"$(as "$who")"
  RC=0
  "$BUF" curl --timeout 20s --protocol grpc --cacert "$W/ca.pem" "${opts[@]}" --list-methods \
    "$URL" >"$OUT/methods-$who.txt" 2>&1 || RC=$?
  if [[ $RC -ne 0 ]] && ! grep -q certcast.v1 "$OUT/methods-$who.txt"; then
    pass "TLS handshake fails without a valid client certificate ($who): list-methods exits $RC"
  else
    fail "list-methods with client certificate \"$who\" (exit $RC) should fail"; cat "$OUT/methods-$who.txt"
  fi
  call "$who" certcast.v1.Inspection/ListCertificates '{}'
  if [[ $RC -ne 0 && ! -s $RESP ]]; then
    pass "ListCertificates without a valid client certificate ($who) fails (exit $RC)"
  else
    fail "ListCertificates with client certificate \"$who\" (exit $RC) should fail"; show
  fi
done

# Reflection: needs no identity beyond the handshake (a certificate whose namespace the policy
# does not name is enough).
for who in tenant zzz; do
  read -r -a opts <<<"$(as "$who")"
  "$BUF" curl --timeout 20s --protocol grpc --cacert "$W/ca.pem" "${opts[@]}" --list-methods \
    "$URL" >"$OUT/methods-$who.txt" 2>&1 || true
done
if grep -qx certcast.v1.Inspection/ListCertificates "$OUT/methods-zzz.txt"; then
  pass "reflection is open to any verified client certificate (tenant-zzz)"
else
  fail "reflection with the tenant-zzz certificate"; cat "$OUT/methods-zzz.txt"
fi
cp "$OUT/methods-tenant.txt" "$OUT/methods.txt"
for method in certcast.v1.Distribution/Subscribe certcast.v1.Inspection/ListCertificates \
  certcast.v1.Inspection/GetCertificate certcast.v1.Inspection/ListClients \
  certcast.v1.Admin/Rollback grpc.health.v1.Health/Check; do
  if grep -qx "$method" "$OUT/methods.txt"; then pass "reflection lists $method"
  else fail "reflection does not list $method"; cat "$OUT/methods.txt"; fi
done

# ListCertificates.
call tenant certcast.v1.Inspection/ListCertificates '{}'
if [[ $RC -eq 0 && $(json "$RESP" certificates.0.name) == wildcard &&
      $(json "$RESP" certificates.0.version) == 1 &&
      $(json "$RESP" certificates.length) == 1 ]]; then
  pass 'ListCertificates (tenant-a) returns "wildcard" at version "1"'
else
  fail "ListCertificates (exit $RC)"; show
fi
if grep -q '"version": "1"' "$RESP"; then pass 'uint64 version prints as a JSON string'
else fail 'version is not a JSON string'; show; fi

# GetCertificate.
call tenant certcast.v1.Inspection/GetCertificate '{"name":"wildcard"}'
if [[ $RC -eq 0 && $(json "$RESP" current.fingerprint) == "$FP1" &&
      $(json "$RESP" current.version) == 1 ]]; then
  pass "GetCertificate fingerprint equals openssl's SHA-256 of the leaf ($FP1)"
else
  fail "GetCertificate (exit $RC, expected fingerprint $FP1)"; show
fi
if [[ $(json "$RESP" current.chainLength) == 2 && $(json "$RESP" current.hasCa) == true &&
      $(json "$RESP" current.dnsNames.0) == '*.example.test' ]]; then
  pass "GetCertificate describes the chain (2 certificates, ca.crt, *.example.test)"
else
  fail "GetCertificate chain details"; show
fi

# Unknown certificate: NOT_FOUND. buf exits with the gRPC code shifted left by 3 (5 << 3 = 40).
call tenant certcast.v1.Inspection/GetCertificate '{"name":"no-such-certificate"}'
if [[ $RC -eq 40 ]] && grep -q '"code": "not_found"' "$ERR"; then
  pass "GetCertificate of an unknown name fails with not_found"
else
  fail "GetCertificate of an unknown name (exit $RC, expected 40 / not_found)"; show
fi

# Inspection scoping: tenant-zzz may receive nothing, so it sees nothing.
call zzz certcast.v1.Inspection/ListCertificates '{}'
if [[ $RC -eq 0 && -z $(json "$RESP" certificates.length) ]]; then
  pass "ListCertificates (tenant-zzz) is empty: only certificates its namespace may receive"
else
  fail "ListCertificates as tenant-zzz (exit $RC) should be empty"; show
fi
call zzz certcast.v1.Inspection/GetCertificate '{"name":"wildcard"}'
if [[ $RC -eq 40 ]] && grep -q '"code": "not_found"' "$ERR"; then
  pass "GetCertificate (tenant-zzz) of a certificate it may not receive is not_found"
else
  fail "GetCertificate as tenant-zzz (exit $RC, expected 40 / not_found)"; show
fi

# Health: needs no identity beyond the handshake.
call zzz grpc.health.v1.Health/Check '{}'
if [[ $RC -eq 0 && $(json "$RESP" status) == SERVING ]]; then pass "grpc.health.v1.Health/Check is SERVING"
else fail "Health/Check (exit $RC)"; show; fi

# subscribe WHO OUTFILE HELLO PATTERN: bidi Subscribe with WHO's client certificate; sends
# HELLO, keeps the request stream open until OUTFILE matches PATTERN (or 20 s pass), then
# half-closes it. An empty PATTERN half-closes right after the hello (for refused streams: buf
# curl prints the status only once its request side is closed). Sets SUB_MATCHED and SUB_RC.
subscribe() {
  local out=$2 hello=$3 pattern=$4 fifo=$W/subscribe.fifo who
  read -r -a who <<<"$(as "$1")"
  rm -f "$fifo"
  mkfifo "$fifo"
  "$BUF" curl --timeout 30s --protocol grpc --cacert "$W/ca.pem" "${who[@]}" -d @- \
    "$URL/certcast.v1.Distribution/Subscribe" <"$fifo" >"$out" 2>"$out.err" &
  SUB_PID=$!
  exec 3>"$fifo"
  echo "$hello" >&3
  SUB_MATCHED=0
  if [[ -n $pattern ]]; then wait_until 20 grep -q "$pattern" "$out" && SUB_MATCHED=1; fi
  exec 3>&-   # half-close: the server then ends the stream with OK
  SUB_RC=0
  wait "$SUB_PID" || SUB_RC=$?
  SUB_PID=""
}

hello() {  # hello CLIENT_ID VERSION FINGERPRINT [NAMESPACE]
  printf '{"hello":{"clientId":"%s","namespace":"%s","certificates":[{"name":"wildcard","version":"%s","fingerprint":"%s"}]}}' \
    "$1" "${4:-tenant-a}" "$2" "$3"
}

# A client that already holds version 1 gets an inSync note, no material.
subscribe tenant "$OUT/subscribe-insync.json" "$(hello buf-in-sync 1 "$FP1")" '"inSync"'
if [[ $SUB_MATCHED -eq 1 && $SUB_RC -eq 0 ]] && grep -q "\"fingerprint\": \"$FP1\"" "$OUT/subscribe-insync.json" &&
   ! grep -q '"update"' "$OUT/subscribe-insync.json"; then
  pass "Subscribe with a hello holding version 1 gets inSync (and the stream ends cleanly)"
else
  fail "Subscribe in sync (matched=$SUB_MATCHED, exit $SUB_RC)"
  cat "$OUT/subscribe-insync.json" "$OUT/subscribe-insync.json.err"
fi

# A client holding nothing gets the full material (kept out of $OUT: it carries the key).
subscribe tenant "$W/subscribe-update.json" "$(hello buf-empty 0 "")" '"update"'
if [[ $SUB_MATCHED -eq 1 && $SUB_RC -eq 0 ]] && grep -q '"privateKeyPem"' "$W/subscribe-update.json" &&
   grep -q "\"fingerprint\": \"$FP1\"" "$W/subscribe-update.json"; then
  pass "Subscribe (tenant-a) with an empty hello gets an update with version 1's material"
else
  fail "Subscribe with an empty hello (matched=$SUB_MATCHED, exit $SUB_RC)"
  sed 's/\("privateKeyPem": \)".*"/\1"<redacted>"/' "$W/subscribe-update.json"
  cat "$W/subscribe-update.json.err"
fi

# Denials: a namespace the policy does not name, and a hello naming another namespace than the
# identity's. The stream ends with permission_denied before any material is sent.
no_key() { ! grep -qE 'PRIVATE KEY|privateKeyPem' "$1" "$1.err"; }
# refused OUTFILE: the stream ended with permission_denied and sent no key.
refused() {
  [[ $SUB_RC -eq 56 ]] && grep -q '"code": "permission_denied"' "$1.err" && no_key "$1"
}
subscribe zzz "$OUT/subscribe-zzz.json" "$(hello buf-zzz 0 "" tenant-zzz)" ""
if refused "$OUT/subscribe-zzz.json"; then
  pass "Subscribe (tenant-zzz, not in the policy) ends with permission_denied and holds no key"
else
  fail "Subscribe as tenant-zzz (exit $SUB_RC, expected 56 / permission_denied and no key)"
  sed 's/\("privateKeyPem": \)".*"/\1"<redacted>"/' "$OUT/subscribe-zzz.json"
  cat "$OUT/subscribe-zzz.json.err"
fi
subscribe tenant "$OUT/subscribe-mismatch.json" "$(hello buf-mismatch 0 "" tenant-b)" ""
if refused "$OUT/subscribe-mismatch.json"; then
  pass "Subscribe with a tenant-a identity and a hello for tenant-b ends with permission_denied"
else
  fail "Subscribe with a mismatched namespace (exit $SUB_RC, expected 56 / permission_denied)"
  sed 's/\("privateKeyPem": \)".*"/\1"<redacted>"/' "$OUT/subscribe-mismatch.json"
  cat "$OUT/subscribe-mismatch.json.err"
fi

call tenant certcast.v1.Inspection/ListClients '{}'
if [[ $RC -eq 0 ]] && grep -q '"clientId": "buf-in-sync"' "$RESP" && grep -q '"clientId": "buf-empty"' "$RESP" &&
   ! grep -qE 'buf-zzz|buf-mismatch' "$RESP"; then
  pass "ListClients (tenant-a) shows both buf clients, and no denied stream"
else
  fail "ListClients (exit $RC)"; show
fi
call tenant-b certcast.v1.Inspection/ListClients '{}'
if [[ $RC -eq 0 && -z $(json "$RESP" clients.length) ]]; then
  pass "ListClients (tenant-b) does not show tenant-a's clients"
else
  fail "ListClients as tenant-b (exit $RC) should be empty"; show
fi
call tenant-b certcast.v1.Inspection/ListClients '{"namespace":"tenant-a"}'
if denied; then pass "ListClients (tenant-b) of namespace tenant-a is permission_denied"
else fail "ListClients as tenant-b of tenant-a (exit $RC, expected 56 / permission_denied)"; show; fi
call admin certcast.v1.Inspection/ListClients '{}'
if [[ $RC -eq 0 ]] && grep -q '"clientId": "buf-in-sync"' "$RESP" &&
   grep -q '"identity": "spiffe://cluster.local/ns/tenant-a/sa/certcast-client"' "$RESP"; then
  pass "ListClients (admin) shows tenant-a's clients with their SPIFFE identity"
else
  fail "ListClients as admin (exit $RC)"; show
fi

# Rotation: a new leaf arrives the kubelet way; version 2 must appear.
publish leaf2
version_is() {
  call tenant certcast.v1.Inspection/GetCertificate '{"name":"wildcard"}'
  [[ $RC -eq 0 && $(json "$RESP" current.version) == "$1" ]]
}
if wait_until 20 version_is 2 && [[ $(json "$RESP" current.fingerprint) == "$FP2" ]]; then
  pass "rotation: GetCertificate shows version 2 with the new leaf's fingerprint"
else
  fail "rotation: version 2 did not appear within 20 s"; show
fi

# Rollback: admins only. A tenant is refused; the admin rolls back to version 1, which is
# republished as version 3 and pinned.
call tenant certcast.v1.Admin/Rollback '{"name":"wildcard","version":"1"}'
if denied; then pass "Admin/Rollback by a tenant is permission_denied"
else fail "Admin/Rollback by a tenant (exit $RC, expected 56 / permission_denied)"; show; fi
if grep -q 'audit .*method=Admin/Rollback .*decision=denied reason=not_admin' "$LOG"; then
  pass "the refused Admin/Rollback is in the audit log"
else
  fail "no audit line for the refused Admin/Rollback"; grep audit "$LOG" || true
fi
call admin certcast.v1.Admin/Rollback '{"name":"wildcard","version":"1"}'
if [[ $RC -eq 0 && $(json "$RESP" version) == 3 && $(json "$RESP" rolledBackFrom) == 1 &&
      $(json "$RESP" fingerprint) == "$FP1" ]]; then
  pass "Admin/Rollback (admin) to version 1 publishes version 3 with version 1's fingerprint"
else
  fail "Admin/Rollback (exit $RC)"; show
fi
call tenant certcast.v1.Inspection/GetCertificate '{"name":"wildcard"}'
if [[ $RC -eq 0 && $(json "$RESP" pin.pinned) == true && $(json "$RESP" current.version) == 3 ]]; then
  pass "GetCertificate shows version 3 pinned"
else
  fail "GetCertificate after rollback (exit $RC)"; show
fi

# No private key in any inspection output or in the server's log.
if grep -rl 'PRIVATE KEY' "$OUT" "$LOG" >/dev/null; then
  fail "private key material found in: $(grep -rl 'PRIVATE KEY' "$OUT" "$LOG" | tr '\n' ' ')"
else
  pass "no output of buf curl (except the Subscribe update) and no log line holds a PRIVATE KEY"
fi

stop_server "$TLS_PID" "TLS server"

# ---------------------------------------------------------------------------------------------
# TLS server without --policy: it hands out nothing.
NOPOLICY_LOG=$W/no-policy.log
start_server "$NOPOLICY_LOG" --tls-cert="$W/serving.pem" --tls-key="$W/serving.key" \
  --state-dir="$W/state-no-policy" --client-ca="$W/clientca.pem" --trust-domain=cluster.local
NOPOLICY_PID=$LAST_PID
URL=https://127.0.0.1:$PORT
echo "certcast-server (TLS, no --policy) listening on port $PORT"
subscribe tenant "$OUT/subscribe-no-policy.json" "$(hello buf-no-policy 0 "")" ""
if refused "$OUT/subscribe-no-policy.json"; then
  pass "without --policy, Subscribe (tenant-a) ends with permission_denied and holds no key"
else
  fail "Subscribe without --policy (exit $SUB_RC, expected 56 / permission_denied)"
  sed 's/\("privateKeyPem": \)".*"/\1"<redacted>"/' "$OUT/subscribe-no-policy.json"
  cat "$OUT/subscribe-no-policy.json.err"
fi
if grep -rl 'PRIVATE KEY' "$OUT" "$NOPOLICY_LOG" >/dev/null; then
  fail "private key material found in: $(grep -rl 'PRIVATE KEY' "$OUT" "$NOPOLICY_LOG" | tr '\n' ' ')"
fi
stop_server "$NOPOLICY_PID" "TLS server without --policy"

# ---------------------------------------------------------------------------------------------
# Plaintext server (--insecure): h2c with prior knowledge.
PLAIN_LOG=$W/plain.log
start_server "$PLAIN_LOG" --insecure --state-dir="$W/state-plain"
PLAIN_PID=$LAST_PID
echo "certcast-server (plaintext) listening on port $PORT"
if "$BUF" curl --timeout 20s --protocol grpc --http2-prior-knowledge --list-methods \
     "http://127.0.0.1:$PORT" >"$W/plain-methods.txt" 2>&1 &&
   grep -qx certcast.v1.Inspection/ListCertificates "$W/plain-methods.txt"; then
  pass "plaintext (--insecure): buf curl --http2-prior-knowledge lists methods"
else
  fail "plaintext list-methods"; cat "$W/plain-methods.txt"
fi
if "$BUF" curl --timeout 20s --protocol grpc --http2-prior-knowledge \
     "http://127.0.0.1:$PORT/certcast.v1.Inspection/ListCertificates" >"$W/plain-list.json" 2>&1 &&
   [[ $(json "$W/plain-list.json" certificates.0.version) == 1 &&
      $(json "$W/plain-list.json" certificates.0.fingerprint) == "$FP2" ]]; then
  pass "plaintext: ListCertificates shows the source's current leaf as version 1 of a fresh state"
else
  fail "plaintext ListCertificates"; cat "$W/plain-list.json"
fi
stop_server "$PLAIN_PID" "plaintext server"

echo
if [[ $FAILURES -eq 0 ]]; then
  echo "PASS: buf curl interop: all checks passed"
else
  echo "FAIL: buf curl interop: $FAILURES check(s) failed"
  exit 1
fi
