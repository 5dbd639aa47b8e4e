"""TLS and proxy helpers for the wstun end-to-end tests (issue 4).

- PKI: certificates made at run time with the `openssl` CLI in a private
  temp dir (removed at exit): a test CA, leaf certificates it signs (for
  any DNS names / IPs, any serial, valid or already expired), self-signed
  certificates.
- HTTPS on the Python side: a client that dials 127.0.0.1 but sends SNI /
  checks the name `localhost` (or any name), and an HTTPS backend (the
  harness's Backend, routes and records included, behind a TLS socket).
- TinyProxy: Debian's tinyproxy as a real CONNECT proxy on a free port,
  with its own config in a temp dir, in the foreground.
- Socket introspection from /proc: which remote ports a process is
  connected to (to tell a tunnel that went through the proxy from one
  that went straight to the server).

Everything is bounded and cleaned up like the rest of the harness.
"""

import atexit
import hashlib
import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import warnings

from harness import (HOST, Backend, LoopbackListener, Proc, Resp,
                     _BackendHTTPServer, _Handler, _read_head,
                     parse_head, post_streamed, reserved_port, wait_until)

OPENSSL = shutil.which("openssl")
TINYPROXY = shutil.which("tinyproxy") or (
    "/usr/bin/tinyproxy" if os.access("/usr/bin/tinyproxy", os.X_OK) else None)

PROXY_ENV_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                  "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY")


def scrub_proxy_env():
    """Drop proxy variables inherited from whoever runs the tests: every
    process the harness starts copies os.environ, and a stray https_proxy
    would change what the tests measure. Tests set them explicitly."""
    for k in PROXY_ENV_VARS:
        os.environ.pop(k, None)


# --------------------------------------------------------------------------
# certificates

_TEMP_DIRS = []


def _rm_temp_dirs():
    for d in _TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_rm_temp_dirs)


def private_tempdir(prefix):
    d = tempfile.mkdtemp(prefix=prefix)
    _TEMP_DIRS.append(d)
    return d


def _openssl(*args, cwd=None):
    p = subprocess.run([OPENSSL] + list(args), cwd=cwd, stdin=subprocess.DEVNULL,
                       capture_output=True, timeout=60)
    if p.returncode != 0:
        raise RuntimeError("openssl %s failed (%d): %s" % (
            " ".join(args), p.returncode, p.stderr.decode("utf-8", "replace")))
    return p.stdout


class Cert:
    """A certificate (PEM file) and its private key (PEM file, mode 600)."""

    def __init__(self, cert, key, serial, names):
        self.cert, self.key, self.serial, self.names = cert, key, serial, names

    def __repr__(self):
        return "<Cert %s serial=%X %s>" % (os.path.basename(self.cert), self.serial,
                                          self.names)


class PKI:
    """Test certificates in a private temp dir. `ca()` makes a CA,
    `leaf(ca, ...)` a server certificate signed by it (DNS/IP SANs, chosen
    serial, optionally expired), `self_signed(...)` a lone one."""

    def __init__(self):
        if not OPENSSL:
            raise RuntimeError("the openssl CLI is needed (apt-get install openssl)")
        self.dir = private_tempdir("wstun-pki.")
        self._n = 0
        self._lock = threading.Lock()

    def _name(self, stem):
        with self._lock:
            self._n += 1
            return os.path.join(self.dir, "%02d-%s" % (self._n, stem))

    def _key(self, path):
        _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
                 "-out", path)
        os.chmod(path, 0o600)
        return path

    def ca(self, cn="wstun test CA"):
        base = self._name("ca")
        key = self._key(base + ".key")
        cert = base + ".pem"
        _openssl("req", "-x509", "-new", "-key", key, "-sha256", "-days", "30",
                 "-subj", "/CN=%s" % cn, "-out", cert,
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-addext", "subjectKeyIdentifier=hash")
        # `openssl ca` bookkeeping, kept next to the CA
        cadir = base + ".db"
        os.mkdir(cadir)
        open(os.path.join(cadir, "index.txt"), "w").close()
        with open(os.path.join(cadir, "index.txt.attr"), "w") as f:
            f.write("unique_subject = no\n")
        conf = os.path.join(cadir, "ca.cnf")
        with open(conf, "w") as f:
            f.write("[ ca ]\ndefault_ca = dflt\n"
                    "[ dflt ]\n"
                    "database = %s/index.txt\n"
                    "new_certs_dir = %s\n"
                    "serial = %s/serial\n"
                    "default_md = sha256\n"
                    "policy = pol\n"
                    "unique_subject = no\n"
                    "copy_extensions = none\n"
                    "email_in_dn = no\n"
                    "[ pol ]\ncommonName = supplied\n" % (cadir, cadir, cadir))
        c = Cert(cert, key, 0, [cn])
        c.db = cadir
        c.conf = conf
        return c

    def leaf(self, ca, dns=("localhost",), ips=("127.0.0.1",), serial=None,
             expired=False, cn=None, days=30):
        """A server certificate signed by `ca`. expired=True: valid from
        2020-01-01 to 2020-01-02 (long expired, otherwise fine)."""
        names = list(dns) + list(ips)
        cn = cn or (dns[0] if dns else ips[0])
        serial = serial if serial is not None else int.from_bytes(os.urandom(8), "big") | 1
        base = self._name("leaf-" + re.sub(r"[^A-Za-z0-9.]", "_", cn))
        key = self._key(base + ".key")
        csr = base + ".csr"
        cert = base + ".pem"
        _openssl("req", "-new", "-key", key, "-subj", "/CN=%s" % cn, "-out", csr)
        ext = base + ".ext"
        san = ",".join(["DNS:%s" % d for d in dns] + ["IP:%s" % i for i in ips])
        with open(ext, "w") as f:
            f.write("[ v3 ]\n"
                    "basicConstraints = critical,CA:FALSE\n"
                    "keyUsage = critical,digitalSignature,keyEncipherment\n"
                    "extendedKeyUsage = serverAuth\n"
                    "subjectKeyIdentifier = hash\n"
                    "authorityKeyIdentifier = keyid\n"
                    "subjectAltName = %s\n" % san)
        with open(os.path.join(ca.db, "serial"), "w") as f:
            f.write("%X\n" % serial if len("%X" % serial) % 2 == 0 else "0%X\n" % serial)
        if expired:
            dates = ["-startdate", "20200101000000Z", "-enddate", "20200102000000Z"]
        else:
            dates = ["-startdate", time.strftime("%Y%m%d%H%M%SZ",
                                                  time.gmtime(time.time() - 3600)),
                     "-days", str(days)]
        _openssl("ca", "-batch", "-config", ca.conf, "-cert", ca.cert, "-keyfile", ca.key,
                 "-in", csr, "-out", cert, "-notext", "-extfile", ext, "-extensions", "v3",
                 *dates)
        return Cert(cert, key, serial, names)

    def self_signed(self, dns=("localhost",), ips=("127.0.0.1",), serial=None):
        cn = dns[0] if dns else ips[0]
        base = self._name("self-" + cn)
        key = self._key(base + ".key")
        cert = base + ".pem"
        serial = serial if serial is not None else int.from_bytes(os.urandom(8), "big") | 1
        san = ",".join(["DNS:%s" % d for d in dns] + ["IP:%s" % i for i in ips])
        _openssl("req", "-x509", "-new", "-key", key, "-sha256", "-days", "30",
                 "-subj", "/CN=%s" % cn, "-set_serial", "0x%X" % serial, "-out", cert,
                 "-addext", "subjectAltName=%s" % san,
                 "-addext", "basicConstraints=critical,CA:FALSE",
                 "-addext", "extendedKeyUsage=serverAuth")
        return Cert(cert, key, serial, list(dns) + list(ips))


def cert_serial(pem_path):
    out = _openssl("x509", "-in", pem_path, "-noout", "-serial").decode()
    return int(out.strip().split("=", 1)[1], 16)


def der_serial(der):
    """Serial number of a DER certificate, by asking openssl."""
    p = subprocess.run([OPENSSL, "x509", "-inform", "DER", "-noout", "-serial"],
                       input=der, capture_output=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError("openssl x509: %s" % p.stderr.decode("utf-8", "replace"))
    return int(p.stdout.decode().strip().split("=", 1)[1], 16)


# --------------------------------------------------------------------------
# HTTPS client side (Python → wstunsrv with -tls-cert)

def client_ctx(cafile=None, verify=True, alpn=("http/1.1",)):
    if verify:
        ctx = ssl.create_default_context(cafile=cafile)
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def tls_connect(port, ctx, server_hostname="localhost", timeout=10.0):
    """TLS socket to 127.0.0.1:port with SNI/host check `server_hostname`
    (so no name resolution is involved)."""
    raw = socket.create_connection((HOST, port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


class LoopbackHTTPSConnection(http.client.HTTPSConnection):
    """HTTPSConnection that dials 127.0.0.1 whatever the host name, which is
    used only for SNI, the certificate check and the Host header."""

    def connect(self):
        self.sock = tls_connect(self.port, self._context, self.host, self.timeout)


def https_req(port, method, path, ctx, headers=None, body=None, timeout=15.0,
              host="localhost"):
    conn = LoopbackHTTPSConnection(host, port, context=ctx, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return Resp(r.status, r.reason, r.headers, data, r.version)
    finally:
        conn.close()


def https_tunnels(port, ctx):
    """tunnels=N from /_stats over HTTPS, or None."""
    try:
        r = https_req(port, "GET", "/_stats", ctx, timeout=3.0)
    except (OSError, http.client.HTTPException):
        return None
    m = re.search(r"(?m)^tunnels=(\d+)\s*$", r.body.decode("utf-8", "replace"))
    return int(m.group(1)) if (r.status == 200 and m) else None


def wait_https_tunnels(port, ctx, n, timeout=10.0):
    return wait_until(lambda: https_tunnels(port, ctx) == n, timeout, 0.05) is True


def https_download(port, path, ctx, timeout=120.0):
    """GET path over HTTPS, streamed; (status, length, sha256 hex)."""
    conn = LoopbackHTTPSConnection("localhost", port, context=ctx, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        h = hashlib.sha256()
        n = 0
        while True:
            piece = r.read(1 << 20)
            if not piece:
                break
            h.update(piece)
            n += len(piece)
        return r.status, n, h.hexdigest()
    finally:
        conn.close()


def https_upload(port, path, n, ctx, timeout=120.0):
    """POST n deterministic bytes (Content-Length, streamed); (status, body)."""
    conn = LoopbackHTTPSConnection("localhost", port, context=ctx, timeout=timeout)
    try:
        return post_streamed(conn, path, n)
    finally:
        conn.close()


# --------------------------------------------------------------------------
# HTTPS backend (behind wstuncli)

class _TLSBackendHTTPServer(_BackendHTTPServer):
    def get_request(self):
        sock, addr = super().get_request()
        # the handshake runs in the handler thread (first read), so a peer
        # that never finishes it cannot stall the accept loop
        sock.settimeout(30)
        return self.tls_ctx.wrap_socket(sock, server_side=True,
                                        do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        # failed handshakes (the client under test refusing our certificate)
        # are expected; count them instead of printing tracebacks
        self.backend.tls_errors += 1


class TLSBackend(Backend):
    """The harness's Backend (same routes and records) serving HTTPS with
    `cert` (a Cert). .url is https://localhost:PORT (the name the test
    certificates carry)."""

    def __init__(self, cert, name="tls-backend", url_host="localhost"):
        self.name = name
        self.requests = []
        self.stop_event = threading.Event()
        self._lock = threading.Condition()
        self._conns = set()
        self.slow_done = 0
        self.tls_errors = 0
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert.cert, cert.key)
        self.httpd = _TLSBackendHTTPServer((HOST, 0), _Handler)
        self.httpd.tls_ctx = ctx
        self.httpd.backend = self
        self.port = self.httpd.server_address[1]
        self.url = "https://%s:%d" % (url_host, self.port)
        self._thread = threading.Thread(target=self.httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()


# --------------------------------------------------------------------------
# tinyproxy

class TinyProxy(Proc):
    """tinyproxy in the foreground on 127.0.0.1:<free port>, config and
    nothing else in a private temp dir. connect_ports: the ports CONNECT
    may reach (tinyproxy allows all when none is listed; the tests always
    list theirs). auth: (user, password) → BasicAuth."""

    def __init__(self, connect_ports=(), auth=None):
        if not TINYPROXY:
            raise RuntimeError("tinyproxy not installed")
        self.dir = private_tempdir("wstun-tinyproxy.")
        # the port is reserved until tinyproxy listens (nobody else can
        # take it meanwhile); still, a new one up to three times, should
        # tinyproxy not come up for another reason
        for _ in range(3):
            hold = self._start(connect_ports, auth)
            try:
                wait_until(lambda: self.port in _listening(self.pid) or not self.alive(), 10)
            finally:
                hold.close()
            if self.alive() and self.port in _listening(self.pid):
                return
            desc = self.describe()
            self.kill()
        raise RuntimeError("tinyproxy did not start\n%s" % desc)

    def _start(self, connect_ports, auth):
        """Starts tinyproxy on a reserved port; returns the socket holding
        it, to close once tinyproxy listens."""
        hold, self.port = reserved_port()
        conf = os.path.join(self.dir, "tinyproxy.conf")
        lines = ["Port %d" % self.port,
                 "Listen 127.0.0.1",
                 "Timeout 120",
                 "LogLevel Connect",
                 "MaxClients 64",
                 "Allow 127.0.0.1",
                 "DisableViaHeader Yes"]
        if os.geteuid() == 0:
            # tinyproxy would keep root (with a warning); drop to nobody as a
            # real deployment does (it reads its config before that)
            lines += ["User nobody", "Group nogroup"]
        lines += ["ConnectPort %d" % p for p in connect_ports]
        if auth:
            lines.append("BasicAuth %s %s" % auth)
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.dir, 0o755)
        os.chmod(conf, 0o644)
        self.conf = conf
        try:
            super().__init__([TINYPROXY, "-d", "-c", conf], name="tinyproxy")
        except BaseException:
            hold.close()
            raise
        return hold

    def url(self, user=None, password=None):
        cred = ""
        if user is not None:
            cred = "%s:%s@" % (user, password)
        return "http://%s%s:%d" % (cred, HOST, self.port)

    def log(self):
        return self.stderr_text() + "\n" + "\n".join(self.out_lines)

    def describe(self):
        return "%s\n  stdout (tinyproxy logs there in the foreground):\n    %s" % (
            super().describe(), "\n    ".join(self.out_lines[-60:]) or "(empty)")

    def requests(self):
        """Request lines tinyproxy logged ("CONNECT host:port HTTP/1.1")."""
        return re.findall(r"Request \(file descriptor \d+\): (.*)$", self.log(), re.M)


def _listening(pid):
    from harness import listening_ports
    return listening_ports(pid)


def tcp_peers(pid):
    """(local port, remote port) of the ESTABLISHED IPv4 TCP sockets that
    process `pid` holds, from /proc."""
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
    out = []
    for row in rows:
        cols = row.split()
        if len(cols) > 9 and cols[3] == "01" and cols[9] in inodes:
            out.append((int(cols[1].split(":")[1], 16), int(cols[2].split(":")[1], 16)))
    return out


def remote_ports(pid):
    return sorted({r for _, r in tcp_peers(pid)})


def have_tls11_client():
    """True when this Python/OpenSSL can still speak TLS 1.1 as a client
    (checked against a local TLS 1.1 server), so that a refused TLS 1.1
    handshake really is the server's doing."""
    pki_dir = private_tempdir("wstun-tls11.")
    key = os.path.join(pki_dir, "k.pem")
    crt = os.path.join(pki_dir, "c.pem")
    try:
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                 "-out", crt, "-subj", "/CN=localhost", "-days", "1")
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            sctx.minimum_version = ssl.TLSVersion.TLSv1_1
            sctx.maximum_version = ssl.TLSVersion.TLSv1_1
        sctx.load_cert_chain(crt, key)
    except (RuntimeError, ssl.SSLError, ValueError):
        return False
    ls = socket.socket()
    ls.bind((HOST, 0))
    ls.listen(1)
    ls.settimeout(5)
    result = {}

    def serve():
        try:
            s, _ = ls.accept()
            s.settimeout(5)
            with sctx.wrap_socket(s, server_side=True) as t:
                result["v"] = t.version()
        except Exception as e:  # noqa: BLE001
            result["e"] = e

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    try:
        with tls_connect(ls.getsockname()[1], tls11_client_ctx(), timeout=5) as t:
            v = t.version()
    except (OSError, ssl.SSLError):
        v = None
    th.join(5)
    ls.close()
    return v == "TLSv1.1"


def tls11_client_ctx():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():  # deliberately obsolete: that is the test
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_1
        ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    return ctx


# --------------------------------------------------------------------------
# a fake CONNECT proxy, to pin what wstuncli sends a proxy

class FakeConnectProxy(LoopbackListener):
    """HTTP CONNECT proxy on 127.0.0.1:0 that records every request head
    (.heads: list of (request line, {lower-name: [values]})) and then, by
    `mode`: "relay" answers 200 and relays to 127.0.0.1:<CONNECT port>
    (whatever the host named); an int answers that status and closes;
    "close" answers 200 and closes; "garbage" answers non-HTTP bytes."""

    def __init__(self, mode="relay"):
        self.mode = mode
        self.heads = []
        super().__init__()

    def url(self, userinfo=""):
        return "http://%s%s:%d" % (userinfo + "@" if userinfo else "", HOST, self.port)

    def _serve(self, s):
        try:
            head, rest = _read_head(s, time.monotonic() + 5)
        except Exception:  # noqa: BLE001
            s.close()
            return
        first, hdrs = parse_head(head)
        with self._cond:
            self.heads.append((first, hdrs))
            self._cond.notify_all()
        try:
            if isinstance(self.mode, int):
                body = b"refused by the fake proxy\n"
                s.sendall(b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                          % (self.mode, {502: b"Bad Gateway", 403: b"Forbidden",
                                         407: b"Proxy Authentication Required"}
                             .get(self.mode, b"Nope"), len(body), body))
                s.close()
                return
            if self.mode == "garbage":
                s.sendall(b"\x00\x01SSH-2.0-not-a-proxy\r\n\r\n")
                s.close()
                return
            s.sendall(b"HTTP/1.1 200 Connection established\r\n"
                      b"Proxy-Agent: fake\r\n\r\n")
            if self.mode == "close":
                s.close()
                return
            port = int(first.split()[1].rsplit(":", 1)[1])
            up = socket.create_connection((HOST, port), timeout=5)
            self._track(up)
            if rest:
                up.sendall(rest)
            for a, b in ((s, up), (up, s)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()
        except OSError:
            s.close()

    @staticmethod
    def _pump(src, dst):
        src.settimeout(None)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for x in (src, dst):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def wait_heads(self, n, timeout):
        return self._wait_count(self.heads, n, timeout)
