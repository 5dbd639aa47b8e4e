"""The programs in examples/ work against the real wstunsrv."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, Proc, HOST, SRV_BIN, get, http_req, make_token,  # noqa: E402
                     wait_tunnels, wait_until, main)

EXAMPLES = os.environ.get("WSTUN_EXAMPLES_DIR",
                          os.path.join(os.path.dirname(SRV_BIN), "..", "examples"))


class InProcessHandler(E2ETestCase):
    def test_requests_answered_by_a_callback(self):
        srv = self.server()
        tok = make_token()
        ex = Proc([os.path.join(EXAMPLES, "hello_handler"),
                   "ws://%s:%d" % (HOST, srv.port), tok], name="hello_handler")
        self._procs.append(ex)
        self.addCleanup(self._checked_stop, ex)
        self.assertTrue(wait_tunnels(srv, 1), ex.describe())
        r = get(srv.port, "/_token/%s/some/where?x=1" % tok,
                headers={"User-Agent": "e2e-test"})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("Content-Type"), "text/plain")
        self.assertEqual(r.body.decode(),
                         "hello through the tunnel\nmethod=GET target=/some/where?x=1 "
                         "body=0 user-agent=e2e-test\n")
        r = http_req(srv.port, "POST", "/_token/%s/up" % tok, body=b"z" * 100000)
        self.assertEqual(r.status, 200)
        self.assertIn(b"method=POST target=/up body=100000 ", r.body)


class EmbeddedServer(E2ETestCase):
    def test_tunnel_server_beside_own_routes(self):
        be = self.backend()
        ex = Proc([os.path.join(EXAMPLES, "embedded_server")], name="embedded_server")
        self._procs.append(ex)
        self.addCleanup(self._checked_stop, ex)
        m1 = ex.wait_stderr(r"tunnel server on 127\.0\.0\.1:(\d+)", 10)
        m2 = ex.wait_stderr(r"status page on 127\.0\.0\.1:(\d+)", 10)
        self.assertTrue(m1 and m2, ex.describe())
        tport, sport = int(m1.group(1)), int(m2.group(1))
        tok = make_token()
        self.client(tport, tok, server_url=be.url)
        self.assertTrue(wait_until(lambda: "tunnels=1" in get(tport, "/_stats").text, 10))
        self.assertEqual(get(tport, "/_token/%s/echo" % tok).status, 200)
        # the request stops being pending when the end of its response
        # (END, or the message's last frame) is read from the tunnel, which
        # may come a moment after the body the requester already has
        want = "tunnels=1 connections=1 pending=0 completed=1 errored=0"
        wait_until(lambda: want in get(sport, "/").text, 5)
        page = get(sport, "/").text
        self.assertIn(want, page)
        self.assertIn("token %s...: 1 connection(s), 0 pending, from 127.0.0.1:" % tok[:8],
                      page)
        self.assertNotIn(tok, page, "the full token must not be shown")


if __name__ == "__main__":
    main()
