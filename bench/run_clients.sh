#!/usr/bin/env bash
# End-to-end benchmark with REAL certcast-client processes: rotation-to-"every client acknowledged"
# latency as seen by the server, and the client's own footprint. Builds nothing: expects BUILD
# (default ./build) to hold server/certcast-server, client/certcast-client and
# bench/certcast-ack-watch, e.g.
#   cmake -S . -B build && cmake --build build -j2 --target certcast-server certcast-client certcast-ack-watch
#
# MODE=rotation (default): start the server, start CLIENTS certcast-client processes (each with its
#   own --output-dir and --state-dir, --log-level=warn), wait until every one acknowledged version
#   1, then run ROUNDS kubelet-style rotations of the source directory. Each round is timed by
#   `certcast-ack-watch`, which does the rename itself and polls
#   Inspection/ListClients (page_size 1000) every 2 ms until every connected client has
#   acknowledged_version == the new version. It also prints the server's own timestamps
#   (sent_at / acknowledged_at, relative to the rename). Afterwards the script checks every
#   client's files and reports the clients' CPU per round and RSS.
# MODE=idle: one client; after it applied version 1, wait IDLE_SETTLE (10 s), read its VmRSS and
#   VmHWM, then its CPU (utime+stime and schedstat) over IDLE_SECONDS (60 s).
#
# Parameters, as environment variables or KEY=VALUE arguments:
#   MODE=rotation     rotation or idle
#   CLIENTS=3         certcast-client processes (MODE=rotation)
#   ROUNDS=5          rotations
#   TLS=1             1: TLS (minted CA; server certificate for DNS:certcast.bench.test and
#                     IP:127.0.0.1; clients connect to 127.0.0.1 with
#                     --tls-server-name=certcast.bench.test). 0: --insecure on both sides.
#                     When the server has --policy (identities), TLS=1 also writes a policy for
#                     namespace "bench" and gives every client (and the bench) its own static
#                     bearer token through --token-map / --token-file.
#   QUIET=200ms       server --quiet-period (200ms is the server's default)
#   HEARTBEAT=30s     server --heartbeat-interval (30s is the server's default)
#   TIME_V=0          1: run client 1 under `/usr/bin/time -v` and report its maximum RSS at the end
#   IDLE_SETTLE=10    MODE=idle: seconds idle before reading RSS
#   IDLE_SECONDS=60   MODE=idle: seconds over which idle CPU is measured
#   KEEP=0            1: keep the work directory (logs, certificates, client outputs)
#   SERVER_BIN=, CLIENT_BIN=, ACK_WATCH_BIN=  override the binaries (default: under BUILD)
# Examples: bench/run_clients.sh CLIENTS=100 QUIET=50ms
#           bench/run_clients.sh MODE=idle TLS=0
set -euo pipefail

for arg in "$@"; do
  case "$arg" in
    *=*) export "${arg?}" ;;
    *) echo "usage: $0 [KEY=VALUE]...  (see the header of this script)" >&2; exit 2 ;;
  esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
MODE=${MODE:-rotation}
CLIENTS=${CLIENTS:-3}
ROUNDS=${ROUNDS:-5}
TLS=${TLS:-1}
QUIET=${QUIET:-200ms}
HEARTBEAT=${HEARTBEAT:-30s}
TIME_V=${TIME_V:-0}
IDLE_SETTLE=${IDLE_SETTLE:-10}
IDLE_SECONDS=${IDLE_SECONDS:-60}
KEEP=${KEEP:-0}
SERVER_NAME=certcast.bench.test
[[ $MODE == idle ]] && CLIENTS=1

SERVER_BIN=${SERVER_BIN:-$BUILD/server/certcast-server}
CLIENT_BIN=${CLIENT_BIN:-$BUILD/client/certcast-client}
ACK_WATCH_BIN=${ACK_WATCH_BIN:-$BUILD/bench/certcast-ack-watch}
for bin in "$SERVER_BIN" "$CLIENT_BIN" "$ACK_WATCH_BIN"; do
  [[ -x $bin ]] || { echo "missing $bin: build it first" >&2; exit 2; }
done

ulimit -n "$(ulimit -Hn)"
WORK=$(mktemp -d /tmp/certcast-clients.XXXXXX)
SERVER_PID=
CLIENT_PIDS=()   # the certcast-client processes themselves
WAIT_PIDS=()     # what the shell started (the client, or /usr/bin/time wrapping client 1)
cleanup() {
  for pid in "${CLIENT_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${WAIT_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -n $SERVER_PID ]]; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ $KEEP == 1 ]]; then echo "# work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- material: bench/run mints it (RSA-2048 CA -> intermediate -> *.example.test leaves, about
# 5.3 KB per update; a server certificate for DNS:certcast.bench.test and IP:127.0.0.1) ---
cd "$WORK"
echo "# minting certificates in $WORK"
"$ROOT/bench/run" --mint-only="$WORK" --rounds="$ROUNDS"
mkdir -p source
cp -r material/0 "source/..round_0"
ln -s ..round_0 source/..data
for f in tls.crt tls.key ca.crt; do ln -s "..data/$f" "source/$f"; done

# --- server ---
if [[ $TLS == 1 ]]; then
  SERVER_SECURITY=(--tls-cert="$WORK/server.crt" --tls-key="$WORK/server.key")
  CLIENT_SECURITY=(--ca="$WORK/ca.crt" --tls-server-name="$SERVER_NAME")
  BENCH_SECURITY=(--tls-ca="$WORK/ca.crt" --tls-server-name="$SERVER_NAME")
  MODE_NAME=TLS
else
  SERVER_SECURITY=(--insecure)
  CLIENT_SECURITY=(--insecure)
  BENCH_SECURITY=()
  MODE_NAME=plaintext
fi
# Servers with identities and a policy (--policy) hand key material over TLS only to proven
# identities: then every client gets its own static bearer token (--token-map), the policy lets
# namespace "bench" receive "bench", and the bench's ListClients calls use a token of its own.
TOKENS=0
SERVER_HELP=$("$SERVER_BIN" --helpfull 2>&1 || true)  # absl's --helpfull exits with 1
if [[ $TLS == 1 && $SERVER_HELP == *"--policy"* ]]; then
  TOKENS=1
  printf 'certificates:\n  bench:\n    namespaces: ["bench"]\n' > policy.yaml
  mktoken() {  # mktoken FILE NAME: writes a random token to FILE, its map entry to tokens.yaml
    openssl rand -hex 24 > "$1"
    printf '  - sha256: %s\n    namespace: bench\n    name: %s\n' \
      "$(tr -d '\n' < "$1" | sha256sum | cut -d' ' -f1)" "$2" >> tokens.yaml
  }
  echo "tokens:" > tokens.yaml
  mktoken watcher.token watcher
  for ((i = 1; i <= CLIENTS; i++)); do mkdir -p "clients/$i"; mktoken "clients/$i/token" "client-$i"; done
  SERVER_SECURITY+=(--policy="$WORK/policy.yaml" --token-map="$WORK/tokens.yaml")
  BENCH_SECURITY+=(--token-file="$WORK/watcher.token")
fi
"$SERVER_BIN" --listen=127.0.0.1:0 "${SERVER_SECURITY[@]}" --certificate=bench="$WORK/source" \
  --state-dir="$WORK/state" --quiet-period="$QUIET" --heartbeat-interval="$HEARTBEAT" \
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
[[ $TOKENS == 1 ]] && MODE_NAME="$MODE_NAME, per-client bearer tokens and a policy"
echo "# certcast-server pid $SERVER_PID on 127.0.0.1:$PORT ($MODE_NAME), quiet period $QUIET," \
  "heartbeat $HEARTBEAT, $(nproc) cores, kernel $(uname -r)"
BENCH_COMMON=(--target="127.0.0.1:$PORT" --certificate=bench --namespace=bench
              --server-pid="$SERVER_PID" "${BENCH_SECURITY[@]}")

# --- clients ---
start_client() {  # start_client INDEX
  local i=$1 dir="$WORK/clients/$1"
  mkdir -p "$dir/out"
  local cmd=("$CLIENT_BIN" --server="127.0.0.1:$PORT" "${CLIENT_SECURITY[@]}" --namespace=bench
             --client-id="client-$i" --certificate=bench --output-dir="$dir/out"
             --state-dir="$dir/state" --log-level=warn)
  [[ $TOKENS == 1 ]] && cmd+=(--token-file="$dir/token")
  if [[ $TIME_V == 1 && $i == 1 ]]; then
    /usr/bin/time -v -o "$dir/time-v.txt" "${cmd[@]}" > "$dir/log" 2>&1 &
    local wrapper=$!
    WAIT_PIDS+=("$wrapper")
    local child=
    for _ in $(seq 1 100); do
      child=$(pgrep -P "$wrapper" | head -1 || true)
      [[ -n $child ]] && break
      sleep 0.01
    done
    [[ -n $child ]] || { echo "cannot find the client under /usr/bin/time" >&2; exit 1; }
    CLIENT_PIDS+=("$child")
  else
    "${cmd[@]}" > "$dir/log" 2>&1 &
    WAIT_PIDS+=("$!")
    CLIENT_PIDS+=("$!")
  fi
}
echo "# starting $CLIENTS certcast-client process(es)"
START_NS=$(date +%s%N)
for ((i = 1; i <= CLIENTS; i++)); do start_client "$i"; done
"$ACK_WATCH_BIN" "${BENCH_COMMON[@]}" --clients="$CLIENTS" --version=1 \
  | sed 's/^/  /'
echo "# all $CLIENTS clients acknowledged version 1, $(( ($(date +%s%N) - START_NS) / 1000000 )) ms" \
  "after the first was started"

# utime+stime (ticks) of one pid; sum of its threads' schedstat run time (ns).
ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
sched_ns() { cat /proc/"$1"/task/*/schedstat | awk '{ s += $1 } END { print s + 0 }'; }
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
sum_over_clients() {  # sum_over_clients FUNCTION
  local total=0 pid
  for pid in "${CLIENT_PIDS[@]}"; do total=$((total + $($1 "$pid"))); done
  echo "$total"
}
HZ=$(getconf CLK_TCK)

if [[ $MODE == idle ]]; then
  PID=${CLIENT_PIDS[0]}
  sleep "$IDLE_SETTLE"
  RSS=$(status_kb "$PID" VmRSS) HWM=$(status_kb "$PID" VmHWM) THREADS=$(status_kb "$PID" Threads)
  echo "# client pid $PID after ${IDLE_SETTLE} s idle: VmRSS $RSS KiB, VmHWM $HWM KiB," \
    "$THREADS threads, RssAnon $(status_kb "$PID" RssAnon) KiB, RssFile $(status_kb "$PID" RssFile) KiB," \
    "Pss $(awk '$1 == "Pss:" { print $2 }' "/proc/$PID/smaps_rollup") KiB"
  # Where the resident pages are: the largest mappings by Rss (file-backed: shared libraries).
  echo "# largest mappings by Rss (KiB):"
  awk '/^[0-9a-f]+-[0-9a-f]+ / { name = (NF >= 6 ? $6 : "[anon]") }
       /^Rss:/ { rss[name] += $2 }
       END { for (n in rss) if (rss[n] > 0) printf "%8d  %s\n", rss[n], n }' "/proc/$PID/smaps" \
    | sort -rn | head -12 | sed 's/^/#   /'
  # Per-thread wakeups: schedstat's third field counts the times a thread was scheduled.
  threads() {
    for t in /proc/"$PID"/task/*; do
      printf '%s %s %s\n' "${t##*/}" "$(cat "$t/comm")" "$(awk '{ print $3, $1 }' "$t/schedstat")"
    done | sort
  }
  TH0=$(threads)
  T0=$(ticks "$PID") S0=$(sched_ns "$PID") SRV0=$(ticks "$SERVER_PID")
  sleep "$IDLE_SECONDS"
  T1=$(ticks "$PID") S1=$(sched_ns "$PID") SRV1=$(ticks "$SERVER_PID")
  TH1=$(threads)
  echo "# per thread over ${IDLE_SECONDS} s: tid name, times scheduled, CPU (ms)"
  join <(echo "$TH0") <(echo "$TH1") \
    | awk '{ printf "#   %-8s %-16s %6d %8.3f\n", $1, $2, $6 - $3, ($7 - $4) / 1e6 }'
  echo
  echo "=== certcast-client idle: $MODE_NAME, heartbeat $HEARTBEAT, $(nproc) cores, $(uname -r) ==="
  printf '%-44s %s\n' "client VmRSS / VmHWM after ${IDLE_SETTLE} s idle" "$RSS / $HWM KiB"
  printf '%-44s %s\n' "client VmRSS after ${IDLE_SECONDS} s more" "$(status_kb "$PID" VmRSS) KiB"
  printf '%-44s %s\n' "client CPU over ${IDLE_SECONDS} s (utime+stime)" \
    "$(( (T1 - T0) * 1000 / HZ )) ms ($((T1 - T0)) ticks)"
  printf '%-44s %s\n' "client CPU over ${IDLE_SECONDS} s (schedstat)" \
    "$(awk -v a="$S1" -v b="$S0" 'BEGIN { printf "%.2f ms", (a - b) / 1e6 }')"
  printf '%-44s %s\n' "server CPU over the same ${IDLE_SECONDS} s (ticks)" "$(( (SRV1 - SRV0) * 1000 / HZ )) ms"
  exit 0
fi

# --- rotation rounds ---
CT0=$(sum_over_clients ticks) CS0=$(sum_over_clients sched_ns)
OUT=$("$ACK_WATCH_BIN" "${BENCH_COMMON[@]}" --clients="$CLIENTS" --rounds="$ROUNDS" \
  --source-dir="$WORK/source" --next-material-dir="$WORK/material")
echo "$OUT"
CT1=$(sum_over_clients ticks) CS1=$(sum_over_clients sched_ns)

# Every client's files hold the last round's chain; no client logged a warning or error.
LAST_CRT=$WORK/material/$ROUNDS/tls.crt
mismatched=0
for ((i = 1; i <= CLIENTS; i++)); do
  cmp -s "$LAST_CRT" "$WORK/clients/$i/out/bench/tls.crt" || mismatched=$((mismatched + 1))
done
LOG_LINES=$(cat "$WORK"/clients/*/log | grep -vc -- '--insecure' || true)
RSS_LIST=$(for pid in "${CLIENT_PIDS[@]}"; do status_kb "$pid" VmRSS; done | sort -n)
HWM_LIST=$(for pid in "${CLIENT_PIDS[@]}"; do status_kb "$pid" VmHWM; done | sort -n)
# Pss: resident pages divided by the number of processes mapping them (the shared libraries'
# pages are shared by all clients here, and with the server and the bench).
pss_kb() { awk '$1 == "Pss:" { print $2 }' "/proc/$1/smaps_rollup"; }
ANON_LIST=$(for pid in "${CLIENT_PIDS[@]}"; do status_kb "$pid" RssAnon; done | sort -n)
PSS_LIST=$(for pid in "${CLIENT_PIDS[@]}"; do pss_kb "$pid"; done | sort -n)
PSS_SUM=$(awk '{ s += $1 } END { print s }' <<<"$PSS_LIST")
pick() { awk -v q="$2" '{ v[NR] = $1 } END { i = int((NR - 1) * q) + 1; print v[i] }' <<<"$1"; }

TIME_V_RSS=
if [[ $TIME_V == 1 ]]; then
  kill -TERM "${CLIENT_PIDS[0]}"
  wait "${WAIT_PIDS[0]}" || true
  TIME_V_RSS=$(sed -n 's/.*Maximum resident set size (kbytes): //p' "$WORK/clients/1/time-v.txt")
fi

R=$(grep '^RESULT' <<<"$OUT")
result() { sed -n "s/.*[ ]$1=\([^ ]*\).*/\1/p" <<<"$R" | head -1; }
echo
echo "=== certcast-client fleet: $CLIENTS clients, $MODE_NAME, quiet period $QUIET, $ROUNDS rounds," \
  "$(nproc) cores, $(uname -r) ==="
printf '%-52s %s\n' "rename -> all acknowledged, polled (p50 / max)" \
  "$(result all_ack_ms_p50) / $(result all_ack_ms_max) ms"
printf '%-52s %s\n' "rename -> last acknowledged_at, server (p50 / max)" \
  "$(result srv_last_ack_ms_p50) / $(result srv_last_ack_ms_max) ms"
printf '%-52s %s\n' "rename -> first / last push (sent_at), median" \
  "$(result srv_first_push_ms_median) / $(result srv_last_push_ms_median) ms"
printf '%-52s %s\n' "rename -> median client's ack, median over rounds" "$(result srv_client_ack_p50_ms_median) ms"
printf '%-52s %s\n' "ListClients poll round trip (median)" "$(result poll_ms_median) ms"
printf '%-52s %s\n' "server CPU per round (schedstat, polls included)" "$(result server_cpu_ms_per_round_sched) ms"
printf '%-52s %s\n' "client CPU per applied version (schedstat / ticks)" \
  "$(awk -v a="$CS1" -v b="$CS0" -v n="$CLIENTS" -v r="$ROUNDS" 'BEGIN { printf "%.2f", (a - b) / 1e6 / n / r }') / $(awk -v a="$CT1" -v b="$CT0" -v n="$CLIENTS" -v r="$ROUNDS" -v hz="$HZ" 'BEGIN { printf "%.1f", (a - b) * 1000 / hz / n / r }') ms"
printf '%-52s %s\n' "client VmRSS after the rounds (min / median / max)" \
  "$(pick "$RSS_LIST" 0) / $(pick "$RSS_LIST" 0.5) / $(pick "$RSS_LIST" 1) KiB"
printf '%-52s %s\n' "client VmHWM (min / median / max)" \
  "$(pick "$HWM_LIST" 0) / $(pick "$HWM_LIST" 0.5) / $(pick "$HWM_LIST" 1) KiB"
printf '%-52s %s\n' "client RssAnon (min / median / max)" \
  "$(pick "$ANON_LIST" 0) / $(pick "$ANON_LIST" 0.5) / $(pick "$ANON_LIST" 1) KiB"
printf '%-52s %s\n' "client Pss (median; sum over all clients)" \
  "$(pick "$PSS_LIST" 0.5) KiB; $PSS_SUM KiB"
[[ -n $TIME_V_RSS ]] && printf '%-52s %s\n' "client 1 max RSS (/usr/bin/time -v)" "$TIME_V_RSS KiB"
printf '%-52s %s\n' "clients whose files differ from the last round" "$mismatched"
printf '%-52s %s\n' "client log lines (warn and above)" "$LOG_LINES"
printf '%-52s %s\n' "incomplete rounds" "$(result incomplete_rounds)"
