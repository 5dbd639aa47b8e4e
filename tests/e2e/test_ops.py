"""Operating both apps as daemons: -logfile (reopened on SIGUSR1 and SIGHUP
for logrotate; without it both signals are logged and ignored), -syslog, -log-format json, -pidfile, and the client's
-statusfile."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, SRV_BIN, CLI_BIN, HOST, TIME_SCALE, get,  # noqa: E402
                     dead_port, make_token, reserved_port, wait_tunnels, wait_until, main)

TEXT_LINE_RX = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (ERROR|WARN |INFO |DEBUG) ")
JSON_TIME_RX = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
RFC3339_RX = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
STATUS_KEYS = ["state", "server", "since", "last_error", "pid", "memory_bytes",
               "memory_blocks"]
GO_STATUS_RX = re.compile(r"\AUnix: (\d+)\nTime: (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)\n")


def run(argv, timeout=15):
    env = dict(os.environ)
    env.pop("WSTUNNEL_PASSWORD", None)
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                       env=env)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def read(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def read_status(path):
    """The status file as a list of (key, value), or None if absent."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    pairs = []
    for line in text.splitlines():
        if line.startswith(("Unix: ", "Time: ")):  # the Go client's lines
            continue
        k, sep, v = line.partition("=")
        pairs.append((k, v) if sep else (line, None))
    return pairs


def current_umask():
    old = os.umask(0)
    os.umask(old)
    return old


class OpsCase(E2ETestCase):
    def tmpdir(self):
        d = tempfile.mkdtemp(prefix="wstun-ops-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def wait_in_file(self, path, text, timeout=10):
        ok = wait_until(lambda: text in read(path), timeout)
        self.assertTrue(ok, "%r never appeared in %s; it holds:\n%s" % (text, path, read(path)))

    def assertNoLogOnStderr(self, proc):
        logged = [ln for ln in proc.err_lines if TEXT_LINE_RX.match(ln) or ln.startswith("{")]
        self.assertEqual(logged, [], "log lines on stderr of %s" % proc.name)

    def tunnel_with(self, srv_flags=(), cli_flags=()):
        """Backend + server (found by its port, its log may be elsewhere) +
        client for a fresh token, tunnel up."""
        be = self.backend()
        # port 0: the harness reads the port from /proc (a port picked
        # before the start could be taken by another process meanwhile)
        srv = self.server(*srv_flags, wait_listen=False)
        tok = make_token()
        cli = self.client(srv, tok, *cli_flags, server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1), "tunnel did not come up\n" + srv.describe()
                        + "\n" + cli.describe())
        return srv, cli, be, tok


# --------------------------------------------------------------------------

class LogFile(OpsCase):
    def test_server_lines_go_to_the_file(self):
        d = self.tmpdir()
        log = os.path.join(d, "srv.log")
        srv = self.server("-logfile", log, wait_listen=False)
        self.wait_in_file(log, "listening on 127.0.0.1:%d" % srv.port)
        self.assertEqual(os.stat(log).st_mode & 0o777, 0o640 & ~current_umask())
        lines = read(log).splitlines()
        self.assertTrue(lines)
        for ln in lines:
            self.assertRegex(ln, TEXT_LINE_RX)
        self.assertEqual(get(srv.port, "/_health_check").status, 200)
        self.assertNoLogOnStderr(srv)
        self.assertEqual(srv.stop(), 0)
        self.assertIn("SIGTERM: stopping", read(log))

    def test_appends_to_an_existing_file(self):
        d = self.tmpdir()
        log = os.path.join(d, "srv.log")
        with open(log, "w") as f:
            f.write("earlier line\n")
        srv = self.server("--logfile=" + log, wait_listen=False)
        self.wait_in_file(log, "listening on 127.0.0.1:%d" % srv.port)
        self.assertTrue(read(log).startswith("earlier line\n"))

    def _rotate(self, proc, log, sig, rotated, before_marker, after_marker, make_line):
        """mv log rotated; signal; a new log appears and gets the new lines
        while the rotated one keeps the old."""
        make_line(before_marker)
        self.wait_in_file(log, before_marker)
        os.rename(log, rotated)
        proc.send_signal(sig)
        self.assertTrue(wait_until(lambda: os.path.exists(log), 10),
                        "%s did not reopen %s after %s" % (proc.name, log, sig.name))
        make_line(after_marker)
        self.wait_in_file(log, after_marker)
        self.assertIn("log file reopened", read(log))
        old, new = read(rotated), read(log)
        self.assertIn(before_marker, old)
        self.assertNotIn(after_marker, old)
        self.assertNotIn(before_marker, new)
        self.assertEqual(os.stat(log).st_mode & 0o777, 0o640 & ~current_umask())

    def test_server_reopens_on_sigusr1_and_sighup(self):
        d = self.tmpdir()
        log = os.path.join(d, "srv.log")
        srv, cli, be, tok = self.tunnel_with(("-logfile", log, "-log-level", "debug"))
        self.wait_in_file(log, "listening on 127.0.0.1:%d" % srv.port)

        def make_line(marker):
            self.assertEqual(get(srv.port, "/_token/%s/%s" % (tok, marker)).status, 200)

        self._rotate(srv, log, signal.SIGUSR1, log + ".1", "before-usr1", "after-usr1", make_line)
        self.assertIn("listening on", read(log + ".1"))
        self._rotate(srv, log, signal.SIGHUP, log + ".2", "before-hup", "after-hup", make_line)
        self.assertIn("after-usr1", read(log + ".2"))
        self.assertNotIn("after-hup", read(log + ".1") + read(log + ".2"))
        self.assertTrue(srv.alive())
        self.assertNoLogOnStderr(srv)
        # the signal handles must not keep the loop alive
        self.assertEqual(srv.stop(), 0)
        self.assertIn("SIGTERM: stopping", read(log))

    def test_client_reopens_on_sigusr1_and_sighup(self):
        d = self.tmpdir()
        log = os.path.join(d, "cli.log")
        srv, cli, be, tok = self.tunnel_with(cli_flags=("-logfile", log, "-log-level", "debug"))

        def make_line(marker):
            self.assertEqual(get(srv.port, "/_token/%s/%s" % (tok, marker)).status, 200)

        self._rotate(cli, log, signal.SIGUSR1, log + ".1", "c-before-usr1", "c-after-usr1",
                     make_line)
        self._rotate(cli, log, signal.SIGHUP, log + ".2", "c-before-hup", "c-after-hup",
                     make_line)
        self.assertTrue(cli.alive())
        self.assertNoLogOnStderr(cli)
        self.assertEqual(cli.stop(), 0)
        self.assertIn("SIGTERM: stopping", read(log))

    def test_reopen_failure_keeps_the_old_file(self):
        d = self.tmpdir()
        sub = os.path.join(d, "sub")
        os.mkdir(sub)
        log = os.path.join(sub, "srv.log")
        srv = self.server("-logfile", log, wait_listen=False)
        self.wait_in_file(log, "listening on")
        os.rename(sub, os.path.join(d, "moved"))
        moved = os.path.join(d, "moved", "srv.log")
        srv.send_signal(signal.SIGUSR1)
        self.wait_in_file(moved, "cannot reopen log file")
        self.assertTrue(srv.alive())
        self.assertEqual(srv.stop(), 0)

    def test_without_logfile_signals_are_ignored(self):
        """No -logfile, no -config: SIGUSR1 and SIGHUP neither kill
        either program nor disturb the tunnel; each says so in the log."""
        srv, cli, be, tok = self.tunnel_with()
        expect = {
            (srv, signal.SIGUSR1): r"SIGUSR1: ignored \(no -logfile to reopen\)",
            (srv, signal.SIGHUP): r"SIGHUP: no -config file or TLS certificate to read "
                                  r"again; nothing reloaded",
            (cli, signal.SIGUSR1): r"SIGUSR1: ignored \(no -logfile to reopen\)",
            (cli, signal.SIGHUP): r"SIGHUP: no -config file to read again; nothing reloaded",
        }
        for (proc, sig), line in expect.items():
            with self.subTest(proc=proc.name, sig=sig.name):
                for _ in range(2):  # a second one is no different
                    proc.send_signal(sig)
                self.assertTrue(proc.wait_stderr(line, 10 * TIME_SCALE), proc.describe())
                self.assertTrue(proc.alive(), proc.describe())
                self.assertEqual(get(srv.port, "/_token/%s/x" % tok).status, 200)
        self.assertEqual(len(re.findall(r"tunnel open to", cli.stderr_text())), 1,
                         cli.describe())
        self.assertEqual(cli.stop(), 0)
        self.assertEqual(srv.stop(), 0)


class JsonFormat(OpsCase):
    def check_json_lines(self, lines, app):
        self.assertTrue(lines, "no log lines")
        objs = []
        for ln in lines:
            try:
                o = json.loads(ln)
            except ValueError as e:
                self.fail("not JSON (%s): %r" % (e, ln))
            keys = ["app", "level", "msg", "time"]
            if o.get("msg", "").startswith("access "):
                # the access log's lines carry the request's fields too
                # (tests/e2e/test_logs.py checks them)
                keys += [k for k in ("method", "path", "status", "bytes", "duration_ms",
                                     "remote", "token", "id", "backend") if k in o]
                self.assertIsInstance(o["status"], int, ln)
            self.assertEqual(sorted(o), sorted(keys), ln)
            self.assertRegex(o["time"], JSON_TIME_RX)
            self.assertIn(o["level"], ("error", "warn", "info", "debug"))
            self.assertEqual(o["app"], app)
            self.assertIsInstance(o["msg"], str)
            objs.append(o)
        return objs

    def test_server_and_client_on_stderr(self):
        be = self.backend()
        # the harness finds "listening on 127.0.0.1:PORT" inside the JSON line
        srv = self.server("-log-format", "json", "-log-level", "debug")
        tok = make_token()
        cli = self.client(srv, tok, "--log-format=json", "-log-level", "debug",
                          server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1))
        # quotes and backslashes in a logged URL
        path = '/_token/%s/q"uo\\te' % tok
        self.assertEqual(get(srv.port, path).status, 200)
        self.assertTrue(wait_until(lambda: any('q\\"uo\\\\te' in ln for ln in srv.err_lines), 10))
        self.assertTrue(wait_until(lambda: any('q\\"uo\\\\te' in ln for ln in cli.err_lines), 10))
        self.assertEqual(srv.stop(), 0)
        self.assertEqual(cli.stop(), 0)
        s_objs = self.check_json_lines(srv.err_lines, "wstunsrv")
        c_objs = self.check_json_lines(cli.err_lines, "wstuncli")
        self.assertIn("listening on 127.0.0.1:%d" % srv.port, [o["msg"] for o in s_objs])
        self.assertTrue(any('q"uo\\te' in o["msg"] for o in s_objs))
        self.assertTrue(any('q"uo\\te' in o["msg"] for o in c_objs))
        self.assertTrue(any(o["level"] == "debug" for o in s_objs))
        self.assertTrue(any(o["level"] == "debug" for o in c_objs))

    def test_control_characters_and_bad_utf8_escaped(self):
        from harness import ws_connect
        srv = self.server("-log-format", "json")
        # header bytes as sent: a tab, quotes, a backslash, two bytes that are
        # not UTF-8, then a valid UTF-8 "\u00e9" (C3 A9)
        version = "v\t1 \"x\" \\ \xff\xe9z \xc3\xa9"
        h = ws_connect(srv.port, token=make_token(),
                       extra_headers=[("X-Client-Version", version)])
        self.assertEqual(h.status, 101)
        self.addCleanup(h.ws.close)
        self.assertTrue(wait_until(lambda: any("new tunnel" in ln for ln in srv.err_lines), 10))
        line = [ln for ln in srv.err_lines if "new tunnel" in ln][0]
        self.assertNotIn("\t", line)
        msg = json.loads(line)["msg"]
        self.assertIn('version=v\t1 "x" \\ \ufffd\ufffdz \u00e9', msg)
        self.assertEqual(srv.stop(), 0)
        self.check_json_lines(srv.err_lines, "wstunsrv")

    def test_json_in_log_file(self):
        d = self.tmpdir()
        log = os.path.join(d, "srv.json")
        srv = self.server("-logfile", log, "-log-format", "json", wait_listen=False)
        self.wait_in_file(log, "listening on 127.0.0.1:%d" % srv.port)
        self.assertEqual(srv.stop(), 0)
        objs = self.check_json_lines(read(log).splitlines(), "wstunsrv")
        self.assertEqual(objs[0]["level"], "info")
        self.assertEqual(objs[-1]["msg"], "SIGTERM: stopping (in-flight requests finish)")

    def test_compat_entry_uses_the_program_names(self):
        wstunnel = os.path.join(os.path.dirname(SRV_BIN), "wstunnel")
        d = self.tmpdir()
        log = os.path.join(d, "srv.json")
        from harness import Proc
        p = Proc([wstunnel, "srv", "-host", HOST, "-port", "0", "-logfile", log,
                  "-log-format", "json"], name="wstunnel srv")
        self._procs.append(p)
        self.addCleanup(self._checked_stop, p)
        self.wait_in_file(log, "listening on")
        self.assertEqual(p.stop(), 0)
        objs = self.check_json_lines(read(log).splitlines(), "wstunsrv")
        self.assertTrue(objs)


class PidFile(OpsCase):
    def test_server_pidfile(self):
        d = self.tmpdir()
        pf = os.path.join(d, "srv.pid")
        srv = self.server("-pidfile", pf)
        self.assertTrue(wait_until(lambda: os.path.exists(pf), 10))
        self.assertEqual(read(pf), "%d\n" % srv.pid)
        self.assertEqual(srv.stop(signal.SIGTERM), 0)
        self.assertFalse(os.path.exists(pf), "pid file left after exit")
        self.assertEqual(os.listdir(d), [], "temporary files left behind")

    def test_client_pidfile_removed_after_sigint(self):
        d = self.tmpdir()
        pf = os.path.join(d, "cli.pid")
        srv, cli, be, tok = self.tunnel_with(cli_flags=("--pidfile", pf))
        self.assertTrue(wait_until(lambda: os.path.exists(pf), 10))
        self.assertEqual(read(pf), "%d\n" % cli.pid)
        self.assertEqual(cli.stop(signal.SIGINT), 0)
        self.assertFalse(os.path.exists(pf), "pid file left after exit")

    def test_pidfile_taken_over_is_left_alone(self):
        d = self.tmpdir()
        pf = os.path.join(d, "srv.pid")
        srv = self.server("-pidfile", pf)
        self.assertTrue(wait_until(lambda: read(pf) == "%d\n" % srv.pid, 10))
        with open(pf, "w") as f:
            f.write("1\n")
        self.assertEqual(srv.stop(), 0)
        self.assertEqual(read(pf), "1\n")

    def test_unwritable_pidfile(self):
        d = self.tmpdir()
        pf = os.path.join(d, "missing", "x.pid")
        tok = make_token()
        for argv in ([SRV_BIN, "-host", HOST, "-port", "0", "-pidfile", pf],
                     [CLI_BIN, "-tunnel", "ws://127.0.0.1:1", "-token", tok,
                      "-server", "http://127.0.0.1:1", "-pidfile", pf]):
            with self.subTest(prog=os.path.basename(argv[0])):
                rc, out, err = run(argv)
                self.assertEqual(rc, 1, err)
                self.assertIn("pidfile", err)
                self.assertNotRegex(err, r"AddressSanitizer|LeakSanitizer|runtime error")
                self.assertFalse(os.path.exists(pf))


class StatusFile(OpsCase):
    def wait_state(self, sf, state, timeout):
        last = [None]

        def check():
            st = read_status(sf)
            last[0] = st
            return st is not None and dict(st).get("state") == state
        ok = wait_until(check, timeout)
        self.assertTrue(ok, "status never became %s; last seen %r" % (state, last[0]))
        return dict(last[0])

    def test_follows_the_tunnel(self):
        d = self.tmpdir()
        sf = os.path.join(d, "cli.status")
        be = self.backend()
        # held all along: nobody takes the port while the server is down
        hold, port = reserved_port()
        self.addCleanup(hold.close)
        srv = self.server(port=port)
        tok = make_token()
        cli = self.client(srv, tok, "-statusfile", sf, server_url=be.url)
        st = self.wait_state(sf, "connected", 10)
        self.assertEqual([k for k, _ in read_status(sf)], STATUS_KEYS)
        self.assertEqual(st["server"], "ws://%s:%d" % (HOST, port))
        self.assertRegex(st["since"], RFC3339_RX)
        self.assertEqual(st["last_error"], "")
        self.assertEqual(st["pid"], str(cli.pid))
        self.assertTrue(wait_tunnels(srv, 1))

        srv.kill()
        st = self.wait_state(sf, "disconnected", 10)
        self.assertEqual([k for k, _ in read_status(sf)], STATUS_KEYS)
        self.assertNotEqual(st["last_error"], "")
        self.assertRegex(st["since"], RFC3339_RX)

        srv2 = self.server(port=port)
        st = self.wait_state(sf, "connected", 20)
        self.assertEqual(st["pid"], str(cli.pid))
        self.assertEqual(st["server"], "ws://%s:%d" % (HOST, port))
        self.assertTrue(wait_tunnels(srv2, 1))
        self.assertEqual(get(port, "/_token/%s/echo" % tok).status, 200)

        self.assertEqual(cli.stop(), 0)
        self.assertIsNone(read_status(sf), "status file left after exit")
        self.assertEqual(os.listdir(d), [], "temporary files left behind")

    def test_go_lines_on_every_pong(self):
        # the Go client rewrites its status file on each pong with
        # "Unix: <epoch>\nTime: <RFC 3339>\n"; monitoring made for it must
        # keep working: same first two lines, refreshed at each pong
        d = self.tmpdir()
        sf = os.path.join(d, "cli.status")
        srv, cli, be, tok = self.tunnel(cli_flags=("-statusfile", sf, "-timeout", "3"))
        seen = []

        def pong_lines():
            m = GO_STATUS_RX.match(read(sf))
            if m and (not seen or seen[-1] != m.group(1)):
                seen.append(m.group(1))
            return len(seen) >= 2
        self.assertTrue(wait_until(pong_lines, 10), "no Go lines refreshed: %r" % read(sf))
        m = GO_STATUS_RX.match(read(sf))
        self.assertLessEqual(abs(int(m.group(1)) - time.time()), 5)
        self.assertEqual(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(m.group(1)))),
                         m.group(2))
        st = dict(read_status(sf))
        self.assertEqual(st["state"], "connected")
        self.assertGreater(int(st["memory_bytes"]), 0)
        self.assertEqual(cli.stop(), 0)
        self.assertIsNone(read_status(sf))

    def test_userinfo_hidden_while_connecting(self):
        d = self.tmpdir()
        sf = os.path.join(d, "cli.status")
        hold, port = dead_port()  # nobody listens there
        self.addCleanup(hold.close)
        cli = self.client(port, make_token(), "-statusfile", sf,
                          tunnel_url="ws://someone:s3cr3t@%s:%d/base" % (HOST, port),
                          server_url="http://127.0.0.1:1")
        st = self.wait_state(sf, "disconnected", 10)
        self.assertEqual(st["server"], "ws://%s:%d/base" % (HOST, port))
        self.assertNotIn("s3cr3t", read(sf))
        self.assertNotIn("someone", read(sf))
        self.assertEqual(st["last_error"], "connection failed")
        self.assertEqual(st["pid"], str(cli.pid))
        self.assertEqual(cli.stop(), 0)
        self.assertIsNone(read_status(sf))

    def test_unwritable_statusfile(self):
        d = self.tmpdir()
        sf = os.path.join(d, "missing", "cli.status")
        rc, out, err = run([CLI_BIN, "-tunnel", "ws://127.0.0.1:1", "-token", make_token(),
                            "-server", "http://127.0.0.1:1", "-statusfile", sf])
        self.assertEqual(rc, 1, err)
        self.assertIn("statusfile", err)

    def test_server_has_no_statusfile(self):
        rc, out, err = run([SRV_BIN, "-host", HOST, "-port", "0", "-statusfile", "/tmp/x"])
        self.assertEqual(rc, 2)
        self.assertIn("statusfile", err)


class BadValues(OpsCase):
    def assertUsageError(self, argv, *flags):
        rc, out, err = run(argv)
        self.assertEqual(rc, 2, "%s → rc %d, stderr %r" % (argv[1:], rc, err))
        lines = [ln for ln in err.splitlines() if ln.strip()]
        self.assertEqual(len(lines), 1, "expected one line on stderr, got %r" % err)
        for flag in flags:
            self.assertIn(flag, lines[0])

    def test_bad_values_both_programs(self):
        d = self.tmpdir()
        missing = os.path.join(d, "no", "such", "dir", "x.log")
        both = os.path.join(d, "both.log")
        cases = [
            (["-syslog", "nosuch"], ("syslog", "nosuch")),
            (["-syslog="], ("syslog",)),
            (["-log-format", "xml"], ("log-format",)),
            (["--log-format=JSONX"], ("log-format",)),
            (["-logfile", missing], ("logfile", missing)),
            (["-syslog", "daemon", "-logfile", both], ("syslog", "logfile")),
        ]
        progs = {
            "wstunsrv": [SRV_BIN, "-host", HOST, "-port", "0"],
            "wstuncli": [CLI_BIN, "-tunnel", "ws://127.0.0.1:1", "-token", make_token(),
                         "-server", "http://127.0.0.1:1"],
        }
        for name, base in progs.items():
            for args, flags in cases:
                with self.subTest(prog=name, args=args):
                    self.assertUsageError(base + args, *flags)
        self.assertFalse(os.path.exists(both))


class Syslog(OpsCase):
    def test_syslog_daemon_serves(self):
        srv, cli, be, tok = self.tunnel_with(("-syslog", "daemon", "-log-level", "debug"),
                                             ("--syslog=local0", "-log-level", "debug"))
        r = get(srv.port, "/_token/%s/echo" % tok)
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["path"], "/echo")
        self.assertNoLogOnStderr(srv)
        self.assertNoLogOnStderr(cli)
        self.assertEqual(cli.stop(), 0)
        self.assertEqual(srv.stop(), 0)

    def test_syslog_json_with_pidfile(self):
        d = self.tmpdir()
        pf = os.path.join(d, "srv.pid")
        srv = self.server("-syslog", "user", "-log-format", "json", "-pidfile", pf,
                          wait_listen=False)
        self.assertEqual(get(srv.port, "/_health_check").status, 200)
        self.assertTrue(wait_until(lambda: os.path.exists(pf), 10))
        self.assertEqual(srv.stop(), 0)
        self.assertFalse(os.path.exists(pf))


if __name__ == "__main__":
    main()
