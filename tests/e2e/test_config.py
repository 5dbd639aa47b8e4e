"""-config files: one wstuncli serving three [tunnel NAME] sections to two
backends, flags over file values, -check-config (exit 0, or 2 with
FILE:LINE lines), password-file mode checks, a wstunsrv config with port,
host and passwords, and a bad -config path."""

import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, SRV_BIN, CLI_BIN, HOST, Proc, Server, get,  # noqa: E402
                     make_token, on_free_port, wait_tunnels, main)


def run(argv, timeout=15, env_extra=None):
    env = dict(os.environ)
    env.pop("WSTUNNEL_PASSWORD", None)
    env.update(env_extra or {})
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout,
                       env=env)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


class ConfigCase(E2ETestCase):
    def tmpdir(self):
        d = tempfile.mkdtemp(prefix="wstun-config-")
        self.addCleanup(shutil.rmtree, d, True)
        return d

    def write(self, d, name, text, mode=0o600):
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def cli_proc(self, *argv):
        p = Proc([CLI_BIN] + [str(a) for a in argv], name="wstuncli")
        self._procs.append(p)
        self.addCleanup(self._checked_stop, p)
        return p

    def srv_proc(self, *argv):
        """wstunsrv with only the given arguments; its port from the log."""
        p = Server([SRV_BIN] + [str(a) for a in argv], name="wstunsrv")
        self._procs.append(p)
        self.addCleanup(self._checked_stop, p)
        m = p.wait_stderr(r"listening on 127\.0\.0\.1:(\d+)", 10)
        self.assertTrue(m, p.describe())
        p.port = int(m.group(1))
        return p


class ClientSections(ConfigCase):
    def test_three_sections_one_process(self):
        be1, be2 = self.backend("one"), self.backend("two")
        srv = self.server("-passwords", "%s:s3cret" % ("p" * 20))
        toks = [make_token("web"), make_token("api"), "p" * 20]
        d = self.tmpdir()
        pwfile = self.write(d, "pw", "s3cret\n")
        conf = self.write(d, "cli.ini", """\
# one wstuncli, three services
tunnel = ws://%s:%d
log-level = info

[tunnel web]
token = %s
server = %s

[tunnel api]
token = %s
server = %s
timeout = 20

; the X-Host route, with a password from a file
[tunnel private]
token = %s
regexp = http://127\\.0\\.0\\.1:[0-9]+
password-file = %s
""" % (HOST, srv.port, toks[0], be1.url, toks[1], be2.url, toks[2], pwfile))
        rc, out, err = run([CLI_BIN, "-config", conf, "-check-config"])
        self.assertEqual((rc, err), (0, ""), out)
        self.assertIn("ok (3 tunnels)", out)
        cli = self.cli_proc("-config", conf)
        self.assertTrue(wait_tunnels(srv, 3), srv.describe() + cli.describe())
        self.assertEqual(get(srv.port, "/_token/%s/name" % toks[0]).body, b"one")
        self.assertEqual(get(srv.port, "/_token/%s/name" % toks[1]).body, b"two")
        r = get(srv.port, "/_token/%s/name" % toks[2], headers={"X-Host": be2.url})
        self.assertEqual(r.body, b"two")
        r = get(srv.port, "/_token/%s/name" % toks[2], headers={"X-Host": be1.url})
        self.assertEqual(r.body, b"one")
        # one process; each tunnel's log lines say which section
        for name in ("web", "api", "private"):
            self.assertRegex(cli.stderr_text(), r"INFO  \[%s\] " % name)
        self.assertEqual(cli.stop(), 0)

    def test_flags_override_the_file(self):
        be = self.backend("right")
        srv = self.server()
        tok = make_token()
        d = self.tmpdir()
        conf = self.write(d, "cli.ini", "tunnel = ws://%s:1\nserver = http://%s:1\n"
                          "token = %s\nlog-level = error\n" % (HOST, HOST, tok))
        # flags before and after -config both win
        cli = self.cli_proc("-tunnel", "ws://%s:%d" % (HOST, srv.port), "-config", conf,
                            "-server", be.url, "-log-level", "info")
        self.assertTrue(wait_tunnels(srv, 1), srv.describe() + cli.describe())
        self.assertEqual(get(srv.port, "/_token/%s/name" % tok).body, b"right")
        self.assertIn("INFO ", cli.stderr_text())  # -log-level info beat error

    def test_password_file_readable_by_others_is_refused(self):
        d = self.tmpdir()
        pw = self.write(d, "pw", "s3cret\n", mode=0o644)
        conf = self.write(d, "cli.ini", "tunnel = ws://%s:1\n[tunnel a]\ntoken = %s\n"
                          "server = http://%s:1\npassword-file = %s\n"
                          % (HOST, make_token(), HOST, pw))
        rc, out, err = run([CLI_BIN, "-config", conf])
        self.assertEqual(rc, 2)
        self.assertEqual(err, "%s:5: [tunnel a]: %s is readable by others (mode 644; "
                         "chmod 600 it)\n" % (conf, pw))
        # the flag too, one line naming it
        rc, out, err = run([CLI_BIN, "-tunnel", "ws://%s:1" % HOST, "-token", make_token(),
                            "-server", "http://%s:1" % HOST, "-password-file", pw])
        self.assertEqual(rc, 2)
        self.assertEqual(len(err.splitlines()), 1, err)
        self.assertIn("flag -password-file: %s is readable by others" % pw, err)

    def test_password_precedence(self):
        # -token tok:pw, then password-file, then $WSTUNNEL_PASSWORD
        tok = make_token()
        srv = self.server("-passwords", "%s:right" % tok)
        be = self.backend("b")
        d = self.tmpdir()
        pw = self.write(d, "pw", "right\n")
        env = dict(os.environ, WSTUNNEL_PASSWORD="wrong")
        cli = Proc([CLI_BIN, "-tunnel", "ws://%s:%d" % (HOST, srv.port), "-token", tok,
                    "-server", be.url, "-password-file", pw], env=env, name="wstuncli")
        self._procs.append(cli)
        self.addCleanup(self._checked_stop, cli)
        self.assertTrue(wait_tunnels(srv, 1), srv.describe() + cli.describe())


class CheckConfig(ConfigCase):
    def test_good_and_bad(self):
        d = self.tmpdir()
        good = self.write(d, "good.ini", "tunnel = wss://example.com\n"
                          "[tunnel a]\ntoken = %s\nserver = http://127.0.0.1:80\n"
                          % make_token())
        rc, out, err = run([CLI_BIN, "-config", good, "-check-config"])
        self.assertEqual((rc, err), (0, ""))
        bad = self.write(d, "bad.ini", """\
tunnel = ws://127.0.0.1:1
colour = blue
timeout = soon
[tunnel a]
server = http://127.0.0.1:1
[tunnel a]
token = %s
[svc b]
[tunnel c]
token = %s
""" % (make_token(), make_token()))
        rc, out, err = run([CLI_BIN, "-config", bad, "-check-config"])
        self.assertEqual(rc, 2)
        lines = err.splitlines()
        self.assertEqual(lines, [
            "%s:2: unknown key \"colour\"" % bad,
            "%s:3: timeout: invalid value \"soon\": not an integer" % bad,
            "%s:4: [tunnel a]: missing token" % bad,
            "%s:6: duplicate section [tunnel a] (first on line 4)" % bad,
            "%s:8: unknown section kind \"svc\" (want [tunnel NAME])" % bad,
            "%s:9: [tunnel c]: needs server or regexp (the backend http[s]://host:port, "
            "or the X-Host values allowed)" % bad,
        ])
        # without -check-config the same file stops the start, same lines
        rc2, _, err2 = run([CLI_BIN, "-config", bad])
        self.assertEqual((rc2, err2), (2, err))

    def test_server_check(self):
        d = self.tmpdir()
        bad = self.write(d, "srv.ini", "port = 70000\nhost = 127.0.0.1\nlog-level = loud\n"
                         "[tunnel x]\n")
        rc, out, err = run([SRV_BIN, "-config", bad, "-check-config"])
        self.assertEqual(rc, 2)
        self.assertEqual(err.splitlines(), [
            "%s:1: port: invalid value 70000: must be between 0 and 65535" % bad,
            "%s:3: log-level: must be one of error, warn, info, debug" % bad,
            "%s:4: unknown section [tunnel]: this program takes only top-level keys" % bad,
        ])

    def test_bad_config_path(self):
        for b in (CLI_BIN, SRV_BIN):
            rc, out, err = run([b, "-config", "/nonexistent/wstun.ini"])
            self.assertEqual(rc, 2)
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertIn("flag -config: cannot read /nonexistent/wstun.ini", err)


class ServerConfig(ConfigCase):
    def test_port_host_passwords(self):
        d = self.tmpdir()
        tok = make_token()
        pwf = self.write(d, "passwords", "%s:s3cret\n" % tok)

        def start(port):
            conf = self.write(d, "srv.ini", """\
# wstunsrv
port = %d
host = 127.0.0.1
passwords-file = %s
max-requests-per-tunnel = 5
""" % (port, pwf))
            rc, out, err = run([SRV_BIN, "-config", conf, "-check-config"])
            self.assertEqual((rc, err), (0, ""))
            return port, self.srv_proc("-config", conf)
        port, srv = on_free_port(start)
        self.assertEqual(srv.port, port)
        be = self.backend("b")
        # the wrong password is refused, the right one works
        wrong = self.client(srv, tok + ":nope", server_url=be.url)
        self.assertTrue(wrong.wait_stderr(r"401|[Ii]nvalid", 10), wrong.describe())
        wrong.stop()
        self.client(srv, tok + ":s3cret", server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1), srv.describe())
        self.assertEqual(get(srv.port, "/_token/%s/name" % tok).body, b"b")

    def test_flag_overrides_port(self):
        d = self.tmpdir()
        conf = self.write(d, "srv.ini", "port = 1\nhost = 127.0.0.1\n")
        port, srv = on_free_port(lambda port: (port, self.srv_proc("-port", port,
                                                                   "-config", conf)))
        self.assertEqual(srv.port, port)


if __name__ == "__main__":
    main()
