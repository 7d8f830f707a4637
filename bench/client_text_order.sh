#!/usr/bin/env bash
# Regenerates client/used_text.ld, the order in which the static certcast-client's code is linked
# (bench/README.md, "The client's memory"): runs the built client under callgrind through
# bench/client_memory.sh, plaintext and TLS (start, connect, write a version, idle), then lists
# every input section that ran (bench/client_text_order.py). Needs valgrind. Run it after a
# change of the client's dependencies (a new Debian gRPC, OpenSSL, protobuf) or of its start;
# rebuild afterwards. BUILD (default ./build, a Makefile build) must hold the client's objects and
# server/certcast-server. The client is linked again without the current order (valgrind does not
# name a binary whose code starts with that section), with a map of where each section went.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build}
link=$BUILD/client/CMakeFiles/certcast-client.dir/link.txt
[[ -f $link ]] || { echo "missing $link: build certcast-client first" >&2; exit 2; }
command -v valgrind > /dev/null || { echo "valgrind is not installed" >&2; exit 2; }
WORK=$(mktemp -d /tmp/certcast-text-order.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
client=$WORK/certcast-client
map=$WORK/certcast-client.map
(cd "$BUILD/client" && sh -c "$(sed -e 's| -Wl,-T,[^ ]*used_text.ld||' \
   -e "s| -o certcast-client | -o $client -Wl,-Map=$map |" "$link")")
for tls in 0 1; do
  printf '#!/bin/sh\nexec valgrind --tool=callgrind --dump-instr=yes %s %s "$@"\n' \
    "--callgrind-out-file=$WORK/callgrind.$tls" "$client" > "$WORK/client-under-callgrind"
  chmod +x "$WORK/client-under-callgrind"
  if ! CLIENT_BIN="$WORK/client-under-callgrind" TLS=$tls CGROUP=0 WSS=0 SETTLE=10 \
       "$ROOT/bench/client_memory.sh" > "$WORK/memory.$tls.log" 2>&1; then
    cat "$WORK/memory.$tls.log" >&2
    exit 1
  fi
done
"$ROOT/bench/client_text_order.py" --map="$map" --binary="$client" \
  --out="$ROOT/client/used_text.ld" "$WORK/callgrind.0" "$WORK/callgrind.1"
