"""The tunnel through a real HTTP CONNECT proxy (issue 4): Debian's
tinyproxy, started per test on a free loopback port with its own config
in a temp dir. ws:// and wss:// through it, Basic auth (right, missing and
wrong password), refusals retried with backoff, the proxy environment
variables (https_proxy / HTTPS_PROXY for wss://, http_proxy / HTTP_PROXY
for ws://, no_proxy / NO_PROXY), and 100 MiB byte-exact over wss through
the proxy.

That a tunnel really went through the proxy is checked twice: tinyproxy
logs the CONNECT request, and /proc shows the client connected to the
proxy's port and not to the server's (and the server sees its tunnel
peer on a socket tinyproxy holds).
"""

import base64
import os
import re
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, HOST, CLI_BIN, make_token, expected_sha256, dead_port,  # noqa: E402
                     free_port, get, stats_tunnel_addr, wait_tunnels, wait_until, main)
import tlsutil  # noqa: E402
from tlsutil import (PKI, TinyProxy, FakeConnectProxy, client_ctx, https_req, https_tunnels,  # noqa: E402
                     wait_https_tunnels, https_download, https_upload, remote_ports,
                     tcp_peers)

tlsutil.scrub_proxy_env()

MIB = 1024 * 1024
UNKNOWN_TOKEN_BODY = "Tunnel not found (or not seen in a long time)"
CA = None
LEAF = None


def setUpModule():
    global CA, LEAF
    if not tlsutil.TINYPROXY:
        raise unittest.SkipTest("tinyproxy is not installed (apt-get install tinyproxy): "
                                "skipping the proxy tests")
    if not tlsutil.OPENSSL:
        raise unittest.SkipTest("the openssl CLI is not installed (apt-get install openssl)")
    pki = PKI()
    CA = pki.ca("wstun proxy-test CA")
    LEAF = pki.leaf(CA, dns=("localhost",), ips=("127.0.0.1",))


def ctx_ca():
    return client_ctx(CA.cert)


class ProxyCase(E2ETestCase):
    def proxy(self, connect_ports=(), auth=None):
        p = TinyProxy(connect_ports=connect_ports, auth=auth)
        self._procs.append(p)
        self.addCleanup(p.stop)
        return p

    def dead_proxy_url(self):
        """The URL of a proxy that refuses every connection: a port held
        bound, not listening, until the test ends (nobody else can start
        listening there meanwhile)."""
        hold, port = dead_port()
        self.addCleanup(hold.close)
        return "http://127.0.0.1:%d" % port

    def tls_server(self, *flags, **kw):
        return self.server("-tls-cert", LEAF.cert, "-tls-key", LEAF.key, *flags, **kw)

    def wss_client(self, srv, token, *flags, server_url=None, env=None):
        return self.client(srv, token, "-certfile", CA.cert, *flags, server_url=server_url,
                           tunnel_url="wss://localhost:%d" % srv.port, env=env)

    def tunnel_with_env(self, scheme, tok, be, env):
        """A server (TLS for "wss") and a client for tok with `env`;
        returns (server, client, whether one tunnel came up in time)."""
        if scheme == "wss":
            srv = self.tls_server()
            cli = self.wss_client(srv, tok, server_url=be.url, env=env)
            return srv, cli, wait_https_tunnels(srv.port, ctx_ca(), 1, 10)
        srv = self.server()
        cli = self.client(srv, tok, server_url=be.url, env=env)
        return srv, cli, wait_tunnels(srv, 1)

    def assertViaProxy(self, cli, proxy, srv, target):
        """The client talks to the proxy only, tinyproxy logged the CONNECT
        to `target` (host:port), and the server's tunnel peer is a socket
        of tinyproxy's."""
        self.assertTrue(any(re.match(r"CONNECT %s HTTP/1\.[01]$" % re.escape(target), ln)
                            for ln in proxy.requests()),
                        "tinyproxy logged no CONNECT %s: %r" % (target, proxy.requests()))
        ports = remote_ports(cli.pid)
        self.assertIn(proxy.port, ports, "the client holds no connection to the proxy")
        self.assertNotIn(srv.port, ports, "the client is connected to the server directly")
        # the server's view of the tunnel peer: one of tinyproxy's sockets
        mine = {lp for lp, rp in tcp_peers(proxy.pid) if rp == srv.port}
        self.assertTrue(mine, "tinyproxy holds no connection to the server")

    def assertDirect(self, cli, srv, proxy=None):
        ports = remote_ports(cli.pid)
        self.assertIn(srv.port, ports, "the client is not connected to the server directly")
        if proxy is not None:
            self.assertNotIn(proxy.port, ports)
            self.assertEqual(proxy.requests(), [], "the proxy was used")

    def assertNoTunnel(self, srv, be, tok, tls=False, settle=1.5):
        time.sleep(settle)
        if tls:
            self.assertEqual(https_tunnels(srv.port, ctx_ca()), 0)
            r = https_req(srv.port, "GET", "/_token/%s/echo" % tok, ctx_ca())
        else:
            self.assertFalse(wait_tunnels(srv, 1, 0.2))
            r = get(srv.port, "/_token/%s/echo" % tok)
        self.assertStatus(r, 404)
        self.assertBody(r, UNKNOWN_TOKEN_BODY)
        self.assertEqual(be.count(), 0)

    def assertRefusedAndRetried(self, cli, status_rx, proxy):
        rx = r"(?i)proxy.*\b(%s)\b" % status_rx
        self.assertIsNotNone(cli.wait_stderr(rx, 10),
                             "no proxy refusal (%s) logged\n%s" % (status_rx, cli.describe()))
        line = [ln for ln in cli.err_lines if re.search(rx, ln)][0]
        self.assertRegex(line, r"(?i)warn", "not a warning: %r" % line)
        self.assertIsNotNone(cli.wait_stderr(r"reconnecting in \d+ ms", 10), cli.describe())
        self.assertTrue(wait_until(lambda: len([ln for ln in cli.err_lines
                                                if re.search(rx, ln)]) >= 2, 10),
                        "not retried\n" + cli.describe())
        # tinyproxy writes its log line after it answered: the client may
        # have logged the second refusal before the proxy's line is there
        def connects():
            return len([r for r in proxy.requests() if r.startswith("CONNECT")])
        self.assertTrue(wait_until(lambda: connects() >= 2, 10), proxy.requests())
        self.assertTrue(cli.alive())
        self.assertNotRegex(cli.stderr_text(), r"tunnel open to")


# --------------------------------------------------------------------------

class ProxyFlag(ProxyCase):
    def test_ws_through_proxy(self):
        be = self.backend()
        srv = self.server()
        px = self.proxy(connect_ports=(srv.port,))
        tok = make_token()
        cli = self.client(srv, tok, "-proxy", px.url(), server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1), cli.describe() + "\n" + px.log())
        r = get(srv.port, "/_token/%s/echo?via=proxy" % tok)
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["path"], "/echo?via=proxy")
        self.assertViaProxy(cli, px, srv, "127.0.0.1:%d" % srv.port)
        # the server sees tinyproxy's outgoing socket as the tunnel's peer
        addr = stats_tunnel_addr(srv)
        self.assertRegex(addr or "", r"^127\.0\.0\.1:\d+$")
        self.assertIn(int(addr.rsplit(":", 1)[1]),
                      {lp for lp, rp in tcp_peers(px.pid) if rp == srv.port})

    def test_wss_through_proxy(self):
        be = self.backend()
        srv = self.tls_server()
        px = self.proxy(connect_ports=(srv.port,))
        tok = make_token()
        cli = self.wss_client(srv, tok, "-proxy", px.url(), server_url=be.url)
        self.assertTrue(wait_https_tunnels(srv.port, ctx_ca(), 1, 10),
                        cli.describe() + "\n" + px.log())
        r = https_req(srv.port, "GET", "/_token/%s/name" % tok, ctx_ca())
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"backend")
        self.assertViaProxy(cli, px, srv, "localhost:%d" % srv.port)

    def test_basic_auth(self):
        be = self.backend()
        srv = self.tls_server()
        px = self.proxy(connect_ports=(srv.port,), auth=("wstun", "pr0xy-pw"))
        tok = make_token()
        cli = self.wss_client(srv, tok, "-proxy", px.url("wstun", "pr0xy-pw"),
                              server_url=be.url)
        self.assertTrue(wait_https_tunnels(srv.port, ctx_ca(), 1, 10),
                        cli.describe() + "\n" + px.log())
        self.assertStatus(https_req(srv.port, "GET", "/_token/%s/name" % tok, ctx_ca()), 200)
        self.assertViaProxy(cli, px, srv, "localhost:%d" % srv.port)
        self.assertNotIn("pr0xy-pw", cli.stderr_text(), "the proxy password is logged")

    def test_no_credentials_407(self):
        be = self.backend()
        srv = self.tls_server()
        px = self.proxy(connect_ports=(srv.port,), auth=("wstun", "pr0xy-pw"))
        tok = make_token()
        cli = self.wss_client(srv, tok, "-proxy", px.url(), server_url=be.url)
        self.assertRefusedAndRetried(cli, "407", px)
        self.assertRegex(cli.stderr_text(), r"proxy answered 407 Proxy Authentication Required")
        self.assertNoTunnel(srv, be, tok, tls=True, settle=0)

    def test_wrong_password_refused(self):
        """tinyproxy answers a wrong password with 401 (a missing one with
        407): either is a refusal, logged with its status, and retried."""
        be = self.backend()
        srv = self.tls_server()
        px = self.proxy(connect_ports=(srv.port,), auth=("wstun", "pr0xy-pw"))
        tok = make_token()
        cli = self.wss_client(srv, tok, "-proxy", px.url("wstun", "not-the-pw"),
                              server_url=be.url)
        self.assertRefusedAndRetried(cli, "401|407", px)
        self.assertNoTunnel(srv, be, tok, tls=True, settle=0)
        self.assertNotIn("not-the-pw", cli.stderr_text(), "the proxy password is logged")

    def test_connect_port_not_allowed_403(self):
        be = self.backend()
        srv = self.server()
        px = self.proxy(connect_ports=(free_port(),))  # not the server's port
        tok = make_token()
        cli = self.client(srv, tok, "-proxy", px.url(), server_url=be.url)
        self.assertRefusedAndRetried(cli, "403", px)
        self.assertNoTunnel(srv, be, tok, settle=0)

    def test_dead_proxy_retried(self):
        be = self.backend()
        srv = self.server()
        tok = make_token()
        cli = self.client(srv, tok, "-proxy", self.dead_proxy_url(), server_url=be.url)
        self.assertIsNotNone(cli.wait_stderr(r"cannot open tunnel", 10), cli.describe())
        self.assertIsNotNone(cli.wait_stderr(r"reconnecting in \d+ ms", 10))
        self.assertNoTunnel(srv, be, tok)
        self.assertTrue(cli.alive())

    def test_proxy_flag_beats_environment(self):
        be = self.backend()
        srv = self.tls_server()
        px = self.proxy(connect_ports=(srv.port,))
        dead = self.dead_proxy_url()
        tok = make_token()
        cli = self.wss_client(srv, tok, "-proxy", px.url(), server_url=be.url,
                              env={"https_proxy": dead, "HTTPS_PROXY": dead})
        self.assertTrue(wait_https_tunnels(srv.port, ctx_ca(), 1, 10), cli.describe())
        self.assertViaProxy(cli, px, srv, "localhost:%d" % srv.port)


class ProxyEnvironment(ProxyCase):
    def test_https_proxy_for_wss(self):
        for var in ("https_proxy", "HTTPS_PROXY"):
            with self.subTest(var=var):
                be = self.backend()
                srv = self.tls_server()
                px = self.proxy(connect_ports=(srv.port,))
                tok = make_token()
                cli = self.wss_client(srv, tok, server_url=be.url, env={var: px.url()})
                self.assertTrue(wait_https_tunnels(srv.port, ctx_ca(), 1, 10),
                                cli.describe() + "\n" + px.log())
                self.assertStatus(https_req(srv.port, "GET", "/_token/%s/name" % tok,
                                            ctx_ca()), 200)
                self.assertViaProxy(cli, px, srv, "localhost:%d" % srv.port)

    def test_http_proxy_for_ws(self):
        for var in ("http_proxy", "HTTP_PROXY"):
            with self.subTest(var=var):
                be = self.backend()
                srv = self.server()
                px = self.proxy(connect_ports=(srv.port,))
                tok = make_token()
                cli = self.client(srv, tok, server_url=be.url, env={var: px.url()})
                self.assertTrue(wait_tunnels(srv, 1), cli.describe() + "\n" + px.log())
                self.assertStatus(get(srv.port, "/_token/%s/name" % tok), 200)
                self.assertViaProxy(cli, px, srv, "127.0.0.1:%d" % srv.port)

    def test_proxy_variable_is_really_used(self):
        """Control for the no_proxy tests: https_proxy pointing at a dead
        port keeps a wss tunnel from coming up at all."""
        be = self.backend()
        srv = self.tls_server()
        tok = make_token()
        cli = self.wss_client(srv, tok, server_url=be.url,
                              env={"https_proxy": self.dead_proxy_url()})
        self.assertIsNotNone(cli.wait_stderr(r"cannot open tunnel", 10), cli.describe())
        self.assertNoTunnel(srv, be, tok, tls=True)

    def test_no_proxy_bypasses(self):
        dead = self.dead_proxy_url()
        cases = (
            ("wss", {"https_proxy": dead, "no_proxy": "localhost"}),
            ("wss", {"HTTPS_PROXY": dead, "NO_PROXY": "localhost"}),
            ("wss", {"https_proxy": dead, "no_proxy": "*"}),
            ("wss", {"https_proxy": dead, "no_proxy": "example.com, localhost"}),
            ("wss", {"https_proxy": dead, "no_proxy": ".localhost"}),
            ("ws", {"http_proxy": dead, "no_proxy": "127.0.0.1"}),
            ("ws", {"HTTP_PROXY": dead, "NO_PROXY": "example.com,127.0.0.1"}),
        )
        for scheme, env in cases:
            with self.subTest(scheme=scheme, env=env):
                be = self.backend()
                tok = make_token()
                srv, cli, up = self.tunnel_with_env(scheme, tok, be, env)
                self.assertTrue(up, "no_proxy not honoured\n" + cli.describe())
                self.assertDirect(cli, srv)

    def test_no_proxy_that_does_not_match(self):
        """no_proxy naming other hosts leaves the proxy in use."""
        be = self.backend()
        srv = self.tls_server()
        px = self.proxy(connect_ports=(srv.port,))
        tok = make_token()
        cli = self.wss_client(srv, tok, server_url=be.url,
                              env={"https_proxy": px.url(),
                                   "no_proxy": "example.com,notlocalhost,127.0.0.2"})
        self.assertTrue(wait_https_tunnels(srv.port, ctx_ca(), 1, 10), cli.describe())
        self.assertViaProxy(cli, px, srv, "localhost:%d" % srv.port)

    def test_unsupported_proxy_from_environment_is_ignored(self):
        """A proxy variable with a scheme other than http:// (a desktop's
        all_proxy=socks5h://..., an https:// proxy) does not stop
        wstuncli: one WARN line says it is ignored (naming no password),
        the tunnel goes straight to the server, and requests go through."""
        cases = (
            ("ws", {"all_proxy": "socks5h://127.0.0.1:1"}),
            ("wss", {"https_proxy": "https://127.0.0.1:1"}),
            ("ws", {"ALL_PROXY": "socks5://user:secretpw@127.0.0.1:1"}),
            ("wss", {"HTTPS_PROXY": "socks5://user:secretpw@127.0.0.1:1"}),
        )
        for scheme, env in cases:
            with self.subTest(scheme=scheme, env=env):
                be = self.backend()
                tok = make_token()
                srv, cli, up = self.tunnel_with_env(scheme, tok, be, env)
                self.assertTrue(up, "no tunnel\n" + cli.describe())
                self.assertTrue(cli.alive(), cli.describe())
                if scheme == "wss":
                    r = https_req(srv.port, "GET", "/_token/%s/name" % tok, ctx_ca())
                else:
                    r = get(srv.port, "/_token/%s/name" % tok)
                self.assertStatus(r, 200)
                self.assertEqual(r.body, b"backend")
                self.assertDirect(cli, srv)
                warn = [ln for ln in cli.err_lines
                        if "ignoring the proxy from the environment" in ln]
                self.assertEqual(len(warn), 1, "expected one warning\n" + cli.describe())
                self.assertRegex(warn[0], r"\bWARN", warn[0])
                self.assertNotIn("secretpw", cli.stderr_text(), "the proxy password is logged")

    def test_unsupported_proxy_flag_is_a_usage_error(self):
        """On the command line, -proxy socks5://... is still refused: exit
        2 and one line naming -proxy (credentials not echoed)."""
        srv = self.server()
        for url in ("socks5://127.0.0.1:1", "socks5h://user:secretpw@127.0.0.1:1"):
            with self.subTest(proxy=url):
                argv = [CLI_BIN, "-tunnel", "ws://127.0.0.1:%d" % srv.port,
                        "-token", make_token(), "-server", "http://127.0.0.1:1",
                        "-proxy", url]
                try:
                    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                       timeout=10)
                except subprocess.TimeoutExpired:
                    self.fail("wstuncli -proxy %s kept running" % url)
                err = p.stderr.decode("utf-8", "replace")
                lines = [ln for ln in err.splitlines() if ln.strip()]
                self.assertEqual(p.returncode, 2, err)
                self.assertEqual(len(lines), 1, "expected one line, got %r" % lines)
                self.assertIn("-proxy", lines[0])
                self.assertNotIn("secretpw", err)
                self.assertTrue(wait_tunnels(srv, 0, 0.3))

    def test_variable_of_the_other_scheme_is_ignored(self):
        """http_proxy does not apply to wss://, https_proxy not to ws://."""
        dead = self.dead_proxy_url()
        be = self.backend()
        srv = self.tls_server()
        tok = make_token()
        cli = self.wss_client(srv, tok, server_url=be.url,
                              env={"http_proxy": dead, "HTTP_PROXY": dead})
        self.assertTrue(wait_https_tunnels(srv.port, ctx_ca(), 1, 10), cli.describe())
        self.assertDirect(cli, srv)
        srv2 = self.server()
        tok2 = make_token()
        cli2 = self.client(srv2, tok2, server_url=be.url,
                           env={"https_proxy": dead, "HTTPS_PROXY": dead})
        self.assertTrue(wait_tunnels(srv2, 1), cli2.describe())
        self.assertDirect(cli2, srv2)


class ProxyWire(ProxyCase):
    """What wstuncli says to a proxy, and how it takes odd answers, pinned
    with a recording fake CONNECT proxy."""

    def fake_proxy(self, mode="relay"):
        f = FakeConnectProxy(mode)
        self.addCleanup(f.stop)
        return f

    def test_connect_request_and_basic_credentials(self):
        be = self.backend()
        srv = self.server()
        fp = self.fake_proxy()
        tok = make_token()
        # percent-encoded userinfo is decoded before it is encoded in Basic
        cli = self.client(srv, tok, "-proxy", fp.url("us%40er:p%3Ass%20w"), server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1), cli.describe())
        self.assertStatus(get(srv.port, "/_token/%s/name" % tok), 200)
        first, hdrs = fp.heads[0]
        self.assertEqual(first, "CONNECT 127.0.0.1:%d HTTP/1.1" % srv.port)
        self.assertEqual(hdrs.get("host"), ["127.0.0.1:%d" % srv.port])
        self.assertEqual(hdrs.get("proxy-authorization"),
                         ["Basic " + base64.b64encode(b"us@er:p:ss w").decode()])
        self.assertNotIn("p:ss w", cli.stderr_text())
        self.assertNotIn("p%3Ass", cli.stderr_text())

    def test_no_credentials_no_header_and_wss_names_the_host(self):
        be = self.backend()
        srv = self.tls_server()
        fp = self.fake_proxy()
        tok = make_token()
        cli = self.wss_client(srv, tok, "-proxy", fp.url(), server_url=be.url)
        self.assertTrue(wait_https_tunnels(srv.port, ctx_ca(), 1, 10), cli.describe())
        first, hdrs = fp.heads[0]
        self.assertEqual(first, "CONNECT localhost:%d HTTP/1.1" % srv.port)
        self.assertNotIn("proxy-authorization", hdrs)

    def test_all_proxy_is_the_fallback(self):
        be = self.backend()
        srv = self.server()
        fp = self.fake_proxy()
        tok = make_token()
        cli = self.client(srv, tok, server_url=be.url, env={"all_proxy": fp.url()})
        self.assertTrue(wait_tunnels(srv, 1), cli.describe())
        self.assertEqual(fp.heads[0][0], "CONNECT 127.0.0.1:%d HTTP/1.1" % srv.port)

    def test_odd_proxy_answers_logged_and_retried(self):
        for mode, rx in ((502, r"(?i)proxy.*\b502\b"), (403, r"(?i)proxy.*\b403\b"),
                         ("close", r"cannot open tunnel"), ("garbage", r"cannot open tunnel")):
            with self.subTest(mode=mode):
                be = self.backend()
                srv = self.server()
                fp = self.fake_proxy(mode)
                tok = make_token()
                cli = self.client(srv, tok, "-proxy", fp.url(), server_url=be.url)
                self.assertIsNotNone(cli.wait_stderr(rx, 10), cli.describe())
                self.assertIsNotNone(cli.wait_stderr(r"reconnecting in \d+ ms", 10))
                self.assertTrue(fp.wait_heads(2, 10), "not retried\n" + cli.describe())
                self.assertNoTunnel(srv, be, tok, settle=0.3)
                self.assertTrue(cli.alive())


class ProxyBulk(ProxyCase):
    def start(self):
        be = self.backend()
        srv = self.tls_server()
        px = self.proxy(connect_ports=(srv.port,), auth=("bulk", "bulk-pw"))
        tok = make_token()
        cli = self.wss_client(srv, tok, "-proxy", px.url("bulk", "bulk-pw"),
                              server_url=be.url)
        self.assertTrue(wait_https_tunnels(srv.port, ctx_ca(), 1, 10), cli.describe())
        self.assertViaProxy(cli, px, srv, "localhost:%d" % srv.port)
        return srv, cli, be, tok

    def test_100mib_upload_over_wss_through_proxy(self):
        srv, cli, be, tok = self.start()
        n = 100 * MIB
        t0 = time.monotonic()
        status, body = https_upload(srv.port, "/_token/%s/upload" % tok, n, ctx_ca(),
                                    timeout=60)
        dt = time.monotonic() - t0
        self.assertEqual(status, 200, body[:200])
        import json
        doc = json.loads(body)
        self.assertEqual((doc["len"], doc["sha256"]), (n, expected_sha256(n)))
        self.assertLess(dt, 75, "100 MiB upload took %.1f s" % dt)
        sys.stderr.write("[100 MiB up over wss via proxy: %.1f s, %.1f MB/s] "
                         % (dt, n / dt / 1e6))

    def test_100mib_download_over_wss_through_proxy(self):
        srv, cli, be, tok = self.start()
        n = 100 * MIB
        t0 = time.monotonic()
        status, got, sha = https_download(srv.port, "/_token/%s/bytes?n=%d" % (tok, n),
                                          ctx_ca(), timeout=60)
        dt = time.monotonic() - t0
        self.assertEqual((status, got, sha), (200, n, expected_sha256(n)))
        self.assertLess(dt, 75, "100 MiB download took %.1f s" % dt)
        sys.stderr.write("[100 MiB down over wss via proxy: %.1f s, %.1f MB/s] "
                         % (dt, n / dt / 1e6))


if __name__ == "__main__":
    main()
