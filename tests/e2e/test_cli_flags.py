"""Command-line behaviour of both apps: help, version, bad flags and values
(one line on stderr naming the flag, exit 2), flag spellings."""

import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, SRV_BIN, CLI_BIN, get, free_port, make_token,  # noqa: E402
                     on_free_port, wait_until, main)


GO_BIN = os.environ.get("WSTUN_GO_WSTUNNEL", "/tmp/wstunnel-go-ref/wstunnel")
# `wstunnel cli -h` of the Go wstunnel 1.x
GO_CLI_FLAGS = ("certfile", "client-ports", "insecure", "log-level", "log-pretty", "logfile",
                "pidfile", "proxy", "regexp", "server", "statusfile", "timeout", "token",
                "tunnel")


def run(argv, timeout=10, env=None):
    full_env = dict(os.environ)
    full_env.pop("WSTUNNEL_PASSWORD", None)
    if env:
        full_env.update(env)
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                       env=full_env)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


class Common(E2ETestCase):
    def assertUsageError(self, argv, flag):
        rc, out, err = run(argv)
        self.assertEqual(rc, 2, "%s → rc %d, stderr %r" % (argv[1:], rc, err))
        lines = [ln for ln in err.splitlines() if ln.strip()]
        self.assertEqual(len(lines), 1, "expected one line on stderr for %s, got %r"
                         % (argv[1:], err))
        self.assertIn(flag, lines[0], "stderr does not name %r: %r" % (flag, lines[0]))


class ServerFlags(Common):
    def test_help(self):
        for h in ("-h", "--help"):
            rc, out, err = run([SRV_BIN, h])
            self.assertEqual(rc, 0, h)
            text = out + err
            for flag in ("port", "host", "base-path", "passwords", "max-requests-per-tunnel",
                         "max-clients-per-token", "wstimeout", "httptimeout", "log-level"):
                self.assertIn(flag, text, "usage does not mention %s" % flag)

    def test_version(self):
        rc, out, err = run([SRV_BIN, "--version"])
        self.assertEqual(rc, 0)
        self.assertRegex(out + err, r"\d+\.\d+\.\d+")

    def test_unknown_flag(self):
        self.assertUsageError([SRV_BIN, "-bogus-flag"], "bogus-flag")
        self.assertUsageError([SRV_BIN, "--bogus-flag", "1"], "bogus-flag")

    def test_bad_values(self):
        for flag, value in (("-port", "abc"), ("-port", "70000"), ("-port", "-1"),
                            ("-wstimeout", "x"), ("-httptimeout", "1.5.3"),
                            ("-max-requests-per-tunnel", "lots"),
                            ("-max-clients-per-token", "-3"),
                            ("-max-header-bytes", "big"), ("-max-body", "nope"),
                            ("-forget-after", "soon"), ("-log-level", "loud"),
                            ("-passwords", "no-colon-here")):
            with self.subTest(flag=flag, value=value):
                self.assertUsageError([SRV_BIN, "-host", "127.0.0.1", "-port", "0", flag, value],
                                      flag.lstrip("-"))

    def test_missing_value(self):
        self.assertUsageError([SRV_BIN, "-host", "127.0.0.1", "-port"], "port")

    def test_double_dash_flags(self):
        srv = self.server("--log-level", "info", "--max-requests-per-tunnel", "5")
        self.assertEqual(get(srv.port, "/_health_check").status, 200)

    def test_fixed_port(self):
        def start(port):
            return port, self.server(port=port)
        port, srv = on_free_port(start)
        self.assertEqual(srv.port, port)
        self.assertEqual(get(port, "/_health_check").body, b"WSTUNSRV RUNNING\n")

    def test_log_levels_accepted(self):
        for level in ("error", "warn", "info", "debug", "DEBUG"):
            with self.subTest(level=level):
                srv = self.server("-log-level", level, wait_listen=False)
                ok = wait_until(lambda: _health(srv.port), 10)
                self.assertTrue(ok, "server with -log-level %s did not serve" % level)
                srv.stop()

    def test_error_level_is_quieter_than_debug(self):
        def run_with(level):
            srv = self.server("-log-level", level, wait_listen=False)
            self.assertTrue(wait_until(lambda: _health(srv.port), 10))
            for _ in range(3):
                get(srv.port, "/_token/%s/x" % make_token())
            srv.stop()
            return len(srv.err_lines)
        self.assertLess(run_with("error"), run_with("debug"))

    def test_host_name(self):
        """-host takes a host name, as the Go server's does."""
        srv = self.server("-host", "localhost")  # the last -host wins
        self.assertEqual(get(srv.port, "/_health_check").status, 200)
        # not a host name (no resolver is asked: tests send no DNS query)
        self.assertUsageError([SRV_BIN, "-host", "0.0.0.0:80", "-port", "0"], "host")

    def test_go_only_flags_accepted(self):
        """Go command lines run unchanged: -robowhois and -log-pretty are
        accepted (and ignored)."""
        srv = self.server("-robowhois", "0123456789abcdef", "-log-pretty")
        self.assertEqual(get(srv.port, "/_health_check").status, 200)
        self.assertIn("-robowhois ignored", srv.stderr_text())
        srv = self.server("-log-pretty=false")
        self.assertEqual(get(srv.port, "/_health_check").status, 200)

    def test_port_in_use(self):
        srv = self.server()
        rc, out, err = run([SRV_BIN, "-host", "127.0.0.1", "-port", str(srv.port)], timeout=10)
        self.assertNotEqual(rc, 0)
        self.assertTrue(err.strip(), "no message for a port in use")


class ClientFlags(Common):
    def test_help(self):
        for h in ("-h", "--help"):
            rc, out, err = run([CLI_BIN, h])
            self.assertEqual(rc, 0, h)
            text = out + err
            for flag in ("tunnel", "token", "server", "regexp", "timeout", "log-level"):
                self.assertIn(flag, text, "usage does not mention %s" % flag)

    def test_version(self):
        rc, out, err = run([CLI_BIN, "--version"])
        self.assertEqual(rc, 0)
        self.assertRegex(out + err, r"\d+\.\d+\.\d+")

    def test_unknown_flag(self):
        self.assertUsageError([CLI_BIN, "-tunnel", "ws://127.0.0.1:1", "-token", make_token(),
                               "-nope"], "nope")

    def test_bad_values(self):
        tok = make_token()
        base = ["-server", "http://127.0.0.1:1"]
        cases = [
            (["-tunnel", "ws://127.0.0.1:1", "-token", tok, "-timeout", "abc"], "timeout"),
            (["-tunnel", "ws://127.0.0.1:1", "-token", "short"], "token"),
            (["-tunnel", "not a url", "-token", tok], "tunnel"),
            (["-tunnel", "ftp://127.0.0.1:1", "-token", tok], "tunnel"),
            (["-tunnel", "ws://127.0.0.1:1", "-token", tok, "-regexp", "(unclosed"], "regexp"),
            (["-tunnel", "ws://127.0.0.1:1", "-token", tok, "-log-level", "chatty"], "log-level"),
        ]
        for args, flag in cases:
            with self.subTest(args=args):
                self.assertUsageError([CLI_BIN] + args + base, flag)

    def test_missing_required(self):
        self.assertUsageError([CLI_BIN, "-token", make_token(), "-server", "http://127.0.0.1:1"],
                              "tunnel")
        self.assertUsageError([CLI_BIN, "-tunnel", "ws://127.0.0.1:1",
                               "-server", "http://127.0.0.1:1"], "token")

    def test_missing_value(self):
        self.assertUsageError([CLI_BIN, "-tunnel", "ws://127.0.0.1:1", "-token"], "token")

    def test_needs_server_or_regexp(self):
        # the Go client refuses to start without either ("must specify
        # internal server or server or regexp"); so do we, exit 2, one line
        argv = [CLI_BIN, "-tunnel", "ws://127.0.0.1:1", "-token", make_token()]
        for extra in ([], ["-server", ""], ["-regexp", ""]):
            with self.subTest(extra=extra):
                try:
                    rc, out, err = run(argv + extra, timeout=5)
                except subprocess.TimeoutExpired:
                    self.fail("wstuncli %s started without -server or -regexp" % extra)
                self.assertEqual(rc, 2, err)
                lines = [ln for ln in err.splitlines() if ln.strip()]
                self.assertEqual(len(lines), 1, err)
                self.assertIn("-server", lines[0])
                self.assertIn("-regexp", lines[0])
        # either one is enough
        for extra in (["-server", "http://127.0.0.1:1"], ["-regexp", "http://x:1"]):
            with self.subTest(extra=extra):
                with self.assertRaises(subprocess.TimeoutExpired):
                    run(argv + extra, timeout=1.5)

    def test_every_go_client_flag_is_known(self):
        # `wstunnel cli -h` of the Go tool, when it is here; else its list
        names = set(GO_CLI_FLAGS)
        if os.access(GO_BIN, os.X_OK):
            rc, out, err = run([GO_BIN, "cli", "-h"])
            names = set(re.findall(r"(?m)^  -([a-z-]+)", out + err))
            self.assertIn("log-pretty", names)
        rc, out, err = run([CLI_BIN, "-h"])
        ours = set(re.findall(r"(?m)^\s+--?([a-z-]+)", out + err))
        self.assertEqual(sorted(names - ours), [], "Go client flags we do not take")

    def test_go_command_line_runs_unchanged(self):
        # every Go client flag, spelled as Go takes them (bools as -f=True,
        # -timeout below the minimum is clamped, not refused)
        from harness import wait_tunnels, Proc
        d = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, d, True)
        be = self.backend()
        srv = self.server()
        tok = make_token()
        c = Proc([CLI_BIN, "-tunnel", srv.ws_url(), "-token", tok, "-server", be.url,
                  "-regexp", r"http://127\.0\.0\.1:[0-9]+", "-insecure=True",
                  "-log-pretty", "-log-level", "debug", "-timeout", "1",
                  "-logfile", os.path.join(d, "cli.log"),
                  "-pidfile", os.path.join(d, "cli.pid"),
                  "-statusfile", os.path.join(d, "cli.status"),
                  "-client-ports", "%d..%d" % (free_port(), 65535)], name="wstuncli")
        self._procs.append(c)
        self.addCleanup(self._checked_stop, c)
        self.assertTrue(wait_tunnels(srv, 1), c.describe())
        self.assertEqual(get(srv.port, "/_token/%s/name" % tok).body, b"backend")
        with open(os.path.join(d, "cli.pid")) as f:
            self.assertEqual(f.read().strip(), str(c.pid))
        with open(os.path.join(d, "cli.log")) as f:
            log = f.read()
        self.assertIn("-timeout 1 is out of range: using 3", log)
        self.assertNotIn('{"time"', log)  # -log-pretty: text lines

    def test_double_dash_flags(self):
        from harness import wait_tunnels, Proc, CLI_BIN as CB
        be = self.backend()
        srv = self.server()
        tok = make_token()
        c = Proc([CB, "--tunnel", srv.ws_url(), "--token", tok, "--server", be.url,
                  "--timeout", "10"], name="wstuncli")
        self._procs.append(c)
        self.addCleanup(self._checked_stop, c)
        self.assertTrue(wait_tunnels(srv, 1))
        self.assertEqual(get(srv.port, "/_token/%s/name" % tok).body, b"backend")


def _health(port):
    try:
        return get(port, "/_health_check", timeout=1).status == 200
    except OSError:
        return False



WSTUNNEL_BIN = os.path.join(os.path.dirname(SRV_BIN), "wstunnel")


class CompatEntryPoint(Common):
    """`wstunnel srv|cli` takes the Go tool's command lines unchanged."""

    def test_usage(self):
        rc, out, err = run([WSTUNNEL_BIN])
        self.assertEqual(rc, 2)
        self.assertIn("wstunnel srv", err)
        rc, out, err = run([WSTUNNEL_BIN, "--help"])
        self.assertEqual(rc, 0)
        self.assertIn("wstunnel cli", out)

    def test_version_subcommand(self):
        for arg in ("version", "-version", "--version"):
            rc, out, err = run([WSTUNNEL_BIN, arg])
            self.assertEqual(rc, 0, (arg, err))
            self.assertRegex(out, r"\d+\.\d+\.\d+", arg)

    def test_bad_flag_names_it(self):
        self.assertUsageError([WSTUNNEL_BIN, "srv", "-nope"], "nope")
        self.assertUsageError([WSTUNNEL_BIN, "cli", "-timeout", "x"], "timeout")

    def test_srv_and_cli_tunnel_a_request(self):
        from harness import Proc, HOST
        be = self.backend()
        srv = Proc([WSTUNNEL_BIN, "srv", "-host", HOST, "-port", "0"], name="wstunnel srv")
        self._procs.append(srv)
        self.addCleanup(self._checked_stop, srv)
        m = srv.wait_stderr(r"listening on 127\.0\.0\.1:(\d+)", 10)
        self.assertTrue(m, srv.describe())
        port = int(m.group(1))
        tok = make_token()
        cli = Proc([WSTUNNEL_BIN, "cli", "-tunnel", "ws://%s:%d" % (HOST, port),
                    "-token", tok, "-server", be.url], name="wstunnel cli")
        self._procs.append(cli)
        self.addCleanup(self._checked_stop, cli)
        ok = wait_until(lambda: "tunnels=1" in get(port, "/_stats").text, 10)
        self.assertTrue(ok, cli.describe())
        r = get(port, "/_token/%s/echo" % tok)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["method"], "GET")

if __name__ == "__main__":
    main()
