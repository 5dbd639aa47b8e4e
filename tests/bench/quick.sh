#!/usr/bin/env bash
# Quick side-by-side benchmark: nginx directly vs. nginx through
# wstunsrv + wstuncli, in one run, on loopback. Reports requests/s, latency
# and the ratio, then a 100 MiB download and upload through the tunnel with
# the peak RSS of both apps.
#
#   bash tests/bench/quick.sh [build-dir]      (needs: nginx-light wrk curl)
#
# Bounded: each wrk run lasts WSTUN_BENCH_SECS seconds (default 5).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${1:-$ROOT/build}
BIN=$BUILD/apps
SECS=${WSTUN_BENCH_SECS:-5}
for tool in nginx wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install nginx-light wrk curl python3)" >&2; exit 1; }
done
TMP=$(mktemp -d)
chmod 755 "$TMP" # nginx workers run as nobody
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$TMP/nginx.pid" ] && kill "$(cat "$TMP/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- backend: nginx serving a ~140-byte file and a 100 MiB one, taking uploads
NPORT=$(free_port)
mkdir -p "$TMP/www" "$TMP/logs"
head -c 140 /dev/zero | tr '\0' 'x' > "$TMP/www/small.txt"
head -c $((100 * 1024 * 1024)) /dev/urandom > "$TMP/www/big.bin"
cat > "$TMP/nginx.conf" <<NGX
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/logs/error.log;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $TMP/body;
  proxy_temp_path $TMP/proxy;
  fastcgi_temp_path $TMP/fcgi;
  uwsgi_temp_path $TMP/uwsgi;
  scgi_temp_path $TMP/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$NPORT;
    root $TMP/www;
    client_max_body_size 200m;
    # nginx reads the whole body before proxying it: a real upload sink
    location /upload { proxy_pass http://127.0.0.1:$NPORT/small.txt; }
  }
}
NGX
nginx -c "$TMP/nginx.conf" -p "$TMP"

# --- tunnel
"$BIN/wstunsrv" -host 127.0.0.1 -port 0 -log-level warn 2> "$TMP/srv.log" &
SRV=$!; PIDS+=($SRV)
for _ in $(seq 50); do grep -q 'listening on' "$TMP/srv.log" 2>/dev/null && break; sleep 0.1; done
# -log-level warn hides the "listening on" line: ask the kernel instead
SPORT=$(ss -ltnpH 2>/dev/null | awk -v pid="pid=$SRV," 'index($0, pid) {n=split($4,a,":"); print a[n]}' | head -1)
TOKEN=bench$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
"$BIN/wstuncli" -tunnel "ws://127.0.0.1:$SPORT" -token "$TOKEN" -server "http://127.0.0.1:$NPORT" -log-level warn 2> "$TMP/cli.log" &
CLI=$!; PIDS+=($CLI)
for _ in $(seq 100); do curl -s "http://127.0.0.1:$SPORT/_stats" | grep -q 'tunnels=1' && break; sleep 0.1; done

DIRECT="http://127.0.0.1:$NPORT"
TUNNEL="http://127.0.0.1:$SPORT/_token/$TOKEN"

# wrk prints "Requests/sec:" and "Latency avg stdev max"
run_wrk() { # url conns → "rps mean_ms"
  wrk -t1 -c"$2" -d"${SECS}s" --latency "$1" 2>&1 | awk '
    /Requests\/sec/ {rps=$2}
    /^    Latency/ {lat=$2}
    / 99%/ {p99=$2}
    /Non-2xx/ {err+=$NF}
    /Socket errors/ {err+=1}
    END {printf "%s %s %s %d\n", rps, lat, p99, err}'
}

printf '%-28s %12s %10s %10s %7s\n' "case" "req/s" "mean" "p99" "errors"
for conns in 1 16 64; do
  read -r drps dlat dp99 derr <<<"$(run_wrk "$DIRECT/small.txt" "$conns")"
  read -r trps tlat tp99 terr <<<"$(run_wrk "$TUNNEL/small.txt" "$conns")"
  printf '%-28s %12s %10s %10s %7s\n' "direct   140 B, c=$conns" "$drps" "$dlat" "$dp99" "$derr"
  printf '%-28s %12s %10s %10s %7s\n' "tunnel   140 B, c=$conns" "$trps" "$tlat" "$tp99" "$terr"
  python3 -c "print('%-28s %12.2f' % ('ratio tunnel/direct', $trps/$drps))"
done

hwm() { awk '/VmHWM/ {print $2" kB"}' "/proc/$1/status"; }
t0=$(date +%s.%N)
curl -s -o /dev/null "$TUNNEL/big.bin"
t1=$(date +%s.%N)
curl -s -o /dev/null -H 'Expect:' --data-binary @"$TMP/www/big.bin" "$TUNNEL/upload"
t2=$(date +%s.%N)
python3 -c "print('100 MiB download through tunnel: %.1f MB/s' % (104.8576/($t1-$t0)))"
python3 -c "print('100 MiB upload through tunnel:   %.1f MB/s' % (104.8576/($t2-$t1)))"
echo "peak RSS wstunsrv: $(hwm $SRV)   wstuncli: $(hwm $CLI)"
