"""Shared helpers for the wstun end-to-end tests.

The tests drive the real apps (wstunsrv, wstuncli) as processes on
127.0.0.1, with an in-test HTTP backend behind the client, Python's
http.client (or raw sockets) in front of the server, and, where the wire
format itself is under test, a raw WebSocket peer written here.

Everything is bounded: every socket has a timeout, every wait has a
deadline, every process is stopped (SIGTERM, then SIGKILL) in the test's
cleanups, and a per-test watchdog kills the children and exits the run if a
test ever hangs anyway.

Binaries come from $WSTUN_BIN_DIR (default /work/main/build/apps).
Set WSTUN_E2E_VERBOSE=1 to see every process's stderr on failure and
success alike (on failure it is always printed).

WSTUN_VALGRIND=1 runs every app the harness starts under valgrind
(memcheck: any error, or a definite leak, makes the app exit 99 and its
report fails the test; tests/valgrind.sh runs a subset that way). It sets
WSTUN_E2E_TIME_SCALE (default 10 then, else 1), by which the harness's own
deadlines (start-up, tunnels up, stop grace, the per-test watchdog) are
multiplied; tests may read it too.
"""

import atexit
import base64
import faulthandler
import hashlib
import http.client
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

BIN_DIR = os.environ.get("WSTUN_BIN_DIR", "/work/main/build/apps")
SRV_BIN = os.path.join(BIN_DIR, "wstunsrv")
CLI_BIN = os.path.join(BIN_DIR, "wstuncli")
HOST = "127.0.0.1"
VERBOSE = os.environ.get("WSTUN_E2E_VERBOSE", "") not in ("", "0")
VALGRIND = os.environ.get("WSTUN_VALGRIND", "") not in ("", "0")
VALGRIND_CMD = ["valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
                "--show-leak-kinds=definite", "--errors-for-leak-kinds=definite",
                "--track-origins=yes"]
os.environ.setdefault("WSTUN_E2E_TIME_SCALE", "10" if VALGRIND else "1")
TIME_SCALE = float(os.environ["WSTUN_E2E_TIME_SCALE"])
TEST_TIMEOUT = float(os.environ.get("WSTUN_E2E_TEST_TIMEOUT", "100")) * TIME_SCALE

SANITIZER_RX = re.compile(r"ERROR: (AddressSanitizer|LeakSanitizer)|runtime error: |"
                          r"==\d+== (Invalid |Conditional jump|Use of uninitialised|"
                          r"Syscall param|Mismatched free|Source and destination overlap|"
                          r".* are definitely lost)")

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def free_port():
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def on_free_port(start, tries=5):
    """start(port) on a port free_port() found, again on another if that
    one was taken meanwhile (start raised, naming "address already in
    use"). Returns what start returned."""
    for attempt in range(tries):
        try:
            return start(free_port())
        except AssertionError as e:
            if "address already in use" not in str(e) or attempt == tries - 1:
                raise


def dead_port():
    """(socket, port): a port of 127.0.0.1 bound but not listening, so a
    connection to it is refused, and nothing else can start listening on
    it for as long as the socket stays open (a free_port() may be taken by
    anybody a moment later)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((HOST, 0))
    return s, s.getsockname()[1]


def reserved_port():
    """(socket, port): a port of 127.0.0.1 kept for a process we start
    later (wstunsrv, HAProxy, tinyproxy, the Go server): bound with
    SO_REUSEADDR but not listening. Connections to it are refused, the
    kernel gives it to no other socket, not even as the local port of an
    outgoing connection (a free_port() can be taken that way by any other
    process meanwhile, and ours then fails to bind it), and a process that
    sets SO_REUSEADDR itself (libuv, HAProxy, tinyproxy and Go all do) can
    still bind and listen there. Keep the socket open until that process
    listens, or for as long as it may restart on the same port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((HOST, 0))
    return s, s.getsockname()[1]


def make_token(prefix="tok"):
    """A fresh rendez-vous token, comfortably longer than 16 chars."""
    return "%s%s" % (prefix, os.urandom(8).hex())


def ws_accept(key):
    """The Sec-WebSocket-Accept value for a Sec-WebSocket-Key (RFC 6455)."""
    digest = hashlib.sha1((key + WS_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def basic_auth(user, password):
    raw = ("%s:%s" % (user, password)).encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


def body_is(body, text):
    """Error bodies: exact text, optionally followed by one newline (Go's
    http.Error appends one)."""
    if isinstance(text, str):
        text = text.encode("utf-8")
    return body in (text, text + b"\n")


# --------------------------------------------------------------------------
# processes

_LIVE = set()
_LIVE_LOCK = threading.Lock()


def _kill_all_live():
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for p in procs:
        try:
            p.proc.kill()
        except Exception:
            pass
    for p in procs:
        try:
            p.proc.wait(timeout=5)
        except Exception:
            pass


atexit.register(_kill_all_live)


class Proc:
    """A child process whose stdout and stderr are collected line by line
    by background threads (kept in .out_lines / .err_lines)."""

    def __init__(self, argv, env=None, name=None):
        self.argv = list(argv)
        self.name = name or os.path.basename(argv[0])
        if VALGRIND and os.path.dirname(os.path.abspath(argv[0])) == os.path.abspath(BIN_DIR):
            self.argv = VALGRIND_CMD + self.argv
        self.err_lines = []
        self.out_lines = []
        self._cond = threading.Condition()
        full_env = dict(os.environ)
        full_env.pop("WSTUNNEL_PASSWORD", None)
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            start_new_session=True,
        )
        with _LIVE_LOCK:
            _LIVE.add(self)
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.err_lines),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.out_lines),
                             daemon=True),
        ]
        for t in self._threads:
            t.start()

    @property
    def pid(self):
        return self.proc.pid

    def _pump(self, stream, sink):
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._cond:
                    sink.append(line)
                    self._cond.notify_all()
        except Exception:
            pass
        finally:
            with self._cond:
                self._cond.notify_all()

    def stderr_text(self):
        with self._cond:
            return "\n".join(self.err_lines)

    def wait_stderr(self, pattern, timeout=10.0):
        """First regex match in stderr (waiting up to timeout), or None.
        Returns None early if the process exits without printing it."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self.err_lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self.err_lines)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if self.proc.poll() is not None and not any(t.is_alive() for t in self._threads):
                    return None
                self._cond.wait(min(left, 0.2))

    def alive(self):
        return self.proc.poll() is None

    def send_signal(self, sig):
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout):
        """Exit code, or None if still running after timeout."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, grace=5.0):
        """Signal, wait up to grace (times TIME_SCALE), then SIGKILL.
        Returns the exit code."""
        if self.proc.poll() is None:
            self.send_signal(sig)
            if self.wait(grace * TIME_SCALE) is None:
                self.proc.kill()
                self.wait(5)
        for t in self._threads:
            t.join(2)
        for s in (self.proc.stdout, self.proc.stderr):
            try:
                s.close()
            except Exception:
                pass
        with _LIVE_LOCK:
            _LIVE.discard(self)
        return self.proc.returncode

    def kill(self):
        return self.stop(signal.SIGKILL, 5)

    def vm_hwm_kib(self):
        """Peak resident set size (VmHWM) in KiB, read while alive."""
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmHWM for pid %d" % self.proc.pid)

    def sanitized(self):
        """True when the process runs with AddressSanitizer or under
        valgrind (whose shadow memory and quarantine make RSS meaningless
        as a bound)."""
        try:
            with open("/proc/%d/maps" % self.proc.pid) as f:
                maps = f.read()
                return "libasan" in maps or "vgpreload" in maps
        except OSError:
            return False

    def describe(self):
        return "%s (pid %d, rc %r)\n  argv: %s\n  stderr:\n    %s" % (
            self.name, self.proc.pid, self.proc.poll(), " ".join(self.argv),
            "\n    ".join(self.err_lines[-60:]) or "(empty)")


def check_binaries():
    for b in (SRV_BIN, CLI_BIN):
        if not os.access(b, os.X_OK):
            raise RuntimeError("binary not found or not executable: %s "
                               "(set WSTUN_BIN_DIR)" % b)


class Server(Proc):
    port = None
    base_path = ""

    def url(self, path=""):
        return "http://%s:%d%s%s" % (HOST, self.port, self.base_path, path)

    def ws_url(self):
        return "ws://%s:%d%s" % (HOST, self.port, self.base_path)

    def path(self, p):
        return self.base_path + p


def start_server(*flags, port=0, base_path="", wait_listen=True, env=None,
                 timeout=10.0):
    """Launch `wstunsrv -host 127.0.0.1 -port <port> [-base-path B] flags`
    and wait for `listening on 127.0.0.1:<port>` on its stderr."""
    check_binaries()
    argv = [SRV_BIN, "-host", HOST, "-port", str(port)]
    if base_path:
        argv += ["-base-path", base_path]
    argv += [str(f) for f in flags]
    srv = Server(argv, env=env, name="wstunsrv")
    srv.base_path = base_path
    timeout *= TIME_SCALE
    if not wait_listen:
        # no log line to rely on (e.g. -log-level error): ask the kernel
        ports = wait_until(lambda: listening_ports(srv.pid) or not srv.alive(), timeout)
        if not isinstance(ports, list) or not ports:
            desc = srv.describe()
            srv.kill()
            raise AssertionError("wstunsrv is not listening after %.0fs\n%s" % (timeout, desc))
        srv.port = ports[0]
        return srv
    m = srv.wait_stderr(r"listening on 127\.0\.0\.1:(\d+)", timeout)
    if not m:
        desc = srv.describe()
        srv.kill()
        raise AssertionError("wstunsrv did not report listening within %.0fs\n%s"
                             % (timeout, desc))
    srv.port = int(m.group(1))
    if port:
        assert srv.port == port, (srv.port, port)
    return srv


def listening_ports(pid):
    """TCP ports a process listens on (IPv4), from /proc."""
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
        with open("/proc/%d/net/tcp" % pid) as f:
            rows = f.read().splitlines()[1:]
    except OSError:
        return []
    ports = []
    for row in rows:
        cols = row.split()
        if len(cols) > 9 and cols[3] == "0A" and cols[9] in inodes:
            ports.append(int(cols[1].split(":")[1], 16))
    return sorted(set(ports))


def start_client(server_port, token, *flags, base_path="", server_url=None,
                 tunnel_url=None, env=None):
    """Launch `wstuncli -tunnel ws://127.0.0.1:<port><base> -token <token>
    [-server URL] flags`."""
    check_binaries()
    if tunnel_url is None:
        tunnel_url = "ws://%s:%d%s" % (HOST, server_port, base_path)
    argv = [CLI_BIN, "-tunnel", tunnel_url, "-token", token]
    if server_url:
        argv += ["-server", server_url]
    argv += [str(f) for f in flags]
    return Proc(argv, env=env, name="wstuncli")


def stats_text(server, timeout=5.0):
    r = http_req(server.port, "GET", server.path("/_stats"), timeout=timeout)
    return r.status, r.body.decode("utf-8", "replace")


def stats_tunnels(server):
    """tunnels=N from /_stats, or None when unreachable / absent."""
    try:
        status, text = stats_text(server, timeout=2.0)
    except (OSError, http.client.HTTPException):
        return None
    m = re.search(r"(?m)^tunnels=(\d+)\s*$", text)
    return int(m.group(1)) if (status == 200 and m) else None


def stats_tunnel_addr(server):
    """tunnel00_tun_addr ("ip:port", the first tunnel's peer as the server
    sees it) from /_stats, or None when absent."""
    _, text = stats_text(server)
    m = re.search(r"(?m)^tunnel00_tun_addr=(\S+)$", text)
    return m.group(1) if m else None


def wait_tunnels(server, n, timeout=10.0):
    """Poll /_stats until it says tunnels=<n> (timeout times TIME_SCALE).
    Returns True/False."""
    deadline = time.monotonic() + timeout * TIME_SCALE
    while True:
        if stats_tunnels(server) == n:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def wait_until(pred, timeout, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return v
        time.sleep(interval)


# --------------------------------------------------------------------------
# HTTP client side

class Resp:
    def __init__(self, status, reason, headers, body, version=11):
        self.status = status
        self.reason = reason
        self.headers = headers  # http.client.HTTPMessage (case-insensitive)
        self.body = body
        self.version = version

    @property
    def text(self):
        return self.body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def header(self, name):
        return self.headers.get(name)

    def header_all(self, name):
        return self.headers.get_all(name) or []

    def __repr__(self):
        return "<Resp %d %r %r>" % (self.status, self.reason, self.body[:200])


def http_req(port, method, path, headers=None, body=None, timeout=15.0,
             conn=None):
    """One request with http.client; returns Resp. Uses `conn` if given
    (keep-alive), else a fresh connection that is closed afterwards."""
    own = conn is None
    if own:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, r.reason, r.headers, data, r.version)
    finally:
        if own:
            conn.close()


def get(port, path, **kw):
    return http_req(port, "GET", path, **kw)


def read_response(f, method="GET"):
    """Parse one HTTP/1.x response from a buffered binary file; returns Resp.
    Handles Content-Length, chunked and close-delimited bodies."""
    line = f.readline(65537)
    if not line:
        raise EOFError("connection closed before a status line")
    parts = line.decode("latin-1").rstrip("\r\n").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError("bad status line %r" % line)
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers = http.client.parse_headers(f)
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return Resp(status, reason, headers, b"")
    te = (headers.get("Transfer-Encoding") or "").lower()
    if "chunked" in te:
        body = b"".join(read_chunked(f))
    elif headers.get("Content-Length") is not None:
        n = int(headers["Content-Length"])
        body = f.read(n)
        if len(body) != n:
            raise EOFError("short body %d/%d" % (len(body), n))
    else:
        body = f.read()
    return Resp(status, reason, headers, body)


def read_chunked(f):
    while True:
        line = f.readline(65537)
        if not line:
            raise EOFError("eof in chunk size")
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:
            while True:  # trailers
                t = f.readline(65537)
                if t in (b"\r\n", b"\n", b""):
                    return
        data = f.read(size)
        if len(data) != size:
            raise EOFError("eof in chunk")
        yield data
        f.readline(3)


def raw_http(port, data, timeout=10.0, method="GET", responses=1):
    """Send raw bytes on a fresh connection and parse `responses`
    responses. Returns a Resp (or a list when responses > 1)."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(data)
        f = s.makefile("rb")
        try:
            out = [read_response(f, method) for _ in range(responses)]
        finally:
            f.close()
    return out[0] if responses == 1 else out


# --------------------------------------------------------------------------
# deterministic data

_BLOCK_LEN = 1048583  # prime-ish, so misplaced power-of-two fragments show


@lru_cache(maxsize=1)
def _block():
    out = bytearray()
    i = 0
    while len(out) < _BLOCK_LEN:
        out += hashlib.sha256(b"wstun-e2e-%d" % i).digest()
        i += 1
    return bytes(out[:_BLOCK_LEN])


def gen_bytes(n, chunk=262144):
    """Yield n deterministic bytes in pieces of at most `chunk`."""
    blk = _block()
    off = 0
    while off < n:
        pos = off % _BLOCK_LEN
        take = min(chunk, n - off, _BLOCK_LEN - pos)
        yield blk[pos:pos + take]
        off += take


@lru_cache(maxsize=16)
def expected_sha256(n):
    h = hashlib.sha256()
    for piece in gen_bytes(n, 1 << 20):
        h.update(piece)
    return h.hexdigest()


def det_bytes(n):
    return b"".join(gen_bytes(n))


def post_streamed(conn, path, n):
    """POST n deterministic bytes on the http.client connection `conn`
    (Content-Length, sent piece by piece, never whole in memory); returns
    (status, body) and leaves closing conn to the caller."""
    conn.putrequest("POST", path)
    conn.putheader("Content-Length", str(n))
    conn.putheader("Content-Type", "application/octet-stream")
    conn.endheaders()
    for piece in gen_bytes(n):
        conn.send(piece)
    r = conn.getresponse()
    return r.status, r.read()


# --------------------------------------------------------------------------
# backend

class _BackendHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    allow_reuse_address = True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "e2e-backend/1"
    timeout = 60

    def log_message(self, fmt, *args):
        pass

    def setup(self):
        super().setup()
        self.server.backend._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server.backend._track(self.connection, False)

    def do_GET(self):
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_GET

    # -- helpers
    def _body_chunks(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            yield from read_chunked(self.rfile)
            return
        n = int(self.headers.get("Content-Length") or 0)
        while n > 0:
            piece = self.rfile.read(min(n, 1 << 20))
            if not piece:
                raise EOFError("backend: short request body")
            n -= len(piece)
            yield piece

    def _reply(self, code, body=b"", ctype="text/plain", headers=(),
               length=True):
        self.send_response(code)
        if ctype:
            self.send_header("Content-Type", ctype)
        for k, v in headers:
            self.send_header(k, v)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, obj, code=200, headers=()):
        self._reply(code, json.dumps(obj).encode("utf-8"), "application/json",
                    headers)

    def _dispatch(self):
        be = self.server.backend
        u = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(u.query).items()}
        h = hashlib.sha256()
        total = 0
        keep = bytearray()
        if "stall_ms" in q:  # a slow consumer: wait before reading the body
            be.stop_event.wait(int(q["stall_ms"]) / 1000.0)
        for piece in self._body_chunks():
            h.update(piece)
            total += len(piece)
            if len(keep) < 65536:
                keep += piece[:65536 - len(keep)]
        # requests served on this connection so far, this one included
        self.served = getattr(self, "served", 0) + 1
        rec = {
            "backend": be.name,
            "peer_port": self.client_address[1],  # tells connections apart
            "method": self.command,
            "path": self.path,
            "version": self.request_version,
            "headers": [[k, v] for k, v in self.headers.items()],
            "body_len": total,
            "body_sha256": h.hexdigest(),
            "body": keep.decode("latin-1"),
        }
        be._record(rec)
        route = u.path
        if route == "/slow":
            be.stop_event.wait(int(q.get("ms", "1000")) / 1000.0)
            rec["slept"] = True
            try:
                self._json(rec)
            finally:  # counts even when nobody reads the answer any more
                be._slow_done()
        elif route == "/bytes":
            n = int(q.get("n", "0"))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            if self.command != "HEAD":
                for piece in gen_bytes(n):
                    self.wfile.write(piece)
        elif route == "/chunked":
            n = int(q.get("n", "0"))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for piece in gen_bytes(n, 100003):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
            self.wfile.write(b"0\r\n\r\n")
        elif route == "/drip":
            # n chunks of "tick<i>\n", ms apart, chunked
            n, ms = int(q.get("n", "3")), int(q.get("ms", "500"))
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(n):
                if i:
                    be.stop_event.wait(ms / 1000.0)
                piece = b"tick%d\n" % i
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        elif route == "/close":
            # close-delimited body: no Content-Length, no chunking
            n = int(q.get("n", "0"))
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Connection", "close")
            self.end_headers()
            for piece in gen_bytes(n):
                self.wfile.write(piece)
        elif route == "/upload":
            self._json({"sha256": rec["body_sha256"], "len": total,
                        "backend": be.name})
        elif route == "/redirect":
            self._reply(302, b"redirecting\n", headers=[
                ("Location", q.get("to", "http://127.0.0.1:1/elsewhere"))])
        elif route == "/status":
            code = int(q.get("code", "200"))
            if code in (204, 304):
                self.send_response(code)
                self.end_headers()
            else:
                self._reply(code, ("status %d\n" % code).encode())
        elif route == "/hop":
            self._reply(200, b"hop\n", headers=[
                ("Keep-Alive", "timeout=5, max=100"),
                ("Trailers", "X-Trail"),
                ("TE", "trailers"),
                ("X-Kept", "yes"),
                ("Set-Cookie", "a=1"),
                ("Set-Cookie", "b=2"),
            ])
        elif route == "/name":
            self._reply(200, be.name.encode())
        elif route == "/once":
            # a keep-alive connection that the backend drops, unannounced,
            # when a second request arrives on it
            if self.served > 1:
                self.close_connection = True
                return
            self._json(rec)
        elif route == "/reason":
            # a status line with a non-standard reason phrase
            code, text = int(q.get("code", "201")), q.get("text", "Created Fine")
            body = b"reason\n"
            self.wfile.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: %d\r\n\r\n%s"
                             % (code, text.encode("latin-1"), len(body), body))
        elif route == "/interim":
            # interim 1xx answers before the final one
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n"
                             b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n")
            self._reply(200, b"final\n")
        else:  # /echo and anything else
            self._json(rec)


class Backend:
    """Threaded HTTP/1.1 backend on 127.0.0.1:0. Every request is recorded
    in .requests (dicts: method, path, headers, body_len, body_sha256...).

    Routes: /echo (default) JSON echo; /slow?ms=N; /bytes?n=N (Content-
    Length); /chunked?n=N; /close?n=N (close-delimited); /drip?n=N&ms=M
    (chunked, one small chunk every M ms); /upload (sha256 of the body);
    /redirect[?to=URL] (302); /status?code=N; /hop (response with
    hop-by-hop headers); /name (the backend's name); /once (answers the
    first request of a connection, closes it unanswered on the second);
    /reason?code=N&text=T (status line "N T", e.g. "201 Created Fine").
    Records carry peer_port, the port of the connection a request came on
    (equal ports: a reused connection). Any route takes
    stall_ms=N: wait N ms before reading the request body."""

    def __init__(self, name="backend"):
        self.name = name
        self.requests = []
        self.stop_event = threading.Event()
        self._lock = threading.Condition()
        self._conns = set()
        self.slow_done = 0
        self.httpd = _BackendHTTPServer((HOST, 0), _Handler)
        self.httpd.backend = self
        self.port = self.httpd.server_address[1]
        self.url = "http://%s:%d" % (HOST, self.port)
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()

    def _record(self, rec):
        with self._lock:
            self.requests.append(rec)
            self._lock.notify_all()

    def _slow_done(self):
        with self._lock:
            self.slow_done += 1
            self._lock.notify_all()

    def _track(self, conn, add):
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def wait_slow_done(self, n, timeout):
        deadline = time.monotonic() + timeout
        with self._lock:
            while self.slow_done < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
            return True

    def count(self):
        with self._lock:
            return len(self.requests)

    def last(self):
        with self._lock:
            return self.requests[-1] if self.requests else None

    def close(self):
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)


def rec_headers(rec, name):
    """All values of a header in a backend record (case-insensitive)."""
    n = name.lower()
    return [v for k, v in rec["headers"] if k.lower() == n]


# --------------------------------------------------------------------------
# WebSocket framing (raw peers)

OP_CONT, OP_TEXT, OP_BIN, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


def _xor(data, key):
    n = len(data)
    if n == 0:
        return b""
    k = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(k, "little")).to_bytes(n, "little")


def encode_frame(opcode, payload=b"", fin=True, mask=True, rsv=0):
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        hdr = bytes([b0, mbit | n])
    elif n < 65536:
        hdr = bytes([b0, mbit | 126]) + struct.pack("!H", n)
    else:
        hdr = bytes([b0, mbit | 127]) + struct.pack("!Q", n)
    if mask:
        key = os.urandom(4)
        return hdr + key + _xor(payload, key)
    return hdr + payload


class Frame:
    def __init__(self, fin, opcode, payload, masked, rsv):
        self.fin, self.opcode, self.payload = fin, opcode, payload
        self.masked, self.rsv = masked, rsv

    def __repr__(self):
        return "<Frame fin=%d op=%d masked=%d len=%d %r>" % (
            self.fin, self.opcode, self.masked, len(self.payload), self.payload[:80])


class WSConn:
    """One end of a WebSocket over a connected socket. `mask` says whether
    frames we send are masked (True for a client, False for a server).
    Every frame received is appended to .frames."""

    def __init__(self, sock, mask, leftover=b""):
        self.sock = sock
        self.mask = mask
        self.buf = bytearray(leftover)
        self.frames = []
        self.pongs = []
        self.wlock = threading.Lock()

    def _read(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out reading WebSocket")
            self.sock.settimeout(left)
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise EOFError("WebSocket peer closed the TCP connection")
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def send_frame(self, opcode, payload=b"", fin=True, mask=None, rsv=0):
        data = encode_frame(opcode, payload, fin,
                            self.mask if mask is None else mask, rsv)
        with self.wlock:
            self.sock.settimeout(10)
            self.sock.sendall(data)

    def send_binary(self, payload):
        self.send_frame(OP_BIN, payload)

    def send_text(self, payload):
        self.send_frame(OP_TEXT, payload)

    def ping(self, payload=b""):
        self.send_frame(OP_PING, payload)

    def send_close(self, code=1000, reason=b""):
        try:
            self.send_frame(OP_CLOSE, struct.pack("!H", code) + reason)
        except OSError:
            pass

    def recv_frame(self, timeout=5.0):
        deadline = time.monotonic() + timeout
        h = self._read(2, deadline)
        fin = h[0] >> 7
        rsv = (h[0] >> 4) & 7
        op = h[0] & 0xF
        masked = h[1] >> 7
        n = h[1] & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2, deadline))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8, deadline))[0]
        key = self._read(4, deadline) if masked else None
        payload = self._read(n, deadline)
        if masked:
            payload = _xor(payload, key)
        fr = Frame(fin, op, payload, masked, rsv)
        self.frames.append(fr)
        return fr

    def recv_message(self, timeout=5.0, auto_pong=True):
        """Next data message as (opcode, payload); control frames in
        between are handled (ping → pong if auto_pong; pong recorded).
        A close frame is returned as (OP_CLOSE, payload)."""
        deadline = time.monotonic() + timeout
        op = None
        parts = []
        while True:
            fr = self.recv_frame(max(0.0, deadline - time.monotonic()))
            if fr.opcode == OP_PING:
                if auto_pong:
                    self.send_frame(OP_PONG, fr.payload)
                continue
            if fr.opcode == OP_PONG:
                self.pongs.append(fr.payload)
                continue
            if fr.opcode == OP_CLOSE:
                return OP_CLOSE, fr.payload
            if op is None:
                op = fr.opcode
            parts.append(fr.payload)
            if fr.fin:
                return op, b"".join(parts)

    def wait_closed(self, timeout, auto_pong=False):
        """True if the peer closes (close frame or EOF/reset) within timeout.
        Data messages meanwhile are ignored."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                op, _ = self.recv_message(left, auto_pong=auto_pong)
            except (socket.timeout, TimeoutError):
                return False
            except (EOFError, ConnectionError):
                return True
            if op == OP_CLOSE:
                return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _read_head(sock, deadline, limit=1 << 20):
    buf = bytearray()
    while b"\r\n\r\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("timed out reading HTTP head")
        sock.settimeout(left)
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed while reading HTTP head (got %r)" % bytes(buf[:200]))
        buf += chunk
        if len(buf) > limit:
            raise ValueError("HTTP head too large")
    i = buf.index(b"\r\n\r\n") + 4
    return bytes(buf[:i]), bytes(buf[i:])


def parse_head(head):
    """(first line, {lower-name: [values]}) from raw head bytes."""
    lines = head.decode("latin-1").split("\r\n")
    hdrs = {}
    for line in lines[1:]:
        if not line:
            continue
        k, _, v = line.partition(":")
        hdrs.setdefault(k.strip().lower(), []).append(v.strip())
    return lines[0], hdrs


class Handshake:
    """Result of a raw WebSocket handshake attempt."""

    def __init__(self, status, reason, headers, body, ws, raw_head):
        self.status, self.reason, self.headers = status, reason, headers
        self.body, self.ws, self.raw_head = body, ws, raw_head

    def header(self, name):
        v = self.headers.get(name.lower())
        return v[0] if v else None


def ws_connect(port, token=None, path="/_tunnel", method="GET", key=None,
               extra_headers=(), timeout=5.0, omit=()):
    """Raw client handshake. Returns Handshake (ws is a WSConn on 101,
    else None and the socket is closed). `omit` lists header names to
    leave out; token None means no Origin header."""
    key = key or base64.b64encode(os.urandom(16)).decode("ascii")
    hdrs = [("Host", "%s:%d" % (HOST, port)),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", key)]
    if token is not None:
        hdrs.append(("Origin", token))
    hdrs += list(extra_headers)
    hdrs = [(k, v) for k, v in hdrs if k.lower() not in {o.lower() for o in omit}]
    req = "%s %s HTTP/1.1\r\n" % (method, path)
    req += "".join("%s: %s\r\n" % kv for kv in hdrs) + "\r\n"
    sock = socket.create_connection((HOST, port), timeout=timeout)
    deadline = time.monotonic() + timeout
    try:
        sock.sendall(req.encode("latin-1"))
        head, rest = _read_head(sock, deadline)
        first, headers = parse_head(head)
        parts = first.split(" ", 2)
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        if status == 101:
            return Handshake(status, reason, headers, b"", WSConn(sock, True, rest), head)
        # read the error body
        body = bytearray(rest)
        cl = headers.get("content-length")
        te = (headers.get("transfer-encoding") or [""])[0].lower()
        if cl is not None:
            n = int(cl[0])
            while len(body) < n and time.monotonic() < deadline:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                c = sock.recv(65536)
                if not c:
                    break
                body += c
            body = bytes(body[:n])
        elif "chunked" in te:
            while not body.endswith(b"0\r\n\r\n") and time.monotonic() < deadline:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                c = sock.recv(65536)
                if not c:
                    break
                body += c
            f = _BytesFile(bytes(body))
            body = b"".join(read_chunked(f))
        sock.close()
        return Handshake(status, reason, headers, bytes(body), None, head)
    except BaseException:
        sock.close()
        raise


class _BytesFile:
    def __init__(self, data):
        import io
        self._f = io.BytesIO(data)
        self.readline = self._f.readline
        self.read = self._f.read


def parse_tunnel_message(payload):
    """Split a v1 tunnel message into (id str, first line, headers dict
    lower-name -> [values], body bytes). The body is de-chunked / cut by
    Content-Length; with neither, it is the rest of the message."""
    if len(payload) < 4 or not all(c in b"0123456789abcdefABCDEF" for c in payload[:4]):
        raise ValueError("not a tunnel message: %r" % payload[:40])
    rid = payload[:4].decode("latin-1")
    msg = payload[4:]
    i = msg.find(b"\r\n\r\n")
    if i < 0:
        raise ValueError("no end of head in %r" % msg[:200])
    first, hdrs = parse_head(msg[:i + 4])
    rest = msg[i + 4:]
    te = (hdrs.get("transfer-encoding") or [""])[0].lower()
    if "chunked" in te:
        body = b"".join(read_chunked(_BytesFile(rest)))
    elif "content-length" in hdrs:
        body = rest[:int(hdrs["content-length"][0])]
    else:
        body = rest
    return rid, first, hdrs, body


class RawTunnel:
    """A hand-written tunnel client: registers `token` on a server and
    answers requests by hand."""

    def __init__(self, port, token, path="/_tunnel", extra_headers=()):
        hs = ws_connect(port, token, path=path, extra_headers=extra_headers)
        if hs.status != 101:
            raise AssertionError("handshake failed: %d %r" % (hs.status, hs.body))
        self.hs = hs
        self.ws = hs.ws

    def next_request(self, timeout=5.0):
        """(id, first line, headers, body, raw payload) of the next request."""
        op, payload = self.ws.recv_message(timeout)
        if op != OP_BIN:
            raise AssertionError("expected a binary message, got op %d %r" % (op, payload[:80]))
        rid, first, hdrs, body = parse_tunnel_message(payload)
        return rid, first, hdrs, body, payload

    def respond(self, rid, raw_http):
        self.ws.send_binary(rid.encode("ascii") + raw_http)

    def close(self):
        self.ws.send_close()
        self.ws.close()


# --------------------------------------------------------------------------
# fake peers listening on loopback

class LoopbackListener:
    """Listens on 127.0.0.1:<free port> and serves each accepted socket in
    its own thread with self._serve(sock), which subclasses define (set
    their own attributes before calling this __init__: connections may
    arrive at once). stop() closes the listener and every tracked
    socket."""

    def __init__(self):
        self.stopped = threading.Event()
        self._cond = threading.Condition()
        self._socks = []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind((HOST, 0))
        self.lsock.listen(64)
        self.lsock.settimeout(0.1)
        self.port = self.lsock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _track(self, s):
        with self._cond:
            self._socks.append(s)

    def _accept_loop(self):
        while not self.stopped.is_set():
            try:
                s, _ = self.lsock.accept()
            except (socket.timeout, TimeoutError):
                continue
            except OSError:
                return
            self._track(s)
            threading.Thread(target=self._serve, args=(s,), daemon=True).start()

    def _wait_count(self, items, n, timeout):
        """True once the list `items` (appended to under self._cond, with a
        notify) holds n entries; False after timeout seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(items) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def stop(self):
        self.stopped.set()
        try:
            self.lsock.close()
        except OSError:
            pass
        with self._cond:
            socks = list(self._socks)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                s.close()
            except OSError:
                pass
        self._thread.join(2)


# a fake tunnel *server*, to pin what wstuncli puts on the wire

class FakeTunnelServer(LoopbackListener):
    """Accepts WebSocket handshakes on 127.0.0.1:0 and records them.

    handler(fake, conn) runs in its own thread per accepted tunnel, where
    conn is a dict: time, request_line, headers (lower -> [values]), ws
    (WSConn, unmasked sends). The default handler answers pings and keeps
    the tunnel open until stop(). `status` other than 101 makes every
    handshake fail with that status; `bad_accept` sends a wrong
    Sec-WebSocket-Accept."""

    def __init__(self, handler=None, status=101, bad_accept=False):
        self.handler = handler or FakeTunnelServer.keep_open
        self.status = status
        self.bad_accept = bad_accept
        self.conns = []
        super().__init__()

    @staticmethod
    def keep_open(fake, conn):
        ws = conn["ws"]
        while not fake.stopped.is_set():
            try:
                op, _ = ws.recv_message(0.2)
            except (socket.timeout, TimeoutError):
                continue
            except (EOFError, OSError):
                return
            if op == OP_CLOSE:
                return

    def _serve(self, s):
        try:
            head, rest = _read_head(s, time.monotonic() + 5)
        except Exception:
            s.close()
            return
        first, hdrs = parse_head(head)
        conn = {"time": time.monotonic(), "request_line": first,
                "headers": hdrs, "ws": None, "closed_at": None}
        if self.status != 101:
            body = b"nope\n"
            s.sendall(b"HTTP/1.1 %d Nope\r\nContent-Length: %d\r\n"
                      b"Connection: close\r\n\r\n%s" % (self.status, len(body), body))
            s.close()
            conn["closed_at"] = time.monotonic()
        else:
            key = (hdrs.get("sec-websocket-key") or [""])[0]
            acc = ws_accept(key)
            if self.bad_accept:
                acc = ws_accept(key + "x")
            s.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % acc)
                      .encode("latin-1"))
            conn["ws"] = WSConn(s, False, rest)
        with self._cond:
            self.conns.append(conn)
            self._cond.notify_all()
        if conn["ws"] is not None:
            try:
                self.handler(self, conn)
            except Exception:
                pass
            finally:
                conn["closed_at"] = conn["closed_at"] or time.monotonic()

    def wait_conns(self, n, timeout):
        return self._wait_count(self.conns, n, timeout)


# --------------------------------------------------------------------------
# test case base

def _watchdog_fire(test_id):
    sys.stderr.write("\n*** e2e watchdog: %s ran over %.0fs; killing children "
                     "and aborting ***\n" % (test_id, TEST_TIMEOUT))
    faulthandler.dump_traceback(all_threads=True)
    _kill_all_live()
    sys.stderr.flush()
    os._exit(70)


def run_threads(fn, args_list, timeout):
    """Run fn(*args) for each args in parallel threads; returns the list
    of results (an exception object where fn raised). Bounded by timeout."""
    results = [None] * len(args_list)

    def wrap(i, args):
        try:
            results[i] = fn(*args)
        except BaseException as e:  # noqa: BLE001 - reported to the test
            results[i] = e

    ts = [threading.Thread(target=wrap, args=(i, a), daemon=True)
          for i, a in enumerate(args_list)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + timeout
    for t in ts:
        t.join(max(0.0, deadline - time.monotonic()))
    for i, t in enumerate(ts):
        if t.is_alive():
            results[i] = TimeoutError("thread %d still running after %.0fs" % (i, timeout))
    return results


class Background:
    """Run fn in a thread; .result(timeout) returns its value or raises."""

    def __init__(self, fn, *args, **kw):
        self._res = None
        self._exc = None
        self.t_start = time.monotonic()
        self.t_end = None
        self._t = threading.Thread(target=self._run, args=(fn, args, kw), daemon=True)
        self._t.start()

    def _run(self, fn, args, kw):
        try:
            self._res = fn(*args, **kw)
        except BaseException as e:  # noqa: BLE001
            self._exc = e
        finally:
            self.t_end = time.monotonic()

    def done(self):
        return not self._t.is_alive()

    def result(self, timeout):
        self._t.join(timeout)
        if self._t.is_alive():
            raise AssertionError("background call still running after %.1fs" % timeout)
        if self._exc is not None:
            raise self._exc
        return self._res

    def elapsed(self):
        return (self.t_end or time.monotonic()) - self.t_start


class E2ETestCase(unittest.TestCase):
    """Base class: helpers that start things and register their cleanup,
    and a watchdog so that no test can hang."""

    @classmethod
    def setUpClass(cls):
        check_binaries()

    def setUp(self):
        self._procs = []
        self._watchdog = threading.Timer(TEST_TIMEOUT, _watchdog_fire, args=(self.id(),))
        self._watchdog.daemon = True
        self._watchdog.start()
        self.addCleanup(self._watchdog.cancel)
        self.addCleanup(self._dump_logs)

    def _failed(self):
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return False
        if getattr(outcome, "success", True) is False:
            return True
        result = getattr(outcome, "result", None)
        for lst in (getattr(result, "errors", []), getattr(result, "failures", [])):
            for t, _ in lst:
                if t is self:
                    return True
        return False

    def _dump_logs(self):
        if VERBOSE or self._failed():
            for p in self._procs:
                sys.stderr.write("\n--- %s: %s\n" % (self.id(), p.describe()))

    def _checked_stop(self, p):
        """Cleanup for an app: a process still running must exit 0 on
        SIGTERM, and no process may have printed a sanitizer report."""
        was_alive = p.alive()
        rc = p.stop(signal.SIGTERM, grace=6)
        problems = []
        if was_alive and rc != 0:
            problems.append("exited with %r after SIGTERM at cleanup" % rc)
        if SANITIZER_RX.search(p.stderr_text()):
            problems.append("printed a sanitizer report")
        if problems and not self._failed():
            self.fail("%s: %s\n%s" % (p.name, "; ".join(problems), p.describe()))

    # -- starting things
    def server(self, *flags, **kw):
        s = start_server(*flags, **kw)
        self._procs.append(s)
        self.addCleanup(self._checked_stop, s)
        return s

    def client(self, server, token, *flags, **kw):
        port = server.port if isinstance(server, Server) else server
        if isinstance(server, Server) and "base_path" not in kw and "tunnel_url" not in kw:
            kw["base_path"] = server.base_path
        c = start_client(port, token, *flags, **kw)
        self._procs.append(c)
        self.addCleanup(self._checked_stop, c)
        return c

    def backend(self, name="backend"):
        b = Backend(name)
        self.addCleanup(b.close)
        return b

    def raw_tunnel(self, server, token, **kw):
        t = RawTunnel(server.port, token, path=server.path("/_tunnel"), **kw)
        self.addCleanup(t.ws.close)
        return t

    def fake_tunnel_server(self, **kw):
        f = FakeTunnelServer(**kw)
        self.addCleanup(f.stop)
        return f

    def tunnel(self, *srv_flags, cli_flags=(), token=None, base_path="",
               backend_name="backend", wait=True):
        """Server + backend + client registered for a fresh token.
        Returns (server, client, backend, token)."""
        be = self.backend(backend_name)
        srv = self.server(*srv_flags, base_path=base_path)
        token = token or make_token()
        cli = self.client(srv, token, *cli_flags, server_url=be.url)
        if wait:
            self.assertTrue(wait_tunnels(srv, 1), "tunnel did not come up\n"
                            + srv.describe() + "\n" + cli.describe())
        return srv, cli, be, token

    # -- assertions
    def assertBody(self, resp, text, msg=None):
        self.assertTrue(body_is(resp.body, text),
                        msg or "body %r != %r (status %d)" % (resp.body[:300], text, resp.status))

    def assertStatus(self, resp, status):
        self.assertEqual(resp.status, status,
                         "expected %d, got %d %s: %r" % (status, resp.status, resp.reason,
                                                         resp.body[:300]))


def main():
    unittest.main(verbosity=2)
