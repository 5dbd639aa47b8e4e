#!/usr/bin/env python3
"""Interop: 100 MiB bodies both ways, byte-exact (sha256), in both mixed
pairings: Content-Length, chunked and close-delimited downloads, and
Content-Length and chunked uploads. Bodies stream from and into hashes,
never whole in this process's memory."""

import http.client
import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop  # noqa: E402
from interop import HOST, expected_sha256, gen_bytes, pairings, post_streamed  # noqa: E402
from test_traffic import stream_req  # noqa: E402

MIB = 1 << 20
BIG = 100 * MIB
# The Go client reads one tunnel message into memory with a 100 MiB limit
# (ws.SetReadLimit(100 MiB) in wstuncli.go), and a request message is the
# id + head + body: a 100 MiB upload cannot pass through it. The largest
# upload it takes is a little under 100 MiB.
GO_CLI_MAX_UPLOAD = BIG - 64 * 1024


class Bulk:
    def download(self, route, n=BIG):
        srv, _, _, tok = self.pair("-httptimeout", "120")
        st, _, got, sha = stream_req(srv.port, "GET",
                                     srv.path("/_token/%s/%s?n=%d" % (tok, route, n)),
                                     timeout=120)
        self.assertEqual((st, got), (200, n))
        self.assertEqual(sha, expected_sha256(n))

    def test_download_100mib_content_length(self):
        self.download("bytes")

    def test_download_100mib_chunked(self):
        self.download("chunked")

    def test_download_100mib_close_delimited(self):
        self.download("close")

    def upload_size(self):
        return GO_CLI_MAX_UPLOAD if self.CLI == "go" else BIG

    def test_upload_100mib_content_length(self):
        n = self.upload_size()
        srv, _, _, tok = self.pair("-httptimeout", "120")
        conn = http.client.HTTPConnection(HOST, srv.port, timeout=120)
        try:
            st, body = post_streamed(conn, srv.path("/_token/%s/upload" % tok), n)
        finally:
            conn.close()
        self.assertEqual(st, 200, body[:300])
        self.assertEqual(json.loads(body)["sha256"], expected_sha256(n))

    def test_upload_100mib_chunked(self):
        n = self.upload_size()
        srv, _, _, tok = self.pair("-httptimeout", "120")
        conn = http.client.HTTPConnection(HOST, srv.port, timeout=120)
        try:
            conn.request("PUT", srv.path("/_token/%s/upload" % tok),
                         body=gen_bytes(n, 1 << 20), encode_chunked=True)
            r = conn.getresponse()
            body = r.read()
        finally:
            conn.close()
        self.assertEqual(r.status, 200, body[:300])
        self.assertEqual(json.loads(body)["sha256"], expected_sha256(n))

    def test_upload_exactly_100mib(self):
        if self.CLI != "go":
            # our client streams the request through: no limit
            self.test_upload_100mib_content_length()
            return
        # Documented Go client limit: a request message over 100 MiB (a
        # 100 MiB body plus its head) makes it fail ("websocket: read limit
        # exceeded") and drop the tunnel. Our server then answers 502 at
        # once instead of waiting for -httptimeout, and the Go client
        # re-opens the tunnel.
        srv, cli, _, tok = self.pair("-httptimeout", "60")
        conn = http.client.HTTPConnection(HOST, srv.port, timeout=60)
        try:
            st, body = post_streamed(conn, srv.path("/_token/%s/upload" % tok), BIG)
        finally:
            conn.close()
        self.assertEqual(st, 502, body[:300])
        self.assertTrue(interop.wait_count(cli, "read limit exceeded", 1, 10), cli.describe())
        self.wait_ready(cli, 2, timeout=30)
        self.assertStatus(self.tget(srv, tok, "/name"), 200)

Bulk_GoSrv_OurCli, Bulk_OurSrv_GoCli = pairings(Bulk)

if __name__ == "__main__":
    interop.main()
