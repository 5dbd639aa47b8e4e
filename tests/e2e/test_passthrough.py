#!/usr/bin/env python3
"""WebSocket and other Upgrade passthrough over protocol v2
(docs/PROTOCOL.md 7.6), with the real programs, a real WebSocket backend
and real WebSocket clients (Debian's python3-websockets):

- via /_token/<tok>/path and via X-Token: text, binary, 1 MiB messages
  both ways (checksummed), ping/pong, a client-initiated close (1000) and
  a backend-initiated one (4001 and its reason) arriving intact;
- many WebSocket pipes on one tunnel at once, with ordinary requests on
  the same token at the same time;
- a non-WebSocket upgrade (101 with Upgrade: x-echo, then an echo) passes;
- a backend that refuses the upgrade (400, or 200 with a body): the
  requester gets that answer;
- a requester that goes away mid-pipe: the backend sees its connection
  close; a backend that closes: the requester sees the bytes, then EOF;
- -protocol v1 on either side, and the Go client, still get 501 with its
  text.
"""

import asyncio
import hashlib
import http
import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, HOST, Proc, SRV_BIN, TIME_SCALE, get, main,  # noqa: E402
                     make_token, wait_tunnels, wait_until)

def _import_websockets():
    """Debian's python3-websockets (.ci/install-deps.sh --tests), also from
    an interpreter that is not Debian's own (pyenv) but of its version."""
    for extra in (None, "/usr/lib/python3/dist-packages"):
        if extra:
            sys.path.append(extra)
        try:
            import websockets.exceptions
            import websockets.legacy.client  # noqa: F401
            return websockets
        except ImportError:
            pass
        finally:
            if extra:
                sys.path.remove(extra)
    return None


websockets = _import_websockets()

GO_BIN = os.environ.get("WSTUN_GO_WSTUNNEL", "/tmp/wstunnel-go-ref/wstunnel")
REFUSED = b"Protocol upgrades are not tunneled"
MIB = 1 << 20
WAIT = 30 * TIME_SCALE  # generous: the machine is shared, ASan is slow


def payload(n, seed):
    """n deterministic bytes, different per seed."""
    out = bytearray()
    block = hashlib.sha256(b"%d" % seed).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:n])


class WSBackend:
    """A python3-websockets server on its own loop in a thread.

    /echo echoes every message; /bye closes with 4001 when it gets "bye";
    any other request without Upgrade gets a plain 200 "plain <path>"
    (the ordinary requests on the same token). Each closed connection's
    code is recorded in .closes."""

    def __init__(self):
        self.closes = []
        self.lock = threading.Lock()
        self.headers = []  # the upgrade requests' headers, as seen here
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        if not self.ready.wait(10):
            raise AssertionError("WebSocket backend did not start")
        self.url = "http://%s:%d" % (HOST, self.port)

    def _run(self):
        asyncio.set_event_loop(self.loop)

        async def start():
            self.server = await websockets.serve(
                self._handler, HOST, 0, max_size=None,
                process_request=self._plain)
            self.port = self.server.sockets[0].getsockname()[1]
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    async def _plain(self, path, headers):
        if "upgrade" not in headers.get("Connection", "").lower():
            body = b"plain " + path.encode()
            return (http.HTTPStatus.OK, [("Content-Type", "text/plain"),
                          ("Content-Length", str(len(body)))], body)
        with self.lock:
            self.headers.append(dict(headers.raw_items()))
        return None

    async def _handler(self, ws, path=None):
        path = ws.path
        try:
            async for msg in ws:
                if path.startswith("/bye") and msg == "bye":
                    await ws.close(4001, "backend says bye")
                    break
                await ws.send(msg)
        except websockets.exceptions.ConnectionClosed:
            pass
        await ws.wait_closed()
        with self.lock:
            self.closes.append((path, ws.close_code, ws.close_reason))

    def close(self):
        async def stop():
            self.server.close()
            await self.server.wait_closed()
        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            if not self.thread.is_alive():
                self.loop.close()


def run_async(coro, timeout=WAIT):
    return asyncio.run(asyncio.wait_for(coro, timeout))


class RawUpgradeBackend:
    """A raw-socket backend: each connection's request head goes to
    handler(conn, head) in a thread. .closed is set when a connection it
    watches sees its peer close."""

    def __init__(self, handler):
        self.handler = handler
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = "http://%s:%d" % (HOST, self.port)
        self.closed = threading.Event()
        self.closed_paths = []  # x_flood: the targets whose peer went
        self.heads = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(WAIT)
            head = b""
            while b"\r\n\r\n" not in head:
                piece = c.recv(65536)
                if not piece:
                    return
                head += piece
            self.heads.append(head)
            rest = head[head.index(b"\r\n\r\n") + 4:]
            self.handler(self, c, head, rest)
        except OSError:
            pass
        finally:
            c.close()

    def close(self):
        self.sock.close()


def x_echo(be, c, head, rest):
    """Switches to x-echo, then echoes every byte until the peer closes."""
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-echo\r\n"
              b"Connection: Upgrade\r\n\r\n" + rest)
    while True:
        try:
            piece = c.recv(65536)
        except OSError:
            break
        if not piece:
            break
        c.sendall(piece)
    be.closed.set()


def x_talk_then_close(be, c, head, rest):
    """Switches, sends a greeting, closes."""
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-echo\r\n"
              b"Connection: Upgrade\r\n\r\nhello from the backend\n")


def x_flood(be, c, head, rest):
    """Switches, then sends as fast as the pipe takes it until the peer
    goes away."""
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-flood\r\n"
              b"Connection: Upgrade\r\n\r\n")
    block = b"f" * 65536
    try:
        while True:
            c.sendall(block)
    except OSError:
        pass
    be.closed_paths.append(head.split(b" ")[1])
    be.closed.set()


def refuse_400(be, c, head, rest):
    c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
              b"Content-Length: 13\r\n\r\nnot upgrading")


def refuse_200(be, c, head, rest):
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\njust a page!")


def upgrade_head(path, extra=b"", proto=b"x-echo"):
    return (b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
            b"Upgrade: %s\r\n%s\r\n" % (path.encode(), proto, extra))


def read_head(s):
    got = b""
    while b"\r\n\r\n" not in got:
        piece = s.recv(65536)
        if not piece:
            raise EOFError("closed after %r" % got)
        got += piece
    i = got.index(b"\r\n\r\n") + 4
    return got[:i], got[i:]


def read_exactly(s, n, have=b""):
    while len(have) < n:
        piece = s.recv(65536)
        if not piece:
            raise EOFError("closed after %d of %d bytes" % (len(have), n))
        have += piece
    return have


def read_to_eof(s):
    got = b""
    while True:
        piece = s.recv(65536)
        if not piece:
            return got
        got += piece


class PassthroughCase(E2ETestCase):
    def setUp(self):
        super().setUp()
        if websockets is None:
            if os.environ.get("CI"):
                self.fail("python3-websockets is not installed "
                          "(.ci/install-deps.sh --tests)")
            self.skipTest("python3-websockets is not installed")

    def ws_backend(self):
        be = WSBackend()
        self.addCleanup(be.close)
        return be

    def tunnel(self, backend, srv_flags=(), cli_flags=()):
        srv = self.server(*srv_flags)
        tok = make_token("pt")
        cli = self.client(srv, tok, *cli_flags, server_url=backend.url)
        self.assertTrue(wait_tunnels(srv, 1))
        return srv, cli, tok


class WebSocket(PassthroughCase):
    async def conversation(self, uri, headers=None):
        """Text, binary, 1 MiB both ways, ping/pong, close 1000."""
        async with websockets.connect(uri, extra_headers=headers or {},
                                      max_size=None, open_timeout=WAIT,
                                      close_timeout=WAIT) as ws:
            await ws.send("hello, backend")
            self.assertEqual(await ws.recv(), "hello, backend")
            blob = bytes(range(256)) * 4
            await ws.send(blob)
            self.assertEqual(await ws.recv(), blob)
            big = payload(MIB, 1)
            await ws.send(big)
            back = await ws.recv()
            self.assertEqual(len(back), MIB)
            self.assertEqual(hashlib.sha256(back).hexdigest(),
                             hashlib.sha256(big).hexdigest())
            pong = await ws.ping(b"are you there")
            await asyncio.wait_for(pong, WAIT)
            await ws.close(1000, "done here")
            return ws.close_code

    def wait_close_seen(self, be, n=1):
        self.assertTrue(wait_until(lambda: len(be.closes) >= n, WAIT),
                        be.closes)

    def test_via_token_path(self):
        be = self.ws_backend()
        srv, cli, tok = self.tunnel(be)
        uri = "ws://%s:%d/_token/%s/echo?x=1" % (HOST, srv.port, tok)
        self.assertEqual(run_async(self.conversation(uri)), 1000)
        self.wait_close_seen(be)
        self.assertEqual(be.closes[0], ("/echo?x=1", 1000, "done here"))
        # the handshake reached the backend as the client made it
        h = {k.lower(): v for k, v in be.headers[0].items()}
        self.assertEqual(h["upgrade"].lower(), "websocket")
        self.assertIn("sec-websocket-key", h)
        self.assertIn("x-forwarded-for", h)
        # the access line, once the pipe is over: 101, on both sides
        for p in (srv, cli):
            self.assertTrue(p.wait_stderr(
                r"access method=GET path=/echo\?x=1 status=101 bytes=[1-9]\d* "
                r"bytes_in=[1-9]",
                WAIT), p.describe())

    def test_via_x_token(self):
        be = self.ws_backend()
        srv, cli, tok = self.tunnel(be)
        uri = "ws://%s:%d/echo" % (HOST, srv.port)
        self.assertEqual(
            run_async(self.conversation(uri, {"X-Token": tok})), 1000)
        self.wait_close_seen(be)
        self.assertEqual(be.closes[0][:2], ("/echo", 1000))

    def test_backend_close_code_and_reason(self):
        be = self.ws_backend()
        srv, cli, tok = self.tunnel(be)
        uri = "ws://%s:%d/_token/%s/bye" % (HOST, srv.port, tok)

        async def talk():
            async with websockets.connect(uri, open_timeout=WAIT,
                                          close_timeout=WAIT) as ws:
                await ws.send("first")
                self.assertEqual(await ws.recv(), "first")
                await ws.send("bye")
                try:
                    await ws.recv()
                except websockets.exceptions.ConnectionClosed as e:
                    return e.code, e.reason
                raise AssertionError("no close")

        self.assertEqual(run_async(talk()), (4001, "backend says bye"))
        self.wait_close_seen(be)

    def test_many_pipes_and_plain_requests_at_once(self):
        be = self.ws_backend()
        srv, cli, tok = self.tunnel(be)
        uri = "ws://%s:%d/_token/%s/echo" % (HOST, srv.port, tok)
        npipes, nplain = 48, 32
        plain = [None] * nplain

        def plain_get(i):
            try:
                r = get(srv.port, "/_token/%s/plain%d" % (tok, i), timeout=WAIT)
                plain[i] = (r.status, r.body)
            except Exception as e:  # reported below
                plain[i] = ("error", repr(e))

        async def one(i):
            async with websockets.connect(uri, max_size=None,
                                          open_timeout=WAIT,
                                          close_timeout=WAIT) as ws:
                for k in range(5):
                    data = payload(1000 * (i + 1) + k, i * 10 + k)
                    await ws.send(data)
                    if await ws.recv() != data:
                        return "mismatch %d/%d" % (i, k)
                    await ws.send("text %d %d" % (i, k))
                    if await ws.recv() != "text %d %d" % (i, k):
                        return "text mismatch %d/%d" % (i, k)
            return "ok"

        async def all_pipes():
            return await asyncio.gather(*(one(i) for i in range(npipes)))

        threads = [threading.Thread(target=plain_get, args=(i,))
                   for i in range(nplain)]
        for t in threads:
            t.start()
        results = run_async(all_pipes(), timeout=3 * WAIT)
        for t in threads:
            t.join(WAIT)
        self.assertEqual(results, ["ok"] * npipes)
        for i, r in enumerate(plain):
            self.assertEqual(r, (200, b"plain /plain%d" % i), i)
        self.wait_close_seen(be, npipes)


class OtherUpgrades(PassthroughCase):
    def raw_backend(self, handler):
        be = RawUpgradeBackend(handler)
        self.addCleanup(be.close)
        return be

    def connect(self, srv):
        s = socket.create_connection((HOST, srv.port), timeout=WAIT)
        self.addCleanup(s.close)
        return s

    def test_x_echo_passes(self):
        be = self.raw_backend(x_echo)
        srv, cli, tok = self.tunnel(be)
        s = self.connect(srv)
        # bytes right behind the head wait for the 101, then go through
        s.sendall(upgrade_head("/_token/%s/x" % tok) + b"early bytes|")
        head, rest = read_head(s)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.assertIn(b"upgrade: x-echo", head.lower())
        self.assertIn(b"connection: upgrade", head.lower())
        data = payload(3 * MIB + 7, 9)
        got = {}

        def reader():
            try:
                got["data"] = read_exactly(s, len(b"early bytes|") + len(data),
                                           rest)
            except Exception as e:  # reported below
                got["error"] = repr(e)

        t = threading.Thread(target=reader)
        t.start()
        s.sendall(data)
        t.join(WAIT)
        self.assertNotIn("error", got)
        self.assertEqual(hashlib.sha256(got["data"]).hexdigest(),
                         hashlib.sha256(b"early bytes|" + data).hexdigest())
        # the backend got the upgrade as one, without our framing
        bh = be.heads[0].lower()
        self.assertIn(b"upgrade: x-echo", bh)
        self.assertIn(b"connection: upgrade", bh)
        self.assertNotIn(b"transfer-encoding", bh)
        self.assertNotIn(b"content-length", bh)

    def test_requester_goes_away_mid_pipe(self):
        be = self.raw_backend(x_echo)
        srv, cli, tok = self.tunnel(be)
        s = self.connect(srv)
        s.sendall(upgrade_head("/_token/%s/x" % tok, b"X-Token: ignored\r\n"))
        head, rest = read_head(s)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        s.sendall(b"ping")
        self.assertEqual(read_exactly(s, 4, rest), b"ping")
        s.close()
        self.assertTrue(be.closed.wait(WAIT), "backend never saw the close")
        # the tunnel goes on
        s = self.connect(srv)
        s.sendall(upgrade_head("/_token/%s/again" % tok))
        head, rest = read_head(s)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        s.sendall(b"more")
        self.assertEqual(read_exactly(s, 4, rest), b"more")

    def test_backend_closes_the_pipe(self):
        be = self.raw_backend(x_talk_then_close)
        srv, cli, tok = self.tunnel(be)
        s = self.connect(srv)
        s.sendall(upgrade_head("/_token/%s/x" % tok))
        head, rest = read_head(s)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        self.assertEqual(rest + read_to_eof(s), b"hello from the backend\n")

    def test_requester_that_stops_reading_stalls_only_its_pipe(self):
        """A pipe whose requester reads nothing holds at most its window:
        another pipe on the same tunnel moves meanwhile, and after
        -stall-timeout the stream is reset and the requester cut (the
        backend sees its connection close)."""
        be = self.raw_backend(x_flood)
        srv = self.server("-stall-timeout", "2")
        tok = make_token("pt")
        self.client(srv, tok, server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1))
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.settimeout(WAIT)
        s.connect((HOST, srv.port))
        self.addCleanup(s.close)
        s.sendall(upgrade_head("/_token/%s/stalled" % tok, proto=b"x-flood"))
        head, _ = read_head(s)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "), head)
        # another pipe on the same token and tunnel still moves
        s2 = self.connect(srv)
        s2.sendall(upgrade_head("/_token/%s/reader" % tok, proto=b"x-flood"))
        head2, rest2 = read_head(s2)
        self.assertTrue(head2.startswith(b"HTTP/1.1 101 "), head2)
        read_exactly(s2, 4 * MIB, rest2)
        s2.close()
        # the stalled requester is cut (read nothing until its backend
        # connection closed), and its backend connection closed
        self.assertTrue(wait_until(lambda: b"/stalled" in be.closed_paths,
                                   WAIT), be.closed_paths)
        cut = False
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline and not cut:
            try:
                cut = s.recv(1 << 20) == b""
            except OSError:
                cut = True
        self.assertTrue(cut, "the stalled requester was not cut")
        self.assertTrue(srv.wait_stderr(r"requester read nothing", WAIT),
                        srv.describe())

    def refused(self, handler):
        be = self.raw_backend(handler)
        srv, cli, tok = self.tunnel(be)
        s = self.connect(srv)
        s.sendall(upgrade_head("/_token/%s/x" % tok, proto=b"websocket"))
        head, rest = read_head(s)
        # the answer, and then the connection ends (nothing after an
        # upgrade head is read as a request)
        return head, rest + read_to_eof(s)

    def test_backend_refuses_with_400(self):
        head, body = self.refused(refuse_400)
        self.assertTrue(head.startswith(b"HTTP/1.1 400 "), head)
        self.assertEqual(body, b"not upgrading")

    def test_backend_refuses_with_200_and_a_body(self):
        head, body = self.refused(refuse_200)
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head)
        self.assertEqual(body, b"just a page!")


class OverTLS(PassthroughCase):
    """wss:// to wstunsrv (its own TLS) and a wss:// tunnel: the pipe's
    ends are TLS streams, and a close on either side still ends it."""

    def test_websocket_over_wss(self):
        import ssl
        import tlsutil
        if not tlsutil.OPENSSL:
            self.skipTest("the openssl CLI is not installed")
        pki = tlsutil.PKI()
        ca = pki.ca("passthrough test CA")
        leaf = pki.leaf(ca, dns=("localhost",), ips=("127.0.0.1",))
        be = self.ws_backend()
        srv = self.server("-tls-cert", leaf.cert, "-tls-key", leaf.key)
        tok = make_token("pt")
        self.client(srv, tok, "-certfile", ca.cert, server_url=be.url,
                    tunnel_url="wss://localhost:%d" % srv.port)
        self.assertTrue(tlsutil.wait_https_tunnels(
            srv.port, tlsutil.client_ctx(ca.cert), 1, WAIT))
        ctx = ssl.create_default_context(cafile=ca.cert)
        uri = "wss://localhost:%d/_token/%s/bye" % (srv.port, tok)

        async def talk():
            async with websockets.connect(uri, ssl=ctx, max_size=None,
                                          open_timeout=WAIT,
                                          close_timeout=WAIT) as ws:
                big = payload(MIB, 3)
                await ws.send(big)
                self.assertEqual(await ws.recv(), big)
                await ws.send("bye")
                try:
                    await ws.recv()
                except websockets.exceptions.ConnectionClosed as e:
                    return e.code, e.reason
                raise AssertionError("no close")

        self.assertEqual(run_async(talk()), (4001, "backend says bye"))
        self.assertTrue(wait_until(lambda: len(be.closes) >= 1, WAIT))


class InProcessHandler(PassthroughCase):
    def test_upgrade_to_a_handler_is_501(self):
        examples = os.environ.get(
            "WSTUN_EXAMPLES_DIR",
            os.path.join(os.path.dirname(SRV_BIN), "..", "examples"))
        srv = self.server()
        tok = make_token("ph")
        ex = Proc([os.path.join(examples, "hello_handler"),
                   "ws://%s:%d" % (HOST, srv.port), tok], name="hello_handler")
        self._procs.append(ex)
        self.addCleanup(self._checked_stop, ex)
        self.assertTrue(wait_tunnels(srv, 1), ex.describe())
        s = socket.create_connection((HOST, srv.port), timeout=WAIT)
        self.addCleanup(s.close)
        s.sendall(upgrade_head("/_token/%s/ws" % tok, proto=b"websocket"))
        head, rest = read_head(s)
        self.assertTrue(head.startswith(b"HTTP/1.1 501 "), head)
        self.assertEqual(rest + read_to_eof(s),
                         b"Protocol upgrades are not supported by the "
                         b"in-process handler")
        # and the handler still answers ordinary requests
        self.assertEqual(get(srv.port, "/_token/%s/x" % tok).status, 200)


class V1Peers(PassthroughCase):
    def assert_refused(self, srv, tok):
        for path, hdr in (("/_token/%s/echo" % tok, b""),
                          ("/echo", b"X-Token: %s\r\n" % tok.encode())):
            s = socket.create_connection((HOST, srv.port), timeout=WAIT)
            self.addCleanup(s.close)
            s.sendall(upgrade_head(path, hdr, b"websocket"))
            head, rest = read_head(s)
            body = rest + read_to_eof(s)
            self.assertTrue(head.startswith(b"HTTP/1.1 501 "), head)
            self.assertEqual(body, REFUSED)
        # ordinary requests still pass
        self.assertEqual(get(srv.port, "/_token/%s/plain" % tok).status, 200)

    def test_server_v1(self):
        be = self.ws_backend()
        srv, cli, tok = self.tunnel(be, srv_flags=("-protocol", "v1"))
        self.assert_refused(srv, tok)

    def test_client_v1(self):
        be = self.ws_backend()
        srv, cli, tok = self.tunnel(be, cli_flags=("-protocol", "v1"))
        self.assert_refused(srv, tok)

    def test_go_client(self):
        if not (os.path.isfile(GO_BIN) and os.access(GO_BIN, os.X_OK)):
            self.skipTest("Go wstunnel binary not found at %s" % GO_BIN)
        be = self.ws_backend()
        srv = self.server()
        tok = make_token("go")
        go = Proc([GO_BIN, "cli", "-tunnel", "ws://%s:%d" % (HOST, srv.port),
                   "-token", tok, "-server", be.url], name="go wstunnel cli")
        self.addCleanup(go.kill)
        self.assertTrue(wait_tunnels(srv, 1), go.describe())
        self.assert_refused(srv, tok)


if __name__ == "__main__":
    main()
