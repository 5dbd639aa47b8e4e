"""Many requests at once through one tunnel, and several clients on one
token."""

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, Background, get, http_req, run_threads, make_token,  # noqa: E402
                     stats_text, wait_tunnels, wait_until, main)


def total_clients(srv):
    """total_clients=N from /_stats: the server's tunnel connections."""
    status, text = stats_text(srv)
    m = re.search(r"(?m)^total_clients=(\d+)\s*$", text)
    return int(m.group(1)) if (status == 200 and m) else None


class Concurrency(E2ETestCase):
    def test_64_concurrent_requests_default_settings(self):
        srv, cli, be, tok = self.tunnel()

        def one(i):
            r = get(srv.port, "/_token/%s/slow?ms=300&i=%d" % (tok, i), timeout=30)
            return r.status, r.json()["path"]
        res = run_threads(one, [(i,) for i in range(64)], timeout=40)
        bad = [(i, r) for i, r in enumerate(res)
               if not (isinstance(r, tuple) and r == (200, "/slow?ms=300&i=%d" % i))]
        self.assertEqual(bad, [], "%d of 64 failed, e.g. %r" % (len(bad), bad[:3]))

    def test_burst_of_fast_requests(self):
        srv, cli, be, tok = self.tunnel()

        def one(i):
            out = []
            for j in range(10):
                r = http_req(srv.port, "POST", "/_token/%s/echo?i=%d&j=%d" % (tok, i, j),
                             body=b"%d-%d" % (i, j), timeout=30)
                d = r.json()
                out.append((r.status, d["path"], d["body"]))
            return out
        res = run_threads(one, [(i,) for i in range(32)], timeout=60)
        for i, r in enumerate(res):
            self.assertNotIsInstance(r, BaseException, repr(r))
            self.assertEqual(r, [(200, "/echo?i=%d&j=%d" % (i, j), "%d-%d" % (i, j))
                                 for j in range(10)])

    def test_slow_request_does_not_block_fast_one(self):
        srv, cli, be, tok = self.tunnel()
        slow = Background(get, srv.port, "/_token/%s/slow?ms=3000" % tok, timeout=15)
        # the slow one is at the backend (recorded before its wait)
        self.assertTrue(wait_until(lambda: be.count() == 1, 10), "the slow request never came")
        t0 = time.monotonic()
        r = get(srv.port, "/_token/%s/echo" % tok, timeout=10)
        dt = time.monotonic() - t0
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["path"], "/echo")
        self.assertLess(dt, 1.0, "fast request waited %.2fs behind a slow one" % dt)
        self.assertFalse(slow.done())
        rs = slow.result(10)
        self.assertStatus(rs, 200)
        self.assertEqual(rs.json()["path"], "/slow?ms=3000")

    def test_slow_requests_overlap(self):
        srv, cli, be, tok = self.tunnel()
        t0 = time.monotonic()
        res = run_threads(lambda i: get(srv.port, "/_token/%s/slow?ms=1500" % tok, timeout=15),
                          [(i,) for i in range(10)], timeout=20)
        dt = time.monotonic() - t0
        self.assertTrue(all(getattr(r, "status", None) == 200 for r in res), res)
        self.assertLess(dt, 4.0, "10 requests of 1.5s took %.1fs: not concurrent" % dt)

    def test_two_clients_one_token_share_load(self):
        srv = self.server()
        tok = make_token()
        b1, b2 = self.backend("one"), self.backend("two")
        self.client(srv, tok, server_url=b1.url)
        self.client(srv, tok, server_url=b2.url)
        self.assertTrue(wait_tunnels(srv, 1))
        deadline = time.monotonic() + 15
        names = set()
        while time.monotonic() < deadline and names != {"one", "two"}:
            res = run_threads(lambda i: get(srv.port, "/_token/%s/slow?ms=150" % tok, timeout=10),
                              [(i,) for i in range(16)], timeout=15)
            for r in res:
                self.assertEqual(getattr(r, "status", None), 200, r)
                names.add(r.json()["backend"])
        self.assertEqual(names, {"one", "two"}, "requests were not spread over both clients")
        self.assertGreater(b1.count(), 0)
        self.assertGreater(b2.count(), 0)

    def test_one_of_two_clients_dies(self):
        srv = self.server()
        tok = make_token()
        b1, b2 = self.backend("one"), self.backend("two")
        c1 = self.client(srv, tok, server_url=b1.url)
        self.client(srv, tok, server_url=b2.url)
        # both registered (tunnels= counts tokens, total_clients= tunnels)
        self.assertTrue(wait_until(lambda: total_clients(srv) == 2, 10),
                        "total_clients=%r" % total_clients(srv))
        c1.kill()
        # the server has seen it go: no request is handed to its tunnel
        self.assertTrue(wait_until(lambda: total_clients(srv) == 1, 10),
                        "total_clients=%r" % total_clients(srv))
        res = run_threads(lambda i: get(srv.port, "/_token/%s/name" % tok, timeout=10),
                          [(i,) for i in range(20)], timeout=20)
        self.assertEqual([getattr(r, "status", r) for r in res], [200] * 20)
        self.assertEqual({r.body for r in res}, {b"two"})

    def test_many_tokens_many_clients(self):
        srv = self.server()
        be = self.backend()
        toks = [make_token("m%d" % i) for i in range(8)]
        for t in toks:
            self.client(srv, t, server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 8))

        def one(t, i):
            r = get(srv.port, "/_token/%s/echo?t=%s&i=%d" % (t, t, i), timeout=20)
            return r.status, r.json()["path"]
        args = [(t, i) for t in toks for i in range(6)]
        res = run_threads(one, args, timeout=30)
        for (t, i), r in zip(args, res):
            self.assertEqual(r, (200, "/echo?t=%s&i=%d" % (t, i)))


if __name__ == "__main__":
    main()
