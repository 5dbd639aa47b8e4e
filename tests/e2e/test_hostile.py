"""Hostile requesters: slowloris heads, connection floods (caps), request
smuggling and path tricks. The server answers clearly and stays up."""

import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import E2ETestCase, HOST, get, raw_http, wait_until, main  # noqa: E402


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
        srv = self.server()
        held = []
        try:
            for _ in range(n):
                held.append(connect(srv.port))
            self.assertEqual(get(srv.port, "/_health_check").status, 200)
        finally:
            for s in held:
                s.close()


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

    def check(self, first_line, extra, status):
        srv, cli, be, tok = self.tunnel()
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
        self.check("GET /_token/%s/ws HTTP/1.1", "Connection: Upgrade\r\nUpgrade: websocket\r\n", 501)

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
