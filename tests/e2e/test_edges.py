"""Boundaries that a one-line change in lib/ would move without any other
test noticing (found by mutation sampling): the end anchor of the X-Host
regexp, the base path's boundary, backend keep-alive reuse and its replay
on a fresh connection, the token table growing past its first size, and
the server's shutdown grace period running out."""

import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, HOST, get, make_token,  # noqa: E402
                     main, stats_tunnels, wait_tunnels, wait_until)


class XHostAnchor(E2ETestCase):
    def test_regexp_must_match_the_whole_value(self):
        # 'http://127\.0\.0\.1' matches a prefix of the value only: refused
        be = self.backend()
        srv = self.server()
        tok = make_token()
        self.client(srv, tok, "-regexp", r"http://127\.0\.0\.1", server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1))
        r = get(srv.port, "/_token/%s/echo" % tok, headers={"X-Host": be.url})
        self.assertStatus(r, 403)
        self.assertIn(b"does not match regexp", r.body)
        self.assertEqual(be.count(), 0)

    def test_regexp_covering_the_port_is_allowed(self):
        be = self.backend()
        srv = self.server()
        tok = make_token()
        self.client(srv, tok, "-regexp", r"http://127\.0\.0\.1:[0-9]+", server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1))
        r = get(srv.port, "/_token/%s/echo" % tok, headers={"X-Host": be.url})
        self.assertStatus(r, 200)
        self.assertEqual(be.count(), 1)


class BasePathBoundary(E2ETestCase):
    def test_a_longer_first_segment_is_outside_the_base_path(self):
        srv, cli, be, tok = self.tunnel(base_path="/wst")
        self.assertStatus(get(srv.port, "/wst/_token/%s/echo" % tok), 200)
        for path in ("/wstx/_token/%s/echo" % tok, "/wstx/_health_check",
                     "/wst_token/%s/echo" % tok, "/ws/_health_check"):
            r = get(srv.port, path)
            self.assertStatus(r, 404)
        r = get(srv.port, "/wstx/anything", headers={"X-Token": tok})
        self.assertStatus(r, 404)
        self.assertEqual(be.count(), 1)
        self.assertStatus(get(srv.port, "/wst/_health_check"), 200)

    def test_x_token_on_the_base_path_itself_forwards_a_path(self):
        srv, cli, be, tok = self.tunnel(base_path="/wst")
        for path, want in (("/wst", "/"), ("/wst?q=1", "/?q=1"), ("/wst/", "/")):
            r = get(srv.port, path, headers={"X-Token": tok})
            self.assertStatus(r, 200)
            self.assertEqual(r.json()["path"], want, path)


class BackendKeepAlive(E2ETestCase):
    def test_sequential_requests_share_one_backend_connection(self):
        srv, cli, be, tok = self.tunnel()
        for i in range(4):
            self.assertStatus(get(srv.port, "/_token/%s/echo?i=%d" % (tok, i)), 200)
        ports = {rec["peer_port"] for rec in be.requests}
        self.assertEqual(len(be.requests), 4)
        self.assertEqual(len(ports), 1, "backend connections: %r" % ports)

    def test_connection_that_dies_on_reuse_is_replayed_on_a_fresh_one(self):
        srv, cli, be, tok = self.tunnel()
        r1 = get(srv.port, "/_token/%s/once?n=1" % tok)
        self.assertStatus(r1, 200)
        # the pooled connection is taken, the backend drops it on this
        # request: the client must send it again on a new connection
        r2 = get(srv.port, "/_token/%s/once?n=2" % tok)
        self.assertStatus(r2, 200)
        self.assertEqual(r2.json()["path"], "/once?n=2")
        ports = [rec["peer_port"] for rec in be.requests]
        self.assertEqual(len(ports), 3, ports)  # 1, 2 (dropped), 2 again
        self.assertEqual(ports[0], ports[1])
        self.assertNotEqual(ports[1], ports[2])


class ManyTokens(E2ETestCase):
    def test_token_table_grows_past_its_first_size(self):
        # the table starts with 64 buckets and doubles when full
        srv = self.server()
        n = 150
        toks = [make_token("grow%03d" % i) for i in range(n)]
        tuns = [self.raw_tunnel(srv, t) for t in toks]
        self.assertTrue(wait_until(lambda: stats_tunnels(srv) == n, 15),
                        "tunnels=%r" % stats_tunnels(srv))
        for i in (0, 1, 63, 64, 65, 127, 128, n - 1):
            sock = socket.create_connection((HOST, srv.port), timeout=5)
            try:
                sock.sendall(b"GET /_token/%s/k%d HTTP/1.1\r\nHost: h\r\n\r\n"
                             % (toks[i].encode(), i))
                rid, first, hdrs, body, _ = tuns[i].next_request(5)
                self.assertEqual(first, "GET /k%d HTTP/1.1" % i)
                tuns[i].respond(rid, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                got = b""
                while b"\r\n\r\nok" not in got:
                    piece = sock.recv(4096)
                    if not piece:
                        break
                    got += piece
                self.assertTrue(got.startswith(b"HTTP/1.1 200"), got[:100])
            finally:
                sock.close()


class ShutdownGrace(E2ETestCase):
    def test_busy_request_is_cut_when_the_grace_period_ends(self):
        # wstunsrv gives busy requests 10 s after SIGTERM, then closes
        srv, cli, be, tok = self.tunnel()
        sock = socket.create_connection((HOST, srv.port), timeout=30)
        self.addCleanup(sock.close)
        sock.sendall(b"GET /_token/%s/slow?ms=25000 HTTP/1.1\r\nHost: h\r\n\r\n" % tok.encode())
        self.assertTrue(wait_until(lambda: be.count() == 1, 5))
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        got = b""
        while True:
            try:
                piece = sock.recv(4096)
            except (ConnectionResetError, socket.timeout):
                break
            if not piece:
                break
            got += piece
        cut_after = time.monotonic() - t0
        self.assertEqual(got, b"", "the requester got an answer")
        self.assertGreater(cut_after, 8, "cut before the grace period ended")
        self.assertLess(cut_after, 20, "not cut when the grace period ended")
        self.assertEqual(srv.wait(10), 0)


if __name__ == "__main__":
    main()
