"""Secrets: the password prompt of `-token TOKEN:` on a real terminal (a
pty: nothing typed is echoed, the tunnel authenticates, Ctrl-C leaves the
terminal as it was) and its one-line error without a terminal; systemd
credentials (cred:NAME in $CREDENTIALS_DIRECTORY) for the server's TLS
files, passwords and admin token and the client's password, CA file and
-config, read by an unprivileged user who could not read root's 0600
files; the modes a credential may have (0400, 0440) and may not."""

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, SRV_BIN, CLI_BIN, HOST, TIME_SCALE, Proc,  # noqa: E402
                     Server, get, make_token, wait_tunnels, main)
import tlsutil  # noqa: E402
from tlsutil import PKI, client_ctx, https_req, wait_https_tunnels  # noqa: E402
import credutil  # noqa: E402
from credutil import Credentials, as_service_user  # noqa: E402

SETSID = shutil.which("setsid")


def run(argv, timeout=15, env_extra=None, stdin=subprocess.DEVNULL):
    env = dict(os.environ)
    env.pop("WSTUNNEL_PASSWORD", None)
    env.pop("CREDENTIALS_DIRECTORY", None)
    env.update(env_extra or {})
    p = subprocess.run(argv, stdin=stdin, capture_output=True, timeout=timeout, env=env)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


class PtyProc:
    """A program whose controlling terminal, stdin, stdout and stderr are a
    new pty (setsid -c), as in an interactive shell. Everything it writes
    to the terminal is kept in .seen; .slave stays open here to look at
    the terminal's modes."""

    def __init__(self, argv, env):
        self.master, self.slave = os.openpty()
        full_env = dict(os.environ)
        full_env.pop("WSTUNNEL_PASSWORD", None)
        full_env.update(env or {})
        # setsid -c: a new session with this pty as its controlling
        # terminal; it execs in place (we are no process group leader)
        self.proc = subprocess.Popen([SETSID, "-c"] + list(argv), stdin=self.slave,
                                     stdout=self.slave, stderr=self.slave, env=full_env,
                                     close_fds=True)
        self._lock = threading.Condition()
        self.seen = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while True:
            try:
                r, _, _ = select.select([self.master], [], [], 0.2)
                if not r:
                    if self.proc.poll() is not None and self._closed():
                        return
                    continue
                data = os.read(self.master, 4096)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.seen += data
                self._lock.notify_all()

    def _closed(self):
        return getattr(self, "closed", False)

    def text(self):
        with self._lock:
            return self.seen.decode("utf-8", "replace")

    def wait_for(self, pattern, timeout=10.0):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout * TIME_SCALE
        with self._lock:
            while True:
                m = rx.search(self.seen.decode("utf-8", "replace"))
                if m:
                    return m
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._lock.wait(min(left, 0.2))

    def type(self, text):
        os.write(self.master, text.encode())

    def echo_on(self):
        return bool(termios.tcgetattr(self.slave)[3] & termios.ECHO)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(6 * TIME_SCALE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.closed = True
        self._reader.join(2)
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        return self.proc.returncode


class Prompt(E2ETestCase):
    def pty_client(self, srv, token, *flags, env=None):
        argv = [CLI_BIN, "-tunnel", srv.ws_url(), "-token", token] + list(flags)
        p = PtyProc(argv, env)
        self.addCleanup(p.stop)
        return p

    def test_no_terminal_one_line_naming_the_flag(self):
        tok = make_token()
        rc, out, err = run([CLI_BIN, "-tunnel", "ws://%s:1" % HOST, "-token", tok + ":",
                            "-server", "http://%s:1" % HOST])
        self.assertEqual(rc, 2, err)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertTrue(err.startswith("wstuncli: flag -token: %s...: nothing after ':' and "
                                       "standard input is not a terminal" % tok[:8]), err)
        self.assertIn("-password-file", err)
        self.assertNotIn(tok, err)  # an 8-character prefix only

    def test_no_terminal_in_a_section_names_its_line(self):
        d = tempfile.mkdtemp(prefix="wstun-secrets.")
        self.addCleanup(shutil.rmtree, d, True)
        conf = os.path.join(d, "cli.conf")
        tok = make_token()
        with open(conf, "w") as f:
            f.write("tunnel = ws://%s:1\nserver = http://%s:1\n\n[tunnel web]\ntoken = %s:\n"
                    % (HOST, HOST, tok))
        rc, out, err = run([CLI_BIN, "-config", conf, "-check-config"])
        self.assertEqual(rc, 0, err)  # asking is for the start, not the check
        rc, out, err = run([CLI_BIN, "-config", conf])
        self.assertEqual(rc, 2, err)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertTrue(err.startswith("%s:4: [tunnel web]: token: %s...: nothing after ':'"
                                       % (conf, tok[:8])), err)

    def test_other_sources_come_before_the_prompt(self):
        # "tok:" asks only when nothing else gives the password
        be = self.backend()
        tok = make_token()
        srv = self.server("-passwords", "%s:from-env" % tok)
        cli = self.client(srv, tok + ":", server_url=be.url,
                          env={"WSTUNNEL_PASSWORD": "from-env"})
        self.assertTrue(wait_tunnels(srv, 1), cli.describe())
        self.assertEqual(get(srv.port, "/_token/%s/name" % tok).body, b"backend")

    @unittest.skipUnless(SETSID, "setsid(1) (util-linux) is not installed")
    def test_prompt_on_a_terminal_without_echo(self):
        be = self.backend()
        tok = make_token()
        password = "pty-s3cret-Zq8"
        srv = self.server("-passwords", "%s:%s" % (tok, password))
        cli = self.pty_client(srv, tok + ":", "-server", be.url)
        self.assertTrue(cli.wait_for(r"Password for token %s\.\.\.: $" % tok[:8]),
                        "no prompt; the terminal showed: %r" % cli.text())
        self.assertFalse(cli.echo_on(), "echo is on at the prompt")
        cli.type(password[:5])
        cli.type(password[5:] + "\n")
        self.assertTrue(wait_tunnels(srv, 1), "tunnel did not come up: %r" % cli.text())
        r = get(srv.port, "/_token/%s/name" % tok)
        self.assertEqual((r.status, r.body), (200, b"backend"))
        self.assertTrue(cli.echo_on(), "echo not restored after the prompt")
        self.assertIsNotNone(cli.wait_for(r"tunnel open to"), cli.text())
        self.assertNotIn(password[:5], cli.text(), "the password was echoed")
        self.assertEqual(cli.stop(), 0, cli.text())

    @unittest.skipUnless(SETSID, "setsid(1) (util-linux) is not installed")
    def test_ctrl_c_at_the_prompt_restores_the_terminal(self):
        tok = make_token()
        cli = PtyProc([CLI_BIN, "-tunnel", "ws://%s:1" % HOST, "-token", tok + ":",
                       "-server", "http://%s:1" % HOST], None)
        self.addCleanup(cli.stop)
        self.assertTrue(cli.wait_for(r"Password for token"), cli.text())
        cli.type("half")
        self.assertFalse(cli.echo_on())
        cli.type("\x03")  # ^C: the terminal sends SIGINT
        try:
            rc = cli.proc.wait(10 * TIME_SCALE)
        except subprocess.TimeoutExpired:
            rc = None
        self.assertEqual(rc, -signal.SIGINT, cli.text())
        self.assertTrue(cli.echo_on(), "echo left off after ^C")
        self.assertNotIn("half", cli.text())

    @unittest.skipUnless(SETSID, "setsid(1) (util-linux) is not installed")
    def test_an_empty_line_is_refused(self):
        tok = make_token()
        cli = PtyProc([CLI_BIN, "-tunnel", "ws://%s:1" % HOST, "-token", tok + ":",
                       "-server", "http://%s:1" % HOST], None)
        self.addCleanup(cli.stop)
        self.assertTrue(cli.wait_for(r"Password for token"), cli.text())
        cli.type("\n")
        try:
            rc = cli.proc.wait(10 * TIME_SCALE)
        except subprocess.TimeoutExpired:
            rc = None
        self.assertEqual(rc, 2, cli.text())
        # the pty's last bytes may still be on their way to the reader
        self.assertTrue(cli.wait_for(
            re.escape("wstuncli: flag -token: %s...: no password entered"
                      % tok[:8])), cli.text())
        self.assertTrue(cli.echo_on())


C = None  # certificates, made once (setUpModule)


def setUpModule():
    global C
    if not tlsutil.OPENSSL:
        raise unittest.SkipTest("the openssl CLI is not installed (apt-get install openssl)")
    pki = PKI()
    ca = pki.ca("wstun secrets CA")
    C = {"ca": ca, "leaf": pki.leaf(ca, dns=("localhost",), ips=("127.0.0.1",))}


class CredentialsCase(E2ETestCase):
    def creds(self, files, **kw):
        c = Credentials(files, **kw)
        self.addCleanup(c.cleanup)
        return c

    def service_proc(self, argv, creds, name):
        p = Proc(as_service_user(argv), env=creds.env() if creds else None, name=name)
        self._procs.append(p)
        self.addCleanup(self._checked_stop, p)
        return p

    def service_server(self, creds, *flags):
        p = Server(as_service_user([SRV_BIN, "-host", HOST, "-port", "0"] + list(flags)),
                   env=creds.env(), name="wstunsrv")
        self._procs.append(p)
        self.addCleanup(self._checked_stop, p)
        m = p.wait_stderr(r"listening on 127\.0\.0\.1:(\d+)", 10 * TIME_SCALE)
        self.assertTrue(m, p.describe())
        p.port = int(m.group(1))
        return p


class SystemdCredentials(CredentialsCase):
    def test_every_server_and_client_secret_as_a_credential(self):
        """The TLS key and certificate, the passwords and the admin token of
        the server, the password and CA file of the client: all cred:NAME,
        read by an unprivileged user (when the tests run as root)."""
        tok = make_token()
        srv_creds = self.creds({
            "tls-cert": ("copy", C["leaf"].cert),
            "tls-key": ("copy", C["leaf"].key),
            "passwords": "%s:cred-pw\n%s:other\n" % (tok, make_token()),
            "admin-token": "admin-from-a-credential\n",
        })
        srv = self.service_server(srv_creds, "-tls-cert", "cred:tls-cert", "-tls-key",
                                  "cred:tls-key", "-passwords-file", "cred:passwords",
                                  "-admin-token-file", "cred:admin-token")
        be = self.backend()
        cli_creds = self.creds({"password": "cred-pw\n", "certfile": ("copy", C["ca"].cert)})
        cli = self.service_proc([CLI_BIN, "-tunnel", "wss://localhost:%d" % srv.port,
                                 "-token", tok, "-password-file", "cred:password",
                                 "-certfile", "cred:certfile", "-server", be.url],
                                cli_creds, "wstuncli")
        ctx = client_ctx(C["ca"].cert)
        self.assertTrue(wait_https_tunnels(srv.port, ctx, 1, 10 * TIME_SCALE),
                        srv.describe() + "\n" + cli.describe())
        r = https_req(srv.port, "GET", "/_token/%s/name" % tok, ctx)
        self.assertEqual((r.status, r.body), (200, b"backend"))
        self.assertEqual(https_req(srv.port, "GET", "/metrics", ctx).status, 401)
        r = https_req(srv.port, "GET", "/metrics", ctx,
                      headers={"Authorization": "Bearer admin-from-a-credential"})
        self.assertEqual(r.status, 200)

    def test_a_config_file_as_a_credential(self):
        """-config cred:config, whose sections hold their passwords or name
        another credential."""
        be = self.backend()
        t1, t2 = make_token(), make_token()
        srv = self.server("-passwords", "%s:in-the-file,%s:in-a-credential" % (t1, t2))
        conf = ("tunnel = %s\nserver = %s\n\n[tunnel one]\ntoken = %s\npassword = in-the-file\n"
                "\n[tunnel two]\ntoken = %s\npassword-file = cred:two\n"
                % (srv.ws_url(), be.url, t1, t2))
        creds = self.creds({"config": conf, "two": "in-a-credential\n"})
        rc, out, err = run(as_service_user([CLI_BIN, "-config", "cred:config",
                                            "-check-config"]), env_extra=creds.env())
        self.assertEqual((rc, err), (0, ""))
        self.assertEqual(out, "%s/config: ok (2 tunnels)\n" % creds.dir)
        cli = self.service_proc([CLI_BIN, "-config", "cred:config"], creds, "wstuncli")
        self.assertTrue(wait_tunnels(srv, 2), cli.describe())
        for t in (t1, t2):
            self.assertEqual(get(srv.port, "/_token/%s/name" % t).body, b"backend")

    def test_cred_without_a_credentials_directory(self):
        cases = (
            ([SRV_BIN, "-port", "0", "-passwords-file", "cred:passwords"],
             "wstunsrv: flag -passwords-file: cred:passwords"),
            ([SRV_BIN, "-port", "0", "-tls-cert", "cred:cert", "-tls-key", "cred:key"],
             "wstunsrv: flag -tls-cert: cred:cert"),
            ([SRV_BIN, "-port", "0", "-config", "cred:config"],
             "wstunsrv: flag -config: cred:config"),
            ([CLI_BIN, "-tunnel", "ws://%s:1" % HOST, "-token", make_token(),
              "-server", "http://%s:1" % HOST, "-password-file", "cred:pw"],
             "wstuncli: flag -password-file: cred:pw"),
        )
        for argv, start in cases:
            rc, out, err = run(argv)
            self.assertEqual(rc, 2, err)
            self.assertEqual(err, start + ": $CREDENTIALS_DIRECTORY is not set (systemd sets "
                             "it for a unit with LoadCredential=)\n")

    def test_a_missing_credential_names_the_flag_and_the_file(self):
        creds = self.creds({})
        rc, out, err = run([SRV_BIN, "-port", "0", "-admin-token-file", "cred:admin-token"],
                           env_extra=creds.env())
        self.assertEqual(rc, 2, err)
        self.assertEqual(err, "wstunsrv: flag -admin-token-file: cannot read %s/admin-token: "
                         "No such file or directory\n" % creds.dir)


@unittest.skipUnless(credutil.CAN_SWITCH, "needs root and setpriv(1) to act as a dynamic user")
class DynamicUser(CredentialsCase):
    def test_a_root_only_key_is_out_of_reach_without_credentials(self):
        """What the shipped unit did before: DynamicUser= cannot read a key
        root keeps 0600, so the server cannot start."""
        d = tempfile.mkdtemp(prefix="wstun-secrets.")
        self.addCleanup(shutil.rmtree, d, True)
        os.chmod(d, 0o755)
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        shutil.copy(C["leaf"].cert, cert)
        shutil.copy(C["leaf"].key, key)
        os.chmod(cert, 0o644)
        os.chmod(key, 0o600)
        rc, out, err = run(as_service_user([SRV_BIN, "-host", HOST, "-port", "0",
                                            "-tls-cert", cert, "-tls-key", key]))
        self.assertEqual(rc, 2, err)
        self.assertEqual(err, "wstunsrv: flag -tls-key: cannot read %s: Permission denied\n"
                         % key)

    def test_credential_modes(self):
        """0440 root-owned files readable through the service's group (as
        systemd's ACL makes them): fine in the credentials directory,
        refused elsewhere; nothing readable by others anywhere."""
        creds = self.creds({})
        creds.add("pw440", "s3cret\n", mode=0o440, uid=0, gid=credutil.SERVICE_GID)
        creds.add("pw444", "s3cret\n", mode=0o444, uid=0, gid=0)
        elsewhere = os.path.join(creds.base, "pw440")
        with open(elsewhere, "w") as f:
            f.write("s3cret\n")
        os.chown(elsewhere, 0, credutil.SERVICE_GID)
        os.chmod(elsewhere, 0o440)
        tok = make_token()
        base = [CLI_BIN, "-tunnel", "ws://%s:1" % HOST, "-token", tok, "-server",
                "http://%s:1" % HOST, "-check-config", "-config", "/dev/null"]
        rc, out, err = run(as_service_user(base + ["-password-file", "cred:pw440"]),
                           env_extra=creds.env())
        self.assertEqual((rc, err), (0, ""))
        rc, out, err = run(as_service_user(base + ["-password-file", elsewhere]),
                           env_extra=creds.env())
        self.assertEqual(rc, 2)
        self.assertIn("is readable by others (mode 440; chmod 600 it)", err)
        rc, out, err = run(as_service_user(base + ["-password-file", "cred:pw444"]),
                           env_extra=creds.env())
        self.assertEqual(rc, 2)
        self.assertIn("is readable by others or writable by group (mode 444;", err)



class LongSecretFiles(E2ETestCase):
    """A -passwords-file is read whole (a -config file's keys checked with
    the same limit as the start uses), and one over the limit is refused,
    never cut: a cut list would leave its last password a prefix of the
    real one."""

    def test_a_long_password_list_in_a_config_file(self):
        d = tempfile.mkdtemp(prefix="wstun-secrets-")
        self.addCleanup(shutil.rmtree, d, True)
        toks = [make_token("tok%03d" % i) for i in range(40)]  # over 1 KiB
        pwfile = os.path.join(d, "passwords")
        with open(pwfile, "w") as f:
            f.write("".join("%s:pw-%03d\n" % (t, i) for i, t in enumerate(toks)))
        os.chmod(pwfile, 0o600)
        self.assertGreater(os.path.getsize(pwfile), 1024)
        conf = os.path.join(d, "srv.conf")
        with open(conf, "w") as f:
            f.write("passwords-file = %s\n" % pwfile)
        srv = self.server("-config", conf)
        self.assertTrue(srv.wait_stderr(r"passwords: 40 tokens need one", 5 * TIME_SCALE))
        be = self.backend()
        self.client(srv, "%s:pw-039" % toks[-1], server_url=be.url)
        self.assertTrue(wait_tunnels(srv, 1), srv.describe())
        self.assertEqual(get(srv.port, "/_token/%s/name" % toks[-1]).body, b"backend")

        big = os.path.join(d, "big")
        with open(big, "w") as f:
            f.write("".join("%s:pw\n" % make_token("t%05d" % i) for i in range(3000)))
        os.chmod(big, 0o600)
        rc, out, err = run([SRV_BIN, "-port", "0", "-passwords-file", big])
        self.assertEqual(rc, 2, err)
        self.assertEqual(err, "wstunsrv: flag -passwords-file: %s is longer than 65535 bytes\n"
                         % big)


class NotRegularFiles(E2ETestCase):
    """A FIFO named as a secret, certificate or config file is refused at
    once, naming the flag: opening one for reading waits for a writer, and
    a reload reads its files on the event loop, where that wait would
    stop every tunnel. A reload that meets one keeps the running
    configuration and goes on serving."""

    def fifo(self, d, name):
        path = os.path.join(d, name)
        os.mkfifo(path, 0o600)
        return path

    def test_a_fifo_is_refused_without_waiting(self):
        d = tempfile.mkdtemp(prefix="wstun-secrets-")
        self.addCleanup(shutil.rmtree, d, True)
        f = self.fifo(d, "fifo")
        cases = (
            ([SRV_BIN, "-port", "0", "-passwords-file", f], "passwords-file"),
            ([SRV_BIN, "-port", "0", "-admin-token-file", f], "admin-token-file"),
            ([SRV_BIN, "-port", "0", "-config", f], "config"),
            ([SRV_BIN, "-port", "0", "-tls-cert", f, "-tls-key", f], "tls-cert"),
            ([CLI_BIN, "-tunnel", "ws://%s:1" % HOST, "-token", make_token(),
              "-server", "http://%s:1" % HOST, "-password-file", f], "password-file"),
        )
        for argv, flag in cases:
            rc, out, err = run(argv, timeout=10 * TIME_SCALE)
            self.assertEqual(rc, 2, err)
            self.assertIn("flag -%s: %s is not a regular file" % (flag, f), err)
            self.assertEqual(len(err.splitlines()), 1, err)

    def test_a_reload_that_meets_a_fifo_keeps_serving(self):
        d = tempfile.mkdtemp(prefix="wstun-secrets-")
        self.addCleanup(shutil.rmtree, d, True)
        pw = os.path.join(d, "passwords")
        tok = make_token()
        with open(pw, "w") as f:
            f.write("%s:pw\n" % tok)
        os.chmod(pw, 0o600)
        conf = os.path.join(d, "srv.conf")
        with open(conf, "w") as f:
            f.write("passwords-file = %s\n" % pw)
        srv = self.server("-config", conf)
        os.unlink(pw)
        self.fifo(d, "passwords")
        srv.send_signal(signal.SIGHUP)
        self.assertTrue(srv.wait_stderr(r"SIGHUP: \S+ not loaded", 15 * TIME_SCALE),
                        srv.describe())
        self.assertIn("%s is not a regular file" % pw, srv.stderr_text())
        self.assertEqual(get(srv.port, "/_health_check").status, 200)

if __name__ == "__main__":
    main()
