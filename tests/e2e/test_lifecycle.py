"""Processes coming and going: restarts, reconnects, graceful stops,
forgotten tokens, liveness timeouts."""

import os
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, HOST, TIME_SCALE, Background, get,  # noqa: E402
                     listening_ports, make_token, reserved_port, wait_tunnels, wait_until,
                     ws_connect, stats_tunnel_addr, stats_tunnels, main)


class Restarts(E2ETestCase):
    def test_client_killed_and_restarted(self):
        srv, cli, be, tok = self.tunnel()
        self.assertStatus(get(srv.port, "/_token/%s/echo" % tok), 200)
        cli.kill()
        self.assertTrue(wait_tunnels(srv, 0), "server did not notice the dead client")
        self.client(srv, tok, server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1))
        r = get(srv.port, "/_token/%s/echo?again=1" % tok)
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["path"], "/echo?again=1")

    def test_requests_wait_for_reconnecting_client(self):
        srv, cli, be, tok = self.tunnel()
        cli.kill()
        self.assertTrue(wait_tunnels(srv, 0))
        pending = Background(get, srv.port, "/_token/%s/echo?waited=1" % tok, timeout=20)
        time.sleep(1.0)
        self.assertFalse(pending.done(), "request for a momentarily-down tunnel was answered: %r"
                         % (pending.result(0) if pending.done() else None,))
        self.client(srv, tok, server_url=be.url)
        r = pending.result(15)
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["path"], "/echo?waited=1")

    def test_server_killed_and_restarted_same_port(self):
        # held all along: nobody takes the port while the server is down
        hold, port = reserved_port()
        self.addCleanup(hold.close)
        be = self.backend()
        srv = self.server(port=port)
        tok = make_token()
        cli = self.client(srv, tok, server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1), cli.describe())
        self.assertStatus(get(port, "/_token/%s/echo" % tok), 200)
        srv.kill()
        time.sleep(0.5)
        srv2 = self.server(port=port)
        t0 = time.monotonic()
        self.assertTrue(wait_tunnels(srv2, 1, timeout=10), "client did not reconnect on its own")
        self.assertLess(time.monotonic() - t0, 8.0)
        r = get(port, "/_token/%s/echo?after=restart" % tok)
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["path"], "/echo?after=restart")
        self.assertTrue(cli.alive())

    def test_client_started_before_server(self):
        be = self.backend()
        hold, port = reserved_port()  # refused until the server starts there
        self.addCleanup(hold.close)
        tok = make_token()
        cli = self.client(port, tok, server_url=be.url)
        time.sleep(1.5)
        self.assertTrue(cli.alive(), "client gave up when the server was not there yet")
        srv = self.server(port=port)
        hold.close()
        self.assertTrue(wait_tunnels(srv, 1, timeout=10))
        self.assertStatus(get(port, "/_token/%s/echo" % tok), 200)


class GracefulStop(E2ETestCase):
    def test_server_sigterm_finishes_inflight(self):
        srv, cli, be, tok = self.tunnel()
        slow = Background(get, srv.port, "/_token/%s/slow?ms=3000" % tok, timeout=20)
        # in flight: the backend has it (a fixed pause was not always
        # enough on a loaded machine, and the SIGTERM then came first)
        self.assertTrue(wait_until(lambda: be.count() >= 1, 10 * TIME_SCALE),
                        "the slow request never reached the backend")
        srv.send_signal(signal.SIGTERM)
        self.assertTrue(wait_until(lambda: not listening_ports(srv.pid), 2 * TIME_SCALE),
                        "still listening after SIGTERM")
        # no longer accepting
        with self.assertRaises(OSError):
            s = socket.create_connection((HOST, srv.port), timeout=2)
            try:
                s.sendall(b"GET /_health_check HTTP/1.1\r\nHost: x\r\n\r\n")
                s.settimeout(2)
                data = s.recv(100)
                if not data:
                    raise ConnectionResetError("closed")
            finally:
                s.close()
        r = slow.result(15)
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["path"], "/slow?ms=3000")
        self.assertEqual(srv.wait(12), 0, "server exit code after SIGTERM")

    def test_server_sigterm_idle_exits_fast(self):
        srv, cli, be, tok = self.tunnel()
        t0 = time.monotonic()
        srv.send_signal(signal.SIGTERM)
        self.assertEqual(srv.wait(10), 0)
        self.assertLess(time.monotonic() - t0, 3.0)

    def test_server_sigint_exits_zero(self):
        srv = self.server()
        srv.send_signal(signal.SIGINT)
        self.assertEqual(srv.wait(10), 0)

    def test_client_sigterm_finishes_inflight(self):
        srv, cli, be, tok = self.tunnel()
        slow = Background(get, srv.port, "/_token/%s/slow?ms=2000" % tok, timeout=20)
        self.assertTrue(wait_until(lambda: be.count() >= 1, 10 * TIME_SCALE),
                        "the slow request never reached the backend")
        cli.send_signal(signal.SIGTERM)
        r = slow.result(15)
        self.assertStatus(r, 200)
        self.assertEqual(r.json()["path"], "/slow?ms=2000")
        self.assertEqual(cli.wait(12), 0, "client exit code after SIGTERM")
        self.assertTrue(wait_tunnels(srv, 0))

    def test_client_sigint_exits_zero(self):
        srv, cli, be, tok = self.tunnel()
        t0 = time.monotonic()
        cli.send_signal(signal.SIGINT)
        self.assertEqual(cli.wait(10), 0)
        self.assertLess(time.monotonic() - t0, 3.0)


class Forget(E2ETestCase):
    def test_token_forgotten_after_forget_after(self):
        srv, cli, be, tok = self.tunnel("-forget-after", "2", "-httptimeout", "1")
        self.assertEqual(cli.stop(), 0)
        t0 = time.monotonic()
        self.assertTrue(wait_tunnels(srv, 0))
        # still known: the request waits for the client, then times out
        r = get(srv.port, "/_token/%s/x" % tok, timeout=10)
        t1 = time.monotonic()
        self.assertLess(t1 - t0, 2.0, "test too slow to check before forgetting")
        self.assertStatus(r, 504)
        self.assertBody(r, "Tunnel timeout")
        # forgotten ~2 s after the client left: then 404, at once. The
        # server looks for forgotten tokens once a second, so that is 2 to
        # 3 s after: a request sent before then waits in the queue until
        # the sweep answers it 404 (up to 1 s later, not "at once")
        time.sleep(max(0.0, t0 + 3.2 - time.monotonic()))
        deadline = t0 + 7.0
        while True:
            q0 = time.monotonic()
            r = get(srv.port, "/_token/%s/x" % tok, timeout=10)
            if r.status == 404 or time.monotonic() > deadline:
                break
            self.assertStatus(r, 504)
            time.sleep(0.3)
        self.assertStatus(r, 404)
        self.assertBody(r, "Tunnel not found (or not seen in a long time)")
        self.assertLess(time.monotonic() - q0, 0.8, "404 for a forgotten token should be immediate")


class Liveness(E2ETestCase):
    def test_silent_tunnel_is_closed_after_wstimeout(self):
        srv = self.server("-wstimeout", "3")
        hs = ws_connect(srv.port, make_token())
        self.addCleanup(lambda: hs.ws and hs.ws.close())
        self.assertEqual(hs.status, 101)
        t0 = time.monotonic()
        self.assertTrue(hs.ws.wait_closed(8, auto_pong=False), "silent tunnel never closed")
        dt = time.monotonic() - t0
        self.assertGreater(dt, 2.5, "closed after %.2fs, before -wstimeout" % dt)
        self.assertLess(dt, 6.5)
        self.assertTrue(wait_tunnels(srv, 0))

    def test_pinging_tunnel_stays_open(self):
        srv = self.server("-wstimeout", "3")
        hs = ws_connect(srv.port, make_token())
        self.addCleanup(lambda: hs.ws and hs.ws.close())
        self.assertEqual(hs.status, 101)
        t_end = time.monotonic() + 5.5
        while time.monotonic() < t_end:
            hs.ws.ping(b"k")
            self.assertFalse(hs.ws.wait_closed(1.0, auto_pong=True),
                             "pinging tunnel was closed")
        self.assertTrue(wait_tunnels(srv, 1))

    def test_wstimeout_clamped_to_3(self):
        srv = self.server("-wstimeout", "1")
        hs = ws_connect(srv.port, make_token())
        self.addCleanup(lambda: hs.ws and hs.ws.close())
        self.assertEqual(hs.status, 101)
        t0 = time.monotonic()
        self.assertTrue(hs.ws.wait_closed(8))
        self.assertGreater(time.monotonic() - t0, 2.5, "-wstimeout 1 was not clamped to 3")

    def test_real_client_keeps_tunnel_alive(self):
        srv, cli, be, tok = self.tunnel("-wstimeout", "3", cli_flags=("-timeout", "3"))
        # the client pings every second, so the server (wstimeout 3) must
        # never drop it; every request is answered at once and the token
        # stays registered throughout
        t_end = time.monotonic() + 7
        while time.monotonic() < t_end:
            t0 = time.monotonic()
            r = get(srv.port, "/_token/%s/echo" % tok, timeout=5)
            self.assertStatus(r, 200)
            self.assertLess(time.monotonic() - t0, 1.0)
            self.assertEqual(stats_tunnels(srv), 1)
            time.sleep(0.25)
        self.assertTrue(cli.alive())


    def test_server_stopped_longer_than_wstimeout_keeps_a_pinging_tunnel(self):
        """A server that did not run for longer than -wstimeout (SIGSTOP, a
        paused VM) finds the peer's pings waiting in its socket: the time
        it was away is not the peer's silence. Its liveness timer runs
        before it reads them, so it must not judge by the clock alone."""
        srv = self.server("-wstimeout", "3")
        hs = ws_connect(srv.port, make_token())
        self.addCleanup(lambda: hs.ws and hs.ws.close())
        self.assertEqual(hs.status, 101)
        srv.send_signal(signal.SIGSTOP)
        try:
            t_end = time.monotonic() + 4.5
            while time.monotonic() < t_end:
                hs.ws.ping(b"k")
                time.sleep(0.5)
        finally:
            srv.send_signal(signal.SIGCONT)
        self.assertFalse(hs.ws.wait_closed(2.0, auto_pong=True),
                         "the tunnel was closed once the server ran again")
        self.assertTrue(hs.ws.pongs, "the pings sent meanwhile were not answered")
        self.assertTrue(wait_tunnels(srv, 1))

    def test_client_stopped_longer_than_its_timeout_keeps_its_tunnel(self):
        """The same on the client's side: it pings every second (-timeout
        3), is stopped for 4.5 s, and the server's pong for its last ping
        waits in its socket. The server (-wstimeout 8) saw 5.5 s of silence
        at most: nobody has reason to drop the tunnel."""
        srv, cli, be, tok = self.tunnel("-wstimeout", "8", cli_flags=("-timeout", "3"))
        before = stats_tunnel_addr(srv)
        self.assertTrue(before)
        cli.send_signal(signal.SIGSTOP)
        try:
            time.sleep(4.5)
        finally:
            cli.send_signal(signal.SIGCONT)
        self.assertStatus(get(srv.port, "/_token/%s/echo" % tok, timeout=10), 200)
        self.assertIsNone(cli.wait_stderr("nothing heard", timeout=1.0),
                          "the client dropped its tunnel once it ran again")
        self.assertEqual(stats_tunnel_addr(srv), before, "the client dialed a new tunnel")
        self.assertTrue(cli.alive())


class ClientPorts(E2ETestCase):
    """-client-ports: the tunnel leaves from a chosen local port."""

    def test_tunnel_uses_a_listed_port(self):
        from harness import free_port
        srv = self.server()
        be = self.backend()
        busy = socket.socket()
        busy.bind(("0.0.0.0", 0))  # taken: the client must skip it
        self.addCleanup(busy.close)
        taken = busy.getsockname()[1]
        # `want` cannot be reserved: the client binds it without
        # SO_REUSEADDR (so that a port in use is skipped), and any other
        # process's outgoing connection may take it before the client
        # starts. The client then says so, and the test takes another one.
        for attempt in range(5):
            want = free_port()
            cli = self.client(srv, make_token(), "-client-ports", "%d,%d" % (taken, want),
                              server_url=be.url)
            self.assertTrue(wait_until(lambda: stats_tunnels(srv) == 1
                                       or "no free port in -client-ports" in cli.stderr_text(),
                                       10 * TIME_SCALE), cli.describe())
            if stats_tunnels(srv) == 1 or attempt == 4:
                break
            self.assertEqual(cli.stop(), 0, cli.describe())
        self.assertTrue(wait_tunnels(srv, 1), cli.describe())
        addr = stats_tunnel_addr(srv)
        self.assertRegex(addr or "", r"^127\.0\.0\.1:\d+$")
        self.assertEqual(int(addr.rsplit(":", 1)[1]), want)

    def test_bad_lists_are_usage_errors(self):
        import subprocess
        from harness import CLI_BIN
        for bad in ("80000", "9000..8000", "8000...8100", "abc", "0", ",", "8000..", "..9"):
            p = subprocess.run([CLI_BIN, "-tunnel", "ws://127.0.0.1:1", "-token",
                                make_token(), "-server", "http://127.0.0.1:1",
                                "-client-ports", bad],
                               capture_output=True, timeout=10)
            self.assertEqual(p.returncode, 2, bad)
            self.assertIn(b"client-ports", p.stderr, bad)

if __name__ == "__main__":
    main()
