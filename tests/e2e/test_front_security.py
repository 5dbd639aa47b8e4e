"""Issue 13: what a remote requester or a rogue tunnel client can do to
the server's front connections (memory safety of the request head, one
response per tunnel message, X-Forwarded-For with several lines, memory
under a pipelining requester that never reads)."""

import socket
import time

from harness import (HOST, E2ETestCase, get, main, make_token, raw_http,
                     read_response, stats_text, wait_tunnels, wait_until)

REMOTE = "203.0.113.9"


def request_with_padding(path, pad, extra=b""):
    return (b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n" + extra +
            b"X-Pad: " + b"p" * pad + b"\r\n\r\n")


class HeadGrowth(E2ETestCase):
    """build_request grows the head's text (X-Forwarded-For, framing) before
    it sets the target: a target pointing into the old text was read after
    the text moved (heap use-after-free under ASan)."""

    def check_targets(self, srv, tok, make_req, want_target):
        t = self.raw_tunnel(srv, tok)
        self.assertTrue(wait_tunnels(srv, 1))
        # the text starts at 256 bytes and doubles: sweep the head size
        # across the first boundaries so that some request makes it move
        for pad in range(0, 700, 9):
            with socket.create_connection((HOST, srv.port), timeout=10) as s:
                s.settimeout(10)
                s.sendall(make_req(pad))
                rid, first, hdrs, body, raw = t.next_request(timeout=10)
                self.assertEqual(first.split(" ")[1], want_target,
                                 "pad %d: %r" % (pad, first))
                t.respond(rid, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                f = s.makefile("rb")
                r = read_response(f)
                f.close()
                self.assertEqual(r.status, 200, "pad %d" % pad)
                self.assertEqual(r.body, b"ok")

    def test_x_token_target_survives_head_growth(self):
        srv = self.server()
        tok = make_token()
        self.check_targets(srv, tok, lambda pad: request_with_padding(
            "/some/path?q=1", pad, b"X-Token: " + tok.encode() + b"\r\n"),
            "/some/path?q=1")

    def test_token_path_target_survives_head_growth(self):
        srv = self.server()
        tok = make_token()
        self.check_targets(srv, tok, lambda pad: request_with_padding(
            "/_token/" + tok + "/some/path?q=1", pad), "/some/path?q=1")

    def test_chunked_upload_target_survives_head_growth(self):
        # a body adds the framing header too, after X-Forwarded-For
        srv = self.server()
        tok = make_token()
        t = self.raw_tunnel(srv, tok)
        self.assertTrue(wait_tunnels(srv, 1))
        for pad in range(0, 700, 9):
            req = (b"POST /up HTTP/1.1\r\nHost: x\r\nX-Token: " + tok.encode() +
                   b"\r\nTransfer-Encoding: chunked\r\nX-Pad: " + b"p" * pad +
                   b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
            with socket.create_connection((HOST, srv.port), timeout=10) as s:
                s.settimeout(10)
                s.sendall(req)
                rid, first, hdrs, body, raw = t.next_request(timeout=10)
                self.assertEqual(first, "POST /up HTTP/1.1", "pad %d" % pad)
                self.assertEqual(body, b"abc")
                t.respond(rid, b"HTTP/1.1 204 No Content\r\n\r\n")
                f = s.makefile("rb")
                self.assertEqual(read_response(f).status, 204)
                f.close()


if __name__ == "__main__":
    main()
