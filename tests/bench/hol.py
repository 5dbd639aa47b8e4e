#!/usr/bin/env python3
"""Head-of-line blocking, v1 vs v2 (issue 15): the latency of small
requests on a token while a 1 GiB download on the same token is read
slowly by its requester.

Run it through `bench.sh --hol` (or hol.sh; bench.sh checks the tools,
owns the temp dir and cleans up even if this process is killed). See README.md, "Head-of-line blocking".

One nginx backend serves a 140-byte file and a sparse 1 GiB file. Two
tunnels stand in front of it, each its own wstunsrv + wstuncli with its own
token: one negotiated v2 (the default), one forced to v1 (wstuncli
-protocol v1). For each protocol in turn, interleaved over the rounds (v1
then v2, then v2 then v1, ...), after a reference of small requests
alone (--ref-secs per protocol):
  1. a requester asks the tunnel for the 1 GiB file and reads it at about
     640 KiB/s (32 KiB every 50 ms, a 16 KiB receive buffer): the download
     would take half an hour;
  2. once 1 MiB of it has arrived, wrk asks the same token for the small
     file for --secs seconds (c connections, one thread);
  3. the download must still be running, unfinished; it is then dropped
     and the tunnel must answer a small request again before the next
     phase (v1 has to push the rest of the response through first).
wrk's latency covers the requests that were answered (so with v1 the
percentiles are those of the few answered, if any: read them with the
answered count; when none is, the ratio shown is a lower bound, the run's
length over v2's latency).

Every process listens on and connects to 127.0.0.1 only; every step is
bounded in time, and the whole run by --budget seconds.
"""
import argparse
import datetime
import json
import os
import signal
import socket
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from bench import (BACKEND_BODY, LO, MIB, SMALL_BYTES,  # noqa: E402
                   BenchError, Procs, free_port, http_get, nginx_ready,
                   run_wrk, start_nginx, start_wstunsrv, stats_tunnels,
                   wait_until)

BIG = 1 << 30
READ_PIECE = 32768
READ_PAUSE = 0.05  # 32 KiB every 50 ms: ~640 KiB/s


def log(msg):
    print(msg, flush=True)


class SlowDownload:
    """GET of the 1 GiB file through a tunnel, read slowly in a thread."""

    def __init__(self, port, path):
        self.got = 0
        self.status = None
        self.ended = None  # why the download stopped, if it did
        self.stop = threading.Event()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        self.sock.settimeout(10)
        self.sock.connect((LO, port))
        self.sock.sendall(b"GET %s HTTP/1.1\r\nHost: bench\r\n\r\n"
                          % path.encode())
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        head = b""
        while not self.stop.is_set():
            try:
                piece = self.sock.recv(READ_PIECE)
            except socket.timeout:
                continue  # v1: no byte may come for a while; keep waiting
            except OSError as e:
                self.ended = "error: %s" % e
                return
            if not piece:
                self.ended = "closed by the tunnel"
                return
            if self.status is None:
                head += piece
                if b"\r\n\r\n" in head:
                    line = head.split(b"\r\n", 1)[0].split()
                    self.status = int(line[1]) if len(line) > 1 else -1
                    self.got += len(head.split(b"\r\n\r\n", 1)[1])
                    head = b""
            else:
                self.got += len(piece)
            if self.got >= BIG:
                self.ended = "finished"
                return
            time.sleep(READ_PAUSE)

    def running(self):
        return self.thread.is_alive() and self.ended is None

    def close(self):
        self.stop.set()
        try:
            self.sock.close()
        except OSError:
            pass
        self.thread.join(2)


def run_small(url, conns, secs):
    """wrk on the small file; latencies in ms, None when nothing was
    answered. Its timeout is twice the run, so that every answer's latency
    is recorded (wrk counts one above its timeout as a timeout)."""
    w = run_wrk(url, conns, secs, timeout_s=2 * secs)
    n = w["requests"]
    return {
        "answered": n,
        "rps": w["rps"],
        "p50_ms": w["p50_us"] / 1e3 if n else None,
        "p99_ms": w["p99_us"] / 1e3 if n else None,
        "max_ms": w["max_us"] / 1e3 if n else None,
        "errors": w["errors"],
        "errors_detail": w["errors_detail"],
        "seconds": w["seconds"],
    }


class Pair:
    """wstunsrv + wstuncli for one protocol, with its own token."""

    def __init__(self, proto, bindir, procs, tmp, backend_port):
        self.proto = proto
        self.token = "hol-%s-%s" % (proto, os.urandom(10).hex())
        slog = os.path.join(tmp, "wstunsrv-%s.log" % proto)
        clog = os.path.join(tmp, "wstuncli-%s.log" % proto)
        self.srv, self.port = start_wstunsrv(
            procs, os.path.join(bindir, "wstunsrv"), slog,
            name="wstunsrv-" + proto)
        argv = [os.path.join(bindir, "wstuncli"),
                "-tunnel", "ws://%s:%d" % (LO, self.port),
                "-token", self.token,
                "-server", "http://%s:%d" % (LO, backend_port)]
        if proto == "v1":
            argv += ["-protocol", "v1"]
        self.cli = procs.spawn("wstuncli-" + proto, argv, clog)
        wait_until(lambda: stats_tunnels(self.port) == 1, 15,
                   "tunnels=1 in wstunsrv-%s /_stats" % proto)
        st, body = http_get(self.port, "/_stats")
        want = "tunnel00_protocol=%s" % proto
        if want.encode() not in body:
            raise BenchError("wstunsrv-%s: /_stats lacks %s" % (proto, want))
        self.base = "/_token/%s" % self.token

    def healthy(self, timeout):
        """A small request answered within timeout."""
        def ok():
            st, body = http_get(self.port, self.base + "/small.txt",
                                timeout=2.0)
            return st == 200 and len(body) == SMALL_BYTES
        try:
            wait_until(ok, timeout, "a small request through " + self.proto)
            return True
        except BenchError:
            return False


def phase(pair, conns, secs, deadline):
    """Small requests while a slow 1 GiB download runs on the same token."""
    if not pair.healthy(min(20.0, max(1.0, deadline - time.monotonic()))):
        raise BenchError("the %s tunnel does not answer small requests "
                         "before the phase" % pair.proto)
    dl = SlowDownload(pair.port, pair.base + "/big.bin")
    try:
        wait_until(lambda: dl.got >= MIB or not dl.running(), 15,
                   "the %s download to flow" % pair.proto)
        if dl.status != 200:
            raise BenchError("%s download: status %s (%s)" % (
                pair.proto, dl.status, dl.ended))
        before = dl.got
        res = run_small("http://%s:%d%s/small.txt" % (LO, pair.port, pair.base),
                      conns, secs)
        res["download_running"] = dl.running()
        res["download_mib_during"] = (dl.got - before) / MIB
        res["download_mib"] = dl.got / MIB
        if not res["download_running"]:
            raise BenchError("%s: the download ended during the run (%s)" % (
                pair.proto, dl.ended))
    finally:
        dl.close()
    # v1 answers again once the rest of the response crossed the tunnel;
    # the wait stays within the run's budget (a few seconds over at most)
    t0 = time.monotonic()
    wait = max(3.0, min(30.0, deadline - t0))
    res["recovered"] = pair.healthy(wait)
    res["recovery_s"] = time.monotonic() - t0
    res["recovery_wait_s"] = wait
    return res


def fmt(v, spec, none="-"):
    return none if v is None else format(v, spec)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return "%.2f" % (a / b)


def report(runs, secs, refs):
    by = {"v1": [r for r in runs if r["proto"] == "v1"],
          "v2": [r for r in runs if r["proto"] == "v2"]}
    log("")
    log("small requests (140 B, wrk -c%d, %d s) while a 1 GiB download on the "
        "same token is read at ~640 KiB/s" % (runs[0]["conns"], secs))
    log("%-7s %-3s %10s %10s %10s %9s %9s %8s %12s" % (
        "round", "", "p50 ms", "p99 ms", "max ms", "req/s", "answered",
        "errors", "dl MiB/run"))
    for r in runs:
        log("%-7d %-3s %10s %10s %10s %9.0f %9d %8d %12.1f" % (
            r["round"], r["proto"], fmt(r["p50_ms"], ".2f", "none"),
            fmt(r["p99_ms"], ".2f", "none"), fmt(r["max_ms"], ".1f", "none"),
            r["rps"], r["answered"], r["errors"],
            r["download_mib_during"]))
    for p in sorted(refs):
        r = refs[p]
        log("%-7s %-3s %10s %10s %10s %9.0f %9d %8d %12s" % (
            "no dl", p, fmt(r["p50_ms"], ".2f"), fmt(r["p99_ms"], ".2f"),
            fmt(r["max_ms"], ".1f"), r["rps"], r["answered"],
            r["errors"], "-"))
    log("")
    log("v2 against v1, round by round (latency v1/v2: how many times "
        "lower v2's is; req/s v2/v1):")
    for k in sorted({r["round"] for r in runs}):
        a = next((r for r in by["v1"] if r["round"] == k), None)
        b = next((r for r in by["v2"] if r["round"] == k), None)
        if a is None or b is None:
            continue
        if a["answered"] or not b["answered"]:
            log("  round %d: p50 v1/v2 %s, p99 v1/v2 %s, req/s v2/v1 %s" % (
                k, ratio(a["p50_ms"], b["p50_ms"]),
                ratio(a["p99_ms"], b["p99_ms"]), ratio(b["rps"], a["rps"])))
        else:  # v1's latency is above the whole run: a lower bound
            log("  round %d: v1 answered none of its requests in %d s, so "
                "p50 and p99 v1/v2 > %s and > %s; req/s v2 %.0f, v1 0" % (
                    k, secs, ratio(secs * 1e3, b["p50_ms"]),
                    ratio(secs * 1e3, b["p99_ms"]), b["rps"]))
    if "v1" in refs and "v2" in refs:
        a, b = refs["v1"], refs["v2"]
        log("  no download: p50 v1/v2 %s, p99 v1/v2 %s, req/s v2/v1 %s" % (
            ratio(a["p50_ms"], b["p50_ms"]), ratio(a["p99_ms"], b["p99_ms"]),
            ratio(b["rps"], a["rps"])))
    v2 = [r for r in by["v2"] if r["answered"]]
    if v2 and "v2" in refs and refs["v2"]["p99_ms"]:
        log("  v2 during the download against v2 without it: p99 x%s, req/s "
            "x%s (mean of the rounds)" % (
                ratio(sum(r["p99_ms"] for r in v2) / len(v2),
                      refs["v2"]["p99_ms"]),
                ratio(sum(r["rps"] for r in v2) / len(v2), refs["v2"]["rps"])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="dir with wstunsrv, wstuncli")
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--ref-secs", type=int, default=2,
                    help="seconds of wrk per protocol with no download")
    ap.add_argument("--budget", type=float, default=60.0,
                    help="seconds for the whole run; no phase starts that "
                    "could not end within it")
    ap.add_argument("--out", help="JSON results file")
    a = ap.parse_args()
    start = time.monotonic()
    deadline = start + a.budget
    procs = Procs(os.path.join(a.tmp, "pids"))

    def on_signal(sig, _frm):
        procs.stop_all()
        sys.exit(128 + sig)
    signal.signal(signal.SIGTERM, on_signal)
    rc = 0
    runs = []
    refs = {}
    try:
        www = os.path.join(a.tmp, "www")
        os.makedirs(www)
        os.chmod(www, 0o755)
        with open(os.path.join(www, "small.txt"), "wb") as f:
            f.write((b"wstun bench: a small static file served by nginx. " * 4)
                    [:SMALL_BYTES - 1] + b"\n")
        big = os.path.join(www, "big.bin")
        with open(big, "wb") as f:  # sparse: costs no disk, reads as zeros
            f.truncate(BIG)
        for p in (os.path.join(www, "small.txt"), big):
            os.chmod(p, 0o644)
        nport = free_port()
        nginx = start_nginx(procs, a.tmp, "nginx-backend",
                            BACKEND_BODY.format(port=nport, www=www))
        nginx_ready(nginx, nport, "/small.txt")
        pairs = {p: Pair(p, a.bin, procs, a.tmp, nport) for p in ("v1", "v2")}
        log("setup done in %.1f s (nginx on %d; v1 via wstunsrv on %d, v2 via "
            "wstunsrv on %d)" % (time.monotonic() - start, nport,
                                  pairs["v1"].port, pairs["v2"].port))
        # the reference: small requests alone, no download
        refs = {}
        for p in ("v1", "v2"):
            pairs[p].healthy(5.0)
            refs[p] = run_small("http://%s:%d%s/small.txt" % (
                LO, pairs[p].port, pairs[p].base), a.conns, a.ref_secs)
            log("reference %s (no download): p50 %s ms, p99 %s ms, %.0f req/s"
                % (p, fmt(refs[p]["p50_ms"], ".2f"),
                   fmt(refs[p]["p99_ms"], ".2f"), refs[p]["rps"]))
        per_phase = a.secs + 4.0  # the download starting, wrk, a check
        for k in range(1, a.rounds + 1):
            order = ("v1", "v2") if k % 2 else ("v2", "v1")
            for p in order:
                if time.monotonic() + per_phase > deadline:
                    raise BenchError("out of the %.0f s budget before round "
                                     "%d %s" % (a.budget, k, p))
                r = phase(pairs[p], a.conns, a.secs, deadline)
                r.update({"round": k, "proto": p, "conns": a.conns})
                runs.append(r)
                log("round %d %s: %d answered, p50 %s ms, p99 %s ms, %.0f "
                    "req/s, %d errors; download %.1f MiB in, still running; "
                    "tunnel %s after %.1f s" % (
                        k, p, r["answered"], fmt(r["p50_ms"], ".2f", "none"),
                        fmt(r["p99_ms"], ".2f", "none"), r["rps"],
                        r["errors"], r["download_mib"],
                        "answering again" if r["recovered"]
                        else "not answering yet", r["recovery_s"]))
                if not r["recovered"] and r["recovery_wait_s"] >= 30.0:
                    raise BenchError("the %s tunnel did not answer within "
                                     "30 s after the download" % p)
                last = k == a.rounds and p == order[-1]
                if not r["recovered"] and not last:
                    raise BenchError("the %s tunnel did not answer again "
                                     "within the budget (%.0f s more); raise "
                                     "WSTUN_BENCH_HOL_BUDGET" % (
                                         p, r["recovery_wait_s"]))
                if not r["recovered"]:
                    log("(the %s tunnel had not answered again when the "
                        "budget ran out; nothing runs after it)" % p)
    except BenchError as e:
        log("hol: %s" % e)
        rc = 1
    finally:
        procs.stop_all()
    if runs and {r["proto"] for r in runs} == {"v1", "v2"}:
        report(runs, a.secs, refs)
    log("total %.1f s" % (time.monotonic() - start))
    if a.out and runs:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            json.dump({"when": datetime.datetime.now(datetime.timezone.utc)
                       .isoformat(timespec="seconds"),
                       "secs": a.secs, "conns": a.conns, "runs": runs,
                       "no_download": refs}, f,
                      indent=1)
        log("results: %s" % a.out)
    return rc


if __name__ == "__main__":
    sys.exit(main())
