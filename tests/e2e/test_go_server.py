"""wstuncli against the real Go wstunnel server (WSTUN_GO_WSTUNNEL, default
/tmp/wstunnel-go-ref/wstunnel; the tests skip when it is missing).

Liveness: the Go server resets its -wstimeout timer only when a ping frame
arrives (PROTOCOL.md section 7), never on data. So a request that keeps the
tunnel busy for longer than -wstimeout survives only if the client keeps
pinging while the data flows, including between the fragments of one long
streamed message."""

import hashlib
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, HOST, Proc, det_bytes, get, make_token,  # noqa: E402
                     reserved_port, wait_until, main)

GO_BIN = os.environ.get("WSTUN_GO_WSTUNNEL", "/tmp/wstunnel-go-ref/wstunnel")
WSTIMEOUT = 3  # the Go server's -wstimeout (its minimum)
CLI_TIMEOUT = 6  # our client pings every 2 s


class GoServer(E2ETestCase):
    def setUp(self):
        super().setUp()
        if not (os.path.isfile(GO_BIN) and os.access(GO_BIN, os.X_OK)):
            self.skipTest("Go wstunnel binary not found at %s (set WSTUN_GO_WSTUNNEL)" % GO_BIN)

    def go_server(self, *flags):
        # reserved until the Go server listens there (Go sets SO_REUSEADDR)
        hold, port = reserved_port()
        self.addCleanup(hold.close)
        p = Proc([GO_BIN, "srv", "-host", HOST, "-port", str(port)] + list(flags),
                 name="go wstunnel srv")
        self.addCleanup(p.kill)

        def up():
            try:
                return get(port, "/_health_check", timeout=1).status == 200
            except OSError:
                return False
        self.assertTrue(wait_until(up, 10), p.describe())
        hold.close()
        return p, port

    def go_tunnel(self):
        be = self.backend()
        go, port = self.go_server("-wstimeout", str(WSTIMEOUT))
        tok = make_token()
        cli = self.client(port, tok, "-timeout", str(CLI_TIMEOUT), "-log-level", "debug",
                          server_url=be.url)
        self.assertTrue(wait_until(lambda: "tunnels=1" in get(port, "/_stats").text, 10),
                        cli.describe())
        return go, port, cli, be, tok

    def assertNoReconnect(self, cli, go):
        # one tunnel connection all along: the Go server never timed it out
        dials = [ln for ln in cli.err_lines if "tunnel open to" in ln]
        self.assertLessEqual(len(dials), 1, "client reconnected:\n" + cli.describe())
        self.assertFalse(any("ping timeout" in ln for ln in go.err_lines),
                         go.describe())

    def test_slow_download_outlives_wstimeout(self):
        go, port, cli, be, tok = self.go_tunnel()
        # one response message streamed over ~8 s, 17 small fragments
        t0 = time.monotonic()
        r = get(port, "/_token/%s/drip?n=17&ms=500" % tok, timeout=30)
        took = time.monotonic() - t0
        self.assertEqual(r.status, 200, r.body[:300])
        self.assertEqual(r.body, b"".join(b"tick%d\n" % i for i in range(17)))
        self.assertGreater(took, 2 * WSTIMEOUT)
        # the same tunnel still serves
        self.assertEqual(get(port, "/_token/%s/name" % tok).body, b"backend")
        self.assertNoReconnect(cli, go)

    def test_slow_upload_outlives_wstimeout(self):
        go, port, cli, be, tok = self.go_tunnel()
        pieces, size = 16, 16384
        body = det_bytes(pieces * size)
        s = socket.create_connection((HOST, port), timeout=30)
        try:
            s.sendall(b"POST /_token/%s/upload HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Length: %d\r\nConnection: close\r\n\r\n"
                      % (tok.encode(), len(body)))
            for i in range(pieces):  # ~8 s
                s.sendall(body[i * size:(i + 1) * size])
                time.sleep(0.5)
            data = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                data += d
        finally:
            s.close()
        head, _, resp_body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), data[:300])
        self.assertIn(hashlib.sha256(body).hexdigest().encode(), resp_body)
        self.assertEqual(get(port, "/_token/%s/name" % tok).body, b"backend")
        self.assertNoReconnect(cli, go)

    def test_idle_tunnel_stays(self):
        # nothing but pings for 3 x -wstimeout
        go, port, cli, be, tok = self.go_tunnel()
        time.sleep(3 * WSTIMEOUT)
        self.assertEqual(get(port, "/_token/%s/name" % tok).body, b"backend")
        self.assertNoReconnect(cli, go)


if __name__ == "__main__":
    main()
