"""The shipped systemd units, run the way systemd would run them, as far as
a test can without systemd (PID 1 here is not systemd, and a systemd
started for a test would act on the whole machine):

- ExecStart= of apps/systemd/*.service.in, with $WSTUN*_OPTS split at
  whitespace, in an environment made of the example env file alone
  (apps/systemd/*.env, the active line or its commented TLS variant);
- LoadCredential=ID:NAME emulated: NAME looked up in a credential store
  made by the test (as /etc/credstore/ would be: root's files, 0600), the
  ones found copied into a fresh $CREDENTIALS_DIRECTORY as ID, mode 0400,
  owned by the service user; the ones absent skipped, as systemd skips
  them;
- DynamicUser=yes emulated by running as nobody (when the tests run as
  root), who cannot read the store;
- stdin /dev/null.

Only the flags a test needs on loopback are changed: -port 0, -host
127.0.0.1, the client's URLs and token, and -certfile cred:certfile (the
test's CA, through the unit's certfile credential)."""

import os
import re
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (E2ETestCase, BIN_DIR, HOST, TIME_SCALE, Proc, Server, get,  # noqa: E402
                     make_token, wait_tunnels, main)
import tlsutil  # noqa: E402
from tlsutil import PKI, client_ctx, https_req, wait_https_tunnels  # noqa: E402
import credutil  # noqa: E402
from credutil import Credentials, as_service_user  # noqa: E402

UNITS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "apps", "systemd")


def parse_unit(name):
    """The [Service] settings of apps/systemd/NAME.service.in: {key: [values]}
    (an empty assignment resets the list, as systemd does)."""
    settings, section = {}, None
    with open(os.path.join(UNITS, name + ".service.in")) as f:
        for raw in f:
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            if section == "Service":
                key, _, value = line.partition("=")
                if value.strip():
                    settings.setdefault(key.strip(), []).append(value.strip())
                else:
                    settings[key.strip()] = []
    return settings


def parse_env_file(name):
    """(variables, commented variants) of apps/systemd/NAME.env, in
    EnvironmentFile= syntax (KEY=VALUE, double quotes removed); a variant is
    a "#KEY=VALUE" line, the last one of a key kept."""
    active, variants = {}, {}
    with open(os.path.join(UNITS, name + ".env")) as f:
        for raw in f:
            m = re.match(r'^(#?)([A-Za-z_][A-Za-z0-9_]*)=(.*)$', raw.rstrip("\n"))
            if not m:
                continue
            value = m.group(3)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            (variants if m.group(1) else active)[m.group(2)] = value
    return active, variants


def exec_start(unit, env):
    """ExecStart= as the argv systemd makes of it: $VAR split at
    whitespace, ${VAR} one word; the install directory is BIN_DIR."""
    argv = []
    for word in unit["ExecStart"][-1].split():
        word = word.replace("@WSTUN_INSTALL_BINDIR@", BIN_DIR)
        m = re.fullmatch(r"\$([A-Za-z_]\w*)", word)
        if m:
            argv += env.get(m.group(1), "").split()
            continue
        m = re.fullmatch(r"\$\{([A-Za-z_]\w*)\}", word)
        argv.append(env.get(m.group(1), "") if m else word)
    return argv


def set_flag(argv, flag, value):
    """argv with flag's value replaced (or the flag added)."""
    argv = list(argv)
    if flag in argv:
        argv[argv.index(flag) + 1] = value
    else:
        argv += [flag, value]
    return argv


class UnitCase(E2ETestCase):
    def credstore(self, files):
        """/etc/credstore/ as the docs tell an operator to fill it: a
        root-only directory of root's 0600 files."""
        d = tempfile.mkdtemp(prefix="wstun-credstore.")
        self.addCleanup(shutil.rmtree, d, True)
        os.chmod(d, 0o700)
        for name, src in files.items():
            path = os.path.join(d, name)
            if isinstance(src, tuple):
                shutil.copy(src[1], path)
            else:
                with open(path, "w") as f:
                    f.write(src)
            os.chmod(path, 0o600)
        return d

    def load_credentials(self, unit, store):
        """LoadCredential= as systemd does it at start: every ID:NAME whose
        NAME is in the store, copied; the others skipped."""
        files, skipped = {}, []
        for value in unit.get("LoadCredential", []):
            ident, _, name = value.partition(":")
            name = name or ident
            self.assertFalse(os.path.isabs(name),
                             "LoadCredential=%s: a missing absolute path fails the unit; "
                             "name the credential store instead" % value)
            path = os.path.join(store, name)
            if os.path.exists(path):
                files[ident] = ("copy", path)
            else:
                skipped.append(ident)
        creds = Credentials(files)
        self.addCleanup(creds.cleanup)
        return creds, skipped

    def start_unit(self, name, opts_var, argv_edit, store, extra_env=None, variant=False):
        """The unit NAME started as systemd would, its OPTS (the active line
        or, variant=True, the commented one) edited by argv_edit."""
        unit = parse_unit(name)
        self.assertEqual(unit.get("DynamicUser"), ["yes"])
        env, variants = parse_env_file(name)
        if variant:
            self.assertIn(opts_var, variants, "%s.env has no commented %s line" % (name, opts_var))
            env[opts_var] = variants[opts_var]
        env.update(extra_env or {})
        argv = argv_edit(exec_start(unit, env))
        env[opts_var] = " ".join(argv[1:])
        creds, skipped = self.load_credentials(unit, store)
        # systemd's environment: the file's variables and the credentials
        full_env = ["%s=%s" % kv for kv in env.items()]
        full_env += ["CREDENTIALS_DIRECTORY=" + creds.dir, "PATH=/usr/bin:/bin"]
        p = (Server if name == "wstunsrv" else Proc)(
            as_service_user(["env", "-i"] + full_env + argv), name=name)
        self._procs.append(p)
        self.addCleanup(self._checked_stop, p)
        p.skipped = skipped
        p.argv_run = argv
        return p

    def wait_listening(self, srv):
        m = srv.wait_stderr(r"listening on 127\.0\.0\.1:(\d+)", 10 * TIME_SCALE)
        self.assertTrue(m, srv.describe())
        srv.port = int(m.group(1))
        return srv


C = None


def setUpModule():
    global C
    if not tlsutil.OPENSSL:
        raise unittest.SkipTest("the openssl CLI is not installed (apt-get install openssl)")
    pki = PKI()
    ca = pki.ca("wstun units CA")
    C = {"ca": ca, "leaf": pki.leaf(ca, dns=("localhost",), ips=("127.0.0.1",))}


def server_on_loopback(argv):
    return set_flag(set_flag(argv, "-port", "0"), "-host", HOST)


class Units(UnitCase):
    def test_server_as_shipped(self):
        store = self.credstore({})
        srv = self.wait_listening(self.start_unit("wstunsrv", "WSTUNSRV_OPTS",
                                                  server_on_loopback, store))
        self.assertEqual(sorted(srv.skipped),
                         ["admin-token", "config", "passwords", "tls-cert", "tls-key"])
        r = get(srv.port, "/_health_check")
        self.assertEqual((r.status, r.body), (200, b"WSTUNSRV RUNNING\n"))

    def test_tls_and_passwords_from_the_credential_store(self):
        """The env files' TLS lines: the server's key, certificate and
        passwords, and the client's password, all root's 0600 files in the
        store, which the service user could not read itself."""
        tok = make_token()
        store = self.credstore({
            "wstunsrv.tls-cert": ("copy", C["leaf"].cert),
            "wstunsrv.tls-key": ("copy", C["leaf"].key),
            "wstunsrv.passwords": "%s:from-the-store\n" % tok,
            "wstuncli.password": "from-the-store\n",
            "wstuncli.certfile": ("copy", C["ca"].cert),
        })
        srv = self.wait_listening(self.start_unit("wstunsrv", "WSTUNSRV_OPTS",
                                                  server_on_loopback, store, variant=True))
        for flag in ("-tls-cert", "-tls-key", "-passwords-file"):
            self.assertIn(flag, srv.argv_run)
        self.assertEqual(sorted(srv.skipped), ["admin-token", "config"])
        be = self.backend()

        def client_argv(argv):
            argv = set_flag(argv, "-tunnel", "wss://localhost:%d" % srv.port)
            argv = set_flag(argv, "-token", tok)
            argv = set_flag(argv, "-server", be.url)
            return set_flag(argv, "-certfile", "cred:certfile")

        cli = self.start_unit("wstuncli", "WSTUNCLI_OPTS", client_argv, store, variant=True)
        self.assertIn("cred:password", cli.argv_run)
        ctx = client_ctx(C["ca"].cert)
        self.assertTrue(wait_https_tunnels(srv.port, ctx, 1, 10 * TIME_SCALE),
                        srv.describe() + "\n" + cli.describe())
        r = https_req(srv.port, "GET", "/_token/%s/name" % tok, ctx)
        self.assertEqual((r.status, r.body), (200, b"backend"))

    def test_client_as_shipped_with_the_password_in_the_env_file(self):
        tok = make_token()
        srv = self.server("-passwords", "%s:in-the-env-file" % tok)
        be = self.backend()

        def client_argv(argv):
            argv = set_flag(argv, "-tunnel", srv.ws_url())
            argv = set_flag(argv, "-token", tok)
            return set_flag(argv, "-server", be.url)

        cli = self.start_unit("wstuncli", "WSTUNCLI_OPTS", client_argv, self.credstore({}),
                              extra_env={"WSTUNNEL_PASSWORD": "in-the-env-file"})
        self.assertEqual(sorted(cli.skipped), ["certfile", "config", "password"])
        self.assertTrue(wait_tunnels(srv, 1), cli.describe())
        self.assertEqual(get(srv.port, "/_token/%s/name" % tok).body, b"backend")

    @unittest.skipUnless(credutil.CAN_SWITCH, "needs root and setpriv(1) to act as a dynamic "
                         "user")
    def test_without_credentials_the_dynamic_user_cannot_read_the_store(self):
        """The same TLS line with the store's paths instead of cred:: what
        the units did before, and why they load credentials."""
        store = self.credstore({"wstunsrv.tls-cert": ("copy", C["leaf"].cert),
                                "wstunsrv.tls-key": ("copy", C["leaf"].key)})
        os.chmod(store, 0o755)  # even with the directory open, the files are root's

        def direct_paths(argv):
            argv = set_flag(server_on_loopback(argv), "-tls-cert",
                            os.path.join(store, "wstunsrv.tls-cert"))
            argv = set_flag(argv, "-tls-key", os.path.join(store, "wstunsrv.tls-key"))
            return [a for a in argv if a not in ("-passwords-file", "cred:passwords")]

        srv = self.start_unit("wstunsrv", "WSTUNSRV_OPTS", direct_paths, store, variant=True)
        self.assertEqual(srv.wait(10 * TIME_SCALE), 2, srv.describe())
        self.assertRegex(srv.stderr_text(), r"^wstunsrv: flag -tls-cert: cannot read "
                         r"%s/wstunsrv\.tls-cert: Permission denied$" % re.escape(store))


if __name__ == "__main__":
    main()
