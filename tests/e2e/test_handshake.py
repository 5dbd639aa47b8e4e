"""The /_tunnel WebSocket handshake (PROTOCOL.md §1), with a raw client,
and the same checks made with the real wstuncli."""

import os
import sys
import base64
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, ws_connect, ws_accept, basic_auth, make_token,  # noqa: E402
                     wait_tunnels, get, OP_PONG, main)


class ServerHandshake(E2ETestCase):
    def test_accept_exact(self):
        srv = self.server()
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        hs = ws_connect(srv.port, make_token(), key=key)
        self.addCleanup(lambda: hs.ws and hs.ws.close())
        self.assertEqual(hs.status, 101, hs.body)
        self.assertEqual(hs.header("Sec-WebSocket-Accept"), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        self.assertEqual(hs.header("Upgrade").lower(), "websocket")
        self.assertIn("upgrade", hs.header("Connection").lower())

    def test_accept_random_key(self):
        srv = self.server()
        key = base64.b64encode(os.urandom(16)).decode()
        hs = ws_connect(srv.port, make_token(), key=key)
        self.addCleanup(lambda: hs.ws and hs.ws.close())
        self.assertEqual(hs.status, 101)
        self.assertEqual(hs.header("Sec-WebSocket-Accept"), ws_accept(key))

    def test_registers_token(self):
        srv = self.server()
        tok = make_token()
        hs = ws_connect(srv.port, tok)
        self.assertEqual(hs.status, 101)
        self.assertTrue(wait_tunnels(srv, 1))
        hs.ws.send_close()
        hs.ws.close()
        self.assertTrue(wait_tunnels(srv, 0))

    def test_not_get_is_400(self):
        srv = self.server()
        hs = ws_connect(srv.port, make_token(), method="POST",
                        extra_headers=[("Content-Length", "0")])
        self.assertEqual(hs.status, 400)
        self.assertEqual(hs.body, b"Only GET requests are supported")  # Go's text
        self.assertTrue(wait_tunnels(srv, 0))

    def test_missing_origin_is_400(self):
        srv = self.server()
        hs = ws_connect(srv.port, None)
        self.assertEqual(hs.status, 400)
        self.assertTrue(hs.body in (b"Origin header with rendez-vous token required",
                                    b"Origin header with rendez-vous token required\n"),
                        hs.body)
        self.assertTrue((hs.header("Content-Type") or "").startswith("text/plain"))

    def test_short_token_is_400(self):
        srv = self.server()
        for tok in ("short", "x" * 15):
            hs = ws_connect(srv.port, tok)
            self.assertEqual(hs.status, 400, tok)
            self.assertIn(hs.body, (b"Rendez-vous token is too short (must be 16 chars)",
                                    b"Rendez-vous token is too short (must be 16 chars)\n"))
        hs = ws_connect(srv.port, "y" * 16)
        self.addCleanup(lambda: hs.ws and hs.ws.close())
        self.assertEqual(hs.status, 101)

    def test_password_required(self):
        tok = make_token()
        srv = self.server("-passwords", "%s:s3cret,%s:other" % (tok, make_token()))
        bad = "Invalid token or password"
        cases = [  # with the Go server's texts
            ([], "Authorization required for this token"),
            ([("Authorization", "Bearer s3cret")], "Invalid authorization type (must be Basic)"),
            ([("Authorization", "Basic !!!not-base64!!!")], "Invalid authorization encoding"),
            ([("Authorization", "Basic " + base64.b64encode(b"no-colon").decode())],
             "Invalid authorization format"),
            ([("Authorization", basic_auth(tok, "wrong"))], bad),
            ([("Authorization", basic_auth(tok, "s3cre"))], bad),
            ([("Authorization", basic_auth(tok, "s3cret-and-more"))], bad),
            ([("Authorization", basic_auth(tok + "x", "s3cret"))], bad),
        ]
        for extra, text in cases:
            hs = ws_connect(srv.port, tok, extra_headers=extra)
            self.assertEqual((hs.status, hs.body), (401, text.encode()), extra)
            self.assertEqual(hs.header("WWW-Authenticate"), 'Basic realm="wstunnel"', extra)
        self.assertTrue(wait_tunnels(srv, 0))
        hs = ws_connect(srv.port, tok, extra_headers=[("Authorization", basic_auth(tok, "s3cret"))])
        self.addCleanup(lambda: hs.ws and hs.ws.close())
        self.assertEqual(hs.status, 101)
        self.assertTrue(wait_tunnels(srv, 1))

    def test_passwords_file(self):
        import shutil
        import subprocess
        import tempfile
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        tok, other = make_token(), make_token()
        path = os.path.join(d, "passwords")
        with open(path, "w") as f:
            f.write("%s:from-a-file\n%s:second\n" % (tok, other))
        os.chmod(path, 0o600)
        srv = self.server("-passwords-file", path)
        hs = ws_connect(srv.port, tok, extra_headers=[("Authorization", basic_auth(tok, "wrong"))])
        self.assertEqual(hs.status, 401)
        hs = ws_connect(srv.port, other,
                        extra_headers=[("Authorization", basic_auth(other, "second"))])
        self.addCleanup(lambda: hs.ws and hs.ws.close())
        self.assertEqual(hs.status, 101)
        os.chmod(path, 0o644)
        from harness import SRV_BIN
        p = subprocess.run([SRV_BIN, "-port", "0", "-passwords-file", path],
                           capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"passwords-file", p.stderr)
        self.assertIn(b"readable by others", p.stderr)

    def test_token_without_password_needs_no_auth(self):
        srv = self.server("-passwords", "%s:pw" % make_token())
        hs = ws_connect(srv.port, make_token())
        self.addCleanup(lambda: hs.ws and hs.ws.close())
        self.assertEqual(hs.status, 101)

    def test_max_clients_per_token(self):
        srv = self.server("-max-clients-per-token", "2")
        tok = make_token()
        a = ws_connect(srv.port, tok)
        b = ws_connect(srv.port, tok)
        self.addCleanup(lambda: a.ws and a.ws.close())
        self.addCleanup(lambda: b.ws and b.ws.close())
        self.assertEqual((a.status, b.status), (101, 101))
        c = ws_connect(srv.port, tok)
        self.assertEqual(c.status, 429)
        self.assertIn(c.body, (b"Maximum number of clients (2) reached for this token",
                               b"Maximum number of clients (2) reached for this token\n"))
        # another token is not affected
        d = ws_connect(srv.port, make_token())
        self.addCleanup(lambda: d.ws and d.ws.close())
        self.assertEqual(d.status, 101)
        # a slot frees up when a client leaves
        a.ws.send_close()
        a.ws.close()
        ok = False
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not ok:
            e = ws_connect(srv.port, tok)
            if e.status == 101:
                self.addCleanup(e.ws.close)
                ok = True
            else:
                time.sleep(0.1)
        self.assertTrue(ok, "slot was not freed after a client left")

    def test_server_answers_ping_with_pong(self):
        srv = self.server()
        hs = ws_connect(srv.port, make_token())
        self.addCleanup(lambda: hs.ws and hs.ws.close())
        self.assertEqual(hs.status, 101)
        hs.ws.ping(b"are-you-there")
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            fr = hs.ws.recv_frame(max(0.01, deadline - time.monotonic()))
            if fr.opcode == OP_PONG:
                self.assertEqual(fr.payload, b"are-you-there")
                self.assertFalse(fr.masked, "server frames must not be masked")
                return
        self.fail("no pong")

    def test_handshake_under_base_path(self):
        srv = self.server(base_path="/wst")
        hs = ws_connect(srv.port, make_token(), path="/wst/_tunnel")
        self.addCleanup(lambda: hs.ws and hs.ws.close())
        self.assertEqual(hs.status, 101)
        self.assertTrue(wait_tunnels(srv, 1))

    def test_wrong_base_path_gets_404_with_a_hint(self):
        """A tunnel client dialing the wrong base path is told so, not
        given a 501 or a bare 404; the connection ends after the answer."""
        hint = b"no tunnel endpoint here: check the base path"
        for base, path in (("/wst", "/_tunnel"), ("/wst", "/other/_tunnel"),
                           ("", "/wst/_tunnel"), ("/wst", "/wst/wst/_tunnel")):
            srv = self.server(base_path=base)
            hs = ws_connect(srv.port, make_token(), path=path)
            self.addCleanup(lambda: hs.ws and hs.ws.close())
            self.assertEqual((hs.status, hs.body), (404, hint), (base, path))
            self.assertEqual(hs.reason, "Not Found")
            self.assertTrue(wait_tunnels(srv, 0))


class ClientAuth(E2ETestCase):
    """Password handling with the real client."""

    def test_client_with_password(self):
        be = self.backend()
        tok = make_token()
        srv = self.server("-passwords", "%s:pw1" % tok)
        self.client(srv, "%s:pw1" % tok, server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1))
        self.assertEqual(get(srv.port, "/_token/%s/name" % tok).body, b"backend")

    def test_client_password_from_env(self):
        be = self.backend()
        tok = make_token()
        srv = self.server("-passwords", "%s:envpw" % tok)
        self.client(srv, tok, server_url=be.url, env={"WSTUNNEL_PASSWORD": "envpw"})
        self.assertTrue(wait_tunnels(srv, 1))
        self.assertEqual(get(srv.port, "/_token/%s/name" % tok).body, b"backend")

    def test_client_wrong_or_missing_password_rejected(self):
        be = self.backend()
        tok = make_token()
        srv = self.server("-passwords", "%s:right" % tok)
        self.client(srv, "%s:wrong" % tok, server_url=be.url)
        self.client(srv, tok, server_url=be.url)
        self.assertFalse(wait_tunnels(srv, 1, timeout=2.5))


if __name__ == "__main__":
    main()
