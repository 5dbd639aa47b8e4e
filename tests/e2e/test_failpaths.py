"""Failure paths that no other test reached (issue 13): the client's
backend timeout and the expiry of its idle backend connections, the
server's idle timeout on requesters' keep-alive connections, a backend
name that does not resolve, a tunnel response cut short after its
head, the X-Host forms the regexp check sees (no port, IPv6, a lone
"/", userinfo, other schemes), and backends that break HTTP (garbage,
a bad chunk, bytes after the response or on an idle connection, a
reset). Each timer is shortened with its flag (-backend-timeout,
-backend-idle, -idle-timeout) so that no test waits for a default."""

import http.client
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, HOST, OP_BIN, OP_CONT, get,  # noqa: E402
                     http_req, main, make_token, raw_http, read_response,
                     wait_tunnels, wait_until)


def open_backend_conns(be):
    with be._lock:
        return len(be._conns)


def eof_after(sock, limit):
    """Seconds until the peer closes `sock` (EOF or reset), or None when
    it is still open after `limit` seconds. Data read meanwhile fails."""
    t0 = time.monotonic()
    sock.settimeout(limit)
    try:
        data = sock.recv(4096)
    except ConnectionResetError:
        data = b""
    except socket.timeout:
        return None
    if data:
        raise AssertionError("unexpected bytes: %r" % data[:200])
    return time.monotonic() - t0


class BackendTimeout(E2ETestCase):
    def test_slow_backend_gets_504_backend_timeout(self):
        srv, cli, be, tok = self.tunnel(cli_flags=("-backend-timeout", "1"))
        t0 = time.monotonic()
        r = get(srv.port, "/_token/%s/slow?ms=5000" % tok, timeout=10)
        took = time.monotonic() - t0
        self.assertStatus(r, 504)
        self.assertBody(r, "Backend timeout")
        self.assertGreater(took, 0.8, "answered before the timeout")
        self.assertLess(took, 4, "not answered when the timeout ran out")
        # the timed-out connection is not reused; the deadline holds on a
        # reused connection too; a backend answering in time is not cut
        self.assertStatus(get(srv.port, "/_token/%s/echo" % tok), 200)
        t0 = time.monotonic()
        r = get(srv.port, "/_token/%s/slow?ms=5000" % tok, timeout=10)
        self.assertStatus(r, 504)
        self.assertLess(time.monotonic() - t0, 4)
        r = get(srv.port, "/_token/%s/slow?ms=200" % tok, timeout=10)
        self.assertStatus(r, 200)
        ports = [rec["peer_port"] for rec in be.requests]
        self.assertEqual(len(ports), 4)
        self.assertNotEqual(ports[0], ports[1])
        self.assertEqual(ports[1], ports[2])  # reused
        self.assertNotEqual(ports[2], ports[3])

    def test_timeout_during_the_response_cuts_it(self):
        # head and first chunk at once, then a chunk every 700 ms: the 1 s
        # deadline runs out mid-body. Nothing handed to the tunnel yet: a
        # clean 502; else the response is cut. Never the whole of it.
        # v1 only: in v2 -backend-timeout bounds the wait for the response
        # head, and a response that keeps moving is never cut (test_v2.py)
        srv, cli, be, tok = self.tunnel(cli_flags=("-backend-timeout", "1",
                                                   "-protocol", "v1"))
        t0 = time.monotonic()
        try:
            r = get(srv.port, "/_token/%s/drip?n=6&ms=700" % tok, timeout=10)
        except (http.client.IncompleteRead, ConnectionError):
            r = None
        self.assertLess(time.monotonic() - t0, 4, "response not cut")
        if r is not None:
            self.assertStatus(r, 502)
            self.assertBody(r, "Backend response cut short")
        self.assertTrue(cli.wait_stderr("backend response cut short", 5))


class BackendIdle(E2ETestCase):
    def test_idle_backend_connection_is_closed_then_replaced(self):
        srv, cli, be, tok = self.tunnel(cli_flags=("-backend-idle", "1"))
        self.assertStatus(get(srv.port, "/_token/%s/echo?i=1" % tok), 200)
        time.sleep(0.3)  # well within the idle time: reused
        self.assertStatus(get(srv.port, "/_token/%s/echo?i=2" % tok), 200)
        self.assertEqual(open_backend_conns(be), 1)
        t0 = time.monotonic()
        self.assertTrue(wait_until(lambda: open_backend_conns(be) == 0, 5),
                        "idle backend connection never closed")
        self.assertGreater(time.monotonic() - t0, 0.5, "closed too early")
        self.assertStatus(get(srv.port, "/_token/%s/echo?i=3" % tok), 200)
        ports = [rec["peer_port"] for rec in be.requests]
        self.assertEqual(len(ports), 3, ports)
        self.assertEqual(ports[0], ports[1])
        self.assertNotEqual(ports[1], ports[2])


class FrontIdle(E2ETestCase):
    def _health(self, sock):
        sock.sendall(b"GET /_health_check HTTP/1.1\r\nHost: h\r\n\r\n")
        f = sock.makefile("rb")
        try:
            r = read_response(f)
        finally:
            f.close()
        self.assertStatus(r, 200)

    def test_idle_keepalive_connection_is_closed(self):
        srv = self.server("-idle-timeout", "1")
        sock = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(sock.close)
        self._health(sock)
        took = eof_after(sock, 5)
        self.assertIsNotNone(took, "idle connection still open after 5 s")
        self.assertGreater(took, 0.7)

    def test_connection_that_never_sends_is_closed(self):
        srv = self.server("-idle-timeout", "1")
        sock = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(sock.close)
        took = eof_after(sock, 5)
        self.assertIsNotNone(took, "silent connection still open after 5 s")
        self.assertGreater(took, 0.7)

    def test_active_connection_is_kept(self):
        # a request every 0.4 s for 2.4 s: each restarts the idle time
        srv = self.server("-idle-timeout", "1")
        sock = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(sock.close)
        for _ in range(7):
            self._health(sock)
            time.sleep(0.4)
        self._health(sock)

    def test_default_keeps_an_idle_connection(self):
        srv = self.server()
        sock = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(sock.close)
        self._health(sock)
        self.assertIsNone(eof_after(sock, 2), "closed under the 60 s default")
        self._health(sock)


class UnresolvableBackend(E2ETestCase):
    def test_name_that_does_not_resolve_is_502(self):
        # A 64-byte label is no DNS name: the C library refuses it before
        # building a query (after /etc/hosts), so nothing leaves the
        # machine, and getaddrinfo fails as for any unknown name.
        be = self.backend()
        srv = self.server()
        tok = make_token()
        self.client(srv, tok, "-regexp", r"http://[a-z.]+:[0-9]+",
                    server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1))
        name = "a" * 64 + ".localhost"
        r = get(srv.port, "/_token/%s/echo" % tok,
                headers={"X-Host": "http://%s:8080" % name})
        self.assertStatus(r, 502)
        self.assertTrue(r.body.startswith(b"Backend http://%s:8080 unavailable: "
                                          % name.encode()), r.body)
        self.assertEqual(be.count(), 0)
        # the tunnel is fine: the default backend still answers
        self.assertStatus(get(srv.port, "/_token/%s/echo" % tok), 200)


class TunnelResponseCut(E2ETestCase):
    def test_message_ending_inside_the_body_aborts_the_response(self):
        """A head announcing 10 bytes, a message that ends after 2: the
        status is already out, so the requester's connection is cut (no
        506, no hanging until the deadline)."""
        srv = self.server()
        tok = make_token()
        tun = self.raw_tunnel(srv, tok)
        self.assertTrue(wait_tunnels(srv, 1))
        sock = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(b"GET /_token/%s/x HTTP/1.1\r\nHost: h\r\n\r\n" % tok.encode())
        rid, *_ = tun.next_request()
        tun.respond(rid, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok")
        # the head may be out already: a truncated answer or a reset
        got = b""
        t0 = time.monotonic()
        while time.monotonic() - t0 < 5:
            try:
                piece = sock.recv(4096)
            except ConnectionResetError:
                break
            if not piece:
                break
            got += piece
        self.assertLess(time.monotonic() - t0, 4, "connection not cut")
        self.assertNotIn(b"506", got[:20])
        self.assertTrue(srv.wait_stderr("response cut short: aborting", 5))
        # the tunnel stays usable
        bg = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(bg.close)
        bg.sendall(b"GET /_token/%s/y HTTP/1.1\r\nHost: h\r\n\r\n" % tok.encode())
        rid, *_ = tun.next_request()
        tun.respond(rid, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        f = bg.makefile("rb")
        self.addCleanup(f.close)
        self.assertEqual(read_response(f).body, b"ok")

    def test_tunnel_lost_inside_the_head_is_502(self):
        """The first fragment of an answer carries half a head, then the
        tunnel drops: the request was not answered (502 tunnel lost), it
        is no bad answer (506)."""
        srv = self.server()
        tok = make_token()
        tun = self.raw_tunnel(srv, tok)
        self.assertTrue(wait_tunnels(srv, 1))
        sock = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(sock.close)
        sock.sendall(b"GET /_token/%s/x HTTP/1.1\r\nHost: h\r\n\r\n" % tok.encode())
        rid, *_ = tun.next_request()
        tun.ws.send_frame(OP_BIN, rid.encode() + b"HTTP/1.1 200 OK\r\nFo", fin=False)
        time.sleep(0.2)
        tun.ws.close()
        f = sock.makefile("rb")
        self.addCleanup(f.close)
        r = read_response(f)
        self.assertStatus(r, 502)
        self.assertBody(r, "Tunnel connection lost before the response")


class V6Backend:
    """One-shot HTTP backend on [::1]: records the request head, answers
    200 "ok"."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        self.sock.bind(("::1", 0))
        self.sock.listen(4)
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.head = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            c, _ = self.sock.accept()
        except OSError:
            return
        with c:
            c.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data:
                piece = c.recv(4096)
                if not piece:
                    return
                data += piece
            self.head = data.split(b"\r\n\r\n")[0].decode("latin-1")
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                      b"Connection: close\r\n\r\nok")

    def close(self):
        self.sock.close()
        self.thread.join(5)


class XHostForms(E2ETestCase):
    def _tunnel(self, regexp):
        be = self.backend()
        srv = self.server()
        tok = make_token()
        self.client(srv, tok, "-regexp", regexp, server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1))
        return srv, be, tok

    def test_ipv6_backend(self):
        try:
            v6 = V6Backend()
        except OSError as e:
            self.skipTest("no IPv6 loopback: %s" % e)
        self.addCleanup(v6.close)
        srv, be, tok = self._tunnel(r"http://\[::1\]:[0-9]+")
        r = get(srv.port, "/_token/%s/six" % tok,
                headers={"X-Host": "http://[::1]:%d" % v6.port})
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"ok")
        self.assertTrue(v6.head.startswith("GET /six HTTP/1.1\r\n"), v6.head)
        self.assertIn("\r\nHost: [::1]:%d" % v6.port, v6.head)

    def test_without_a_port_the_regexp_sees_none(self):
        # nothing listens on 127.0.0.1:80 here: past the regexp, the
        # connection is refused (502), where a mismatch would be 403
        srv, be, tok = self._tunnel(r"http://127\.0\.0\.1")
        r = get(srv.port, "/_token/%s/x" % tok,
                headers={"X-Host": "http://127.0.0.1"})
        self.assertNotIn(b"does not match", r.body)
        self.assertStatus(r, 502)
        self.assertIn(b"Backend http://127.0.0.1:80 unavailable", r.body)

    def test_a_lone_slash_is_no_path(self):
        srv, be, tok = self._tunnel(r"http://127\.0\.0\.1:[0-9]+")
        r = get(srv.port, "/_token/%s/echo?q=1" % tok,
                headers={"X-Host": be.url + "/"})
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["path"], "/echo?q=1")

    def test_userinfo_and_other_schemes_are_refused(self):
        srv, be, tok = self._tunnel(r".*")
        for xhost in ("http://user@127.0.0.1:%d" % be.port,
                      "http://user:pw@127.0.0.1:%d" % be.port,
                      "ws://127.0.0.1:%d" % be.port,
                      "ftp://127.0.0.1:%d" % be.port):
            r = get(srv.port, "/_token/%s/echo" % tok, headers={"X-Host": xhost})
            self.assertStatus(r, 403)
            self.assertIn(b"does not match regexp", r.body)
        self.assertEqual(be.count(), 0)


class ScriptedBackend:
    """HTTP backend on 127.0.0.1 that answers with whatever `script`
    writes: script(sock, head, conn_no, req_no) gets each request head
    (GET, no body) and returns False to stop reading that connection.
    .conns counts accepted connections, .ended those that ended (closed
    by the peer, or by the script)."""

    def __init__(self, script):
        self.script = script
        self.conns = 0
        self.ended = 0
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.url = "http://%s:%d" % (HOST, self.port)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns += 1
            threading.Thread(target=self._serve, args=(c, self.conns),
                             daemon=True).start()

    def _serve(self, c, conn_no):
        data, req_no = b"", 0
        c.settimeout(10)
        try:
            while True:
                while b"\r\n\r\n" not in data:
                    piece = c.recv(4096)
                    if not piece:
                        return
                    data += piece
                head, data = data.split(b"\r\n\r\n", 1)
                req_no += 1
                if self.script(c, head.decode("latin-1"), conn_no, req_no) is False:
                    return
        except OSError:
            pass
        finally:
            c.close()
            self.ended += 1

    def close(self):
        self.sock.close()


OK_2 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


class BackendBreaksHTTP(E2ETestCase):
    def _tunnel(self, script):
        be = ScriptedBackend(script)
        self.addCleanup(be.close)
        srv = self.server()
        tok = make_token()
        self.client(srv, tok, server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1))
        return srv, be, tok

    def test_unparsable_response_is_502(self):
        srv, be, tok = self._tunnel(
            lambda c, h, cn, rn: c.sendall(b"garbage, not HTTP\r\n\r\n"))
        r = get(srv.port, "/_token/%s/x" % tok)
        self.assertStatus(r, 502)
        self.assertBody(r, "Backend %s unavailable: unparsable response" % be.url)

    def test_bad_chunk_after_the_head_cuts_the_response(self):
        def script(c, h, cn, rn):
            c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"2\r\nok\r\nzz-not-a-size\r\n")
            time.sleep(3)
            return False
        srv, be, tok = self._tunnel(script)
        t0 = time.monotonic()
        try:
            r = get(srv.port, "/_token/%s/x" % tok, timeout=10)
        except (http.client.IncompleteRead, ConnectionError):
            r = None
        self.assertLess(time.monotonic() - t0, 2.5, "not cut before the backend closed")
        if r is not None:  # nothing handed to the tunnel yet: a clean error
            self.assertStatus(r, 502)
            self.assertBody(r, "Backend response cut short")

    def test_bytes_after_the_response_end_the_connection(self):
        srv, be, tok = self._tunnel(
            lambda c, h, cn, rn: c.sendall(OK_2 + b"EXTRA"))
        for i in range(2):
            r = get(srv.port, "/_token/%s/x%d" % (tok, i))
            self.assertStatus(r, 200)
            self.assertEqual(r.body, b"ok")
        self.assertEqual(be.conns, 2, "the connection was reused")

    def test_bytes_on_an_idle_connection_end_it(self):
        def script(c, h, cn, rn):
            c.sendall(OK_2)
            if cn == 1:
                time.sleep(0.3)
                c.sendall(b"unsolicited")
        srv, be, tok = self._tunnel(script)
        self.assertStatus(get(srv.port, "/_token/%s/a" % tok), 200)
        # the client drops the spoilt connection when the bytes come (0.3 s
        # on); a client that kept it would keep it past this wait too
        wait_until(lambda: be.ended == 1, 5)
        self.assertStatus(get(srv.port, "/_token/%s/b" % tok), 200)
        self.assertEqual(be.conns, 2, "the spoilt connection was reused")

    def test_reset_before_the_response_is_502(self):
        def script(c, h, cn, rn):
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                         struct.pack("ii", 1, 0))
            return False  # closed with an RST
        srv, be, tok = self._tunnel(script)
        r = get(srv.port, "/_token/%s/x" % tok)
        self.assertStatus(r, 502)
        prefix = "Backend %s unavailable: " % be.url
        self.assertTrue(r.text.startswith(prefix), r.body)
        self.assertNotEqual(r.text, prefix + "connection closed")

    def test_early_answer_drops_the_rest_of_the_upload(self):
        """The backend answers a 4 MiB upload after its head and stops
        reading: the answer reaches the requester, the rest of the body
        is dropped, and the next request gets a fresh connection. (The
        server ends the tunnel message early too, so whether the client
        sees the answer before the end of the request body is a race:
        this does not pin upstream.c's req_complete checks.)"""
        def script(c, h, cn, rn):
            if h.startswith("POST"):
                c.sendall(b"HTTP/1.1 413 Payload Too Large\r\n"
                          b"Content-Length: 4\r\n\r\nbig!")
                time.sleep(1)
                return False
            c.sendall(OK_2)
        srv, be, tok = self._tunnel(script)
        r = http_req(srv.port, "POST", "/_token/%s/up" % tok,
                     body=b"x" * (4 << 20), timeout=20)
        self.assertStatus(r, 413)
        self.assertEqual(r.body, b"big!")
        self.assertStatus(get(srv.port, "/_token/%s/after" % tok), 200)
        self.assertEqual(be.conns, 2)


class TunnelAnswerForms(E2ETestCase):
    """Answers a tunnel peer may send that only a hand-written one does."""

    def setUp(self):
        super().setUp()
        self.srv = self.server()
        self.tok = make_token()
        self.tun = self.raw_tunnel(self.srv, self.tok)
        self.assertTrue(wait_tunnels(self.srv, 1))
        self.sock = socket.create_connection((HOST, self.srv.port), timeout=10)
        self.addCleanup(self.sock.close)
        self.f = self.sock.makefile("rb")
        self.addCleanup(self.f.close)

    def ask(self, path, method="GET"):
        body = b"x" if method == "POST" else b""
        self.sock.sendall(b"%s /_token/%s%s HTTP/1.1\r\nHost: h\r\n"
                          b"Content-Length: %d\r\n\r\n%s"
                          % (method.encode(), self.tok.encode(), path.encode(),
                             len(body), body))
        rid, *_ = self.tun.next_request()
        return rid.encode()

    def test_interim_response_then_the_final_one(self):
        rid = self.ask("/a")
        self.tun.ws.send_binary(rid + b"HTTP/1.1 100 Continue\r\n\r\n"
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        r = read_response(self.f)
        while r.status == 100:  # forwarded or not: the final one follows
            r = read_response(self.f)
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"ok")

    def test_bytes_after_the_response_in_its_message_are_dropped(self):
        rid = self.ask("/a")
        self.tun.ws.send_frame(OP_BIN, rid + OK_2, fin=False)
        self.tun.ws.send_frame(OP_CONT, b"HTTP/1.1 200 OK\r\n\r\nSMUGGLED")
        r = read_response(self.f)
        self.assertEqual(r.body, b"ok")
        self.assertTrue(self.srv.wait_stderr(" 27 bytes after the response in "
                                             "its message: dropped", 5))
        # the next answer on this connection is the next request's
        rid = self.ask("/b")
        self.tun.respond(rid.decode(), b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nB")
        self.assertEqual(read_response(self.f).body, b"B")

    def test_response_delimited_by_the_end_of_its_message(self):
        rid = self.ask("/a")
        self.tun.respond(rid.decode(), b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                       b"\r\nhello, until the end")
        r = read_response(self.f)
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"hello, until the end")

    def test_tunnel_lost_after_the_id_alone_is_502(self):
        # a POST (a GET would be sent again: test_retry ReplayAfterLoss)
        rid = self.ask("/a", method="POST")
        self.tun.ws.send_frame(OP_BIN, rid, fin=False)
        time.sleep(0.2)
        self.tun.ws.close()
        r = read_response(self.f)
        self.assertStatus(r, 502)
        self.assertBody(r, "Tunnel connection lost before the response")

    def test_get_lost_after_the_id_alone_goes_to_the_next_tunnel(self):
        rid = self.ask("/a")
        self.tun.ws.send_frame(OP_BIN, rid, fin=False)
        time.sleep(0.2)
        self.tun.ws.close()
        # the tunnel's end is no reason to give up a GET: the next tunnel
        # of the token gets it (not the closing one, and not 504 at once)
        t2 = self.raw_tunnel(self.srv, self.tok)
        rid2, first, _, _, _ = t2.next_request(5)
        self.assertEqual(first, "GET /a HTTP/1.1")
        t2.respond(rid2, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        r = read_response(self.f)
        self.assertEqual((r.status, r.body), (200, b"ok"))


class RequestForms(E2ETestCase):
    def test_target_that_is_no_path_is_400(self):
        srv = self.server()
        for target in (b"http://h/_health_check", b"*"):
            r = raw_http(srv.port, b"OPTIONS %s HTTP/1.1\r\nHost: h\r\n\r\n" % target)
            self.assertStatus(r, 400)
            self.assertBody(r, "Request target must be a path")

    def test_empty_x_token_is_400(self):
        srv = self.server()
        r = get(srv.port, "/anything", headers={"X-Token": ""})
        self.assertStatus(r, 400)
        self.assertBody(r, "Missing X-Token header")


if __name__ == "__main__":
    main()
