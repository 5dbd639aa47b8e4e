#!/usr/bin/env bash
# What an idle tunnel costs HAProxy, for docs/capacity.md: 3 wstunsrv nodes
# behind examples/cluster/haproxy.cfg, N idle tunnels (idle_tunnels.py)
# opened through HAProxy; prints HAProxy's and the nodes' VmRSS and open
# descriptors before and with them open.
#   bash tests/bench/haproxy_idle_cost.sh [BUILD_DIR] [N]   (default build, 3000)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-$here/../../build}
n=${2:-3000}
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
work=$(mktemp -d /tmp/wstun-hacost.XXXXXX)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"' EXIT
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
nodes=()
for i in 1 2 3; do
  p=$(port); nodes+=("$p")
  "$build/apps/wstunsrv" -host 127.0.0.1 -port "$p" -trusted-proxies 127.0.0.1 \
    -max-connections 0 -log-level warn 2>"$work/node$i.log" &
  pids+=($!)
done
lb=$(port)
WSTUN_LB_ADDR=127.0.0.1:$lb WSTUN_PEER_ADDR=127.0.0.1:$(port) WSTUN_STATS_ADDR=127.0.0.1:$(port) \
  WSTUN_ADMIN_SOCK=$work/sock WSTUN_NODE1=127.0.0.1:${nodes[0]} \
  WSTUN_NODE2=127.0.0.1:${nodes[1]} WSTUN_NODE3=127.0.0.1:${nodes[2]} \
  haproxy -db -f "$here/../../examples/cluster/haproxy.cfg" 2>"$work/haproxy.log" &
hap=$!
pids+=($hap)
sleep 3
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
nfd() { ls "/proc/$1/fd" | wc -l; }
show() {
  echo "$1: haproxy VmRSS $(rss $hap) KiB, fds $(nfd $hap);" \
    "nodes VmRSS $(rss ${pids[0]}) + $(rss ${pids[1]}) + $(rss ${pids[2]}) KiB," \
    "fds $(($(nfd ${pids[0]}) + $(nfd ${pids[1]}) + $(nfd ${pids[2]})))"
}
show "before"
mkfifo "$work/hold"
python3 "$here/idle_tunnels.py" --port "$lb" --count "$n" <"$work/hold" >"$work/idle.out" &
pids+=($!)
exec 3>"$work/hold"
for _ in $(seq 300); do grep -q '"opened"' "$work/idle.out" && break; sleep 0.5; done
cat "$work/idle.out"
sleep 2
show "with $n idle tunnels"
echo "show table wstun_nodes" | python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.sendall(b"show table wstun_nodes\n")
d = b""
while True:
    b = s.recv(65536)
    if not b: break
    d += b
print(d.decode().splitlines()[0])' "$work/sock"
exec 3>&-
