#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz, clang with ASan + UBSan) in build-fuzz/ and runs each.
#
#   scripts/fuzz.sh                    # every target for 5 s (what scripts/test.sh runs)
#   scripts/fuzz.sh --hours=4          # every target for 4 hours, one after the other
#   scripts/fuzz.sh --seconds=60 --jobs=2 fuzz_policy fuzz_kube_json
#
# Inputs come from the committed corpus (tests/fuzz/corpus/TARGET) plus seeds with freshly minted
# keys (tests/fuzz/make_seeds.sh --with-keys, written under build-fuzz/seeds, never committed).
# New interesting inputs collect in build-fuzz/corpus/TARGET. A crash stops the run with a
# non-zero exit and leaves its input in build-fuzz/artifacts/TARGET/: fix the bug, then copy the
# input into tests/fuzz/corpus/TARGET/ so every later run replays it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
SECONDS_PER_TARGET=5
JOBS=1
TARGETS=()
for arg in "$@"; do
  case "$arg" in
    --seconds=*) SECONDS_PER_TARGET="${arg#*=}" ;;
    --hours=*) SECONDS_PER_TARGET=$(("${arg#*=}" * 3600)) ;;
    --jobs=*) JOBS="${arg#*=}" ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    -*) echo "fuzz.sh: unknown flag $arg (see --help)" >&2; exit 2 ;;
    *) TARGETS+=("$arg") ;;
  esac
done

BUILD="$ROOT/build-fuzz"
echo "== fuzz: configure ($BUILD, clang, -DCERTCAST_FUZZ=ON)"
cmake -S . -B "$BUILD" -DCMAKE_CXX_COMPILER=clang++ -DCERTCAST_FUZZ=ON \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
echo "== fuzz: build (-j2)"
cmake --build "$BUILD" -j2

if ((${#TARGETS[@]} == 0)); then
  for dir in tests/fuzz/corpus/*/; do TARGETS+=("fuzz_$(basename "$dir")"); done
fi
rm -rf "$BUILD/seeds"
tests/fuzz/make_seeds.sh --with-keys "$BUILD/seeds"

# ASan/UBSan report and stop at the first error; leak checking stays on.
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
failed=()
for target in "${TARGETS[@]}"; do
  name="${target#fuzz_}"
  binary="$BUILD/tests/fuzz/$target"
  [[ -x "$binary" ]] || { echo "fuzz.sh: no fuzz target $target" >&2; exit 2; }
  mkdir -p "$BUILD/corpus/$name" "$BUILD/artifacts/$name" "$BUILD/seeds/$name"
  echo "== fuzz: $target for ${SECONDS_PER_TARGET}s"
  parallel=()
  # With more than one job, libFuzzer runs worker processes that log to fuzz-N.log in the
  # current directory (the run below starts in build-fuzz/).
  ((JOBS > 1)) && parallel=(-jobs="$JOBS" -workers="$JOBS")
  # The first corpus directory receives new inputs: the committed corpus stays untouched.
  if ! (cd "$BUILD" && "$binary" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 "${parallel[@]}" \
      -artifact_prefix="$BUILD/artifacts/$name/" \
      "$BUILD/corpus/$name" "$ROOT/tests/fuzz/corpus/$name" "$BUILD/seeds/$name" \
      >"$BUILD/$target.log" 2>&1); then
    tail -n 60 "$BUILD/$target.log"
    echo "fuzz.sh: $target FAILED; input under $BUILD/artifacts/$name/, log $BUILD/$target.log" >&2
    failed+=("$target")
    continue
  fi
  grep -E '^stat::number_of_executed_units|^Done [0-9]+ runs' "$BUILD/$target.log" | tail -n 1 || true
done
if ((${#failed[@]} > 0)); then
  echo "fuzz.sh: failed: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz.sh: ${#TARGETS[@]} targets ran ${SECONDS_PER_TARGET}s each without a finding"
