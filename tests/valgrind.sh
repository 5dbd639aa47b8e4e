#!/usr/bin/env bash
# Runs a subset of the end-to-end tests with every wstunsrv / wstuncli the
# harness starts wrapped in valgrind (memcheck; WSTUN_VALGRIND=1, see
# tests/e2e/harness.py): an app that makes a memory error, or leaks memory
# definitely, exits 99 and its report fails the test.
#
#   tests/valgrind.sh [build-dir]      (default: build/ at the top; built
#                                       already, ideally RelWithDebInfo)
#
# Environment:
#   WSTUN_VALGRIND_TESTS  what to run, ';'-separated; each item a file of
#                         tests/e2e/ optionally followed by unittest names
#                         (default: the list below)
#   WSTUN_VALGRIND_JOBS   test files run at the same time (default 2)
#   WSTUN_E2E_TIME_SCALE  the harness's deadline multiplier (default 10)
#
# Timing-sensitive tests (test_lifecycle's Liveness class, bandwidth and
# RSS tests) are not in the default list: under valgrind the apps run some
# 20-50 times slower, which such tests do not allow for. The last line is
# "valgrind: N passed, N failed in S s".
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-$ROOT/build}
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
JOBS=${WSTUN_VALGRIND_JOBS:-2}
DEFAULT="test_wire.py;test_errors.py;test_handshake.py;test_basic.py;\
test_client_wire.py;test_faults.py Blackhole"
TESTS=${WSTUN_VALGRIND_TESTS:-$DEFAULT}

if ! command -v valgrind >/dev/null 2>&1; then
  echo "valgrind.sh: valgrind is not installed" >&2
  echo "valgrind: 0 passed, 1 failed in 0 s"
  exit 1
fi
if [ ! -x "$BUILD/apps/wstunsrv" ] || [ ! -x "$BUILD/apps/wstuncli" ]; then
  echo "valgrind.sh: no apps in $BUILD/apps (build first)" >&2
  echo "valgrind: 0 passed, 1 failed in 0 s"
  exit 1
fi

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/wstun-valgrind.XXXXXX")
export WSTUN_VALGRIND=1 WSTUN_BIN_DIR=$BUILD/apps PYTHONDONTWRITEBYTECODE=1
start=$(date +%s)

# run_one INDEX ITEM: one test file (and names) under valgrind
run_one() {
  local i=$1 item=$2 log="$LOGS/$1.log" t0 rc
  # shellcheck disable=SC2086
  set -- $item
  local file=$1
  shift
  t0=$(date +%s)
  timeout 1200 python3 "$ROOT/tests/e2e/$file" "$@" >"$log" 2>&1
  rc=$?
  echo "$rc $(( $(date +%s) - t0 )) $item" >"$LOGS/$i.rc"
}

IFS=';' read -r -a items <<<"$TESTS"
running=0
for i in "${!items[@]}"; do
  item=$(echo "${items[$i]}" | sed 's/^ *//; s/ *$//')
  [ -n "$item" ] || continue
  run_one "$i" "$item" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n
    running=$((running - 1))
  fi
done
wait

passed=0
failed=0
for i in "${!items[@]}"; do
  [ -f "$LOGS/$i.rc" ] || continue
  read -r rc secs item <"$LOGS/$i.rc"
  if [ "$rc" -eq 0 ]; then
    passed=$((passed + 1))
    printf 'valgrind: ok     %4ss  %s\n' "$secs" "$item"
  else
    failed=$((failed + 1))
    printf 'valgrind: FAILED %4ss  %s (exit %s)\n' "$secs" "$item" "$rc"
    grep -E '^(FAIL|ERROR):|==[0-9]+== |Error: ' "$LOGS/$i.log" | head -n 30 |
      sed 's/^/    /'
    echo "    (log kept: $LOGS/$i.log)"
  fi
done
if [ "$failed" -eq 0 ]; then
  rm -rf "$LOGS"
fi
echo "valgrind: $passed passed, $failed failed in $(( $(date +%s) - start )) s"
[ "$failed" -eq 0 ]
