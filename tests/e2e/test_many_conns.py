"""5,000 concurrent front connections to wstunsrv, all open at once, each
answered correctly (one event loop in the test drives every socket).

The test raises its own soft RLIMIT_NOFILE (children inherit it); it needs
a hard limit of at least N_CONNS * 2 + 500 and skips with the reason
otherwise. WSTUN_E2E_MANY_CONNS overrides the 5,000."""

import os
import resource
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import E2ETestCase, HOST, get, wait_until, main  # noqa: E402

N_CONNS = int(os.environ.get("WSTUN_E2E_MANY_CONNS", "5000"))
SLOW = float(os.environ.get("WSTUN_E2E_TIME_SCALE", "1"))


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < want:
        return False
    if soft == resource.RLIM_INFINITY or soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return True


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


class Conn:
    def __init__(self, i, sock):
        self.i = i
        self.sock = sock
        self.out = b""
        self.inbuf = bytearray()
        self.answers = []  # (status, body)
        self.want = 0
        self.error = None


def parse_answers(c):
    """Pop complete Content-Length responses out of c.inbuf."""
    while True:
        end = c.inbuf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(c.inbuf[:end]).decode("latin-1")
        lines = head.split("\r\n")
        status = int(lines[0].split(" ")[1])
        length = None
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            if k.strip().lower() == "content-length":
                length = int(v.strip())
        if length is None:
            raise ValueError("answer without Content-Length: %r" % head)
        if len(c.inbuf) < end + 4 + length:
            return
        body = bytes(c.inbuf[end + 4:end + 4 + length])
        del c.inbuf[:end + 4 + length]
        c.answers.append((status, body))


def exchange(conns, make_request, timeout):
    """Send one request on every connection at once and read every answer,
    in one selector loop. Returns the connections that failed."""
    sel = selectors.DefaultSelector()
    for c in conns:
        c.out = make_request(c)
        c.want = len(c.answers) + 1
        sel.register(c.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
    pending = len(conns)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for key, ev in sel.select(0.5):
            c = key.data
            try:
                if ev & selectors.EVENT_WRITE and c.out:
                    n = c.sock.send(c.out)
                    c.out = c.out[n:]
                    if not c.out:
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                if ev & selectors.EVENT_READ:
                    data = c.sock.recv(65536)
                    if not data:
                        raise ConnectionError("closed by the server")
                    c.inbuf += data
                    parse_answers(c)
                    if len(c.answers) >= c.want:
                        sel.unregister(c.sock)
                        pending -= 1
            except (OSError, ValueError) as e:
                c.error = e
                sel.unregister(c.sock)
                pending -= 1
    sel.close()
    return [c for c in conns if c.error is not None or len(c.answers) < c.want]


class ManyConnections(E2ETestCase):
    def test_5000_concurrent_front_connections(self):
        if not raise_nofile(min(20000, max(N_CONNS * 2 + 500, 4096))):
            self.skipTest("RLIMIT_NOFILE hard limit %d is too low for %d connections"
                          % (resource.getrlimit(resource.RLIMIT_NOFILE)[1], N_CONNS))
        # default settings (-max-requests-per-tunnel 20 counts requests not
        # yet written to the tunnel, so 5,000 at once must still pass),
        # except the connection caps: every connection comes from
        # 127.0.0.1, past the per-address default of 1,000
        srv, cli, be, tok = self.tunnel("-max-connections", "0",
                                        "-max-connections-per-ip", "0")
        # wstuncli may open thousands of backend connections at once: a
        # deeper backlog spares the test backend SYN retransmits
        be.httpd.socket.listen(4096)
        # the baseline: a /_stats connection may still be closing
        base_fds = min(fd_count(srv.pid) for _ in range(5) if time.sleep(0.1) is None)

        conns = []
        try:
            t0 = time.monotonic()
            for i in range(N_CONNS):
                s = socket.create_connection((HOST, srv.port), timeout=10 * SLOW)
                s.setblocking(False)
                conns.append(Conn(i, s))
            t_open = time.monotonic() - t0
            # all of them are open at the server at the same time
            self.assertTrue(wait_until(lambda: fd_count(srv.pid) >= base_fds + N_CONNS,
                                       10 * SLOW),
                            "wstunsrv holds %d fds, expected >= %d"
                            % (fd_count(srv.pid), base_fds + N_CONNS))
            # the server still answers a newcomer meanwhile
            self.assertStatus(get(srv.port, "/_health_check", timeout=10 * SLOW), 200)

            # 1. a tunneled request on every connection at once
            def tunneled(c):
                return (b"GET /_token/%s/echo?conn=%d HTTP/1.1\r\nHost: x\r\n\r\n"
                        % (tok.encode(), c.i))
            t1 = time.monotonic()
            failed = exchange(conns, tunneled, 90 * SLOW)
            t_tun = time.monotonic() - t1
            self.assertEqual(failed, [], "%d of %d connections got no answer, e.g. #%d: %r"
                             % (len(failed), N_CONNS, failed[0].i if failed else -1,
                                failed[0].error if failed else None))
            wrong = []
            for c in conns:
                status, body = c.answers[0]
                if status != 200 or (b'"/echo?conn=%d"' % c.i) not in body:
                    wrong.append((c.i, status, body[:120]))
            self.assertEqual(wrong[:5], [], "%d wrong answers" % len(wrong))

            # 2. the same connections, kept alive, ask the server itself
            t2 = time.monotonic()
            failed = exchange(conns, lambda c: b"GET /_health_check HTTP/1.1\r\nHost: x\r\n\r\n",
                              60 * SLOW)
            t_local = time.monotonic() - t2
            self.assertEqual(len(failed), 0, "%d connections failed the second round"
                             % len(failed))
            self.assertTrue(all(c.answers[1][0] == 200 for c in conns))
            peak_fds = fd_count(srv.pid)
        finally:
            for c in conns:
                c.sock.close()
        sys.stderr.write("[%d conns: opened in %.1fs, tunneled round %.1fs, local round "
                         "%.1fs, wstunsrv fds %d -> %d] " % (N_CONNS, t_open, t_tun, t_local,
                                                            base_fds, peak_fds))
        # every connection is let go once the requesters close
        self.assertTrue(wait_until(lambda: fd_count(srv.pid) <= base_fds + 2, 15 * SLOW),
                        "wstunsrv still holds %d fds (baseline %d)"
                        % (fd_count(srv.pid), base_fds))
        self.assertEqual(be.count(), N_CONNS)
        self.assertStatus(get(srv.port, "/_token/%s/echo" % tok), 200)


if __name__ == "__main__":
    main()
