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

# Fuzzing (tests/fuzz): a separate clang build in build-fuzz/, each target for a few seconds over
# its committed corpus. Before the tests, so ctest's summary stays the closing line. Long runs:
# scripts/fuzz.sh --hours=N (docs/SECURITY.md).
echo "== fuzz (build-fuzz/, 5 s per target)"
"$ROOT/scripts/fuzz.sh" --seconds=5

# ---- Sanitizers (ASan + UBSan; reliability-tests) --------------------------------------------
# On by default; CERTCAST_SANITIZE_TESTS=0 skips it (e.g. while iterating on one test).
# The unit and scenario tests again, everything built with -fsanitize=address,undefined
# (CERTCAST_SANITIZE, top-level CMakeLists.txt) in build-asan/, so the scenario tests run
# sanitized server and client binaries too (they end with SIGTERM there, so LeakSanitizer checks
# them at exit). Tests labelled `nosan` (Python and tool checks) run only once, below; long
# variants never run here. -O1 keeps the build and the tests fast enough for CI.
# The sanitized build runs in the background (nice 10) while the plain tests run: they mostly wait
# on deadlines and leave most of the two cores idle. Times and what runs where:
# docs/RELIABILITY.md, "Sanitizers".
# Every report goes to a file as well (log_path), so one in a child process that no test looked at
# still fails the run. Suppressions (tests/sanitizer_suppressions/) cover only reports inside
# Debian's uninstrumented libraries.
sanitize="${CERTCAST_SANITIZE_TESTS:-1}"
reports="$ROOT/build-asan/sanitizer-reports"
suppressions="$ROOT/tests/sanitizer_suppressions"
asan_options="log_path=$reports/asan:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1"
lsan_options="suppressions=$suppressions/lsan.supp:print_suppressions=0"
ubsan_options="log_path=$reports/ubsan:print_stacktrace=1:halt_on_error=1"
if [ "$sanitize" = "1" ]; then
  echo "== sanitizers: configure (build-asan/, ASan+UBSan)"
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCERTCAST_SANITIZE=ON \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1 -DNDEBUG" \
    -DCERTCAST_BUF="$ROOT/.tools/node_modules/.bin/buf"
  rm -rf "$reports"
  mkdir -p "$reports"
  echo "== sanitizers: build (-j2, nice 10, in the background; log: build-asan/build.log)"
  sanitizer_start=$SECONDS
  # Its own session, so that the whole build can be stopped when the tests fail first. The
  # options apply to the test discovery that runs each sanitized test binary after linking it.
  ASAN_OPTIONS="$asan_options" LSAN_OPTIONS="$lsan_options" UBSAN_OPTIONS="$ubsan_options" \
    setsid nice -n 10 cmake --build build-asan -j2 > build-asan/build.log 2>&1 &
  sanitizer_build=$!
  trap 'kill -- "-$sanitizer_build" 2>/dev/null || true' EXIT
fi

echo "== test"
ctest --test-dir build --output-on-failure -j2 --timeout 600

if [ "$sanitize" = "1" ]; then
  echo "== sanitizers: waiting for the build"
  if ! wait "$sanitizer_build"; then
    trap - EXIT
    tail -n 100 build-asan/build.log
    echo "sanitizer build FAILED (build-asan/build.log)"
    exit 1
  fi
  trap - EXIT
  echo "== sanitizers: built in $((SECONDS - sanitizer_start)) s; test (ctest -LE nosan)"
  export ASAN_OPTIONS="$asan_options" LSAN_OPTIONS="$lsan_options" UBSAN_OPTIONS="$ubsan_options"
  status=0
  ctest --test-dir build-asan --output-on-failure -j2 --timeout 600 -LE nosan || status=$?
  if compgen -G "$reports/*" > /dev/null; then
    echo "== sanitizers: reports (each one fails the run)"
    for report in "$reports"/*; do
      echo "--- $report"
      cat "$report"
    done
    status=1
  fi
  unset ASAN_OPTIONS LSAN_OPTIONS UBSAN_OPTIONS
  if [ "$status" -ne 0 ]; then
    echo "sanitizer run FAILED"
    exit "$status"
  fi
fi
# ---- end of sanitizers -----------------------------------------------------------------------
