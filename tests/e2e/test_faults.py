"""Network faults between the pieces: a tunnel blackholed by a proxy that
stops forwarding while keeping its sockets open (PROTOCOL.md section 4:
ping timeouts), and slow links, readers and writers on every side with the
memory of wstunsrv and wstuncli bounded.

A small TCP proxy (TcpProxy) sits between two pieces; it can stop
forwarding in both directions (blackhole) and forward again, and it can
throttle each direction to a byte rate."""

import hashlib
import http.client
import json
import os
import re
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, HOST, Background, expected_sha256, gen_bytes,  # noqa: E402
                     get, make_token, run_threads, stats_text, stats_tunnels, wait_tunnels,
                     wait_until, main)

MIB = 1024 * 1024
RSS_LIMIT_KIB = int(os.environ.get("WSTUN_E2E_RSS_LIMIT_MIB", "64")) * 1024
# under valgrind everything is ~20-50x slower: deadlines stretch
SLOW = float(os.environ.get("WSTUN_E2E_TIME_SCALE", "1"))


def total_clients(srv):
    """total_clients=N from /_stats (tunnel connections, all tokens)."""
    try:
        status, text = stats_text(srv, timeout=2.0)
    except (OSError, http.client.HTTPException):
        return None
    m = re.search(r"(?m)^total_clients=(\d+)\s*$", text)
    return int(m.group(1)) if (status == 200 and m) else None


class TcpProxy:
    """Forwards every connection accepted on 127.0.0.1:<port> to
    127.0.0.1:<target_port>, one thread per direction.

    blackhole(): from now on nothing is read or written in either direction
    (bytes already read are held), on established and new connections
    alike; the sockets stay open, so neither end sees an EOF or a reset.
    resume(): forward again. rate: bytes per second per direction and
    connection (None = as fast as possible)."""

    def __init__(self, target_port, rate=None):
        self.target_port = target_port
        self.rate = rate
        self.flowing = threading.Event()
        self.flowing.set()
        self.stopped = threading.Event()
        self.accepted = 0
        self._lock = threading.Lock()
        self._socks = []
        self._threads = []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((HOST, 0))
        self.lsock.listen(128)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._accept_thread.start()

    def blackhole(self):
        self.flowing.clear()

    def resume(self):
        self.flowing.set()

    def _wait_flowing(self):
        while not self.flowing.is_set():
            if self.stopped.is_set():
                return False
            self.flowing.wait(0.1)
        return not self.stopped.is_set()

    def _accept_loop(self):
        while not self.stopped.is_set():
            try:
                a, _ = self.lsock.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            try:
                b = socket.create_connection((HOST, self.target_port), timeout=5)
            except OSError:
                a.close()
                continue
            for s in (a, b):
                s.settimeout(0.2)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.accepted += 1
                self._socks += [a, b]
                pair = {"open": 2}
                for src, dst in ((a, b), (b, a)):
                    t = threading.Thread(target=self._pump, args=(src, dst, pair),
                                         daemon=True)
                    self._threads.append(t)
                    t.start()

    def _send_all(self, dst, data):
        view = memoryview(data)
        while view:
            if not self._wait_flowing():
                return False
            try:
                n = dst.send(view)
            except (socket.timeout, TimeoutError):
                continue
            view = view[n:]
        return True

    def _pump(self, src, dst, pair):
        chunk = 65536
        if self.rate:
            chunk = max(1024, min(chunk, self.rate // 20))
        t0 = time.monotonic()
        total = 0
        try:
            while True:
                if not self._wait_flowing():
                    return
                try:
                    data = src.recv(chunk)
                except (socket.timeout, TimeoutError):
                    continue
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                if not self._send_all(dst, data):
                    return
                total += len(data)
                if self.rate:
                    ahead = total / self.rate - (time.monotonic() - t0)
                    if ahead > 0:
                        self.stopped.wait(ahead)
        except OSError:
            # a reset on one side resets the other
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        finally:
            with self._lock:
                pair["open"] -= 1
                done = pair["open"] == 0
            if done:
                src.close()
                dst.close()

    def stop(self):
        self.stopped.set()
        self.flowing.set()
        try:
            self.lsock.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._socks)
            threads = list(self._threads)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._accept_thread.join(2)
        for t in threads:
            t.join(2)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass


def download(port, path, timeout=60, read_size=MIB, pace=None, stall_every=None,
             stall_s=0.0, rcvbuf=None):
    """GET path, reading the body in read_size pieces; pace = bytes per
    second the reader allows itself; every stall_every bytes it stops
    reading for stall_s. Returns (status, length, sha256 hex)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        if rcvbuf:
            conn.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            conn.sock.settimeout(timeout)
            conn.sock.connect((HOST, port))
        conn.request("GET", path)
        r = conn.getresponse()
        h = hashlib.sha256()
        n = 0
        next_stall = stall_every
        t0 = time.monotonic()
        while True:
            piece = r.read(read_size)
            if not piece:
                break
            h.update(piece)
            n += len(piece)
            if pace:
                ahead = n / pace - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
            if next_stall is not None and n >= next_stall:
                next_stall += stall_every
                time.sleep(stall_s)
                t0 += stall_s
        return r.status, n, h.hexdigest()
    finally:
        conn.close()


def upload(port, path, n, timeout=60, pace=None, piece_size=262144):
    """POST n deterministic bytes (Content-Length), at most pace bytes per
    second. Returns (status, parsed JSON answer or raw body)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Length", str(n))
        conn.putheader("Content-Type", "application/octet-stream")
        conn.endheaders()
        sent = 0
        t0 = time.monotonic()
        for piece in gen_bytes(n, piece_size):
            conn.send(piece)
            sent += len(piece)
            if pace:
                ahead = sent / pace - (time.monotonic() - t0)
                if ahead > 0:
                    time.sleep(ahead)
        r = conn.getresponse()
        body = r.read()
        try:
            return r.status, json.loads(body)
        except ValueError:
            return r.status, body
    finally:
        conn.close()


class RssWatch:
    """Samples VmRSS of some processes every 0.2 s in a thread; .peak[name]
    in KiB. (VmHWM would do for a single transfer, but the tests here also
    want the figure while a transfer is stalled.)"""

    def __init__(self, *procs):
        self.procs = procs
        self.peak = {p.name: 0 for p in procs}
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        while not self._stop.is_set():
            for p in self.procs:
                try:
                    with open("/proc/%d/status" % p.pid) as f:
                        for line in f:
                            if line.startswith("VmRSS:"):
                                kib = int(line.split()[1])
                                self.peak[p.name] = max(self.peak[p.name], kib)
                except OSError:
                    pass
            self._stop.wait(0.2)

    def stop(self):
        self._stop.set()
        self._t.join(2)
        return self.peak


class Blackhole(E2ETestCase):
    """wstuncli -> TcpProxy -> wstunsrv; the proxy goes silent."""

    CLI_TIMEOUT = 3   # wstuncli -timeout: pings every 1 s, dead after 3 s
    SRV_WSTIMEOUT = 3  # wstunsrv -wstimeout: nothing heard for 3 s
    HTTPTIMEOUT = 5   # wstunsrv -httptimeout

    def test_blackholed_tunnel_is_detected_and_recovered(self):
        be = self.backend()
        srv = self.server("-wstimeout", self.SRV_WSTIMEOUT,
                          "-httptimeout", self.HTTPTIMEOUT)
        proxy = TcpProxy(srv.port)
        self.addCleanup(proxy.stop)
        tok = make_token()
        cli = self.client(srv, tok, "-timeout", self.CLI_TIMEOUT, server_url=be.url,
                          tunnel_url="ws://%s:%d" % (HOST, proxy.port))
        self.assertTrue(wait_tunnels(srv, 1, timeout=10 * SLOW), "tunnel did not come up")
        for i in range(3):
            r = get(srv.port, "/_token/%s/echo?before=%d" % (tok, i), timeout=5 * SLOW)
            self.assertStatus(r, 200)
        # let a ping/pong round or two pass through the proxy
        time.sleep(1.2)
        n_lines = len(cli.err_lines)

        proxy.blackhole()
        t_bh = time.monotonic()
        # a request sent into the dead tunnel must get an error status (the
        # tunnel is lost, or nobody answered in -httptimeout), never hang
        during = Background(get, srv.port, "/_token/%s/echo?during=1" % tok,
                            timeout=(self.HTTPTIMEOUT + 15) * SLOW)

        # the client notices within -timeout (+ one ping interval, the
        # granularity of its check, + slack)
        limit = self.CLI_TIMEOUT + self.CLI_TIMEOUT / 3.0 + 1.0 * SLOW
        m = cli.wait_stderr(r"nothing heard for (\d+) ms", timeout=limit + 5)
        t_cli = time.monotonic() - t_bh
        self.assertTrue(m, "client never noticed the dead tunnel\n" + cli.describe())
        self.assertTrue(any("nothing heard" in ln for ln in cli.err_lines[n_lines:]),
                        "the timeout line predates the blackhole")
        self.assertLess(t_cli, limit, "client took %.2fs to notice (limit %.2fs)"
                        % (t_cli, limit))
        # it cannot have been earlier than -timeout after the last pong,
        # which came at most one ping interval before the blackhole
        self.assertGreater(t_cli, self.CLI_TIMEOUT - self.CLI_TIMEOUT / 3.0 - 0.3)
        self.assertGreaterEqual(int(m.group(1)), self.CLI_TIMEOUT * 1000)

        # the server notices within -wstimeout (+ its check interval + slack)
        srv_limit = self.SRV_WSTIMEOUT * 1.25 + 1.0 * SLOW
        self.assertTrue(wait_until(lambda: stats_tunnels(srv) == 0,
                                   max(0.1, srv_limit - (time.monotonic() - t_bh))),
                        "server still lists the tunnel %.1fs into the blackhole"
                        % (time.monotonic() - t_bh))

        r = during.result((self.HTTPTIMEOUT + 15) * SLOW)
        self.assertIn(r.status, (502, 504), "request into the dead tunnel: %r" % (r,))
        self.assertLess(during.elapsed(), self.HTTPTIMEOUT + 2.0 * SLOW,
                        "error answer took %.1fs" % during.elapsed())

        # a request sent while no tunnel is up waits for one, then 504s
        t0 = time.monotonic()
        r = get(srv.port, "/_token/%s/echo?nobody=1" % tok,
                timeout=(self.HTTPTIMEOUT + 10) * SLOW)
        self.assertStatus(r, 504)
        self.assertLess(time.monotonic() - t0, self.HTTPTIMEOUT + 2.0 * SLOW)
        self.assertTrue(cli.alive(), "client died in the blackhole")
        self.assertEqual(stats_tunnels(srv), 0)

        # the network comes back: the client redials (its backoff is at
        # most a few seconds this early) and requests flow again
        proxy.resume()
        t_res = time.monotonic()
        self.assertTrue(wait_tunnels(srv, 1, timeout=15 * SLOW),
                        "client did not reconnect after the blackhole\n" + cli.describe())
        t_up = time.monotonic() - t_res
        sys.stderr.write("[blackhole: client noticed after %.2fs, reconnected %.2fs "
                         "after resume] " % (t_cli, t_up))
        for i in range(5):
            r = get(srv.port, "/_token/%s/echo?after=%d" % (tok, i), timeout=5 * SLOW)
            self.assertStatus(r, 200)
            self.assertEqual(r.json()["path"], "/echo?after=%d" % i)
        # the requests sent during the blackhole never reached the backend
        # twice, nor later by surprise
        paths = [rec["path"] for rec in be.requests]
        self.assertLessEqual(paths.count("/echo?during=1"), 1)
        self.assertEqual(paths.count("/echo?nobody=1"), 0)
        self.assertEqual(stats_tunnels(srv), 1)

    def test_blackhole_while_streaming(self):
        # a download is in full flight when the link goes silent: the
        # requester gets a cut connection or an error within the timeouts,
        # never a complete-looking short body; afterwards all is well
        be = self.backend()
        be.httpd.handle_error = lambda request, address: None  # the cut is the point
        # -httptimeout well beyond the transfer: only the tunnel timeouts
        # may end it
        srv = self.server("-wstimeout", self.SRV_WSTIMEOUT, "-httptimeout", 120)
        proxy = TcpProxy(srv.port, rate=4 * MIB)
        self.addCleanup(proxy.stop)
        tok = make_token()
        self.client(srv, tok, "-timeout", self.CLI_TIMEOUT, server_url=be.url,
                    tunnel_url="ws://%s:%d" % (HOST, proxy.port))
        self.assertTrue(wait_tunnels(srv, 1, timeout=10 * SLOW))
        n = 64 * MIB

        def fetch():
            try:
                return download(srv.port, "/_token/%s/bytes?n=%d" % (tok, n),
                                timeout=30 * SLOW)
            except (OSError, http.client.HTTPException) as e:
                return e
        dl = Background(fetch)
        time.sleep(1.5)
        proxy.blackhole()
        res = dl.result(30 * SLOW)
        if not isinstance(res, BaseException):
            status, got, sha = res
            self.assertFalse(status == 200 and got == n and sha == expected_sha256(n),
                             "the whole body came through a blackholed tunnel?")
            self.assertTrue(status != 200 or got < n, "short body passed as complete")
        self.assertLess(dl.elapsed(), 1.5 + self.SRV_WSTIMEOUT * 1.25 + 3.0 * SLOW,
                        "the cut download took %.1fs to end" % dl.elapsed())
        self.assertTrue(wait_tunnels(srv, 0, timeout=self.SRV_WSTIMEOUT * 1.25 + 2 * SLOW),
                        "server kept the blackholed tunnel")
        proxy.resume()
        self.assertTrue(wait_tunnels(srv, 1, timeout=15 * SLOW))
        status, got, sha = download(srv.port, "/_token/%s/bytes?n=%d" % (tok, MIB + 3),
                                    timeout=20 * SLOW)
        self.assertEqual((status, got, sha), (200, MIB + 3, expected_sha256(MIB + 3)))


class SlowPeers(E2ETestCase):
    """Slow readers and writers on every side; wstunsrv and wstuncli stay
    within RSS_LIMIT (their peak resident set, sampled all along)."""

    def assertBounded(self, watch, *procs):
        peak = watch.stop()
        for p in procs:
            self.assertTrue(p.alive(), "%s died" % p.name)
            if p.sanitized() or SLOW > 1:
                sys.stderr.write("[%s: sanitizer/valgrind, RSS bound not checked] " % p.name)
                continue
            sys.stderr.write("[%s peak RSS %d KiB] " % (p.name, peak[p.name]))
            self.assertLess(peak[p.name], RSS_LIMIT_KIB,
                            "%s peak RSS %d KiB" % (p.name, peak[p.name]))
            self.assertLess(p.vm_hwm_kib(), RSS_LIMIT_KIB)

    def test_requester_reads_100mib_very_slowly(self):
        # a requester with a small receive buffer that reads at ~8 MiB/s and
        # stops for a second after every 20 MiB: backpressure must reach the
        # backend instead of piling the body up in wstunsrv or wstuncli
        srv, cli, be, tok = self.tunnel()
        watch = RssWatch(srv, cli)
        n = 100 * MIB
        status, got, sha = download(srv.port, "/_token/%s/bytes?n=%d" % (tok, n),
                                    read_size=65536, pace=8 * MIB, stall_every=20 * MIB,
                                    stall_s=1.0, rcvbuf=65536, timeout=60)
        self.assertEqual((status, got, sha), (200, n, expected_sha256(n)))
        self.assertBounded(watch, srv, cli)

    def test_requester_writes_slowly(self):
        # uploads trickling in (a large one streamed, a small one under the
        # 64 KiB streaming threshold); a fast request meanwhile is answered
        # at once when the small one holds nothing, and memory stays bounded
        srv, cli, be, tok = self.tunnel()
        watch = RssWatch(srv, cli)
        big = Background(upload, srv.port, "/_token/%s/upload" % tok, 6 * MIB,
                         pace=2 * MIB, piece_size=32768)
        small = Background(upload, srv.port, "/_token/%s/upload" % tok, 40000,
                           pace=10000, piece_size=1000)
        st, doc = big.result(30)
        self.assertEqual(st, 200, doc)
        self.assertEqual((doc["len"], doc["sha256"]), (6 * MIB, expected_sha256(6 * MIB)))
        self.assertFalse(small.done(), "the trickled small upload ended too soon")
        t0 = time.monotonic()
        r = get(srv.port, "/_token/%s/echo?fast=1" % tok, timeout=10)
        self.assertStatus(r, 200)
        self.assertLess(time.monotonic() - t0, 1.0, "a trickling small upload held the tunnel")
        st, doc = small.result(30)
        self.assertEqual(st, 200, doc)
        self.assertEqual((doc["len"], doc["sha256"]), (40000, expected_sha256(40000)))
        self.assertBounded(watch, srv, cli)

    def test_slow_tunnel_link(self):
        # the WebSocket link itself is slow (8 MiB/s each way, through the
        # proxy): a 40 MiB download and a 40 MiB upload at once
        be = self.backend()
        srv = self.server()
        proxy = TcpProxy(srv.port, rate=8 * MIB)
        self.addCleanup(proxy.stop)
        tok = make_token()
        # two tunnels, so the two transfers need not take turns
        clis = [self.client(srv, tok, server_url=be.url,
                            tunnel_url="ws://%s:%d" % (HOST, proxy.port)) for _ in range(2)]
        self.assertTrue(wait_until(lambda: total_clients(srv) == 2, 10),
                        "two tunnels did not come up through the proxy")
        watch = RssWatch(srv, *clis)
        n = 40 * MIB

        def job(kind):
            if kind == "down":
                return download(srv.port, "/_token/%s/bytes?n=%d" % (tok, n), timeout=60)
            st, doc = upload(srv.port, "/_token/%s/upload" % tok, n, timeout=60)
            return st, doc["len"], doc["sha256"]
        res = run_threads(job, [("down",), ("up",)], timeout=80)
        for r in res:
            self.assertNotIsInstance(r, BaseException, repr(r))
            self.assertEqual(r, (200, n, expected_sha256(n)))
        self.assertBounded(watch, srv, *clis)

    def test_slow_backend_link(self):
        # the backend reads and writes slowly (6 MiB/s each way, through the
        # proxy) while requesters push and pull as fast as they can
        be = self.backend()
        proxy = TcpProxy(be.port, rate=6 * MIB)
        self.addCleanup(proxy.stop)
        srv = self.server()
        tok = make_token()
        cli = self.client(srv, tok, server_url="http://%s:%d" % (HOST, proxy.port))
        self.assertTrue(wait_tunnels(srv, 1, timeout=10))
        watch = RssWatch(srv, cli)
        n = 30 * MIB
        st, doc = upload(srv.port, "/_token/%s/upload" % tok, n, timeout=60)
        self.assertEqual(st, 200, doc)
        self.assertEqual((doc["len"], doc["sha256"]), (n, expected_sha256(n)))
        status, got, sha = download(srv.port, "/_token/%s/bytes?n=%d" % (tok, n), timeout=60)
        self.assertEqual((status, got, sha), (200, n, expected_sha256(n)))
        self.assertBounded(watch, srv, cli)


if __name__ == "__main__":
    main()
