#!/usr/bin/env bash
# wstun benchmark, one run on this machine, loopback only:
#   (a) nginx directly, (b) two chained nginx reverse proxies in front of it,
#   (c) wstunsrv + wstuncli in front of it — interleaved a, b, c per load
#   point — then a 1 GiB stream through the tunnel and 10,000 idle tunnels.
#   With --baseline OLD_BUILD_DIR (or WSTUN_BENCH_BASELINE), (d) wstunsrv +
#   wstuncli from OLD_BUILD_DIR/apps join the matrix (a, b, c, d), with a
#   c/d ratio per load point; the stream and idle tests run for d too.
#   (g) the Go wstunnel (srv + cli) joins the matrix when its binary is found:
#   --go PATH, else WSTUN_BENCH_GO, else $TMPDIR/wstunnel-go-ref/wstunnel
#   (where tests/interop builds it); --no-go or WSTUN_BENCH_GO=none: without.
#
#   bash tests/bench/bench.sh [--quick] [--baseline OLD_BUILD_DIR] [--go PATH]
#                             [--no-go] [--idle-only] [--hol] [build-dir]
# --idle-only: the idle-tunnel test alone (no nginx needed), e.g.
#   WSTUN_BENCH_IDLE=100000 WSTUN_BENCH_IDLE_HOLD=60 bash tests/bench/bench.sh --idle-only
# --hol: head-of-line blocking alone, v1 vs v2 (hol.py): small requests
#   while a 1 GiB download on the same token is read slowly, at most 60 s;
#   WSTUN_BENCH_HOL_CONNS (4), WSTUN_BENCH_HOL_REF_SECS (2),
#   WSTUN_BENCH_HOL_BUDGET (60), WSTUN_BENCH_HOL_OUT (JSON path, default
#   tests/bench/results/hol-latest.json); see README.md.
#
# Needs: nginx (Debian's nginx-light), wrk, curl, python3
#   apt-get install nginx-light wrk curl python3
# Environment: WSTUN_BENCH_SECS (seconds per wrk run, default 5, --quick: 2),
#   WSTUN_BENCH_ROUNDS (default 2, --quick: 1), WSTUN_BENCH_IDLE (idle
#   tunnels, default 10000; 100000 works as root, see README.md),
#   WSTUN_BENCH_IDLE_HOLD (seconds they are held for the CPU figure, 10),
#   WSTUN_BENCH_IDLE_PER_SOURCE (tunnels per 127.x.y.z source address; 0 =
#   all from 127.0.0.1; default 0 up to 20000 tunnels, else 500),
#   WSTUN_BENCH_STREAM_MIB (default 1024),
#   WSTUN_BENCH_OUT (JSON path, default tests/bench/results/latest.json),
#   WSTUN_BENCH_BASELINE (same as --baseline; the option wins),
#   WSTUN_BENCH_GO (same as --go),
#   WSTUN_BENCH_POINTS (comma-separated load points, e.g. mib_c4: only those,
#   no stream or idle test; keys: small_c1 small_c16 small_c64 mib_c4
#   download_100mib upload_100mib).
# Everything stops by itself; Ctrl-C cleans up too. Exit status 0 even when a
# target is missed (they are informational); non-zero only if the run broke.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

QUICK=0
IDLE_ONLY=0
HOL=0
BUILD=
BASE=${WSTUN_BENCH_BASELINE:-}
GO=${WSTUN_BENCH_GO:-}
while [ $# -gt 0 ]; do
  arg=$1; shift
  case $arg in
    --quick) QUICK=1 ;;
    --baseline)
      if [ $# -eq 0 ] || [ -z "$1" ]; then
        echo "bench.sh: --baseline needs a build dir" >&2; exit 2
      fi
      BASE=$1; shift ;;
    --baseline=*) BASE=${arg#--baseline=}
      if [ -z "$BASE" ]; then
        echo "bench.sh: --baseline needs a build dir" >&2; exit 2
      fi ;;
    --go)
      if [ $# -eq 0 ] || [ -z "$1" ]; then
        echo "bench.sh: --go needs the path of the Go wstunnel binary" >&2; exit 2
      fi
      GO=$1; shift ;;
    --go=*) GO=${arg#--go=}
      if [ -z "$GO" ]; then
        echo "bench.sh: --go needs the path of the Go wstunnel binary" >&2; exit 2
      fi ;;
    --no-go) GO=none ;;
    --idle-only) IDLE_ONLY=1 ;;
    --hol) HOL=1 ;;
    -h|--help) sed -n '2,39p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "bench.sh: unknown option $arg" >&2; exit 2 ;;
    *) BUILD=$arg ;;
  esac
done
BUILD=${BUILD:-$ROOT/build}
BIN=$(cd "$BUILD" 2>/dev/null && pwd)/apps || true
BBIN=
if [ -n "$BASE" ]; then
  BBIN=$(cd "$BASE" 2>/dev/null && pwd)/apps || true
  [ "$BBIN" = /apps ] && BBIN=$BASE/apps # no such dir: say so below
fi
if [ "$GO" = none ]; then
  GO=
elif [ -n "$GO" ]; then
  if [ ! -x "$GO" ]; then
    echo "bench.sh: Go wstunnel $GO is not an executable file" >&2; exit 1
  fi
else # the usual place: tests/interop (or /work/shared/reference/build.sh) builds it there
  cand=${TMPDIR:-/tmp}/wstunnel-go-ref/wstunnel
  [ -x "$cand" ] && GO=$cand
fi
if [ "$QUICK" = 1 ]; then
  SECS=${WSTUN_BENCH_SECS:-2}; ROUNDS=${WSTUN_BENCH_ROUNDS:-1}
else
  SECS=${WSTUN_BENCH_SECS:-5}; ROUNDS=${WSTUN_BENCH_ROUNDS:-2}
fi
IDLE=${WSTUN_BENCH_IDLE:-10000}
[ "$HOL" = 1 ] && IDLE=0 # no idle tunnels: no fd limit to raise for them
IDLE_HOLD=${WSTUN_BENCH_IDLE_HOLD:-10}
IDLE_PER_SOURCE=${WSTUN_BENCH_IDLE_PER_SOURCE:--1}
STREAM_MIB=${WSTUN_BENCH_STREAM_MIB:-1024}
OUT=${WSTUN_BENCH_OUT:-$HERE/results/latest.json}

missing=()
tools="nginx wrk curl python3"
[ "$IDLE_ONLY" = 1 ] && tools=python3
for tool in $tools; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench.sh: missing ${missing[*]}; install with:" >&2
  echo "  apt-get install nginx-light wrk curl python3" >&2
  exit 1
fi
for app in wstunsrv wstuncli; do
  if [ ! -x "$BIN/$app" ]; then
    echo "bench.sh: $BIN/$app not found; build first:" >&2
    echo "  cmake -S $ROOT -B $BUILD -DCMAKE_BUILD_TYPE=RelWithDebInfo && cmake --build $BUILD -j2" >&2
    exit 1
  fi
done
if [ -n "$BBIN" ]; then
  for app in wstunsrv wstuncli; do
    if [ ! -x "$BBIN/$app" ]; then
      echo "bench.sh: baseline $BBIN/$app not found; build the old commit first:" >&2
      echo "  git worktree add /tmp/wstun-before <commit>" >&2
      echo "  cmake -S /tmp/wstun-before -B $BASE -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWSTUN_BUILD_TESTS=OFF && cmake --build $BASE -j2" >&2
      exit 1
    fi
  done
fi

# N idle tunnels need N descriptors in wstunsrv and N in the helper. Raise
# the soft limit as a user would (root may raise the hard limit too, up to
# fs.nr_open); fall back to the hard limit.
NOFILE=65536
[ $((IDLE + 1024)) -gt $NOFILE ] && NOFILE=$((IDLE + 1024))
if ! ulimit -n "$NOFILE" 2>/dev/null; then
  hard=$(ulimit -Hn)
  ulimit -n "$hard" 2>/dev/null || true
  if [ "$hard" != unlimited ] && [ "$hard" -lt $((IDLE + 200)) ]; then
    echo "bench.sh: open-file limit is $(ulimit -n) (hard limit $hard); the idle-tunnel" >&2
    echo "  test will open fewer than $IDLE tunnels. To raise it: as root run" >&2
    echo "  'ulimit -n $NOFILE' before this script (above $(cat /proc/sys/fs/nr_open 2>/dev/null || echo fs.nr_open)," >&2
    echo "  also 'sysctl fs.nr_open=...'), or raise 'nofile' in" >&2
    echo "  /etc/security/limits.conf (see tests/bench/README.md)." >&2
  fi
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/wstun-bench.XXXXXX")
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

if [ "$HOL" = 1 ]; then
  echo "wstun head-of-line bench: $BIN, wrk ${SECS} s per phase, $ROUNDS round(s)"
  rc=0
  python3 "$HERE/hol.py" --bin "$BIN" --tmp "$TMP" --secs "$SECS" \
    --rounds "$ROUNDS" --conns "${WSTUN_BENCH_HOL_CONNS:-4}" \
    --ref-secs "${WSTUN_BENCH_HOL_REF_SECS:-2}" \
    --budget "${WSTUN_BENCH_HOL_BUDGET:-60}" \
    --out "${WSTUN_BENCH_HOL_OUT:-$HERE/results/hol-latest.json}" &
  PY=$!
  wait "$PY" || rc=$?
  PY=
  exit "$rc"
fi

args=(--bin "$BIN" --tmp "$TMP" --out "$OUT" --secs "$SECS" --rounds "$ROUNDS"
      --idle "$IDLE" --idle-hold "$IDLE_HOLD"
      --idle-per-source "$IDLE_PER_SOURCE" --stream-mib "$STREAM_MIB")
[ "$QUICK" = 1 ] && args+=(--quick)
[ "$IDLE_ONLY" = 1 ] && args+=(--idle-only)
[ -n "$BBIN" ] && args+=(--baseline-bin "$BBIN")
[ -n "$GO" ] && args+=(--go "$GO")
[ -n "${WSTUN_BENCH_POINTS:-}" ] && args+=(--points "$WSTUN_BENCH_POINTS")
echo "wstun bench: $BIN, ${SECS} s per run, $ROUNDS round(s), fd limit $(ulimit -n)"
[ -n "$BBIN" ] && echo "baseline (d): $BBIN"
if [ -n "$GO" ]; then echo "Go wstunnel (g): $GO"
else echo "Go wstunnel (g): not found, left out (--go PATH to add it)"; fi
rc=0
python3 "$HERE/bench.py" "${args[@]}" &
PY=$!
wait "$PY" || rc=$?
PY=
exit "$rc"
