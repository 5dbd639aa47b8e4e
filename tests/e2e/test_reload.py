"""SIGHUP reloads the -config file, with real wstunsrv and wstuncli
processes and real backends.

wstuncli, under load: a download of tens of MiB flows through one section
while other sections are added, removed (a request in flight on it still
finishes) and changed, a broken file and a file whose new tunnel cannot
start are refused (FILE:LINE in the log, the running tunnels untouched),
and the log level changes; the download ends intact (sha256) on the tunnel
it began on. A changed top-level key restarts every section it reaches;
keys only a restart can change are named in a warning.

wstunsrv: new passwords shut out the tunnels whose credentials they
refuse and let the new ones in; limits and the admin allow-list change;
a broken file changes nothing; a new certificate is served to new
connections while the tunnel opened before goes on.

SIGUSR1 (without -logfile) kills neither program. The shipped example,
examples/wstuncli.conf, runs as it is with only its addresses, ports and
password file put in."""

import hashlib
import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import unittest
from http.server import BaseHTTPRequestHandler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, SRV_BIN, CLI_BIN, HOST, TIME_SCALE,  # noqa: E402
                     Background, Proc, Server, _BackendHTTPServer, free_port, gen_bytes,
                     get, make_token, stats_text, wait_tunnels, wait_until, main)
import tlsutil  # noqa: E402
from test_secrets import SETSID, PtyProc  # noqa: E402

tlsutil.scrub_proxy_env()

MIB = 1 << 20
EXAMPLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                       "examples", "wstuncli.conf")


def run(argv, timeout=15):
    env = dict(os.environ)
    env.pop("WSTUNNEL_PASSWORD", None)
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                       env=env)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


# --------------------------------------------------------------------------
# a backend whose one answer flows until the test lets it end

class _StreamHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        be = self.server.owner
        if self.path != "/stream":
            body = be.name.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        h, sent = hashlib.sha256(), 0
        try:
            for piece in gen_bytes(be.max_bytes, 65536):
                if (be.release.is_set() and sent >= be.min_bytes) or be.stop.is_set():
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                h.update(piece)
                sent += len(piece)
                with be.cond:
                    be.sent = sent
                    be.cond.notify_all()
                be.stop.wait(be.pace)  # slow-ish: the transfer spans the reloads
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            with be.cond:
                be.result = (sent, h.hexdigest())
                be.cond.notify_all()


class StreamBackend:
    """GET /stream: a chunked body of deterministic bytes, 64 KiB every
    `pace` seconds, that goes on until release() (and at least min_bytes);
    .result is (bytes sent, sha256 hex). Anything else: the name."""

    def __init__(self, name="stream", min_bytes=32 * MIB, pace=0.004):
        self.name = name
        self.min_bytes, self.max_bytes, self.pace = min_bytes, 1 << 30, pace
        self.release, self.stop = threading.Event(), threading.Event()
        self.cond = threading.Condition()
        self.sent, self.result = 0, None
        self.httpd = _BackendHTTPServer((HOST, 0), _StreamHandler)
        self.httpd.owner = self
        self.url = "http://%s:%d" % (HOST, self.httpd.server_address[1])
        self._t = threading.Thread(target=self.httpd.serve_forever,
                                   kwargs={"poll_interval": 0.05}, daemon=True)
        self._t.start()

    def wait_sent(self, n, timeout):
        with self.cond:
            return self.cond.wait_for(lambda: self.sent >= n, timeout)

    def close(self):
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def download(port, path, progress):
    """GET path, streamed: (status, length, sha256 hex); progress[0] is
    the bytes read so far."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60 * TIME_SCALE)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        h, n = hashlib.sha256(), 0
        while True:
            piece = r.read(65536)
            if not piece:
                break
            h.update(piece)
            n += len(piece)
            progress[0] = n
        return r.status, n, h.hexdigest()
    finally:
        conn.close()


def total_clients(srv):
    """Tunnel connections the server holds (/_stats from this host)."""
    try:
        status, text = stats_text(srv, timeout=3.0)
    except (OSError, http.client.HTTPException):
        return None
    m = re.search(r"(?m)^total_clients=(\d+)$", text)
    return int(m.group(1)) if status == 200 and m else None


class ReloadCase(E2ETestCase):
    def tmpdir(self):
        d = tempfile.mkdtemp(prefix="wstun-reload-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def write(self, path, text, mode=0o600):
        """Replaces the file whole (a reload never reads half of it)."""
        tmp = path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
        return path

    def proc(self, binary, *argv, name):
        p = (Server if binary == SRV_BIN else Proc)([binary] + [str(a) for a in argv], name=name)
        self._procs.append(p)
        self.addCleanup(self._checked_stop, p)
        return p

    def srv_proc(self, *argv):
        p = self.proc(SRV_BIN, *argv, name="wstunsrv")
        m = p.wait_stderr(r"listening on 127\.0\.0\.1:(\d+)", 10 * TIME_SCALE)
        self.assertTrue(m, p.describe())
        p.port = int(m.group(1))
        return p

    def count(self, proc, pattern):
        rx = re.compile(pattern)
        return sum(1 for ln in proc.stderr_text().splitlines() if rx.search(ln))

    def hup(self, proc, done=r"SIGHUP: \S+ (loaded|not loaded)"):
        """SIGHUP, then the log line that ends this reload (the n-th)."""
        n = self.count(proc, done) + 1
        proc.send_signal(signal.SIGHUP)
        ok = wait_until(lambda: self.count(proc, done) >= n, 15 * TIME_SCALE)
        self.assertTrue(ok, "no reload line\n" + proc.describe())
        return [ln for ln in proc.stderr_text().splitlines() if re.search(done, ln)][n - 1]

    def name_of(self, srv, tok, **kw):
        r = get(srv.port, "/_token/%s/name" % tok, **kw)
        self.assertEqual(r.status, 200, r)
        return r.body.decode()


# --------------------------------------------------------------------------

class ClientReload(ReloadCase):
    def test_reload_under_load(self):
        srv = self.server()
        one, two, three = self.backend("one"), self.backend("two"), self.backend("three")
        sb = StreamBackend()
        self.addCleanup(sb.close)
        tk, tg, te, tn = (make_token(p) for p in ("keep", "gone", "edit", "new"))
        tx, tb = make_token("extra"), make_token("bad")
        d = self.tmpdir()
        conf = os.path.join(d, "cli.ini")
        head = "tunnel = ws://%s:%d\nlog-level = info\n" % (HOST, srv.port)

        def section(name, tok, url):
            return "\n[tunnel %s]\ntoken = %s\nserver = %s\n" % (name, tok, url)

        keep = section("keep", tk, sb.url)
        self.write(conf, head + keep + section("gone", tg, two.url)
                   + section("edit", te, one.url))
        cli = self.proc(CLI_BIN, "-config", conf, name="wstuncli")
        self.assertTrue(wait_tunnels(srv, 3), srv.describe() + cli.describe())
        self.assertEqual(self.name_of(srv, te), "one")
        self.assertEqual(self.name_of(srv, tg), "two")

        # the download through [keep], flowing until every reload is done
        progress = [0]
        dl = Background(download, srv.port, "/_token/%s/stream" % tk, progress)
        self.assertTrue(sb.wait_sent(2 * MIB, 20 * TIME_SCALE), cli.describe())
        self.assertTrue(wait_until(lambda: progress[0] >= MIB, 20 * TIME_SCALE))

        # 1. [gone] removed with a request in flight, [new] added
        n0 = two.count()
        slow = Background(get, srv.port, "/_token/%s/slow?ms=3000" % tg, timeout=30)
        self.assertTrue(wait_until(lambda: two.count() > n0, 10 * TIME_SCALE))
        self.write(conf, head + keep + section("edit", te, one.url)
                   + section("new", tn, three.url))
        line = self.hup(cli)
        self.assertIn("loaded: 1 added, 1 removed, 0 changed, 2 unchanged", line)
        self.assertRegex(cli.stderr_text(), r"INFO  \[gone\] removed: stopping; requests in "
                         r"flight finish \(up to 10 s\)")
        self.assertRegex(cli.stderr_text(), r"INFO  \[new\] added")
        r = slow.result(30 * TIME_SCALE)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["backend"], "two")
        # a token the server has not seen yet is a 404 until its tunnel is up
        self.assertTrue(cli.wait_stderr(r"\[new\] tunnel open to", 10 * TIME_SCALE),
                        cli.describe())
        self.assertEqual(self.name_of(srv, tn), "three")
        self.assertTrue(wait_until(lambda: total_clients(srv) == 3, 10 * TIME_SCALE),
                        srv.describe())

        # 2. [edit] changed: another backend, a new tunnel, the old one closed
        self.write(conf, head + keep + section("edit", te, two.url)
                   + section("new", tn, three.url))
        line = self.hup(cli)
        self.assertIn("loaded: 0 added, 0 removed, 1 changed, 2 unchanged", line)
        self.assertTrue(wait_until(lambda: self.count(cli, r"\[edit\] tunnel open to") == 2
                                   and total_clients(srv) == 3, 10 * TIME_SCALE),
                        srv.describe() + cli.describe())
        for _ in range(4):
            self.assertEqual(self.name_of(srv, te), "two")

        # 3. a broken file: nothing changes, the log says where
        opened = self.count(cli, r"tunnel open to")
        self.write(conf, head + keep + "colour = blue\n" + section("edit", te, one.url)
                   + "\n[tunnel new]\nserver = %s\n" % three.url)
        line = self.hup(cli)
        self.assertIn("SIGHUP: %s not loaded (2 problems above); the running "
                      "configuration stays" % conf, line)
        err = cli.stderr_text()
        self.assertIn("ERROR %s:7: unknown key \"colour\" in [tunnel keep]" % conf, err)
        self.assertIn("ERROR %s:13: [tunnel new]: missing token" % conf, err)
        # a file whose new tunnel cannot start: the good new one goes again
        self.write(conf, head + keep + section("edit", te, two.url)
                   + section("new", tn, three.url) + section("extra", tx, one.url)
                   + "\n[tunnel bad]\ntoken = %s\nregexp = (\n" % tb)
        line = self.hup(cli)
        self.assertIn("not loaded; the running configuration stays", line)
        self.assertRegex(cli.stderr_text(), r"ERROR %s:\d+: \[tunnel bad\]: regexp: invalid "
                         r"regular expression" % re.escape(conf))
        self.assertNotRegex(cli.stderr_text(), r"\[extra\] added")
        self.assertEqual(self.name_of(srv, te), "two")
        self.assertEqual(self.name_of(srv, tn), "three")
        self.assertTrue(wait_until(lambda: total_clients(srv) == 3, 10 * TIME_SCALE))

        # 4. the log level, at the top: no tunnel restarts, debug lines come
        self.write(conf, head.replace("log-level = info", "log-level = debug") + keep
                   + section("edit", te, two.url) + section("new", tn, three.url))
        line = self.hup(cli)
        self.assertIn("loaded: 0 added, 0 removed, 0 changed, 3 unchanged", line)
        debug = self.count(cli, r" DEBUG ")
        self.assertEqual(self.name_of(srv, tn), "three")
        self.assertTrue(wait_until(lambda: self.count(cli, r" DEBUG ") > debug, 10 * TIME_SCALE),
                        cli.describe())

        # SIGUSR1 without -logfile: logged, ignored
        cli.send_signal(signal.SIGUSR1)
        self.assertTrue(cli.wait_stderr(r"SIGUSR1: ignored", 10 * TIME_SCALE), cli.describe())
        self.assertTrue(cli.alive())
        self.assertEqual(self.count(cli, r"tunnel open to"), opened)

        # the download was under way through all of it, and ends intact
        self.assertFalse(dl.done(), "the download ended before the reloads did")
        sb.release.set()
        status, n, digest = dl.result(120 * TIME_SCALE)
        with sb.cond:
            self.assertTrue(sb.cond.wait_for(lambda: sb.result is not None, 10 * TIME_SCALE))
            sent, sent_digest = sb.result
        self.assertEqual(status, 200)
        self.assertGreaterEqual(n, 32 * MIB)
        self.assertEqual((n, digest), (sent, sent_digest))
        self.assertEqual(self.count(cli, r"\[keep\] tunnel open to"), 1, cli.describe())
        self.assertEqual(cli.stop(), 0)

    def test_top_level_key_restarts_every_section(self):
        srv = self.server()
        one, two = self.backend("one"), self.backend("two")
        ta, tb = make_token("a"), make_token("b")
        d = self.tmpdir()
        conf = os.path.join(d, "cli.ini")
        text = ("tunnel = ws://%s:%d\nserver = %s\n\n[tunnel a]\ntoken = %s\n\n"
                "[tunnel b]\ntoken = %s\nserver = %s\n"
                % (HOST, srv.port, one.url, ta, tb, two.url))
        self.write(conf, text)
        cli = self.proc(CLI_BIN, "-config", conf, name="wstuncli")
        self.assertTrue(wait_tunnels(srv, 2), cli.describe())
        # `server` at the top reaches [a] only; `timeout` both
        self.write(conf, text.replace("server = %s\n\n" % one.url,
                                      "server = %s\n\n" % two.url, 1))
        self.assertIn("loaded: 0 added, 0 removed, 1 changed, 1 unchanged", self.hup(cli))
        self.assertTrue(wait_until(lambda: self.count(cli, r"\[a\] tunnel open to") == 2
                                   and total_clients(srv) == 2, 10 * TIME_SCALE))
        self.assertEqual(self.name_of(srv, ta), "two")
        self.write(conf, "timeout = 20\n" + text)
        self.assertIn("loaded: 0 added, 0 removed, 2 changed, 0 unchanged", self.hup(cli))
        self.assertTrue(wait_until(lambda: self.count(cli, r"\[a\] tunnel open to") == 3
                                   and self.count(cli, r"\[b\] tunnel open to") == 2
                                   and total_clients(srv) == 2, 10 * TIME_SCALE),
                        cli.describe())
        self.assertEqual(self.name_of(srv, ta), "one")
        self.assertEqual(self.name_of(srv, tb), "two")
        # what only a restart changes: named, and the tunnels stay
        pid = os.path.join(d, "cli.pid")
        self.write(conf, "timeout = 20\npidfile = %s\nlog-format = json\n" % pid + text)
        self.assertIn("loaded: 0 added, 0 removed, 0 changed, 2 unchanged", self.hup(cli))
        err = cli.stderr_text()
        self.assertIn("WARN  SIGHUP: pidfile changed; it takes effect at the next start", err)
        self.assertIn("WARN  SIGHUP: log-format changed; it takes effect at the next start",
                      err)
        self.assertFalse(os.path.exists(pid))

    def test_single_tunnel_and_statusfile(self):
        """No sections: the top level is the tunnel. Moved to another
        server, it restarts there and the status file follows; a file
        giving -statusfile several tunnels is refused."""
        srv, srv2 = self.server(), self.server()
        one, two = self.backend("one"), self.backend("two")
        tok = make_token()
        d = self.tmpdir()
        conf, status = os.path.join(d, "cli.ini"), os.path.join(d, "status")
        text = "tunnel = ws://%s:%%d\ntoken = %s\nserver = %%s\n" % (HOST, tok)
        self.write(conf, text % (srv.port, one.url))
        cli = self.proc(CLI_BIN, "-config", conf, "-statusfile", status, name="wstuncli")
        self.assertTrue(wait_tunnels(srv, 1), cli.describe())

        def state():
            try:
                with open(status) as f:
                    return dict(ln.split("=", 1) for ln in f.read().splitlines() if "=" in ln)
            except FileNotFoundError:
                return {}

        self.assertTrue(wait_until(lambda: state().get("state") == "connected",
                                   10 * TIME_SCALE))
        self.write(conf, text % (srv2.port, two.url))
        self.assertIn("loaded: 0 added, 0 removed, 1 changed, 0 unchanged", self.hup(cli))
        self.assertTrue(wait_until(lambda: state().get("server") == "ws://%s:%d"
                                   % (HOST, srv2.port) and state().get("state") == "connected",
                                   10 * TIME_SCALE), cli.describe() + repr(state()))
        self.assertTrue(wait_tunnels(srv2, 1) and wait_tunnels(srv, 0), cli.describe())
        self.assertEqual(self.name_of(srv2, tok), "two")
        self.write(conf, "tunnel = ws://%s:%d\n[tunnel a]\ntoken = %s\nserver = %s\n"
                   "[tunnel b]\ntoken = %s\nserver = %s\n"
                   % (HOST, srv2.port, tok, one.url, make_token(), two.url))
        self.assertIn("not loaded", self.hup(cli))
        self.assertIn("flag -statusfile: describes one tunnel", cli.stderr_text())
        self.assertEqual(state().get("state"), "connected")
        self.assertEqual(self.name_of(srv2, tok), "two")


    @unittest.skipUnless(SETSID, "setsid(1) (util-linux) is not installed")
    def test_password_typed_at_start_survives_reloads(self):
        """A "TOKEN:" section asks on the terminal at start; a reload cannot
        ask, so it keeps what was typed for the same section and token (a
        changed section restarts with it), and refuses a new one."""
        one, two = self.backend("one"), self.backend("two")
        tok, password = make_token("typed"), "typed-s3cret-Q1"
        srv = self.server("-passwords", "%s:%s" % (tok, password))
        d = self.tmpdir()
        conf = os.path.join(d, "cli.ini")
        head = "tunnel = ws://%s:%d\n" % (HOST, srv.port)
        typed = "[tunnel a]\ntoken = %s:\nserver = %%s\n" % tok
        self.write(conf, head + typed % one.url)
        cli = PtyProc([CLI_BIN, "-config", conf], None)
        self.addCleanup(cli.stop)
        self.assertTrue(cli.wait_for(r"Password for \[tunnel a\] token %s\.\.\.: $" % tok[:8]),
                        cli.text())
        cli.type(password + "\n")
        self.assertTrue(wait_tunnels(srv, 1), cli.text())

        def hup(done):
            cli.proc.send_signal(signal.SIGHUP)
            self.assertTrue(cli.wait_for(done), cli.text())

        tb = make_token("b")
        self.write(conf, head + typed % one.url + "[tunnel b]\ntoken = %s\nserver = %s\n"
                   % (tb, two.url))
        hup(r"loaded: 1 added, 0 removed, 0 changed, 1 unchanged")
        self.assertTrue(wait_tunnels(srv, 2), cli.text())
        self.write(conf, head + typed % two.url)
        hup(r"loaded: 0 added, 1 removed, 1 changed, 0 unchanged")
        self.assertTrue(wait_until(lambda: len(re.findall(r"\[a\] tunnel open to", cli.text()))
                                   == 2 and total_clients(srv) == 1, 10 * TIME_SCALE),
                        cli.text())
        self.assertEqual(self.name_of(srv, tok), "two")
        # a section that would need a new password: not loaded
        self.write(conf, head + typed % two.url + "[tunnel c]\ntoken = %s:\nserver = %s\n"
                   % (make_token("c"), one.url))
        hup(r"%s:\d+: \[tunnel c\]: token: nothing after ':' and a reload cannot ask"
            % re.escape(conf))
        # its own line, which may still be on its way through the pty
        self.assertTrue(cli.wait_for(
            re.escape("not loaded; the running configuration stays")), cli.text())
        self.assertEqual(self.name_of(srv, tok), "two")
        self.assertNotIn(password, cli.text())
        self.assertEqual(cli.stop(), 0, cli.text())



class ServerReload(ReloadCase):
    def test_passwords_limits_admin(self):
        d = self.tmpdir()
        tok = make_token()
        pwf = self.write(os.path.join(d, "passwords"), "%s:pw1\n" % tok)
        conf = os.path.join(d, "srv.ini")
        port = 0  # the server picks it: none is taken meanwhile
        base = ("port = %d\nhost = 127.0.0.1\npasswords-file = %s\n"
                "trusted-proxies = 127.0.0.1\n" % (port, pwf))
        self.write(conf, base + "max-requests-per-tunnel = 5\n")
        srv = self.srv_proc("-config", conf)
        be = self.backend("b")
        old = self.client(srv, tok + ":pw1", server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1), srv.describe() + old.describe())
        self.assertIn("max_requests_per_tunnel=5\n", stats_text(srv)[1])
        far = {"X-Forwarded-For": "10.1.2.3"}  # a requester that is not this host
        self.assertEqual(get(srv.port, "/admin/monitoring", headers=far).status, 403)

        # a new password, a new limit, a new allow-list
        self.write(pwf, "%s:pw2\n" % tok)
        self.write(conf, base + "max-requests-per-tunnel = 7\nadmin-allow = 10.0.0.0/8\n")
        self.assertIn("SIGHUP: %s loaded" % conf, self.hup(srv))
        self.assertTrue(srv.wait_stderr(r"WS   closing tunnel token=\S+ addr=\S+: its "
                                        r"credentials no longer match", 5 * TIME_SCALE), srv.describe())
        self.assertTrue(wait_tunnels(srv, 0), srv.describe())
        self.assertTrue(old.wait_stderr(r"401", 10 * TIME_SCALE), old.describe())
        new = self.client(srv, tok + ":pw2", server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1), srv.describe() + new.describe())
        self.assertEqual(get(srv.port, "/_token/%s/name" % tok).body, b"b")
        self.assertIn("max_requests_per_tunnel=7\n", stats_text(srv)[1])
        self.assertEqual(get(srv.port, "/admin/monitoring", headers=far).status, 200)
        old.stop()

        # broken files change nothing, and say where
        self.write(conf, base + "max-requests-per-tunnel = lots\nadmin-allow = 10.0.0.0/33\n"
                   "colour = blue\n")
        self.assertIn("not loaded (3 problems above)", self.hup(srv))
        err = srv.stderr_text()
        self.assertIn("%s:5: max-requests-per-tunnel: invalid value \"lots\": not an integer"
                      % conf, err)
        self.assertIn("%s:6: admin-allow: malformed address list" % conf, err)
        self.assertIn("%s:7: unknown key \"colour\"" % conf, err)
        self.write(pwf, "%s:pw3\n" % tok, mode=0o644)
        self.write(conf, base)
        self.assertIn("not loaded", self.hup(srv))
        self.assertIn("%s:3: passwords-file: %s is readable by others" % (conf, pwf),
                      srv.stderr_text())
        self.assertIn("max_requests_per_tunnel=7\n", stats_text(srv)[1])
        self.assertEqual(get(srv.port, "/admin/monitoring", headers=far).status, 200)
        self.assertEqual(get(srv.port, "/_token/%s/name" % tok).body, b"b")
        self.assertEqual(wait_tunnels(srv, 1), True)

        # the listen address needs a restart: named, and nothing moves
        self.write(pwf, "%s:pw2\n" % tok)
        self.write(conf, base.replace("port = %d" % port, "port = %d" % free_port())
                   + "admin-allow = 10.0.0.0/8\n")
        self.assertIn("loaded", self.hup(srv))
        self.assertIn("WARN  SIGHUP: port changed; it takes effect at the next start",
                      srv.stderr_text())
        self.assertEqual(get(srv.port, "/_token/%s/name" % tok).body, b"b")

        # SIGUSR1 without -logfile: logged, ignored
        srv.send_signal(signal.SIGUSR1)
        self.assertTrue(srv.wait_stderr(r"SIGUSR1: ignored", 10 * TIME_SCALE), srv.describe())
        self.assertTrue(srv.alive())
        self.assertEqual(self.count(new, r"tunnel open to"), 1, new.describe())

    def test_tls_files(self):
        if not tlsutil.OPENSSL:
            raise unittest.SkipTest("the openssl CLI is not installed")
        pki = tlsutil.PKI()
        ca = pki.ca()
        a = pki.leaf(ca, serial=0xA1A1A1)
        b = pki.leaf(ca, serial=0xB2B2B2)
        ctx = tlsutil.client_ctx(ca.cert)
        d = self.tmpdir()
        conf = os.path.join(d, "srv.ini")
        text = "host = 127.0.0.1\nport = %d\ntls-cert = %s\ntls-key = %s\n"
        port = 0  # the server picks it: none is taken meanwhile
        self.write(conf, text % (port, a.cert, a.key))
        srv = self.srv_proc("-config", conf)

        def served_serial():
            with tlsutil.tls_connect(srv.port, ctx) as t:
                return tlsutil.der_serial(t.getpeercert(True))

        be = self.backend("b")
        tok = make_token()
        cli = self.client(srv, tok, "-certfile", ca.cert, server_url=be.url,
                          tunnel_url="wss://localhost:%d" % srv.port)
        self.assertTrue(tlsutil.wait_https_tunnels(srv.port, ctx, 1, 10 * TIME_SCALE), cli.describe())
        self.assertEqual(served_serial(), a.serial)
        # other files named in the config
        self.write(conf, text % (port, b.cert, b.key))
        self.assertIn("loaded", self.hup(srv))
        self.assertEqual(served_serial(), b.serial)
        r = tlsutil.https_req(srv.port, "GET", "/_token/%s/name" % tok, ctx)
        self.assertEqual((r.status, r.body), (200, b"b"))
        # a key others may read is refused: b stays
        loose = os.path.join(d, "loose.key")
        shutil.copy(a.key, loose)
        os.chmod(loose, 0o644)
        self.write(conf, text % (port, a.cert, loose))
        self.assertIn("not loaded", self.hup(srv))
        self.assertRegex(srv.stderr_text(), r"%s:3: tls-cert: cannot use it with -tls-key"
                         % re.escape(conf))
        self.assertEqual(served_serial(), b.serial)
        # TLS cannot be turned off by a reload: named, and still served
        self.write(conf, "host = 127.0.0.1\nport = %d\n" % port)
        self.assertIn("loaded", self.hup(srv))
        self.assertIn("SIGHUP: TLS removed; that takes effect at the next start",
                      srv.stderr_text())
        self.assertEqual(served_serial(), b.serial)
        self.assertEqual(self.count(cli, r"tunnel open to"), 1, cli.describe())
        self.assertEqual(tlsutil.https_req(srv.port, "GET", "/_token/%s/name" % tok, ctx).body,
                         b"b")


class Example(ReloadCase):
    def test_example_config_serves_three_services(self):
        """examples/wstuncli.conf as shipped: only the tunnel server, the
        backends' ports and the password file are put in, each exactly
        once; the rest (comments included) is the file itself."""
        with open(EXAMPLE) as f:
            shipped = f.read()
        with open(os.path.join(os.path.dirname(EXAMPLE), "..", "README.md")) as f:
            self.assertIn("```ini\n" + shipped + "```", f.read(),
                          "README.md no longer shows examples/wstuncli.conf as it is")
        # as shipped, the only problem is the password file it names
        rc, out, err = run([CLI_BIN, "-config", EXAMPLE, "-check-config"])
        self.assertEqual(rc, 2, out + err)
        self.assertRegex(err, r"\A\S+wstuncli\.conf:\d+: \[tunnel api\]: cannot read "
                         r"/etc/wstun/api\.password: No such file or directory\n\Z")

        web, api, lab1, lab2 = (self.backend(n) for n in ("web", "api", "lab1", "lab2"))
        d = self.tmpdir()
        pw = self.write(os.path.join(d, "api.password"), "api-s3cret\n")
        tokens = dict(re.findall(r"(?m)^\[tunnel (\w+)\]\ntoken = (\S+)$", shipped))
        srv = self.server("-passwords", "%s:api-s3cret" % tokens["api"])
        text = shipped
        for old, new in (("wss://tunnel.example.com", "ws://%s:%d" % (HOST, srv.port)),
                         ("http://127.0.0.1:8080", web.url),
                         ("http://127.0.0.1:9000/api", api.url + "/api"),
                         ("(3000|3001)", "(%d|%d)" % (lab1.port, lab2.port)),
                         ("/etc/wstun/api.password", pw)):
            self.assertEqual(text.count(old), 1, old)
            text = text.replace(old, new)
        conf = self.write(os.path.join(d, "wstuncli.conf"), text)
        rc, out, err = run([CLI_BIN, "-config", conf, "-check-config"])
        self.assertEqual((rc, err), (0, ""))
        self.assertIn("ok (3 tunnels)", out)
        cli = self.proc(CLI_BIN, "-config", conf, name="wstuncli")
        self.assertTrue(wait_tunnels(srv, 3), srv.describe() + cli.describe())
        self.assertEqual(self.name_of(srv, tokens["web"]), "web")
        r = get(srv.port, "/_token/%s/v1/users" % tokens["api"])
        self.assertEqual((r.status, r.json()["path"]), (200, "/api/v1/users"))
        for be in (lab1, lab2):
            self.assertEqual(self.name_of(srv, tokens["lab"], headers={"X-Host": be.url}),
                             be.name)
        r = get(srv.port, "/_token/%s/name" % tokens["lab"],
                headers={"X-Host": "http://127.0.0.1:1"})
        self.assertNotEqual(r.status, 200)
        # and a reload of the same file changes nothing
        self.assertIn("loaded: 0 added, 0 removed, 0 changed, 3 unchanged", self.hup(cli))


if __name__ == "__main__":
    main()
