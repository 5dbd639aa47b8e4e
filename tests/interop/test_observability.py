#!/usr/bin/env python3
"""Interop: /_stats, /admin/monitoring and /admin/auditing of our wstunsrv
compared field by field with the Go server's after the same scenario, the
Go client behind each (so client_version and the traffic are identical).
Compared: keys and structure, and every value that does not depend on time
or on port numbers."""

import json
import os
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop  # noqa: E402
from interop import (GO_CLI_READY_RX, GoServer, http_req, make_token,  # noqa: E402
                     wait_count)

RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")
ADDR = re.compile(r"^127\.0\.0\.1(:\d+)?$")


def parse_stats(text):
    """/_stats lines -> dict; tunnelNN_ prefixes -> tunnel_ (one tunnel)."""
    out = {}
    for line in text.splitlines():
        if "=" not in line:
            continue
        k, v = line.split("=", 1)
        out[re.sub(r"^tunnel\d+_", "tunnel_", k)] = v
    return out


class Observability(interop.InteropCase):

    def scenario(self, *srv_flags, clients=1, traffic=True):
        """The same traffic against the Go server and ours. Returns
        {"go": srv, "ours": srv} and the token."""
        be = self.backend()
        tok = make_token()
        srvs = {"go": self.go_server(*srv_flags), "ours": self.server(*srv_flags)}
        srvs["ours"].impl = "ours"
        for s in srvs.values():
            for _ in range(clients):
                c = self.go_client(s, tok, server_url=be.url)
                self.assertTrue(wait_count(c, GO_CLI_READY_RX, 1, 15), c.describe())
        self.assertTrue(wait_count(srvs["go"], GoServer.CONNECT_RX, clients, 10))
        self.assertTrue(interop.wait_tunnels(srvs["ours"], 1))
        # (no traffic with two clients: the Go server can hang a request
        # then, see test_compat's test_two_clients_one_token)
        for s in (srvs.values() if traffic else ()):
            for p in ("/echo", "/echo?2", "/status?code=404"):
                r = http_req(s.port, "GET", s.path("/_token/%s%s" % (tok, p)))
                self.assertIn(r.status, (200, 404))
            r = http_req(s.port, "GET", s.path("/_token/%s/x" % make_token("unknown")))
            self.assertEqual(r.status, 404)
        return srvs, tok

    def fetch(self, srvs, path):
        out = {}
        for name, s in srvs.items():
            r = http_req(s.port, "GET", s.path(path))
            self.assertEqual(r.status, 200, (name, path, r))
            out[name] = r
        return out

    def stats(self):
        srvs, tok = self.scenario()
        got = {k: parse_stats(r.text) for k, r in self.fetch(srvs, "/_stats").items()}
        return got["go"], got["ours"]

    def test_stats_values(self):
        go, ours = self.stats()
        for k in ("tunnels", "max_requests_per_tunnel", "max_clients_per_token",
                  "tunnel_token", "tunnel_req_pending", "tunnel_client_version"):
            self.assertEqual(ours.get(k), go.get(k), (k, go, ours))
        self.assertRegex(ours["tunnel_tun_addr"], ADDR)
        self.assertRegex(go["tunnel_tun_addr"], ADDR)
        float(ours["tunnel_idle_secs"])
        float(go["tunnel_idle_secs"])

    # deliberate: our local /_stats always has total_clients= (Go: only with
    # -max-clients-per-token > 0); an extra key=value line, which readers of
    # the Go layout skip
    def test_stats_keys_same(self):
        go, ours = self.stats()
        # reverse DNS / whois of the client: optional in both (the Go
        # server looks up "ip:port", which never resolves)
        optional = {"tunnel_tun_dns", "tunnel_tun_whois"}
        # ours only: total_clients, and the tunnel's protocol (v1 with Go)
        extra = {"total_clients", "tunnel_protocol"}
        self.assertEqual(set(ours) - optional - extra, set(go) - optional - extra,
                         "Go: %r\nours: %r" % (go, ours))
        for k in ("req_pending", "dead_tunnels"):
            self.assertEqual(ours.get(k), go.get(k), k)

    # deliberate: our tunnels= counts tokens with a live connection (what an
    # operator asks "is my client up?"; tests/e2e's wait_tunnels() relies on
    # it); the Go server counts tokens seen in the last 60 min. Requests for
    # such a token queue the same way in both (test_request_after_client_left).
    def test_stats_after_client_left(self):
        # Go: a token stays registered (tunnels=1) for up to 60 min after
        # its last client left; requests for it queue rather than 404
        be = self.backend()
        tok = make_token()
        srvs = {"go": self.go_server(), "ours": self.server()}
        for s in srvs.values():
            c = self.go_client(s, tok, server_url=be.url)
            self.assertTrue(wait_count(c, GO_CLI_READY_RX, 1, 15), c.describe())
            c.kill()
        # ours has seen its client go (a fixed pause stood in for that);
        # the Go server counts the token either way
        self.assertTrue(interop.wait_tunnels(srvs["ours"], 0), srvs["ours"].describe())
        got = {k: parse_stats(r.text) for k, r in self.fetch(srvs, "/_stats").items()}
        self.assertEqual(got["go"]["tunnels"], "1", got)
        self.assertEqual(got["ours"]["tunnels"], "0", got)

    def test_request_after_client_left(self):
        # a known token with no live connection: the request waits in the
        # queue for a client (none comes) and times out the same way
        be = self.backend()
        tok = make_token()
        srvs = {"go": self.go_server("-httptimeout", "3"),
                "ours": self.server("-httptimeout", "3")}
        for s in srvs.values():
            c = self.go_client(s, tok, server_url=be.url)
            self.assertTrue(wait_count(c, GO_CLI_READY_RX, 1, 15), c.describe())
            c.kill()
        time.sleep(1.0)
        got = {k: http_req(s.port, "GET", s.path("/_token/%s/echo" % tok), timeout=20)
               for k, s in srvs.items()}
        self.assertEqual(got["go"].status, 504, got)
        self.assertEqual((got["ours"].status, got["ours"].body.rstrip(b"\n")),
                         (got["go"].status, got["go"].body.rstrip(b"\n")), got)

    def test_stats_fields_with_client_limit(self):
        srvs, tok = self.scenario("-max-clients-per-token", "3", clients=2, traffic=False)
        got = {k: parse_stats(r.text) for k, r in self.fetch(srvs, "/_stats").items()}
        go, ours = got["go"], got["ours"]
        for k in ("max_clients_per_token", "total_clients", "token_clients_%s..." % tok[:8]):
            self.assertEqual(ours.get(k), go.get(k), (k, go, ours))
        self.assertEqual(go.get("total_clients"), "2")

    def monitoring(self):
        srvs, _ = self.scenario()
        got = {k: r.json() for k, r in self.fetch(srvs, "/admin/monitoring").items()}
        return got["go"], got["ours"]

    def test_monitoring_fields(self):
        go, ours = self.monitoring()
        self.assertEqual(sorted(ours), sorted(go))
        self.assertRegex(ours["timestamp"], RFC3339)
        for k in ("unique_tunnels", "tunnel_connections", "pending_requests"):
            self.assertEqual(ours[k], go[k], (k, go, ours))

    # gap: the Go server counts every tunneled request that ends >= 400 as
    # errored, not completed: a backend's 4xx and 5xx, and the 404 for an
    # unknown token too (wstunsrv.go payloadHandler: success = 200..399).
    # Ours counts them all as completed. errored_requests for tunneled 5xx
    # is being fixed on branch srvcompat; 4xx and unknown tokens may remain.
    def test_monitoring_counts(self):
        go, ours = self.monitoring()
        for k in ("completed_requests", "errored_requests"):
            self.assertEqual(ours[k], go[k], (k, go, ours))

    # gap: errored_requests does not count tunneled 5xx; fixed on branch
    # srvcompat
    def test_monitoring_errored_requests(self):
        # the Go server counts a tunneled 5xx answer as errored
        be = self.backend()
        tok = make_token()
        srvs = {"go": self.go_server(), "ours": self.server()}
        for s in srvs.values():
            c = self.go_client(s, tok, server_url=be.url)
            self.assertTrue(wait_count(c, GO_CLI_READY_RX, 1, 15), c.describe())
        time.sleep(0.3)
        for s in srvs.values():
            for code in (500, 503, 200):
                r = http_req(s.port, "GET", s.path("/_token/%s/status?code=%d" % (tok, code)))
                self.assertEqual(r.status, code)
        got = {k: r.json() for k, r in self.fetch(srvs, "/admin/monitoring").items()}
        self.assertEqual((got["ours"]["completed_requests"], got["ours"]["errored_requests"]),
                         (got["go"]["completed_requests"], got["go"]["errored_requests"]),
                         got)

    def auditing(self, paths):
        be = self.backend()
        tok = make_token()
        srvs = {"go": self.go_server(), "ours": self.server()}
        for s in srvs.values():
            c = self.go_client(s, tok, server_url=be.url)
            self.assertTrue(wait_count(c, GO_CLI_READY_RX, 1, 15), c.describe())
        self.assertTrue(wait_count(srvs["go"], GoServer.CONNECT_RX, 1, 10))
        self.assertTrue(interop.wait_tunnels(srvs["ours"], 1))
        for s in srvs.values():
            for p in paths:
                http_req(s.port, "GET", s.path("/_token/%s%s" % (tok, p)))
        got = {k: r.json() for k, r in self.fetch(srvs, "/admin/auditing").items()}
        go, ours = got["go"], got["ours"]
        self.assertEqual(sorted(ours), sorted(go))
        self.assertRegex(ours["timestamp"], RFC3339)
        self.assertEqual(sorted(ours["tunnels"]), sorted(go["tunnels"]))
        self.assertEqual(list(go["tunnels"]), [tok])
        return go["tunnels"][tok], ours["tunnels"][tok]

    def compare_tunnel(self, g, o):
        # ours only: the tunnel's protocol (always v1 with a Go client)
        self.assertEqual(o.get("protocol"), "v1")
        o = {k: v for k, v in o.items() if k != "protocol"}
        self.assertEqual(sorted(o), sorted(g), "Go: %r\nours: %r" % (g, o))
        # remote_name: the Go server looks up "ip:port", always "" there
        for k in ("token", "client_version", "active_connections", "pending_requests",
                  "remote_whois"):
            self.assertEqual(o.get(k), g.get(k), k)
        for k in ("last_activity", "last_success_time", "last_error_time"):
            if k in g:
                self.assertRegex(o[k], RFC3339, k)
        for k in ("remote_addr", "last_success_addr", "last_error_addr"):
            if k in g:
                self.assertRegex(o[k], ADDR, k)

    def test_auditing_fields_no_request(self):
        g, o = self.auditing(())
        self.compare_tunnel(g, o)
        self.assertNotIn("last_error_time", g)

    def test_auditing_fields_after_success(self):
        g, o = self.auditing(("/echo", "/status?code=302"))
        self.compare_tunnel(g, o)

    # gap: a tunneled 4xx/5xx answer is an error for the Go server
    # (last_error_time/addr set); ours records it as a success
    def test_auditing_fields_after_error(self):
        g, o = self.auditing(("/echo", "/status?code=404", "/status?code=500"))
        self.assertIn("last_error_time", g)
        self.compare_tunnel(g, o)

    def test_auditing_active_connection(self):
        # a request in flight shows in active_connections, same fields
        srvs, tok = self.scenario()
        bgs = [interop.harness.Background(
            http_req, s.port, "GET", s.path("/_token/%s/slow?ms=2500" % tok), timeout=20)
            for s in srvs.values()]
        got = {}

        def both_active():
            # both requests in flight (a fixed pause stood in for that)
            got.update((k, r.json()) for k, r in self.fetch(srvs, "/admin/auditing").items())
            return all(got[k]["tunnels"].get(tok, {}).get("active_connections")
                       for k in srvs)
        interop.wait_until(both_active, 10 * interop.TIME_SCALE, 0.1)
        for b in bgs:
            b.result(20)
        g = got["go"]["tunnels"][tok]["active_connections"]
        o = got["ours"]["tunnels"][tok]["active_connections"]
        self.assertEqual(len(g), 1, got)
        self.assertEqual(len(o), 1, got)
        self.assertEqual(sorted(o[0]), sorted(g[0]))
        for k in ("method", "uri"):
            self.assertEqual(o[0][k], g[0][k], k)
        self.assertRegex(o[0]["start_time"], RFC3339)


if __name__ == "__main__":
    interop.main()
