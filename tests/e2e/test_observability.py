"""What operators see: /_stats (exact format, local and remote views),
/metrics (Prometheus text, checked with promtool when installed), the
admin JSON documents after real traffic, and who may see them
(-trusted-proxies, -admin-allow, -admin-token)."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, Background, get, make_token, wait_tunnels,  # noqa: E402
                     wait_until, main)

REMOTE = "203.0.113.9"  # TEST-NET-3: never contacted, only written in a header


class Stats(E2ETestCase):
    @staticmethod
    def local_name():
        import socket
        try:
            return socket.gethostbyaddr("127.0.0.1")[0]
        except OSError:
            return ""

    def test_reverse_dns_of_the_tunnel_peer(self):
        name = self.local_name()
        if not name:
            self.skipTest("127.0.0.1 has no name on this machine")
        srv, cli, be, tok = self.tunnel()
        ok = wait_until(lambda: "tunnel00_tun_dns=%s\n" % name in get(srv.port, "/_stats").text, 5)
        self.assertTrue(ok, get(srv.port, "/_stats").text)
        doc = get(srv.port, "/admin/auditing").json()
        self.assertEqual(doc["tunnels"][tok]["remote_name"], name)

    def test_local_view_exact_format(self):
        """The Go server's local view: per-token client counts only with a
        client limit, tun_dns and client_version only when known, then a
        blank line, req_pending and dead_tunnels. total_clients is there
        always (the Go server has it only with a limit), and the tunnel's
        protocol (ours: the Go server has no v2)."""
        srv, cli, be, tok = self.tunnel()
        text = get(srv.port, "/_stats").text
        name = self.local_name()
        rx = (r"\Atunnels=1\n"
              r"max_requests_per_tunnel=20\n"
              r"max_clients_per_token=0\n"
              r"total_clients=1\n"
              r"\n"
              r"tunnel00_token=%s\.\.\.\n"
              r"tunnel00_req_pending=0\n"
              r"tunnel00_tun_addr=127\.0\.0\.1:\d+\n"
              r"%s"
              r"tunnel00_client_version=wstun \d+\.\d+\.\d+\n"
              r"tunnel00_protocol=v2\n"
              r"tunnel00_idle_secs=\d+\.\d\n"
              r"\n"
              r"req_pending=0\n"
              r"dead_tunnels=0\n\Z") % (re.escape(tok[:8]),
                                        "(?:tunnel00_tun_dns=%s\n)?" % re.escape(name)
                                        if name else "")
        self.assertRegex(text, rx)
        self.assertNotIn(tok, text, "a full token must never be shown")

    def test_local_view_with_client_limit(self):
        srv, cli, be, tok = self.tunnel("-max-clients-per-token", "3")
        text = get(srv.port, "/_stats").text
        self.assertRegex(text, r"\Atunnels=1\nmax_requests_per_tunnel=20\n"
                               r"max_clients_per_token=3\ntoken_clients_%s\.\.\.=1\n"
                               r"total_clients=1\n\ntunnel00_token=" % re.escape(tok[:8]))

    def test_forwarded_for_is_not_believed_by_default(self):
        srv, cli, be, tok = self.tunnel()
        text = get(srv.port, "/_stats", headers={"X-Forwarded-For": REMOTE}).text
        self.assertIn("tunnel00_token=", text)

    def test_remote_view_through_trusted_proxy(self):
        """Others get the Go server's short view (without the per-token
        counts: token prefixes are for this host only)."""
        srv, cli, be, tok = self.tunnel("-trusted-proxies", "127.0.0.1/32")
        want = ("tunnels=1\nmax_requests_per_tunnel=20\nmax_clients_per_token=0\n"
                "More stats available when called from localhost...\n")
        text = get(srv.port, "/_stats", headers={"X-Forwarded-For": REMOTE}).text
        self.assertEqual(text, want)
        # a forged local address from the outside changes nothing: the last
        # hop (what the trusted proxy saw) decides
        text = get(srv.port, "/_stats",
                   headers={"X-Forwarded-For": "127.0.0.1, " + REMOTE}).text
        self.assertEqual(text, want)
        srv, cli, be, tok = self.tunnel("-trusted-proxies", "127.0.0.1/32",
                                        "-max-clients-per-token", "2")
        text = get(srv.port, "/_stats", headers={"X-Forwarded-For": REMOTE}).text
        self.assertEqual(text, "tunnels=1\nmax_requests_per_tunnel=20\nmax_clients_per_token=2\n"
                               "total_clients=1\n"
                               "More stats available when called from localhost...\n")
        self.assertNotIn(tok[:8], text)


class AdminAccess(E2ETestCase):
    def test_remote_requester_refused(self):
        srv = self.server("-trusted-proxies", "127.0.0.0/8")
        for path in ("/admin/monitoring", "/admin/auditing", "/metrics"):
            r = get(srv.port, path, headers={"X-Forwarded-For": REMOTE})
            self.assertEqual(r.status, 403, path)
            self.assertEqual(get(srv.port, path).status, 200, path)

    def test_admin_allow_widens(self):
        srv = self.server("-trusted-proxies", "127.0.0.1", "-admin-allow", "203.0.113.0/24")
        r = get(srv.port, "/admin/monitoring", headers={"X-Forwarded-For": REMOTE})
        self.assertEqual(r.status, 200)
        r = get(srv.port, "/admin/monitoring", headers={"X-Forwarded-For": "198.51.100.7"})
        self.assertEqual(r.status, 403)

    def test_admin_token(self):
        srv = self.server("-admin-token", "s3cret-admin-token")
        r = get(srv.port, "/metrics")
        self.assertEqual(r.status, 401)
        self.assertIn("Bearer", r.header("WWW-Authenticate") or "")
        r = get(srv.port, "/metrics", headers={"Authorization": "Bearer wrong"})
        self.assertEqual(r.status, 401)
        r = get(srv.port, "/metrics", headers={"Authorization": "Bearer s3cret-admin-token"})
        self.assertEqual(r.status, 200)

    def test_admin_token_from_file(self):
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d)
        path = os.path.join(d, "token")
        with open(path, "w") as f:
            f.write("token-from-a-file\n")
        os.chmod(path, 0o600)
        srv = self.server("-admin-token-file", path)
        self.assertEqual(get(srv.port, "/metrics").status, 401)
        r = get(srv.port, "/metrics", headers={"Authorization": "Bearer token-from-a-file"})
        self.assertEqual(r.status, 200)
        # readable by others: refused, with the reason
        os.chmod(path, 0o644)
        from harness import SRV_BIN
        p = subprocess.run([SRV_BIN, "-port", "0", "-admin-token-file", path],
                           capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"admin-token-file", p.stderr)

    def test_bad_address_list_is_a_usage_error(self):
        from harness import SRV_BIN
        p = subprocess.run([SRV_BIN, "-port", "0", "-admin-allow", "10.0.0.0/33"],
                           capture_output=True, timeout=10)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"admin-allow", p.stderr)


class Metrics(E2ETestCase):
    def scrape(self, srv):
        r = get(srv.port, "/metrics")
        self.assertEqual(r.status, 200)
        self.assertTrue(r.header("Content-Type").startswith("text/plain; version=0.0.4"))
        return r.body.decode()

    @staticmethod
    def value(text, name):
        m = re.search(r"(?m)^%s (\S+)$" % re.escape(name), text)
        return float(m.group(1)) if m else None

    def test_exposition_is_valid(self):
        srv, cli, be, tok = self.tunnel()
        get(srv.port, "/_token/%s/echo" % tok)
        text = self.scrape(srv)
        typed = set(re.findall(r"(?m)^# TYPE (\S+) (?:counter|gauge|histogram)$", text))
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0)
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            self.assertTrue(name in typed or base in typed, "untyped sample: " + line)
        promtool = shutil.which("promtool")
        if promtool is None:
            self.skipTest("promtool not installed (apt-get install prometheus)")
        p = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def test_counters_move(self):
        srv, cli, be, tok = self.tunnel()
        before = self.scrape(srv)
        for _ in range(3):
            self.assertEqual(get(srv.port, "/_token/%s/echo" % tok).status, 200)
        self.assertEqual(get(srv.port, "/_token/%s/status?code=503" % tok).status, 503)
        after = self.scrape(srv)
        d = lambda n: self.value(after, n) - self.value(before, n)  # noqa: E731
        self.assertEqual(d('wstun_requests_total{status="2xx"}'), 3)
        self.assertEqual(d('wstun_requests_total{status="5xx"}'), 1)
        self.assertEqual(d("wstun_request_duration_seconds_count"), 4)
        self.assertGreater(d("wstun_received_bytes_total"), 0)
        self.assertEqual(self.value(after, "wstun_tunnels"), 1)
        self.assertEqual(self.value(after, "wstun_tunnel_connects_total"), 1)
        self.assertEqual(self.value(after, 'wstun_tokens_by_connections{connections="1"}'), 1)
        self.assertEqual(self.value(after, 'wstun_tokens_by_connections{connections="0"}'), 0)

    def test_handshake_failures_by_reason(self):
        from harness import ws_connect
        srv = self.server()
        ws_connect(srv.port, token="short")
        text = self.scrape(srv)
        self.assertEqual(self.value(text, 'wstun_handshake_failures_total{reason="short_token"}'), 1)


class RequestLogLines(E2ETestCase):
    """One request leaves the Go tool's four lines in the server log, with
    an 8-character token prefix and never the whole token."""

    RX = (r"HTTP RCV token=%(p)s\.\.\. verb=GET url=/echo\?x=1 addr=127\.0\.0\.1:\d+",
          r"WS   SND token=%(p)s\.\.\. id=[0-9a-f]{4} verb=GET url=/echo\?x=1 addr=127\.0\.0\.1:\d+",
          r"WS   RCV token=%(p)s\.\.\. id=[0-9a-f]{4} status=200",
          r"HTTP RET token=%(p)s\.\.\. id=[0-9a-f]{4} status=200")

    def check(self, fmt):
        import json
        srv, cli, be, tok = self.tunnel("-log-level", "debug", "-log-format", fmt)
        self.assertEqual(get(srv.port, "/_token/%s/echo?x=1" % tok).status, 200)
        def lines():
            out = srv.stderr_text().splitlines()
            if fmt == "json":
                out = [json.loads(line)["msg"] for line in out if line.startswith("{")]
            return "\n".join(out)
        for rx in self.RX:
            rx = rx % {"p": re.escape(tok[:8])}
            self.assertTrue(wait_until(lambda: re.search(rx, lines()), 5), rx + "\n" + lines())
        self.assertNotIn(tok, srv.stderr_text())

    def test_text_format(self):
        self.check("text")

    def test_json_format(self):
        self.check("json")


class AdminDocuments(E2ETestCase):
    def test_monitoring_counts_move(self):
        srv, cli, be, tok = self.tunnel()
        m0 = get(srv.port, "/admin/monitoring").json()
        self.assertEqual(get(srv.port, "/_token/%s/echo" % tok).status, 200)
        m1 = get(srv.port, "/admin/monitoring").json()
        self.assertEqual(m1["completed_requests"] - m0["completed_requests"], 1)
        cli.stop()
        self.assertTrue(wait_tunnels(srv, 0))
        # no client: the request waits, then times out as an error
        srv2, cli2, be2, tok2 = self.tunnel("-httptimeout", "1")
        cli2.stop()
        self.assertTrue(wait_tunnels(srv2, 0))
        self.assertEqual(get(srv2.port, "/_token/%s/echo" % tok2).status, 504)
        self.assertEqual(get(srv2.port, "/admin/monitoring").json()["errored_requests"], 1)

    def test_auditing_lists_a_running_request(self):
        srv, cli, be, tok = self.tunnel()
        bg = Background(get, srv.port, "/_token/%s/slow?ms=1500" % tok, timeout=10)
        def active():
            doc = get(srv.port, "/admin/auditing").json()
            return doc["tunnels"][tok]["active_connections"]
        conns = wait_until(lambda: active() or None, 5)
        self.assertTrue(conns, "the slow request never showed up")
        c = conns[0]
        self.assertEqual(c["method"], "GET")
        self.assertEqual(c["uri"], "/slow?ms=1500")
        self.assertRegex(c["remote_addr"], r"^127\.0\.0\.1:\d+$")
        self.assertRegex(c["start_time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertEqual(bg.result(10).status, 200)
        doc = get(srv.port, "/admin/auditing").json()["tunnels"][tok]
        self.assertEqual(doc["active_connections"], [])
        self.assertRegex(doc["last_success_time"], r"^\d{4}-")
        for k in ("token", "remote_addr", "remote_name", "remote_whois", "client_version",
                  "last_activity", "last_success_addr", "pending_requests"):
            self.assertIn(k, doc)
        # no error yet: omitted, as the Go server does
        self.assertNotIn("last_error_time", doc)
        self.assertNotIn("last_error_addr", doc)


if __name__ == "__main__":
    main()
