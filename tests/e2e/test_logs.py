"""Logs an operator can act on (issue 17): the access log (one line per
request on the server and on the client, text and JSON, -access-log off),
the effective configuration echoed at start without secrets, and errors
that name the problem (URL flags, a port in use, a refused tunnel with the
server's words, 429s, clamped values)."""

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CLI_BIN, E2ETestCase, HOST, SRV_BIN, TIME_SCALE, Proc,  # noqa: E402
                     make_token, raw_http, wait_tunnels, wait_until, main)

ACCESS_KEYS = {"method", "path", "status", "bytes", "duration_ms", "remote", "token", "id",
               "backend"}


def json_lines(proc):
    """Every stderr line of a -log-format json process, parsed: a line that
    is not one JSON object fails the caller's test (returned as None)."""
    out = []
    for ln in proc.err_lines:
        try:
            o = json.loads(ln)
        except ValueError:
            o = None
        out.append((ln, o))
    return out


def access_objs(proc):
    return [o for ln, o in json_lines(proc) if o and o.get("msg", "").startswith("access ")]


def request(port, method, path, body=None, headers=None):
    """One request on a fresh connection: (status, body bytes, our port)."""
    conn = http.client.HTTPConnection(HOST, port, timeout=15)
    try:
        conn.connect()
        local = conn.sock.getsockname()[1]
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        return r.status, data, local
    finally:
        conn.close()


class LogCase(E2ETestCase):
    def assertAllJson(self, proc):
        for ln, o in json_lines(proc):
            self.assertIsInstance(o, dict, "not a JSON object: %r" % ln)
            self.assertIn(o["level"], ("error", "warn", "info", "debug"), ln)
            self.assertIsInstance(o["msg"], str, ln)
            self.assertRegex(o["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def wait_access(self, proc, pred, timeout=10.0):
        """The first JSON access object that pred accepts, waiting for it."""
        found = []

        def look():
            for o in access_objs(proc):
                if pred(o):
                    found.append(o)
                    return True
            return False
        self.assertTrue(wait_until(look, timeout * TIME_SCALE),
                        "no such access line\n" + proc.stderr_text())
        return found[0]


class AccessLogJson(LogCase):
    """Each request leaves one JSON object with real fields on the server
    and, when tunneled, one on the client; the two share the id."""

    def test_fields_on_both_sides(self):
        srv, cli, be, tok = self.tunnel("-log-format", "json",
                                        cli_flags=("-log-format", "json"))
        prefix = tok[:8] + "..."
        st, body, port = request(srv.port, "GET", "/_token/%s/bytes?n=1234" % tok)
        self.assertEqual((st, len(body)), (200, 1234))
        s = self.wait_access(srv, lambda o: o["path"] == "/bytes?n=1234")
        self.assertEqual(s["method"], "GET")
        self.assertEqual(s["status"], 200)
        self.assertEqual(s["bytes"], 1234)
        self.assertIsInstance(s["duration_ms"], int)
        self.assertGreaterEqual(s["duration_ms"], 0)
        self.assertEqual(s["remote"], "%s:%d" % (HOST, port))
        self.assertEqual(s["token"], prefix)
        self.assertRegex(s["id"], r"^[0-9a-f]{4}$")
        self.assertNotIn("backend", s)
        self.assertEqual(s["level"], "info")
        self.assertEqual(s["app"], "wstunsrv")
        # the text of the line is the same, as key=value pairs
        self.assertEqual(s["msg"], "access method=GET path=/bytes?n=1234 status=200 bytes=1234 "
                         "duration_ms=%d remote=%s token=%s id=%s"
                         % (s["duration_ms"], s["remote"], prefix, s["id"]))
        c = self.wait_access(cli, lambda o: o["path"] == "/bytes?n=1234")
        self.assertEqual(c["id"], s["id"])
        self.assertEqual(c["status"], 200)
        self.assertEqual(c["bytes"], 1234)
        self.assertEqual(c["token"], prefix)
        self.assertEqual(c["remote"], HOST)  # what the server put in X-Forwarded-For
        self.assertEqual(c["backend"], be.url)
        self.assertEqual(c["app"], "wstuncli")
        self.assertAllJson(srv)
        self.assertAllJson(cli)

    def test_statuses_methods_and_local_answers(self):
        srv, cli, be, tok = self.tunnel("-log-format", "json",
                                        cli_flags=("-log-format", "json"))
        st, _, _ = request(srv.port, "POST", "/_token/%s/upload" % tok, body=b"x" * 5000)
        self.assertEqual(st, 200)
        st, body, _ = request(srv.port, "HEAD", "/_token/%s/bytes?n=77" % tok)
        self.assertEqual((st, body), (200, b""))
        st, _, _ = request(srv.port, "GET", "/_token/%s/status?code=503" % tok)
        self.assertEqual(st, 503)
        st, _, _ = request(srv.port, "GET", "/x", headers={"X-Token": tok})
        self.assertEqual(st, 200)
        other = make_token()
        st, body404, _ = request(srv.port, "GET", "/_token/%s/nope" % other)
        self.assertEqual(st, 404)
        st, health, _ = request(srv.port, "GET", "/_health_check")
        self.assertEqual(st, 200)
        post = self.wait_access(srv, lambda o: o["method"] == "POST")
        self.assertEqual((post["path"], post["status"]), ("/upload", 200))
        head = self.wait_access(srv, lambda o: o["method"] == "HEAD")
        self.assertEqual((head["path"], head["status"], head["bytes"]), ("/bytes?n=77", 200, 0))
        s503 = self.wait_access(srv, lambda o: o["status"] == 503)
        self.assertEqual(s503["path"], "/status?code=503")
        self.assertEqual(s503["bytes"], len(b"status 503\n"))
        xtok = self.wait_access(srv, lambda o: o["path"] == "/x")
        self.assertEqual(xtok["token"], tok[:8] + "...")
        # an unknown token: its prefix only, in the field and in the path
        s404 = self.wait_access(srv, lambda o: o["status"] == 404)
        self.assertEqual(s404["path"], "/_token/%s.../nope" % other[:8])
        self.assertEqual(s404["token"], other[:8] + "...")
        self.assertEqual(s404["bytes"], len(body404))
        self.assertNotIn("id", s404)  # it never reached a tunnel
        hc = self.wait_access(srv, lambda o: o["path"] == "/_health_check")
        self.assertEqual((hc["status"], hc["bytes"]), (200, len(health)))
        self.assertNotIn("token", hc)
        self.assertNotIn("id", hc)
        # the client saw the tunneled ones, each once
        for pred in (lambda o: o["method"] == "POST", lambda o: o["method"] == "HEAD",
                     lambda o: o["status"] == 503, lambda o: o["path"] == "/x"):
            self.wait_access(cli, pred)
        self.assertEqual(len(access_objs(cli)), 4, cli.stderr_text())
        # and the server every one (the harness's /_stats polls aside)
        self.assertEqual(len([o for o in access_objs(srv) if o["path"] != "/_stats"]), 6,
                         srv.stderr_text())
        for side in (srv, cli):
            self.assertAllJson(side)
            self.assertNotIn(tok, side.stderr_text())
            self.assertNotIn(other, side.stderr_text())

    def test_hostile_path(self):
        """Quotes, a backslash and bytes that are not UTF-8 in a request
        target: every line still parses, the path field holds U+FFFD for
        the bad bytes, and the text never breaks the line."""
        srv, cli, be, tok = self.tunnel("-log-format", "json",
                                        cli_flags=("-log-format", "json"))
        target = b"/_token/" + tok.encode() + b"/q\"uo\\te/caf\xc3\xa9\xff%0A"
        r = raw_http(srv.port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n"
                     b"Connection: close\r\n\r\n")
        self.assertEqual(r.status, 200)
        want = "/q\"uo\\te/caf\u00e9\ufffd%0A"
        for side in (srv, cli):
            o = self.wait_access(side, lambda o: o["path"].startswith("/q"))
            self.assertEqual(o["path"], want)
            self.assertIn("path=/q%22uo\\te/caf%C3%A9%FF%0A ", o["msg"])
            self.assertAllJson(side)

    def test_requester_gone_is_499(self):
        srv, cli, be, tok = self.tunnel("-log-format", "json")
        s = socket.create_connection((HOST, srv.port), timeout=10)
        s.sendall(b"GET /_token/%s/slow?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n" % tok.encode())
        self.assertTrue(wait_until(lambda: be.count() >= 1, 10 * TIME_SCALE))
        s.close()
        o = self.wait_access(srv, lambda o: o["path"] == "/slow?ms=3000")
        self.assertEqual((o["status"], o["bytes"]), (499, 0))
        be.wait_slow_done(1, 10 * TIME_SCALE)

    def test_tunnel_names_in_json(self):
        be = self.backend()
        srv = self.server()
        tok = make_token()
        d = tempfile.mkdtemp(prefix="wstun-logs.")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", d]))
        conf = os.path.join(d, "cli.ini")
        with open(conf, "w") as f:
            f.write("tunnel = ws://%s:%d\nlog-format = json\n[tunnel web]\ntoken = %s\n"
                    "server = %s\n" % (HOST, srv.port, tok, be.url))
        cli = Proc([CLI_BIN, "-config", conf], name="wstuncli")
        self._procs.append(cli)
        self.addCleanup(self._checked_stop, cli)
        self.assertTrue(wait_tunnels(srv, 1))
        st, _, _ = request(srv.port, "GET", "/_token/%s/echo" % tok)
        self.assertEqual(st, 200)
        o = self.wait_access(cli, lambda o: o["path"] == "/echo")
        self.assertEqual(o["tunnel"], "web")
        self.assertFalse(o["msg"].startswith("["), o["msg"])
        self.assertAllJson(cli)


class AccessLogText(LogCase):
    RX = (r"^\d{4}-\d\d-\d\dT[\d:.]+Z INFO  access method=GET path=/echo\?a=1 status=200 "
          r"bytes=\d+ duration_ms=\d+ remote=127\.0\.0\.1:\d+ token=%s\.\.\. id=[0-9a-f]{4}$")

    def test_text_lines(self):
        srv, cli, be, tok = self.tunnel()
        st, body, port = request(srv.port, "GET", "/_token/%s/echo?a=1" % tok)
        self.assertEqual(st, 200)
        rx = self.RX % re.escape(tok[:8])
        m = srv.wait_stderr(rx, 10 * TIME_SCALE)
        self.assertTrue(m, srv.stderr_text())
        self.assertIn("bytes=%d " % len(body), m.group(0))
        self.assertIn("remote=127.0.0.1:%d " % port, m.group(0))
        self.assertTrue(cli.wait_stderr(
            r"INFO  access method=GET path=/echo\?a=1 status=200 bytes=%d duration_ms=\d+ "
            r"remote=127\.0\.0\.1 token=%s\.\.\. id=[0-9a-f]{4} backend=%s$"
            % (len(body), re.escape(tok[:8]), re.escape(be.url)), 10 * TIME_SCALE),
            cli.stderr_text())

    def test_access_log_off(self):
        """-access-log off on both, and access-log = off in a -config file:
        no access line, the other lines stay."""
        d = tempfile.mkdtemp(prefix="wstun-logs.")
        self.addCleanup(lambda: subprocess.run(["rm", "-rf", d]))
        conf = os.path.join(d, "srv.ini")
        with open(conf, "w") as f:
            f.write("# no access log\naccess-log = off\n")
        for srv_flags, cli_flags in ((("-access-log", "off"), ("-access-log=false",)),
                                     (("-config", conf), ("-access-log", "no"))):
            srv, cli, be, tok = self.tunnel(*srv_flags, "-log-level", "debug",
                                            cli_flags=cli_flags + ("-log-level", "debug"))
            for _ in range(3):
                self.assertEqual(request(srv.port, "GET", "/_token/%s/echo" % tok)[0], 200)
            self.assertEqual(request(srv.port, "GET", "/_health_check")[0], 200)
            # the debug lines of the last request show it was handled
            self.assertTrue(srv.wait_stderr(r"HTTP RET token=.* id=[0-9a-f]{4} status=200", 10))
            self.assertTrue(cli.wait_stderr(r"HTTP RET id=[0-9a-f]{4} status=200", 10))
            self.assertEqual(srv.stop(), 0)
            self.assertEqual(cli.stop(), 0)
            for side in (srv, cli):
                self.assertNotRegex(side.stderr_text(), r"\baccess method=")
                self.assertIn("INFO ", side.stderr_text())

    def test_bad_value(self):
        for prog in (SRV_BIN, CLI_BIN):
            p = subprocess.run([prog, "-access-log", "maybe"], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(p.returncode, 2)
            self.assertEqual(p.stderr.strip(), "%s: flag -access-log: invalid value "
                             "\"maybe\": want on or off" % os.path.basename(prog))


class StartupEcho(LogCase):
    ADMIN_SECRET = "adm1n-S3cret-value"
    PW = "pw-S3cret-one"

    def test_effective_config_and_no_secrets(self):
        from tlsutil import PKI
        pki = PKI()
        cert = pki.self_signed(dns=("localhost",), ips=("127.0.0.1",))
        tok = make_token()
        short = "shrtTok9"
        srv = self.server(
            "-tls-cert", cert.cert, "-tls-key", cert.key,
            "-passwords", "%s:%s,%s:pw-S3cret-two" % (tok, self.PW, short),
            "-admin-allow", "10.0.0.0/8", "-admin-token", self.ADMIN_SECRET,
            "-trusted-proxies", "192.0.2.1",
            "-wstimeout", "1", "-max-requests-per-tunnel", "5000", "-max-body", "1000000",
            "-max-clients-per-token", "3", base_path="/wst")
        # the start-up lines come first, in this order (a line of the
        # machine's, such as a lowered -max-connections, may come between)
        want = [
            r"WARN  -wstimeout 1 is outside 3\.\.600: using 3$",
            r"WARN  -max-requests-per-tunnel 5000 is over 1000: using 1000$",
            r"INFO  listening on 127\.0\.0\.1:%d \(TLS\)$" % srv.port,
            r"INFO  connections at most: \d+ in all, 1000 per address",
            r"INFO  base path: /wst$",
            r"INFO  TLS: on, certificate %s, key %s$" % (re.escape(cert.cert),
                                                        re.escape(cert.key)),
            r"INFO  limits: max-requests-per-tunnel 1000, max-clients-per-token 3, "
            r"wstimeout 3 s, httptimeout 1200 s, stall-timeout 10 s, header-timeout 30 s, "
            r"idle-timeout 60 s, forget-after 3600 s, max-header-bytes 65536, "
            r"max-body 1000000 bytes$",
            r"INFO  admin: /admin/\.\.\. and /metrics from this host and 10\.0\.0\.0/8, "
            r"bearer token required; trusted proxies: 192\.0\.2\.1$",
            r"INFO  passwords: 2 tokens need one$",
            r"WARN  passwords: token shrt\.\.\. is 8 characters long: tunnel clients need "
            r"16 or more, so none can use it$",
        ]
        # wait for the last of them: with the machine's line the last is
        # the 11th, and a count of 10 lines could be reached before it
        self.assertTrue(srv.wait_stderr(want[-1], 10 * TIME_SCALE), srv.describe())
        lines = srv.err_lines[:len(want) + 2]
        at = 0
        for rx in want:
            while at < len(lines) and not re.search(rx, lines[at]):
                at += 1
            self.assertLess(at, len(lines), "%r not in order in\n%s" % (rx, "\n".join(lines)))
        # the client, with the password from the environment
        cli = self.client(srv, tok, "-certfile", cert.cert, "-server", "http://127.0.0.1:1",
                          tunnel_url="wss://localhost:%d/wst" % srv.port,
                          env={"WSTUNNEL_PASSWORD": self.PW})
        self.assertTrue(cli.wait_stderr(r"tunnel open to wss://localhost", 15 * TIME_SCALE),
                        cli.stderr_text())
        # the client's own first line: where, which token (cut), whether a
        # password goes with it, where requests go
        self.assertRegex(cli.err_lines[0], r"INFO  tunnel wss://localhost:%d/wst token=%s\.\.\. "
                         r"with a password; requests go to http://127\.0\.0\.1:1; timeout 30 s$"
                         % (srv.port, re.escape(tok[:8])))
        self.assertEqual(srv.stop(), 0)
        self.assertEqual(cli.stop(), 0)
        for side in (srv, cli):
            text = side.stderr_text()
            for secret in (self.PW, "pw-S3cret-two", self.ADMIN_SECRET, tok, short):
                self.assertNotIn(secret, text)

    def test_defaults(self):
        srv = self.server()
        # up to the passwords line, the last: with a lowered
        # -max-connections (a low open file limit) that is the 8th line, and
        # a count of 7 could be reached before it was read
        self.assertTrue(srv.wait_stderr(r"INFO  passwords: ", 10 * TIME_SCALE), srv.describe())
        text = "\n".join(srv.err_lines[:8])
        self.assertRegex(text, r"INFO  listening on 127\.0\.0\.1:%d\n" % srv.port)
        self.assertIn("INFO  base path: none (endpoints at /)\n", text)
        self.assertIn("INFO  TLS: off\n", text)
        self.assertIn("max-clients-per-token none, wstimeout 30 s", text)
        self.assertIn("max-body none", text)
        self.assertIn("INFO  admin: /admin/... and /metrics from this host only, no bearer "
                      "token; trusted proxies: none", text)
        self.assertIn("INFO  passwords: none (any token of 16 characters or more may open a "
                      "tunnel)", text)
        self.assertNotIn("WARN", text)


class ErrorsNameTheProblem(LogCase):
    def run_prog(self, *argv, env=None):
        full = dict(os.environ)
        full.pop("WSTUNNEL_PASSWORD", None)
        full.update(env or {})
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=30 * TIME_SCALE,
                              env=full, stdin=subprocess.DEVNULL)

    def test_url_flags(self):
        tok = make_token()
        cases = [
            (["-tunnel", "http://127.0.0.1:1", "-server", "http://127.0.0.1:2"],
             "wstuncli: flag -tunnel: must begin with ws:// or wss://"),
            (["-tunnel", "127.0.0.1:1", "-server", "http://127.0.0.1:2"],
             "wstuncli: flag -tunnel: must begin with ws:// or wss://"),
            (["-tunnel", "ws://127.0.0.1:1", "-server", "ftp://127.0.0.1:2"],
             "wstuncli: flag -server: must begin with http:// or https://"),
            (["-tunnel", "ws://127.0.0.1:99999", "-server", "http://127.0.0.1:2"],
             "wstuncli: flag -tunnel: malformed, or not ws:// or wss:// (want "
             "ws[s]://[user:pass@]host[:port][/base])"),
            (["-tunnel", "ws://127.0.0.1:1", "-server", "http://127.0.0.1:0x"],
             "wstuncli: flag -server: malformed, or not http:// or https:// (want "
             "http[s]://host[:port][/prefix])"),
        ]
        for args, want in cases:
            p = self.run_prog(CLI_BIN, "-token", tok, *args)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertEqual(p.stderr.strip().splitlines()[-1], want)
        # the tunnel URL's user:password is never shown, at start nor later
        srv = self.server()
        cli = self.client(srv, tok, "-server", "http://127.0.0.1:1",
                          tunnel_url="ws://user:Hush-Hush@127.0.0.1:%d" % srv.port)
        self.assertTrue(cli.wait_stderr(r"tunnel open to", 15 * TIME_SCALE), cli.stderr_text())
        self.assertRegex(cli.err_lines[0], r"INFO  tunnel ws://127\.0\.0\.1:%d token=%s\.\.\. "
                         r"with a password; requests go to http://127\.0\.0\.1:1; timeout 30 s$"
                         % (srv.port, re.escape(tok[:8])))
        self.assertNotIn("Hush-Hush", cli.stderr_text())
        # a password in a malformed URL is never shown
        p = self.run_prog(CLI_BIN, "-token", tok, "-server", "http://127.0.0.1:2",
                          "-tunnel", "ws://user:Hush-Hush@127.0.0.1:99999")
        self.assertEqual(p.returncode, 2)
        self.assertNotIn("Hush-Hush", p.stderr)

    def test_port_in_use(self):
        with socket.socket() as s:
            s.bind((HOST, 0))
            s.listen()
            port = s.getsockname()[1]
            p = self.run_prog(SRV_BIN, "-host", HOST, "-port", str(port))
        self.assertEqual(p.returncode, 1)
        self.assertIn("wstunsrv: flag -host/-port: cannot listen on 127.0.0.1:%d: address "
                      "already in use" % port, p.stderr)

    def test_refused_tunnel_shows_the_servers_answer(self):
        tok = make_token()
        srv = self.server("-passwords", "%s:right-Pw-123" % tok, "-log-format", "json")
        # no password at all
        cli = self.client(srv, tok, "-server", "http://127.0.0.1:1")
        m = cli.wait_stderr(r"cannot open tunnel to ws://127\.0\.0\.1:%d: (.*)$" % srv.port,
                            15 * TIME_SCALE)
        self.assertTrue(m, cli.stderr_text())
        self.assertEqual(m.group(1), "server answered 401 Unauthorized: Authorization required "
                         "for this token; no password was sent and the server wants one for "
                         "this token (wstuncli: -token TOKEN:PASSWORD, -password-file or "
                         "WSTUNNEL_PASSWORD)")
        # a wrong one from the environment
        cli2 = self.client(srv, tok, "-server", "http://127.0.0.1:1",
                           env={"WSTUNNEL_PASSWORD": "wrong-Pw-456"})
        m = cli2.wait_stderr(r"cannot open tunnel to ws://127\.0\.0\.1:%d: (.*)$" % srv.port,
                             15 * TIME_SCALE)
        self.assertTrue(m, cli2.stderr_text())
        self.assertEqual(m.group(1), "server answered 401 Unauthorized: Invalid token or "
                         "password; the token's password was refused (wstuncli: -token "
                         "TOKEN:PASSWORD, -password-file or WSTUNNEL_PASSWORD)")
        # the server's side: a warning with the reason, and an access line
        self.assertTrue(srv.wait_stderr(r"WS   refused token=%s\.\.\. addr=127\.0\.0\.1:\d+: "
                                        r"Invalid token or password" % re.escape(tok[:8]), 10))
        o = self.wait_access(srv, lambda o: o["path"] == "/_tunnel" and o["status"] == 401)
        self.assertEqual(o["token"], tok[:8] + "...")
        self.assertEqual(cli.stop(), 0)
        self.assertEqual(cli2.stop(), 0)
        for side in (srv, cli, cli2):
            self.assertNotIn("wrong-Pw-456", side.stderr_text())
            self.assertNotIn("right-Pw-123", side.stderr_text())

    def test_429_logged_on_both_sides(self):
        srv, cli, be, tok = self.tunnel("-max-clients-per-token", "1", "-log-format", "json")
        cli2 = self.client(srv, tok, server_url=be.url)
        m = cli2.wait_stderr(r"cannot open tunnel to [^:]+:[^:]+:\d+: (.*)$", 15 * TIME_SCALE)
        self.assertTrue(m, cli2.stderr_text())
        self.assertEqual(m.group(1), "server answered 429 Too Many Requests: Maximum number of "
                         "clients (1) reached for this token")
        self.assertTrue(srv.wait_stderr(r"\"level\":\"warn\".*WS   refused token=%s\.\.\. "
                                        r"addr=127\.0\.0\.1:\d+: Maximum number of clients \(1\) "
                                        r"reached for this token" % re.escape(tok[:8]), 10))
        o = self.wait_access(srv, lambda o: o["status"] == 429)
        self.assertEqual((o["path"], o["token"]), ("/_tunnel", tok[:8] + "..."))

    def test_client_timeout_clamped(self):
        tok = make_token()
        srv = self.server()
        cli = self.client(srv, tok, "-timeout", "1", "-server", "http://127.0.0.1:1")
        # running (its signal handlers in place) before the check
        self.assertTrue(cli.wait_stderr(r"tunnel open to", 15 * TIME_SCALE), cli.stderr_text())
        self.assertRegex(cli.err_lines[0], r"WARN  -timeout 1 is out of range: using 3$")


if __name__ == "__main__":
    main()
