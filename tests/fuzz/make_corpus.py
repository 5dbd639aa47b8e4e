#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/corpus/<target>/ (run from anywhere;
the files are checked in, this script documents how they were made).

Layouts (see the targets): http_* and tunnel_frames start with a flags byte
and a split-seed byte; proto_prefix with a split byte; v2_frames with a
split seed; passwords with a flags byte; url and ws_handshake are raw;
front_request starts with flags, split seed and a 4-byte peer address, server_response with flags, two split seeds,
request kinds and count, then (selector, 2-byte length, payload) messages;
config starts with a piece-size byte.

No seed may crash: inputs that found bugs go to regressions/<target>/ (the
seeds carry no chunked trailers while those show up as headers, see
regressions/http_request/trailers-as-headers)."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("latin-1")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def ctl(*b):
    return "".join(chr(x) for x in b)


# ---- proto_prefix: split byte + message ---------------------------------------
write("proto_prefix", "request", ctl(0) + "0001GET / HTTP/1.1\r\n\r\n")
write("proto_prefix", "response_split", ctl(3) + "7cff HTTP/1.1 200 OK\r\n\r\n")
write("proto_prefix", "upper", ctl(2) + "ABCD x")
write("proto_prefix", "wrap", ctl(1) + "7d00 ")
write("proto_prefix", "bad_digit", ctl(0) + "12g4 ")
write("proto_prefix", "no_space", ctl(4) + "1234x")
write("proto_prefix", "short", ctl(1) + "00")

# ---- http_request: flags, split seed, [alloc N], bytes -------------------------
KEEP, SETT, FAILH, ALLOC = 0x02, 0x04, 0x08, 0x80
write("http_request", "get", ctl(0, 0) +
      "GET /index.html?q=1 HTTP/1.1\r\nHost: example.com\r\n"
      "User-Agent: curl/8.0\r\nAccept: */*\r\n\r\n")
write("http_request", "post_cl", ctl(0, 7) +
      "POST /api HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
      "Content-Length: 13\r\n\r\n{\"k\": \"v\"}\r\n")
write("http_request", "chunked", ctl(0, 1) +
      "PUT /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
      "Trailer: X-Sum\r\n\r\n"
      "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
write("http_request", "pipelined", ctl(0, 13) +
      "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
      "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
      "GET /3 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
write("http_request", "token_path", ctl(SETT, 0) +
      "GET /_token/abcdefghijklmnop/some/path?x=1 HTTP/1.1\r\nHost: srv:8080\r\n"
      "X-Forwarded-For: 10.0.0.1\r\nConnection: keep-alive, X-Foo\r\n"
      "X-Foo: drop me\r\nX-Bar: keep me\r\n\r\n")
write("http_request", "xtoken", ctl(SETT | KEEP, 3) +
      "DELETE /r/1 HTTP/1.1\r\nHost: srv\r\nX-Token: abcdefghijklmnop\r\n"
      "X-Host: http://backend:8080\r\nContent-Length: 0\r\n\r\n")
write("http_request", "upgrade", ctl(0, 0) +
      "GET /_tunnel HTTP/1.1\r\nHost: server.example.com\r\n"
      "Upgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "Origin: abcdefghijklmnop\r\nSec-WebSocket-Version: 13\r\n\r\n")
write("http_request", "http10", ctl(0, 2) +
      "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
      "HEAD /x HTTP/1.0\r\n\r\n")
write("http_request", "hop_by_hop", ctl(KEEP, 5) +
      "POST /h HTTP/1.1\r\nHost: a\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
      "Trailer: X\r\nProxy-Authorization: Basic eDp5\r\nProxy-Connection: x\r\n"
      "Upgrade: h2c\r\nConnection: TE, Upgrade,\t close , Keep-Alive\r\n"
      "Content-Length: 1\r\n\r\nZ")
write("http_request", "forms", ctl(FAILH, 9) +
      "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"
      "GET http://example.com:81/abs?x#f HTTP/1.1\r\nHost: example.com\r\n\r\n"
      "PATCH /p HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nok"
      "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
write("http_request", "allocfail", ctl(ALLOC | KEEP | SETT, 4, 9) +
      "POST /_token/abcdefghijklmnop/x HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n"
      "C: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")

# ---- http_response: flags, split seed, [alloc N], bytes ------------------------
HEADR = 0x01
write("http_response", "cl", ctl(0, 0) +
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")
write("http_response", "chunked", ctl(0, 3) +
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"
      "4\r\nWiki\r\n5;a=b\r\npedia\r\n0\r\n\r\n")
write("http_response", "eof_body", ctl(0, 6) +
      "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>until the end")
write("http_response", "http10_eof", ctl(0, 1) +
      "HTTP/1.0 200 OK\r\nServer: old\r\n\r\nbody until EOF")
write("http_response", "no_body", ctl(0, 0) +
      "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
      "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n")
write("http_response", "head", ctl(HEADR, 0) +
      "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/plain\r\n\r\n")
write("http_response", "switching", ctl(0, 0) +
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
write("http_response", "continue", ctl(0, 4) +
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 201 Created\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n")
write("http_response", "hop", ctl(KEEP, 2) +
      "HTTP/1.1 200 OK\r\nConnection: close, X-Private\r\nKeep-Alive: timeout=1\r\n"
      "X-Private: secret\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n")
write("http_response", "no_reason", ctl(0, 0) +
      "HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n"
      "HTTP/1.1 302\r\nLocation: http://elsewhere/\r\nContent-Length: 0\r\n\r\n")
write("http_response", "allocfail", ctl(ALLOC, 5, 7) +
      "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\n"
      "Content-Length: 7\r\n\r\nbackend")

# ---- ws_handshake: raw --------------------------------------------------------------
write("ws_handshake", "rfc6455_request",
      "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n"
      "Sec-WebSocket-Version: 13\r\n\r\n")
write("ws_handshake", "rfc6455_response",
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
      "Sec-WebSocket-Protocol: chat\r\n\r\n")
write("ws_handshake", "wstunnel_request",
      "GET /wstunnel/_tunnel HTTP/1.1\r\nHost: tunnel:8080\r\nupgrade: WebSocket\r\n"
      "connection: keep-alive, upgrade\r\nsec-websocket-version: 13\r\n"
      "sec-websocket-key: AQIDBAUGBwgJCgsMDQ4PEA==\r\nOrigin: abcdefghijklmnop\r\n"
      "X-Client-Version: 1.0\r\nAuthorization: Basic YWJjZGVmZ2hpamtsbW5vcDpwdw==\r\n\r\n")
write("ws_handshake", "bad_version",
      "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
write("ws_handshake", "short_key",
      "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZQ==\r\n\r\n")
write("ws_handshake", "base64", "dGhlIHNhbXBsZSBub25jZQ==")

# ---- url: raw ---------------------------------------------------------------------
urls = [
    "ws://localhost:8080/wstunnel",
    "wss://user:p%40ss@tunnel.example.com/base?x=1",
    "http://allowed.example.com@evil.example",
    "http://allowed.example.com%40evil.example/",
    "http://evil.example#@allowed.example.com",
    "http://evil.example\\@allowed.example.com/",
    "http://allowed.example.com.evil.example/",
    "http://a@b@c.example/",
    "https://[::1]:8443/path",
    "http://[fe80::1%25eth0]/",
    "HTTP://EXAMPLE.COM:80",
    "http://host:65535/",
    "http://host:65536/",
    "http://host:0/",
    "http://host:/",
    "ws://h:08080",
    "http://h?q=1#frag",
    "http://1.2.3.4:80/x",
    "ftp://example.com/",
]
for i, u in enumerate(urls):
    write("url", "url%02d" % i, u)

# ---- passwords: flags, "passwords\0base_path" -------------------------------------
write("passwords", "two", ctl(0) + "abcdefghijklmnop:secret,other_token_1234:pw\0/base")
write("passwords", "spaces", ctl(0) + " a:b ,  c:d  ,\0")
write("passwords", "empty_pw", ctl(0) + "a:\0")
write("passwords", "empty_tok", ctl(0) + ":b\0")
write("passwords", "commas", ctl(0) + ",,,\0base/")
write("passwords", "colons", ctl(0) + "a::b:c\0//")
write("passwords", "allocfail", ctl(1, 3) + "a:b,c:d,e:f\0/x/")

# ---- tunnel_frames: flags, split seed, frames -------------------------------------
SERVER, PARSE, PAUSE, DROP, FORGET, SEND, CLOSE, FAILD = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80)
TEXT, BIN, CONT, CLOSEOP, PING, PONG = 1, 2, 0, 8, 9, 10


def frame(op, payload, fin=True, mask=None):
    if isinstance(payload, str):
        payload = payload.encode("latin-1")
    b0 = (0x80 if fin else 0) | op
    n = len(payload)
    m = 0x80 if mask is not None else 0
    if n < 126:
        hdr = bytes([b0, m | n])
    elif n < 65536:
        hdr = bytes([b0, m | 126]) + struct.pack(">H", n)
    else:
        hdr = bytes([b0, m | 127]) + struct.pack(">Q", n)
    if mask is None:
        out = hdr + payload
    else:
        key = bytes(mask)
        out = hdr + key + bytes(c ^ key[i % 4] for i, c in enumerate(payload))
    return out.decode("latin-1")


RESP = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
K = (0x12, 0x34, 0x56, 0x78)
Z = (0, 0, 0, 0)
write("tunnel_frames", "server_one", ctl(SERVER | PARSE, 0) +
      frame(BIN, "0001" + RESP, mask=K))
write("tunnel_frames", "server_fragments", ctl(SERVER | PARSE | PAUSE, 5) +
      frame(BIN, "00", fin=False, mask=K) +
      frame(PING, "are you there", mask=Z) +
      frame(CONT, "2a HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            fin=False, mask=K) +
      frame(CONT, "2\r\nhi\r\n0\r\n\r\n", mask=K))
write("tunnel_frames", "client_two", ctl(SEND, 3) +
      frame(BIN, "0001GET / HTTP/1.1\r\nHost: a\r\n\r\n") +
      frame(BIN, "0002 POST /x HTTP/1.1\r\nContent-Length: 1\r\n\r\nz"))
write("tunnel_frames", "text_frame", ctl(SERVER, 0) +
      frame(BIN, "0003 " + RESP, mask=K) + frame(TEXT, "hello", mask=K) +
      frame(BIN, "0004 " + RESP, mask=K))
write("tunnel_frames", "bad_prefix", ctl(SERVER | PARSE, 2) +
      frame(BIN, "zzzz " + RESP, mask=K) + frame(BIN, "ABCD " + RESP, mask=K))
write("tunnel_frames", "close", ctl(SERVER, 0) +
      frame(BIN, "0005 " + RESP, fin=False, mask=K) +
      frame(CLOSEOP, struct.pack(">H", 1000).decode("latin-1") + "bye", mask=K))
write("tunnel_frames", "long", ctl(DROP | FORGET | PARSE, 7) +
      frame(BIN, "0004 HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n" + "x" * 300) +
      frame(BIN, "0005 HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n" + "y" * 300) +
      frame(PONG, "wstun"))
write("tunnel_frames", "close_while_sending", ctl(SERVER | SEND | CLOSE | PARSE, 4) +
      frame(BIN, "0006 HTTP/1.1 200 OK\r\n", fin=False, mask=K) +
      frame(CONT, "Content-Length: 0\r\n\r\n", mask=K) +
      frame(BIN, "0007 " + RESP, mask=K))
write("tunnel_frames", "fail_data", ctl(SERVER | FAILD | SEND, 9) +
      frame(BIN, "0008 HTTP/1.1 200 OK\r\n\r\nbad!", fin=False, mask=K) +
      frame(CONT, "more", mask=K) + frame(BIN, "0009 " + RESP, mask=K))

# ---- router: buffer size byte (0: 4096), then "base\0target" or target ---------
TOK = "abcdefghijklmnop"
write("router", "token_path", ctl(0) + "/_token/" + TOK + "/some/path?x=1")
write("router", "token_only", ctl(0) + "/_token/" + TOK)
write("router", "token_query", ctl(0) + "/_token/" + TOK + "?a=/b&c")
write("router", "empty_token", ctl(0) + "/_token//x")
write("router", "dotdot", ctl(0) + "/_token/" + TOK + "/../../etc/passwd")
write("router", "encoded", ctl(0) + "/_token/" + TOK + "%2F..%2fx/y")
write("router", "base", ctl(0) + "/wstunnel\0/wstunnel/_token/" + TOK + "/p")
write("router", "base_query", ctl(0) + "/b\0/b?/_token/x")
write("router", "base_prefix", ctl(0) + "/b\0/bb/_token/" + TOK)
write("router", "not_token", ctl(0) + "/_tokens/" + TOK + "/x")
write("router", "query_token", ctl(0) + "/x?/_token/" + TOK)
write("router", "small_buf", ctl(8) + "/_token/" + TOK + "?" + "q" * 20)
write("router", "stats", ctl(0) + "/_stats")

# ---- dial_answer: flags (bit 0: the proxy's answer) + split seed + answer ---------
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
write("dial_answer", "upgrade", ctl(0, 0) + "HTTP/1.1 101 Switching Protocols\r\n"
      "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
      + ACCEPT + "\r\n\r\n\x81\x02hi")
write("dial_answer", "upgrade_bytewise", ctl(0, 1) + "HTTP/1.1 101 x\r\n"
      "Sec-WebSocket-Accept: " + ACCEPT + "\r\n\r\n")
write("dial_answer", "refused", ctl(0, 5) + "HTTP/1.1 403 Forbidden\r\n"
      "Content-Length: 2\r\n\r\nno")
write("dial_answer", "bad_accept", ctl(0, 3) + "HTTP/1.1 101 x\r\n"
      "Sec-WebSocket-Accept: AAAA\r\n\r\n")
write("dial_answer", "proxy_ok", ctl(1, 2) + "HTTP/1.1 200 Connection "
      "established\r\n\r\n")
write("dial_answer", "proxy_407", ctl(1, 7) + "HTTP/1.1 407 Proxy "
      "Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n")
write("dial_answer", "proxy_extra", ctl(1, 0) + "HTTP/1.0 200 OK\r\n\r\nSSH-2.0")
write("dial_answer", "garbage", ctl(1, 4) + "\x16\x03\x01\x00\x05hello\r\n\r\n")

# ---- client_ports: flags (bit 0: fail the N+1-th allocation, N next) + list ------
write("client_ports", "one", ctl(0) + "8000")
write("client_ports", "range", ctl(0) + "8000..8100")
write("client_ports", "list", ctl(0) + "8000..8100, 8300 ,8505")
write("client_ports", "edges", ctl(0) + "1,65535,1..65535")
write("client_ports", "bad_order", ctl(0) + "9000..8000")
write("client_ports", "three_dots", ctl(0) + "8000...8100")
write("client_ports", "zero", ctl(0) + "0")
write("client_ports", "big", ctl(0) + "65536")
write("client_ports", "commas", ctl(0) + ",, ,")
write("client_ports", "open_range", ctl(0) + "8000..")
write("client_ports", "allocfail", ctl(1, 0) + "1,2,3")

# ---- flags: argv[1..] separated by NUL bytes --------------------------------------
write("flags", "values", "-port\08080\0--name=x\0-verbose\0--big\018446744073709551615")
write("flags", "eq_forms", "--port=0\0-timeout=3\0-neg=-100\0-on=false\0-bounded=1024")
write("flags", "help", "-port\01\0--help")
write("flags", "version", "--version")
write("flags", "unknown", "-nope\01")
write("flags", "missing", "-port")
write("flags", "range", "-timeout\02")
write("flags", "spaces", "-port\0 +80")
write("flags", "bare", "x\0-")
write("flags", "bool_bad", "-on=yes")

# ---- front_request: flags, split seed, peer (4 bytes), [alloc N], bytes -----------
# (none of these makes the head text grow under route_tunnel's target: that
# use-after-free is in regressions/front_request/)
FR_BASE, FR_V6, FR_SMALLH, FR_SMALLB, FR_EOF, FR_LOST, FR_V2, FR_ALLOC = (
    0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80)
PEER = ctl(192, 0, 2, 7)
write("front_request", "xtoken", ctl(0, 0) + PEER +
      "GET /x/y?q=1 HTTP/1.1\r\nHost: srv\r\nX-Token: t\r\n\r\n")
write("front_request", "token_path", ctl(0, 5) + PEER +
      "GET /_token/t/some/path?x=1 HTTP/1.1\r\nHost: srv\r\n"
      "X-Forwarded-For: 10.0.0.1\r\nConnection: keep-alive, X-Foo\r\n"
      "X-Foo: drop me\r\nX-Bar: keep me\r\n\r\n")
write("front_request", "token_only", ctl(FR_V6, 0) + PEER +
      "GET /_token/tunnel-token-0123?a=b HTTP/1.1\r\nHost: srv\r\n\r\n")
write("front_request", "post_cl", ctl(0, 3) + PEER +
      "POST /api HTTP/1.1\r\nHost: a\r\nX-Token: t\r\n"
      "Content-Length: 11\r\nExpect: 100-continue\r\n\r\nhello world")
write("front_request", "chunked", ctl(FR_LOST, 1) + PEER +
      "PUT /_token/t/up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
      "TE: trailers\r\nUpgrade: h2c\r\n\r\n"
      "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
write("front_request", "upgrade_v2", ctl(FR_V2, 7) + PEER +
      "GET /_token/t/ws HTTP/1.1\r\nHost: h\r\n"
      "Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"
      "Upgrade: x/2\r\nSec-WebSocket-Key: k\r\n\r\n\x81\x02hi")
write("front_request", "upgrade_v2_body", ctl(FR_V2 | FR_BASE, 7) + PEER +
      "GET /wst/ws HTTP/1.1\r\nX-Token: tunnel-token-0123\r\n"
      "Connection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\n"
      "abcGET /wst/_health_check HTTP/1.1\r\n\r\n")
write("front_request", "pipelined", ctl(FR_EOF, 13) + PEER +
      "GET /1 HTTP/1.1\r\nHost: a\r\nX-Token: t\r\n\r\n"
      "POST /_token/t/2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
      "GET /_health_check HTTP/1.1\r\n\r\n"
      "GET /3 HTTP/1.1\r\nX-Token: nope\r\n\r\n"
      "DELETE /4 HTTP/1.1\r\nX-Token: t\r\nConnection: close\r\n\r\n")
write("front_request", "base", ctl(FR_BASE, 2) + PEER +
      "GET /wst/_token/t/p HTTP/1.1\r\n\r\n"
      "GET /wstx HTTP/1.1\r\nX-Token: t\r\n\r\n"
      "GET /wst/?q HTTP/1.1\r\nX-Token: t\r\n\r\n")
write("front_request", "too_big", ctl(FR_SMALLB | FR_SMALLH, 7) + PEER +
      "POST /b HTTP/1.1\r\nX-Token: t\r\nContent-Length: 5000\r\n\r\n" +
      "z" * 5000 + "GET /c HTTP/1.1\r\nX-Token: t\r\n\r\n")
write("front_request", "http10", ctl(0, 0) + PEER +
      "GET /old HTTP/1.0\r\nX-Token: t\r\nProxy-Connection: keep-alive\r\n"
      "Keep-Alive: 300\r\n\r\n")
write("front_request", "allocfail", ctl(FR_ALLOC, 4) + PEER + ctl(9) +
      "POST /x HTTP/1.1\r\nX-Token: t\r\nTransfer-Encoding: chunked\r\n\r\n"
      "3\r\nabc\r\n0\r\n\r\n")

# ---- server_response: flags, fragment seed, delivery seed, request kinds,
# requesters - 1, then messages: selector, 2-byte length, payload ---------------------
SR_PING, SR_CLOSE, SR_EOF, SR_PIPE, SR_ALLOC = 0x01, 0x02, 0x04, 0x10, 0x20
GET, HEAD, OLD, POST = 0, 1, 2, 3


def sr(flags, fseed, dseed, kinds, msgs):
    k = 0
    for i, kind in enumerate(kinds):
        k |= kind << (2 * i)
    out = ctl(flags, fseed, dseed, k, len(kinds) - 1)
    for sel, payload in msgs:
        out += ctl(sel) + struct.pack(">H", len(payload)).decode("latin-1") + payload
    return out


OK = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
write("server_response", "one", sr(0, 0, 0, [GET], [(0, OK)]))
write("server_response", "four", sr(SR_PING, 5, 3, [GET, HEAD, OLD, POST], [
    (2, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        "5\r\nhello\r\n0\r\n\r\n"),
    (1, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"),
    (0, "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
        "Connection: keep-alive\r\nContent-Length: 3\r\n\r\nno\n"),
    (3, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")]))
write("server_response", "close_delimited", sr(0, 7, 2, [GET, OLD], [
    (0, "HTTP/1.0 200 OK\r\n\r\nuntil the end"),
    (1, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")]))
write("server_response", "bad_ids", sr(0, 0, 1, [GET, GET], [
    (4, OK), (5, OK), (6, ""), (7, "0001" + OK), (0, OK), (0, OK)]))
write("server_response", "garbage", sr(0, 3, 0, [POST], [
    (0, "HTTP/1.1 2000 What\r\n\r\n")]))
write("server_response", "truncated", sr(SR_CLOSE, 4, 4, [GET, GET], [
    (0, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
    (0, "HTTP/1.1 204 No Content\r\n\r\n")]))
write("server_response", "cut_head", sr(0, 2, 0, [GET], [
    (0, "HTTP/1.1 200 OK\r\nContent-Le")]))
# a complete response then bytes that are not one (only one letter away)
write("server_response", "trailing_garbage", sr(0, 0, 0, [GET], [
    (0, OK + "XTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")]))
# a response, then one for an id nobody uses (SEL_MORE, 0x08, on the second
# selector would put both in one message)
write("server_response", "near_merge", sr(0, 0, 0, [GET], [
    (0, OK), (4, "HTTP/1.1 200 OK\r\n\r\n")]))
# second requests: ids 2 and 3 (after 0 and 1), named by selectors 0 and 1
write("server_response", "pipelined", sr(SR_PIPE, 3, 2, [GET, HEAD], [
    (1, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
    (0, "HTTP/1.1 200 OK\r\n"
        "Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"),
    (0, OK), (1, "HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n")]))
write("server_response", "pipelined_close", sr(SR_PIPE | SR_CLOSE, 0, 0,
    [POST, OLD, GET], [(0, OK), (1, "HTTP/1.0 200 OK\r\n\r\nbye"), (0, OK)]))
# allocations fail after 6 (the byte after the count)
write("server_response", "allocfail", sr(SR_ALLOC | SR_PIPE, 2, 3, [GET, POST],
    [])[:5] + ctl(6) + sr(0, 0, 0, [GET], [
    (0, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"),
    (1, OK), (0, OK)])[5:])
write("server_response", "eof", sr(SR_EOF, 0, 0, [GET, POST], [(0, OK), (1, OK)]))

# ---- v2_frames: split seed + one v2 frame (PROTOCOL.md 7.10) ---------------
def v2(t, f, stream, payload=b""):
    return bytes([t, f]) + len(payload).to_bytes(3, "big") + \
        stream.to_bytes(4, "big") + payload


def u32(*v):
    return b"".join(x.to_bytes(4, "big") for x in v)


write("v2_frames", "request_head",
      bytes([0]) + v2(1, 1, 1, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"))
write("v2_frames", "response_head_split",
      bytes([3]) + v2(1, 0, 1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"))
write("v2_frames", "data", bytes([2]) + v2(2, 0, 1, b"hi"))
write("v2_frames", "end", bytes([1]) + v2(2, 1, 1))
write("v2_frames", "window", bytes([5]) + v2(4, 0, 1, u32(0x80000)))
write("v2_frames", "window_tunnel", bytes([0]) + v2(4, 0, 0, u32(0x800000)))
write("v2_frames", "reset", bytes([4]) + v2(3, 0, 3, u32(5)))
write("v2_frames", "goaway", bytes([7]) + v2(5, 0, 0, u32(3, 0)))
# window operations after the frame: op byte + u32, five bytes each
write("v2_frames", "window_ops", bytes([0]) + v2(2, 1, 1) +
      bytes([2]) + u32(0x80000) + bytes([3]) + u32(0x80000) + bytes([4]) +
      u32(0) + bytes([0]) + u32(0x100000) + bytes([1]) + u32(0x7fffffff) +
      bytes([6]) + u32(0x200000) + bytes([5]) + u32(1))
write("v2_frames", "bad_type", bytes([0]) + b"0001GET / HTTP/1.1\r\n\r\n")
write("v2_frames", "bad_increment", bytes([1]) + v2(4, 0, 1, u32(0)))
write("v2_frames", "bad_reserved", bytes([0]) + v2(2, 0, 0x80000001, b"x"))

# ---- tunnel_v2: flags, split seed, records (op, 2-byte length, v2 frame) ----
# (see fuzz_tunnel_v2.c: ops below 0xf0 are messages in (op & 3) + 1
# fragments; 0xf0.. are owner actions)
TV2_SERVER, TV2_HOLD, TV2_FAILDATA, TV2_FORGET, TV2_RESET, TV2_SEND = \
    1, 2, 4, 8, 16, 32


def tv2(op, frame):
    return bytes([op]) + len(frame).to_bytes(2, "big") + frame


RESP = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
REQ = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
write("tunnel_v2", "server_response",
      bytes([TV2_SERVER, 0]) + tv2(0, v2(1, 0, 1, RESP)) +
      tv2(1, v2(2, 0, 1, b"hi")) + tv2(0, v2(2, 1, 1)))
write("tunnel_v2", "server_split_windows",
      bytes([TV2_SERVER | TV2_HOLD, 9]) + tv2(3, v2(1, 0, 3, RESP)) +
      tv2(2, v2(2, 0, 3, b"x" * 4000)) + bytes([0xf0, 0]) + (4000).to_bytes(3, "big") +
      tv2(0, v2(4, 0, 3, u32(0x1000))) + tv2(0, v2(4, 0, 0, u32(0x1000))) +
      tv2(0, v2(2, 1, 3)))
write("tunnel_v2", "server_resets",
      bytes([TV2_SERVER | TV2_RESET, 0]) + tv2(0, v2(1, 0, 1, RESP)) +
      tv2(0, v2(2, 0, 1, b"#")) + tv2(0, v2(3, 0, 3, u32(5))) +
      tv2(0, v2(2, 0, 1, b"late")) + bytes([0xf1]) + u32(5) + bytes([5]))
write("tunnel_v2", "server_goaway",
      bytes([TV2_SERVER, 0]) + tv2(0, v2(5, 0, 0, u32(1, 0))) +
      bytes([0xf4]) + u32(7) + bytes([1]) + tv2(0, v2(5, 0, 0, u32(3, 0))))
write("tunnel_v2", "server_stream_errors",
      bytes([TV2_SERVER, 0]) + tv2(0, v2(2, 0, 1, b"hi")) +
      tv2(0, v2(1, 0, 3, RESP)) + tv2(0, v2(2, 1, 3)) + tv2(0, v2(2, 0, 3, b"x")))
write("tunnel_v2", "client_requests",
      bytes([TV2_SEND, 0]) + tv2(0, v2(1, 1, 1, REQ)) +
      tv2(1, v2(1, 0, 3, b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n")) +
      tv2(0, v2(2, 1, 3, b"ab")) + tv2(0, v2(4, 0, 1, u32(100))) +
      bytes([0xf2, 0]) + tv2(0, v2(1, 1, 5, REQ)))
write("tunnel_v2", "client_forget_fail",
      bytes([TV2_FORGET | TV2_FAILDATA, 3]) + tv2(0, v2(1, 0, 3, REQ)) +
      tv2(0, v2(2, 0, 3, b"abc")) + tv2(0, v2(1, 0, 5, REQ)) +
      tv2(0, v2(2, 0, 5, b"!")) + bytes([0xf3, 0]))
# a request head continued over two HEAD frames (7.2), then a second one
# after a short HEAD (a stream error); a head the server sends in three
write("tunnel_v2", "client_continued_head",
      bytes([TV2_SEND, 0]) + bytes([0xf6]) + u32(1) + bytes([0]) +
      tv2(0, v2(1, 1, 1, b"x: y\r\n\r\n")) + tv2(0, v2(1, 0, 3, REQ)) +
      bytes([0xf6]) + u32(3) + bytes([1]))
write("tunnel_v2", "server_sends_a_long_head",
      bytes([TV2_SERVER, 0]) + bytes([0xf7]) + u32(7) +
      tv2(0, v2(4, 0, 0, u32(0x1000))))
write("tunnel_v2", "client_tunnel_error",
      bytes([0, 0]) + tv2(0, v2(1, 1, 1, REQ)) + tv2(0, bytes([6, 0, 0, 0, 0, 0, 0, 0, 1])))

# ---- config: piece-size byte + an INI file ------------------------------------
with open(os.path.join(HERE, "..", "..", "examples", "wstuncli.conf"), "rb") as f:
    write("config", "example", bytes([0]) + f.read())
write("config", "top_level", ctl(3) +
      "\xef\xbb\xbf# one tunnel\r\ntunnel = ws://127.0.0.1:8080\r\n"
      "token = aaaaaaaaaaaaaaaaaaaa:pw\r\nserver: http://127.0.0.1:80\r\n"
      "timeout = 45\ninsecure = True\nlog-level = debug\n")
write("config", "sections", ctl(7) +
      "tunnel = wss://h\npassword-file = ok-top\n\n[tunnel web]\n"
      "token = bbbbbbbbbbbbbbbbbbbb\nserver = http://b:1/pre\n"
      "[tunnel api]\ntoken = cccccccccccccccccccc\nregexp = http://(a|b):[0-9]+\n"
      "password = p;#not a comment\ntimeout = 5\ncertfile = /x.pem\n"
      "[tunnel  other ]\ntoken=dddddddddddddddddddd\nserver=http://o\n"
      "password-file = nope\n")
write("config", "errors", ctl(0) +
      "bogus = 1\ntimeout = soon\njust words\n= x\nconfig = y\n"
      "[tunnel a]\n[tunnel a]\n[svc b]\n[tunnel]\n[tunnel c\n[tunnel d] x\n"
      "[tunnel e]\ntoken = short\ninsecure = maybe\ntunnel = ws://h\ntunnel = ws://i\n")
write("config", "nul_and_long", ctl(1) +
      "server = a\0b\ntunnel = ws://h\n" + "x = " + "y" * 5000 + "\n[tunnel n\0]\n")
