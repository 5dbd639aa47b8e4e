"""Memory and descriptors per in-flight request, for docs/capacity.md.

Starts wstunsrv, wstuncli and a backend (tests/e2e/harness.py), opens N
requests through the tunnel to a backend route that answers only after
60 s (/slow), waits until the backend holds all N, and reports the growth
of VmRSS and of open descriptors in wstunsrv and wstuncli, divided by N.
  python3 tests/bench/inflight_cost.py BUILD_DIR [N]      (default N 500)
"""
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "..", "build")
os.environ["WSTUN_BIN_DIR"] = os.path.join(os.path.abspath(build), "apps")
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import harness  # noqa: E402

N = int(sys.argv[2]) if len(sys.argv) > 2 else 500


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def main():
    be = harness.Backend()
    srv = harness.start_server("-max-requests-per-tunnel", "1000")
    tok = harness.make_token()
    cli = harness.start_client(srv.port, tok, "-server", be.url)
    try:
        assert harness.wait_tunnels(srv, 1), "no tunnel"
        for _ in range(3):  # warm up: pools, parsers, the codec's state
            harness.get(srv.port, "/_token/%s/echo" % tok)
        time.sleep(0.5)
        before = {p: (rss_kib(p.pid), fds(p.pid)) for p in (srv, cli)}
        socks = []
        for i in range(N):
            s = socket.create_connection((harness.HOST, srv.port))
            s.sendall(("GET /_token/%s/slow?ms=60000&i=%d HTTP/1.1\r\nHost: x\r\n\r\n"
                       % (tok, i)).encode())
            socks.append(s)
        ok = harness.wait_until(lambda: be.count() >= N + 3, 60, 0.2)
        time.sleep(1.0)
        print("in flight at the backend: %d of %d%s" % (be.count() - 3, N, "" if ok else " (!)"))
        for p, name in ((srv, "wstunsrv"), (cli, "wstuncli")):
            r0, f0 = before[p]
            r1, f1 = rss_kib(p.pid), fds(p.pid)
            print("%s: VmRSS %d -> %d KiB (%.0f bytes per request), fds %d -> %d (%.2f per request)"
                  % (name, r0, r1, (r1 - r0) * 1024.0 / N, f0, f1, (f1 - f0) / float(N)))
        for s in socks:
            s.close()
    finally:
        be.stop_event.set()
        cli.stop()
        srv.stop()
        be.close()


main()
