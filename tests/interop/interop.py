"""Interop tests: wstun against the real Go wstunnel, in both mixed pairings.

This module locates (or builds, once, under a lock) the Go reference binary
and gives the tests a base class that starts either implementation in
either role, on top of tests/e2e/harness.py (imported by path).

The Go binary comes from $WSTUN_GO_BIN if that is executable; else it is
built with ../shared/reference/build.sh relative to the repository root
(set $WSTUN_GO_REF_DIR to point elsewhere), retried up to 3 times because
the script's final self-check is flaky. When the reference sources are not
there (a user's fresh clone), every interop file prints ONE line saying so
and exits with $WSTUN_SKIP_RC (ctest sets 77 = skipped) or 0. Under CI=true
a missing reference is an error instead.
"""

import fcntl
import os
import re
import signal
import subprocess
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import harness  # noqa: E402
from harness import (HOST, TIME_SCALE, Backend, E2ETestCase, Proc,  # noqa: E402,F401
                     Server, basic_auth, body_is, expected_sha256, free_port,
                     gen_bytes, get, http_req, make_token, post_streamed,
                     raw_http, run_threads, start_client, start_server,
                     wait_tunnels, wait_until)

REF_DIR = os.environ.get("WSTUN_GO_REF_DIR") or os.path.join(
    os.path.dirname(ROOT), "shared", "reference")
BUILD_SH = os.path.join(REF_DIR, "build.sh")
DEFAULT_GO_BIN = os.path.join(os.environ.get("TMPDIR") or "/tmp",
                              "wstunnel-go-ref", "wstunnel")
GO_BIN = None  # set by go_binary()


def _skip_all(why):
    sys.stdout.write("SKIPPED: interop tests need the Go wstunnel reference: %s\n" % why)
    sys.stdout.flush()
    sys.exit(int(os.environ.get("WSTUN_SKIP_RC", "0")))


def build_go(out):
    """Run build.sh (a no-op when `out` exists) under a lock, up to 3 tries.
    Returns the binary's path or raises RuntimeError with the last log."""
    lock_path = os.path.join(os.path.dirname(out) or ".", ".build.lock")
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    last = ""
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for attempt in range(3):
            env = dict(os.environ, OUT=out)
            try:
                p = subprocess.run(["bash", BUILD_SH], env=env, capture_output=True,
                                   timeout=900)
            except subprocess.TimeoutExpired:
                last = "build.sh timed out"
                continue
            lines = p.stdout.decode("utf-8", "replace").strip().splitlines()
            if p.returncode == 0 and lines and os.access(lines[-1], os.X_OK):
                return lines[-1]
            last = "attempt %d rc=%d\n%s" % (attempt + 1, p.returncode,
                                            p.stderr.decode("utf-8", "replace")[-3000:])
    raise RuntimeError("building the Go wstunnel failed 3 times:\n" + last)


def go_binary():
    """The Go wstunnel binary, building it if needed; skips the whole file
    (exits) when the reference is absent and we are not in CI."""
    global GO_BIN
    if GO_BIN:
        return GO_BIN
    want = os.environ.get("WSTUN_GO_BIN") or DEFAULT_GO_BIN
    if os.access(want, os.X_OK):
        GO_BIN = want
        return GO_BIN
    if not os.path.isfile(BUILD_SH):
        if os.environ.get("CI", "").lower() == "true":
            sys.stderr.write("interop: CI=true but %s is missing\n" % BUILD_SH)
            sys.exit(1)
        _skip_all("%s not found (not in this checkout)" % BUILD_SH)
    GO_BIN = build_go(want)
    return GO_BIN


# --------------------------------------------------------------------------
# processes

def count_lines(proc, pattern):
    rx = re.compile(pattern)
    with proc._cond:
        return sum(1 for line in proc.err_lines if rx.search(line))


def wait_count(proc, pattern, n, timeout):
    """Wait until `pattern` has matched at least n stderr lines."""
    return wait_until(lambda: count_lines(proc, pattern) >= n, timeout * TIME_SCALE, 0.05)


class GoServer(Server):
    impl = "go"
    CONNECT_RX = r'"WS new tunnel connection"'


def start_go_server(*flags, base_path="", port=0, timeout=10.0):
    """`wstunnel srv -host 127.0.0.1 -port P [-base-path B] flags`, up once
    /_health_check answers. The Go server cannot listen on port 0 and tell
    us, so a free port is picked first (retried on a lost race)."""
    last = None
    for _ in range(3):
        p = port or free_port()
        argv = [go_binary(), "srv", "-host", HOST, "-port", str(p)]
        if base_path:
            argv += ["-base-path", base_path]
        argv += [str(f) for f in flags]
        srv = GoServer(argv, name="go-srv")
        srv.port = p
        srv.base_path = base_path

        def up():
            if not srv.alive():
                return "dead"
            try:
                r = http_req(p, "GET", base_path + "/_health_check", timeout=1.0)
                return r.status == 200
            except OSError:
                return False
        r = wait_until(up, timeout * TIME_SCALE, 0.05)
        if r is True:
            return srv
        last = srv.describe()
        srv.kill()
        if port:
            break
    raise AssertionError("Go wstunnel srv did not come up\n%s" % last)


def start_go_client(server_port, token, *flags, base_path="", server_url=None,
                    tunnel_url=None, env=None):
    """`wstunnel cli -tunnel ws://127.0.0.1:P[base] -token T [-server U] flags`."""
    if tunnel_url is None:
        tunnel_url = "ws://%s:%d%s" % (HOST, server_port, base_path)
    argv = [go_binary(), "cli", "-tunnel", tunnel_url, "-token", token]
    if server_url:
        argv += ["-server", server_url]
    argv += [str(f) for f in flags]
    p = Proc(argv, env=env, name="go-cli")
    p.impl = "go"
    return p


# What each client prints when its tunnel is up.
GO_CLI_READY_RX = r'"WS   ready"'
OUR_CLI_READY_RX = r"tunnel open to"


class InteropCase(E2ETestCase):
    """E2ETestCase plus starters for the Go peer. A subclass picks a
    pairing by setting SRV ("go" or "ours") and CLI ("ours" or "go")."""

    SRV = None
    CLI = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        go_binary()

    def _go_stop(self, p):
        # the Go programs exit on SIGTERM with a non-zero code at times; we
        # only require that they go away
        p.stop(signal.SIGTERM, grace=3)

    def go_server(self, *flags, **kw):
        s = start_go_server(*flags, **kw)
        self._procs.append(s)
        self.addCleanup(self._go_stop, s)
        return s

    def go_client(self, server, token, *flags, **kw):
        if "base_path" not in kw and "tunnel_url" not in kw:
            kw["base_path"] = server.base_path
        c = start_go_client(server.port, token, *flags, **kw)
        self._procs.append(c)
        self.addCleanup(self._go_stop, c)
        return c

    # -- pairing-neutral starters
    def any_server(self, *flags, base_path=""):
        if self.SRV == "go":
            return self.go_server(*flags, base_path=base_path)
        s = self.server(*flags, base_path=base_path)
        s.impl = "ours"
        return s

    def any_client(self, server, token, *flags, **kw):
        if self.CLI == "go":
            return self.go_client(server, token, *flags, **kw)
        c = self.client(server, token, *flags, **kw)
        c.impl = "ours"
        return c

    def ready_rx(self):
        return GO_CLI_READY_RX if self.CLI == "go" else OUR_CLI_READY_RX

    def wait_ready(self, cli, n=1, timeout=15.0):
        """Wait for the n-th 'tunnel up' line of this client."""
        ok = wait_count(cli, self.ready_rx(), n, timeout)
        self.assertTrue(ok, "client did not open tunnel #%d\n%s" % (n, cli.describe()))

    def pair(self, *srv_flags, cli_flags=(), token=None, base_path="",
             server_url=None, backend=True, wait=True, **cli_kw):
        """Server + backend + client of this pairing for a fresh token.
        Returns (server, client, backend, token)."""
        be = self.backend() if backend else None
        srv = self.any_server(*srv_flags, base_path=base_path)
        token = token or make_token()
        if server_url is None and be is not None:
            server_url = be.url
        cli = self.any_client(srv, token, *cli_flags, server_url=server_url, **cli_kw)
        if wait:
            self.wait_ready(cli)
            # and the server has registered it
            if srv.impl == "go":
                self.assertTrue(wait_count(srv, GoServer.CONNECT_RX, 1, 10),
                                srv.describe())
            else:
                self.assertTrue(wait_tunnels(srv, 1), srv.describe())
        return srv, cli, be, token

    def tget(self, srv, token, path, method="GET", headers=None, body=None,
             timeout=20.0, via="path"):
        """A tunneled request by /_token/<tok><path> or by X-Token."""
        h = dict(headers or {})
        if via == "path":
            p = srv.path("/_token/%s%s" % (token, path))
        else:
            h["X-Token"] = token
            p = srv.path(path)
        return http_req(srv.port, method, p, headers=h, body=body, timeout=timeout)


def try_req(fn, *a, **kw):
    """fn(*a, **kw), or None when it raises (for polling loops)."""
    try:
        return fn(*a, **kw)
    except Exception:  # noqa: BLE001 - a poll that failed this time
        return None


def pairings(mixin):
    """Two TestCase classes running the tests of `mixin` in both pairings:
    <Mixin>_GoSrv_OurCli and <Mixin>_OurSrv_GoCli."""
    name = mixin.__name__
    mod = mixin.__module__
    a = type(name + "_GoSrv_OurCli", (mixin, InteropCase),
             {"SRV": "go", "CLI": "ours", "__module__": mod})
    b = type(name + "_OurSrv_GoCli", (mixin, InteropCase),
             {"SRV": "ours", "CLI": "go", "__module__": mod})
    return a, b


def main():
    go_binary()  # exits here with one line when the reference is absent
    unittest.main(verbosity=2)


if __name__ == "__main__":
    # `python3 tests/interop/interop.py`: build (or find) the Go binary once
    # and print its path; the ctest fixture interop_go_build runs this.
    print(go_binary())
