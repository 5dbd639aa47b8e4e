#!/bin/sh
# Builds the libFuzzer targets of tests/fuzz/ with clang and runs each one
# for a bounded time, one after the other (one process at a time).
#
#   tests/fuzz/run.sh [build-dir]        (default: build-fuzz/ at the top)
#
# Environment:
#   WSTUN_FUZZ_SECS     seconds per target (default 30)
#   WSTUN_FUZZ_TARGETS  space-separated subset (default: every target)
#   WSTUN_FUZZ_JOBS     parallel build jobs (default 2)
#   WSTUN_FUZZ_CMAKE_ARGS  extra cmake arguments (e.g. -DWSTUN_WERROR=ON)
#   WSTUN_FUZZ_KNOWN    tags of reported bugs to tolerate (see
#                       fuzz_http_common.h); unset = every check on
#
# The seed corpus is copied to a temporary directory, so the tree is never
# modified; crash reproducers are kept in <build-dir>/fuzz-artifacts/<target>/
# and logs in <build-dir>/fuzz-logs/. Inputs in tests/fuzz/regressions/<target>/
# are replayed first. Exit status: 0 if no target crashed, 1 otherwise
# (2 for a build failure).
set -u

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=${1:-$top/build-fuzz}
secs=${WSTUN_FUZZ_SECS:-30}
jobs=${WSTUN_FUZZ_JOBS:-2}
# every tests/fuzz/fuzz_<name>.c is a target
all=$(cd "$here" && ls fuzz_*.c | sed 's/^fuzz_//; s/\.c$//' | tr '\n' ' ')
targets=${WSTUN_FUZZ_TARGETS:-$all}

cc=${CC:-clang}
case $(basename "$cc") in
  clang*) ;;
  *) echo "run.sh: CC=$cc is not clang; using clang" >&2; cc=clang ;;
esac

echo "== configuring $build (CC=$cc)"
mkdir -p "$build"
# shellcheck disable=SC2086
if ! CC=$cc cmake -S "$top" -B "$build" -DWSTUN_FUZZ=ON -DWSTUN_BUILD_TESTS=ON \
    ${WSTUN_FUZZ_CMAKE_ARGS:-} >"$build/fuzz-configure.log" 2>&1; then
  cat "$build/fuzz-configure.log" >&2
  echo "run.sh: configure failed" >&2
  exit 2
fi
echo "== building the fuzz targets"
build_targets=""
for t in $targets; do build_targets="$build_targets wstun_fuzz_$t"; done
# shellcheck disable=SC2086
if ! cmake --build "$build" -j "$jobs" --target $build_targets >/dev/null; then
  cmake --build "$build" -j 1 --target $build_targets >&2
  echo "run.sh: build failed" >&2
  exit 2
fi

logs=$build/fuzz-logs
arts=$build/fuzz-artifacts
mkdir -p "$logs" "$arts"
work=$(mktemp -d "${TMPDIR:-/tmp}/wstun-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

dict_for() {
  case $1 in
    http_request|http_response|ws_handshake) echo "$here/http.dict" ;;
    front_request|server_response) echo "$here/server.dict" ;;
    url) echo "$here/url.dict" ;;
    *) echo "" ;;
  esac
}

crashed=0
summary=""
for t in $targets; do
  bin=$build/tests/wstun_fuzz_$t
  log=$logs/$t.log
  : >"$log"
  status="fuzz: ok"
  regfail=""
  # 1. known reproducers must not crash any more
  reg=$here/regressions/$t
  if [ -d "$reg" ]; then
    for f in "$reg"/*; do
      [ -f "$f" ] || continue
      if ! "$bin" -rss_limit_mb=2048 "$f" >>"$log" 2>&1; then
        regfail="$regfail $(basename "$f")"
      fi
    done
  fi
  # 2. fuzz from a copy of the seed corpus
  corpus=$work/corpus-$t
  rm -rf "${arts:?}/$t"
  mkdir -p "$corpus" "$arts/$t"
  if [ -d "$here/corpus/$t" ]; then
    cp "$here/corpus/$t"/* "$corpus"/ 2>/dev/null
  fi
  dict=$(dict_for "$t")
  echo "== fuzzing $t for ${secs}s"
  set -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=25 \
    -print_final_stats=1 -artifact_prefix="$arts/$t/"
  if [ -n "$dict" ]; then set -- "$@" -dict="$dict"; fi
  if ! "$bin" "$@" "$corpus" >>"$log" 2>&1; then
    status="fuzz: CRASH"
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  [ -n "$execs" ] || execs="?"
  if [ -n "$regfail" ]; then
    crashed=1
    status="$status; regressions still crashing:$regfail"
  fi
  if [ "$status" != "fuzz: ok" ] || [ -n "$regfail" ]; then
    crashed=1
    found=$(find "$arts/$t" -type f -exec basename {} \; | tr '\n' ' ')
    [ -z "$found" ] || status="$status; artifacts: $found in $arts/$t"
    status="$status (log: $log)"
    grep -E "FUZZ CHECK FAILED|ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|SUMMARY" \
      "$log" | head -n 5 | sed 's/^/    /'
  fi
  line=$(printf '%-14s %12s execs  %s' "$t" "$execs" "$status")
  echo "$line"
  summary="$summary$line
"
done

echo
echo "== summary (${secs}s per target)"
printf '%s' "$summary"
if [ "$crashed" -ne 0 ]; then
  cat <<EOF

A crash was found. Reproduce with: <binary> <artifact>
Minimize with:   <binary> -minimize_crash=1 -runs=100000 <artifact>
Then keep the minimized input in tests/fuzz/regressions/<target>/.
EOF
  exit 1
fi
exit 0
