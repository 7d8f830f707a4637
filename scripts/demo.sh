#!/usr/bin/env bash
# certcast end to end in under a minute: builds certcast-server and certcast-client, mints a
# throwaway wildcard certificate and SPIFFE client certificates, serves the wildcard over mTLS
# with a policy (namespaces tenant-* may receive it; one operator identity is admin), walks
# through inspection and a raw Subscribe stream with `buf curl`, then runs three certcast-client
# daemons (namespaces tenant-a, tenant-b, tenant-c, each with its own identity) that write the
# certificate in kubelet layout, run a reload hook and ACK. It rotates the wildcard and rolls it
# back, waiting each time until the whole fleet has acknowledged the new version; shows a client
# the policy refuses; and revokes tenant-c by editing the policy. On a fresh Debian 12 machine run
# it as root (or with sudo available): it first installs what is missing
# (scripts/install-deps.sh, idempotent).
# Everything it creates lives in .demo/, which is wiped at the start; every process it starts is
# stopped when it ends, also on failure or Ctrl-C. Private keys are never printed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BUF="$ROOT/.tools/node_modules/.bin/buf"
SERVER=build/server/certcast-server
CLIENT=build/client/certcast-client
DEMO=.demo   # relative to $ROOT, so that the commands shown read well
TENANTS=(tenant-a tenant-b tenant-c)
SERVER_NAME=certcast.certcast-system.svc   # a DNS SAN of the serving certificate

"$ROOT/scripts/install-deps.sh"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCERTCAST_BUF="$BUF" >/dev/null
cmake --build build -j2 --target certcast-server certcast-client

SERVER_PID=""
STREAM_PID=""
REDACT_PID=""
INTRUDER_PID=""
CLIENT_PIDS=()
# exited PID: true once PID has ended (gone, or a zombie waiting to be reaped).
exited() { [[ ! -e /proc/$1/stat ]] || [[ $(sed 's/.*) //' "/proc/$1/stat") == Z* ]]; }
# stop PID [SIGNAL]: signals PID, gives it 10 s to exit, then kills it; reaps it either way.
stop() {
  local pid=$1 i
  kill -"${2:-TERM}" "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do exited "$pid" && break; sleep 0.1; done
  exited "$pid" || kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  trap - EXIT INT TERM HUP
  exec 3>&- || true
  for pid in $STREAM_PID $REDACT_PID $INTRUDER_PID "${CLIENT_PIDS[@]}" $SERVER_PID; do stop "$pid"; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

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

heading "Minting throwaway CAs, a *.example.test wildcard chain and client identities in .demo/"
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
CLIENT_EXT='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nauthorityKeyIdentifier=keyid'
WILDCARD_SAN='subjectAltName=DNS:*.example.test,DNS:example.test'
issue ca "/CN=certcast demo serving CA" "" "$CA_EXT"
issue serving "/CN=$SERVER_NAME" ca "$LEAF_EXT\nsubjectAltName=DNS:$SERVER_NAME,DNS:localhost,IP:127.0.0.1"
issue root "/CN=Example Test Root CA" "" "$CA_EXT"
issue intermediate "/CN=Example Test Intermediate CA" root "$INT_EXT"
issue wildcard-1 "/CN=*.example.test" intermediate "$LEAF_EXT\n$WILDCARD_SAN"
issue wildcard-2 "/CN=*.example.test" intermediate "$LEAF_EXT\n$WILDCARD_SAN"
# Client identities: SPIFFE IDs (URI SANs) signed by the client CA, which the server trusts
# through --client-ca. In a cluster, cert-manager or projected ServiceAccount tokens do this.
issue client-ca "/CN=certcast demo client CA" "" "$CA_EXT"
spiffe() { echo "spiffe://cluster.local/ns/$1/sa/$2"; }
client_identity() {  # client_identity NAME NAMESPACE SERVICEACCOUNT
  issue "$1" "/CN=$3.$2" client-ca "$CLIENT_EXT\nsubjectAltName=URI:$(spiffe "$2" "$3")"
}
client_identity operator certcast-system operator
for ns in "${TENANTS[@]}" intruder; do client_identity "client-$ns" "$ns" certcast-client; done
echo "serving certificate: .demo/serving.pem ($SERVER_NAME, localhost, 127.0.0.1), trusted through .demo/ca.pem"
echo "wildcard chain:      Example Test Root CA -> Intermediate -> *.example.test (two leaves)"
echo "client identities:   signed by .demo/client-ca.pem (the server's --client-ca)"
for name in operator "${TENANTS[@]/#/client-}" client-intruder; do
  printf '  .demo/%-22s %s\n' "$name.pem" \
    "$(openssl x509 -noout -ext subjectAltName -in "$DEMO/$name.pem" | sed -n 's/^ *URI://p')"
done

# publish LEAF: the wildcard chain of LEAF, laid out like kubelet updates a mounted Secret.
SOURCE="$DEMO/wildcard"
# shellcheck source=scripts/lib/kubelet.sh
source "$ROOT/scripts/lib/kubelet.sh"
publish() {
  kubelet_publish "$SOURCE" "$DEMO/$1.key" "$DEMO/root.pem" "$DEMO/$1.pem" "$DEMO/intermediate.pem"
}
mkdir -p "$SOURCE"
publish wildcard-1
echo "source directory .demo/wildcard (kubelet layout of a mounted kubernetes.io/tls Secret):"
(cd "$SOURCE" && for entry in ..data tls.crt tls.key ca.crt; do
  printf '  %-8s -> %s\n' "$entry" "$(readlink "$entry")"
done)

heading "The policy: namespaces tenant-* may receive the wildcard; the operator is admin"
POLICY="$DEMO/policy.yaml"
# write_policy NAMESPACES: replaces the policy file in one rename, as a ConfigMap update would.
write_policy() {
  cat >"$POLICY.tmp" <<EOF
certificates:
  wildcard:
    namespaces: $1
admins:
  - $(spiffe certcast-system operator)
EOF
  mv -f "$POLICY.tmp" "$POLICY"
}
write_policy '["tenant-*"]'
echo "\$ cat $POLICY"
sed 's/^/  /' "$POLICY"

heading "Starting certcast-server over mTLS with the policy (state in .demo/state)"
LOG="$DEMO/server.log"
SERVER_ARGS=(--listen=127.0.0.1:0 --tls-cert="$DEMO/serving.pem" --tls-key="$DEMO/serving.key"
  --client-ca="$DEMO/client-ca.pem" --trust-domain=cluster.local --policy="$POLICY"
  --certificate=wildcard="$SOURCE" --state-dir="$DEMO/state")
echo "\$ $SERVER ${SERVER_ARGS[*]} 2>$LOG &"
"$SERVER" "${SERVER_ARGS[@]}" >"$LOG" 2>&1 &
SERVER_PID=$!
wait_until 20 grep -q 'listening on port [0-9]' "$LOG" || { cat "$LOG"; exit 1; }
PORT=$(sed -n 's/.*listening on port \([0-9][0-9]*\).*/\1/p' "$LOG" | head -n 1)
URL="https://127.0.0.1:$PORT"
cat "$LOG"

# buf curl as the operator (admin) or as a tenant client: TLS options and client certificate.
OPERATOR=(--cacert "$DEMO/ca.pem" --cert "$DEMO/operator.pem" --key "$DEMO/operator.key")
AS_OPERATOR="--cacert .demo/ca.pem --cert .demo/operator.pem --key .demo/operator.key"
# call METHOD [JSON]: one unary call as the operator, echoed the way an operator would type it.
call() {
  local data=()
  [[ $# -ge 2 ]] && data=(-d "$2")
  echo "\$ buf curl --protocol grpc $AS_OPERATOR ${2:+-d '$2' }$URL/$1"
  "$BUF" curl --timeout 20s --protocol grpc "${OPERATOR[@]}" "${data[@]}" "$URL/$1" | redact
}

heading "Services, through server reflection (every caller must present a client certificate)"
echo "\$ buf curl --protocol grpc $AS_OPERATOR --list-services $URL"
"$BUF" curl --timeout 20s --protocol grpc "${OPERATOR[@]}" --list-services "$URL"

heading "What the server distributes"
call certcast.v1.Inspection/ListCertificates

heading "One certificate in detail: version 1 (no private key in inspection output)"
call certcast.v1.Inspection/GetCertificate '{"name":"wildcard"}'

heading "The protocol by hand: a raw Subscribe stream with tenant-a's identity, holding nothing yet"
echo "(the hello's namespace must be the identity's namespace: tenant-a)"
FIFO="$DEMO/stream.in"
STREAM_OUT="$DEMO/stream.out"
mkfifo "$FIFO"
HELLO='{"hello":{"clientId":"buf-curl","namespace":"tenant-a","certificates":[{"name":"wildcard","version":"0","fingerprint":""}]}}'
echo "\$ buf curl --protocol grpc --cacert .demo/ca.pem --cert .demo/client-tenant-a.pem --key .demo/client-tenant-a.key \\"
echo "    -d @- $URL/certcast.v1.Distribution/Subscribe"
echo "  stdin: $HELLO"
# The stream's output goes through redact before it touches the disk: no key bytes in .demo/.
exec 4> >(redact >"$STREAM_OUT")
REDACT_PID=$!
"$BUF" curl --protocol grpc --cacert "$DEMO/ca.pem" --cert "$DEMO/client-tenant-a.pem" \
  --key "$DEMO/client-tenant-a.key" -d @- \
  "$URL/certcast.v1.Distribution/Subscribe" <"$FIFO" >&4 2>&1 &
STREAM_PID=$!
exec 4>&-
exec 3>"$FIFO"
echo "$HELLO" >&3
wait_until 20 message_after 1 '"update"'
cat "$STREAM_OUT"
NONCE=$(sed -n 's/.*"nonce": "\([0-9a-f]*\)".*/\1/p' "$STREAM_OUT" | tail -n 1)
ACK="{\"ack\":{\"name\":\"wildcard\",\"version\":\"1\",\"nonce\":\"$NONCE\"}}"
echo "  stdin: $ACK   (claims version 1 applied; it stays at 1 from here on)"
echo "$ACK" >&3
SHOWN=$(wc -l <"$STREAM_OUT")

# Fleet state from Inspection/ListClients, formatted with node (buf needs it anyway). As the
# operator (an admin) it shows every namespace; with a tenant's certificate only that tenant's.
list_clients() {  # list_clients [BUF_CURL_TLS_OPTIONS...]
  (($#)) || set -- "${OPERATOR[@]}"
  "$BUF" curl --timeout 20s --protocol grpc "$@" "$URL/certcast.v1.Inspection/ListClients"
}
# fleet_table [BUF_CURL_TLS_OPTIONS...]: one row per client and certificate; uint64 fields are
# JSON strings, and fields at their default (0, "", false) are left out of the JSON.
fleet_table() {
  list_clients "$@" | node -e '
    const clients = JSON.parse(require("fs").readFileSync(0, "utf8")).clients || [];
    const rows = [["NAMESPACE", "CLIENT", "CONNECTED", "CERTIFICATE", "SENT", "ACKED", "LAST ERROR / HOOK WARNING"]];
    clients.sort((x, y) => (x.namespace + x.clientId).localeCompare(y.namespace + y.clientId));
    for (const c of clients)
      for (const k of c.certificates || [])
        rows.push([c.namespace, c.clientId, c.connected ? "yes" : "no", k.name, k.sentVersion || "0",
                   k.acknowledgedVersion || "0", k.lastError || k.hookWarning || "-"]);
    const widths = rows[0].map((_, i) => Math.max(...rows.map(r => r[i].length)));
    for (const r of rows) console.log("  " + r.map((v, i) => v.padEnd(widths[i])).join("  ").trimEnd());'
}
# acknowledged_by_all VERSION: every daemon is connected and has acknowledged VERSION.
acknowledged_by_all() {
  list_clients 2>/dev/null | node -e '
    const [version, ...ids] = process.argv.slice(1);
    const clients = JSON.parse(require("fs").readFileSync(0, "utf8")).clients || [];
    const done = id => clients.some(c => `${c.namespace}/${c.clientId}` === id && c.connected &&
        (c.certificates || []).some(k => k.name === "wildcard" && k.acknowledgedVersion === version));
    process.exit(ids.every(done) ? 0 : 1);' "$1" "${CLIENT_IDS[@]}"
}

heading "Three certcast-client daemons, one per tenant namespace, each with its own identity"
CLIENT_IDS=()
for ns in "${TENANTS[@]}"; do
  id="client-${ns#tenant-}"
  CLIENT_IDS+=("$ns/$id")
  out="$DEMO/$ns"
  mkdir -p "$out"
  args=(--server="127.0.0.1:$PORT" --tls-server-name="$SERVER_NAME" --ca="$DEMO/ca.pem"
    --tls-cert="$DEMO/client-$ns.pem" --tls-key="$DEMO/client-$ns.key"
    --namespace="$ns" --client-id="$id" --certificate=wildcard --output-dir="$out"
    --state-dir="$DEMO/state-${ns#tenant-}")
  hook="echo \"reloaded \$CERTCAST_CERTIFICATE v\$CERTCAST_VERSION\" >> $out/hook.log"
  echo "\$ $CLIENT ${args[*]} \\"
  echo "    --on-update='$hook' 2>$DEMO/client-$ns.log &"
  "$CLIENT" "${args[@]}" --on-update="$hook" >"$DEMO/client-$ns.log" 2>&1 &
  CLIENT_PIDS+=($!)
done
echo "waiting until ListClients shows all three acknowledging version 1 ..."
wait_until 30 acknowledged_by_all 1
fleet_table

heading "What a client wrote: .demo/tenant-a/wildcard/ (the kubelet layout of a secret volume)"
FILES="$DEMO/tenant-a/wildcard"
echo "\$ ls -la $FILES/ $FILES/..data/"
ls -la "$FILES/" "$FILES/..data/"
echo "\$ openssl x509 -noout -subject -fingerprint -sha256 -in $FILES/tls.crt"
openssl x509 -noout -subject -fingerprint -sha256 -in "$FILES/tls.crt"
FINGERPRINT_1=$(openssl x509 -noout -fingerprint -sha256 -in "$FILES/tls.crt")

heading "Rotation: cert-manager renews, kubelet swaps ..data to a new leaf"
publish wildcard-2
(cd "$SOURCE" && printf '  ..data -> %s\n' "$(readlink ..data)")
echo "waiting until all three clients acknowledge version 2 ..."
wait_until 30 acknowledged_by_all 2
call certcast.v1.Inspection/GetCertificate '{"name":"wildcard"}'

heading "The raw stream received version 2 as well, without asking"
wait_until 20 message_after "$((SHOWN + 1))" '"update"'
tail -n +"$((SHOWN + 1))" "$STREAM_OUT"

heading "Fleet state (Inspection/ListClients): the daemons applied 2, buf-curl only claimed 1"
fleet_table
echo "the same call with tenant-b's certificate sees only tenant-b (inspection is scoped):"
echo "\$ buf curl --protocol grpc --cacert .demo/ca.pem --cert .demo/client-tenant-b.pem --key .demo/client-tenant-b.key $URL/certcast.v1.Inspection/ListClients"
fleet_table --cacert "$DEMO/ca.pem" --cert "$DEMO/client-tenant-b.pem" --key "$DEMO/client-tenant-b.key"
echo "tenant-a now holds:"
(cd "$FILES" && printf '  ..data -> %s\n' "$(readlink ..data)")
openssl x509 -noout -subject -fingerprint -sha256 -in "$FILES/tls.crt" | sed 's/^/  /'

heading "Hook logs: each client ran its --on-update command once per applied version"
for ns in "${TENANTS[@]}"; do
  echo "$DEMO/$ns/hook.log:"
  sed 's/^/  /' "$DEMO/$ns/hook.log"
done

heading "Rollback to version 1: republished as version 3 and pinned"
call certcast.v1.Admin/Rollback '{"name":"wildcard","version":"1"}'
echo "waiting until all three clients acknowledge version 3 ..."
wait_until 30 acknowledged_by_all 3
call certcast.v1.Inspection/ListCertificates
fleet_table
FINGERPRINT_3=$(openssl x509 -noout -fingerprint -sha256 -in "$FILES/tls.crt")
echo "tenant-a holds version 1's leaf again: $FINGERPRINT_3"
[[ $FINGERPRINT_3 == "$FINGERPRINT_1" ]] || { echo "demo: tenant-a does not hold version 1's leaf" >&2; exit 1; }
for ns in "${TENANTS[@]}"; do
  printf '%s/hook.log: %s\n' "$DEMO/$ns" "$(tail -n 1 "$DEMO/$ns/hook.log")"
done

heading "A client the policy refuses: valid certificate for namespace intruder, not in tenant-*"
INTRUDER_LOG="$DEMO/client-intruder.log"
args=(--server="127.0.0.1:$PORT" --tls-server-name="$SERVER_NAME" --ca="$DEMO/ca.pem"
  --tls-cert="$DEMO/client-intruder.pem" --tls-key="$DEMO/client-intruder.key"
  --namespace=intruder --client-id=client-intruder --certificate=wildcard
  --output-dir="$DEMO/intruder" --state-dir="$DEMO/state-intruder")
echo "\$ $CLIENT ${args[*]} 2>$INTRUDER_LOG &"
"$CLIENT" "${args[@]}" >"$INTRUDER_LOG" 2>&1 &
INTRUDER_PID=$!
wait_until 20 grep -q 'refused' "$INTRUDER_LOG"
echo "$INTRUDER_LOG (the client retries with backoff):"
grep -m 1 'refused' "$INTRUDER_LOG" | sed 's/^/  /'
echo "server audit log:"
grep -m 1 'audit .*method=Subscribe .*intruder' "$LOG" | sed 's/^/  /'
stop "$INTRUDER_PID"
INTRUDER_PID=""
if [[ -e $DEMO/intruder ]]; then
  echo "demo: the refused client wrote $DEMO/intruder" >&2
  exit 1
fi
echo "stopped it; it never wrote anything: $DEMO/intruder does not exist"

heading "Revoking tenant-c: the policy now names only tenant-a and tenant-b, then SIGHUP"
write_policy '["tenant-a", "tenant-b"]'
echo "\$ cat $POLICY"
sed 's/^/  /' "$POLICY"
echo "\$ kill -HUP $SERVER_PID   # (the server also notices the change by itself within seconds)"
kill -HUP "$SERVER_PID"
wait_until 20 grep -q 'refused' "$DEMO/client-tenant-c.log"
wait_until 20 grep -q 'SIGHUP' "$LOG"
echo "$DEMO/client-tenant-c.log:"
grep -m 1 'refused' "$DEMO/client-tenant-c.log" | sed 's/^/  /'
echo "server log:"
for pattern in 'policy reloaded' 'audit .*tenant-c' 'SIGHUP'; do
  grep -E "$pattern" "$LOG" | tail -n 1 | sed 's/^/  /'
done
echo "tenant-c keeps its last files (no --delete-on-revoke), so its TLS keeps working:"
(cd "$DEMO/tenant-c/wildcard" && printf '  ..data -> %s\n' "$(readlink ..data)" &&
  openssl x509 -noout -subject -fingerprint -sha256 -in tls.crt | sed 's/^/  /')
[[ -s $DEMO/tenant-c/wildcard/tls.key ]] || { echo "demo: tenant-c lost its files" >&2; exit 1; }
fleet_table

heading "Stopping: SIGTERM to the clients, the raw stream closes, SIGTERM to the server"
for i in "${!CLIENT_PIDS[@]}"; do
  kill -TERM "${CLIENT_PIDS[$i]}"
  status=0
  wait "${CLIENT_PIDS[$i]}" || status=$?
  echo "certcast-client (${TENANTS[$i]}) exited with status $status"
done
CLIENT_PIDS=()
exec 3>&-
wait "$STREAM_PID" || true
wait "$REDACT_PID" 2>/dev/null || true
STREAM_PID="" REDACT_PID=""
kill -TERM "$SERVER_PID"
status=0
wait "$SERVER_PID" || status=$?
SERVER_PID=""
echo "certcast-server exited with status $status"
echo "client log (.demo/client-tenant-a.log):"
sed 's/^/  /' "$DEMO/client-tenant-a.log"
echo "server log (.demo/server.log):"
sed 's/^/  /' "$LOG"
heading "Done. Run scripts/test.sh for the full test suite."
