#!/usr/bin/env python3
"""Interop: routing, methods, bodies and errors through a tunnel whose two
ends are different implementations: the Go wstunnel srv with our wstuncli,
and our wstunsrv with the Go wstunnel cli. Each test runs in both pairings
(classes *_GoSrv_OurCli and *_OurSrv_GoCli)."""

import hashlib
import http.client
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop  # noqa: E402
from interop import (HOST, expected_sha256, gen_bytes, http_req, make_token,  # noqa: E402
                     pairings, run_threads)

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def stream_req(port, method, path, n=None, chunked_upload=0, headers=None, timeout=120.0):
    """A request whose response body is hashed as it arrives (never whole
    in memory). chunked_upload=N sends N deterministic bytes chunked.
    Returns (status, headers, body_len, sha256 hex)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        h = dict(headers or {})
        if chunked_upload:
            conn.request(method, path, body=gen_bytes(chunked_upload, 100003),
                         headers=h, encode_chunked=True)
        else:
            conn.request(method, path, headers=h)
        r = conn.getresponse()
        sha = hashlib.sha256()
        total = 0
        while True:
            piece = r.read(1 << 20)
            if not piece:
                break
            sha.update(piece)
            total += len(piece)
        return r.status, r.headers, total, sha.hexdigest()
    finally:
        conn.close()


class Traffic:
    """Tests run in both pairings (see interop.pairings)."""

    # -- routing and methods
    def test_token_path_every_method(self):
        srv, _, be, tok = self.pair()
        for m in METHODS:
            body = b"payload-" + m.encode() if m in ("POST", "PUT", "PATCH") else None
            r = self.tget(srv, tok, "/echo/a%20b?x=1&y=2", method=m, body=body)
            self.assertStatus(r, 200)
            rec = be.last()
            self.assertEqual(rec["method"], m)
            self.assertEqual(rec["path"], "/echo/a%20b?x=1&y=2")
            if body:
                self.assertEqual(rec["body"], body.decode())
            if m == "HEAD":
                self.assertEqual(r.body, b"")
            else:
                self.assertEqual(json.loads(r.body)["method"], m)

    def test_x_token_every_method(self):
        srv, _, be, tok = self.pair()
        for m in METHODS:
            body = b"x" * 1000 if m in ("POST", "PUT", "PATCH") else None
            r = self.tget(srv, tok, "/deep/path?q=%2F", method=m, body=body, via="header")
            self.assertStatus(r, 200)
            rec = be.last()
            self.assertEqual((rec["method"], rec["path"]), (m, "/deep/path?q=%2F"))
            if body:
                self.assertEqual(rec["body_len"], 1000)

    def test_path_token_wins_over_x_token(self):
        srv, _, be, tok = self.pair()
        r = self.tget(srv, tok, "/echo", headers={"X-Token": make_token("other")})
        self.assertStatus(r, 200)
        self.assertEqual(be.last()["path"], "/echo")

    def test_headers_reach_backend(self):
        srv, _, be, tok = self.pair()
        r = self.tget(srv, tok, "/echo", headers={"X-Custom": "v1", "Accept": "x/y"})
        self.assertStatus(r, 200)
        names = {k.lower(): v for k, v in be.last()["headers"]}
        self.assertEqual(names.get("x-custom"), "v1")
        self.assertEqual(names.get("accept"), "x/y")
        # Host is the backend's (both clients rewrite it)
        self.assertEqual(names.get("host"), "%s:%d" % (HOST, be.port))

    def test_status_codes_and_redirect_passthrough(self):
        srv, _, be, tok = self.pair()
        for code in (201, 204, 304, 404, 418, 500, 503):
            r = self.tget(srv, tok, "/status?code=%d" % code)
            self.assertStatus(r, code)
        r = self.tget(srv, tok, "/redirect?to=/elsewhere")
        if self.CLI == "go":
            # Documented Go client bug: it follows redirects itself (here to
            # the backend's /elsewhere, answered by the echo route: 200).
            self.assertStatus(r, 200)
            self.assertEqual(be.last()["path"], "/elsewhere")
        else:
            self.assertStatus(r, 302)
            self.assertEqual(r.header("Location"), "/elsewhere")

    # -- errors
    def test_unknown_token_404(self):
        srv, _, _, _ = self.pair()
        for via in ("path", "header"):
            r = self.tget(srv, make_token("nobody"), "/echo", via=via)
            self.assertStatus(r, 404)
            self.assertBody(r, "Tunnel not found (or not seen in a long time)")

    def test_missing_token_400(self):
        srv, _, _, _ = self.pair()
        r = http_req(srv.port, "GET", srv.path("/echo"))
        self.assertStatus(r, 400)
        self.assertBody(r, "Missing X-Token header")

    def test_backend_down_502(self):
        dead = interop.free_port()  # nothing listens there
        srv, _, _, tok = self.pair(server_url="http://%s:%d" % (HOST, dead))
        r = self.tget(srv, tok, "/echo")
        self.assertStatus(r, 502)
        self.assertTrue(r.body, "a 502 explains itself")
        # the tunnel survives
        r = self.tget(srv, tok, "/echo")
        self.assertStatus(r, 502)

    # -- X-Host
    def test_x_host_with_regexp(self):
        be2 = self.backend("second")
        srv, _, be, tok = self.pair(cli_flags=("-regexp", r"http://127\.0\.0\.1:[0-9]+"))
        r = self.tget(srv, tok, "/name", headers={"X-Host": be2.url})
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"second")
        r = self.tget(srv, tok, "/name")
        self.assertEqual(r.body, b"backend")
        r = self.tget(srv, tok, "/name", headers={"X-Host": "http://localhost:%d" % be2.port})
        self.assertStatus(r, 403)
        self.assertIn(b"does not match regexp", r.body)
        self.assertEqual(be2.count(), 1)

    def test_x_host_without_regexp_refused(self):
        be2 = self.backend("second")
        srv, _, _, tok = self.pair()
        r = self.tget(srv, tok, "/name", headers={"X-Host": be2.url})
        self.assertStatus(r, 403)
        self.assertIn(b"X-Host header disallowed", r.body)
        self.assertEqual(be2.count(), 0)

    # -- bodies
    def test_download_sizes_content_length(self):
        srv, _, _, tok = self.pair()
        for n in (0, 1, 4095, 65536, (1 << 20) + 7, 10 << 20):
            st, _, got, sha = stream_req(srv.port, "GET",
                                         srv.path("/_token/%s/bytes?n=%d" % (tok, n)))
            self.assertEqual((st, got, sha), (200, n, expected_sha256(n)), n)

    def test_download_chunked_and_close_delimited(self):
        srv, _, _, tok = self.pair()
        for route in ("chunked", "close"):
            for n in (0, 1, 300001, 5 << 20):
                st, _, got, sha = stream_req(
                    srv.port, "GET", srv.path("/_token/%s/%s?n=%d" % (tok, route, n)))
                self.assertEqual((st, got, sha), (200, n, expected_sha256(n)), (route, n))

    def test_upload_sizes_content_length(self):
        srv, _, be, tok = self.pair()
        for n in (0, 1, 65537, 3 << 20, 10 << 20):
            conn = http.client.HTTPConnection(HOST, srv.port, timeout=120)
            try:
                st, body = interop.post_streamed(conn, srv.path("/_token/%s/upload" % tok), n)
            finally:
                conn.close()
            self.assertEqual(st, 200, body[:200])
            self.assertEqual(json.loads(body), {"sha256": expected_sha256(n), "len": n,
                                                "backend": "backend"})

    def test_upload_chunked(self):
        srv, _, be, tok = self.pair()
        for n in (1, 100003, 4 << 20):
            conn = http.client.HTTPConnection(HOST, srv.port, timeout=120)
            try:
                conn.request("PUT", srv.path("/_token/%s/upload" % tok),
                             body=gen_bytes(n, 65536), encode_chunked=True)
                r = conn.getresponse()
                body = r.read()
            finally:
                conn.close()
            self.assertEqual(r.status, 200, body[:200])
            self.assertEqual(json.loads(body)["sha256"], expected_sha256(n), n)

    # -- the real-peer twins of tests/e2e/test_wire.py and test_client_wire.py
    def test_slow_request_does_not_block_fast_one(self):
        srv, _, _, tok = self.pair()
        slow = interop.harness.Background(self.tget, srv, tok, "/slow?ms=3000", timeout=20)
        time.sleep(0.3)
        t0 = time.monotonic()
        self.assertStatus(self.tget(srv, tok, "/name"), 200)
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertEqual(slow.result(20).status, 200)

    def test_hop_by_hop_response_headers(self):
        srv, _, _, tok = self.pair()
        r = self.tget(srv, tok, "/hop")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"hop\n")
        self.assertEqual(r.header("X-Kept"), "yes")
        self.assertEqual(sorted(r.header_all("Set-Cookie")), ["a=1", "b=2"])
        for h in ("Keep-Alive", "Trailers", "TE"):
            self.assertIsNone(r.header(h), h)

    def test_httptimeout_then_late_response_dropped(self):
        srv, _, be, tok = self.pair("-httptimeout", "2")
        r = self.tget(srv, tok, "/slow?ms=4000", timeout=20)
        self.assertStatus(r, 504)
        self.assertBody(r, "Tunnel timeout")
        self.assertTrue(be.wait_slow_done(1, 10))
        time.sleep(0.5)  # the late response arrives and must be dropped
        r = self.tget(srv, tok, "/name")
        if self.SRV == "go":
            # Documented Go server bug (racy): after it drops a late
            # ("orphan") response, the next response on that tunnel often
            # fails to parse ("WriteResponse: can't parse incoming response:
            # unexpected EOF") and the requester gets an empty 506; the Go
            # client behind the Go server shows the same, so it is not our
            # client. Either answer is accepted here.
            self.assertIn(r.status, (200, 506), r)
            if r.status == 200:
                self.assertEqual(r.body, b"backend")
            return
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"backend")

    # -- concurrency
    def test_64_concurrent_requests(self):
        extra = ()
        if self.SRV == "go":
            # The Go server's default 20-slot queue makes a burst of 64 fail
            # (504) there (see test_go_srv_default_queue_burst); raise it.
            extra = ("-max-requests-per-tunnel", "100")
        srv, _, be, tok = self.pair(*extra)

        def one(i):
            return self.tget(srv, tok, "/slow?ms=300&i=%d" % i, timeout=60)
        res = run_threads(one, [(i,) for i in range(64)], 90)
        bad = [r for r in res if not (hasattr(r, "status") and r.status == 200)]
        self.assertEqual(bad, [], "%d/64 failed" % len(bad))
        seen = sorted(json.loads(r.body)["path"] for r in res)
        self.assertEqual(seen, sorted("/slow?ms=300&i=%d" % i for i in range(64)))


Traffic_GoSrv_OurCli, Traffic_OurSrv_GoCli = pairings(Traffic)


class GoServerQuirks(interop.InteropCase):
    """Documented misbehaviour of the Go server, asserted as it is."""
    SRV, CLI = "go", "ours"

    def test_go_srv_default_queue_burst(self):
        # Go wstunnel srv queues at most 20 requests per token (its default
        # -max-requests-per-tunnel) that are not yet written to the
        # WebSocket; beyond that it answers 504 "too many requests
        # in-flight, tunnel broken?". With our client reading requests off
        # the tunnel at once, a burst of 64 gets all 200 on an idle machine
        # (observed), but a loaded one can see some 504s: that is the Go
        # server's behaviour, so either answer is accepted here, and the
        # 64-request test above raises the Go limit.
        srv, _, be, tok = self.pair()

        def one(i):
            return self.tget(srv, tok, "/slow?ms=500&i=%d" % i, timeout=60)
        res = run_threads(one, [(i,) for i in range(64)], 90)
        codes = [getattr(r, "status", repr(r)) for r in res]
        self.assertTrue(all(c in (200, 504) for c in codes), codes)
        self.assertGreater(codes.count(200), 0, codes)


if __name__ == "__main__":
    interop.main()
