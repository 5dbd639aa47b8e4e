"""Several wstunsrv nodes behind a real HAProxy (examples/cluster/haproxy.cfg,
Debian's haproxy 2.6), with wstuncli clients for many tokens and real
backends: every token reachable in every form, node loss, node return, a
rolling restart under steady load.

Skipped, saying why, when haproxy is not installed (.ci/install-deps.sh
--tests installs it).

Run as a script to measure instead of test:
  python3 test_cluster.py --measure rolling [--go] [--node-flags "..."]
prints failed/total requests of one rolling restart (--go: the Go
wstunnel client, /tmp/wstunnel-go-ref/wstunnel, instead of wstuncli, with
the flags in $WSTUN_CLUSTER_GO_FLAGS; --balance ALGO: another balance line
in the shipped haproxy.cfg; --check-extra LINE: one more health-check line,
e.g. "http-check disable-on-404")."""

import collections
import http.client
import os
import shutil
import signal
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CLI_BIN, HOST, SANITIZER_RX, SRV_BIN, TIME_SCALE, Background,  # noqa: E402
                     Backend, E2ETestCase, Proc, check_binaries, get, main, make_token,
                     reserved_port, stats_tunnels, wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))
HAPROXY_CFG = os.path.join(HERE, "..", "..", "examples", "cluster", "haproxy.cfg")
HAPROXY = shutil.which("haproxy") or next(
    (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None)
GO_BIN = os.environ.get("WSTUN_GO_WSTUNNEL", "/tmp/wstunnel-go-ref/wstunnel")

NODES = 3
TOKENS = 12
# what the nodes of a cluster run with (README "Several nodes behind HAProxy")
NODE_FLAGS = os.environ.get("WSTUN_CLUSTER_NODE_FLAGS",
                            "-unknown-token-wait 3000 -trusted-proxies 127.0.0.1").split()


def haproxy_missing():
    return None if HAPROXY else "haproxy not installed (apt-get install haproxy)"


class Cluster:
    """HAProxy + NODES wstunsrv nodes (fixed ports, so a node restarts where
    it was) + one backend and one tunnel client per token. Everything it
    starts is stopped by close()."""

    def __init__(self, node_flags=None, go_client=False, tokens=TOKENS, cfg=HAPROXY_CFG,
                 balancers=2):
        check_binaries()
        self.node_flags = NODE_FLAGS if node_flags is None else node_flags
        self.go_client = go_client
        self.procs = []
        self.backends = []
        # every port a node or a balancer listens on is reserved for the
        # cluster's life: nobody else takes it before it is bound, nor while
        # a node is down (a node restarts on its port)
        self.holds = []
        self.node_ports = [self.reserve() for _ in range(NODES)]
        self.nodes = [None] * NODES
        self.lb_port, self.lb2_port = self.reserve(), self.reserve()
        self.stats_port = self.reserve()
        self.sock = "/tmp/wstun-cluster-%d-%d.sock" % (os.getpid(), self.lb_port)
        self.sock2 = self.sock + ".lb2"
        for i in range(NODES):
            self.start_node(i)
        # two balancers sharing the stick table (peers): tunnels come in
        # through the first. Requests take the first while nodes come and
        # go: HAProxy 2.6's peers were seen to leave the second with a
        # token's old node after a move (and then resync it back onto the
        # first), see README.md "Several nodes behind HAProxy"
        env = {"WSTUN_LB_ADDR": "%s:%d" % (HOST, self.lb_port),
               "WSTUN_PEER_ADDR": "%s:%d" % (HOST, self.reserve()),
               "WSTUN_STATS_ADDR": "%s:%d" % (HOST, self.stats_port),
               "WSTUN_ADMIN_SOCK": self.sock}
        if balancers == 2:
            env["WSTUN_PEER2_ADDR"] = "%s:%d" % (HOST, self.reserve())
        for i, p in enumerate(self.node_ports):
            env["WSTUN_NODE%d" % (i + 1)] = "%s:%d" % (HOST, p)
        self.haproxy = Proc([HAPROXY, "-db", "-f", cfg], env=env, name="haproxy-lb1")
        self.procs.append(self.haproxy)
        env2 = dict(env, WSTUN_LB_ADDR="%s:%d" % (HOST, self.lb2_port),
                    WSTUN_STATS_ADDR="%s:%d" % (HOST, self.reserve()),
                    WSTUN_ADMIN_SOCK=self.sock2)
        self.haproxy2 = None
        if balancers == 2:
            self.haproxy2 = Proc([HAPROXY, "-db", "-L", "lb2", "-f", cfg], env=env2,
                                 name="haproxy-lb2")
            self.procs.append(self.haproxy2)
        if not wait_until(lambda: self.all_up() or not self.haproxy.alive(), 15 * TIME_SCALE) \
                or not self.haproxy.alive():
            raise AssertionError("HAProxy did not see every node up\n" + self.describe())
        self.tokens = [make_token("cl") for _ in range(tokens)]
        self.clients = {}
        for tok in self.tokens:
            be = Backend(tok)  # answers /name with its name: the token
            self.backends.append(be)
            self.clients[tok] = self.start_client(tok, be)
        if not wait_until(lambda: len(self.table()) == len(self.tokens), 20 * TIME_SCALE):
            raise AssertionError("not every tunnel reached a node through HAProxy: %r\n%s"
                                 % (self.table(), self.describe()))

    # -- processes
    def reserve(self):
        """A port held for a node or a balancer until close() (wstunsrv
        and HAProxy both set SO_REUSEADDR, so they can bind it)."""
        hold, port = reserved_port()
        self.holds.append(hold)
        return port

    def start_node(self, i):
        argv = [SRV_BIN, "-host", HOST, "-port", str(self.node_ports[i])] + self.node_flags
        n = Proc(argv, name="wstunsrv-node%d" % (i + 1))
        self.procs.append(n)
        if not n.wait_stderr(r"listening on", 10 * TIME_SCALE):
            raise AssertionError("node %d did not start\n%s" % (i + 1, n.describe()))
        self.nodes[i] = n
        return n

    def start_client(self, tok, be):
        url = "ws://%s:%d" % (HOST, self.lb_port)
        if self.go_client:
            argv = [GO_BIN, "cli", "-tunnel", url, "-token", tok, "-server", be.url]
            argv += os.environ.get("WSTUN_CLUSTER_GO_FLAGS", "").split()
        else:
            argv = [CLI_BIN, "-tunnel", url, "-token", tok, "-server", be.url]
        c = Proc(argv, name=("go-cli-" if self.go_client else "wstuncli-") + tok[:8])
        self.procs.append(c)
        return c

    def close(self):
        """Stops everything; returns the processes that printed a sanitizer
        report (ASan, UBSan, valgrind) at any time."""
        for p in reversed(self.procs):
            p.stop(signal.SIGTERM, grace=15)
        for be in self.backends:
            be.close()
        for hold in self.holds:
            hold.close()
        for sock in (self.sock, self.sock2):
            try:
                os.unlink(sock)
            except OSError:
                pass
        return [p for p in self.procs if SANITIZER_RX.search(p.stderr_text())]

    def describe(self):
        return "\n".join(p.describe() for p in self.procs[-40:])

    # -- what HAProxy knows
    def admin(self, cmd, sock=None):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(3)
                s.connect(sock or self.sock)
                s.sendall(cmd.encode() + b"\n")
                out = b""
                while True:
                    d = s.recv(65536)
                    if not d:
                        break
                    out += d
            return out.decode("utf-8", "replace")
        except OSError:
            return ""

    def states(self):
        """{'node1': 'UP', ...} from HAProxy's stats."""
        out = {}
        for line in self.admin("show stat").splitlines():
            cols = line.split(",")
            if len(cols) > 17 and cols[0] == "wstun_nodes" and cols[1].startswith("node"):
                out[cols[1]] = cols[17]
        return out

    def all_up(self):
        st = self.states()
        return len(st) == NODES and all(v == "UP" for v in st.values())

    def node_up(self, i):
        return self.states().get("node%d" % (i + 1)) == "UP"

    def table(self, sock=None):
        """{token: node index} from the stick table (of the first balancer,
        or of the one whose admin socket is sock)."""
        out = {}
        for line in self.admin("show table wstun_nodes", sock).splitlines():
            kv = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
            if "key" in kv and "server_key" in kv:
                out[kv["key"]] = int(kv["server_key"][4:]) - 1
        return out


ASK_TIMEOUT = float(os.environ.get("WSTUN_CLUSTER_ASK_TIMEOUT", "5"))


def ask(port, tok, form, timeout=ASK_TIMEOUT):
    """One request for tok through the balancer: "ok" when the token's own
    backend answered, else what came back instead."""
    try:
        if form == "path":
            r = get(port, "/_token/%s/name" % tok, timeout=timeout)
        else:
            r = get(port, "/name", headers={"X-Token": tok}, timeout=timeout)
        if r.status == 200 and r.body == tok.encode():
            return "ok"
        return "%d %r" % (r.status, r.body[:60])
    except (OSError, http.client.HTTPException) as e:
        return type(e).__name__


class Load:
    """Steady requests through the balancers, every token in turn, from a
    few threads; every answer is kept as (start, end, token, ok, what)."""

    def __init__(self, ports, tokens, threads=4, gap=0.01):
        self.ports, self.tokens, self.gap = ports, tokens, gap
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.log = []
        self.ts = [threading.Thread(target=self.run, args=(k,), daemon=True)
                   for k in range(threads)]
        for t in self.ts:
            t.start()

    def run(self, k):
        i = k
        while not self.stop_ev.is_set():
            tok = self.tokens[i % len(self.tokens)]
            t0 = time.monotonic()
            # every token by both forms through both balancers in turn
            port = self.ports[(i // 2) % len(self.ports)]
            form = "path" if i % 2 else "header"
            what = ask(port, tok, form)
            if what != "ok":
                what += " (by %s, balancer %d)" % (form, self.ports.index(port) + 1)
            with self.lock:
                self.log.append((t0, time.monotonic(), tok, what == "ok", what))
            i += 1
            self.stop_ev.wait(self.gap)

    def stop(self):
        self.stop_ev.set()
        for t in self.ts:
            t.join(10)
        return list(self.log)


def failures(log, since=0.0, tokens=None):
    return [e for e in log if e[0] >= since and not e[3] and (tokens is None or e[2] in tokens)]


def rolling_restart(c, exit_times, up_times):
    """SIGTERM, restart, next: every node in turn. Records how long each
    node took to exit and to be seen up by HAProxy."""
    for i in range(NODES):
        node = c.nodes[i]
        t0 = time.monotonic()
        node.send_signal(signal.SIGTERM)
        rc = node.wait(30 * TIME_SCALE)
        exit_times.append(time.monotonic() - t0)
        if rc != 0:
            raise AssertionError("node %d: %s after SIGTERM\n%s" % (
                i + 1, "still running 30 s" if rc is None else "exit status %d" % rc,
                node.describe()))
        t1 = time.monotonic()
        c.start_node(i)
        wait_until(lambda: c.node_up(i), 20 * TIME_SCALE, interval=0.1)
        up_times.append(time.monotonic() - t1)
        # as an operator would: the next node goes once every token answers
        wait_until(lambda: all(ask(c.lb_port, t, "path") == "ok" for t in c.tokens),
                   10 * TIME_SCALE, interval=0.2)
        time.sleep(1.0)


class ClusterTest(E2ETestCase):
    def setUp(self):
        why = haproxy_missing()
        if why:
            self.skipTest(why)
        super().setUp()
        # nodes that come and go with one balancer: with two, HAProxy 2.6's
        # peers were seen to hand the first a stale stick entry (a token's
        # old node) that then stays, under load in 1 run of 3: a known gap
        # (README, "Several nodes behind HAProxy"), which these tests would
        # only report as flaky
        one = self._testMethodName in ("test_node_loss_and_return",
                                       "test_rolling_restart_under_load")
        self.c = Cluster(balancers=1 if one else 2)
        self.addCleanup(self._close_cluster)

    def _close_cluster(self):
        bad = self.c.close()
        if bad and not self._failed():
            self.fail("sanitizer report:\n" + "\n".join(p.describe() for p in bad))

    def test_every_token_in_every_form(self):
        c = self.c
        # the Origin form: every tunnel's handshake put its token in the table
        self.assertEqual(sorted(c.table()), sorted(c.tokens))
        for tok in c.tokens:
            for form in ("path", "header"):
                self.assertEqual(ask(c.lb_port, tok, form), "ok", "%s by %s" % (tok, form))
        # the second balancer learnt every entry from the first (peers)
        self.assertTrue(wait_until(lambda: c.table(c.sock2) == c.table(), 10 * TIME_SCALE),
                        "lb2: %r\nlb1: %r" % (c.table(c.sock2), c.table()))
        for tok in c.tokens:
            for form in ("path", "header"):
                self.assertEqual(ask(c.lb2_port, tok, form), "ok", "lb2: %s by %s" % (tok, form))

    def test_node_loss_and_return(self):
        c = self.c
        where = c.table()
        victim = collections.Counter(where.values()).most_common(1)[0][0]
        affected = {t for t, n in where.items() if n == victim}
        load = Load([c.lb_port], c.tokens)
        try:
            time.sleep(0.5)  # some traffic before
            t_kill = time.monotonic()
            c.nodes[victim].kill()
            # every affected token answers again (a request started after
            # the kill answered by its own backend), no client restarted
            def recovered():
                with load.lock:
                    ok = {e[2] for e in load.log if e[0] >= t_kill and e[3]}
                return affected <= ok
            self.assertTrue(wait_until(recovered, 10 * TIME_SCALE),
                            "affected tokens not back after 10 s\n" + c.describe())
            with load.lock:
                back = {}
                for t0, t1, tok, ok, _ in load.log:
                    if t0 >= t_kill and ok and tok in affected:
                        back[tok] = min(back.get(tok, 1e9), t1 - t_kill)
            worst = max(back.values())
            sys.stderr.write("node loss: %d tokens affected, all back within %.2f s\n"
                             % (len(affected), worst))
            self.assertLessEqual(worst, 2.0 * TIME_SCALE, back)
            # node return: restarted empty, seen up, and nothing black-holed
            t_back = time.monotonic()
            c.start_node(victim)
            self.assertTrue(wait_until(lambda: c.node_up(victim), 8 * TIME_SCALE, 0.1))
            t_up = time.monotonic()
            time.sleep(3.0)  # traffic while the table and the ring change
        finally:
            log = load.stop()
        bad = failures(log, tokens=set(c.tokens) - affected)
        self.assertEqual(bad, [], "unaffected tokens failed")
        # Not black-holed: HAProxy 2.6's peers can hand a balancer back a
        # stale stick entry (the returned node) for a moment as the node
        # comes up (README, "Several nodes behind HAProxy"); the requests
        # that meet it wait -unknown-token-wait and get 404. Seen only for
        # requests sent within ~1 s of the node coming up, on a loaded
        # machine; every token must answer again after that.
        settle = t_up + 1.5 * TIME_SCALE
        late = failures(log, since=settle)
        self.assertEqual(late, [], "requests failed after the node returned: %s" % "; ".join(
            "%s at %+.2f s: %s" % (e[2][:8], e[0] - t_back, e[4]) for e in late))
        early = failures(log, since=t_back)
        if early:
            sys.stderr.write("node return: %d requests sent before %.1f s after "
                             "the node came up got 404 (stale stick entry)\n"
                             % (len(early), settle - t_up))
        self.assertTrue(all(ask(c.lb_port, t, "path") == "ok" for t in c.tokens))
        sys.stderr.write("node loss: %d of %d requests after the kill failed\n"
                         % (len(failures(log, since=t_kill)),
                            len([e for e in log if e[0] >= t_kill])))

    def test_rolling_restart_under_load(self):
        c = self.c
        load = Load([c.lb_port], c.tokens)
        exit_times, up_times = [], []
        try:
            rolling_restart(c, exit_times, up_times)
            time.sleep(0.5)
        finally:
            log = load.stop()
        bad = failures(log)
        sys.stderr.write("rolling restart: %d of %d requests failed; exits %s s, up %s s\n"
                         % (len(bad), len(log), ["%.1f" % t for t in exit_times],
                            ["%.1f" % t for t in up_times]))
        for t in exit_times:
            self.assertLessEqual(t, 12.0 * TIME_SCALE)
        for t in up_times:
            self.assertLessEqual(t, 8.0 * TIME_SCALE)
        self.assertGreater(len(log), 100)
        self.assertEqual(bad, [], "%d of %d requests failed" % (len(bad), len(log)))
        self.assertTrue(all(ask(c.lb_port, t, "path") == "ok" for t in c.tokens))


class NodeSide(E2ETestCase):
    """What one node does for a cluster, without a balancer."""

    def test_drain_answers_503_to_health_checks_while_serving(self):
        srv, cli, be, tok = self.tunnel("-drain-wait", "1500")
        self.assertStatus(get(srv.port, "/_health_check"), 200)  # a balancer watches
        srv.send_signal(signal.SIGTERM)
        self.assertTrue(srv.wait_stderr(r"drain: /_health_check answers 503", 5 * TIME_SCALE))
        r = get(srv.port, "/_health_check")
        self.assertStatus(r, 503)
        self.assertEqual(r.body, b"WSTUNSRV DRAINING\n")
        self.assertIn(b"\nwstun_draining 1\n", get(srv.port, "/metrics").body)
        r = get(srv.port, "/_token/%s/name" % tok)  # still served meanwhile
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"backend")
        self.assertEqual(srv.wait(15 * TIME_SCALE), 0)
        self.assertTrue(srv.wait_stderr(r"drain: the balancer had its time", 1))

    def test_no_drain_wait_when_nothing_checks_health(self):
        srv, cli, be, tok = self.tunnel("-drain-wait", "30000")
        srv.send_signal(signal.SIGTERM)
        # stops as a lone server does: far sooner than the 30 s wait
        self.assertEqual(srv.wait(8 * TIME_SCALE), 0, srv.describe())
        self.assertNotIn("drain:", srv.stderr_text())

    def test_request_waits_for_its_tokens_tunnel(self):
        be = self.backend()
        srv = self.server("-unknown-token-wait", "8000")
        tok = make_token()
        pending = Background(get, srv.port, "/_token/%s/name" % tok, timeout=20)
        time.sleep(0.5)  # the request is there before the tunnel
        self.client(srv, tok, server_url=be.url)
        r = pending.result(20 * TIME_SCALE)
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"backend")

    def test_no_tunnel_in_time_is_404(self):
        srv = self.server("-unknown-token-wait", "300")
        r = get(srv.port, "/_token/%s/name" % make_token(), timeout=20)
        self.assertStatus(r, 404)
        self.assertBody(r, "Tunnel not found (or not seen in a long time)")
        self.assertTrue(srv.wait_stderr(r"status=404: no tunnel came in 300 ms", 5))

    def test_token_whose_tunnel_left_is_404_after_the_wait(self):
        srv, cli, be, tok = self.tunnel("-unknown-token-wait", "300", "-httptimeout", "600")
        cli.kill()
        wait_until(lambda: stats_tunnels(srv) == 0, 10 * TIME_SCALE)
        # a lone server would hold it for its client (up to -httptimeout)
        r = get(srv.port, "/_token/%s/name" % tok, timeout=20)
        self.assertStatus(r, 404)

    def test_slow_upload_is_not_404_once_its_tunnel_came(self):
        # the wait is for a tunnel: a request still uploading its body when
        # the wait ends is not refused if its token's tunnel came meanwhile
        be = self.backend()
        srv = self.server("-unknown-token-wait", "1000")
        tok = make_token()
        s = socket.create_connection((HOST, srv.port), timeout=20 * TIME_SCALE)
        try:
            s.sendall(("POST /_token/%s/echo HTTP/1.1\r\nHost: x\r\n"
                       "Content-Length: 8\r\n\r\nabcd" % tok).encode())
            cli = self.client(srv, tok, server_url=be.url)
            wait_until(lambda: stats_tunnels(srv) == 1, 10 * TIME_SCALE)
            self.assertTrue(cli.alive())
            time.sleep(1.5)  # past the wait, the body still not whole
            s.sendall(b"efgh")
            head = b""
            while b"\r\n" not in head:
                piece = s.recv(4096)
                if not piece:
                    break
                head += piece
            self.assertTrue(head.startswith(b"HTTP/1.1 200"), head[:200])
        finally:
            s.close()

    def test_without_the_flag_unknown_token_is_404_at_once(self):
        srv = self.server()
        self.assertStatus(get(srv.port, "/_token/%s/name" % make_token(), timeout=5), 404)
        self.assertNotIn("no tunnel came", srv.stderr_text())


def measure(argv):
    go = "--go" in argv
    flags = None
    if "--node-flags" in argv:
        flags = argv[argv.index("--node-flags") + 1].split()
    cfg = HAPROXY_CFG
    if "--balance" in argv or "--check-extra" in argv:  # the shipped file, changed
        with open(HAPROXY_CFG) as f:
            text = f.read()
        if "--balance" in argv:
            text = text.replace("balance hash var(txn.tok)",
                                "balance " + argv[argv.index("--balance") + 1])
        if "--check-extra" in argv:
            text = text.replace("    option httpchk\n", "    option httpchk\n    %s\n"
                                % argv[argv.index("--check-extra") + 1])
        cfg = "/tmp/wstun-cluster-%d.cfg" % os.getpid()
        with open(cfg, "w") as f:
            f.write(text)
    c = Cluster(node_flags=flags, go_client=go, cfg=cfg)
    try:
        load = Load([c.lb_port], c.tokens)
        exit_times, up_times = [], []
        try:
            rolling_restart(c, exit_times, up_times)
            time.sleep(0.5)
        finally:
            log = load.stop()
        bad = failures(log)
        whats = collections.Counter(e[4] for e in bad)
        t_start = log[0][0] if log else 0
        for e in bad[:40]:
            print("  failed at %.2f s after %.2f s: %s" % (e[0] - t_start, e[1] - e[0], e[4]))
        print("  by answer: %r" % dict(whats))
        lat = sorted(e[1] - e[0] for e in log)
        if lat:
            print("  latency: median %.3f s, p99 %.3f s, max %.3f s"
                  % (lat[len(lat) // 2], lat[int(len(lat) * 0.99)], lat[-1]))
        print("rolling restart (%s client, node flags %r, %s): %d of %d requests failed; "
              "exits %s s, up %s s"
              % ("Go" if go else "wstuncli", c.node_flags,
                 "balance " + argv[argv.index("--balance") + 1] if "--balance" in argv
                 else "shipped haproxy.cfg", len(bad), len(log),
                 ["%.1f" % t for t in exit_times], ["%.1f" % t for t in up_times]))
    finally:
        c.close()


if __name__ == "__main__":
    if "--measure" in sys.argv:
        measure(sys.argv)
    else:
        main()
