"""The programs in examples/ work against the real wstunsrv."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, Proc, HOST, SRV_BIN, get, http_req, make_token,  # noqa: E402
                     wait_tunnels, main)

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


if __name__ == "__main__":
    main()
