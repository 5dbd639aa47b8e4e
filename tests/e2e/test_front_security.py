"""Issue 13: what a remote requester or a rogue tunnel client can do to
the server's front connections (memory safety of the request head, one
response per tunnel message, X-Forwarded-For with several lines, memory
under a pipelining requester that never reads)."""

import socket
import time

from harness import (HOST, E2ETestCase, FakeTunnelServer, LoopbackListener,
                     main, make_token, parse_tunnel_message, raw_http,
                     read_response, wait_tunnels, wait_until)

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


class OneResponsePerMessage(E2ETestCase):
    """A tunnel message carries exactly one response: whatever follows it
    in the message must never reach the requester."""

    def test_second_response_in_a_message_is_dropped(self):
        srv = self.server()
        tok = make_token()
        t = self.raw_tunnel(srv, tok)
        self.assertTrue(wait_tunnels(srv, 1))
        injected = (b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n"
                    b"X-Injected: yes\r\n\r\ninjected")
        with socket.create_connection((HOST, srv.port), timeout=10) as s:
            s.settimeout(10)
            s.sendall(b"GET /a HTTP/1.1\r\nHost: x\r\nX-Token: " + tok.encode() +
                      b"\r\n\r\n")
            rid, first, hdrs, body, raw = t.next_request()
            t.respond(rid, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst" +
                      injected)
            f = s.makefile("rb")
            r = read_response(f)
            self.assertEqual(r.body, b"first")
            # the next request on the connection gets its own answer, not
            # the injected one
            s.sendall(b"GET /_health_check HTTP/1.1\r\nHost: x\r\n\r\n")
            r2 = read_response(f)
            f.close()
            self.assertIsNone(r2.header("X-Injected"), "injected response "
                              "reached the requester: %r" % r2.body)
            self.assertEqual(r2.status, 200)
            self.assertEqual(r2.body, b"WSTUNSRV RUNNING\n")
        m = srv.wait_stderr(r"id=%s.*%d bytes after the response" % (rid, len(injected)), 5)
        self.assertTrue(m, "no warning about the dropped bytes\n" + srv.describe())

    def test_response_then_garbage_in_a_message(self):
        srv = self.server()
        tok = make_token()
        t = self.raw_tunnel(srv, tok)
        self.assertTrue(wait_tunnels(srv, 1))
        with socket.create_connection((HOST, srv.port), timeout=10) as s:
            s.settimeout(10)
            s.sendall(b"HEAD /a HTTP/1.1\r\nHost: x\r\nX-Token: " + tok.encode() +
                      b"\r\n\r\n")
            rid, first, hdrs, body, raw = t.next_request()
            # a HEAD response has no body: the bytes after its head are not
            # part of it
            t.respond(rid, b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
                      b"HTTP/1.1 302 Found\r\nLocation: http://evil/\r\n"
                      b"Content-Length: 0\r\n\r\n")
            f = s.makefile("rb")
            r = read_response(f, method="HEAD")
            self.assertEqual(r.status, 200)
            s.sendall(b"GET /_health_check HTTP/1.1\r\nHost: x\r\n\r\n")
            r2 = read_response(f)
            f.close()
            self.assertEqual(r2.status, 200, "injected: %r" % r2)
            self.assertEqual(r2.body, b"WSTUNSRV RUNNING\n")


class ChattyBackend(LoopbackListener):
    """A keep-alive backend whose first answer on each connection is
    followed, in the same write, by a second response nobody asked for.
    Records (connection number, request line) of every request."""

    def __init__(self):
        self.requests = []
        self.nconns = 0
        super().__init__()

    def _serve(self, s):
        with self._cond:
            self.nconns += 1
            n = self.nconns
        s.settimeout(10)
        buf = b""
        first = True
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    d = s.recv(65536)
                    if not d:
                        return
                    buf += d
                head, buf = buf.split(b"\r\n\r\n", 1)
                line = head.split(b"\r\n")[0].decode("latin-1")
                with self._cond:
                    self.requests.append((n, line))
                    self._cond.notify_all()
                body = ("conn %d: %s" % (n, line)).encode()
                out = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (
                    len(body), body)
                if first:
                    out += (b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n"
                            b"X-Injected: yes\r\n\r\ninjected")
                    first = False
                s.sendall(out)
        except OSError:
            return


class InterimResponses(E2ETestCase):
    """1xx from a tunnel client: an interim one is not the response (and
    not the requester's business: the server sends its own 100 Continue);
    a 101 would switch a proxy in front of the server to raw bytes."""

    def exchange(self, raw_response, method=b"GET"):
        srv = self.server()
        tok = make_token()
        t = self.raw_tunnel(srv, tok)
        self.assertTrue(wait_tunnels(srv, 1))
        with socket.create_connection((HOST, srv.port), timeout=10) as s:
            s.settimeout(10)
            s.sendall(method + b" /a HTTP/1.1\r\nHost: x\r\nX-Token: " +
                      tok.encode() + b"\r\n\r\n")
            rid, first, hdrs, body, raw = t.next_request()
            t.respond(rid, raw_response)
            f = s.makefile("rb")
            r = read_response(f)
            s.sendall(b"GET /_health_check HTTP/1.1\r\nHost: x\r\n\r\n")
            r2 = read_response(f)
            f.close()
        self.assertEqual(r2.body, b"WSTUNSRV RUNNING\n")
        return srv, r

    def test_101_is_refused(self):
        srv, r = self.exchange(b"HTTP/1.1 101 Switching Protocols\r\n"
                               b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        self.assertEqual(r.status, 506, r)
        self.assertTrue(srv.wait_stderr(r"101 from the tunnel client refused", 5))

    def test_interim_responses_are_not_forwarded(self):
        srv, r = self.exchange(b"HTTP/1.1 100 Continue\r\n\r\n"
                               b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                               b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.body, b"ok")


class OneRequestPerMessageClient(E2ETestCase):
    """The client side of the same rule: one request per tunnel message,
    and a backend connection that sent more than the response is not used
    again."""

    def test_second_request_in_a_message_is_dropped(self):
        be = self.backend()
        msg = (b"0001GET /echo?a=1 HTTP/1.1\r\nHost: h\r\n\r\n"
               b"GET /echo?b=2 HTTP/1.1\r\nHost: h\r\n\r\n")
        got = []

        def handler(fake, conn):
            ws = conn["ws"]
            ws.send_binary(msg)
            try:
                got.append(ws.recv_message(10))
            except Exception as e:  # noqa: BLE001
                got.append(e)
            FakeTunnelServer.keep_open(fake, conn)

        fake = self.fake_tunnel_server(handler=handler)
        cli = self.client(fake.port, make_token(), server_url=be.url)
        self.assertTrue(wait_until(lambda: got, 10), "no reply")
        op, payload = got[0]
        rid, first, hdrs, body = parse_tunnel_message(payload)
        self.assertEqual(rid, "0001")
        self.assertIn(b"/echo?a=1", body)
        time.sleep(0.3)
        self.assertEqual(be.count(), 1, "the backend got the second request")
        self.assertEqual(be.last()["path"], "/echo?a=1")
        self.assertTrue(cli.wait_stderr(r"id=0001: %d bytes after the request"
                                        % (len(msg) - msg.index(b"GET /echo?b")), 5),
                        "no warning about the dropped request\n" + cli.describe())

    def test_backend_connection_with_extra_bytes_is_not_reused(self):
        be = ChattyBackend()
        self.addCleanup(be.stop)
        srv = self.server()
        tok = make_token()
        cli = self.client(srv, tok, server_url="http://%s:%d" % (HOST, be.port))
        self.assertTrue(wait_tunnels(srv, 1))
        with socket.create_connection((HOST, srv.port), timeout=10) as s:
            s.settimeout(10)
            f = s.makefile("rb")
            for path in ("/one", "/two"):
                s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                          b"X-Token: " + tok.encode() + b"\r\n\r\n")
                r = read_response(f)
                self.assertEqual(r.status, 200)
                self.assertIsNone(r.header("X-Injected"))
                self.assertTrue(r.body.endswith(b"GET " + path.encode() + b" HTTP/1.1"),
                                r.body)
            f.close()
        # the connection that sent an extra response is not used again
        self.assertEqual([n for n, _ in be.requests], [1, 2])
        self.assertTrue(cli.wait_stderr(r"backend sent \d+ bytes after the response", 5),
                        cli.describe())


class ForwardedForLines(E2ETestCase):
    """Behind a trusted proxy, the requester is the last address of the
    last X-Forwarded-For line: an earlier line is whatever the requester
    wrote."""

    def two_lines(self, path, first="127.0.0.1", last=REMOTE, extra=b""):
        return raw_http(self.srv.port, (
            "GET %s HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: %s\r\n"
            "X-Forwarded-For: %s\r\nConnection: close\r\n" % (path, first, last)
        ).encode() + extra + b"\r\n")

    def test_forged_first_line_does_not_make_a_local_requester(self):
        self.srv = self.server("-trusted-proxies", "127.0.0.1",
                               "-admin-allow", "198.51.100.0/24")
        for path in ("/admin/monitoring", "/admin/auditing", "/metrics"):
            r = self.two_lines(path)
            self.assertEqual(r.status, 403, "%s: %r" % (path, r.body[:200]))
            # the proxy's own last address decides, whatever came before
            r = self.two_lines(path, first=REMOTE, last="198.51.100.4")
            self.assertEqual(r.status, 200, path)
            r = self.two_lines(path, first="198.51.100.4", last=REMOTE)
            self.assertEqual(r.status, 403, path)
        r = self.two_lines("/_stats")
        self.assertEqual(r.status, 200)
        self.assertIn(b"More stats available when called from localhost", r.body)
        r = self.two_lines("/_stats", first=REMOTE, last="10.0.0.1, 127.0.0.1")
        self.assertIn(b"total_clients=", r.body)

    def test_unreadable_last_address_is_a_stranger(self):
        # the trusted proxy is on this host: falling back to it made every
        # requester it forwarded with an odd X-Forwarded-For local
        self.srv = self.server("-trusted-proxies", "127.0.0.1")
        def one_line(path, xff):
            return raw_http(self.srv.port, (
                "GET %s HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: %s\r\n"
                "Connection: close\r\n\r\n" % (path, xff)).encode())
        for xff in ("203.0.113.9:5555", "unknown", "[2001:db8::1]",
                    "127.0.0.1, 203.0.113.9:5555"):
            self.assertEqual(one_line("/metrics", xff).status, 403, xff)
            self.assertIn(b"More stats available when called from localhost",
                          one_line("/_stats", xff).body, xff)
        self.assertEqual(one_line("/metrics", "10.0.0.1, 127.0.0.1").status, 200)

    def test_all_lines_are_forwarded_in_order(self):
        self.srv = self.server("-trusted-proxies", "127.0.0.1")
        tok = make_token()
        t = self.raw_tunnel(self.srv, tok)
        self.assertTrue(wait_tunnels(self.srv, 1))
        with socket.create_connection((HOST, self.srv.port), timeout=10) as s:
            s.settimeout(10)
            s.sendall(b"GET /x HTTP/1.1\r\nHost: x\r\nX-Token: " + tok.encode() +
                      b"\r\nX-Forwarded-For: 10.1.1.1, 10.2.2.2\r\n"
                      b"X-Forwarded-For: " + REMOTE.encode() + b"\r\n\r\n")
            rid, first, hdrs, body, raw = t.next_request()
            self.assertEqual(hdrs.get("x-forwarded-for"),
                             ["10.1.1.1, 10.2.2.2, %s, 127.0.0.1" % REMOTE])
            t.respond(rid, b"HTTP/1.1 204 No Content\r\n\r\n")
            f = s.makefile("rb")
            self.assertEqual(read_response(f).status, 204)
            f.close()


class PipelineFlood(E2ETestCase):
    """A requester that pipelines requests answered locally and never reads
    its answers: the server must stop reading while its output to that
    requester is backed up, instead of queueing answers without bound."""

    FLOOD = 48 << 20
    RSS_LIMIT_KIB = 40 << 10

    def test_pipelined_health_checks_without_reading(self):
        srv = self.server()
        req = b"GET /_health_check HTTP/1.1\r\nHost: x\r\n\r\n"
        with socket.create_connection((HOST, srv.port), timeout=10) as s:
            s.sendall(req)
            answer = s.recv(4096)
        self.assertTrue(answer.startswith(b"HTTP/1.1 200"), answer)
        self.assertTrue(answer.endswith(b"WSTUNSRV RUNNING\n"), answer)
        rss_before = srv.vm_hwm_kib()

        s = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        chunk = req * ((256 << 10) // len(req))
        sent = 0
        deadline = time.monotonic() + 40
        s.settimeout(2.0)  # no progress for this long: the server stopped
        while sent < self.FLOOD and time.monotonic() < deadline:
            try:
                n = s.send(chunk[sent % len(chunk):] if sent % len(chunk) else chunk)
            except (socket.timeout, TimeoutError):
                break
            sent += n
        rss_flood = srv.vm_hwm_kib()
        sys_msg = ("sent %.1f MiB of %d MiB; wstunsrv VmHWM %d KiB before, %d KiB "
                   "after the flood" % (sent / 1048576.0, self.FLOOD >> 20,
                                        rss_before, rss_flood))
        print("\n  " + sys_msg)
        self.assertTrue(srv.alive(), srv.describe())
        if not srv.sanitized():
            self.assertLess(rss_flood, self.RSS_LIMIT_KIB, sys_msg)
        self.assertLess(sent, self.FLOOD, "the server read the whole flood "
                        "without its answers being read: " + sys_msg)

        # now read: every complete request gets its answer, in order, and
        # the connection goes on working
        whole = sent // len(req)
        want = answer * whole
        got = bytearray()
        s.settimeout(10)
        rest = req[sent % len(req):] if sent % len(req) else b""
        if rest:
            # the tail of the last request goes out once we read
            import threading
            threading.Thread(target=lambda: s.sendall(rest), daemon=True).start()
            whole += 1
            want += answer
        while len(got) < len(want):
            d = s.recv(1 << 20)
            if not d:
                break
            got += d
        self.assertEqual(len(got), len(want), "answers missing: " + sys_msg)
        self.assertTrue(bytes(got) == want, "answers differ from %d copies of %r"
                        % (whole, answer))
        s.sendall(req)
        self.assertEqual(s.recv(4096), answer)


class SlowBackendUpload(E2ETestCase):
    """wstuncli held a request's body for a backend it was still connecting
    to without bound, reading the tunnel as fast as the requester sent."""

    BODY = 64 << 20
    RSS_LIMIT_KIB = 40 << 10

    def test_upload_while_backend_connect_hangs(self):
        # a listener with a full backlog: SYNs are dropped, connect() hangs
        lsock = socket.socket()
        self.addCleanup(lsock.close)
        lsock.bind((HOST, 0))
        lsock.listen(0)
        bport = lsock.getsockname()[1]
        filler = socket.create_connection((HOST, bport), timeout=5)
        self.addCleanup(filler.close)
        srv = self.server()
        tok = make_token()
        cli = self.client(srv, tok, server_url="http://%s:%d" % (HOST, bport))
        self.assertTrue(wait_tunnels(srv, 1))
        rss_before = cli.vm_hwm_kib()

        s = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nX-Token: " + tok.encode() +
                  b"\r\nContent-Length: %d\r\n\r\n" % self.BODY)
        chunk = b"u" * (256 << 10)
        sent = 0
        s.settimeout(0.5)
        stop_at = time.monotonic() + 3
        while sent < self.BODY and time.monotonic() < stop_at:
            try:
                sent += s.send(chunk[:min(len(chunk), self.BODY - sent)])
            except (socket.timeout, TimeoutError):
                pass
        rss_upload = cli.vm_hwm_kib()
        msg = ("sent %.1f MiB of %d MiB while the backend connect hung; wstuncli "
               "VmHWM %d KiB before, %d KiB after" % (
                   sent / 1048576.0, self.BODY >> 20, rss_before, rss_upload))
        print("\n  " + msg)
        if not cli.sanitized():
            self.assertLess(rss_upload, self.RSS_LIMIT_KIB, msg)

        # the backend comes to life: the body flows on, whole
        got = {}

        def serve():
            lsock.settimeout(10)
            while "n" not in got:
                try:
                    c, _ = lsock.accept()
                except OSError:
                    return
                c.settimeout(10)
                buf = b""
                try:
                    while b"\r\n\r\n" not in buf:
                        d = c.recv(65536)
                        if not d:
                            break
                        buf += d
                    if b"\r\n\r\n" not in buf:
                        c.close()
                        continue  # the filler
                    head, body = buf.split(b"\r\n\r\n", 1)
                    n = len(body)
                    while n < self.BODY:
                        d = c.recv(1 << 20)
                        if not d:
                            break
                        n += len(d)
                    got["n"] = n
                    ans = str(n).encode()
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                              % (len(ans), ans))
                finally:
                    c.close()

        import threading
        threading.Thread(target=serve, daemon=True).start()
        filler.close()
        s.settimeout(15)
        while sent < self.BODY:
            sent += s.send(chunk[:min(len(chunk), self.BODY - sent)])
        f = s.makefile("rb")
        r = read_response(f)
        f.close()
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.body, str(self.BODY).encode())


    def test_tunnel_goes_on_after_the_connect_times_out(self):
        # the tunnel was paused for the held body: the 502 for a backend
        # that never answered must resume it, or the tunnel is dead
        lsock = socket.socket()
        self.addCleanup(lsock.close)
        lsock.bind((HOST, 0))
        lsock.listen(0)
        bport = lsock.getsockname()[1]
        filler = socket.create_connection((HOST, bport), timeout=5)
        self.addCleanup(filler.close)
        srv = self.server()
        tok = make_token()
        self.client(srv, tok, server_url="http://%s:%d" % (HOST, bport))
        self.assertTrue(wait_tunnels(srv, 1))
        s = socket.create_connection((HOST, srv.port), timeout=20)
        self.addCleanup(s.close)
        body = 16 << 20
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nX-Token: " + tok.encode() +
                  b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % body)
        import threading
        def upload():
            try:
                s.sendall(b"u" * body)
            except OSError:
                pass  # the server closed after its 502
        threading.Thread(target=upload, daemon=True).start()
        f = s.makefile("rb")
        r = read_response(f)  # after wstuncli's 10 s connect timeout
        f.close()
        self.assertEqual(r.status, 502, r.body)

        def serve():
            lsock.settimeout(10)
            try:
                while True:
                    c, _ = lsock.accept()
                    c.settimeout(5)
                    buf = b""
                    while b"\r\n\r\n" not in buf:
                        d = c.recv(65536)
                        if not d:
                            break
                        buf += d
                    if buf:
                        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
                                  b"Connection: close\r\n\r\nok")
                    c.close()
            except OSError:
                return
        filler.close()
        threading.Thread(target=serve, daemon=True).start()
        r = raw_http(srv.port, b"GET /again HTTP/1.1\r\nHost: x\r\nX-Token: " +
                     tok.encode() + b"\r\n\r\n", timeout=15)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.body, b"ok")


if __name__ == "__main__":
    main()
