"""Error answers of the server and the client (PROTOCOL.md §3): exact
statuses and texts."""

import http.client
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, HOST, TIME_SCALE, Background, get, http_req,  # noqa: E402
                     raw_http, make_token, dead_port, read_response, wait_tunnels,
                     wait_until, main)


class ServerErrors(E2ETestCase):
    def test_missing_token_400(self):
        srv = self.server()
        for path in ("/", "/some/path"):
            r = get(srv.port, path)
            self.assertStatus(r, 400)
            self.assertBody(r, "Missing X-Token header")

    def test_unknown_token_404(self):
        srv = self.server()
        r = get(srv.port, "/_token/%s/x" % make_token())
        self.assertStatus(r, 404)
        self.assertBody(r, "Tunnel not found (or not seen in a long time)")
        r = get(srv.port, "/x", headers={"X-Token": make_token()})
        self.assertStatus(r, 404)
        self.assertBody(r, "Tunnel not found (or not seen in a long time)")

    def test_token_without_path_400(self):
        """Go's route is ^/_token/([^/]+)(/.*): without a path after the
        token (or without a token) it answers 400 and forwards nothing,
        whatever X-Token says."""
        srv, cli, be, tok = self.tunnel()
        for path in ("/_token/%s" % tok, "/_token/%s?a=1" % tok, "/_token/",
                     "/_token/?x=/y", "/_token//echo"):
            for hdrs in ({}, {"X-Token": tok}):
                r = get(srv.port, path, headers=hdrs)
                self.assertStatus(r, 400)
                self.assertBody(r, "Missing token in URI")
                self.assertEqual(r.header("X-Content-Type-Options"), "nosniff")
        self.assertEqual(be.count(), 0, "a request without a path was forwarded")
        self.assertStatus(get(srv.port, "/_token/%s/" % tok), 200)

    def test_server_endpoints_are_never_tunneled(self):
        """As the Go server: /_health_check, /_stats and /admin/... answer
        themselves even with X-Token; any other path with X-Token (our
        /metrics included, as Go has none) goes down the tunnel."""
        srv, cli, be, tok = self.tunnel()
        hdrs = {"X-Token": tok}
        self.assertEqual(get(srv.port, "/_health_check", headers=hdrs).body,
                         b"WSTUNSRV RUNNING\n")
        self.assertTrue(get(srv.port, "/_stats", headers=hdrs).text.startswith("tunnels=1\n"))
        self.assertIn("errored_requests",
                      get(srv.port, "/admin/monitoring", headers=hdrs).json())
        self.assertIn("tunnels", get(srv.port, "/admin/auditing", headers=hdrs).json())
        self.assertEqual(be.count(), 0)
        r = get(srv.port, "/metrics", headers=hdrs)
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["path"], "/metrics")
        self.assertEqual(be.count(), 1)

    def test_outside_base_path_404(self):
        srv = self.server(base_path="/wst")
        for path in ("/", "/x", "/wstx/_health_check", "/_token/%s/x" % make_token()):
            r = get(srv.port, path)
            self.assertStatus(r, 404)
            self.assertEqual(r.body, b"404 page not found\n")  # Go's ServeMux text
        self.assertStatus(get(srv.port, "/wst/_health_check"), 200)

    def test_malformed_request_400(self):
        srv = self.server()
        for junk in (b"GARBAGE\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
                     b"GET / HTTP/9\r\n\r\n"):
            r = raw_http(srv.port, junk)
            self.assertStatus(r, 400)
        # the server is still fine
        self.assertEqual(get(srv.port, "/_health_check").status, 200)

    def test_header_block_too_large_431(self):
        srv = self.server("-max-header-bytes", "2048")
        r = get(srv.port, "/_token/%s/x" % make_token(), headers={"X-Big": "a" * 4000})
        self.assertStatus(r, 431)
        r = get(srv.port, "/_health_check", headers={"X-Small": "a" * 500})
        self.assertStatus(r, 200)

    def test_header_block_default_limit_431(self):
        srv = self.server()
        hdrs = {"X-Big-%d" % i: "b" * 7000 for i in range(10)}  # ~70 KiB > 64 KiB
        r = get(srv.port, "/_token/%s/x" % make_token(), headers=hdrs)
        self.assertStatus(r, 431)

    def test_body_too_large_413(self):
        srv, cli, be, tok = self.tunnel("-max-body", "1000")
        r = http_req(srv.port, "POST", "/_token/%s/upload" % tok, body=b"x" * 1000)
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["len"], 1000)
        r = raw_http(srv.port, b"POST /_token/%s/upload HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Length: 1001\r\n\r\n%s" % (tok.encode(), b"y" * 1001))
        self.assertStatus(r, 413)
        r = raw_http(srv.port, b"POST /_token/%s/upload HTTP/1.1\r\nHost: x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" % tok.encode()
                     + b"".join(b"1f4\r\n%s\r\n" % (b"z" * 500) for _ in range(3)) + b"0\r\n\r\n")
        self.assertStatus(r, 413)
        self.assertEqual(be.count(), 1, "an oversized body reached the backend")

    def test_http_timeout_504(self):
        srv, cli, be, tok = self.tunnel("-httptimeout", "2")
        t0 = time.monotonic()
        r = get(srv.port, "/_token/%s/slow?ms=6000" % tok, timeout=15)
        dt = time.monotonic() - t0
        self.assertStatus(r, 504)
        self.assertBody(r, "Tunnel timeout")
        self.assertGreater(dt, 1.5)
        self.assertLess(dt, 5.0)
        # the late backend answer does not end up on the next request
        self.assertTrue(be.wait_slow_done(1, 10))
        time.sleep(0.3)
        r = get(srv.port, "/_token/%s/echo?after=1" % tok)
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["path"], "/echo?after=1")

    def test_requester_leaving_early_does_not_break_tunnel(self):
        srv, cli, be, tok = self.tunnel()
        s = socket.create_connection((HOST, srv.port), timeout=5)
        s.sendall(b"GET /_token/%s/slow?ms=800 HTTP/1.1\r\nHost: x\r\n\r\n" % tok.encode())
        # the requester leaves once its request is at the backend (recorded
        # before the 800 ms wait), i.e. while the answer is on its way
        self.assertTrue(wait_until(lambda: be.count() == 1, 10 * TIME_SCALE),
                        "the request never reached the backend")
        s.close()
        self.assertTrue(be.wait_slow_done(1, 5))
        for i in range(3):
            r = get(srv.port, "/_token/%s/echo?i=%d" % (tok, i))
            self.assertStatus(r, 200)
            self.assertEqual(r.json()["path"], "/echo?i=%d" % i)


class HeadAnswers(E2ETestCase):
    """Answers to HEAD carry no body, our own as well as relayed ones: a
    keep-alive requester would read the body as its next response."""

    def exchange(self, port, *reqs):
        """Sends (method, path, extra headers) requests pipelined on one
        connection, returns their responses."""
        data = b"".join(b"%s %s HTTP/1.1\r\nHost: x\r\n%s\r\n"
                        % (m.encode(), p.encode(), h.encode()) for m, p, h in reqs)
        with socket.create_connection((HOST, port), timeout=10) as s:
            s.sendall(data)
            f = s.makefile("rb")
            return [read_response(f, method=m) for m, _, _ in reqs]

    def test_local_answers_to_head_have_no_body(self):
        srv, cli, be, tok = self.tunnel()
        tail = ("GET", "/_health_check", "")
        for head in (("HEAD", "/_health_check", ""),      # 200
                     ("HEAD", "/nowhere", ""),            # 404
                     ("HEAD", "/_token/%s" % tok, ""),    # 400
                     ("HEAD", "/x", "X-Token: %s\r\n" % make_token("unknown"))):
            with self.subTest(head=head):
                r1, r2 = self.exchange(srv.port, head, tail)
                self.assertIn(r1.status, (200, 400, 404))
                self.assertEqual((r2.status, r2.body), (200, b"WSTUNSRV RUNNING\n"))

    def test_client_answer_to_head_has_no_body(self):
        # wstuncli answers 403 itself (X-Host without -regexp): through the
        # tunnel, then relayed; the next response on the connection is intact
        srv, cli, be, tok = self.tunnel()
        r1, r2 = self.exchange(srv.port,
                               ("HEAD", "/_token/%s/a" % tok, "X-Host: http://127.0.0.1:1\r\n"),
                               ("GET", "/_token/%s/echo" % tok, ""))
        self.assertEqual(r1.status, 403)
        self.assertEqual(r2.status, 200)
        self.assertEqual(r2.json()["path"], "/echo")
        self.assertFalse(any("after the response" in ln for ln in srv.err_lines),
                         srv.describe())


class ClientErrors(E2ETestCase):
    def test_x_host_without_regexp_403(self):
        srv, cli, be, tok = self.tunnel()
        r = get(srv.port, "/_token/%s/x" % tok, headers={"X-Host": be.url})
        self.assertStatus(r, 403)
        self.assertBody(r, "X-Host header disallowed by wstunnel cli (no -regexp option)")
        self.assertEqual(be.count(), 0)

    def test_x_host_not_matching_403(self):
        rx = r"http://127\.0\.0\.1:[0-9]+"
        srv, cli, be, tok = self.tunnel(cli_flags=("-regexp", rx))
        for bad in ("http://10.0.0.1:80", "http://127.0.0.1:80.evil.example",
                    "xhttp://127.0.0.1:80"):
            r = get(srv.port, "/_token/%s/x" % tok, headers={"X-Host": bad})
            self.assertStatus(r, 403)
            self.assertBody(r, "X-Host header '%s' does not match regexp in wstunnel cli" % bad)
        self.assertEqual(be.count(), 0)

    def test_server_path_is_a_prefix(self):
        # Go requests `-server` + RequestURI: a path in -server is a prefix
        # (one trailing slash dropped)
        be = self.backend()
        srv = self.server()
        for suffix in ("/pre", "/pre/"):
            with self.subTest(server=be.url + suffix):
                tok = make_token()
                self.client(srv, tok, server_url=be.url + suffix)
                self.assertTrue(wait_tunnels(srv, 1 + (suffix == "/pre/")))
                r = get(srv.port, "/_token/%s/a/b?q=1" % tok)
                self.assertStatus(r, 200)
                self.assertEqual(r.json()["path"], "/pre/a/b?q=1")
                r = get(srv.port, "/x", headers={"X-Token": tok})
                self.assertEqual(r.json()["path"], "/pre/x")

    def test_x_host_path_is_a_prefix(self):
        # Go: the whole X-Host value must match -regexp and is then a string
        # prefix, path included
        other = self.backend("other")
        rx = r"http://127\.0\.0\.1:[0-9]+(/v1)?"
        srv, cli, be, tok = self.tunnel(cli_flags=("-regexp", rx))
        r = get(srv.port, "/_token/%s/a?q=1" % tok, headers={"X-Host": other.url + "/v1"})
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["backend"], "other")
        self.assertEqual(r.json()["path"], "/v1/a?q=1")
        # a path the regexp does not allow is refused, as in Go
        bad = other.url + "/v2"
        r = get(srv.port, "/_token/%s/a" % tok, headers={"X-Host": bad})
        self.assertStatus(r, 403)
        self.assertBody(r, "X-Host header '%s' does not match regexp in wstunnel cli" % bad)
        # userinfo still never passes, even when the regexp would allow it
        srv2, cli2, be2, tok2 = self.tunnel(cli_flags=("-regexp", r"http://.*"))
        evil = "http://127.0.0.1:1@%s" % other.url[len("http://"):]
        r = get(srv2.port, "/_token/%s/a" % tok2, headers={"X-Host": evil})
        self.assertStatus(r, 403)
        self.assertEqual(other.count(), 1)

    def test_x_host_matching_goes_there(self):
        rx = r"http://127\.0\.0\.1:[0-9]+"
        other = self.backend("other")
        srv, cli, be, tok = self.tunnel(cli_flags=("-regexp", rx))
        r = get(srv.port, "/_token/%s/p?q=1" % tok, headers={"X-Host": other.url})
        self.assertStatus(r, 200)
        echo = r.json()
        self.assertEqual(echo["backend"], "other")
        self.assertEqual(echo["path"], "/p?q=1")
        self.assertEqual(be.count(), 0)
        # without X-Host the default backend is used
        r = get(srv.port, "/_token/%s/name" % tok)
        self.assertEqual(r.body, b"backend")

    def test_x_host_only_client(self):
        """No -server: X-Host is required."""
        rx = r"http://127\.0\.0\.1:[0-9]+"
        be = self.backend()
        srv = self.server()
        tok = make_token()
        self.client(srv, tok, "-regexp", rx)
        self.assertTrue(wait_tunnels(srv, 1))
        r = get(srv.port, "/_token/%s/x" % tok)
        self.assertStatus(r, 403)
        self.assertBody(r, "X-Host header required by wstunnel cli (no -server option)")
        r = get(srv.port, "/_token/%s/name" % tok, headers={"X-Host": be.url})
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"backend")

    def test_backend_down_502(self):
        srv = self.server()
        tok = make_token()
        sock, port = dead_port()
        self.addCleanup(sock.close)
        self.client(srv, tok, server_url="http://127.0.0.1:%d" % port)
        self.assertTrue(wait_tunnels(srv, 1))
        r = get(srv.port, "/_token/%s/x" % tok)
        self.assertStatus(r, 502)
        self.assertTrue(r.body, "502 with an empty body")
        self.assertLess(len(r.body), 1024)

    def test_backend_dies_mid_response_is_not_200_with_short_body(self):
        """A backend that closes before sending the promised bytes must not
        yield a complete-looking response."""
        lsock = socket.socket()
        lsock.bind((HOST, 0))
        lsock.listen(4)
        lsock.settimeout(10)
        self.addCleanup(lsock.close)

        def serve():
            c, _ = lsock.accept()
            c.settimeout(5)
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = c.recv(4096)
                if not d:
                    break
                buf += d
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly-part")
            c.close()

        bg = Background(serve)
        srv = self.server()
        tok = make_token()
        self.client(srv, tok, server_url="http://127.0.0.1:%d" % lsock.getsockname()[1])
        self.assertTrue(wait_tunnels(srv, 1))
        try:
            r = get(srv.port, "/_token/%s/x" % tok, timeout=10)
        except (OSError, EOFError, http.client.HTTPException) as e:  # IncompleteRead etc.
            r = e
        bg.result(5)
        if not isinstance(r, Exception):
            self.assertFalse(r.status == 200 and len(r.body) == 100,
                             "truncated backend body delivered as complete: %r" % r)


if __name__ == "__main__":
    main()
