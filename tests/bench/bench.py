#!/usr/bin/env python3
"""wstun benchmark: nginx direct vs. two chained nginx proxies vs. the tunnel
(and, with --baseline-bin, vs. the tunnel of an older build; with --go, vs.
the Go wstunnel it is a drop-in for).

Run it through bench.sh (which checks the tools, raises the fd limit, owns the
temp dir and cleans up even if this process is killed). See README.md.

Every process listens on and connects to 127.0.0.1 only; every load run is
bounded in time (wrk -d, curl --max-time, helper deadlines).
"""
import argparse
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LUA = os.path.join(HERE, "wrk_report.lua")
IDLE_HELPER = os.path.join(HERE, "idle_tunnels.py")
CLK_TCK = os.sysconf("SC_CLK_TCK")
LO = "127.0.0.1"
MIB = 1024 * 1024

SMALL_BYTES = 140
ONE_MIB = MIB
HUNDRED_MIB = 100 * MIB

# Children never go through a proxy: scrub proxy variables.
ENV = {k: v for k, v in os.environ.items()
       if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


class GoIdleDone(Exception):
    """The Go server's idle test ends before the forgetting part."""


# ---------------------------------------------------------------- processes

class Procs:
    """Children, each in its own session/process group, so one killpg takes
    a process and everything it forked (nginx workers); the pgids also go to
    a file that bench.sh's EXIT trap uses if this process dies uncleanly."""

    def __init__(self, pidfile):
        self.pidfile = pidfile
        self.live = []

    def spawn(self, name, argv, logpath, stdin=subprocess.DEVNULL,
              stdout=None):
        logf = open(logpath, "ab")
        p = subprocess.Popen(argv, stdin=stdin,
                             stdout=stdout if stdout is not None else logf,
                             stderr=logf, start_new_session=True, env=ENV)
        logf.close()
        p.bench_name = name
        p.bench_log = logpath
        self.live.append(p)
        with open(self.pidfile, "a") as f:
            f.write("%d\n" % p.pid)
        return p

    def stop(self, p, grace=5.0):
        """SIGTERM the group, wait up to grace, then SIGKILL. Returns
        (seconds it took, whether SIGKILL was needed, exit status)."""
        t0 = time.monotonic()
        killed = False
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                killed = True
        try:  # leftovers of the group (workers), or the hung leader
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        p.wait()
        if p in self.live:
            self.live.remove(p)
        with open(self.pidfile, "w") as f:  # only groups still to stop
            f.write("".join("%d\n" % q.pid for q in self.live))
        return time.monotonic() - t0, killed, p.returncode

    def stop_all(self):
        for p in reversed(list(self.live)):
            try:
                self.stop(p, grace=3.0)
            except Exception:  # cleanup must go on
                pass


def proc_cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_minflt(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[7])


def proc_status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def reset_peak_rss(pid):
    """Writing 5 to clear_refs resets VmHWM to the current RSS."""
    try:
        with open("/proc/%d/clear_refs" % pid, "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def children_of(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        out = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open("/proc/%s/stat" % d) as f:
                        if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                            out.append(int(d))
                except (OSError, IndexError, ValueError):
                    pass
        return out


def free_port():
    s = socket.socket()
    s.bind((LO, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def http_get(port, path, timeout=5.0):
    c = http.client.HTTPConnection(LO, port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def wait_until(pred, timeout, what, step=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if pred():
                return
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(step)
    raise BenchError("timed out waiting for " + what)


def tail(path, n=15):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError:
        return "(no log)"


# ---------------------------------------------------------------- nginx

NGINX_COMMON = """worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  keepalive_timeout 75s;
  client_max_body_size 0;
{body}
}}
"""

BACKEND_BODY = """  server {{
    listen 127.0.0.1:{port};
    root {www};
    default_type application/octet-stream;
    # Upload sink: with request buffering on (the default) nginx reads the
    # whole body (to a temp file) before it proxies; the body-less GET to
    # /sink then answers with the number of bytes nginx read.
    location = /upload {{
      proxy_pass http://127.0.0.1:{port}/sink;
      proxy_method GET;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Got $content_length;
    }}
    location = /sink {{ return 200 "received $http_x_got\\n"; }}
  }}"""

# A well-tuned reverse proxy hop: keep-alive on both sides, streaming request
# bodies, memory-only response buffering (no spooling to disk).
PROXY_BODY = """  upstream next_hop {{
    server 127.0.0.1:{next};
    keepalive 256;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://next_hop;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_request_buffering off;
      proxy_buffering on;
      proxy_buffers 16 16k;
      proxy_max_temp_file_size 0;
    }}
  }}"""


def start_nginx(procs, tmp, name, body):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o755)  # workers run as nobody when we are root
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_COMMON.format(d=d, body=body))
    p = procs.spawn(name, ["nginx", "-c", conf, "-p", d + "/"],
                    os.path.join(d, "stderr.log"))
    return p


def nginx_ready(p, port, path):
    def ok():
        if p.poll() is not None:
            raise BenchError("nginx %s exited:\n%s" % (
                p.bench_name, tail(os.path.join(os.path.dirname(p.bench_log),
                                                "error.log"))))
        if not children_of(p.pid):
            return False
        return http_get(port, path)[0] == 200
    wait_until(ok, 10, "nginx " + p.bench_name)
    workers = children_of(p.pid)
    if len(workers) != 1:
        raise BenchError("nginx %s: expected 1 worker, got %r" % (
            p.bench_name, workers))
    return workers[0]


# ---------------------------------------------------------------- wstun

def start_wstunsrv(procs, binary, logpath, extra=(), name="wstunsrv"):
    p = procs.spawn(name, [binary, "-host", LO, "-port", "0"] +
                    list(extra), logpath)
    port = [None]

    def listening():
        if p.poll() is not None:
            raise BenchError("%s exited with %s:\n%s" % (
                name, p.returncode, tail(logpath)))
        with open(logpath, "rb") as f:
            m = re.search(rb"listening on 127\.0\.0\.1:(\d+)", f.read())
        if m:
            port[0] = int(m.group(1))
        return port[0] is not None
    wait_until(listening, 10, name + " to log 'listening on'")
    return p, port[0]


def metric(port, name):
    """One unlabelled value from wstunsrv's /metrics, or None."""
    try:
        st, body = http_get(port, "/metrics")
    except (OSError, http.client.HTTPException):
        return None
    m = re.search(rb"(?m)^" + name.encode() + rb" (\d+)", body)
    return int(m.group(1)) if st == 200 and m else None


def stats_tunnels(port):
    """The server's tunnels= count; -1 when it cannot tell (the Go server
    sometimes resets the connection right after a heavy run: a problem
    to note, not a reason to end the bench)."""
    try:
        st, body = http_get(port, "/_stats")
    except OSError:
        return -1
    m = re.search(rb"(?m)^tunnels=(\d+)", body)
    return int(m.group(1)) if st == 200 and m else -1


# ---------------------------------------------------------------- loads

def run_wrk(url, conns, secs, timeout_s=None):
    """One wrk run; timeout_s: wrk's --timeout (an answer slower than it
    counts as a timeout, not as a latency; wrk's default is 2 s)."""
    argv = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % secs, "-s", LUA, url]
    if timeout_s is not None:
        argv[4:4] = ["--timeout", "%ds" % timeout_s]
    r = subprocess.run(argv, capture_output=True, text=True, env=ENV,
                       timeout=secs + 30)
    m = re.search(r"^WRKJSON (\{.*\})$", r.stdout, re.M)
    if not m:
        raise BenchError("wrk gave no summary (rc %d): %s %s" % (
            r.returncode, r.stdout[-500:], r.stderr[-500:]))
    w = json.loads(m.group(1))
    dur = w["duration_us"] / 1e6
    sock_err = w["err_connect"] + w["err_read"] + w["err_write"] + \
        w["err_timeout"]
    return {
        "requests": w["requests"],
        "rps": w["requests"] / dur if dur else 0.0,
        "mean_us": w["lat_mean_us"],
        "p50_us": float(w["lat_p50_us"]),
        "p99_us": float(w["lat_p99_us"]),
        "max_us": float(w["lat_max_us"]),
        "mbps": w["bytes"] / dur / 1e6 if dur else 0.0,
        "bytes": w["bytes"],
        "seconds": dur,
        "errors": sock_err + w["err_status"],
        "errors_detail": {"non_2xx_3xx": w["err_status"],
                          "connect": w["err_connect"], "read": w["err_read"],
                          "write": w["err_write"], "timeout": w["err_timeout"]},
    }


def run_curl_download(url, expect):
    argv = ["curl", "-sS", "--noproxy", "*", "--max-time", "300",
            "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{time_total}",
            url]
    r = subprocess.run(argv, capture_output=True, text=True, env=ENV,
                       timeout=320)
    code, size, secs = (r.stdout.split() + ["0", "0", "0"])[:3]
    size, secs = int(size), float(secs)
    ok = r.returncode == 0 and code == "200" and size == expect
    return {"requests": 1, "bytes": size, "seconds": secs,
            "mbps": size / secs / 1e6 if secs else 0.0,
            "errors": 0 if ok else 1,
            "errors_detail": {"http_code": code, "curl_rc": r.returncode,
                              "bytes": size, "expected": expect,
                              "stderr": r.stderr.strip()[-300:]}}


def run_curl_upload(url, path, expect, respfile):
    argv = ["curl", "-sS", "--noproxy", "*", "--max-time", "300",
            "-X", "POST", "-H", "Expect:",
            "-H", "Content-Type: application/octet-stream",
            "-T", path, "-o", respfile,
            "-w", "%{http_code} %{size_upload} %{time_total}", url]
    r = subprocess.run(argv, capture_output=True, text=True, env=ENV,
                       timeout=320)
    code, size, secs = (r.stdout.split() + ["0", "0", "0"])[:3]
    size, secs = int(size), float(secs)
    try:
        with open(respfile) as f:
            resp = f.read(200)
    except OSError:
        resp = ""
    m = re.match(r"received (\d+)", resp)
    got = int(m.group(1)) if m else -1
    ok = r.returncode == 0 and code == "200" and got == expect
    return {"requests": 1, "bytes": size, "seconds": secs,
            "mbps": size / secs / 1e6 if secs else 0.0,
            "errors": 0 if ok else 1,
            "errors_detail": {"http_code": code, "curl_rc": r.returncode,
                              "backend_received": got, "expected": expect,
                              "stderr": r.stderr.strip()[-300:]}}


# ---------------------------------------------------------------- bench

class Tunnel:
    """One wstunsrv + wstuncli pair in front of the backend: c (this build)
    or, with --baseline-bin, d (the baseline build); or, with go set, g: the
    Go wstunnel's `srv` and `cli` (bindir is then the binary). Each has its
    own token, its own server port and its own log files."""

    def __init__(self, key, label, bindir, prefix, noun, go=False):
        self.key = key
        self.go = go
        self.bin = bindir
        self.prefix = prefix  # app names and log files: "" or "baseline-"
        self.noun = noun      # "tunnel" or "baseline tunnel", in messages
        self.token = "bench-" + os.urandom(12).hex()
        self.starts = 0
        self.srv = self.cli = self.sport = None
        self.system = {"key": key, "label": label, "base": None, "apps": []}

    def name(self, app):
        return self.prefix + app


def start_go_srv(procs, binary, logpath, name):
    """`wstunnel srv` on a free port (it cannot report a port 0 choice), up
    once /_health_check answers; a lost race for the port is retried."""
    last = ""
    for _ in range(3):
        port = free_port()
        p = procs.spawn(name, [binary, "srv", "-host", LO, "-port", str(port)],
                        logpath)

        def up():
            if p.poll() is not None:
                raise BenchError("exited")
            return http_get(port, "/_health_check", timeout=2.0)[0] == 200
        try:
            wait_until(up, 10, name + " /_health_check")
            return p, port
        except BenchError as e:
            last = "%s: %s" % (e, tail(logpath))
            procs.stop(p)
    raise BenchError("%s did not come up: %s" % (name, last))


class Bench:
    def __init__(self, args):
        self.a = args
        self.procs = Procs(os.path.join(args.tmp, "pids"))
        self.tmp = args.tmp
        self.www = os.path.join(self.tmp, "www")
        self.results = {}
        self.failures = []   # wstun misbehaviour seen on the way
        self.go_problems = []  # the Go tool's, reported apart

    # -- setup
    def make_files(self):
        os.makedirs(self.www, exist_ok=True)
        os.chmod(self.www, 0o755)
        with open(os.path.join(self.www, "small.txt"), "wb") as f:
            line = b"wstun bench: a small static file served by nginx. "
            f.write((line * 4)[:SMALL_BYTES - 1] + b"\n")
        with open(os.path.join(self.www, "1mib.bin"), "wb") as f:
            f.write(os.urandom(ONE_MIB))
        self.write_pattern(os.path.join(self.www, "100mib.bin"), 100)

    @staticmethod
    def write_pattern(path, mib):
        """mib MiB of incompressible data, every MiB distinct; returns its
        sha256."""
        base = bytearray(os.urandom(MIB))
        h = hashlib.sha256()
        with open(path, "wb") as f:
            for i in range(mib):
                base[0:8] = i.to_bytes(8, "big")
                f.write(base)
                h.update(base)
        os.chmod(path, 0o644)
        return h.hexdigest()

    def make_tunnels(self):
        a = self.a
        self.tunnel = Tunnel("tunnel", "c wstun tunnel", a.bin, "", "tunnel")
        self.tunnels = [self.tunnel]
        if a.baseline_bin:
            self.baseline = Tunnel("baseline", "d wstun baseline",
                                   a.baseline_bin, "baseline-",
                                   "baseline tunnel")
            self.tunnels.append(self.baseline)
        else:
            self.baseline = None

    def start_all(self):
        a = self.a
        self.nport = free_port()
        self.backend = start_nginx(self.procs, self.tmp, "nginx-backend",
                                   BACKEND_BODY.format(port=self.nport,
                                                       www=self.www))
        self.backend_worker = nginx_ready(self.backend, self.nport,
                                          "/small.txt")
        p2port = free_port()
        self.proxy2 = start_nginx(self.procs, self.tmp, "nginx-proxy2",
                                  PROXY_BODY.format(port=p2port,
                                                    next=self.nport))
        w2 = nginx_ready(self.proxy2, p2port, "/small.txt")
        p1port = free_port()
        self.proxy1 = start_nginx(self.procs, self.tmp, "nginx-proxy1",
                                  PROXY_BODY.format(port=p1port, next=p2port))
        w1 = nginx_ready(self.proxy1, p1port, "/small.txt")

        self.make_tunnels()
        # the Go tool joins the matrix and the idle test, not the stream
        self.go = Tunnel("go", "g Go wstunnel", a.go, "go-", "Go tunnel",
                         go=True) if a.go else None
        self.matrix_tunnels = self.tunnels + ([self.go] if self.go else [])
        self.systems = [
            {"key": "direct", "label": "a nginx direct",
             "base": "http://%s:%d" % (LO, self.nport), "apps": []},
            {"key": "chain", "label": "b 2x nginx proxy",
             "base": "http://%s:%d" % (LO, p1port),
             "apps": [("nginx-proxy1", w1, self.proxy1),
                      ("nginx-proxy2", w2, self.proxy2)]},
        ] + [t.system for t in self.matrix_tunnels]
        for t in self.matrix_tunnels:
            self.start_tunnel(t)

    def start_tunnel(self, t):
        """(Re)starts wstunsrv + wstuncli of tunnel t with default settings;
        each start gets its own log files."""
        t.starts += 1
        n = t.starts
        srv_name, cli_name = t.name("wstunsrv"), t.name("wstuncli")
        t.srv_log = os.path.join(self.tmp, "%s-%d.log" % (srv_name, n))
        t.cli_log = os.path.join(self.tmp, "%s-%d.log" % (cli_name, n))
        t.log_offsets = {t.srv_log: 0, t.cli_log: 0}
        if t.go:
            t.srv, t.sport = start_go_srv(self.procs, t.bin, t.srv_log,
                                          srv_name)
            cli_argv = [t.bin, "cli"]
        else:
            t.srv, t.sport = start_wstunsrv(
                self.procs, os.path.join(t.bin, "wstunsrv"), t.srv_log,
                name=srv_name)
            cli_argv = [os.path.join(t.bin, "wstuncli")]
        t.cli = self.procs.spawn(
            cli_name, cli_argv + ["-tunnel", "ws://%s:%d" % (LO, t.sport),
                                  "-token", t.token, "-server",
                                  "http://%s:%d" % (LO, self.nport)],
            t.cli_log)
        wait_until(lambda: stats_tunnels(t.sport) == 1, 15,
                   "tunnels=1 in %s /_stats" % srv_name)
        tpath = "/_token/%s" % t.token
        st, body = http_get(t.sport, tpath + "/small.txt")
        if st != 200 or len(body) != SMALL_BYTES:
            raise BenchError("first request through the %s: status %d, "
                             "%d bytes" % (t.noun, st, len(body)))
        t.system["base"] = "http://%s:%d%s" % (LO, t.sport, tpath)
        t.system["apps"] = [(srv_name, t.srv.pid, t.srv),
                            (cli_name, t.cli.pid, t.cli)]

    def check_nginx(self, where):
        for p in (self.backend, self.proxy1, self.proxy2):
            if p.poll() is not None:
                raise BenchError("%s exited (status %s) during %s:\n%s" % (
                    p.bench_name, p.returncode, where,
                    tail(os.path.join(os.path.dirname(p.bench_log),
                                      "error.log"))))

    def tunnel_health(self, t, where):
        """After a run through tunnel t: warnings and errors its apps
        logged during it, and whether both are still alive. A dead app is
        reported loudly and both are restarted so the run can go on."""
        notes = {}
        for name, path in (() if t.go else (
                (t.name("wstunsrv"), t.srv_log),
                (t.name("wstuncli"), t.cli_log))):
            with open(path, "rb") as f:
                f.seek(t.log_offsets[path])
                text = f.read().decode("utf-8", "replace")
                t.log_offsets[path] = f.tell()
            for line in text.splitlines():
                if re.search(r" (WARN|ERROR) |Assertion|Segmentation|abort",
                             line) or not re.match(r"\d{4}-", line):
                    if not line.strip():
                        continue
                    key = "%s: %s" % (name, normalise_log(line))
                    notes[key] = notes.get(key, 0) + 1
        dead = []
        for name, p in ((t.name("wstunsrv"), t.srv),
                        (t.name("wstuncli"), t.cli)):
            if p.poll() is not None:
                dead.append({"app": name, "status": p.returncode,
                             "signal": -p.returncode if p.returncode < 0
                             else None, "log_tail": tail(p.bench_log, 25)})
        health = {}
        if notes:
            health["log_warnings"] = notes
        sink = self.go_problems if t.go else self.failures
        if dead:
            health["crashed"] = dead
            for d in dead:
                sink.append(
                    "%s DIED (exit status %s) during %s; log tail:\n%s" % (
                        d["app"], d["status"], where, d["log_tail"]))
            log("  !! %s app died during %s: restarting both" % (
                {"tunnel": "wstun", "go": "Go wstunnel"}.get(
                    t.key, "baseline wstun"), where))
            for p in (t.cli, t.srv):
                self.procs.stop(p)
            self.start_tunnel(t)
        elif stats_tunnels(t.sport) != 1:
            try:  # the client redials by itself; give it a moment
                wait_until(lambda: stats_tunnels(t.sport) == 1, 10,
                           "tunnels=1")
            except BenchError:
                sink.append("after %s the %s did not come back "
                            "within 10 s" % (where, t.noun))
        if notes:
            for k, v in notes.items():
                self.failures.append("during %s: %dx %s" % (where, v, k))
        return health

    def tunnel_of(self, system):
        for t in self.matrix_tunnels:
            if t.system is system:
                return t
        return None

    def measured(self, system, fn, where=None):
        pids = [(n, pid) for n, pid, _ in system["apps"]]
        procs = {n: p for n, _, p in system["apps"]}
        pids.append(("nginx-backend", self.backend_worker))
        before, flt0 = {}, {}
        for n, pid in pids:
            reset_peak_rss(pid)
            before[n] = proc_cpu_s(pid)
            flt0[n] = proc_minflt(pid)
        res = fn()
        apps = []
        for n, pid in pids:
            try:
                if n in procs and procs[n].poll() is not None:
                    raise OSError("exited")  # a zombie has no VmHWM
                entry = {"name": n,
                         "peak_rss_kib": proc_status_kib(pid, "VmHWM"),
                         "rss_kib": proc_status_kib(pid, "VmRSS"),
                         "cpu_s": round(proc_cpu_s(pid) - before[n], 3),
                         "minor_faults": proc_minflt(pid) - flt0[n]}
                mb = res.get("bytes", 0) / 1e6
                if mb >= 1:  # what moving a MB costs the app
                    entry["cpu_us_per_mb"] = round(
                        entry["cpu_s"] * 1e6 / mb, 1)
                    entry["minor_faults_per_mb"] = round(
                        entry["minor_faults"] / mb, 2)
            except OSError:
                entry = {"name": n, "peak_rss_kib": None, "rss_kib": None,
                         "cpu_s": None, "minor_faults": None}
            if n == "nginx-backend":
                res["backend"] = entry
            else:
                apps.append(entry)
        res["apps"] = apps
        cpus = [x["cpu_s"] for x in apps]
        if apps and "rps" in res and res["requests"] and None not in cpus:
            res["app_cpu_us_per_req"] = sum(cpus) * 1e6 / res["requests"]
        self.check_nginx(where or system["key"])
        t = self.tunnel_of(system)
        if t is not None:
            h = self.tunnel_health(t, where or "a %s run" % t.noun)
            res.update(h)
            if h.get("crashed"):
                res["errors"] += 1
            if t.go and res["errors"] and not h.get("crashed"):
                # what the Go tool said about it (its logs go with the
                # temp dir)
                self.go_problems.append("%d error(s) during %s; go-wstunsrv "
                                        "log ends:\n%s\ngo-wstuncli log "
                                        "ends:\n%s" % (
                                            res["errors"], where or "a run",
                                            tail(t.srv_log, 3)[-600:],
                                            tail(t.cli_log, 3)[-600:]))
        return res

    # -- the comparison matrix
    def points(self):
        up = os.path.join(self.www, "100mib.bin")
        pts = [
            {"key": "small_c1", "title": "140 B file, 1 connection (wrk)",
             "kind": "wrk", "path": "/small.txt", "conns": 1},
            {"key": "small_c16", "title": "140 B file, 16 connections (wrk)",
             "kind": "wrk", "path": "/small.txt", "conns": 16},
            {"key": "small_c64", "title": "140 B file, 64 connections (wrk)",
             "kind": "wrk", "path": "/small.txt", "conns": 64},
            {"key": "mib_c4", "title": "1 MiB file, 4 connections (wrk)",
             "kind": "wrk", "path": "/1mib.bin", "conns": 4},
            {"key": "download_100mib", "title": "100 MiB download (curl)",
             "kind": "get", "path": "/100mib.bin", "size": HUNDRED_MIB},
            {"key": "upload_100mib", "title": "100 MiB upload (curl POST)",
             "kind": "post", "path": "/upload", "file": up,
             "size": HUNDRED_MIB},
        ]
        only = [k for k in self.a.points.split(",") if k]
        unknown = set(only) - {p["key"] for p in pts}
        if unknown:
            raise BenchError("unknown load point(s) %s (known: %s)" % (
                ", ".join(sorted(unknown)),
                ", ".join(p["key"] for p in pts)))
        return [p for p in pts if not only or p["key"] in only]

    def run_one(self, pt, system, where):
        url = system["base"] + pt["path"]
        if pt["kind"] == "wrk":
            fn = lambda: run_wrk(url, pt["conns"], self.a.secs)
        elif pt["kind"] == "get":
            fn = lambda: run_curl_download(url, pt["size"])
        else:
            resp = os.path.join(self.tmp, "upload-response.txt")
            fn = lambda: run_curl_upload(url, pt["file"], pt["size"], resp)
        return self.measured(system, fn, where)

    def warm_up(self):
        for s in self.systems:
            run_wrk(s["base"] + "/small.txt", 16, 1)
            run_curl_download(s["base"] + "/1mib.bin", ONE_MIB)
        self.check_nginx("warm-up")
        for t in self.matrix_tunnels:
            self.tunnel_health(t, "warm-up")

    def matrix(self):
        out = []
        for pt in self.points():
            runs = {s["key"]: [] for s in self.systems}
            for rnd in range(self.a.rounds):
                for s in self.systems:  # interleaved: a, b, c(, d), a, ...
                    log("  %-34s round %d/%d  %s" % (
                        pt["title"], rnd + 1, self.a.rounds, s["label"]))
                    runs[s["key"]].append(self.run_one(
                        pt, s, "%s, round %d" % (pt["title"], rnd + 1)))
            res = {"key": pt["key"], "title": pt["title"],
                   "kind": pt["kind"], "systems": {}}
            for s in self.systems:
                rs = runs[s["key"]]
                # best: fastest of the error-free rounds, if there is one
                best = max(rs, key=lambda r: (r["errors"] == 0,
                                              r["rps"] if "rps" in r
                                              else r["mbps"]))
                sel = dict(best)
                sel["label"] = s["label"]
                sel["errors_all_rounds"] = sum(r["errors"] for r in rs)
                # wrk's two kinds (the Go tool answers 503s past its queue
                # and drops connections at 64)
                det = [r.get("errors_detail", {}) for r in rs]
                if pt["kind"] == "wrk":
                    sel["errors_non2xx_all_rounds"] = sum(
                        d.get("non_2xx_3xx", 0) for d in det)
                    sel["errors_socket_all_rounds"] = sum(
                        d.get(k, 0) for d in det for k in (
                            "connect", "read", "write", "timeout"))
                sel["crashes_all_rounds"] = sum(len(r.get("crashed", []))
                                                for r in rs)
                warn = {}
                for r in rs:
                    for k, v in r.get("log_warnings", {}).items():
                        warn[k] = warn.get(k, 0) + v
                if warn:
                    sel["log_warnings_all_rounds"] = warn
                sel["rounds"] = rs
                res["systems"][s["key"]] = sel
            res["ratios"] = ratios(res["systems"])
            out.append(res)
            self.print_point(res)
        return out

    # -- memory: idle tunnels
    def idle_tunnels(self, t):
        """Idle tunnels against a fresh wstunsrv of tunnel t's build (or a
        fresh Go `wstunnel srv` for g)."""
        a = self.a
        srv_name = t.name("wstunsrv")
        sink = self.go_problems if t.go else self.failures
        # "" for c, so its messages stay as they were before d existed
        tag = "" if t.key == "tunnel" else t.prefix
        want = a.idle
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        note = None
        if soft < want + 200:
            n = max(0, soft - 200)
            note = ("open-file limit is %d: opening %d idle tunnels instead "
                    "of %d (raise it with `ulimit -n 65536` as root, or "
                    "`ulimit -n $(ulimit -Hn)` up to the hard limit; see "
                    "README.md)" % (soft, n, want))
            if not tag:  # said once, for c
                log("  NOTE: " + note)
            want = n
        res = {"requested": a.idle, "count": want, "fd_limit": soft,
               "note": note, "hold_seconds": a.idle_hold}
        if want <= 0:
            res["skipped"] = True
            return res
        logp = os.path.join(self.tmp, "%s-idle.log" % srv_name)
        # One source address has ~28,000 ephemeral ports towards one server
        # port: past 20,000 the helper spreads its connections over
        # 127.0.0.0/8, 500 per address. Below that they all come from
        # 127.0.0.1, because wstunsrv looks up the reverse DNS name of each
        # tunnel's address: 127.0.0.1 is in /etc/hosts, 127.1.x.y go to the
        # resolver, and where that does not answer (no network) the lookups
        # queue up in libuv's 4 threads, hold ~1.2 KB each meanwhile, and
        # keep wstunsrv from exiting until they time out (see README.md).
        # The caps are lifted to fit: -max-connections (default 10000;
        # wstunsrv lowers it to its open-file limit - 64) and
        # -max-connections-per-ip (default 1000).
        per_source = a.idle_per_source
        if per_source < 0:
            per_source = 0 if want <= 20000 else 500
        res["per_source"] = per_source
        if t.go:  # no connection caps to lift
            srv, port = start_go_srv(self.procs, t.bin, logp, srv_name)
        else:
            srv, port = start_wstunsrv(
                self.procs, os.path.join(t.bin, "wstunsrv"), logp,
                name=srv_name, extra=["-max-connections",
                                      str(max(10000, want + 1000)),
                                      "-max-connections-per-ip", "0"])
        # minutes, not seconds, at 100,000 (Python opens ~5,000 a second)
        open_max = 60 + want / 500.0
        try:
            stats_tunnels(port)
            time.sleep(0.5)
            # A fresh process: no freed memory cached by malloc yet that the
            # tunnels could reuse unseen. What is left of the noise (arena
            # rounding, buffers of the handshakes in flight kept for reuse)
            # is a constant, small against 10,000 tunnels; libwstun's own
            # allocator count (wstun_memory_bytes) has none of it.
            rss0 = proc_status_kib(srv.pid, "VmRSS")
            res["rss_before_kib"] = rss0
            heap0 = None if t.go else metric(port, "wstun_memory_bytes")
            cpu_open0 = proc_cpu_s(srv.pid)
            helper = self.procs.spawn(
                "idle-helper", [sys.executable, IDLE_HELPER, "--port", str(port),
                                "--count", str(want), "--open-max",
                                str(int(open_max)), "--hold-max",
                                str(int(open_max + a.idle_hold + 300)),
                                "--per-source", str(per_source),
                                "--prefix", "idle-" + os.urandom(3).hex()],
                os.path.join(self.tmp, "%sidle-helper.log" % tag),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            opened = read_json_line(helper, open_max + 60)
            if opened is None:
                raise BenchError("idle-tunnel helper said nothing:\n" +
                                 tail(helper.bench_log))
            res["open"] = opened
            # the helper (Python) sets the pace; this is wstunsrv's share
            res["open_server_cpu_s"] = round(proc_cpu_s(srv.pid) - cpu_open0, 2)
            log("  opened %d/%d tunnels in %.2f s (failed %d)" % (
                opened["opened"], want, opened["seconds"], opened["failed"]))
            if srv.poll() is not None:
                raise BenchError("%s DIED (exit status %s) while "
                                 "opening idle tunnels:\n%s" % (
                                     srv_name, srv.returncode, tail(logp)))
            # let the server settle, then read its RSS and its count
            time.sleep(2.0)
            rss1 = proc_status_kib(srv.pid, "VmRSS")
            res["rss_after_kib"] = rss1
            res["peak_rss_kib"] = proc_status_kib(srv.pid, "VmHWM")
            res["server_tunnels"] = stats_tunnels(port)
            heap1 = None if t.go else metric(port, "wstun_memory_bytes")
            n_open = opened["opened"]
            if n_open:
                res["bytes_per_tunnel"] = round(
                    (rss1 - rss0) * 1024.0 / n_open, 1)
                if heap0 is not None and heap1 is not None:
                    res["heap_bytes_per_tunnel"] = round(
                        (heap1 - heap0) / float(n_open), 1)
            # what holding them costs: the helper pings each every 10 s
            # (wstunsrv answers), wstunsrv's liveness timers run
            c0, w0 = proc_cpu_s(srv.pid), time.monotonic()
            time.sleep(a.idle_hold)
            c1, w1 = proc_cpu_s(srv.pid), time.monotonic()
            res["idle_cpu_percent"] = round((c1 - c0) * 100.0 / (w1 - w0), 2)
            res["idle_seconds_measured"] = round(w1 - w0, 1)
            res["tunnels_after_hold"] = stats_tunnels(port)
            if res["server_tunnels"] != opened["opened"]:
                sink.append(
                    "%sidle tunnels: helper opened %d but /_stats says "
                    "tunnels=%d" % (tag, opened["opened"],
                                    res["server_tunnels"]))
            if opened["failed"]:
                sink.append("%sidle tunnels: %d handshakes failed: "
                                     "%r" % (tag, opened["failed"],
                                             opened["fail_reasons"]))
            # close them all; the server should notice promptly
            helper.stdin.close()
            closed = read_json_line(helper, 30 + want / 5000.0)
            res["close"] = closed
            self.procs.stop(helper)
            if t.go:  # its tunnels= counts tokens, kept after they go
                raise GoIdleDone()
            t0 = time.monotonic()
            forget_max = 20 + want / 5000.0
            try:
                wait_until(lambda: stats_tunnels(port) == 0, forget_max,
                           "tunnels=0", step=0.1)
                res["seconds_to_forget"] = round(time.monotonic() - t0, 2)
            except BenchError:
                res["seconds_to_forget"] = None
                self.failures.append(
                    "%sidle tunnels: %d s after closing them /_stats still "
                    "says tunnels=%d" % (tag, forget_max, stats_tunnels(port)))
            res["rss_after_close_kib"] = proc_status_kib(srv.pid, "VmRSS")
        except GoIdleDone:
            pass
        finally:
            secs, killed, rc = self.procs.stop(srv)
            res["server_stop"] = {"seconds": round(secs, 2),
                                  "needed_sigkill": killed, "status": rc}
            if killed:
                sink.append("idle %s ignored SIGTERM for 5 s" % srv_name)
        return res

    # -- 1 GiB streamed through the tunnel
    def stream(self):
        """The same file downloaded then uploaded through each tunnel (c,
        and d if there is a baseline), interleaved: c down, d down, c up,
        d up. Returns {tunnel key: result}."""
        a = self.a
        mib = a.stream_mib
        path = os.path.join(self.www, "stream.bin")
        log("  writing %d MiB test file" % mib)
        digest = self.write_pattern(path, mib)
        size = mib * MIB
        out = {t.key: {"size_bytes": size, "sha256": digest}
               for t in self.tunnels}
        try:
            # download, hashed on the fly
            def down(tunnel):
                argv = ["curl", "-sS", "--noproxy", "*", "--max-time", "600",
                        "-o", "-", tunnel["base"] + "/stream.bin"]
                t0 = time.monotonic()
                p = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=ENV)
                h = hashlib.sha256()
                n = 0
                buf = bytearray(4 * MIB)
                view = memoryview(buf)
                while True:
                    k = p.stdout.readinto(buf)
                    if not k:
                        break
                    h.update(view[:k])
                    n += k
                err = p.stderr.read().decode("utf-8", "replace").strip()
                rc = p.wait(30)
                secs = time.monotonic() - t0
                ok = rc == 0 and n == size and h.hexdigest() == digest
                return {"requests": 1, "bytes": n, "seconds": round(secs, 3),
                        "mbps": n / secs / 1e6, "sha256_ok":
                        h.hexdigest() == digest, "errors": 0 if ok else 1,
                        "errors_detail": {"curl_rc": rc, "stderr": err[-300:]}}
            for t in self.tunnels:
                tag = "" if t.key == "tunnel" else " (baseline)"
                log("  %d MiB download through the %s (sha256 checked)" % (
                    mib, t.noun))
                out[t.key]["download"] = self.measured(
                    t.system, lambda: down(t.system),
                    "%d MiB download%s" % (mib, tag))
            for t in self.tunnels:
                tag = "" if t.key == "tunnel" else " (baseline)"
                log("  %d MiB upload through the %s" % (mib, t.noun))
                out[t.key]["upload"] = self.measured(
                    t.system, lambda: run_curl_upload(
                        t.system["base"] + "/upload", path, size,
                        os.path.join(self.tmp, "upload-response.txt")),
                    "%d MiB upload%s" % (mib, tag))
        finally:
            os.unlink(path)
        return out

    # -- output
    def print_point(self, res):
        print()
        print("== %s  (best of %d x %s)" % (
            res["title"], self.a.rounds,
            "%d s" % self.a.secs if res["kind"] == "wrk" else "1 transfer"))
        print(HEADER)
        print("-" * len(HEADER))
        keys = [s["key"] for s in self.systems]  # a, b, c(, d)
        for key in keys:
            print(row(res["systems"][key]))
        for key, lab in (("tunnel/direct", "c/a ratio"),
                         ("tunnel/chain", "c/b ratio"),
                         ("tunnel/baseline", "c/d ratio"),
                         ("tunnel/go", "c/g ratio")):
            if key in res["ratios"]:
                print(ratio_row(lab, res["ratios"][key]))
        for key, what in (("tunnel", "a wstun app"),
                          ("baseline", "a baseline wstun app (d)")):
            if key not in res["systems"]:
                continue
            t = res["systems"][key]
            if t["crashes_all_rounds"]:
                print("!! %s CRASHED in %d run(s) of this load point "
                      "(restarted; see the end of the report)" % (
                          what, t["crashes_all_rounds"]))
            for k, v in sorted(t.get("log_warnings_all_rounds", {}).items()):
                print("!! logged %dx  %s" % (v, k))
        for key in keys:
            x = res["systems"][key]
            if x["errors_all_rounds"] and "errors_non2xx_all_rounds" in x:
                print("   %s: %d non-2xx responses, %d socket errors "
                      "(%d round(s))" % (
                          x["label"], x["errors_non2xx_all_rounds"],
                          x["errors_socket_all_rounds"], len(x["rounds"])))
        if res["kind"] != "wrk" or res["key"] == "mib_c4":
            parts = []
            for key in keys:
                for app in res["systems"][key].get("apps", []):
                    if app.get("cpu_us_per_mb") is not None:
                        parts.append("%s %.0f/%.1f" % (
                            app["name"], app["cpu_us_per_mb"],
                            app["minor_faults_per_mb"]))
            if parts:
                print("   per MB (CPU us/minor faults): " + ", ".join(parts))
        for key in keys:
            for r in res["systems"][key]["rounds"]:
                if r["errors"] and "errors_detail" in r:
                    print("   %s errors: %s" % (
                        res["systems"][key]["label"],
                        json.dumps(r["errors_detail"])[:300]))
        sys.stdout.flush()


HEADER = ("%-18s %10s %9s %9s %9s %6s | %8s %8s | %7s %7s %8s" % (
    "system", "req/s", "mean us", "p99 us", "MB/s", "errors",
    "RSS1 MiB", "RSS2 MiB", "CPU1 s", "CPU2 s", "CPU us/r"))


def fmt(v, spec):
    return "-" if v is None else spec % v


def row(r):
    apps = r.get("apps", [])
    rss = [x["peak_rss_kib"] / 1024.0 if x["peak_rss_kib"] is not None
           else None for x in apps] + [None, None]
    cpu = [x["cpu_s"] for x in apps] + [None, None]
    return "%-18s %10s %9s %9s %9s %6s | %8s %8s | %7s %7s %8s" % (
        r["label"], fmt(r.get("rps"), "%.0f") if "rps" in r else "-",
        fmt(r.get("mean_us"), "%.1f"), fmt(r.get("p99_us"), "%.0f"),
        fmt(r.get("mbps"), "%.1f"), r["errors_all_rounds"],
        fmt(rss[0], "%.1f"), fmt(rss[1], "%.1f"),
        fmt(cpu[0], "%.2f"), fmt(cpu[1], "%.2f"),
        fmt(r.get("app_cpu_us_per_req"), "%.1f"))


def ratio_row(label, q):
    def x(k):
        return fmt(q.get(k), "%.2fx")
    return "%-18s %10s %9s %9s %9s %6s | %8s %8s | %7s %7s %8s" % (
        label, x("rps"), x("mean_us"), x("p99_us"), x("mbps"), "",
        x("peak_rss_app1"), x("peak_rss_app2"), x("cpu_app1"), x("cpu_app2"),
        x("app_cpu_us_per_req"))


def ratios(systems):
    def q(num, den, k):
        a, b = num.get(k), den.get(k)
        if a is None or b is None or not b:
            return None
        return round(a / b, 4)

    def appv(r, i, k):
        apps = r.get("apps", [])
        return apps[i][k] if len(apps) > i else None

    out = {}
    t = systems["tunnel"]
    dens = [("tunnel/direct", systems["direct"]),
            ("tunnel/chain", systems["chain"])]
    if "baseline" in systems:  # only with --baseline
        dens.append(("tunnel/baseline", systems["baseline"]))
    if "go" in systems:  # only with the Go tool
        dens.append(("tunnel/go", systems["go"]))
    for name, den in dens:
        d = {k: q(t, den, k) for k in ("rps", "mean_us", "p99_us", "mbps",
                                         "seconds", "app_cpu_us_per_req")}
        for i in (0, 1):
            for k, lab in (("peak_rss_kib", "peak_rss_app%d"),
                           ("cpu_s", "cpu_app%d")):
                a, b = appv(t, i, k), appv(den, i, k)
                d[lab % (i + 1)] = round(a / b, 4) if a is not None and b \
                    else None
        out[name] = d
    if "mean_us" in t:
        out["tunnel_minus_direct_mean_us"] = round(
            t["mean_us"] - systems["direct"]["mean_us"], 1)
        out["chain_minus_direct_mean_us"] = round(
            systems["chain"]["mean_us"] - systems["direct"]["mean_us"], 1)
        if "go" in systems:
            out["tunnel_minus_go_mean_us"] = round(
                t["mean_us"] - systems["go"]["mean_us"], 1)
        if "baseline" in systems:
            out["tunnel_minus_baseline_mean_us"] = round(
                t["mean_us"] - systems["baseline"]["mean_us"], 1)
    return out


def normalise_log(line):
    """A log line without its timestamp, ids, ports and numbers, so equal
    events count together."""
    line = re.sub(r"^\d{4}-\d\d-\d\dT[\d:.]+Z\s+", "", line)
    line = re.sub(r"id=[0-9a-f]+", "id=N", line)
    line = re.sub(r"addr=[\d.:]+", "addr=A", line)
    line = re.sub(r"\b\d+\b", "N", line)
    return line.strip()[:200]


def read_json_line(p, timeout):
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    buf = b""
    fd = p.stdout.fileno()
    while time.monotonic() < end:
        if not sel.select(timeout=max(0.0, end - time.monotonic())):
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buf += chunk
        if b"\n" in buf:
            return json.loads(buf.split(b"\n", 1)[0])
    return None


def targets(points, idle, stream):
    p = {x["key"]: x["systems"] for x in points}
    t = []

    def add(name, value, limit, ok, unit=""):
        t.append({"target": name, "value": value, "limit": limit,
                  "unit": unit, "pass": bool(ok)})
    s16 = p["small_c16"]
    v = s16["tunnel"]["rps"] / s16["direct"]["rps"]
    add("140 B @16 conns: tunnel req/s >= 45% of direct", round(v * 100, 1),
        ">= 45", v >= 0.45, "%")
    v = s16["tunnel"]["rps"] / s16["chain"]["rps"]
    add("140 B @16 conns: tunnel req/s >= chained nginx", round(v * 100, 1),
        ">= 100", v >= 1.0, "% of chain")
    s1 = p["small_c1"]
    v = s1["tunnel"]["mean_us"] - s1["direct"]["mean_us"]
    add("140 B @1 conn: added mean latency (tunnel - direct)", round(v, 1),
        "<= 60", v <= 60, "us")
    m4 = p["mib_c4"]
    v = m4["tunnel"]["mbps"] / m4["direct"]["mbps"]
    add("1 MiB @4 conns: tunnel MB/s >= 40% of direct", round(v * 100, 1),
        ">= 40", v >= 0.40, "%")
    if "go" in m4:
        v = m4["tunnel"]["mbps"] / m4["go"]["mbps"] if m4["go"]["mbps"] \
            else None
        goerr = m4["go"]["errors_all_rounds"]
        add("1 MiB @4 conns: tunnel MB/s >= 1.5x the Go tool",
            None if v is None else round(v, 2), ">= 1.5",
            v is not None and v >= 1.5,
            "x Go" + (" (Go: %d errors)" % goerr if goerr else ""))
    d100 = p["download_100mib"]
    v = d100["tunnel"]["mbps"] / d100["direct"]["mbps"]
    add("100 MiB download: tunnel MB/s >= 60% of direct", round(v * 100, 1),
        ">= 60", v >= 0.60, "%")
    v = p["small_c64"]["tunnel"]["errors_all_rounds"]
    add("140 B @64 conns, default settings: zero errors", v, "== 0", v == 0,
        "errors")
    v = idle.get("bytes_per_tunnel")
    add("idle tunnel memory (wstunsrv RSS growth / tunnel)", v, "<= 4096",
        v is not None and v <= 4096 and idle.get("count") == idle.get(
            "requested"), "bytes")
    peaks = []
    for d in ("download", "upload"):
        for app in stream.get(d, {}).get("apps", []):
            if app.get("peak_rss_kib") is not None:
                peaks.append(app["peak_rss_kib"])
    v = max(peaks) / 1024.0 if peaks else None
    add("%d MiB stream: peak RSS of each app < 32 MiB" % (
        stream.get("size_bytes", 0) // MIB), None if v is None else round(v, 1),
        "< 32", v is not None and v < 32, "MiB (max of both apps)")
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--idle", type=int, default=10000)
    ap.add_argument("--idle-per-source", type=int, default=-1,
                    help="idle tunnels per source address in 127.0.0.0/8 "
                         "(0: all from 127.0.0.1; default: 0 up to 20000 "
                         "tunnels, else 500)")
    ap.add_argument("--idle-hold", type=float, default=10.0,
                    help="seconds the idle tunnels are held while wstunsrv's "
                         "CPU is measured")
    ap.add_argument("--stream-mib", type=int, default=1024)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--idle-only", action="store_true",
                    help="only the idle-tunnel test (no nginx, no matrix)")
    ap.add_argument("--baseline-bin", default=None,
                    help="apps/ dir of an older build: system d")
    ap.add_argument("--go", default=None,
                    help="the Go wstunnel binary: system g")
    ap.add_argument("--points", default="",
                    help="comma-separated load point keys (e.g. mib_c4): "
                         "only those, and no stream or idle test")
    a = ap.parse_args()

    def on_signal(sig, _frm):
        raise KeyboardInterrupt("signal %d" % sig)
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, on_signal)

    b = Bench(a)
    t_start = time.monotonic()
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "host": platform.node(), "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "secs_per_run": a.secs, "rounds": a.rounds, "quick": a.quick,
        "selection": "best run of the rounds: the highest req/s (wrk) or "
                     "MB/s (transfers) among error-free rounds, if any; "
                     "errors are summed over all rounds",
        "units": {"MB": "1e6 bytes", "latency": "microseconds",
                  "rss": "KiB in JSON, MiB in the table"},
        "wrk": "wrk -t1 -cN -dS (one load thread); errors = socket errors "
               "+ responses with status >= 400",
        "versions": versions(a.bin),
        "build_dir_bin": a.bin,
    }
    if a.baseline_bin:  # only with --baseline: without it, meta as before
        meta["baseline_bin"] = a.baseline_bin
        meta["versions"]["wstunsrv_baseline"] = versions(
            a.baseline_bin, only_wstun=True)["wstunsrv"]
        meta["source_commits"] = {"tunnel": source_commit(a.bin),
                                  "baseline": source_commit(a.baseline_bin)}
    if a.go:
        meta["go_bin"] = a.go
        meta["versions"]["go_wstunnel"] = go_version(a.go)
    doc = {"meta": meta}
    rc = 0
    if a.idle_only:
        meta["idle_only"] = True
    try:
        if a.idle_only:  # the idle-tunnel test alone
            b.make_tunnels()
            b.go = None
        else:
            log("setting up: test files, nginx backend, 2 nginx proxies, "
                "wstunsrv + wstuncli (all on 127.0.0.1)" + (
                    ", baseline wstunsrv + wstuncli" if a.baseline_bin
                    else ""))
            b.make_files()
            b.start_all()
            meta["ports"] = {"backend": b.nport, "wstunsrv": b.tunnel.sport}
            if b.baseline:
                meta["ports"]["wstunsrv_baseline"] = b.baseline.sport
            b.warm_up()
            log("comparison matrix (%d s per wrk run, %d rounds, interleaved)"
                % (a.secs, a.rounds))
            print(HEADER_NOTE)
            if b.baseline:
                print(baseline_note(a, meta["source_commits"]))
            if b.go:
                print(GO_NOTE % a.go)
            doc["points"] = b.matrix()
            if b.go:  # not in the stream and idle tests: free its CPU
                for p in (b.go.cli, b.go.srv):
                    b.procs.stop(p)
        if not a.idle_only and not a.points:  # --points: the matrix alone
            log("streaming %d MiB through the %s" % (
                a.stream_mib, "tunnel and the baseline tunnel" if b.baseline
                else "tunnel"))
            try:
                streams = b.stream()
                doc["stream"] = streams["tunnel"]
                if b.baseline:
                    doc["stream_baseline"] = streams["baseline"]
            except BenchError as e:  # e.g. the tunnel would not come back
                b.failures.append("stream test: %s" % e)
                log("ERROR in the stream test: %s" % e)
            # stop the tunnels gracefully and note how it went
            for t in b.tunnels:
                for name, p in ((t.name("wstuncli"), t.cli),
                                (t.name("wstunsrv"), t.srv)):
                    secs, killed, status = b.procs.stop(p)
                    meta.setdefault("shutdown", {})[name] = {
                        "seconds": round(secs, 2), "needed_sigkill": killed,
                        "status": status}
                    if killed:
                        b.failures.append("%s ignored SIGTERM for 5 s" % name)
        if a.idle_only and a.go:
            b.go = Tunnel("go", "g Go wstunnel", a.go, "go-", "Go tunnel",
                          go=True)
        idle_for = [] if a.points else b.tunnels + ([b.go] if b.go else [])
        for t in idle_for:
            log("idle tunnels: %d WebSocket tunnels, distinct tokens, one "
                "%s" % (a.idle, t.name("wstunsrv")))
            key = {"tunnel": "idle_tunnels", "go": "idle_tunnels_go"}.get(
                t.key, "idle_tunnels_baseline")
            what = {"tunnel": "idle-tunnel", "go": "Go idle-tunnel"}.get(
                t.key, "baseline idle-tunnel")
            try:
                doc[key] = b.idle_tunnels(t)
            except BenchError as e:
                (b.go_problems if t.go else b.failures).append(
                    "%s test: %s" % (what, e))
                log("ERROR in the %s test: %s" % (what, e))
    except KeyboardInterrupt:
        log("interrupted: cleaning up")
        b.procs.stop_all()
        return 130
    except BenchError as e:
        b.failures.append(str(e))
        log("ERROR: %s" % e)
        rc = 1
    finally:
        b.procs.stop_all()
    meta["seconds_total"] = round(time.monotonic() - t_start, 1)
    meta["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    doc["wstun_problems"] = b.failures
    if a.go:
        doc["go_problems"] = b.go_problems
    if "stream" in doc:
        print_stream(doc["stream"])
    if "stream_baseline" in doc:
        print_stream(doc["stream_baseline"], doc["stream"])
    if "idle_tunnels" in doc:
        print_idle(doc["idle_tunnels"])
    if "idle_tunnels_baseline" in doc:
        print_idle(doc["idle_tunnels_baseline"], doc.get("idle_tunnels"))
    if "idle_tunnels_go" in doc:
        print_idle(doc["idle_tunnels_go"], doc.get("idle_tunnels"),
                   "Go wstunnel srv (g)", "c/g")
    if "points" in doc and not a.points:  # targets need every point
        doc["targets"] = targets(doc["points"], doc.get("idle_tunnels", {}),
                                 doc.get("stream", {}))
        print_targets(doc["targets"])
    if b.failures:
        print("\nwstun problems seen during the run:")
        for f in b.failures:
            print("  - " + f)
    if b.go_problems:
        print("\nGo wstunnel problems seen during the run:")
        for f in b.go_problems:
            print("  - " + f)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    print("\nload average start %s, end %s; %.0f s in total. The machine may "
          "be shared: treat differences under ~10%% as noise." % (
              " ".join(meta["loadavg_start"]), " ".join(meta["loadavg_end"]),
              meta["seconds_total"]))
    print("JSON written to %s" % a.out)
    return rc


HEADER_NOTE = """
a = nginx serving the files itself; b = two chained nginx reverse proxies
(upstream keep-alive) in front of it; c = wstunsrv + wstuncli in front of it.
RSS1/RSS2 = peak RSS during the run of the two middle apps (b: proxy1, proxy2;
c: wstunsrv, wstuncli); CPU1/CPU2 = their CPU seconds (user+sys) during the
run; CPU us/r = both apps' CPU per request. Ratios c/a and c/b: above 1 means
c has more of it (good for req/s and MB/s, bad for latency, RSS and CPU)."""


GO_NOTE = """g = the Go wstunnel (srv + cli, default settings) in front of the same
backend, interleaved with the others; c/g ratio: wstun over Go, above 1
means c has more of it. The Go tool is not in the stream test; the idle
test holds the same tunnels on a fresh Go srv.
  g: %s"""


def go_version(binp):
    try:
        r = subprocess.run([binp, "version"], capture_output=True, text=True,
                           timeout=10)
        return ((r.stdout + r.stderr).strip().splitlines() or [None])[0]
    except (OSError, subprocess.TimeoutExpired):
        return None


def baseline_note(a, commits):
    def desc(binp, c):
        return "%s%s" % (binp, " (source tree at %s)" % c if c else "")
    return ("d = wstunsrv + wstuncli of the baseline build, started and "
            "checked like c\n(own ports, own token); c/d ratio: this build "
            "over the baseline, above 1 means\nc has more of it. The targets "
            "below are for c only.\n  c: %s\n  d: %s" % (
                desc(a.bin, commits.get("tunnel")),
                desc(a.baseline_bin, commits.get("baseline"))))


def source_commit(binp):
    """The commit of the source tree a build dir was configured from (from
    its CMakeCache.txt), "+dirty" if it has uncommitted changes now; None if
    unknown. Only says where the build came from, not that it is current."""
    try:
        with open(os.path.join(os.path.dirname(os.path.abspath(binp)),
                               "CMakeCache.txt")) as f:
            m = re.search(r"(?m)^CMAKE_HOME_DIRECTORY:INTERNAL=(.*)$",
                          f.read())
        if not m:
            return None
        src = m.group(1).strip()
        r = subprocess.run(["git", "-C", src, "rev-parse", "--short=10",
                            "HEAD"], capture_output=True, text=True,
                           timeout=10)
        if r.returncode:
            return None
        d = subprocess.run(["git", "-C", src, "status", "--porcelain",
                            "--untracked-files=no"], capture_output=True,
                           text=True, timeout=10)
        return r.stdout.strip() + ("+dirty" if d.stdout.strip() else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def versions(binp, only_wstun=False):
    v = {}
    tools = [("nginx", ["nginx", "-v"]), ("wrk", ["wrk", "-v"]),
             ("curl", ["curl", "--version"])]
    for name, argv in ([] if only_wstun else tools) + [
            ("wstunsrv", [os.path.join(binp, "wstunsrv"), "--version"])]:
        try:
            r = subprocess.run(argv, capture_output=True, text=True,
                               timeout=10)
            v[name] = (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            v[name] = None
    return v


def print_stream(s, c=None):
    """s: the stream result of c, or of d with c's result in c."""
    print("\n== %d MiB streamed through the %s (one transfer each way)"
          % (s["size_bytes"] // MIB, "tunnel" if c is None
             else "baseline tunnel d"))
    print("%-10s %9s %8s %12s | %14s %14s | %9s %9s" % (
        "direction", "MB/s", "seconds", "check", "wstunsrv peak",
        "wstuncli peak", "srv CPU s", "cli CPU s"))
    for d in ("download", "upload"):
        r = s.get(d)
        if r is None:
            print("%-10s not run" % d)
            continue
        if d == "download":
            check = "sha256 ok" if r.get("sha256_ok") else "SHA MISMATCH"
        else:
            check = "bytes ok" if not r["errors"] else "BYTES BAD"
        if r.get("crashed"):
            check = "CRASHED"
        apps = r["apps"] + [{}, {}]
        rss = [a.get("peak_rss_kib") for a in apps[:2]]
        cpu = [a.get("cpu_s") for a in apps[:2]]
        print("%-10s %9.1f %8.2f %12s | %10s MiB %10s MiB | %9s %9s" % (
            d, r["mbps"], r["seconds"], check,
            fmt(rss[0] and rss[0] / 1024.0, "%.1f"),
            fmt(rss[1] and rss[1] / 1024.0, "%.1f"),
            fmt(cpu[0], "%.2f"), fmt(cpu[1], "%.2f")))
        if r["errors"]:
            print("           %s" % json.dumps(r["errors_detail"])[:300])
    if c is not None:
        q = []
        for d in ("download", "upload"):
            x, y = (c or {}).get(d), s.get(d)
            q.append("%s %s" % (d, fmt(x["mbps"] / y["mbps"] if x and y and
                                       y["mbps"] else None, "%.2fx")))
        print("c/d MB/s   %s" % ", ".join(q))


def print_idle(r, c=None, who="baseline wstunsrv (d)", ratio="c/d"):
    """r: the idle-tunnel result of c, or of d (or g) with c's result in
    c."""
    print("\n== idle tunnels against one %s" % (
        "wstunsrv" if c is None else who))
    if r.get("skipped"):
        print("skipped: " + (r.get("note") or ""))
        return
    o = r.get("open", {})
    print("requested %d%s, opened %d, failed %d in %.2f s from %s source "
          "address(es); /_stats says tunnels=%s" % (
              r["requested"], "" if r["count"] == r["requested"]
              else " (fd limit: tried %d)" % r["count"],
              o.get("opened", 0), o.get("failed", 0), o.get("seconds", 0),
              o.get("source_addresses", 1), r.get("server_tunnels")))
    srv = "the server" if ratio == "c/g" else "wstunsrv"
    print("%s spent %s CPU s opening them (the Python helper sets the "
          "pace)" % (srv, r.get("open_server_cpu_s")))
    print("%s VmRSS %.1f MiB before, %.1f MiB with them open -> %s "
          "bytes per idle tunnel" % (
              srv, r["rss_before_kib"] / 1024.0, r["rss_after_kib"] / 1024.0,
              r.get("bytes_per_tunnel")))
    if r.get("heap_bytes_per_tunnel") is not None:
        print("  libwstun heap %s bytes per tunnel (wstun_memory_bytes of "
              "/metrics)" % r.get("heap_bytes_per_tunnel"))
    if "idle_cpu_percent" in r:
        print("  held %.0f s (a ping each per 10 s): %s CPU %.2f%% of "
              "one core; tunnels=%s at the end" % (
                  r["idle_seconds_measured"], srv, r["idle_cpu_percent"],
                  r.get("tunnels_after_hold")))
    if "seconds_to_forget" in r:
        print("after closing: tunnels=0 after %s s, VmRSS %.1f MiB" % (
            r.get("seconds_to_forget"),
            r.get("rss_after_close_kib", 0) / 1024.0))
    if r.get("note"):
        print("NOTE: " + r["note"])
    if c is not None:
        x, y = (c or {}).get("bytes_per_tunnel"), r.get("bytes_per_tunnel")
        print("%s bytes per idle tunnel %s" % (ratio, fmt(
            x / y if x is not None and y else None, "%.2fx")))


def print_targets(ts):
    print("\n== targets (informational)")
    for t in ts:
        print("%-4s %-55s %10s %-8s %s" % (
            "PASS" if t["pass"] else "MISS", t["target"],
            "-" if t["value"] is None else t["value"], t["limit"], t["unit"]))


if __name__ == "__main__":
    sys.exit(main())
