#!/usr/bin/env bash
# wstun live demo: builds wstun, then tunnels one HTTP request end to end,
# all on 127.0.0.1 with ports picked at run time:
#
#   curl ──HTTP──► wstunsrv ◄══WebSocket══ wstuncli ──HTTP──► python3 http.server
#
# Exits 0 only if curl got the backend's file back through the tunnel.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BUILD_DIR=${WSTUN_BUILD_DIR:-build}
WAIT_SECS=15

say() { printf '\n== %s\n' "$*"; }
die() { echo "demo: FAILED: $*" >&2; exit 1; }

# --- 1. dependencies and build ----------------------------------------------
say "installing dependencies (Debian packages)"
bash .ci/install-deps.sh

say "building wstun into $BUILD_DIR/"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
# only the two programs: the demo needs nothing else
cmake --build "$BUILD_DIR" -j2 --target wstunsrv wstuncli
BIN_DIR=$(cd "$BUILD_DIR/apps" 2>/dev/null && pwd) || die "$BUILD_DIR/apps missing"
SRV_BIN="$BIN_DIR/wstunsrv"
CLI_BIN="$BIN_DIR/wstuncli"
[ -x "$SRV_BIN" ] || die "$SRV_BIN was not built"
[ -x "$CLI_BIN" ] || die "$CLI_BIN was not built"

# --- 2. the live demo --------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/wstun-demo.XXXXXX")
PIDS=()

cleanup() {
  local rc=$? pid i
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

show_logs() {
  local f
  for f in backend wstunsrv wstuncli; do
    echo "--- $f log ---"
    cat "$TMP/$f.log" 2>/dev/null || true
  done
}
fail() { echo; show_logs; die "$*"; }

# wait_for SECONDS CMD... : retry CMD every 0.1 s until it succeeds
wait_for() {
  local secs=$1 i; shift
  for i in $(seq 1 $((secs * 10))); do
    if "$@"; then return 0; fi
    sleep 0.1
  done
  return 1
}
alive() { kill -0 "$1" 2>/dev/null; }

mkdir -p "$TMP/www"
echo "hello from the backend behind the firewall" > "$TMP/www/hello.txt"
TOKEN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')

say "starting the parties"

# the backend: a plain HTTP server that only the tunnel client can reach
python3 -u -m http.server 0 --bind 127.0.0.1 --directory "$TMP/www" \
  >"$TMP/backend.log" 2>&1 &
BACKEND_PID=$!
PIDS+=("$BACKEND_PID")
backend_port() {
  sed -n 's/^Serving HTTP on 127\.0\.0\.1 port \([0-9][0-9]*\).*/\1/p' \
    "$TMP/backend.log" | head -n 1
}
backend_up() { [ -n "$(backend_port)" ] || ! alive "$BACKEND_PID"; }
wait_for "$WAIT_SECS" backend_up && [ -n "$(backend_port)" ] ||
  fail "the backend did not start"
BACKEND_PORT=$(backend_port)
echo "backend   python3 -m http.server on 127.0.0.1:$BACKEND_PORT (pid $BACKEND_PID)"
echo "          serving hello.txt: $(cat "$TMP/www/hello.txt")"

# the tunnel server: on the open internet in real life
"$SRV_BIN" -host 127.0.0.1 -port 0 >"$TMP/wstunsrv.log" 2>&1 &
SRV_PID=$!
PIDS+=("$SRV_PID")
srv_port() {
  grep -o 'listening on 127\.0\.0\.1:[0-9][0-9]*' "$TMP/wstunsrv.log" |
    head -n 1 | sed 's/.*://' || true
}
srv_up() { [ -n "$(srv_port)" ] || ! alive "$SRV_PID"; }
wait_for "$WAIT_SECS" srv_up || fail "wstunsrv did not report its port"
SRV_PORT=$(srv_port)
[ -n "$SRV_PORT" ] || fail "wstunsrv exited before listening"
echo "wstunsrv  tunnel server listening on 127.0.0.1:$SRV_PORT (pid $SRV_PID)"

# the tunnel client: next to the backend, dials out to the server
"$CLI_BIN" -tunnel "ws://127.0.0.1:$SRV_PORT" -token "$TOKEN" \
  -server "http://127.0.0.1:$BACKEND_PORT" >"$TMP/wstuncli.log" 2>&1 &
CLI_PID=$!
PIDS+=("$CLI_PID")
echo "wstuncli  dialing ws://127.0.0.1:$SRV_PORT with token $TOKEN,"
echo "          forwarding to http://127.0.0.1:$BACKEND_PORT (pid $CLI_PID)"

tunnel_up() {
  alive "$CLI_PID" || return 0
  curl -s --max-time 2 "http://127.0.0.1:$SRV_PORT/_stats" 2>/dev/null |
    tr -d '\r' | grep -qx 'tunnels=1'
}
wait_for "$WAIT_SECS" tunnel_up || fail "the tunnel was not up within ${WAIT_SECS}s"
alive "$CLI_PID" || fail "wstuncli exited"
echo "tunnel    up: http://127.0.0.1:$SRV_PORT/_stats reports tunnels=1"

# the HTTP client: anywhere on the internet in real life
URL="http://127.0.0.1:$SRV_PORT/_token/$TOKEN/hello.txt"
say "request"
echo "curl -sS -i $URL"
set +e
curl -sS -i --max-time 10 "$URL" >"$TMP/response" 2>"$TMP/curl.err"
CURL_RC=$?
set -e
say "response (curl exit code $CURL_RC)"
cat "$TMP/response"
cat "$TMP/curl.err" >&2

say "what the backend saw"
grep -F 'GET /hello.txt' "$TMP/backend.log" || echo "(no request logged)"

# every party must have survived the exchange
sleep 0.3
for party in "backend:$BACKEND_PID" "wstunsrv:$SRV_PID" "wstuncli:$CLI_PID"; do
  alive "${party#*:}" || fail "${party%%:*} died during the exchange"
done

say "what the tunnel saw"
echo "--- wstunsrv log ---"
cat "$TMP/wstunsrv.log"
echo "--- wstuncli log ---"
cat "$TMP/wstuncli.log"

[ "$CURL_RC" -eq 0 ] || fail "curl failed"
STATUS=$(head -n 1 "$TMP/response" | tr -d '\r')
case "$STATUS" in
  HTTP/1.[01]\ 200*) ;;
  *) fail "expected status 200, got: $STATUS" ;;
esac
# the body is everything after the first empty line of the head
sed '1,/^\r\{0,1\}$/d' "$TMP/response" >"$TMP/body"
cmp -s "$TMP/body" "$TMP/www/hello.txt" ||
  fail "the body is not hello.txt"

say "success"
echo "curl -> wstunsrv :$SRV_PORT -> (WebSocket dialed by wstuncli) -> backend :$BACKEND_PORT"
echo "and back: 200 OK with the contents of hello.txt. Stopping everything."
