#!/usr/bin/env python3
"""Interop: passwords, base path and client limits in both mixed pairings;
then side-by-side equivalence: the same requests against the Go server and
ours (each with the Go client behind it), and through the Go client and
ours (each behind the Go server), compared answer by answer."""

import os
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import interop  # noqa: E402
from interop import (HOST, GO_CLI_READY_RX, OUR_CLI_READY_RX, count_lines,  # noqa: E402
                     http_req, make_token, pairings, raw_http, wait_count)


class Auth:
    """-passwords on the server; the client's two ways to send one."""

    def _pw_pair(self, cli_token, tunnel_url=None, wait=True):
        tok = make_token()
        srv = self.any_server("-passwords", "%s:s3cret-pw" % tok)
        be = self.backend()
        kw = {}
        if tunnel_url:
            kw["tunnel_url"] = tunnel_url(srv, tok)
        cli = self.any_client(srv, cli_token(tok), server_url=be.url, **kw)
        if wait:
            self.wait_ready(cli)
        return srv, cli, be, tok

    def test_password_in_token_flag(self):
        # -token tok:pw -> Authorization: Basic base64(tok:pw)
        srv, _, _, tok = self._pw_pair(lambda t: t + ":s3cret-pw")
        self.assertStatus(self.tget(srv, tok, "/echo"), 200)

    def test_password_in_url_userinfo(self):
        # ws://tok:pw@host -token tok -> the URL's userinfo becomes the
        # Authorization header (both clients), which the server accepts
        # because its user name is the token.
        srv, _, _, tok = self._pw_pair(
            lambda t: t,
            tunnel_url=lambda s, t: "ws://%s:s3cret-pw@%s:%d" % (t, HOST, s.port))
        self.assertStatus(self.tget(srv, tok, "/echo"), 200)

    def test_token_password_with_url_userinfo(self):
        # both: Authorization from -token, the URL's userinfo goes into
        # X-Tunnel-Authorization, which no server reads
        srv, _, _, tok = self._pw_pair(
            lambda t: t + ":s3cret-pw",
            tunnel_url=lambda s, t: "ws://someone:else@%s:%d" % (HOST, s.port))
        self.assertStatus(self.tget(srv, tok, "/echo"), 200)

    def test_password_from_env(self):
        tok = make_token()
        srv = self.any_server("-passwords", "%s:s3cret-pw" % tok)
        be = self.backend()
        cli = self.any_client(srv, tok, server_url=be.url,
                              env={"WSTUNNEL_PASSWORD": "s3cret-pw"})
        if self.CLI == "go":
            # Documented Go client gap: it ignores $WSTUNNEL_PASSWORD (its
            # README recommends it), so the server refuses it with 401.
            time.sleep(3)
            self.assertEqual(count_lines(cli, GO_CLI_READY_RX), 0, cli.describe())
            self.assertTrue(count_lines(cli, r"401"), cli.describe())
            return
        self.wait_ready(cli)
        self.assertStatus(self.tget(srv, tok, "/echo"), 200)

    def test_wrong_or_missing_password_refused(self):
        for form in (lambda t: t + ":wrong", lambda t: t):
            srv, cli, _, tok = self._pw_pair(form, wait=False)
            time.sleep(3)
            self.assertEqual(count_lines(cli, self.ready_rx()), 0, cli.describe())
            r = self.tget(srv, tok, "/echo", timeout=5)
            self.assertStatus(r, 404)


class Paths:
    def test_base_path(self):
        be = self.backend()
        srv = self.any_server(base_path="/wstunnel")
        tok = make_token()
        cli = self.any_client(srv, tok, server_url=be.url)
        if self.CLI == "go":
            # Documented Go client bug: it drops the tunnel URL's path and
            # dials ws://host:port/_tunnel, which a server with -base-path
            # answers 404; the tunnel never comes up.
            self.assertTrue(wait_count(cli, r'"url":"ws://127\.0\.0\.1:%d/_tunnel"' % srv.port,
                                       1, 10), cli.describe())
            self.assertTrue(wait_count(cli, r'"Error opening connection"', 1, 10),
                            cli.describe())
            self.assertEqual(count_lines(cli, GO_CLI_READY_RX), 0)
            return
        self.wait_ready(cli)
        r = self.tget(srv, tok, "/echo?x=1")  # srv.path() adds the base path
        self.assertStatus(r, 200)
        self.assertEqual(be.last()["path"], "/echo?x=1")
        r = http_req(srv.port, "GET", "/_token/%s/echo" % tok)
        self.assertStatus(r, 404)
        r = http_req(srv.port, "GET", "/wstunnel/_health_check")
        self.assertStatus(r, 200)

    def test_two_clients_one_token(self):
        # two clients serve one token (two backends, to see who answers);
        # when one goes, the other carries on
        if self.SRV == "go":
            # Documented Go server bug: the connections of one token share
            # one sync.Cond (remoteServer.readCond) whose Signal, meant to
            # resume the reader of the connection that delivered a
            # response, can wake the other connection's reader instead; the
            # first then waits forever and requests answered on it hang
            # until -httptimeout (seen here: one of 12 requests hung 20 s;
            # reproduced with two Go clients too: the 13th request hung).
            self.skipTest("Go srv: two connections on one token can deadlock a "
                          "reader (shared readCond in ws.go/wstunsrv.go)")
        be1, be2 = self.backend("one"), self.backend("two")
        srv = self.any_server()
        tok = make_token()
        c1 = self.any_client(srv, tok, server_url=be1.url)
        self.wait_ready(c1)
        c2 = self.any_client(srv, tok, server_url=be2.url)
        self.wait_ready(c2)
        if srv.impl == "go":
            self.assertTrue(wait_count(srv, interop.GoServer.CONNECT_RX, 2, 10))
        names = set()
        for _ in range(12):
            r = self.tget(srv, tok, "/name")
            self.assertStatus(r, 200)
            names.add(r.body)
        self.assertTrue(names <= {b"one", b"two"}, names)
        c1.kill()
        def only_two():
            rs = [interop.try_req(self.tget, srv, tok, "/name", timeout=5) for _ in range(4)]
            return all(r is not None and r.body == b"two" for r in rs)
        ok = interop.wait_until(only_two, 20, 0.5)
        self.assertTrue(ok, srv.describe())

    def test_max_clients_per_token(self):
        be = self.backend()
        srv = self.any_server("-max-clients-per-token", "1")
        tok = make_token()
        c1 = self.any_client(srv, tok, server_url=be.url)
        self.wait_ready(c1)
        c2 = self.any_client(srv, tok, server_url=be.url)
        time.sleep(3)
        self.assertEqual(count_lines(c2, self.ready_rx()), 0,
                         "second client got in (429 expected)\n" + c2.describe())
        for _ in range(3):
            self.assertStatus(self.tget(srv, tok, "/echo"), 200)
        # the slot frees when the first client goes; the second gets in
        # (the Go client retries every 10 s at most)
        c1.kill()
        self.wait_ready(c2, timeout=30)
        self.assertStatus(self.tget(srv, tok, "/echo"), 200)


Auth_GoSrv_OurCli, Auth_OurSrv_GoCli = pairings(Auth)
Paths_GoSrv_OurCli, Paths_OurSrv_GoCli = pairings(Paths)


class ServerEquivalence(interop.InteropCase):
    """Our wstunsrv next to the Go srv, the Go cli behind each: the same
    requests must get the same answers (status, body, key headers)."""

    def setUp(self):
        super().setUp()
        self.be = self.backend()
        self.tok = make_token()
        self.ref = self.go_server()
        self.ours = self.server()
        self.ours.impl = "ours"
        for s in (self.ref, self.ours):
            c = self.go_client(s, self.tok, server_url=self.be.url)
            self.assertTrue(wait_count(c, GO_CLI_READY_RX, 1, 15), c.describe())
        self.assertTrue(wait_count(self.ref, interop.GoServer.CONNECT_RX, 1, 10))
        self.assertTrue(interop.wait_tunnels(self.ours, 1))

    def both(self, method, path, headers=None, body=None):
        out = []
        for s in (self.ref, self.ours):
            out.append(http_req(s.port, method, s.path(path.replace("TOK", self.tok)),
                                headers=headers, body=body, timeout=10))
        return out

    def assertSame(self, ref, ours, body=True):
        self.assertEqual((ours.status, ours.reason), (ref.status, ref.reason),
                         "Go: %r\nours: %r" % (ref, ours))
        if body:
            self.assertEqual(ours.body.rstrip(b"\n"), ref.body.rstrip(b"\n"))

    def test_plain_requests_same(self):
        for m, p in (("GET", "/_token/TOK/name"), ("GET", "/_token/TOK/status?code=404"),
                     ("GET", "/_token/nosuchtoken0123456789/x"), ("GET", "/notunnel"),
                     ("GET", "/_health_check"), ("POST", "/_tunnel")):
            ref, ours = self.both(m, p)
            self.assertSame(ref, ours)

    def test_token_is_in_path_but_nothing_after(self):
        # Go: ^/_token/([^/]+)(/.*) must match; "/_token/<tok>" -> 400
        # "Missing token in URI".
        ref, ours = self.both("GET", "/_token/TOK")
        self.assertEqual(ref.status, 400)
        self.assertSame(ref, ours)

    def test_reason_phrase_is_the_standard_one(self):
        # Go relays "201 Created Fine" as "201 Created".
        ref, ours = self.both("GET", "/_token/TOK/reason?code=201&text=Created%20Fine")
        self.assertEqual((ref.status, ref.reason), (201, "Created"))
        self.assertSame(ref, ours)

    def test_endpoints_never_tunneled(self):
        for p in ("/_health_check", "/_stats"):
            ref, ours = self.both("GET", p, headers={"X-Token": self.tok})
            self.assertEqual(ours.status, ref.status, p)
            self.assertEqual(ref.status, 200)
        self.assertEqual(self.be.count(), 0)

    def test_http10_requester(self):
        for s in (self.ref, self.ours):
            r = raw_http(s.port, b"GET /_token/%s/name HTTP/1.0\r\nHost: x\r\n\r\n"
                         % self.tok.encode())
            self.assertEqual((r.status, r.body), (200, b"backend"), s.impl)


class ServerListenHost(interop.InteropCase):
    # gap: wstunsrv -host localhost exits 2 "flag -host: not an IP address";
    # fixed on branch srvcompat
    def test_host_localhost(self):
        # `-host localhost` listens on the loopback for the Go server.
        port = interop.free_port()
        srv = self.go_server("-host", "localhost", port=port)  # later -host wins
        self.assertStatus(http_req(port, "GET", "/_health_check"), 200)
        srv.kill()
        port = interop.free_port()
        ours = interop.Server([interop.harness.SRV_BIN, "-host", "localhost", "-port",
                               str(port)], name="wstunsrv")
        self._procs.append(ours)
        self.addCleanup(ours.stop)
        ok = interop.wait_until(lambda: not ours.alive() or _answers(port), 10)
        self.assertTrue(ours.alive() and ok, ours.describe())


def _answers(port):
    try:
        return http_req(port, "GET", "/_health_check", timeout=1).status == 200
    except OSError:
        return False


class ClientEquivalence(interop.InteropCase):
    """Our wstuncli next to the Go cli behind one Go srv (two tokens): the
    same requests must reach the backend the same way and come back the
    same."""

    def start(self, server_path="", *cli_flags):
        self.be = self.backend()
        self.srv = self.go_server()
        self.ref_tok, self.our_tok = make_token("go"), make_token("ours")
        url = self.be.url + server_path
        c = self.go_client(self.srv, self.ref_tok, *cli_flags, server_url=url)
        self.assertTrue(wait_count(c, GO_CLI_READY_RX, 1, 15), c.describe())
        c = self.client(self.srv, self.our_tok, *cli_flags, server_url=url)
        self.assertTrue(wait_count(c, OUR_CLI_READY_RX, 1, 15), c.describe())

    def both(self, method, path, headers=None):
        out = []
        for tok in (self.ref_tok, self.our_tok):
            r = http_req(self.srv.port, method, "/_token/%s%s" % (tok, path),
                         headers=headers, timeout=10)
            out.append((r, self.be.last()))
        return out

    # gap: wstuncli drops the path of -server (backend sees /echo); fixed on
    # branch clicompat
    def test_server_path_is_a_prefix(self):
        # Go: -server http://h:p/prefix sends /prefix/<path> to the backend
        self.start("/prefix")
        (ref, ref_rec), (ours, our_rec) = self.both("GET", "/echo?a=1")
        self.assertEqual(ref_rec["path"], "/prefix/echo?a=1")
        self.assertEqual((ours.status, our_rec["path"]), (ref.status, ref_rec["path"]))

    # gap: wstuncli ignores the path of an X-Host value (Go: a prefix);
    # fixed on branch clicompat
    def test_x_host_path_is_a_prefix(self):
        self.start("", "-regexp", r"http://127\.0\.0\.1:[0-9]+/pre")
        h = {"X-Host": self.be.url + "/pre"}
        (ref, ref_rec), (ours, our_rec) = self.both("GET", "/echo", headers=h)
        self.assertEqual((ref.status, ref_rec["path"]), (200, "/pre/echo"))
        self.assertEqual((ours.status, our_rec["path"]), (200, "/pre/echo"))

    def test_backend_sees_same_request(self):
        self.start()
        (ref, ref_rec), (ours, our_rec) = self.both(
            "GET", "/echo?q=1", headers={"X-A": "1", "Connection": "keep-alive"})
        self.assertEqual(ours.status, ref.status)
        self.assertEqual((our_rec["method"], our_rec["path"]),
                         (ref_rec["method"], ref_rec["path"]))
        norm = lambda rec: sorted(k.lower() for k, _ in rec["headers"])  # noqa: E731
        self.assertEqual(norm(our_rec), norm(ref_rec))

    def test_own_answers_same(self):
        self.start()
        for h in ({"X-Host": "http://127.0.0.1:1"},):
            (ref, _), (ours, _) = self.both("GET", "/name", headers=h)
            self.assertEqual((ours.status, ours.body.rstrip(b"\n")),
                             (ref.status, ref.body.rstrip(b"\n")))


if __name__ == "__main__":
    interop.main()
