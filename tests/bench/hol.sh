#!/usr/bin/env bash
# Head-of-line blocking, v1 vs v2, in one run on this machine, loopback
# only: the p50/p99 and req/s of small requests on a token while a 1 GiB
# download on the same token is read slowly (~640 KiB/s) by its requester,
# through a v1 tunnel and a v2 tunnel side by side, interleaved, with
# ratios. nginx is the backend, wrk makes the small requests. Bounded: at
# most 60 s by default (WSTUN_BENCH_HOL_BUDGET).
#
#   bash tests/bench/hol.sh [build-dir]
#
# Needs: nginx (Debian's nginx-light), wrk, python3
# Environment: WSTUN_BENCH_SECS (seconds of wrk per phase, default 5),
#   WSTUN_BENCH_ROUNDS (default 2: v1 v2, then v2 v1),
#   WSTUN_BENCH_HOL_CONNS (wrk connections, default 4),
#   WSTUN_BENCH_HOL_REF_SECS (seconds of wrk per protocol with no download,
#   the reference; default 2), WSTUN_BENCH_HOL_BUDGET (seconds for the
#   whole run, default 60), WSTUN_BENCH_HOL_OUT (JSON path, default
#   tests/bench/results/hol-latest.json).
# Everything stops by itself; Ctrl-C cleans up too. Exit status 0 when every
# phase ran (the numbers are informational), 1 if the run broke.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

BUILD=
for arg in "$@"; do
  case $arg in
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "hol.sh: unknown option $arg" >&2; exit 2 ;;
    *) BUILD=$arg ;;
  esac
done
BUILD=${BUILD:-$ROOT/build}
BIN=$(cd "$BUILD" 2>/dev/null && pwd)/apps || true
SECS=${WSTUN_BENCH_SECS:-5}
ROUNDS=${WSTUN_BENCH_ROUNDS:-2}
CONNS=${WSTUN_BENCH_HOL_CONNS:-4}
REF_SECS=${WSTUN_BENCH_HOL_REF_SECS:-2}
BUDGET=${WSTUN_BENCH_HOL_BUDGET:-60}
OUT=${WSTUN_BENCH_HOL_OUT:-$HERE/results/hol-latest.json}

missing=()
for tool in nginx wrk python3; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "hol.sh: missing ${missing[*]}; install with:" >&2
  echo "  apt-get install nginx-light wrk python3" >&2
  exit 1
fi
for app in wstunsrv wstuncli; do
  if [ ! -x "$BIN/$app" ]; then
    echo "hol.sh: $BIN/$app not found; build first:" >&2
    echo "  cmake -S $ROOT -B $BUILD -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build $BUILD -j2" >&2
    exit 1
  fi
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wstun-hol.XXXXXX")
chmod 755 "$TMP" # nginx workers run as nobody when started by root
PY=
cleanup() {
  set +e
  trap - EXIT INT TERM HUP
  if [ -n "$PY" ]; then kill "$PY" 2>/dev/null; wait "$PY" 2>/dev/null; fi
  # the Python side stops its children; this catches them if it could not
  if [ -f "$TMP/pids" ]; then
    while read -r pg; do kill -TERM -- "-$pg" 2>/dev/null || true; done < "$TMP/pids"
    sleep 0.2
    while read -r pg; do kill -KILL -- "-$pg" 2>/dev/null || true; done < "$TMP/pids"
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

echo "wstun head-of-line bench: $BIN, wrk ${SECS} s x $CONNS connections per phase, $ROUNDS round(s), budget ${BUDGET} s"
rc=0
python3 "$HERE/hol.py" --bin "$BIN" --tmp "$TMP" --secs "$SECS" \
  --rounds "$ROUNDS" --conns "$CONNS" --ref-secs "$REF_SECS" --budget "$BUDGET" --out "$OUT" &
PY=$!
wait "$PY" || rc=$?
PY=
exit "$rc"
