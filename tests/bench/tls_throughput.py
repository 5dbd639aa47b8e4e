#!/usr/bin/env python3
"""100 MiB through the tunnel over ws:// and over wss://, in one run.

    python3 tests/bench/tls_throughput.py [build-dir]

One backend (the e2e harness's threaded Python backend: /bytes streams
deterministic bytes, /upload reads the body and answers its sha256), and
for each transport a fresh wstunsrv + wstuncli on 127.0.0.1:

  ws   wstunsrv on plain HTTP, wstuncli -tunnel ws://127.0.0.1:PORT
  wss  wstunsrv -tls-cert/-tls-key, wstuncli -tunnel wss://localhost:PORT
       -certfile CA (a test CA and certificate made here with openssl);
       the requester then speaks HTTPS to the server too, so both hops are
       encrypted, as they are when deployed that way.

Each round runs, for ws then wss, a 100 MiB download (curl -o /dev/null)
and a 100 MiB upload (curl --data-binary @file, POST), checks size and
sha256, and takes the wall time of the transfer as curl reports it.
Printed: MB/s (10^6 bytes/s) per transfer and round, the median per cell,
the wss/ws ratio, and the CPU seconds wstunsrv and wstuncli spent per
transfer (utime+stime from /proc). Environment: WSTUN_BENCH_ROUNDS
(default 3), WSTUN_BENCH_TLS_MIB (default 100). Needs curl and openssl.
Loopback only; everything started here is stopped and the temp dir
removed at exit.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
build = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build")
if sys.argv[1:2] in (["-h"], ["--help"]):
    print(__doc__)
    sys.exit(0)
os.environ["WSTUN_BIN_DIR"] = os.path.join(os.path.abspath(build), "apps")
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))

import harness  # noqa: E402
from harness import (Backend, start_server, start_client, make_token, expected_sha256,  # noqa: E402
                     gen_bytes, wait_tunnels)
import tlsutil  # noqa: E402

ROUNDS = int(os.environ.get("WSTUN_BENCH_ROUNDS", "3"))
MIB = 1024 * 1024
N = int(os.environ.get("WSTUN_BENCH_TLS_MIB", "100")) * MIB


def cpu_secs(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def curl(args, timeout=300):
    p = subprocess.run(["curl", "-sS", "--noproxy", "*"] + args, capture_output=True,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise RuntimeError("curl %s: %s" % (" ".join(args), p.stderr.decode()))
    return p.stdout.decode()


def main():
    for tool in ("curl", "openssl"):
        if not shutil.which(tool):
            sys.exit("tls_throughput: %s is needed (apt-get install %s)" % (tool, tool))
    harness.check_binaries()
    tlsutil.scrub_proxy_env()
    tmp = tempfile.mkdtemp(prefix="wstun-tlsbench.")
    procs = []
    be = None
    try:
        pki = tlsutil.PKI()
        ca = pki.ca("wstun bench CA")
        leaf = pki.leaf(ca, dns=("localhost",), ips=("127.0.0.1",))
        upload_file = os.path.join(tmp, "upload.bin")
        with open(upload_file, "wb") as f:
            for piece in gen_bytes(N, 1 << 20):
                f.write(piece)
        want = expected_sha256(N)
        be = Backend("bench")

        setups = {}
        for kind in ("ws", "wss"):
            tok = make_token("bench")
            if kind == "ws":
                srv = start_server()
                cli = start_client(srv.port, tok, server_url=be.url)
                base = "http://127.0.0.1:%d" % srv.port
                tls_args = []
            else:
                srv = start_server("-tls-cert", leaf.cert, "-tls-key", leaf.key)
                cli = start_client(srv.port, tok, "-certfile", ca.cert, server_url=be.url,
                                   tunnel_url="wss://localhost:%d" % srv.port)
                base = "https://localhost:%d" % srv.port
                tls_args = ["--cacert", ca.cert, "--resolve",
                            "localhost:%d:127.0.0.1" % srv.port]
            procs += [srv, cli]
            if kind == "ws":
                up = wait_tunnels(srv, 1, 10)
            else:
                up = tlsutil.wait_https_tunnels(srv.port, tlsutil.client_ctx(ca.cert), 1, 10)
            if not up:
                raise RuntimeError("%s tunnel did not come up\n%s\n%s"
                                   % (kind, srv.describe(), cli.describe()))
            setups[kind] = (srv, cli, base, tok, tls_args)

        results = {(k, d): [] for k in ("ws", "wss") for d in ("down", "up")}
        cpu = {(k, d): [] for k in ("ws", "wss") for d in ("down", "up")}
        print("tls_throughput: %d MiB per transfer, %d round(s), build %s"
              % (N // MIB, ROUNDS, build))
        for rnd in range(1, ROUNDS + 1):
            for kind in ("ws", "wss"):
                srv, cli, base, tok, tls_args = setups[kind]
                # download
                c0 = cpu_secs(srv.pid) + cpu_secs(cli.pid)
                out = curl(tls_args + ["-o", "/dev/null", "-w",
                                       "%{http_code} %{size_download} %{time_total}",
                                       "%s/_token/%s/bytes?n=%d" % (base, tok, N)])
                c1 = cpu_secs(srv.pid) + cpu_secs(cli.pid)
                code, size, secs = out.split()
                if code != "200" or int(size) != N:
                    raise RuntimeError("%s download: %s" % (kind, out))
                mbs = N / float(secs) / 1e6
                results[(kind, "down")].append(mbs)
                cpu[(kind, "down")].append(c1 - c0)
                print("  round %d  %-3s download  %7.1f MB/s  (%.2f s, %.2f CPU s in the apps)"
                      % (rnd, kind, mbs, float(secs), c1 - c0))
                # upload
                c0 = cpu_secs(srv.pid) + cpu_secs(cli.pid)
                out = curl(tls_args + ["-H", "Content-Type: application/octet-stream",
                                       "--data-binary", "@" + upload_file, "-w",
                                       "\n%{http_code} %{time_total}",
                                       "%s/_token/%s/upload" % (base, tok)])
                c1 = cpu_secs(srv.pid) + cpu_secs(cli.pid)
                body, tail = out.rsplit("\n", 1)
                code, secs = tail.split()
                doc = json.loads(body)
                if code != "200" or doc.get("len") != N or doc.get("sha256") != want:
                    raise RuntimeError("%s upload: %s %s" % (kind, code, body[:200]))
                mbs = N / float(secs) / 1e6
                results[(kind, "up")].append(mbs)
                cpu[(kind, "up")].append(c1 - c0)
                print("  round %d  %-3s upload    %7.1f MB/s  (%.2f s, %.2f CPU s in the apps)"
                      % (rnd, kind, mbs, float(secs), c1 - c0))

        print("median over %d round(s), MB/s (10^6 bytes/s):" % ROUNDS)
        print("  %-9s %9s %9s %9s" % ("", "ws://", "wss://", "wss/ws"))
        for d, label in (("down", "download"), ("up", "upload")):
            ws = statistics.median(results[("ws", d)])
            wss = statistics.median(results[("wss", d)])
            print("  %-9s %9.1f %9.1f %9.2f" % (label, ws, wss, wss / ws))
        for d, label in (("down", "download"), ("up", "upload")):
            print("  CPU s per %d MiB %s (wstunsrv+wstuncli): ws %.2f, wss %.2f"
                  % (N // MIB, label, statistics.median(cpu[("ws", d)]),
                     statistics.median(cpu[("wss", d)])))
        return 0
    finally:
        for p in procs:
            p.stop()
        if be is not None:
            be.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
