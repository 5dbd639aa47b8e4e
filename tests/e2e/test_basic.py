"""Basic request routing through a real wstunsrv + wstuncli pair."""

import os
import re
import sys
import json
import http.client

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, HOST, TIME_SCALE, get, http_req, raw_http,  # noqa: E402
                     wait_tunnels, rec_headers, make_token, stats_text, main)


class Endpoints(E2ETestCase):
    def test_health_check(self):
        srv = self.server()
        r = get(srv.port, "/_health_check")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"WSTUNSRV RUNNING\n")

    def test_stats_counts_tunnels(self):
        be = self.backend()
        srv = self.server()
        status, text = stats_text(srv)
        self.assertEqual(status, 200)
        self.assertRegex(text, r"(?m)^tunnels=0\s*$")
        c1 = self.client(srv, make_token(), server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1), text)
        c2 = self.client(srv, make_token(), server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 2))
        c1.stop()
        self.assertTrue(wait_tunnels(srv, 1))
        c2.stop()
        self.assertTrue(wait_tunnels(srv, 0))

    def test_admin_monitoring_json(self):
        srv, cli, be, tok = self.tunnel()
        self.assertStatus(get(srv.port, "/_token/%s/echo" % tok), 200)
        r = get(srv.port, "/admin/monitoring")
        self.assertStatus(r, 200)
        doc = r.json()
        for k in ("timestamp", "unique_tunnels", "tunnel_connections", "pending_requests",
                  "completed_requests", "errored_requests"):
            self.assertIn(k, doc)
        self.assertEqual(doc["unique_tunnels"], 1)
        self.assertEqual(doc["tunnel_connections"], 1)
        self.assertGreaterEqual(doc["completed_requests"], 1)
        self.assertRegex(doc["timestamp"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

    def test_admin_auditing_json(self):
        srv, cli, be, tok = self.tunnel()
        r = get(srv.port, "/admin/auditing")
        self.assertStatus(r, 200)
        doc = r.json()
        self.assertIn("timestamp", doc)
        self.assertIn(tok, doc["tunnels"])
        t = doc["tunnels"][tok]
        self.assertEqual(t["token"], tok)
        self.assertIn("client_version", t)
        self.assertIsInstance(t["active_connections"], list)


class Routing(E2ETestCase):
    def test_token_path_route(self):
        srv, cli, be, tok = self.tunnel()
        r = get(srv.port, "/_token/%s/some/path?x=1&y=%%20z" % tok)
        self.assertStatus(r, 200)
        echo = r.json()
        self.assertEqual(echo["method"], "GET")
        self.assertEqual(echo["path"], "/some/path?x=1&y=%20z")
        self.assertEqual(echo["backend"], "backend")

    def test_token_path_root(self):
        srv, cli, be, tok = self.tunnel()
        r = get(srv.port, "/_token/%s/" % tok)
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["path"], "/")

    def test_x_token_header_route(self):
        srv, cli, be, tok = self.tunnel()
        r = get(srv.port, "/any/path/here?q=%s" % "v", headers={"X-Token": tok})
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["path"], "/any/path/here?q=v")

    def test_methods_and_bodies(self):
        srv, cli, be, tok = self.tunnel()
        body = bytes(range(256)) * 4
        for method in ("POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
            r = http_req(srv.port, method, "/_token/%s/m" % tok, body=body,
                         headers={"Content-Type": "application/octet-stream"})
            self.assertStatus(r, 200)
            echo = r.json()
            self.assertEqual(echo["method"], method)
            self.assertEqual(echo["body_len"], len(body))
            self.assertEqual(echo["body"].encode("latin-1"), body)
        r = http_req(srv.port, "POST", "/_token/%s/empty" % tok, body=b"")
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["body_len"], 0)

    def test_head_request(self):
        srv, cli, be, tok = self.tunnel()
        conn = http.client.HTTPConnection(HOST, srv.port, timeout=10)
        self.addCleanup(conn.close)
        r = http_req(srv.port, "HEAD", "/_token/%s/bytes?n=1000" % tok, conn=conn)
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"")
        # the connection is still usable afterwards (no stray body bytes)
        r = http_req(srv.port, "GET", "/_token/%s/echo" % tok, conn=conn)
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["path"], "/echo")

    def test_status_codes_pass_through(self):
        srv, cli, be, tok = self.tunnel()
        for code in (201, 400, 404, 418, 500, 503):
            r = get(srv.port, "/_token/%s/status?code=%d" % (tok, code))
            self.assertStatus(r, code)
            self.assertEqual(r.body, b"status %d\n" % code)
        for code in (204, 304):
            r = get(srv.port, "/_token/%s/status?code=%d" % (tok, code))
            self.assertStatus(r, code)
            self.assertEqual(r.body, b"")

    def test_interim_responses_skipped(self):
        srv, cli, be, tok = self.tunnel()
        r = get(srv.port, "/_token/%s/interim" % tok)
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"final\n")
        # the backend connection is still in step: the next answer is right
        r = get(srv.port, "/_token/%s/name" % tok)
        self.assertEqual(r.body, b"backend")

    def test_redirect_not_followed(self):
        srv, cli, be, tok = self.tunnel()
        target = "http://127.0.0.1:1/not-followed"
        r = get(srv.port, "/_token/%s/redirect?to=%s" % (tok, target))
        self.assertStatus(r, 302)
        self.assertEqual(r.header("Location"), target)
        self.assertEqual(r.body, b"redirecting\n")
        self.assertEqual(be.count(), 1)

    def test_several_tokens_route_to_their_own_backend(self):
        srv = self.server()
        pairs = []
        for i in range(3):
            be = self.backend("b%d" % i)
            tok = make_token("t%d" % i)
            self.client(srv, tok, server_url=be.url)
            pairs.append((tok, be))
        self.assertTrue(wait_tunnels(srv, 3))
        for _ in range(2):
            for tok, be in pairs:
                r = get(srv.port, "/_token/%s/name" % tok)
                self.assertStatus(r, 200)
                self.assertEqual(r.body, be.name.encode())


class Headers(E2ETestCase):
    def test_backend_sees_its_own_host(self):
        srv, cli, be, tok = self.tunnel()
        r = get(srv.port, "/_token/%s/echo" % tok)
        self.assertStatus(r, 200)
        self.assertEqual(rec_headers(r.json(), "Host"), ["127.0.0.1:%d" % be.port])

    def test_x_forwarded_for_added(self):
        srv, cli, be, tok = self.tunnel()
        r = get(srv.port, "/_token/%s/echo" % tok)
        self.assertEqual(rec_headers(r.json(), "X-Forwarded-For"), ["127.0.0.1"])
        r = get(srv.port, "/_token/%s/echo" % tok, headers={"X-Forwarded-For": "10.1.2.3"})
        xff = rec_headers(r.json(), "X-Forwarded-For")
        self.assertEqual(len(xff), 1, xff)
        self.assertEqual(re.sub(r"\s+", " ", xff[0]), "10.1.2.3, 127.0.0.1")

    def test_end_to_end_headers_pass(self):
        srv, cli, be, tok = self.tunnel()
        r = get(srv.port, "/_token/%s/echo" % tok,
                headers={"X-Custom": "value 1", "Cookie": "a=b; c=d",
                         "Authorization": "Bearer abc", "User-Agent": "e2e/1"})
        echo = r.json()
        self.assertEqual(rec_headers(echo, "X-Custom"), ["value 1"])
        self.assertEqual(rec_headers(echo, "Cookie"), ["a=b; c=d"])
        self.assertEqual(rec_headers(echo, "Authorization"), ["Bearer abc"])
        self.assertEqual(rec_headers(echo, "User-Agent"), ["e2e/1"])

    def test_hop_by_hop_request_headers_dropped(self):
        srv, cli, be, tok = self.tunnel()
        r = get(srv.port, "/_token/%s/echo" % tok, headers={
            "Connection": "keep-alive",
            "Keep-Alive": "timeout=300",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "TE": "trailers",
            "Trailers": "X-Foo",
            "Upgrade": "h2c-nonsense",
            "X-Still-Here": "1",
        })
        self.assertStatus(r, 200)
        echo = r.json()
        for h in ("Keep-Alive", "Proxy-Authorization", "TE", "Trailers", "Upgrade"):
            self.assertEqual(rec_headers(echo, h), [], "backend saw %s" % h)
        for v in rec_headers(echo, "Connection"):
            self.assertNotIn("upgrade", v.lower())
        self.assertEqual(rec_headers(echo, "X-Still-Here"), ["1"])

    def test_x_host_stripped_before_backend(self):
        srv, cli, be, tok = self.tunnel(cli_flags=("-regexp", r"http://127\.0\.0\.1:[0-9]+"))
        r = get(srv.port, "/_token/%s/echo" % tok, headers={"X-Host": be.url})
        self.assertStatus(r, 200)
        self.assertEqual(rec_headers(r.json(), "X-Host"), [])

    def test_hop_by_hop_response_headers_dropped(self):
        srv, cli, be, tok = self.tunnel()
        r = get(srv.port, "/_token/%s/hop" % tok)
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"hop\n")
        self.assertIsNone(r.header("Keep-Alive"))
        self.assertIsNone(r.header("Trailers"))
        self.assertIsNone(r.header("TE"))
        self.assertEqual(r.header("X-Kept"), "yes")
        self.assertEqual(r.header_all("Set-Cookie"), ["a=1", "b=2"])
        self.assertEqual(r.header("Content-Type"), "text/plain")

    def test_large_header_value(self):
        srv, cli, be, tok = self.tunnel()
        big = "v" * 16000
        r = get(srv.port, "/_token/%s/echo" % tok, headers={"X-Big": big})
        self.assertStatus(r, 200)
        self.assertEqual(rec_headers(r.json(), "X-Big"), [big])


class Connections(E2ETestCase):
    def test_keep_alive_front_connection(self):
        srv, cli, be, tok = self.tunnel()
        conn = http.client.HTTPConnection(HOST, srv.port, timeout=10)
        self.addCleanup(conn.close)
        r = http_req(srv.port, "GET", "/_token/%s/echo?i=0" % tok, conn=conn)
        self.assertStatus(r, 200)
        sock = conn.sock
        self.assertIsNotNone(sock, "server closed the front connection after one request")
        for i in range(1, 6):
            method = "POST" if i % 2 else "GET"
            body = b"x" * i if method == "POST" else None
            r = http_req(srv.port, method, "/_token/%s/echo?i=%d" % (tok, i), conn=conn,
                         body=body)
            self.assertStatus(r, 200)
            self.assertEqual(r.json()["path"], "/echo?i=%d" % i)
            self.assertIs(conn.sock, sock, "front connection was not kept alive")
        # endpoints and errors on the same connection
        r = http_req(srv.port, "GET", "/_health_check", conn=conn)
        self.assertEqual(r.body, b"WSTUNSRV RUNNING\n")
        r = http_req(srv.port, "GET", "/_token/%s/echo" % make_token(), conn=conn)
        self.assertStatus(r, 404)

    def test_pipelined_requests(self):
        srv, cli, be, tok = self.tunnel()
        req = "".join("GET /_token/%s/echo?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (tok, i)
                      for i in range(3))
        rs = raw_http(srv.port, req.encode(), responses=3)
        self.assertEqual([r.status for r in rs], [200, 200, 200])
        self.assertEqual([r.json()["path"] for r in rs], ["/echo?n=%d" % i for i in range(3)])

    def test_http10_request(self):
        srv, cli, be, tok = self.tunnel()
        r = raw_http(srv.port, ("GET /_token/%s/echo HTTP/1.0\r\n\r\n" % tok).encode())
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["path"], "/echo")

    def test_connection_close_honoured(self):
        srv, cli, be, tok = self.tunnel()
        # with Connection: close the server answers then closes: raw_http
        # reads until EOF only if the body were close-delimited, so check EOF.
        import socket
        with socket.create_connection((HOST, srv.port), timeout=10) as s:
            s.sendall(("GET /_token/%s/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                       % tok).encode())
            data = b""
            while True:
                c = s.recv(65536)
                if not c:
                    break
                data += c
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:100])
        self.assertIn(b'"path": "/echo"', data)


class Curl(E2ETestCase):
    """The tunnel as curl users meet it."""

    def curl(self, *args, timeout=30):
        import subprocess
        p = subprocess.run(["curl", "-sS", "--max-time", str(timeout)] + list(args),
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout + 5)
        return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")

    def test_curl_get(self):
        srv, cli, be, tok = self.tunnel()
        rc, out, err = self.curl("http://127.0.0.1:%d/_token/%s/echo?c=1" % (srv.port, tok))
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["path"], "/echo?c=1")
        rc, out, err = self.curl("-H", "X-Token: " + tok, "-X", "DELETE",
                                 "http://127.0.0.1:%d/thing" % srv.port)
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["method"], "DELETE")

    def test_curl_upload_with_expect_100_continue(self):
        import hashlib
        import tempfile
        import time
        srv, cli, be, tok = self.tunnel()
        data = os.urandom(3 * 1024 * 1024)
        with tempfile.NamedTemporaryFile(delete=False) as f:
            f.write(data)
        self.addCleanup(os.unlink, f.name)
        # curl sends the body anyway after --expect100-timeout (1 s by
        # default: no bound on a slow machine): made long, a missing or late
        # 100 Continue shows as a wait of that length
        wait = 20 * TIME_SCALE
        t0 = time.monotonic()
        rc, out, err = self.curl("-v", "-H", "Expect: 100-continue",
                                 "--expect100-timeout", str(wait),
                                 "--data-binary", "@" + f.name,
                                 "http://127.0.0.1:%d/_token/%s/upload" % (srv.port, tok),
                                 timeout=2 * wait)
        dt = time.monotonic() - t0
        self.assertEqual(rc, 0, err)
        doc = json.loads(out)
        self.assertEqual(doc["len"], len(data))
        self.assertEqual(doc["sha256"], hashlib.sha256(data).hexdigest())
        self.assertIn("< HTTP/1.1 100 Continue", err)
        self.assertLess(dt, wait, "curl waited for a 100 Continue that never came (%.2fs)" % dt)


class BasePath(E2ETestCase):
    def test_base_path(self):
        be = self.backend()
        srv = self.server(base_path="/wst")
        tok = make_token()
        self.client(srv, tok, server_url=be.url)  # tunnel ws://127.0.0.1:P/wst
        self.assertTrue(wait_tunnels(srv, 1), "client did not register under /wst")
        r = get(srv.port, "/wst/_health_check")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"WSTUNSRV RUNNING\n")
        r = get(srv.port, "/wst/_token/%s/a/b?c=d" % tok)
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["path"], "/a/b?c=d")

    def test_client_without_base_path_does_not_register(self):
        be = self.backend()
        srv = self.server(base_path="/wst")
        tok = make_token()
        self.client(srv, tok, server_url=be.url, base_path="")
        self.assertFalse(wait_tunnels(srv, 1, timeout=2.0))


if __name__ == "__main__":
    main()
