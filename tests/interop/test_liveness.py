#!/usr/bin/env python3
"""Interop liveness in both mixed pairings: client pings answered by the
other implementation's server, -wstimeout on the server and -timeout on the
client, a slow long response outliving -wstimeout, client and server
restarts. Timeouts are kept at their minimum (3 s server, 6 s client, so
pings every 2 s) to bound the run time."""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop  # noqa: E402
from interop import GoServer, count_lines, pairings, wait_count  # noqa: E402

# What a server prints when it drops a tunnel for silence.
GO_SRV_DROP_RX = r'"WS closing due to ping timeout"'


class Liveness:
    def connects(self, srv):
        """Tunnel connections the server has accepted so far."""
        if srv.impl == "go":
            return count_lines(srv, GoServer.CONNECT_RX)
        return None

    def assertNoReconnect(self, srv, cli):
        self.assertEqual(count_lines(cli, self.ready_rx()), 1,
                         "the tunnel was re-opened\n" + cli.describe() + "\n" + srv.describe())
        if srv.impl == "go":
            self.assertEqual(count_lines(srv, GoServer.CONNECT_RX), 1, srv.describe())
            self.assertEqual(count_lines(srv, GO_SRV_DROP_RX), 0, srv.describe())

    def test_idle_tunnel_kept_by_pings(self):
        # client pings every 2 s; the server must answer them (else the
        # client drops after 6 s) and count them (else it drops after 3 s)
        srv, cli, _, tok = self.pair("-wstimeout", "3", cli_flags=("-timeout", "6"))
        time.sleep(9)
        self.assertNoReconnect(srv, cli)
        self.assertStatus(self.tget(srv, tok, "/echo"), 200)

    def test_slow_response_longer_than_wstimeout(self):
        # The Go server resets its -wstimeout timer on pings only, so the
        # client must keep pinging while a response is streaming.
        srv, cli, _, tok = self.pair("-wstimeout", "3", cli_flags=("-timeout", "6"))
        t0 = time.monotonic()
        r = self.tget(srv, tok, "/drip?n=10&ms=700", timeout=30)
        self.assertStatus(r, 200)
        self.assertGreater(time.monotonic() - t0, 5.5)
        self.assertEqual(r.body, b"".join(b"tick%d\n" % i for i in range(10)))
        r = self.tget(srv, tok, "/slow?ms=4500", timeout=30)
        self.assertStatus(r, 200)
        self.assertNoReconnect(srv, cli)

    def test_silent_client_is_dropped_and_comes_back(self):
        # client pinging every 10 s (-timeout 30) against -wstimeout 3: the
        # server drops the tunnel; the client re-opens it and requests work.
        srv, cli, _, tok = self.pair("-wstimeout", "3")
        self.wait_ready(cli, 2, timeout=40)
        r = self.tget(srv, tok, "/echo")
        self.assertStatus(r, 200)

    def test_client_restart(self):
        srv, cli, be, tok = self.pair()
        self.assertStatus(self.tget(srv, tok, "/echo"), 200)
        cli.kill()
        cli2 = self.any_client(srv, tok, server_url=be.url)
        self.wait_ready(cli2)
        # the server may still hold the dead connection for a moment
        ok = interop.wait_until(
            lambda: _ok(interop.try_req(self.tget, srv, tok, "/echo", timeout=5)), 20)
        self.assertTrue(ok, srv.describe())

    def test_server_restart(self):
        srv, cli, be, tok = self.pair()
        self.assertStatus(self.tget(srv, tok, "/echo"), 200)
        port = srv.port
        if srv.impl == "go":
            srv.stop(signal.SIGTERM, 3)
            srv2 = self.go_server(port=port)
        else:
            self._checked_stop(srv)
            srv2 = self.server(port=port)
            srv2.impl = "ours"
        # the Go client waits >= 10 s before re-dialing
        self.wait_ready(cli, 2, timeout=40)
        ok = interop.wait_until(
            lambda: _ok(interop.try_req(self.tget, srv2, tok, "/echo", timeout=5)), 20)
        self.assertTrue(ok, srv2.describe() + "\n" + cli.describe())

    def test_client_timeout_on_frozen_server(self):
        # the server stops answering pings (SIGSTOP): the client gives the
        # tunnel up after -timeout and re-opens it once the server is back
        srv, cli, _, tok = self.pair(cli_flags=("-timeout", "6"))
        srv.send_signal(signal.SIGSTOP)
        try:
            time.sleep(10)
        finally:
            srv.send_signal(signal.SIGCONT)
        self.wait_ready(cli, 2, timeout=40)
        ok = interop.wait_until(
            lambda: _ok(interop.try_req(self.tget, srv, tok, "/echo", timeout=5)), 20)
        self.assertTrue(ok, srv.describe() + "\n" + cli.describe())


def _ok(r):
    return r is not None and r.status == 200 and json.loads(r.body)["path"] == "/echo"


Liveness_GoSrv_OurCli, Liveness_OurSrv_GoCli = pairings(Liveness)

if __name__ == "__main__":
    interop.main()
