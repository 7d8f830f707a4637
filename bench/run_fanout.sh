#!/usr/bin/env bash
# Fan-out benchmark of certcast-server: server RSS per idle stream and publish-to-every-client
# latency / server CPU per rotation round. Builds nothing: expects BUILD (default ./build) to
# hold server/certcast-server and bench/certcast-fanout-bench, e.g.
#   cmake -S . -B build && cmake --build build -j2 --target certcast-server certcast-fanout-bench
#
# Parameters, as environment variables or KEY=VALUE arguments:
#   CLIENTS=1000      streams (one HTTP/2 connection each unless CONNECTIONS is set)
#   CONNECTIONS=      connections (default: one per client)
#   ROUNDS=5          rotation rounds
#   TLS=0             1: serve TLS (server certificate for 127.0.0.1 from the minted CA)
#   QUIET=50ms        server --quiet-period (the server's default is 200ms)
#   ACK=1             clients Ack every update
#   SINGLE=1          also run the rotation rounds with one client first (rotation-to-push latency)
#   IDLE=1            measure server RSS with 0 and CLIENTS idle streams
#   PERF=             file: record `perf` on the server during the CLIENTS rotation run, write a
#                     flat `perf report` to this file and keep the samples in FILE.data
#   PERF_CALLGRAPH=fp `perf record --call-graph` mode (dwarf gives usable stacks through the
#                     Debian libraries, which have no frame pointers)
#   KEEP=0            1: keep the work directory (server log, certificates)
#   SERVER_ARGS=      extra server flags
#   SERVER_BIN=, BENCH_BIN=  override the binaries (default: under BUILD)
# Example: bench/run_fanout.sh CLIENTS=1000 TLS=1
set -euo pipefail

for arg in "$@"; do
  case "$arg" in
    *=*) export "${arg?}" ;;
    *) echo "usage: $0 [KEY=VALUE]...  (see the header of this script)" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
CLIENTS=${CLIENTS:-1000}
CONNECTIONS=${CONNECTIONS:-}
ROUNDS=${ROUNDS:-5}
TLS=${TLS:-0}
QUIET=${QUIET:-50ms}
ACK=${ACK:-1}
SINGLE=${SINGLE:-1}
IDLE=${IDLE:-1}
PERF=${PERF:-}
PERF_CALLGRAPH=${PERF_CALLGRAPH:-fp}
KEEP=${KEEP:-0}
SERVER_ARGS=${SERVER_ARGS:-}

SERVER_BIN=${SERVER_BIN:-$BUILD/server/certcast-server}
BENCH_BIN=${BENCH_BIN:-$BUILD/bench/certcast-fanout-bench}
for bin in "$SERVER_BIN" "$BENCH_BIN"; do
  [[ -x $bin ]] || { echo "missing $bin: build it first" >&2; exit 2; }
done

ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d /tmp/certcast-fanout.XXXXXX)
SERVER_PID=
PERF_PID=
cleanup() {
  if [[ -n $PERF_PID ]]; then kill -INT "$PERF_PID" 2>/dev/null || true; fi
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $KEEP == 1 ]]; then echo "# work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- certificates: CA -> intermediate -> *.example.test leaves (RSA-2048: a ~5 KB update) ---
cd "$WORK"
cat > ext.cnf <<'EOF'
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[intermediate]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[leaf]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:*.example.test, DNS:example.test
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1, DNS:localhost
EOF
genkey() { openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$1" 2>/dev/null; }
genkey ca.key
openssl req -x509 -new -key ca.key -subj "/CN=certcast bench root CA" -days 30 \
  -extensions ca -config ext.cnf -out ca.crt
genkey int.key
openssl req -new -key int.key -subj "/CN=certcast bench intermediate" -out int.csr
openssl x509 -req -in int.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
  -extfile ext.cnf -extensions intermediate -out int.crt 2>/dev/null
# mint_leaf DIR: a fresh key and *.example.test leaf; DIR/{tls.crt (leaf+intermediate),tls.key,ca.crt}
mint_leaf() {
  mkdir -p "$1"
  genkey "$1/tls.key"
  openssl req -new -key "$1/tls.key" -subj "/CN=*.example.test" -out "$1/leaf.csr"
  openssl x509 -req -in "$1/leaf.csr" -CA int.crt -CAkey int.key -CAcreateserial -days 7 \
    -extfile ext.cnf -extensions leaf -out "$1/leaf.crt" 2>/dev/null
  cat "$1/leaf.crt" int.crt > "$1/tls.crt"
  cp ca.crt "$1/ca.crt"
  rm -f "$1/leaf.csr" "$1/leaf.crt"
}
echo "# minting certificates in $WORK"
# The source directory in the kubelet layout: ..data -> ..round_0, top-level symlinks into ..data.
mkdir -p source
mint_leaf "source/..round_0"
ln -s ..round_0 source/..data
for f in tls.crt tls.key ca.crt; do ln -s "..data/$f" "source/$f"; done
for set in single fleet; do
  for ((r = 1; r <= ROUNDS; r++)); do mint_leaf "rounds-$set/$r"; done
done
genkey server.key
openssl req -new -key server.key -subj "/CN=127.0.0.1" -out server.csr
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 7 \
  -extfile ext.cnf -extensions server -out server.crt 2>/dev/null

# --- server ---
SECURITY=(--insecure)
BENCH_TLS=()
if [[ $TLS == 1 ]]; then
  # The server is secure by default: a policy lets namespace "bench" receive "bench", and every
  # bench stream proves itself with one static token (so the per-identity stream limit is
  # lifted: this measures fan-out, not that limit).
  head -c 32 /dev/urandom | base64 | tr -d '\n' > "$WORK/bench.token"
  printf 'certificates:\n  bench:\n    namespaces: ["bench"]\nadmins: ["static:bench/bench"]\n' \
    > "$WORK/policy.yaml"
  printf 'tokens:\n  - sha256: %s\n    namespace: bench\n    name: bench\n' \
    "$(sha256sum < "$WORK/bench.token" | cut -d' ' -f1)" > "$WORK/tokens.yaml"
  SECURITY=(--tls-cert="$WORK/server.crt" --tls-key="$WORK/server.key" --policy="$WORK/policy.yaml"
            --token-map="$WORK/tokens.yaml" --max-streams-per-identity=1000000)
  BENCH_TLS=(--tls-ca="$WORK/ca.crt" --token-file="$WORK/bench.token")
fi
# Heartbeats every 10 minutes, so no heartbeat fan-out lands inside a measured round.
# shellcheck disable=SC2086
"$SERVER_BIN" --listen=127.0.0.1:0 "${SECURITY[@]}" --certificate=bench="$WORK/source" \
  --state-dir="$WORK/state" --quiet-period="$QUIET" --heartbeat-interval=10m $SERVER_ARGS \
  > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
PORT=
for _ in $(seq 1 100); do
  PORT=$(sed -n 's/.*listening on port \([0-9]\+\).*/\1/p' "$WORK/server.log" | head -1)
  [[ -n $PORT ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/server.log" >&2; exit 1; }
  sleep 0.1
done
[[ -n $PORT ]] || { echo "server did not report its port" >&2; cat "$WORK/server.log" >&2; exit 1; }
MODE_NAME=$([[ $TLS == 1 ]] && echo TLS || echo plaintext)
echo "# certcast-server pid $SERVER_PID on 127.0.0.1:$PORT ($MODE_NAME), quiet period $QUIET," \
  "$(nproc) cores, kernel $(uname -r)"

COMMON=(--target="127.0.0.1:$PORT" --certificate=bench --namespace=bench --server-pid="$SERVER_PID"
        "${BENCH_TLS[@]}")
[[ -n $CONNECTIONS ]] && COMMON+=(--connections="$CONNECTIONS")
ACK_FLAG=()
[[ $ACK == 1 ]] && ACK_FLAG=(--ack)
rss() { awk '/^VmRSS:/ {print $2}' "/proc/$SERVER_PID/status"; }
result() { sed -n "s/.*[ ]$2=\([^ ]*\).*/\1/p" <<<"$1" | head -1; }

sleep 1
RSS0=$(rss)
echo "# server RSS with 0 clients: $RSS0 KiB"

RSSN=
if [[ $IDLE == 1 ]]; then
  echo "# idle: $CLIENTS streams"
  IDLE_OUT=$("$BENCH_BIN" "${COMMON[@]}" --clients="$CLIENTS" --mode=idle --hold-seconds=0)
  echo "$IDLE_OUT"
  RSSN=$(result "$(grep '^RESULT' <<<"$IDLE_OUT")" server_rss_kb)
  sleep 2
fi

SINGLE_OUT=
if [[ $SINGLE == 1 ]]; then
  echo "# rotation: 1 client, $ROUNDS rounds"
  SINGLE_OUT=$("$BENCH_BIN" "${COMMON[@]}" --clients=1 --mode=rotation --rounds="$ROUNDS" \
    "${ACK_FLAG[@]}" --source-dir="$WORK/source" --next-material-dir="$WORK/rounds-single")
  echo "$SINGLE_OUT"
  sleep 1
fi

echo "# rotation: $CLIENTS clients, $ROUNDS rounds"
if [[ -n $PERF ]]; then
  perf record -F 1999 --call-graph "$PERF_CALLGRAPH" -p "$SERVER_PID" -o "$WORK/perf.data" >/dev/null 2>&1 &
  PERF_PID=$!
  sleep 0.5
fi
FLEET_OUT=$("$BENCH_BIN" "${COMMON[@]}" --clients="$CLIENTS" --mode=rotation --rounds="$ROUNDS" \
  "${ACK_FLAG[@]}" --source-dir="$WORK/source" --next-material-dir="$WORK/rounds-fleet")
echo "$FLEET_OUT"
if [[ -n $PERF_PID ]]; then
  kill -INT "$PERF_PID"; wait "$PERF_PID" || true; PERF_PID=
  cp "$WORK/perf.data" "$PERF.data"
  perf report -i "$PERF.data" --stdio --no-children --sort dso,symbol -g none 2>/dev/null \
    | grep -v '^$' | cut -c1-160 | head -200 > "$PERF"
  echo "# perf report written to $PERF (samples in $PERF.data)"
fi

# --- summary ---
F=$(grep '^RESULT' <<<"$FLEET_OUT")
echo
echo "=== certcast fan-out: $MODE_NAME, quiet period $QUIET, ack=$ACK, $(nproc) cores, $(uname -r) ==="
printf '%-44s %s\n' "server RSS, 0 clients" "$RSS0 KiB"
if [[ -n $RSSN ]]; then
  printf '%-44s %s\n' "server RSS, $CLIENTS idle streams" "$RSSN KiB"
  printf '%-44s %s\n' "RSS per idle client" \
    "$(awk -v a="$RSSN" -v b="$RSS0" -v n="$CLIENTS" 'BEGIN {printf "%.1f KiB", (a - b) / n}')"
fi
if [[ -n $SINGLE_OUT ]]; then
  S=$(grep '^RESULT' <<<"$SINGLE_OUT")
  printf '%-44s %s\n' "rotation-to-push, N=1 (median / max ms)" \
    "$(result "$S" p50_ms_median) / $(result "$S" max_ms_max)"
  printf '%-44s %s\n' "server CPU per round, N=1 (sched / ticks)" \
    "$(result "$S" server_cpu_ms_per_round_sched) / $(result "$S" server_cpu_ms_per_round_ticks) ms"
fi
printf '%-44s %s\n' "publish-to-every-client N=$CLIENTS p50 (median)" "$(result "$F" p50_ms_median) ms"
printf '%-44s %s\n' "publish-to-every-client N=$CLIENTS p99 (median/max)" \
  "$(result "$F" p99_ms_median) / $(result "$F" p99_ms_max) ms"
printf '%-44s %s\n' "publish-to-every-client N=$CLIENTS max" "$(result "$F" max_ms_max) ms"
printf '%-44s %s\n' "server CPU per round (sched / ticks)" \
  "$(result "$F" server_cpu_ms_per_round_sched) / $(result "$F" server_cpu_ms_per_round_ticks) ms"
printf '%-44s %s\n' "server CPU per client push (sched / ticks)" \
  "$(result "$F" us_per_push_sched) / $(result "$F" us_per_push_ticks) us"
printf '%-44s %s\n' "incomplete rounds / failed streams" \
  "$(result "$F" incomplete_rounds) / $(result "$F" failed_streams)"
