#!/usr/bin/env bash
# Builds certcast and runs every test (unit, scenario, process and buf curl interop tests).
# On a fresh Debian 12 machine run it as root (or with sudo available): it first installs
# what is missing (scripts/install-deps.sh, idempotent). Exits non-zero when anything fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

"$ROOT/scripts/install-deps.sh"

echo "== configure (build/, RelWithDebInfo)"
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCERTCAST_BUF="$ROOT/.tools/node_modules/.bin/buf"

echo "== build (-j2)"
cmake --build build -j2

echo "== test"
ctest --test-dir build --output-on-failure -j2 --timeout 600
