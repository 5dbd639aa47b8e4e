"""What wstuncli puts on the wire (PROTOCOL.md §1-4), pinned with a fake
tunnel server written in the test: handshake headers, message format,
masking, pings, reconnects."""

import base64
import hashlib
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, FakeTunnelServer, basic_auth, make_token,  # noqa: E402
                     parse_tunnel_message, expected_sha256, rec_headers, wait_until,
                     OP_BIN, OP_CLOSE, OP_PING, main)
import json  # noqa: E402


def request_once(msg, replies=1, timeout=10.0):
    """A fake-server handler that sends `msg` (bytes, or list of bytes) as
    binary messages once the tunnel is up, then collects `replies` binary
    messages into conn['replies'] and keeps the tunnel open."""
    msgs = msg if isinstance(msg, list) else [msg]

    def handler(fake, conn):
        ws = conn["ws"]
        conn["replies"] = []
        for m in msgs:
            ws.send_binary(m)
        deadline = time.monotonic() + timeout
        while len(conn["replies"]) < replies and time.monotonic() < deadline:
            try:
                op, payload = ws.recv_message(max(0.01, deadline - time.monotonic()))
            except (socket.timeout, TimeoutError):
                break
            except (EOFError, OSError):
                return
            if op == OP_CLOSE:
                return
            conn["replies"].append((op, payload))
        FakeTunnelServer.keep_open(fake, conn)
    return handler


class ClientHandshake(E2ETestCase):
    def test_handshake_headers(self):
        fake = self.fake_tunnel_server()
        tok = make_token()
        be = self.backend()
        self.client(fake.port, tok, server_url=be.url)
        self.assertTrue(fake.wait_conns(1, 5), "client never dialed")
        c = fake.conns[0]
        self.assertEqual(c["request_line"], "GET /_tunnel HTTP/1.1")
        h = c["headers"]
        self.assertEqual([v.lower() for v in h.get("upgrade", [])], ["websocket"])
        self.assertIn("upgrade", ",".join(h.get("connection", [])).lower())
        self.assertEqual(h.get("sec-websocket-version"), ["13"])
        key = base64.b64decode(h["sec-websocket-key"][0], validate=True)
        self.assertEqual(len(key), 16)
        self.assertEqual(h.get("origin"), [tok])
        self.assertEqual(h.get("host"), ["127.0.0.1:%d" % fake.port])
        self.assertNotIn("authorization", h)

    def test_base_path_is_dialed(self):
        fake = self.fake_tunnel_server()
        self.client(fake.port, make_token(), server_url="http://127.0.0.1:1",
                    tunnel_url="ws://127.0.0.1:%d/wstunnel" % fake.port)
        self.assertTrue(fake.wait_conns(1, 5))
        self.assertEqual(fake.conns[0]["request_line"], "GET /wstunnel/_tunnel HTTP/1.1")

    def test_password_in_token_flag(self):
        fake = self.fake_tunnel_server()
        tok = make_token()
        self.client(fake.port, "%s:pa55" % tok, server_url="http://127.0.0.1:1")
        self.assertTrue(fake.wait_conns(1, 5))
        h = fake.conns[0]["headers"]
        self.assertEqual(h.get("origin"), [tok])
        self.assertEqual(h.get("authorization"), [basic_auth(tok, "pa55")])

    def test_password_from_env(self):
        fake = self.fake_tunnel_server()
        tok = make_token()
        self.client(fake.port, tok, server_url="http://127.0.0.1:1",
                    env={"WSTUNNEL_PASSWORD": "from-env"})
        self.assertTrue(fake.wait_conns(1, 5))
        h = fake.conns[0]["headers"]
        self.assertEqual(h.get("origin"), [tok])
        self.assertEqual(h.get("authorization"), [basic_auth(tok, "from-env")])

    def test_url_userinfo_without_token_password(self):
        fake = self.fake_tunnel_server()
        tok = make_token()
        self.client(fake.port, tok, server_url="http://127.0.0.1:1",
                    tunnel_url="ws://proxyuser:proxypw@127.0.0.1:%d" % fake.port)
        self.assertTrue(fake.wait_conns(1, 5))
        h = fake.conns[0]["headers"]
        self.assertEqual(h.get("authorization"), [basic_auth("proxyuser", "proxypw")])
        self.assertNotIn("x-tunnel-authorization", h)

    def test_url_userinfo_with_token_password(self):
        fake = self.fake_tunnel_server()
        tok = make_token()
        self.client(fake.port, "%s:tokpw" % tok, server_url="http://127.0.0.1:1",
                    tunnel_url="ws://proxyuser:proxypw@127.0.0.1:%d" % fake.port)
        self.assertTrue(fake.wait_conns(1, 5))
        h = fake.conns[0]["headers"]
        self.assertEqual(h.get("authorization"), [basic_auth(tok, "tokpw")])
        self.assertEqual(h.get("x-tunnel-authorization"), [basic_auth("proxyuser", "proxypw")])

    def test_bad_accept_is_refused(self):
        tok = make_token()
        be = self.backend()
        fake = self.fake_tunnel_server(
            bad_accept=True,
            handler=request_once(b"0001GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", timeout=2.5))
        self.client(fake.port, tok, server_url=be.url)
        self.assertTrue(fake.wait_conns(1, 5))
        time.sleep(3)
        for c in fake.conns:
            self.assertEqual([r for r in c.get("replies", []) if r[0] == OP_BIN], [],
                             "client used a tunnel whose Sec-WebSocket-Accept was wrong")
        self.assertEqual(be.count(), 0)

    def test_rejected_handshake_is_retried(self):
        fake = self.fake_tunnel_server(status=503)
        c = self.client(fake.port, make_token(), server_url="http://127.0.0.1:1")
        self.assertTrue(fake.wait_conns(2, 8), "client did not retry after a 503 handshake")
        self.assertTrue(c.alive(), "client exited after a failed handshake")


class ClientMessages(E2ETestCase):
    def start(self, msg, replies=1, flags=()):
        self.be = self.backend()
        self.fake = self.fake_tunnel_server(handler=request_once(msg, replies))
        self.client(self.fake.port, make_token(), *flags, server_url=self.be.url)
        self.assertTrue(self.fake.wait_conns(1, 5))
        conn = self.fake.conns[0]
        self.assertTrue(wait_until(lambda: len(conn.get("replies", [])) >= replies, 10),
                        "client did not answer: %r" % conn.get("replies"))
        return conn

    def test_golden_get(self):
        conn = self.start(b"002aGET /echo?z=1 HTTP/1.1\r\nHost: tunnel.example\r\n"
                          b"X-Forwarded-For: 9.9.9.9\r\nX-Thing: 1\r\n\r\n")
        op, payload = conn["replies"][0]
        self.assertEqual(op, OP_BIN, "replies must be binary messages")
        data_frames = [f for f in conn["ws"].frames if f.opcode in (0, 1, 2)]
        self.assertTrue(all(f.masked for f in conn["ws"].frames), "client frames must be masked")
        self.assertTrue(data_frames)
        self.assertTrue(payload.startswith(b"002aHTTP/1.1 200 "), payload[:60])
        rid, first, hdrs, body = parse_tunnel_message(payload)
        self.assertEqual(rid, "002a")
        echo = json.loads(body)
        self.assertEqual(echo["path"], "/echo?z=1")
        self.assertEqual(rec_headers(echo, "Host"), ["127.0.0.1:%d" % self.be.port])
        self.assertEqual(rec_headers(echo, "X-Thing"), ["1"])
        self.assertEqual(rec_headers(echo, "X-Forwarded-For"), ["9.9.9.9"])

    def test_golden_post(self):
        conn = self.start(b"7fffPOST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello")
        rid, first, hdrs, body = parse_tunnel_message(conn["replies"][0][1])
        self.assertEqual(rid, "7fff")
        self.assertTrue(first.startswith("HTTP/1.1 200"), first)
        self.assertEqual(json.loads(body)["sha256"], hashlib.sha256(b"hello").hexdigest())

    def test_chunked_request_from_tunnel(self):
        conn = self.start(b"0100POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        rid, first, hdrs, body = parse_tunnel_message(conn["replies"][0][1])
        self.assertEqual(rid, "0100")
        self.assertEqual(json.loads(body)["len"], 5)
        self.assertEqual(json.loads(body)["sha256"], hashlib.sha256(b"abcde").hexdigest())

    def test_bad_request_bytes_give_400(self):
        conn = self.start(b"0003THIS IS NOT HTTP\r\n\r\n")
        rid, first, hdrs, body = parse_tunnel_message(conn["replies"][0][1])
        self.assertEqual(rid, "0003")
        self.assertTrue(first.startswith("HTTP/1.1 400"), first)
        self.assertEqual(self.be.count(), 0)

    def test_x_host_refused_on_the_wire(self):
        conn = self.start(b"0004GET / HTTP/1.1\r\nHost: h\r\nX-Host: http://127.0.0.1:1\r\n\r\n")
        rid, first, hdrs, body = parse_tunnel_message(conn["replies"][0][1])
        self.assertEqual(rid, "0004")
        self.assertTrue(first.startswith("HTTP/1.1 403"), first)
        self.assertIn(body, (b"X-Host header disallowed by wstunnel cli (no -regexp option)",
                             b"X-Host header disallowed by wstunnel cli (no -regexp option)\n"))

    def test_slow_request_does_not_block_fast_one(self):
        conn = self.start([b"0001GET /slow?ms=1500 HTTP/1.1\r\nHost: h\r\n\r\n",
                           b"0002GET /echo HTTP/1.1\r\nHost: h\r\n\r\n"], replies=2)
        ids = [r[1][:4] for r in conn["replies"]]
        self.assertEqual(ids, [b"0002", b"0001"])

    def test_large_response_streams(self):
        n = 20 * 1024 * 1024
        conn = self.start(b"0005GET /bytes?n=%d HTTP/1.1\r\nHost: h\r\n\r\n" % n)
        rid, first, hdrs, body = parse_tunnel_message(conn["replies"][0][1])
        self.assertEqual(rid, "0005")
        self.assertEqual(len(body), n)
        self.assertEqual(hashlib.sha256(body).hexdigest(), expected_sha256(n))
        self.assertTrue(all(f.masked for f in conn["ws"].frames))

    def test_backend_down_gives_502(self):
        self.be = None
        fake = self.fake_tunnel_server(handler=request_once(b"0006GET / HTTP/1.1\r\nHost: h\r\n\r\n"))
        from harness import dead_port
        sock, port = dead_port()
        self.addCleanup(sock.close)
        self.client(fake.port, make_token(), server_url="http://127.0.0.1:%d" % port)
        self.assertTrue(fake.wait_conns(1, 5))
        conn = fake.conns[0]
        self.assertTrue(wait_until(lambda: conn.get("replies"), 10))
        rid, first, hdrs, body = parse_tunnel_message(conn["replies"][0][1])
        self.assertEqual(rid, "0006")
        self.assertTrue(first.startswith("HTTP/1.1 502"), first)
        self.assertTrue(body, "502 without a body")


class ClientLiveness(E2ETestCase):
    def test_client_pings(self):
        fake = self.fake_tunnel_server()
        self.client(fake.port, make_token(), "-timeout", "3", server_url="http://127.0.0.1:1")
        self.assertTrue(fake.wait_conns(1, 5))
        conn = fake.conns[0]
        t0 = conn["time"]
        ok = wait_until(lambda: sum(1 for f in conn["ws"].frames if f.opcode == OP_PING) >= 2, 4)
        self.assertTrue(ok, "fewer than 2 pings within 4s with -timeout 3")
        self.assertLess(time.monotonic() - t0, 4.0)
        self.assertTrue(all(f.masked for f in conn["ws"].frames))
        # with pongs answered the tunnel stays up
        time.sleep(3.5)
        self.assertEqual(len(fake.conns), 1, "client redialed although pongs came back")

    def test_no_pong_drops_and_redials(self):
        def mute(fake, conn):
            ws = conn["ws"]
            while not fake.stopped.is_set():
                try:
                    op, _ = ws.recv_message(0.2, auto_pong=False)
                except (socket.timeout, TimeoutError):
                    continue
                except (EOFError, OSError):
                    conn["closed_at"] = time.monotonic()
                    return
                if op == OP_CLOSE:
                    conn["closed_at"] = time.monotonic()
                    return
        fake = self.fake_tunnel_server(handler=mute)
        self.client(fake.port, make_token(), "-timeout", "3", server_url="http://127.0.0.1:1")
        self.assertTrue(fake.wait_conns(1, 5))
        self.assertTrue(fake.wait_conns(2, 9), "client did not drop a pong-less tunnel and redial")
        first, second = fake.conns[0], fake.conns[1]
        gap = second["time"] - first["time"]
        self.assertGreater(gap, 2.0, "dropped a tunnel before -timeout passed")
        self.assertLess(gap, 8.0)
        self.assertIsNotNone(first["closed_at"], "old tunnel left open")

    def test_first_retry_fast_then_backoff(self):
        def slam(fake, conn):
            conn["ws"].sock.shutdown(socket.SHUT_RDWR)
            conn["ws"].close()
            conn["closed_at"] = time.monotonic()
        fake = self.fake_tunnel_server(handler=slam)
        self.client(fake.port, make_token(), server_url="http://127.0.0.1:1")
        self.assertTrue(fake.wait_conns(2, 5), "no redial after a drop")
        gap = fake.conns[1]["time"] - fake.conns[0]["time"]
        self.assertLess(gap, 1.5, "first retry took %.2fs" % gap)
        t0 = fake.conns[0]["time"]
        time.sleep(max(0.0, t0 + 5 - time.monotonic()))
        n = sum(1 for c in fake.conns if c["time"] - t0 <= 5.0)
        self.assertLessEqual(n, 7, "client redials too often (%d dials in 5s)" % n)


if __name__ == "__main__":
    main()
