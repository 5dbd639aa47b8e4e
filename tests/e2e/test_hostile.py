"""Hostile requesters: slowloris heads, connection floods (caps), request
smuggling and path tricks. The server answers clearly and stays up."""

import http.client
import os
import re
import resource
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, CLI_BIN, HOST, SRV_BIN, LoopbackListener, Proc,  # noqa: E402
                     Server, get, http_req, make_token, raw_http, wait_tunnels, wait_until,
                     main)

DEFAULT_MAX_CONNECTIONS = 10000  # WSTUN_DEFAULT_MAX_CONNECTIONS
DEFAULT_MAX_CONNECTIONS_PER_IP = 1000
FD_RESERVE = 64  # fds kept out of -max-connections (lib/wstun_server.c)


def connect(port):
    s = socket.create_connection((HOST, port), timeout=10)
    return s


def read_all(s, timeout=10):
    s.settimeout(timeout)
    out = b""
    try:
        while True:
            piece = s.recv(65536)
            if not piece:
                break
            out += piece
    except (ConnectionResetError, socket.timeout):
        pass
    return out


class Slowloris(E2ETestCase):
    def test_dribbled_head_gets_408_then_close(self):
        srv = self.server("-header-timeout", "2")
        s = connect(srv.port)
        self.addCleanup(s.close)
        t0 = time.monotonic()
        s.sendall(b"GET /_health_check HTTP/1.1\r\n")
        closed = False
        out = b""
        s.settimeout(0.5)
        for i in range(20):  # one header byte every 0.4 s: never a full head
            try:
                s.sendall(b"X")
            except OSError:
                closed = True
                break
            try:
                piece = s.recv(4096)
                if not piece:
                    closed = True
                    break
                out += piece
            except socket.timeout:
                pass
        dt = time.monotonic() - t0
        out += read_all(s, 2)
        self.assertTrue(out.startswith(b"HTTP/1.1 408 "), out[:80])
        self.assertLess(dt, 4.5, "the slow head was tolerated for %.1fs" % dt)
        # the server still serves everybody else
        self.assertEqual(get(srv.port, "/_health_check").status, 200)

    def test_idle_keepalive_is_not_a_slow_head(self):
        srv = self.server("-header-timeout", "1")
        s = connect(srv.port)
        self.addCleanup(s.close)
        time.sleep(1.6)  # idle, no byte sent: the keep-alive idle rule applies
        s.sendall(b"GET /_health_check HTTP/1.1\r\nHost: x\r\n\r\n")
        out = s.recv(4096)
        self.assertTrue(out.startswith(b"HTTP/1.1 200 "), out[:80])


def metric(port, name, src=None):
    """A gauge from /metrics, or None; read from 127.0.0.1, or from `src`
    (another loopback address: a per-address budget of its own)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=15,
                                      source_address=(src, 0) if src else None)
    try:
        r = http_req(port, "GET", "/metrics", conn=conn)
    finally:
        conn.close()
    m = re.search(r"^%s (\d+)$" % re.escape(name), r.text, re.M)
    return int(m.group(1)) if m else None


def wait_metric(port, name, want, timeout=5, src=None):
    """Waits until a gauge reads `want` (a read's own connection is
    counted, and those of earlier reads or health checks linger on the
    server's side a moment after ours close); returns the last value."""
    last = [None]

    def reads():
        last[0] = metric(port, name, src)
        return last[0] == want
    wait_until(reads, timeout)
    return last[0]


def proc_nofile(pid):
    """The soft open-file limit of a running process."""
    with open("/proc/%d/limits" % pid) as f:
        for ln in f:
            if ln.startswith("Max open files"):
                v = ln.split()[3]
                return None if v == "unlimited" else int(v)
    return None


def refused_503(s, timeout=5):
    out = read_all(s, timeout)
    return out.startswith(b"HTTP/1.1 503 ") and b"Too many connections" in out


class ConnectionCaps(E2ETestCase):
    def test_per_ip_cap(self):
        srv = self.server("-max-connections-per-ip", "3")
        held = [connect(srv.port) for _ in range(3)]
        for s in held:
            self.addCleanup(s.close)
        time.sleep(0.2)
        extra = connect(srv.port)
        self.addCleanup(extra.close)
        out = read_all(extra, 5)
        self.assertTrue(out.startswith(b"HTTP/1.1 503 "), out[:80])
        self.assertIn(b"Too many connections", out)
        held.pop().close()
        ok = wait_until(lambda: get(srv.port, "/_health_check").status == 200, 5)
        self.assertTrue(ok, "a freed slot was not given back")

    def test_total_cap(self):
        srv = self.server("-max-connections", "4")
        held = [connect(srv.port) for _ in range(4)]
        for s in held:
            self.addCleanup(s.close)
        time.sleep(0.2)
        extra = connect(srv.port)
        self.addCleanup(extra.close)
        self.assertTrue(read_all(extra, 5).startswith(b"HTTP/1.1 503 "))
        for s in held:
            s.close()
        self.assertTrue(wait_until(lambda: get(srv.port, "/_health_check").status == 200, 5))

    def test_many_concurrent_front_connections(self):
        # a flood of idle connections (bounded here by the test machine's fd
        # limit) does not stop the server from answering
        import resource
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        n = max(100, min(2000, soft - 200))
        # all from 127.0.0.1: the per-address cap (default 1000) is off here
        srv = self.server("-max-connections-per-ip", "0")
        held = []
        try:
            for _ in range(n):
                held.append(connect(srv.port))
            self.assertEqual(get(srv.port, "/_health_check").status, 200)
        finally:
            for s in held:
                s.close()


class DefaultCaps(E2ETestCase):
    """Issue 13: -max-connections and -max-connections-per-ip have
    defaults that protect a default install."""

    def test_defaults_in_effect(self):
        srv = self.server()
        soft = proc_nofile(srv.pid)
        want = DEFAULT_MAX_CONNECTIONS
        if soft is not None:
            want = min(want, soft - FD_RESERVE if soft > 2 * FD_RESERVE else soft // 2)
        print("defaults: max-connections %s (open file limit %s), per address %s"
              % (metric(srv.port, "wstun_max_connections"), soft,
                 metric(srv.port, "wstun_max_connections_per_ip")))
        self.assertEqual(metric(srv.port, "wstun_max_connections"), want)
        self.assertEqual(metric(srv.port, "wstun_max_connections_per_ip"),
                         DEFAULT_MAX_CONNECTIONS_PER_IP)
        self.assertIsNotNone(srv.wait_stderr(
            r"connections at most: %d in all, %d per address"
            % (want, DEFAULT_MAX_CONNECTIONS_PER_IP), 5), srv.describe())
        # 0 still means no limit
        srv0 = self.server("-max-connections", "0", "-max-connections-per-ip", "0")
        self.assertEqual(metric(srv0.port, "wstun_max_connections"), 0)
        self.assertEqual(metric(srv0.port, "wstun_max_connections_per_ip"), 0)
        self.assertIsNotNone(srv0.wait_stderr(
            r"connections at most: no limit in all, no limit per address", 5))

    def test_default_per_ip_cap_reached(self):
        """With no flag, one address gets 1,000 connections; the next ones
        are answered 503 and closed, and the server holds no more."""
        srv = self.server()
        held = []
        # the gauge is read from 127.0.0.2: a read from 127.0.0.1 would
        # take one of the address's slots itself, for as long as its close
        # takes to reach the server
        other = "127.0.0.2"
        try:
            for _ in range(DEFAULT_MAX_CONNECTIONS_PER_IP):
                held.append(connect(srv.port))
            # the held ones and the read itself
            want = DEFAULT_MAX_CONNECTIONS_PER_IP + 1
            got = wait_metric(srv.port, "wstun_connections", want, 10, other)
            self.assertEqual(got, want, "the server does not hold %d connections"
                             % DEFAULT_MAX_CONNECTIONS_PER_IP)
            refused = 0
            for _ in range(20):
                with connect(srv.port) as extra:
                    if not refused_503(extra, 3):
                        break
                    refused += 1
            self.assertEqual(refused, 20, "connections past the default cap were served")
            for s in held[:10]:
                s.close()
            del held[:10]
            ok = wait_until(lambda: get(srv.port, "/_health_check").status == 200, 5)
            self.assertTrue(ok, "a freed slot was not given back")
            want = DEFAULT_MAX_CONNECTIONS_PER_IP - 10 + 1
            self.assertEqual(wait_metric(srv.port, "wstun_connections", want, 5, other),
                             want)
        finally:
            for s in held:
                s.close()

    def test_default_total_cap_follows_fd_limit(self):
        """Under an open file limit of 200, -max-connections defaults to
        200 - 64: the connection past it gets its 503 instead of a failed
        accept()."""
        argv = ["sh", "-c", 'ulimit -n 200 && exec "$0" "$@"', SRV_BIN,
                "-host", HOST, "-port", "0", "-max-connections-per-ip", "0"]
        srv = Server(argv, name="wstunsrv")
        self._procs.append(srv)
        self.addCleanup(self._checked_stop, srv)
        m = srv.wait_stderr(r"listening on 127\.0\.0\.1:(\d+)", 10)
        self.assertIsNotNone(m, srv.describe())
        srv.port = int(m.group(1))
        cap = 200 - FD_RESERVE
        held = []
        try:
            for _ in range(cap):
                held.append(connect(srv.port))
            time.sleep(0.3)
            for _ in range(5):
                with connect(srv.port) as extra:
                    self.assertTrue(refused_503(extra), "no 503 past %d connections" % cap)
            held.pop().close()
            ok = wait_until(lambda: get(srv.port, "/_health_check").status == 200, 5)
            self.assertTrue(ok, "a freed slot was not given back")
        finally:
            for s in held:
                s.close()
        self.assertIsNotNone(srv.wait_stderr(
            r"max-connections 10000 lowered to %d: the open file limit is 200" % cap, 5))

    def test_refusals_counted_and_logged_sparingly(self):
        """A flood over a cap is counted in /metrics, and logged once per
        10 s rather than once per connection (the log is not a second
        victim of the flood)."""
        srv = self.server("-max-connections-per-ip", "2")
        held = [connect(srv.port) for _ in range(2)]
        for s in held:
            self.addCleanup(s.close)
        time.sleep(0.2)
        for _ in range(50):
            with connect(srv.port) as extra:
                self.assertTrue(refused_503(extra))
        for s in held:
            s.close()
        # until the server has seen those closes, a new connection is
        # refused too (and counted): count those as well
        late = [0]

        def healthy():
            status = get(srv.port, "/_health_check").status
            late[0] += status == 503
            return status == 200
        self.assertTrue(wait_until(healthy, 5))
        self.assertEqual(metric(srv.port, "wstun_connections_refused_total"), 50 + late[0])
        lines = [ln for ln in srv.err_lines if "refused: too many connections" in ln]
        self.assertEqual(len(lines), 1, lines[:5])
        self.assertRegex(lines[0], r"WARN.*connection from 127\.0\.0\.1 refused")

    def test_soft_fd_limit_raised_to_hard(self):
        """Both programs raise a low soft open file limit to the hard one
        at start, as Go programs do; the server's default cap follows."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard != resource.RLIM_INFINITY and hard <= 512:
            self.skipTest("hard open file limit %d: nothing to raise" % hard)
        wrap = ["sh", "-c", 'ulimit -Sn 256 && exec "$0" "$@"']
        srv = Server(wrap + [SRV_BIN, "-host", HOST, "-port", "0"], name="wstunsrv")
        self._procs.append(srv)
        self.addCleanup(self._checked_stop, srv)
        m = srv.wait_stderr(r"listening on 127\.0\.0\.1:(\d+)", 10)
        self.assertIsNotNone(m, srv.describe())
        srv.port = int(m.group(1))
        tok = make_token()
        cli = Proc(wrap + [CLI_BIN, "-tunnel", "ws://%s:%d" % (HOST, srv.port), "-token", tok,
                    "-server", "http://127.0.0.1:9"],
                   name="wstuncli")
        self._procs.append(cli)
        self.addCleanup(self._checked_stop, cli)
        self.assertTrue(wait_tunnels(srv, 1), cli.describe())
        want = None if hard == resource.RLIM_INFINITY else hard
        for p in (srv, cli):
            self.assertEqual(proc_nofile(p.pid), want, "%s kept a soft limit of 256" % p.name)
        if want is not None:
            self.assertEqual(metric(srv.port, "wstun_max_connections"),
                             min(DEFAULT_MAX_CONNECTIONS, want - FD_RESERVE))

    def test_trusted_proxy_not_capped_per_address(self):
        """A reverse proxy brings every requester and tunnel from one
        address: -trusted-proxies peers count in the total only."""
        srv = self.server("-trusted-proxies", "127.0.0.1", "-max-connections-per-ip", "3")
        held = [connect(srv.port) for _ in range(5)]
        for s in held:
            self.addCleanup(s.close)
        time.sleep(0.2)
        self.assertStatus(get(srv.port, "/_health_check"), 200)
        # 5 held and the /metrics read
        self.assertEqual(wait_metric(srv.port, "wstun_connections", 6), 6)
        srv2 = self.server("-trusted-proxies", "10.0.0.0/8", "-max-connections-per-ip", "3")
        held2 = [connect(srv2.port) for _ in range(3)]
        for s in held2:
            self.addCleanup(s.close)
        time.sleep(0.2)
        with connect(srv2.port) as extra:
            self.assertTrue(refused_503(extra), "an untrusted address was not capped")


class CannedBackend(LoopbackListener):
    """Answers every request with the same raw bytes, then closes."""

    def __init__(self, answer):
        self.answer = answer
        self.requests = 0
        super().__init__()

    def _serve(self, s):
        s.settimeout(10)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                piece = s.recv(65536)
                if not piece:
                    return
                data += piece
            self.requests += 1
            s.sendall(self.answer)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except OSError:
            pass
        finally:
            s.close()


class TransferCodings(E2ETestCase):
    """Issue 13: bodies are re-framed on the way, so a transfer coding
    other than chunked (gzip, chunked) would be dropped silently. The
    server refuses such requests with 501 (RFC 9112 6.1); the client
    answers 502 for such a backend response, as Go's client does."""

    def test_gzip_chunked_request_is_501(self):
        srv, cli, be, tok = self.tunnel()
        for te in (b"gzip, chunked", b"x-custom,Chunked"):
            req = (b"POST /_token/%s/echo HTTP/1.1\r\nHost: x\r\n"
                   b"Transfer-Encoding: %s\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                   % (tok.encode(), te))
            r = raw_http(srv.port, req)
            self.assertStatus(r, 501)
            self.assertIn(b"Transfer-Encoding not supported", r.body)
        # two headers make one list
        req = (b"POST /_token/%s/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % tok.encode())
        self.assertStatus(raw_http(srv.port, req), 501)
        self.assertEqual(be.count(), 0, "a request reached the backend")
        # plain chunked still passes
        req = (b"POST /_token/%s/echo HTTP/1.1\r\nHost: x\r\n"
               b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" % tok.encode())
        r = raw_http(srv.port, req)
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["body_len"], 5)

    def test_gzip_chunked_response_is_502(self):
        for te in (b"gzip, chunked", b"gzip"):
            framed = b"a\r\n0123456789\r\n0\r\n\r\n" if te.endswith(b"chunked") else b"0123456789"
            be = CannedBackend(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                               b"Transfer-Encoding: %s\r\n\r\n%s" % (te, framed))
            self.addCleanup(be.stop)
            srv = self.server()
            tok = "tok-te-%s" % te.decode().replace(", ", "-")
            tok += "x" * (16 - len(tok))
            self.client(srv, tok, server_url="http://127.0.0.1:%d" % be.port)
            self.assertTrue(wait_tunnels(srv, 1), srv.describe())
            r = get(srv.port, "/_token/%s/x" % tok)
            self.assertStatus(r, 502)
            self.assertIn("Transfer-Encoding", r.text)
            self.assertGreaterEqual(be.requests, 1)


    def test_gzip_chunked_from_a_tunnel_is_506(self):
        """A tunnel client (hand-written: wstuncli and Go's refuse such a
        backend response) sending a response with a coding besides
        chunked: the server cannot relay it faithfully: 506, as for any
        response it cannot parse, and the reason in its log."""
        srv = self.server()
        tok = "tok-rogue-te-0123456789"
        tun = self.raw_tunnel(srv, tok)
        self.assertTrue(wait_tunnels(srv, 1), srv.describe())
        got = []
        t = threading.Thread(target=lambda: got.append(get(srv.port, "/_token/%s/x" % tok)))
        t.start()
        rid = tun.next_request(10)[0]
        tun.respond(rid, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                         b"5\r\nhello\r\n0\r\n\r\n")
        t.join(15)
        self.assertTrue(got, "no answer")
        self.assertStatus(got[0], 506)
        self.assertIsNotNone(srv.wait_stderr(r"id=%s: Transfer-Encoding of the response "
                                             r"not supported" % rid, 5), srv.describe())


class Smuggling(E2ETestCase):
    def test_content_length_with_transfer_encoding_is_400(self):
        srv, cli, be, tok = self.tunnel()
        req = ("POST /_token/%s/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
               "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % tok).encode()
        r = raw_http(srv.port, req)
        self.assertEqual(r.status, 400)
        self.assertEqual(be.count(), 0)

    def test_space_before_colon_is_400(self):
        srv, cli, be, tok = self.tunnel()
        req = ("GET /_token/%s/echo HTTP/1.1\r\nHost : evil.example\r\n\r\n" % tok).encode()
        r = raw_http(srv.port, req)
        self.assertEqual(r.status, 400)
        self.assertEqual(be.count(), 0, "the bad request reached the backend")


class UpgradeSmuggling(E2ETestCase):
    """An upgrade or CONNECT request ends at its head for the parser: the
    bytes after it must not become a second request."""

    def check(self, first_line, extra, status, *srv_flags):
        srv, cli, be, tok = self.tunnel(*srv_flags)
        hidden = "GET /_token/%s/smuggled HTTP/1.1\r\nHost: x\r\n\r\n" % tok
        req = ("%s\r\nHost: x\r\n%sContent-Length: %d\r\n\r\n%s"
               % (first_line % tok, extra, len(hidden), hidden)).encode()
        s = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(req)
        out = read_all(s, 5)
        self.assertTrue(out.startswith(b"HTTP/1.1 %d " % status), out[:80])
        self.assertEqual(out.count(b"HTTP/1.1 "), 1, "a second response came: %r" % out)
        time.sleep(0.2)
        self.assertFalse(any("smuggled" in r["path"] for r in be.requests),
                         "the hidden request reached the backend")

    def test_upgrade_request(self):
        # v2 passes it through (PROTOCOL.md 7.6): this backend refuses it
        # with a 200, and the bytes after the head are never a request
        self.check("GET /_token/%s/ws HTTP/1.1", "Connection: Upgrade\r\nUpgrade: websocket\r\n", 200)

    def test_upgrade_request_v1(self):
        self.check("GET /_token/%s/ws HTTP/1.1", "Connection: Upgrade\r\nUpgrade: websocket\r\n", 501,
                   "-protocol", "v1")

    def test_connect_request(self):
        self.check("CONNECT /_token/%s/x HTTP/1.1", "", 405)


class PathTricks(E2ETestCase):
    def test_encoded_slash_in_token_is_not_a_token(self):
        srv, cli, be, tok = self.tunnel()
        half = len(tok) // 2
        r = get(srv.port, "/_token/%s%%2F%s/echo" % (tok[:half], tok[half:]))
        self.assertEqual(r.status, 404)

    def test_dot_segments_stay_behind_the_token(self):
        srv, cli, be, tok = self.tunnel()
        r = get(srv.port, "/_token/%s/../../_stats" % tok)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["path"], "/../../_stats",
                         "the rest of the path goes to the backend as written")


class RogueServer(E2ETestCase):
    """A tunnel server that sends garbage after the handshake: the client
    drops that tunnel, redials, and keeps serving a good server later."""

    def rogue(self, payload_fn):
        from harness import FakeTunnelServer  # noqa: F401
        def handler(fake, conn):
            try:
                conn["ws"].sock.sendall(payload_fn())
            except OSError:
                pass
            FakeTunnelServer.keep_open(fake, conn)
        fake = self.fake_tunnel_server(handler=handler)
        cli = self.client(fake.port, "rogue-test-token-0123456789", "-timeout", "3",
                          server_url="http://127.0.0.1:1")
        self.assertTrue(fake.wait_conns(2, 10), "the client did not redial")
        self.assertTrue(cli.alive(), cli.describe())
        return cli

    def test_garbage_bytes(self):
        self.rogue(lambda: bytes(range(256)) * 64)

    def test_text_frame(self):
        from harness import encode_frame
        self.rogue(lambda: encode_frame(1, b"hello", mask=False))

    def test_huge_frame_header(self):
        # a binary frame announcing 2^63-1 bytes, then nothing sensible
        self.rogue(lambda: b"\x82\x7f\x7f\xff\xff\xff\xff\xff\xff\xff" + b"zz")

    def test_response_without_id_prefix(self):
        from harness import encode_frame
        self.rogue(lambda: encode_frame(2, b"GET / HTTP/1.1\r\n\r\n", mask=False) +
                   bytes(range(256)))


if __name__ == "__main__":
    main()
