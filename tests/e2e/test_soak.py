"""Soak: a bounded mixed load with periodic tunnel-client restarts, then a
quiet period after which what wstunsrv and the steady wstuncli hold must be
back near the baseline taken after a warm-up: the bytes live in libwstun's
allocator (wstun_memory_in_use(): the server's /metrics
wstun_memory_bytes, the client's -statusfile memory_bytes=) and the open
fds. RSS cannot tell a leak from a cache (the apps' mallopt settings keep
freed memory for the next large message, up to M_TRIM_THRESHOLD = 32 MiB),
so it is reported and only held to a bound that holds by design.

WSTUN_SOAK_SECS sets the length of the loaded phase (default 60, so that
the suite stays short; run it for minutes or hours by hand). The figures
are printed on one line starting with "soak:" (key=value pairs).

Load, from SOAK_WORKERS threads in a loop: small GETs (fresh and keep-alive
connections), 1-4 MiB downloads and uploads (checked byte for byte),
downloads and uploads abandoned mid-way by the requester, and requests for
tokens nobody serves (404). Two tokens: token A has a steady client and a
second one that is restarted, token B a single client that is restarted;
restarts alternate SIGTERM (must exit 0) and SIGKILL."""

import hashlib
import http.client
import os
import random
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (E2ETestCase, HOST, expected_sha256, gen_bytes, make_token,  # noqa: E402
                     stats_text, wait_until, main)

SOAK_SECS = float(os.environ.get("WSTUN_SOAK_SECS", "60"))
SOAK_WORKERS = int(os.environ.get("WSTUN_SOAK_WORKERS", "8"))
SLOW = float(os.environ.get("WSTUN_E2E_TIME_SCALE", "1"))
# allowed growth after the quiet period (the backend's keep-alive
# connections are closed before both measurements). A leak is whole blocks: thousands
# of requests leaking one block each stand far above a few blocks of state
# an idle process may hold that it did not at the baseline. Bytes: a
# connection's buffers keep the capacity of their largest burst until the
# connection ends (wstun_buf never shrinks), up to the next power of two
# above the 256 KiB high water plus one frame, so the few long-lived
# connections (tunnels, backend keep-alives) may each keep about 1 MiB more.
MEM_SLACK_BLOCKS = int(os.environ.get("WSTUN_SOAK_MEM_SLACK_BLOCKS", "16"))
MEM_SLACK_BYTES = int(os.environ.get("WSTUN_SOAK_MEM_SLACK_BYTES", str(8 * 1024 * 1024)))
# RSS: malloc keeps up to M_TRIM_THRESHOLD (32 MiB, app_tune_malloc) of freed
# memory at the top of the heap, plus what fragmentation strands below it
RSS_SLACK_KIB = int(os.environ.get("WSTUN_SOAK_RSS_SLACK_KIB", str(64 * 1024)))
FD_SLACK = int(os.environ.get("WSTUN_SOAK_FD_SLACK", "2"))
CLI_TIMEOUT = 9  # the steady client's -statusfile is rewritten every 3 s
MIB = 1024 * 1024
ERROR_STATUSES = (502, 503, 504)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def drop_backend_keepalives(be):
    """Close the backend's side of its (idle) keep-alive connections, so
    that no wstuncli keeps any: how many it would keep otherwise (up to 30 s,
    one per concurrent request) is timing, and each holds an fd and a few
    blocks."""
    with be._lock:
        conns = list(be._conns)
    for c in conns:
        try:
            c.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    wait_until(lambda: not be._conns, 5.0)


def srv_memory(srv):
    """(bytes, blocks) live in wstunsrv's libwstun allocator, from /metrics."""
    r = harness.get(srv.port, srv.path("/metrics"), timeout=5)
    got = dict(re.findall(r"(?m)^(wstun_memory_(?:bytes|blocks)) (\d+)$", r.text))
    if r.status != 200 or len(got) != 2:
        raise AssertionError("no wstun_memory_* in /metrics: %d %r" % (r.status, r.text[:300]))
    return int(got["wstun_memory_bytes"]), int(got["wstun_memory_blocks"])


def cli_memory(statusfile, after, timeout=20.0):
    """(bytes, blocks) live in wstuncli's libwstun allocator, from a
    -statusfile rewrite made at a pong later than `after` (epoch secs)."""
    got = {}

    def fresh():
        try:
            with open(statusfile) as f:
                text = f.read()
        except FileNotFoundError:
            return False
        m = re.match(r"Unix: (\d+)\n", text)
        kv = dict(re.findall(r"(?m)^(memory_bytes|memory_blocks)=(\d+)$", text))
        if m and int(m.group(1)) > after and len(kv) == 2:
            got.update(kv)
            return True
        return False
    if not wait_until(fresh, timeout * SLOW, 0.1):
        raise AssertionError("status file not rewritten after %d" % after)
    return int(got["memory_bytes"]), int(got["memory_blocks"])


def total_clients(srv):
    try:
        status, text = stats_text(srv, timeout=3.0)
    except (OSError, http.client.HTTPException):
        return None
    m = re.search(r"(?m)^total_clients=(\d+)\s*$", text)
    return int(m.group(1)) if (status == 200 and m) else None


class Load:
    """The mixed-load workers and their tallies."""

    def __init__(self, port, tokens, seed):
        self.port = port
        self.tokens = tokens
        self.seed = seed
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts = {}
        self.bad = []  # descriptions of outcomes that must never happen
        self.threads = []

    def tally(self, key):
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def wrong(self, what):
        with self.lock:
            self.bad.append(what)

    def start(self, n):
        for i in range(n):
            t = threading.Thread(target=self._worker, args=(i,), daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self, timeout):
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    # -- one operation each; every socket has a timeout, so none can hang
    def _conn(self):
        return http.client.HTTPConnection(HOST, self.port, timeout=30 * SLOW)

    def _expect(self, op, status, ok):
        """Tally an answer: 200 with the right content, or an error status
        the tunnel may give while a client restarts."""
        if status == 200 and ok:
            self.tally(op + "_ok")
        elif status in ERROR_STATUSES:
            self.tally(op + "_%d" % status)
        else:
            self.wrong("%s: status %d (content ok: %r)" % (op, status, ok))

    def op_small(self, rng, tok):
        c = self._conn()
        try:
            n = rng.randint(1, 4)  # keep-alive: several on one connection
            for i in range(n):
                q = "%d-%d" % (rng.getrandbits(32), i)
                c.request("GET", "/_token/%s/echo?q=%s" % (tok, q))
                r = c.getresponse()
                body = r.read()
                ok = r.status == 200 and ('"/echo?q=%s"' % q).encode() in body
                self._expect("small", r.status, ok)
                if r.status != 200 or r.will_close:
                    break
        finally:
            c.close()

    def op_download(self, rng, tok):
        n = rng.randint(MIB, 4 * MIB)
        c = self._conn()
        try:
            c.request("GET", "/_token/%s/bytes?n=%d" % (tok, n))
            r = c.getresponse()
            h = hashlib.sha256()
            got = 0
            while True:
                piece = r.read(MIB)
                if not piece:
                    break
                h.update(piece)
                got += len(piece)
            if r.status == 200 and got != n:
                self.wrong("download: 200 with %d of %d bytes" % (got, n))
                return
            self._expect("download", r.status, got == n and h.hexdigest() == expected_sha256(n))
        finally:
            c.close()

    def op_upload(self, rng, tok):
        n = rng.randint(MIB, 4 * MIB)
        c = self._conn()
        try:
            c.putrequest("POST", "/_token/%s/upload" % tok)
            c.putheader("Content-Length", str(n))
            c.endheaders()
            for piece in gen_bytes(n):
                c.send(piece)
            r = c.getresponse()
            body = r.read()
            ok = r.status == 200 and expected_sha256(n).encode() in body
            self._expect("upload", r.status, ok)
        finally:
            c.close()

    def op_abort_download(self, rng, tok):
        s = socket.create_connection((HOST, self.port), timeout=10 * SLOW)
        try:
            s.sendall(b"GET /_token/%s/bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n"
                      % (tok.encode(), 16 * MIB))
            want = rng.randint(1, 512 * 1024)
            buf = b""
            while len(buf) < want:
                piece = s.recv(65536)
                if not piece:
                    break
                buf += piece
                # an error answer (a restarting client) is complete and
                # the connection stays open: nothing more will come
                if b"\r\n\r\n" in buf[:4096] and not buf.startswith(b"HTTP/1.1 200 "):
                    status = int(buf[9:12])
                    if status not in ERROR_STATUSES:
                        self.wrong("abort_download: status %d" % status)
                    break
            self.tally("abort_download")
        finally:
            s.close()

    def op_abort_upload(self, rng, tok):
        s = socket.create_connection((HOST, self.port), timeout=10 * SLOW)
        try:
            s.sendall(b"POST /_token/%s/upload HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: %d\r\n\r\n" % (tok.encode(), 8 * MIB))
            want = rng.randint(1, 1024 * 1024)
            for piece in gen_bytes(want, 65536):
                s.sendall(piece)
            self.tally("abort_upload")
        finally:
            s.close()

    def op_unknown(self, rng, tok):
        c = self._conn()
        try:
            c.request("GET", "/_token/%s/x" % make_token("nobody"))
            r = c.getresponse()
            r.read()
            if r.status == 404:
                self.tally("unknown_404")
            else:
                self.wrong("unknown token: status %d" % r.status)
        finally:
            c.close()

    OPS = [("small", 10), ("download", 3), ("upload", 3), ("abort_download", 2),
           ("abort_upload", 2), ("unknown", 2)]

    def _worker(self, i):
        rng = random.Random(self.seed * 1000 + i)
        names = [n for n, w in self.OPS for _ in range(w)]
        while not self.stop.is_set():
            name = rng.choice(names)
            tok = rng.choice(self.tokens)
            try:
                getattr(self, "op_" + name)(rng, tok)
            except (ConnectionError, http.client.RemoteDisconnected,
                    http.client.IncompleteRead) as e:
                # a connection cut while a client was killed: allowed
                self.tally(name + "_cut")
                self.tally("cut_" + type(e).__name__)
            except socket.timeout:
                self.wrong("%s: timed out" % name)
            except Exception as e:  # noqa: BLE001
                self.wrong("%s: %r" % (name, e))


class Soak(E2ETestCase):
    def setUp(self):
        super().setUp()
        # the harness watchdog is sized for ordinary tests
        self._watchdog.cancel()
        self._watchdog = threading.Timer(SOAK_SECS + 150 * SLOW, harness._watchdog_fire,
                                         args=(self.id(),))
        self._watchdog.daemon = True
        self._watchdog.start()
        self.addCleanup(self._watchdog.cancel)

    def wait_clients(self, srv, n, timeout=20):
        self.assertTrue(wait_until(lambda: total_clients(srv) == n, timeout * SLOW, 0.1),
                        "expected %d tunnel clients, /_stats says %r" % (n, total_clients(srv)))

    def test_soak(self):
        seed = int(os.environ.get("WSTUN_SOAK_SEED", "0")) or random.randrange(1, 1 << 30)
        be = self.backend()
        # requesters abandon transfers on purpose: no tracebacks for those
        be.httpd.handle_error = lambda request, address: None
        srv = self.server("-httptimeout", "15", "-log-level", "warn", wait_listen=False)
        tok_a, tok_b = make_token("soakA"), make_token("soakB")
        d = tempfile.mkdtemp(prefix="wstun-soak-")
        self.addCleanup(shutil.rmtree, d, True)
        sf = os.path.join(d, "steady.status")
        steady = self.client(srv, tok_a, "-log-level", "warn", "-timeout", str(CLI_TIMEOUT),
                             "-statusfile", sf, server_url=be.url)
        movers = {"a": self.client(srv, tok_a, "-log-level", "warn", server_url=be.url),
                  "b": self.client(srv, tok_b, "-log-level", "warn", server_url=be.url)}
        self.wait_clients(srv, 3)

        # warm-up: a short burst of the same load, then a quiet moment
        warm = Load(srv.port, [tok_a, tok_b], seed)
        warm.start(SOAK_WORKERS)
        time.sleep(min(5.0, max(2.0, SOAK_SECS / 10)))
        self.assertTrue(warm.finish(60 * SLOW), "warm-up workers hung")
        self.assertEqual(warm.bad, [], "warm-up: %s" % warm.bad[:10])
        self.wait_clients(srv, 3)
        drop_backend_keepalives(be)
        time.sleep(2.0)
        rss0, fds0 = rss_kib(srv.pid), fd_count(srv.pid)
        steady_rss0, steady_fds0 = rss_kib(steady.pid), fd_count(steady.pid)
        mem0 = srv_memory(srv)
        steady_mem0 = cli_memory(sf, int(time.time()))

        load = Load(srv.port, [tok_a, tok_b], seed + 1)
        t0 = time.monotonic()
        load.start(SOAK_WORKERS)
        restarts = {"SIGTERM": 0, "SIGKILL": 0}
        every = max(3.0, SOAK_SECS / 10)
        next_restart = t0 + every
        k = 0
        rss_peak, fds_peak = rss0, fds0
        while time.monotonic() - t0 < SOAK_SECS:
            time.sleep(0.25)
            try:
                rss_peak = max(rss_peak, rss_kib(srv.pid))
                fds_peak = max(fds_peak, fd_count(srv.pid))
            except OSError:
                pass
            self.assertTrue(srv.alive(), "wstunsrv died\n" + srv.describe())
            self.assertTrue(steady.alive(), "wstuncli died\n" + steady.describe())
            if time.monotonic() >= next_restart:
                which = "ab"[k % 2]
                sig = signal.SIGTERM if (k // 2) % 2 == 0 else signal.SIGKILL
                old = movers[which]
                rc = old.stop(sig, grace=20 * SLOW)
                if sig == signal.SIGTERM:
                    self.assertEqual(rc, 0, "wstuncli after SIGTERM\n" + old.describe())
                    restarts["SIGTERM"] += 1
                else:
                    restarts["SIGKILL"] += 1
                movers[which] = self.client(srv, tok_a if which == "a" else tok_b,
                                            "-log-level", "warn", server_url=be.url)
                k += 1
                next_restart = time.monotonic() + every
        loaded = time.monotonic() - t0
        self.assertTrue(load.finish(60 * SLOW), "load workers hung")

        # quiet period: every tunnel back, nothing in flight
        self.wait_clients(srv, 3)
        drop_backend_keepalives(be)
        time.sleep(3.0)
        # and the last connections closed: a fixed pause is not always
        # enough on a loaded machine or under a sanitizer. Bounded, and read
        # from /proc only (an HTTP request would hold an fd of its own); a
        # leak never comes back, so the checks below still see it.
        wait_until(lambda: fd_count(srv.pid) <= fds0 + FD_SLACK
                   and fd_count(steady.pid) <= steady_fds0 + FD_SLACK, 30 * SLOW, 0.25)
        rss1, fds1 = rss_kib(srv.pid), fd_count(srv.pid)
        steady_rss1, steady_fds1 = rss_kib(steady.pid), fd_count(steady.pid)
        mem1 = srv_memory(srv)
        steady_mem1 = cli_memory(sf, int(time.time()))
        c = load.counts
        ok = sum(v for key, v in c.items() if key.endswith("_ok"))
        errs = sum(v for key, v in c.items() if re.search(r"_(50\d)$", key))
        cuts = sum(v for key, v in c.items() if key.endswith("_cut"))
        aborts = c.get("abort_download", 0) + c.get("abort_upload", 0)
        line = ("soak: secs=%.0f seed=%d workers=%d ok=%d error_status=%d cut=%d "
                "aborted=%d unknown_404=%d restarts_term=%d restarts_kill=%d "
                "srv_rss_base_kib=%d srv_rss_end_kib=%d srv_rss_peak_kib=%d "
                "srv_fds_base=%d srv_fds_end=%d srv_fds_peak=%d "
                "cli_rss_base_kib=%d cli_rss_end_kib=%d cli_fds_base=%d cli_fds_end=%d "
                "srv_mem_base=%d/%d srv_mem_end=%d/%d cli_mem_base=%d/%d cli_mem_end=%d/%d"
                " (bytes/blocks)" % (
                    loaded, seed, SOAK_WORKERS, ok, errs, cuts, aborts,
                    c.get("unknown_404", 0), restarts["SIGTERM"], restarts["SIGKILL"],
                    rss0, rss1, rss_peak, fds0, fds1, fds_peak,
                    steady_rss0, steady_rss1, steady_fds0, steady_fds1,
                    mem0[0], mem0[1], mem1[0], mem1[1],
                    steady_mem0[0], steady_mem0[1], steady_mem1[0], steady_mem1[1]))
        print(line, flush=True)
        sys.stderr.write("\nsoak counts: %s\n" % sorted(c.items()))

        self.assertEqual(load.bad, [], "%d wrong outcomes, e.g. %s" % (len(load.bad),
                                                                      load.bad[:10]))
        self.assertGreater(ok, 0)
        self.assertGreater(c.get("unknown_404", 0), 0)
        self.assertGreater(aborts, 0)
        # errors and cuts come from restarts only: most requests succeed
        self.assertGreater(ok, 4 * (errs + cuts), "too many failures: %s" % sorted(c.items()))
        if SOAK_SECS >= 10:
            self.assertGreater(restarts["SIGTERM"], 0)
            self.assertGreater(restarts["SIGKILL"], 0)
        self.assertLessEqual(fds1, fds0 + FD_SLACK, "wstunsrv fds %d -> %d" % (fds0, fds1))
        self.assertLessEqual(steady_fds1, steady_fds0 + FD_SLACK,
                             "steady wstuncli fds %d -> %d" % (steady_fds0, steady_fds1))
        self.assertLessEqual(mem1[1], mem0[1] + MEM_SLACK_BLOCKS,
                             "wstunsrv live blocks %d -> %d" % (mem0[1], mem1[1]))
        self.assertLessEqual(steady_mem1[1], steady_mem0[1] + MEM_SLACK_BLOCKS,
                             "steady wstuncli live blocks %d -> %d"
                             % (steady_mem0[1], steady_mem1[1]))
        self.assertLessEqual(mem1[0], mem0[0] + MEM_SLACK_BYTES,
                             "wstunsrv live bytes %d -> %d" % (mem0[0], mem1[0]))
        self.assertLessEqual(steady_mem1[0], steady_mem0[0] + MEM_SLACK_BYTES,
                             "steady wstuncli live bytes %d -> %d"
                             % (steady_mem0[0], steady_mem1[0]))
        if srv.sanitized() or SLOW > 1:
            sys.stderr.write("[sanitizer/valgrind: RSS not checked]\n")
            return
        self.assertLessEqual(rss1, rss0 + RSS_SLACK_KIB,
                             "wstunsrv RSS %d KiB -> %d KiB" % (rss0, rss1))
        self.assertLessEqual(steady_rss1, steady_rss0 + RSS_SLACK_KIB,
                             "steady wstuncli RSS %d KiB -> %d KiB" % (steady_rss0, steady_rss1))


if __name__ == "__main__":
    main()
