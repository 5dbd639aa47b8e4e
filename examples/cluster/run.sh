#!/usr/bin/env bash
# Runs a whole wstun cluster on this machine, on loopback, to try it out:
# HAProxy (examples/cluster/haproxy.cfg) in front of 3 wstunsrv nodes, and
# 3 wstuncli clients (tokens demo-token-1-0123456789 .. 3-...) each with a small backend.
# Ports are chosen at run time; the script prints what to try, then waits.
# Ctrl-C (or SIGTERM) stops everything it started.
#
#   examples/cluster/run.sh [BUILD_DIR]     (default: build, beside this repo)
#
# Needs haproxy (apt-get install haproxy) and python3 (the backends).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build}
srv_bin=$build/apps/wstunsrv
cli_bin=$build/apps/wstuncli
haproxy=$(command -v haproxy || echo /usr/sbin/haproxy)
for b in "$srv_bin" "$cli_bin" "$haproxy"; do
  [ -x "$b" ] || { echo "run.sh: $b not found (build wstun; apt-get install haproxy)" >&2; exit 1; }
done

work=$(mktemp -d /tmp/wstun-cluster.XXXXXX)
pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill "${pids[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup INT TERM EXIT

# A port free on 127.0.0.1 right now (the kernel picks it).
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits until something listens on 127.0.0.1:$1.
wait_port() {
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "run.sh: nothing listens on port $1; see $work/*.log" >&2
  exit 1
}

echo "logs in $work"
nodes=()
for n in 1 2 3; do
  port=$(free_port)
  nodes+=("$port")
  "$srv_bin" -host 127.0.0.1 -port "$port" -unknown-token-wait 3000 \
    -trusted-proxies 127.0.0.1 \
    >"$work/node$n.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
done

lb=$(free_port)
stats=$(free_port)
WSTUN_LB_ADDR=127.0.0.1:$lb WSTUN_PEER_ADDR=127.0.0.1:$(free_port) \
  WSTUN_STATS_ADDR=127.0.0.1:$stats WSTUN_ADMIN_SOCK=$work/haproxy.sock \
  WSTUN_NODE1=127.0.0.1:${nodes[0]} WSTUN_NODE2=127.0.0.1:${nodes[1]} \
  WSTUN_NODE3=127.0.0.1:${nodes[2]} \
  "$haproxy" -db -f "$here/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=($!)
wait_port "$lb"

for n in 1 2 3; do
  port=$(free_port)
  # a backend that says who it is
  mkdir -p "$work/www$n"
  echo "hello from the backend of demo-token-$n-0123456789" >"$work/www$n/index.html"
  python3 -m http.server "$port" --bind 127.0.0.1 --directory "$work/www$n" \
    >"$work/backend$n.log" 2>&1 &
  pids+=($!)
  wait_port "$port"
  "$cli_bin" -tunnel "ws://127.0.0.1:$lb" -token "demo-token-$n-0123456789" \
    -server "http://127.0.0.1:$port" >"$work/client$n.log" 2>&1 &
  pids+=($!)
done

cat <<EOF

wstun cluster up: HAProxy on 127.0.0.1:$lb in front of wstunsrv nodes on
ports ${nodes[*]} (pids ${pids[*]:0:3}).

Try:
  curl http://127.0.0.1:$lb/_token/demo-token-1-0123456789/
  curl -H 'X-Token: demo-token-2-0123456789' http://127.0.0.1:$lb/
  curl http://127.0.0.1:$stats/               # HAProxy: which node is up
  echo "show table wstun_nodes" | socat stdio UNIX:$work/haproxy.sock
                                                # token -> node, learnt from /_tunnel
  curl http://127.0.0.1:${nodes[0]}/metrics    # one node's Prometheus metrics
Take a node away and watch the tokens move (the clients reconnect through
HAProxy; no request is lost):
  kill -TERM ${pids[0]}          # a graceful stop (drain)
  kill -KILL ${pids[1]}          # a crash
Ctrl-C stops everything.
EOF
wait
