#!/usr/bin/env bash
# The memory of one idle certcast-client (bench/README.md, "The client's memory"): starts a
# certcast-server on loopback, one client with the files sink, waits until the client wrote the
# published chain, lets it settle, and prints what /proc says about the client: VmRSS and its
# parts, Threads (with their names), Pss and its parts from smaps_rollup, the largest mappings,
# and the binary's size and dynamic dependencies. Builds nothing: BUILD (default ./build) must
# hold server/certcast-server and client/certcast-client.
#
# Parameters, as environment variables or KEY=VALUE arguments:
#   TLS=0         1: TLS (minted CA, server certificate for 127.0.0.1 / certcast.bench.test), a
#                 policy and a static bearer token for the client. 0: --insecure on both sides.
#   SETTLE=10     seconds to wait after the client wrote the files, before reading /proc
#   CLIENT_BIN=, SERVER_BIN=   other binaries (default: under BUILD)
#   CLIENT_ENV=   environment for the client only, e.g. CLIENT_ENV="MALLOC_ARENA_MAX=8"
#   SMAPS=FILE    also copy the client's /proc/PID/smaps to FILE
#   WSS=30        then clear the client's accessed bits (/proc/PID/clear_refs) and after WSS
#                 seconds idle sum smaps' Referenced: the pages the idle client still uses
#                 (anonymous and file-backed); 0 skips this
#   CGROUP=1      run the client in a memory cgroup of its own (v2, or v1's memory controller;
#                 needs root) after evicting its binary from the page cache, as a pod's first
#                 start would find it, and print the cgroup's usage and the working set as the
#                 kubelet computes it (usage - inactive_file); 0 skips this
# Example: bench/client_memory.sh TLS=1
set -euo pipefail

for arg in "$@"; do
  case "$arg" in
    *=*) export "${arg?}" ;;
    *) echo "usage: $0 [KEY=VALUE]...  (see the header of this script)" >&2; exit 2 ;;
  esac
done
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
TLS=${TLS:-0}
SETTLE=${SETTLE:-10}
SERVER_BIN=${SERVER_BIN:-$BUILD/server/certcast-server}
CLIENT_BIN=${CLIENT_BIN:-$BUILD/client/certcast-client}
CLIENT_ENV=${CLIENT_ENV:-}
for bin in "$SERVER_BIN" "$CLIENT_BIN"; do
  [[ -x $bin ]] || { echo "missing $bin: build it first" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/certcast-client-memory.XXXXXX)
SERVER_PID= CLIENT_PID= CG=
cleanup_cgroup() { [[ -z $CG ]] || rmdir "$CG" 2> /dev/null || true; }
cleanup() {
  for pid in $CLIENT_PID $SERVER_PID; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
  cleanup_cgroup
}
trap cleanup EXIT

cd "$WORK"
"$ROOT/bench/run" --mint-only="$WORK" --rounds=1 > /dev/null
mkdir -p source
cp -r material/0 "source/..round_0"
ln -s ..round_0 source/..data
for f in tls.crt tls.key ca.crt; do ln -s "..data/$f" "source/$f"; done

if [[ $TLS == 1 ]]; then
  printf 'certificates:\n  bench:\n    namespaces: ["bench"]\n' > policy.yaml
  openssl rand -hex 24 > client.token
  printf 'tokens:\n  - sha256: %s\n    namespace: bench\n    name: client-1\n' \
    "$(tr -d '\n' < client.token | sha256sum | cut -d' ' -f1)" > tokens.yaml
  SERVER_SECURITY=(--tls-cert="$WORK/server.crt" --tls-key="$WORK/server.key"
                   --policy="$WORK/policy.yaml" --token-map="$WORK/tokens.yaml")
  CLIENT_SECURITY=(--ca="$WORK/ca.crt" --tls-server-name=certcast.bench.test
                   --token-file="$WORK/client.token")
else
  SERVER_SECURITY=(--insecure)
  CLIENT_SECURITY=(--insecure)
fi
"$SERVER_BIN" --listen=127.0.0.1:0 "${SERVER_SECURITY[@]}" --certificate=bench="$WORK/source" \
  --state-dir="$WORK/state" > server.log 2>&1 &
SERVER_PID=$!
PORT=
for _ in $(seq 1 100); do
  PORT=$(sed -n 's/.*listening on port \([0-9]\+\).*/\1/p' server.log | head -1)
  [[ -n $PORT ]] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat server.log >&2; exit 1; }
  sleep 0.1
done
[[ -n $PORT ]] || { echo "server did not report its port" >&2; cat server.log >&2; exit 1; }

# The client's own memory cgroup: what a pod's limit and the kubelet's working set see. Page
# cache is charged to the cgroup that reads it first, hence the eviction of the binary.
CGROUP=${CGROUP:-1}
CG_PREFIX=()
if [[ $CGROUP == 1 ]]; then
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
    CG=/sys/fs/cgroup$(sed -n 's/^0:://p' /proc/self/cgroup)
    CG=${CG%/}/certcast-client-memory.$$
  elif [[ -d /sys/fs/cgroup/memory ]]; then
    CG=/sys/fs/cgroup/memory$(sed -n 's/^[0-9]*:memory://p' /proc/self/cgroup)
    CG=${CG%/}/certcast-client-memory.$$
  fi
  if [[ -n $CG ]] && mkdir "$CG" 2> /dev/null; then
    python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$CLIENT_BIN"
    CG_PREFIX=(sh -c 'echo $$ > "$0/cgroup.procs" && exec "$@"' "$CG")
  else
    echo "# no memory cgroup to create here (CGROUP=0 skips this)" >&2
    CG=
  fi
fi

# shellcheck disable=SC2086  # CLIENT_ENV is a list of NAME=VALUE words
"${CG_PREFIX[@]}" env $CLIENT_ENV "$CLIENT_BIN" --server="127.0.0.1:$PORT" "${CLIENT_SECURITY[@]}" \
  --namespace=bench --client-id=client-1 --certificate=bench --output-dir="$WORK/out" \
  --state-dir="$WORK/client-state" --log-level=warn > client.log 2>&1 &
CLIENT_PID=$!
for _ in $(seq 1 300); do
  cmp -s source/tls.crt out/bench/tls.crt 2> /dev/null && break
  kill -0 "$CLIENT_PID" 2>/dev/null || { cat client.log >&2; exit 1; }
  sleep 0.1
done
cmp -s source/tls.crt out/bench/tls.crt || { echo "client did not write the chain" >&2; exit 1; }
sleep "$SETTLE"

status_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$CLIENT_PID/status"; }
rollup_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$CLIENT_PID/smaps_rollup"; }
echo "# certcast-client pid $CLIENT_PID, $([[ $TLS == 1 ]] && echo TLS || echo plaintext)," \
  "${SETTLE} s after it wrote version 1; $(nproc) cores, kernel $(uname -r)"
echo "# binary: $(stat -c %s "$CLIENT_BIN") bytes ($(size "$CLIENT_BIN" | awk 'NR == 2 { print $1 + $2 }')" \
  "bytes text+data), $(readelf -d "$CLIENT_BIN" | grep -c NEEDED) NEEDED libraries:" \
  "$(readelf -d "$CLIENT_BIN" | sed -n 's/.*NEEDED.*\[\(.*\)\]/\1/p' | tr '\n' ' ')"
echo "# maps: $(wc -l < "/proc/$CLIENT_PID/maps") mappings"
printf '%-10s %8s KiB\n' VmRSS "$(status_kb VmRSS)" RssAnon "$(status_kb RssAnon)" \
  RssFile "$(status_kb RssFile)" RssShmem "$(status_kb RssShmem)" VmHWM "$(status_kb VmHWM)" \
  Pss "$(rollup_kb Pss)" Pss_Anon "$(rollup_kb Pss_Anon)" Pss_File "$(rollup_kb Pss_File)" \
  Private "$(($(rollup_kb Private_Clean) + $(rollup_kb Private_Dirty)))"
echo "Threads    $(status_kb Threads): $(cat /proc/"$CLIENT_PID"/task/*/comm | sort | uniq -c \
  | awk '{ printf "%s%s×%s", (NR > 1 ? ", " : ""), $1, $2 }')"
echo "# largest mappings: Rss, Private_Dirty (KiB), file; TOP=${TOP:-15} of them"
awk '/^[0-9a-f]+-[0-9a-f]+ / { name = (NF >= 6 ? $6 : "[anon]") }
     /^Rss:/ { rss[name] += $2 }
     /^Private_Dirty:/ { dirty[name] += $2 }
     END { for (n in rss) if (rss[n] > 0) printf "%8d %6d  %s\n", rss[n], dirty[n], n }' \
  "/proc/$CLIENT_PID/smaps" | sort -rn | head -"${TOP:-15}" | sed 's/^/#   /'
[[ -n ${SMAPS:-} ]] && cp "/proc/$CLIENT_PID/smaps" "$SMAPS"
if [[ -n $CG ]]; then
  if [[ -f $CG/memory.current ]]; then
    usage=$(cat "$CG/memory.current")
    inactive=$(awk '$1 == "inactive_file" { print $2 }' "$CG/memory.stat")
  else
    usage=$(cat "$CG/memory.usage_in_bytes")
    inactive=$(awk '$1 == "total_inactive_file" { print $2 }' "$CG/memory.stat")
  fi
  echo "cgroup     $((usage / 1024)) KiB charged ($(awk '$1 ~ /^(total_)?(anon|rss|file|cache)$/ { printf "%s%s %d KiB", (n++ ? ", " : ""), $1, $2 / 1024 }' "$CG/memory.stat"))"
  echo "working set $(((usage - inactive) / 1024)) KiB (the kubelet's: usage - inactive_file)"
  [[ ! -f $CG/memory.kmem.usage_in_bytes ]] ||
    echo "kernel     $(($(cat "$CG/memory.kmem.usage_in_bytes") / 1024)) KiB (cgroup v1 memory.kmem, part of the usage)"
fi
# Referenced is per page: for files other processes map too (libc, ...) it counts their
# accesses as well, so it is exact only for the anonymous pages and the client's own binary.
WSS=${WSS:-30}
if [[ $WSS != 0 ]]; then
  echo 1 > "/proc/$CLIENT_PID/clear_refs"
  sleep "$WSS"
  echo "# referenced in $WSS s idle, by mapping (KiB):"
  awk '/^[0-9a-f]+-[0-9a-f]+ / { name = (NF >= 6 ? $6 : "[anon]") }
       /^Referenced:/ { referenced[name] += $2 }
       END { for (n in referenced) if (referenced[n] > 0) printf "%8d  %s\n", referenced[n], n }' \
    "/proc/$CLIENT_PID/smaps" | sort -rn | head -"${TOP:-15}" | sed 's/^/#   /'
  awk -v wss="$WSS" '/^[0-9a-f]+-[0-9a-f]+ / { file = (NF >= 6 && $6 ~ /^\//) }
       /^Referenced:/ { if (file) f += $2; else a += $2 }
       END { printf "Referenced in %s s idle: %d KiB (anonymous %d, file-backed %d)\n", wss, a + f, a, f }' \
    "/proc/$CLIENT_PID/smaps"
fi
exit 0
