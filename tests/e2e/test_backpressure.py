"""Back-pressure (issue 13): a peer that writes without reading must not
make the server's memory grow, and one requester that stops reading must
not freeze its token for everybody else."""

import os
import queue
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, HOST, OP_BIN, OP_PING, Backend,  # noqa: E402
                     LoopbackListener, RawTunnel, encode_frame, get, make_token,
                     main, parse_tunnel_message, wait_tunnels, wait_until)


class PingFlood(E2ETestCase):
    FLOOD_SECONDS = 8
    FLOOD_BYTES = 96 << 20
    # peak RSS may grow by at most this much: the tunnel's output buffer
    # (256 KiB high-water) plus a bounded number of queued pongs, with
    # plenty of room for allocator slack
    GROWTH_KIB = 16 << 10

    def test_ping_flood_without_reading_is_bounded(self):
        srv = self.server("-wstimeout", "600")
        tok = make_token("flood")
        tun = RawTunnel(srv.port, tok)
        self.addCleanup(tun.ws.close)
        wait_tunnels(srv, 1)
        self.assertEqual(get(srv.port, "/_health_check").status, 200)
        base = srv.vm_hwm_kib()
        # 125-byte pings, masked (we are the client); built once
        frame = encode_frame(OP_PING, b"p" * 125)
        blob = frame * ((4 << 20) // len(frame))  # about 4 MiB
        sent = [0]
        stop = threading.Event()
        flooded = threading.Event()

        def flood():
            s = tun.ws.sock
            s.settimeout(0.5)
            view = memoryview(blob)
            t_end = time.monotonic() + self.FLOOD_SECONDS
            while not stop.is_set() and time.monotonic() < t_end and \
                    sent[0] < self.FLOOD_BYTES:
                try:
                    n = s.send(view)
                except socket.timeout:
                    continue  # the server stopped reading: good
                except OSError:
                    return
                sent[0] += n
                view = view[n:] if n < len(view) else memoryview(blob)
            flooded.set()
            # end on a frame boundary, so that the stream stays valid (this
            # blocks until the server reads again)
            s.settimeout(30)
            try:
                s.sendall(view[:len(view) % len(frame)])
            except OSError:
                pass

        th = threading.Thread(target=flood, daemon=True)
        th.start()
        self.addCleanup(stop.set)
        # the server answers others during the flood
        slow = 0.0
        while not flooded.is_set():
            t0 = time.monotonic()
            self.assertEqual(get(srv.port, "/_health_check", timeout=5).status, 200)
            slow = max(slow, time.monotonic() - t0)
            time.sleep(0.5)
        peak = srv.vm_hwm_kib()
        sys.stderr.write("\n  ping flood: %.1f MiB sent, server VmHWM %d -> %d KiB "
                         "(+%d KiB), slowest health check %.2fs\n"
                         % (sent[0] / 1048576.0, base, peak, peak - base, slow))
        self.assertTrue(srv.alive())
        self.assertEqual(get(srv.port, "/_health_check", timeout=5).status, 200)
        if not srv.sanitized():
            self.assertLess(peak - base, self.GROWTH_KIB,
                            "server grew by %d KiB under a ping flood of %.1f MiB"
                            % (peak - base, sent[0] / 1048576.0))
        # once the peer reads its pongs, the tunnel carries requests again
        # (read all along: the pings still queued in the socket make more
        # pongs, and the server rightly stops reading while they pile up)
        msgs = queue.Queue()

        def reader():
            while not stop.is_set():
                try:
                    op, payload = tun.ws.recv_message(timeout=60)
                except (OSError, EOFError):
                    return
                if op == OP_BIN:
                    msgs.put(payload)

        threading.Thread(target=reader, daemon=True).start()
        out = {}

        def ask():
            out["r"] = get(srv.port, "/_token/%s/after" % tok, timeout=30)

        asker = threading.Thread(target=ask, daemon=True)
        asker.start()
        rid, first, _, _ = parse_tunnel_message(msgs.get(timeout=30))
        self.assertIn("/after", first)
        th.join(30)
        tun.respond(rid, b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        asker.join(30)
        self.assertEqual(out["r"].status, 200)
        self.assertGreater(len(tun.ws.pongs), 1000)

    def test_client_under_ping_flood_is_bounded(self):
        """The same from a rogue server: wstuncli's tunnel is the same code."""
        frame = encode_frame(OP_PING, b"p" * 125, mask=False)
        blob = frame * ((4 << 20) // len(frame))
        sent = [0]
        started = threading.Event()

        def flood(fake, conn):
            s = conn["ws"].sock
            s.settimeout(0.5)
            started.wait(10)
            t_end = time.monotonic() + self.FLOOD_SECONDS
            view = memoryview(blob)
            while not fake.stopped.is_set() and time.monotonic() < t_end \
                    and sent[0] < self.FLOOD_BYTES:
                try:
                    n = s.send(view)
                except socket.timeout:
                    continue
                except OSError:
                    return
                sent[0] += n
                view = view[n:] if n < len(view) else memoryview(blob)
            fake.stopped.wait(30)

        fake = self.fake_tunnel_server(handler=flood)
        cli = self.client(fake.port, make_token("cliflood"),
                          tunnel_url="ws://%s:%d" % (HOST, fake.port),
                          server_url="http://127.0.0.1:1")
        self.assertTrue(fake.wait_conns(1, 10))
        time.sleep(0.3)
        base = cli.vm_hwm_kib()
        started.set()
        time.sleep(self.FLOOD_SECONDS + 0.5)
        peak = cli.vm_hwm_kib()
        sys.stderr.write("\n  ping flood on the client: %.1f MiB sent, wstuncli "
                         "VmHWM %d -> %d KiB (+%d KiB)\n"
                         % (sent[0] / 1048576.0, base, peak, peak - base))
        self.assertTrue(cli.alive())
        if not cli.sanitized():
            self.assertLess(peak - base, self.GROWTH_KIB)


class SlowRequester(E2ETestCase):
    STALL = 3

    def _stalled_then_other(self, *srv_flags):
        """A requester asks for 64 MiB and never reads; then another
        request on the same token. Returns the seconds the second one
        took, or None if not answered in 40 s."""
        srv = self.server(*srv_flags)
        be = Backend()
        self.addCleanup(be.close)
        tok = make_token("stall")
        self.client(srv, tok, server_url=be.url)
        wait_tunnels(srv, 1)
        hog = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(hog.close)
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        hog.sendall(b"GET /_token/%s/bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n"
                    % (tok.encode(), 64 << 20))
        time.sleep(1.0)  # the response is flowing and backs up
        t0 = time.monotonic()
        try:
            r = get(srv.port, "/_token/%s/echo" % tok, timeout=40)
        except (socket.timeout, TimeoutError):
            return None, srv
        dt = time.monotonic() - t0
        self.assertEqual(r.status, 200)
        return dt, srv

    def test_unread_response_does_not_freeze_the_token(self):
        dt, srv = self._stalled_then_other("-stall-timeout", str(self.STALL))
        sys.stderr.write("\n  other request answered after %s s\n"
                         % ("%.2f" % dt if dt is not None else "> 40"))
        self.assertIsNotNone(dt, "the other request was not answered in 40 s")
        self.assertLess(dt, self.STALL + 3)
        # the tunnel is still usable afterwards
        self.assertEqual(wait_tunnels(srv, 1), True)

    def test_slow_reader_that_progresses_is_not_cut(self):
        srv = self.server("-stall-timeout", "2")
        be = Backend()
        self.addCleanup(be.close)
        tok = make_token("slowrd")
        self.client(srv, tok, server_url=be.url)
        wait_tunnels(srv, 1)
        n = 12 << 20
        s = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(s.close)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(b"GET /_token/%s/bytes?n=%d HTTP/1.1\r\nHost: x\r\n\r\n"
                  % (tok.encode(), n))
        # read at about 2 MiB/s: slower than the tunnel, never stalled for
        # long, so the whole body must arrive (about 6 s, > 2 x -stall-timeout)
        got = 0
        head = b""
        t_end = time.monotonic() + 40
        while time.monotonic() < t_end:
            piece = s.recv(65536)
            if not piece:
                break
            if not head:
                head = piece
            got += len(piece)
            if got >= n:
                break
            time.sleep(len(piece) / (2 << 20))
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head[:60])
        self.assertGreaterEqual(got, n)


class SlowUploader(E2ETestCase):
    """The request side of the same problem: a request streamed onto the
    tunnel is sent alone until it ends."""

    def setUp(self):
        super().setUp()
        # the cut of a stalled upload is v1's (a v2 stream waits for its
        # uploader alone: test_v2.py)
        self.srv = self.server("-stall-timeout", "3", "-protocol", "v1")
        self.be = Backend()
        self.addCleanup(self.be.close)
        self.tok = make_token("upload")
        self.client(self.srv, self.tok, server_url=self.be.url)
        wait_tunnels(self.srv, 1)

    def _start_upload(self, n):
        s = socket.create_connection((HOST, self.srv.port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"POST /_token/%s/upload HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: %d\r\n\r\n" % (self.tok.encode(), n))
        return s

    def test_stalled_upload_does_not_freeze_the_token(self):
        s = self._start_upload(1 << 20)
        s.sendall(b"x" * (100 << 10))  # more than a message held back; then nothing
        time.sleep(0.5)
        t0 = time.monotonic()
        try:
            r = get(self.srv.port, "/_token/%s/echo" % self.tok, timeout=40)
        except (socket.timeout, TimeoutError):
            r = None
        dt = time.monotonic() - t0
        sys.stderr.write("\n  other request answered after %s s\n"
                         % ("%.2f" % dt if r is not None else "> 40"))
        self.assertIsNotNone(r, "the other request was not answered in 40 s")
        self.assertEqual(r.status, 200)
        self.assertLess(dt, 3 + 3)
        s.settimeout(5)
        self.assertTrue(s.recv(200).startswith(b"HTTP/1.1 408 "))

    def test_steady_slow_upload_is_not_cut(self):
        n = 1 << 20
        s = self._start_upload(n)
        piece = b"y" * (64 << 10)
        for _ in range(n // len(piece)):  # 16 pieces, 0.4 s apart: 6 s
            s.sendall(piece)
            time.sleep(0.4)
        s.settimeout(20)
        head = s.recv(65536)
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head[:80])
        self.assertIn(b'"len": %d' % n, head)


class SlowBackend(E2ETestCase):
    """The client's side: a backend that does not read a request body holds
    the tunnel (the client stops reading it) for every other request."""

    def test_backend_not_reading_does_not_freeze_the_tunnel(self):
        srv = self.server()
        be = Backend()
        self.addCleanup(be.close)
        tok = make_token("bkstall")
        # v1's cut (a v2 stream waits for its backend alone: test_v2.py)
        self.client(srv, tok, "-stall-timeout", "3", "-protocol", "v1",
                    server_url=be.url)
        wait_tunnels(srv, 1)
        n = 8 << 20
        s = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"POST /_token/%s/upload?stall_ms=60000 HTTP/1.1\r\n"
                  b"Host: x\r\nContent-Length: %d\r\n\r\n" % (tok.encode(), n))
        s.settimeout(0.5)
        sent = 0
        t_end = time.monotonic() + 3
        chunk = b"z" * (256 << 10)
        while sent < n and time.monotonic() < t_end:
            try:
                sent += s.send(chunk[:n - sent])
            except socket.timeout:
                pass
        t0 = time.monotonic()
        try:
            r = get(srv.port, "/_token/%s/echo" % tok, timeout=40)
        except (socket.timeout, TimeoutError):
            r = None
        dt = time.monotonic() - t0
        sys.stderr.write("\n  other request answered after %s s (upload: %.1f "
                         "MiB sent)\n" % ("%.2f" % dt if r is not None else "> 40",
                                          sent / 1048576.0))
        self.assertIsNotNone(r, "the other request was not answered in 40 s")
        self.assertEqual(r.status, 200)
        self.assertLess(dt, 3 + 4)
        # the uploader was answered too (the backend was given up)
        s.settimeout(10)
        self.assertTrue(s.recv(200).startswith(b"HTTP/1.1 502 "))


class HangingBackend(LoopbackListener):
    """GET /hang: the head and 100 KiB of a 1 MiB body, then nothing (until
    stop); POST /drop: closes after 1.5 s, body unread, no answer; anything
    else: a short 200."""

    def _serve(self, s):
        s.settimeout(30)
        try:
            while not self.stopped.is_set():
                buf = b""
                while b"\r\n\r\n" not in buf:
                    piece = s.recv(65536)
                    if not piece:
                        return
                    buf += piece
                if buf.startswith(b"POST /drop"):
                    # takes none of the body, then goes away unanswered
                    self.stopped.wait(1.5)
                    return
                if buf.startswith(b"GET /hang"):
                    s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n"
                              % (1 << 20) + b"h" * (100 << 10))
                    self.stopped.wait(60)
                    return
                s.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
        except OSError:
            pass
        finally:
            s.close()


class HangingResponse(E2ETestCase):
    """A response streamed onto the tunnel is sent alone until it ends: a
    backend that stops in the middle of one must not hold the tunnel."""

    def test_backend_stalling_mid_response_does_not_freeze_the_tunnel(self):
        srv = self.server()
        be = HangingBackend()
        self.addCleanup(be.stop)
        tok = make_token("hang")
        # v1's cut (a quiet v2 stream holds up no other: test_v2.py)
        self.client(srv, tok, "-stall-timeout", "3", "-protocol", "v1",
                    server_url="http://%s:%d" % (HOST, be.port))
        wait_tunnels(srv, 1)
        s = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(s.close)
        s.sendall(b"GET /_token/%s/hang HTTP/1.1\r\nHost: x\r\n\r\n"
                  % tok.encode())
        s.settimeout(10)
        self.assertTrue(s.recv(65536).startswith(b"HTTP/1.1 200 "))
        t0 = time.monotonic()
        try:
            r = get(srv.port, "/_token/%s/other" % tok, timeout=40)
        except (socket.timeout, TimeoutError):
            r = None
        dt = time.monotonic() - t0
        sys.stderr.write("\n  other request answered after %s s\n"
                         % ("%.2f" % dt if r is not None else "> 40"))
        self.assertIsNotNone(r, "the other request was not answered in 40 s")
        self.assertEqual(r.status, 200)
        self.assertLess(dt, 3 + 4)
        # the hanging response was cut, not passed off as complete
        got = 0
        try:
            while True:
                piece = s.recv(65536)
                if not piece:
                    break
                got += len(piece)
        except ConnectionResetError:
            pass
        self.assertLess(got, 1 << 20)


    def test_backend_dropping_an_unread_upload_releases_the_tunnel(self):
        srv = self.server()
        be = HangingBackend()
        self.addCleanup(be.stop)
        tok = make_token("drop")
        self.client(srv, tok, server_url="http://%s:%d" % (HOST, be.port))
        wait_tunnels(srv, 1)
        s = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(s.close)
        n = 16 << 20
        s.sendall(b"POST /_token/%s/drop HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: %d\r\n\r\n" % (tok.encode(), n))
        s.settimeout(0.5)
        sent, chunk = 0, b"u" * (256 << 10)
        t_end = time.monotonic() + 2.5
        while sent < n and time.monotonic() < t_end:
            try:
                sent += s.send(chunk[:n - sent])
            except (socket.timeout, OSError):
                pass
        s.settimeout(10)
        self.assertTrue(s.recv(200).startswith(b"HTTP/1.1 502 "))
        t0 = time.monotonic()
        try:
            r = get(srv.port, "/_token/%s/other" % tok, timeout=30)
        except (socket.timeout, TimeoutError):
            r = None
        dt = time.monotonic() - t0
        sys.stderr.write("\n  after the dropped upload, other request answered "
                         "after %s s\n" % ("%.2f" % dt if r is not None else "> 30"))
        self.assertIsNotNone(r, "the tunnel stayed paused after the backend left")
        self.assertEqual(r.status, 200)
    def test_body_for_a_backend_still_connecting_is_bounded(self):
        # an https:// backend that accepts and never says a word: the
        # connection is not up for the connect timeout (10 s), and the body
        # coming through the tunnel meanwhile must not pile up in wstuncli
        srv = self.server()
        be = HangingBackend()  # answers no TLS: every handshake hangs
        self.addCleanup(be.stop)
        tok = make_token("conn")
        cli = self.client(srv, tok, "-insecure",
                          server_url="https://%s:%d" % (HOST, be.port))
        wait_tunnels(srv, 1)
        base = cli.vm_hwm_kib()
        s = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(s.close)
        n = 256 << 20
        s.sendall(b"POST /_token/%s/x HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: %d\r\n\r\n" % (tok.encode(), n))
        s.settimeout(0.5)
        sent, chunk = 0, b"c" * (1 << 20)
        t_end = time.monotonic() + 6
        while sent < n and time.monotonic() < t_end:
            try:
                sent += s.send(chunk[:n - sent])
            except (socket.timeout, OSError):
                pass
        peak = cli.vm_hwm_kib()
        sys.stderr.write("\n  body for a connecting backend: %.0f MiB sent, "
                         "wstuncli VmHWM %d -> %d KiB (+%d KiB)\n"
                         % (sent / 1048576.0, base, peak, peak - base))
        if not cli.sanitized():
            self.assertLess(peak - base, 32 << 10)


class DeafTunnel(E2ETestCase):
    """A tunnel peer that keeps talking but never reads: what the
    server writes to it makes no progress, and it must not be taken for
    alive."""

    def test_tunnel_that_never_reads_is_dropped(self):
        srv = self.server("-wstimeout", "3")
        tok = make_token("deaf")
        tun = RawTunnel(srv.port, tok)
        self.addCleanup(tun.ws.close)
        wait_tunnels(srv, 1)
        stop = threading.Event()
        self.addCleanup(stop.set)

        def chatter():  # a message every 0.5 s: never silent (pings would
            # be answered with pongs that pile up: see PingFlood)
            while not stop.wait(0.5):
                try:
                    tun.respond("ffff", b"HTTP/1.1 200 OK\r\n\r\n")
                except OSError:
                    return

        threading.Thread(target=chatter, daemon=True).start()
        # a request whose 16 MiB body the deaf peer never takes
        s = socket.create_connection((HOST, srv.port), timeout=10)
        self.addCleanup(s.close)
        n = 16 << 20
        s.sendall(b"POST /_token/%s/x HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Length: %d\r\n\r\n" % (tok.encode(), n))
        s.settimeout(0.5)
        t0 = time.monotonic()
        sent, chunk = 0, b"d" * (256 << 10)
        while sent < n and time.monotonic() - t0 < 3:
            try:
                sent += s.send(chunk[:n - sent])
            except socket.timeout:
                pass
        gone = wait_until(lambda: not wait_tunnels(srv, 1, timeout=0.1), 20)
        dt = time.monotonic() - t0
        sys.stderr.write("\n  deaf tunnel %s after %.1f s\n"
                         % ("dropped" if gone else "still there", dt))
        self.assertTrue(gone, "a tunnel that reads nothing is still served")
        s.settimeout(10)
        self.assertTrue(s.recv(200).startswith(b"HTTP/1.1 502 "))


if __name__ == "__main__":
    main()
