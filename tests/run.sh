#!/usr/bin/env bash
# Builds wstun and runs the whole test suite twice: a normal build with
# warnings as errors (build/), then an ASan+UBSan build (build-asan/).
# Between the two, a subset of the end-to-end tests runs with the apps of
# build/ under valgrind (tests/valgrind.sh, about 3 minutes). Set
# WSTUN_SKIP_ASAN=1 to skip the sanitizer pass, WSTUN_SKIP_VALGRIND=1 to
# skip the valgrind pass, WSTUN_SKIP_FUZZ=1 to skip the bounded fuzzing
# pass that follows. The last line printed is "N passed, N failed", summed
# over all passes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

JOBS=${WSTUN_JOBS:-2}
CTEST_JOBS=${WSTUN_CTEST_JOBS:-2}
CTEST_TIMEOUT=${WSTUN_CTEST_TIMEOUT:-300}

TOTAL_PASSED=0
TOTAL_FAILED=0
STATUS=0
LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/wstun-tests.XXXXXX")
trap 'rm -rf "$LOG_DIR"' EXIT

note() { printf '\n=== %s\n' "$*"; }

# run_pass NAME BUILD_DIR [CMAKE_ARGS...] : configure, build, ctest; counts
# tests into the totals. A failure before any test ran counts as 1 failed.
run_pass() {
  local name=$1 dir=$2 log="$LOG_DIR/$1.ctest.log" rc line failed total
  shift 2

  note "[$name] configure $dir ($*)"
  if ! cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DWSTUN_BUILD_TESTS=ON "$@"; then
    echo "[$name] configure FAILED" >&2
    TOTAL_FAILED=$((TOTAL_FAILED + 1)); STATUS=1; return
  fi

  note "[$name] build"
  if ! cmake --build "$dir" -j"$JOBS"; then
    echo "[$name] build FAILED" >&2
    TOTAL_FAILED=$((TOTAL_FAILED + 1)); STATUS=1; return
  fi

  note "[$name] test"
  set +e
  ctest --test-dir "$dir" --output-on-failure -j"$CTEST_JOBS" \
    --timeout "$CTEST_TIMEOUT" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  set -e

  # "100% tests passed, 0 tests failed out of 12"
  line=$(grep -E 'tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" |
         tail -n 1 || true)
  if [ -n "$line" ]; then
    failed=$(sed -E 's/.*passed, ([0-9]+) tests? failed out of ([0-9]+).*/\1/' \
             <<<"$line")
    total=$(sed -E 's/.*passed, ([0-9]+) tests? failed out of ([0-9]+).*/\2/' \
            <<<"$line")
    TOTAL_PASSED=$((TOTAL_PASSED + total - failed))
    TOTAL_FAILED=$((TOTAL_FAILED + failed))
    if [ "$total" -eq 0 ]; then
      echo "[$name] no tests ran" >&2
      STATUS=1
    fi
  else
    if grep -q 'No tests were found' "$log"; then
      echo "[$name] no tests were found" >&2
    else
      echo "[$name] ctest printed no summary (exit code $rc)" >&2
    fi
    TOTAL_FAILED=$((TOTAL_FAILED + 1))
    STATUS=1
  fi
  if [ "$rc" -ne 0 ]; then
    echo "[$name] ctest FAILED (exit code $rc)" >&2
    STATUS=1
  fi
}

note "installing dependencies"
if ! bash .ci/install-deps.sh --tests; then
  echo "installing dependencies FAILED" >&2
  echo "0 passed, 1 failed"
  exit 1
fi

run_pass release build -DWSTUN_SANITIZE=OFF -DWSTUN_WERROR=ON

# Valgrind: the apps of the release build under memcheck for a subset of
# the end-to-end tests (tests/valgrind.sh); counts one test per file.
if [ "${WSTUN_SKIP_VALGRIND:-0}" = "1" ]; then
  note "[valgrind] skipped (WSTUN_SKIP_VALGRIND=1)"
else
  note "[valgrind] e2e subset with the apps under valgrind"
  set +e
  bash tests/valgrind.sh build 2>&1 | tee "$LOG_DIR/valgrind.log"
  rc=${PIPESTATUS[0]}
  set -e
  line=$(grep -E '^valgrind: [0-9]+ passed, [0-9]+ failed' "$LOG_DIR/valgrind.log" |
         tail -n 1 || true)
  if [ -n "$line" ]; then
    TOTAL_PASSED=$((TOTAL_PASSED + $(sed -E 's/^valgrind: ([0-9]+) passed.*/\1/' <<<"$line")))
    TOTAL_FAILED=$((TOTAL_FAILED + $(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")))
  else
    TOTAL_FAILED=$((TOTAL_FAILED + 1))
  fi
  if [ "$rc" -ne 0 ]; then
    echo "[valgrind] FAILED" >&2
    STATUS=1
  fi
fi

if [ "${WSTUN_SKIP_ASAN:-0}" = "1" ]; then
  note "[asan] skipped (WSTUN_SKIP_ASAN=1)"
else
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
  run_pass asan build-asan -DWSTUN_SANITIZE=ON -DWSTUN_WERROR=ON
fi

# Fuzzing, bounded: the regressions replayed, then every libFuzzer target
# for WSTUN_FUZZ_SECS seconds (default 15) under ASan + UBSan. Counts as one
# test per target.
if [ "${WSTUN_SKIP_FUZZ:-0}" = "1" ]; then
  note "[fuzz] skipped (WSTUN_SKIP_FUZZ=1)"
else
  note "[fuzz] build-fuzz, ${WSTUN_FUZZ_SECS:-15} s per target"
  if WSTUN_FUZZ_SECS=${WSTUN_FUZZ_SECS:-15} WSTUN_FUZZ_CMAKE_ARGS=-DWSTUN_WERROR=ON \
      bash tests/fuzz/run.sh build-fuzz \
      2>&1 | tee "$LOG_DIR/fuzz.log"; then
    n=$(grep -c 'fuzz: ok' "$LOG_DIR/fuzz.log" || true)
    TOTAL_PASSED=$((TOTAL_PASSED + n / 2))
  else
    echo "[fuzz] FAILED" >&2
    TOTAL_FAILED=$((TOTAL_FAILED + 1))
    STATUS=1
  fi
fi

echo
if [ "$STATUS" -eq 0 ]; then
  echo "all test passes succeeded"
else
  echo "SOME STEPS FAILED (see above)"
fi
echo "$TOTAL_PASSED passed, $TOTAL_FAILED failed"
exit "$STATUS"
