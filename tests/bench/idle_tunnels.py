#!/usr/bin/env python3
"""Opens N idle wstun tunnels (distinct tokens) against one wstunsrv.

A tunnel is what wstuncli opens: a WebSocket upgrade on /_tunnel whose Origin
header carries the rendez-vous token. Running 10,000 wstuncli processes is far
too heavy, so this opens the handshakes itself from one process (stdlib only:
selectors + non-blocking sockets), then keeps every tunnel alive with a masked
client-to-server ping every --ping-interval seconds (wstunsrv closes tunnels
that send nothing for -wstimeout, 30 s by default) and answers server pings.

Each connection comes from its own source address in 127.0.0.0/8, --per-source
connections per address (127.1.0.1, 127.1.0.2, ...): one address would run
out of ephemeral ports near 28,000 connections (net.ipv4.ip_local_port_range)
and meets wstunsrv's -max-connections-per-ip (1000 by default) long before.

Protocol with the caller (bench.py), one JSON line each on stdout:
  1. once every handshake is done (or failed):
     {"event": "opened", "opened": n, "failed": f, "seconds": t, ...}
  2. when stdin reaches EOF (or --hold-max seconds pass, or SIGTERM):
     {"event": "closed", "open_at_end": n, "closed_by_server": k, ...}
Only ever connects to 127.0.0.1 (from 127.x.y.z).
"""
import argparse
import base64
import hashlib
import json
import os
import resource
import selectors
import signal
import socket
import sys
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
HOST = "127.0.0.1"
IP_BIND_ADDRESS_NO_PORT = 24  # Linux: pick the port at connect, per 4-tuple


def source_addr(k):
    """The k-th source address: 127.1.0.1, ..., 127.1.0.254, 127.1.1.1, ...
    (no .0 or .255 last byte)."""
    hi, lo = divmod(k, 254)
    return "127.%d.%d.%d" % (1 + hi // 256, hi % 256, lo + 1)


class Tunnel:
    __slots__ = ("sock", "state", "token", "key", "buf", "out", "started",
                 "last_ping")

    def __init__(self, sock, token, key):
        self.sock = sock
        self.state = "connecting"
        self.token = token
        self.key = key
        self.buf = b""
        self.out = b""
        self.started = time.monotonic()
        self.last_ping = 0.0


def masked_frame(opcode, payload):
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=200,
                    help="handshakes in progress at once")
    ap.add_argument("--ping-interval", type=float, default=10.0)
    ap.add_argument("--handshake-timeout", type=float, default=15.0)
    ap.add_argument("--open-max", type=float, default=180.0,
                    help="give up opening after this many seconds")
    ap.add_argument("--hold-max", type=float, default=300.0,
                    help="exit by itself after this many seconds in total")
    ap.add_argument("--prefix", default="idle-bench-token")
    ap.add_argument("--per-source", type=int, default=500,
                    help="connections per source address in 127.0.0.0/8 "
                         "(0: all from the kernel's choice, 127.0.0.1)")
    a = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.count + 64:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE,
                               (min(hard, a.count + 256), hard))
        except (ValueError, OSError):
            pass

    stop = {"flag": False}

    def on_term(_sig, _frm):
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)

    sel = selectors.DefaultSelector()
    t0 = time.monotonic()
    deadline_all = t0 + a.hold_max
    tunnels = []
    pending = 0          # handshakes in progress
    next_index = 0
    opened = 0
    failed = 0
    fail_reasons = {}
    closed_by_server = 0
    pings_sent = 0
    pongs_sent = 0
    ping = masked_frame(0x9, b"idle")

    def fail(t, why):
        nonlocal pending, failed
        fail_reasons[why] = fail_reasons.get(why, 0) + 1
        failed += 1
        pending -= 1
        t.state = "failed"
        try:
            sel.unregister(t.sock)
        except (KeyError, ValueError):
            pass
        t.sock.close()

    def start_one():
        nonlocal next_index, pending
        i = next_index
        next_index += 1
        token = "%s-%06d-%s" % (a.prefix, i, os.urandom(4).hex())
        key = base64.b64encode(os.urandom(16)).decode()
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        t = Tunnel(s, token, key)
        tunnels.append(t)
        pending += 1
        if a.per_source > 0:
            try:
                s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                s.bind((source_addr(i // a.per_source), 0))
            except OSError as e:
                fail(t, "bind: %s" % e.strerror)
                return
        rc = s.connect_ex((HOST, a.port))
        if rc not in (0, 115):  # EINPROGRESS
            fail(t, "connect: %s" % os.strerror(rc))
            return
        t.out = ("GET /_tunnel HTTP/1.1\r\nHost: %s:%d\r\n"
                 "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\n"
                 "Origin: %s\r\nX-Client-Version: bench-idle\r\n\r\n"
                 % (HOST, a.port, key, token)).encode()
        sel.register(s, selectors.EVENT_WRITE, t)

    def handle_frames(t):
        """Parses server-to-client frames (unmasked); answers pings."""
        nonlocal closed_by_server, pongs_sent
        while len(t.buf) >= 2:
            b0, b1 = t.buf[0], t.buf[1]
            n = b1 & 0x7F
            off = 2
            if n == 126:
                if len(t.buf) < 4:
                    return
                n = int.from_bytes(t.buf[2:4], "big")
                off = 4
            elif n == 127:
                if len(t.buf) < 10:
                    return
                n = int.from_bytes(t.buf[2:10], "big")
                off = 10
            if b1 & 0x80:
                off += 4
            if len(t.buf) < off + n:
                return
            payload = t.buf[off:off + n]
            t.buf = t.buf[off + n:]
            op = b0 & 0x0F
            if op == 0x9:
                try:
                    t.sock.send(masked_frame(0xA, payload[:125]))
                    pongs_sent += 1
                except OSError:
                    pass
            elif op == 0x8:
                closed_by_server += 1
                close_tunnel(t)
                return

    def close_tunnel(t):
        t.state = "closed"
        try:
            sel.unregister(t.sock)
        except (KeyError, ValueError):
            pass
        t.sock.close()

    def on_event(t, mask):
        nonlocal pending, opened, closed_by_server
        if t.state == "connecting":
            err = t.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                fail(t, "connect: %s" % os.strerror(err))
                return
            t.state = "sending"
        if t.state == "sending":
            try:
                n = t.sock.send(t.out)
            except BlockingIOError:
                return
            except OSError as e:
                fail(t, "send: %s" % e.strerror)
                return
            t.out = t.out[n:]
            if not t.out:
                t.state = "head"
                sel.modify(t.sock, selectors.EVENT_READ, t)
            return
        try:
            data = t.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            data = None
            why = e.strerror
        else:
            why = "closed by server"
        if not data:
            if t.state == "head":
                fail(t, "handshake: %s" % why)
            elif t.state == "open":
                closed_by_server += 1
                close_tunnel(t)
            return
        t.buf += data
        if t.state == "head":
            end = t.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(t.buf) > 8192:
                    fail(t, "handshake: head too long")
                return
            head = t.buf[:end].decode("latin-1")
            t.buf = t.buf[end + 4:]
            status = head.split("\r\n", 1)[0]
            if " 101 " not in status + " ":
                fail(t, "handshake: %s" % status[:60])
                return
            want = base64.b64encode(
                hashlib.sha1(t.key.encode() + GUID).digest()).decode()
            accept = None
            for line in head.split("\r\n")[1:]:
                k, _, v = line.partition(":")
                if k.strip().lower() == "sec-websocket-accept":
                    accept = v.strip()
            if accept != want:
                fail(t, "handshake: bad Sec-WebSocket-Accept")
                return
            t.state = "open"
            t.last_ping = time.monotonic()
            pending -= 1
            opened += 1
        if t.state == "open" and t.buf:
            handle_frames(t)

    last_sweep = [0.0]

    def sweep(now):
        """Once a second: time out stuck handshakes, ping idle tunnels."""
        nonlocal pings_sent
        if now - last_sweep[0] < 1.0:
            return
        last_sweep[0] = now
        for t in tunnels:
            if t.state == "open":
                if now - t.last_ping >= a.ping_interval:
                    t.last_ping = now
                    try:
                        t.sock.send(ping)
                        pings_sent += 1
                    except OSError:
                        pass
            elif t.state in ("connecting", "sending", "head") and \
                    now - t.started > a.handshake_timeout:
                fail(t, "handshake: timeout")

    # ---- phase 1: open them all, at most --concurrency at a time
    open_deadline = t0 + a.open_max
    while (opened + failed < a.count and not stop["flag"]
           and time.monotonic() < open_deadline):
        while next_index < a.count and pending < a.concurrency:
            start_one()
        for key, mask in sel.select(timeout=0.2):
            on_event(key.data, mask)
        sweep(time.monotonic())
    open_seconds = time.monotonic() - t0
    unfinished = sum(1 for t in tunnels
                     if t.state in ("connecting", "sending", "head"))
    print(json.dumps({"event": "opened", "requested": a.count,
                      "opened": opened, "failed": failed,
                      "unfinished": unfinished, "seconds": round(open_seconds, 3),
                      "source_addresses": (
                          (a.count + a.per_source - 1) // a.per_source
                          if a.per_source > 0 else 1),
                      "fail_reasons": fail_reasons}), flush=True)

    # ---- phase 2: hold them open until stdin closes
    try:
        sel.register(sys.stdin.fileno(), selectors.EVENT_READ, None)
        watch_stdin = True
    except (ValueError, OSError):
        watch_stdin = False
    while not stop["flag"] and time.monotonic() < deadline_all:
        for key, mask in sel.select(timeout=0.5):
            if key.data is None:
                if not os.read(sys.stdin.fileno(), 4096):
                    stop["flag"] = True
                continue
            on_event(key.data, mask)
        sweep(time.monotonic())
    if watch_stdin:
        sel.unregister(sys.stdin.fileno())
    open_at_end = sum(1 for t in tunnels if t.state == "open")
    for t in tunnels:
        if t.state not in ("failed", "closed"):
            t.sock.close()
    print(json.dumps({"event": "closed", "open_at_end": open_at_end,
                      "closed_by_server": closed_by_server,
                      "pings_sent": pings_sent, "pongs_sent": pongs_sent,
                      "held_seconds": round(time.monotonic() - t0, 3)}),
          flush=True)


if __name__ == "__main__":
    main()
