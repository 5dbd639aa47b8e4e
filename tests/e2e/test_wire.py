"""The v1 tunnel message format on the server side (PROTOCOL.md §2-3),
pinned with a hand-written tunnel client: golden request bytes out,
hand-made responses in."""

import base64
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, Background, TIME_SCALE, get, http_req,  # noqa: E402
                     make_token, wait_tunnels, wait_until, OP_BIN, OP_CONT, OP_PING,
                     OP_PONG, HOST, WSConn, encode_frame, parse_head,
                     parse_tunnel_message, read_response, ws_accept, main)

ID_RX = re.compile(rb"^[0-9a-f]{4}[A-Z]")


class ServerWire(E2ETestCase):
    def setUp(self):
        super().setUp()
        self.srv = self.server()
        self.tok = make_token()
        self.tun = self.raw_tunnel(self.srv, self.tok)
        self.assertTrue(wait_tunnels(self.srv, 1))

    def fetch(self, path, method="GET", **kw):
        kw.setdefault("timeout", 10)
        return Background(http_req, self.srv.port, method, "/_token/%s%s" % (self.tok, path), **kw)

    def test_golden_get(self):
        bg = self.fetch("/path?q=1")
        op, payload = self.tun.ws.recv_message(5)
        self.assertEqual(op, OP_BIN, "tunnel messages must be binary")
        self.assertFalse(self.tun.ws.frames[-1].masked, "server frames must not be masked")
        self.assertRegex(payload, ID_RX)
        self.assertTrue(payload[4:].startswith(b"GET /path?q=1 HTTP/1.1\r\n"), payload[:80])
        head, sep, rest = payload[4:].partition(b"\r\n\r\n")
        self.assertEqual(sep, b"\r\n\r\n")
        self.assertEqual(rest, b"", "GET must carry no body bytes")
        lines = head.split(b"\r\n")[1:]
        hdrs = {}
        for line in lines:
            k, _, v = line.partition(b":")
            hdrs.setdefault(k.strip().lower(), []).append(v.strip())
        self.assertEqual(hdrs.get(b"host"), [b"127.0.0.1:%d" % self.srv.port])
        self.assertEqual(hdrs.get(b"x-forwarded-for"), [b"127.0.0.1"])
        self.assertNotIn(b"transfer-encoding", hdrs)
        cl = hdrs.get(b"content-length", [b"0"])
        self.assertEqual(cl, [b"0"])
        rid = payload[:4]
        self.tun.ws.send_binary(rid + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
        r = bg.result(10)
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"hi")

    def test_golden_post_body(self):
        bg = self.fetch("/submit", method="POST", body=b"hello world",
                        headers={"Content-Type": "text/plain"})
        rid, first, hdrs, body, payload = self.tun.next_request()
        self.assertEqual(first, "POST /submit HTTP/1.1")
        self.assertEqual(body, b"hello world")
        self.assertEqual(hdrs.get("content-type"), ["text/plain"])
        self.tun.respond(rid, b"HTTP/1.1 201 Created\r\nContent-Length: 3\r\nX-R: 1\r\n\r\nyes")
        r = bg.result(10)
        self.assertStatus(r, 201)
        self.assertEqual(r.body, b"yes")
        self.assertEqual(r.header("X-R"), "1")

    def test_chunked_request_body_is_forwarded(self):
        import http.client
        def send():
            conn = http.client.HTTPConnection("127.0.0.1", self.srv.port, timeout=10)
            try:
                conn.request("PUT", "/_token/%s/up" % self.tok,
                             body=iter([b"abc", b"defg", b"h"]), encode_chunked=True)
                r = conn.getresponse()
                return r.status, r.read()
            finally:
                conn.close()
        bg = Background(send)
        rid, first, hdrs, body, payload = self.tun.next_request()
        self.assertEqual(first, "PUT /up HTTP/1.1")
        self.assertEqual(body, b"abcdefgh")
        self.tun.respond(rid, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(bg.result(10), (200, b""))

    def test_concurrent_requests_have_distinct_ids(self):
        a = self.fetch("/a")
        time.sleep(0.1)
        b = self.fetch("/b")
        reqs = {}
        for _ in range(2):
            rid, first, hdrs, body, payload = self.tun.next_request()
            reqs[first.split()[1]] = rid
        self.assertEqual(set(reqs), {"/a", "/b"})
        self.assertNotEqual(reqs["/a"], reqs["/b"])
        # answer in reverse order: each requester must get its own answer
        self.tun.respond(reqs["/b"], b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nB")
        self.tun.respond(reqs["/a"], b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA")
        self.assertEqual(b.result(10).body, b"B")
        self.assertEqual(a.result(10).body, b"A")

    def test_early_answer_drains_the_upload(self):
        # The tunnel client answers after the first fragment of a large
        # upload: the requester still sends its whole body without being
        # cut off, reads the answer, and its keep-alive connection serves a
        # second request.
        sock = socket.create_connection((HOST, self.srv.port), timeout=10)
        self.addCleanup(sock.close)
        body = b"x" * (1024 * 1024)
        sock.sendall(b"POST /_token/%s/up HTTP/1.1\r\nHost: t\r\n"
                     b"Content-Length: %d\r\n\r\n" % (self.tok.encode(), len(body)))
        sock.sendall(body[:256 * 1024])
        first = self.tun.ws.recv_frame(5)
        self.assertEqual(first.opcode, OP_BIN)
        self.assertFalse(first.fin, "a 1 MiB upload must be streamed in fragments")
        rid = first.payload[:4].decode()
        self.tun.respond(rid, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly")
        sock.sendall(body[256 * 1024:])
        f = sock.makefile("rb")
        r = read_response(f)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.body, b"early")
        sock.sendall(b"GET /_token/%s/second HTTP/1.1\r\nHost: t\r\n\r\n" % self.tok.encode())
        # skip what is left of the first (cut) message, then read the second
        while True:
            fr = self.tun.ws.recv_frame(5)
            if fr.opcode == OP_BIN:
                break
        payload = fr.payload
        while not fr.fin:
            fr = self.tun.ws.recv_frame(5)
            payload += fr.payload
        self.assertTrue(payload[4:].startswith(b"GET /second HTTP/1.1\r\n"), payload[:60])
        self.tun.respond(payload[:4].decode(),
                         b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
        r2 = read_response(f)
        self.assertEqual(r2.body, b"second")

    def test_ids_count_from_0001(self):
        """As the Go server: a token's first request id is 0001, then the
        count goes up (it wraps below 32000: wstun_proto_test)."""
        ids = []
        for i in range(3):
            bg = self.fetch("/n%d" % i)
            rid, *_ = self.tun.next_request()
            ids.append(rid)
            self.tun.respond(rid, b"HTTP/1.1 204 No Content\r\n\r\n")
            self.assertEqual(bg.result(10).status, 204)
        self.assertEqual(ids, ["0001", "0002", "0003"])

    def test_unknown_id_is_dropped(self):
        bg = self.fetch("/x")
        rid, *_ = self.tun.next_request()
        other = "%04x" % ((int(rid, 16) + 7) % 0x10000)
        self.tun.respond(other, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nwrong")
        time.sleep(0.2)
        self.assertFalse(bg.done(), "a response with a foreign id answered the request")
        self.tun.respond(rid, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nright")
        self.assertEqual(bg.result(10).body, b"right")
        self.assertTrue(wait_tunnels(self.srv, 1))

    def test_response_framed_by_end_of_message(self):
        bg = self.fetch("/eom")
        rid, *_ = self.tun.next_request()
        self.tun.respond(rid, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
                              b"body until the end of the message")
        r = bg.result(10)
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"body until the end of the message")

    def test_chunked_response_is_reframed(self):
        bg = self.fetch("/ch")
        rid, *_ = self.tun.next_request()
        self.tun.respond(rid, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        r = bg.result(10)
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"hello world")

    def test_fragmented_response_with_interleaved_ping(self):
        bg = self.fetch("/frag")
        rid, *_ = self.tun.next_request()
        msg = rid.encode() + b"HTTP/1.1 200 OK\r\nContent-Length: 26\r\n\r\nabcdefghijklmnopqrstuvwxyz"
        ws = self.tun.ws
        ws.send_frame(OP_BIN, msg[:3], fin=False)          # inside the id
        ws.send_frame(OP_CONT, msg[3:20], fin=False)
        ws.send_frame(OP_PING, b"p")                        # control frame in between
        ws.send_frame(OP_CONT, msg[20:60], fin=False)
        ws.send_frame(OP_CONT, msg[60:], fin=True)
        r = bg.result(10)
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"abcdefghijklmnopqrstuvwxyz")

    def test_response_hop_by_hop_dropped(self):
        bg = self.fetch("/hop")
        rid, *_ = self.tun.next_request()
        self.tun.respond(rid, b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nTE: trailers\r\n"
                              b"Trailers: X-T\r\nConnection: keep-alive, X-Private\r\n"
                              b"Set-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok")
        r = bg.result(10)
        self.assertEqual(r.body, b"ok")
        for h in ("Keep-Alive", "TE", "Trailers"):
            self.assertIsNone(r.header(h), h)
        for v in r.header_all("Connection"):
            self.assertNotIn("x-private", v.lower())
        self.assertEqual(r.header_all("Set-Cookie"), ["a=1", "b=2"])

    def test_unparseable_response_is_506(self):
        bg = self.fetch("/bad")
        rid, *_ = self.tun.next_request()
        self.tun.respond(rid, b"this is not HTTP at all\r\n\r\n")
        r = bg.result(10)
        self.assertStatus(r, 506)

    def test_506_is_the_go_answer(self):
        """Garbage, an empty message and a cut head all get what the Go
        server sends: 506 Variant Also Negotiates, empty body, nosniff; the
        tunnel stays up for the next request."""
        for i, bad in enumerate((b"this is not HTTP at all\r\n\r\n", b"",
                                 b"HTTP/1.1 200 OK\r\nFoo: b")):
            bg = self.fetch("/bad%d" % i)
            rid, *_ = self.tun.next_request()
            self.tun.respond(rid, bad)
            r = bg.result(10)
            self.assertStatus(r, 506)
            self.assertEqual(r.reason, "Variant Also Negotiates")
            self.assertEqual(r.body, b"", "a 506 has an empty body (%r)" % bad)
            self.assertEqual(r.header("Content-Type"), "text/plain; charset=utf-8")
            self.assertEqual(r.header("X-Content-Type-Options"), "nosniff")
        bg = self.fetch("/good")
        rid, *_ = self.tun.next_request()
        self.tun.respond(rid, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(bg.result(10).body, b"ok")

    def test_reason_phrase_is_the_registered_one(self):
        """As the Go server: the status line carries the registered phrase
        whatever the tunnel client wrote; an unregistered code keeps its."""
        for line, want in ((b"201 Created Fine", "Created"), (b"409 Whatever", "Conflict"),
                           (b"418 Teapot", "I'm a teapot"),
                           (b"422 Unprocessable Entity", "Unprocessable Content"),
                           (b"501 x", "Not Implemented"), (b"599 Custom", "Custom")):
            bg = self.fetch("/st")
            rid, *_ = self.tun.next_request()
            self.tun.respond(rid, b"HTTP/1.1 " + line + b"\r\nContent-Length: 2\r\n\r\nok")
            r = bg.result(10)
            self.assertEqual((r.status, r.reason), (int(line[:3]), want))
            self.assertEqual(r.body, b"ok")

    def test_errored_requests_count_client_errors(self):
        """/admin/monitoring as the Go server counts: a 2xx/3xx answer is
        completed, a 4xx/5xx from the tunnel client (its 502 when the
        backend is down, ...) or a 506 is errored, and so is an unknown
        token's 404."""
        m0 = get(self.srv.port, "/admin/monitoring").json()
        for status in (b"200 OK", b"302 Found", b"502 Bad Gateway", b"404 Not Found"):
            bg = self.fetch("/m")
            rid, *_ = self.tun.next_request()
            self.tun.respond(rid, b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
            self.assertEqual(bg.result(10).status, int(status[:3]))
        bg = self.fetch("/m")
        rid, *_ = self.tun.next_request()
        self.tun.respond(rid, b"junk")
        self.assertEqual(bg.result(10).status, 506)
        self.assertEqual(get(self.srv.port, "/_token/%s/x" % make_token()).status, 404)
        m1 = get(self.srv.port, "/admin/monitoring").json()
        self.assertEqual(m1["completed_requests"] - m0["completed_requests"], 2, m1)
        self.assertEqual(m1["errored_requests"] - m0["errored_requests"], 4, m1)

    def test_large_fragmented_response(self):
        bg = self.fetch("/large")
        rid, *_ = self.tun.next_request()
        body = os.urandom(3 * 1024 * 1024 + 17)
        msg = rid.encode() + b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        step = 200003
        for off in range(0, len(msg), step):
            last = off + step >= len(msg)
            self.tun.ws.send_frame(OP_BIN if off == 0 else OP_CONT, msg[off:off + step], fin=last)
        r = bg.result(20)
        self.assertStatus(r, 200)
        self.assertEqual(len(r.body), len(body))
        self.assertTrue(r.body == body, "body differs")

    def test_pipelined_upgrade_keeps_the_bytes_after_it(self):
        """One write carries (a) a request tunneled to this raw peer, (b) a
        WebSocket upgrade for a new token right behind it and (c) a masked
        ping right after the upgrade's head. The server holds (b)+(c) in
        its pending buffer while (a) is in flight; when (a) is answered the
        upgrade is delivered from that buffer, and (c), which followed it,
        must reach the new tunnel: a pong with the same payload comes back
        after the 101 (before the fix those bytes were lost, or read from
        the buffer being appended to). The new tunnel then carries a
        request."""
        tok2 = make_token("pipelined")
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        ping_payload = b"pipelined-ping-" + os.urandom(6).hex().encode()
        data = (b"GET /_token/%s/first HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
                % (self.tok.encode(), self.srv.port))
        data += ("GET /_tunnel HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 "Sec-WebSocket-Key: %s\r\nOrigin: %s\r\n\r\n"
                 % (self.srv.port, key, tok2)).encode("latin-1")
        data += encode_frame(OP_PING, ping_payload, mask=True)
        sock = socket.create_connection((HOST, self.srv.port), timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(data)
        # (a) reaches the first tunnel; it is answered only after a while,
        # so (b) and (c) wait in the server meanwhile
        rid, first, *_ = self.tun.next_request(5)
        self.assertEqual(first, "GET /first HTTP/1.1")
        time.sleep(0.5)
        self.assertTrue(wait_tunnels(self.srv, 1, 0.2), "the upgrade ran ahead of (a)")
        self.tun.respond(rid, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        deadline = time.monotonic() + 10
        buf = bytearray()

        def head():
            while b"\r\n\r\n" not in buf:
                left = deadline - time.monotonic()
                self.assertGreater(left, 0, "timed out; got %r" % bytes(buf[:300]))
                sock.settimeout(left)
                piece = sock.recv(65536)
                self.assertTrue(piece, "connection closed; got %r" % bytes(buf[:300]))
                buf.extend(piece)
            i = buf.index(b"\r\n\r\n") + 4
            h = bytes(buf[:i])
            del buf[:i]
            return parse_head(h)

        status_line, hdrs = head()
        self.assertTrue(status_line.startswith("HTTP/1.1 200"), status_line)
        n = int(hdrs["content-length"][0])
        while len(buf) < n:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            piece = sock.recv(65536)
            self.assertTrue(piece, "connection closed in the first body")
            buf.extend(piece)
        self.assertEqual(bytes(buf[:n]), b"first")
        del buf[:n]
        status_line, hdrs = head()
        self.assertTrue(status_line.startswith("HTTP/1.1 101"), status_line)
        self.assertEqual(hdrs.get("sec-websocket-accept"), [ws_accept(key)])
        ws = WSConn(sock, True, bytes(buf))
        # (c): the ping sent with the upgrade is answered
        pong = None
        while pong is None:
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, "no pong for the pipelined ping")
            try:
                fr = ws.recv_frame(left)
            except (socket.timeout, TimeoutError):
                self.fail("no pong for the ping that followed the upgrade "
                          "(its bytes were lost)")
            if fr.opcode == OP_PING:
                ws.send_frame(OP_PONG, fr.payload)
            elif fr.opcode == OP_PONG:
                pong = fr
            else:
                self.fail("unexpected frame before the pong: %r" % fr)
        self.assertEqual(pong.payload, ping_payload)
        self.assertFalse(pong.masked)
        # the new tunnel is registered and carries a request
        self.assertTrue(wait_tunnels(self.srv, 2), "the pipelined tunnel is not listed")
        bg = Background(http_req, self.srv.port, "GET", "/_token/%s/second" % tok2, timeout=10)
        op, payload = ws.recv_message(5)
        self.assertEqual(op, OP_BIN)
        rid2, first2, _, _ = parse_tunnel_message(payload)
        self.assertEqual(first2, "GET /second HTTP/1.1")
        ws.send_binary(rid2.encode() + b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond")
        r = bg.result(10)
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"second")
        # and the first tunnel is unharmed
        bg = self.fetch("/third")
        rid3, first3, *_ = self.tun.next_request(5)
        self.assertEqual(first3, "GET /third HTTP/1.1")
        self.tun.respond(rid3, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthird")
        self.assertEqual(bg.result(10).body, b"third")
        ws.send_close()

    def test_text_message_closes_tunnel(self):
        self.tun.ws.send_text(b"0001HTTP/1.1 200 OK\r\n\r\n")
        self.assertTrue(self.tun.ws.wait_closed(5), "server kept a tunnel that sent text")
        self.assertTrue(wait_tunnels(self.srv, 0))

    def test_tunnel_survives_many_exchanges(self):
        for i in range(50):
            bg = self.fetch("/n%d" % i)
            rid, first, *_ = self.tun.next_request()
            self.assertEqual(first, "GET /n%d HTTP/1.1" % i)
            b = b"%d" % i
            self.tun.respond(rid, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b))
            self.assertEqual(bg.result(10).body, b)


class QueueAndTimeouts(E2ETestCase):
    def test_http_timeout_then_late_response_dropped(self):
        srv = self.server("-httptimeout", "2")
        tok = make_token()
        tun = self.raw_tunnel(srv, tok)
        self.assertTrue(wait_tunnels(srv, 1))
        bg = Background(get, srv.port, "/_token/%s/late" % tok, timeout=15)
        rid, *_ = tun.next_request()
        r = bg.result(10)
        self.assertStatus(r, 504)
        self.assertBody(r, "Tunnel timeout")
        self.assertGreater(bg.elapsed(), 1.5)
        self.assertLess(bg.elapsed(), 5.0)
        # the late answer is dropped; the tunnel keeps working
        tun.respond(rid, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate")
        bg2 = Background(get, srv.port, "/_token/%s/next" % tok, timeout=10)
        rid2, first, *_ = tun.next_request()
        self.assertEqual(first, "GET /next HTTP/1.1")
        tun.respond(rid2, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
        self.assertEqual(bg2.result(10).body, b"next")

    def test_queue_full_while_disconnected(self):
        srv = self.server("-max-requests-per-tunnel", "2", "-httptimeout", "20")
        tok = make_token()
        tun = self.raw_tunnel(srv, tok)
        self.assertTrue(wait_tunnels(srv, 1))
        tun.close()
        self.assertTrue(wait_tunnels(srv, 0))
        waiting = [Background(get, srv.port, "/_token/%s/q%d" % (tok, i), timeout=25)
                   for i in range(2)]

        # both queued before the third comes: a fixed pause can be too
        # short under valgrind (this file runs there), and the third then
        # takes a free slot and waits instead of getting the 504
        def queued():
            doc = get(srv.port, "/admin/auditing").json()
            return doc["tunnels"][tok]["pending_requests"]
        self.assertTrue(wait_until(lambda: queued() == 2, 10 * TIME_SCALE), queued())
        r = get(srv.port, "/_token/%s/q2" % tok, timeout=10)
        self.assertStatus(r, 504)
        self.assertBody(r, "too many requests in-flight, tunnel broken?")
        self.assertFalse(any(w.done() for w in waiting), "queued requests were answered early")
        # a client comes back: the queued requests are served
        tun2 = self.raw_tunnel(srv, tok)
        for _ in range(2):
            rid, first, *_ = tun2.next_request(10)
            name = first.split()[1][1:].encode()
            tun2.respond(rid, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(name), name))
        self.assertEqual(sorted(w.result(10).body for w in waiting), [b"q0", b"q1"])


if __name__ == "__main__":
    main()
