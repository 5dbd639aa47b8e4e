/* The dialer's pure pieces, without sockets: the backoff schedule, and the
 * proxy's and the server's answers fed whole and one byte at a time, with
 * what each failure says. Then one attempt on loopback against a closed
 * port: the states the owner sees, the backoff that follows, and a close
 * that leaves nothing behind. */
#include "wstun_dialer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

#define RFC_KEY "dGhlIHNhbXBsZSBub25jZQ=="
#define RFC_ACCEPT "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

TEST(backoff_doubles_with_jitter_up_to_the_cap) {
  /* r = 0 gives the lower end (half the base), a huge r wraps in range */
  static const struct {
    unsigned attempt;
    uint64_t max, lo, hi;
  } cases[] = {
      {0, 30000, 100, 200},
      {1, 30000, 200, 400},
      {2, 30000, 400, 800},
      {5, 30000, 3200, 6400},
      {7, 30000, 12800, 25600},
      {8, 30000, 15000, 30000},
      {60, 30000, 15000, 30000},
      {0, 150, 75, 150},
      {3, 1, 0, 0}, /* a cap of 1 ms: no wait at all */
  };
  for (size_t i = 0; i < TEST_COUNT(cases); i++) {
    test_context("case %zu", i);
    CHECK(wstun__dialer_backoff(cases[i].attempt, cases[i].max, 0) ==
          cases[i].lo);
    uint64_t base = cases[i].hi - cases[i].lo;
    CHECK(wstun__dialer_backoff(cases[i].attempt, cases[i].max,
                                (uint32_t)base) == cases[i].hi);
    for (uint32_t r = 1; r < 100000; r = r * 7 + 3) {
      uint64_t d = wstun__dialer_backoff(cases[i].attempt, cases[i].max, r);
      CHECK(d >= cases[i].lo && d <= cases[i].hi);
    }
  }
  test_context(NULL);
}

/* Feeds `answer` to a fresh parser of `phase`, whole or byte by byte;
 * returns the result, with *used counted over the whole answer. */
static int feed_v2(wstun__dial_state phase, const char *answer, int bytewise,
                   size_t *used, char *why, size_t whyn, int offer_v2,
                   int *v2) {
  wstun__dialer d;
  memset(&d, 0, sizeof(d));
  d.cfg.offer_v2 = offer_v2;
  snprintf(d.ws_key, sizeof(d.ws_key), "%s", RFC_KEY);
  CHECK_EQ_INT(wstun__dialer_expect(&d, phase), 0);
  CHECK_EQ_INT(d.state, phase);
  size_t len = strlen(answer), off = 0;
  int rc = 0;
  why[0] = '\0';
  *used = 0;
  while (off < len && rc == 0) {
    size_t n = bytewise ? 1 : len - off, u = 0;
    rc =
        wstun__dialer_feed(&d, (const uint8_t *)answer + off, n, &u, why, whyn);
    if (rc == 0)
      CHECK(u == n); /* all consumed while the head is incomplete */
    *used = off + u;
    off += n;
  }
  wstun__dialer_answer_done(&d);
  CHECK_EQ_INT(d.hs_init, 0);
  *v2 = d.v2;
  return rc;
}

static int feed(wstun__dial_state phase, const char *answer, int bytewise,
                size_t *used, char *why, size_t whyn) {
  int v2;
  int rc = feed_v2(phase, answer, bytewise, used, why, whyn, 0, &v2);
  CHECK_EQ_INT(v2, 0);
  return rc;
}

TEST(proxy_answers) {
  static const struct {
    const char *answer;
    int want;
    const char *why;
  } cases[] = {
      {"HTTP/1.1 200 Connection established\r\n\r\n", 1, ""},
      {"HTTP/1.0 200 OK\r\nProxy-Agent: x\r\n\r\n", 1, ""},
      {"HTTP/1.1 204 No Content\r\n\r\n", 1, ""},
      {"HTTP/1.1 407 Proxy Authentication Required\r\n"
       "Proxy-Authenticate: Basic realm=\"p\"\r\nContent-Length: 0\r\n\r\n",
       WSTUN_ECONNECT, "proxy answered 407 Proxy Authentication Required"},
      {"HTTP/1.1 403 Forbidden\r\n\r\n", WSTUN_ECONNECT,
       "proxy answered 403 Forbidden"},
      {"HTTP/1.1 502 Bad Gateway\r\n\r\n", WSTUN_ECONNECT,
       "proxy answered 502 Bad Gateway"},
      {"SSH-2.0-OpenSSH\r\n\r\n", WSTUN_ECONNECT, "bad answer from the proxy"},
      {"HTTP/1.1 200 OK\r\n\r\nsurprise", WSTUN_ECONNECT,
       "proxy sent data after its answer"},
      {"HTTP/1.1 200 OK\r\n", 0, ""}, /* incomplete: more is needed */
  };
  char why[256];
  size_t used;
  for (size_t i = 0; i < TEST_COUNT(cases); i++)
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      test_context("case %zu bytewise %d", i, bytewise);
      int rc = feed(WSTUN__DIAL_PROXY, cases[i].answer, bytewise, &used, why,
                    sizeof(why));
      /* byte by byte, the extra bytes come in a later feed of their own */
      int want = cases[i].want;
      const char *want_why = cases[i].why;
      if (bytewise && strstr(cases[i].answer, "surprise")) {
        want = 1;
        want_why = "";
      }
      CHECK_EQ_INT(rc, want);
      CHECK_EQ_STR(why, want_why);
      if (rc == 1)
        CHECK(used == strlen(cases[i].answer) ||
              strstr(cases[i].answer, "surprise"));
    }
  test_context(NULL);
}

TEST(handshake_answers) {
  static const char good[] = "HTTP/1.1 101 Switching Protocols\r\n"
                             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                             "Sec-WebSocket-Accept: " RFC_ACCEPT "\r\n\r\n";
  static const struct {
    const char *answer;
    int want;
    const char *why;
  } cases[] = {
      {good, 1, ""},
      {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\n\r\n",
       WSTUN_EHANDSHAKE, "bad Sec-WebSocket-Accept"},
      {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\n\r\n",
       WSTUN_EHANDSHAKE, "bad Sec-WebSocket-Accept"},
      {"HTTP/1.1 403 Forbidden\r\nContent-Length: 3\r\n\r\nno\n",
       WSTUN_EHANDSHAKE, "server answered 403 Forbidden: no"},
      /* the refusal's body says why (its first line, control bytes as ?);
       * a 401 adds where the password comes from */
      {"HTTP/1.1 401 Unauthorized\r\nContent-Length: 26\r\n\r\n"
       "Invalid token or password\n",
       WSTUN_EHANDSHAKE,
       "server answered 401 Unauthorized: Invalid token or password; no "
       "password was sent and the server wants one for this token (wstuncli: "
       "-token TOKEN:PASSWORD, -password-file or WSTUNNEL_PASSWORD)"},
      {"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n\r\n"
       "9\r\nMax (1) \x1b\r\n7\r\nreached\r\n0\r\n\r\n",
       WSTUN_EHANDSHAKE,
       "server answered 429 Too Many Requests: Max (1) ?reached"},
      /* a body that runs to the close is not waited for */
      {"HTTP/1.1 503 Service Unavailable\r\n\r\nbusy", WSTUN_EHANDSHAKE,
       "server answered 503 Service Unavailable"},
      /* a bad chunk in it: still the refusal, with what came */
      {"HTTP/1.1 401 Unauthorized\r\nTransfer-Encoding: chunked\r\n\r\n"
       "4\r\nNope\r\nzz\r\n",
       WSTUN_EHANDSHAKE,
       "server answered 401 Unauthorized: Nope; no password was sent and the "
       "server wants one for this token (wstuncli: -token TOKEN:PASSWORD, "
       "-password-file or WSTUNNEL_PASSWORD)"},
      /* incomplete: the rest of the body is awaited */
      {"HTTP/1.1 401 Unauthorized\r\nContent-Length: 26\r\n\r\nInvalid", 0, ""},
      {"HTTP/1.1 400 Bad Request\r\n\r\n", WSTUN_EHANDSHAKE,
       "server answered 400 Bad Request"},
      {"\x16\x03\x01garbage\r\n\r\n", WSTUN_EHANDSHAKE,
       "bad handshake response"},
      {"HTTP/1.1 101 Switching", 0, ""},
  };
  char why[512];
  size_t used;
  for (size_t i = 0; i < TEST_COUNT(cases); i++)
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      test_context("case %zu bytewise %d", i, bytewise);
      CHECK_EQ_INT(feed(WSTUN__DIAL_HANDSHAKE, cases[i].answer, bytewise, &used,
                        why, sizeof(why)),
                   cases[i].want);
      CHECK_EQ_STR(why, cases[i].why);
    }
  test_context(NULL);
  /* bytes after the 101 are the tunnel's first frames: left unconsumed */
  char both[512];
  snprintf(both, sizeof(both), "%s\x81\x02hi", good);
  CHECK_EQ_INT(feed(WSTUN__DIAL_HANDSHAKE, both, 0, &used, why, sizeof(why)),
               1);
  CHECK(used == strlen(good));
  /* a long reason is cut as the log line always cut it */
  char longer[600];
  char reason[300];
  memset(reason, 'x', sizeof(reason) - 1);
  reason[sizeof(reason) - 1] = '\0';
  snprintf(longer, sizeof(longer), "HTTP/1.1 500 %s\r\n\r\n", reason);
  CHECK_EQ_INT(feed(WSTUN__DIAL_HANDSHAKE, longer, 1, &used, why, sizeof(why)),
               WSTUN_EHANDSHAKE);
  CHECK(strlen(why) == strlen("server answered 500 ") + 100);
  /* a long body: its start is enough, the rest is not awaited */
  char page[2000];
  char big[1500];
  memset(big, 'y', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  snprintf(page, sizeof(page),
           "HTTP/1.1 403 Forbidden\r\nContent-Length: 100000\r\n\r\n%s", big);
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    CHECK_EQ_INT(
        feed(WSTUN__DIAL_HANDSHAKE, page, bytewise, &used, why, sizeof(why)),
        WSTUN_EHANDSHAKE);
    CHECK(strlen(why) ==
          strlen("server answered 403 Forbidden: ") + WSTUN__DIAL_WHY_BODY);
  }
  /* with a password, the 401's hint says it was refused */
  {
    wstun__dialer d;
    memset(&d, 0, sizeof(d));
    char basic[] = "Basic dG9rOnB3";
    d.cfg.auth_header = basic;
    static const char ans[] = "HTTP/1.1 401 Unauthorized\r\n"
                              "Content-Length: 4\r\n\r\nNope";
    CHECK_EQ_INT(wstun__dialer_expect(&d, WSTUN__DIAL_HANDSHAKE), 0);
    CHECK_EQ_INT(wstun__dialer_feed(&d, (const uint8_t *)ans, strlen(ans),
                                    &used, why, sizeof(why)),
                 WSTUN_EHANDSHAKE);
    CHECK_EQ_STR(why, "server answered 401 Unauthorized: Nope; the token's "
                      "password was refused (wstuncli: -token TOKEN:PASSWORD, "
                      "-password-file or WSTUNNEL_PASSWORD)");
    wstun__dialer_answer_done(&d);
  }
  CHECK_EQ_INT(feed(WSTUN__DIAL_PROXY, longer, 0, &used, why, sizeof(why)),
               WSTUN_ECONNECT);
  CHECK(strlen(why) == strlen("proxy answered 500 ") + 120);
}

/* PROTOCOL.md 7.1, on the client: wstun.v2 in the 101 switches to v2; no
 * header (a Go server) is v1 on the same connection; a subprotocol we did
 * not offer fails the handshake, never a fallback. */
TEST(handshake_subprotocol) {
#define ANSWER(lines)                                                          \
  "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"                 \
  "Connection: Upgrade\r\nSec-WebSocket-Accept: " RFC_ACCEPT "\r\n" lines      \
  "\r\n"
  static const struct {
    const char *answer;
    int offer, want, v2;
    const char *why;
  } cases[] = {
      {ANSWER("Sec-WebSocket-Protocol: wstun.v2\r\n"), 1, 1, 1, ""},
      {ANSWER(""), 1, 1, 0, ""},
      {ANSWER(""), 0, 1, 0, ""},
      {ANSWER("Sec-WebSocket-Protocol: wstun.v2\r\n"), 0, WSTUN_EHANDSHAKE, 0,
       "server chose a subprotocol we did not offer"},
      {ANSWER("Sec-WebSocket-Protocol: chat\r\n"), 1, WSTUN_EHANDSHAKE, 0,
       "server chose a subprotocol we did not offer"},
      {ANSWER("Sec-WebSocket-Protocol: wstun.v3\r\n"), 1, WSTUN_EHANDSHAKE, 0,
       "server chose a subprotocol we did not offer"},
  };
#undef ANSWER
  char why[256];
  size_t used;
  for (size_t i = 0; i < TEST_COUNT(cases); i++)
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      test_context("case %zu bytewise %d", i, bytewise);
      int v2 = -1;
      CHECK_EQ_INT(feed_v2(WSTUN__DIAL_HANDSHAKE, cases[i].answer, bytewise,
                           &used, why, sizeof(why), cases[i].offer, &v2),
                   cases[i].want);
      CHECK_EQ_STR(why, cases[i].why);
      if (cases[i].want == 1)
        CHECK_EQ_INT(v2, cases[i].v2);
    }
  test_context(NULL);
}

TEST(ports_lists) {
  uint16_t(*r)[2] = NULL;
  size_t n = 0;
  CHECK_EQ_INT(wstun__parse_ports("8000..8100,8300", &r, &n), 0);
  REQUIRE(n == 2);
  CHECK_EQ_INT(r[0][0], 8000);
  CHECK_EQ_INT(r[0][1], 8100);
  CHECK_EQ_INT(r[1][0], 8300);
  CHECK_EQ_INT(r[1][1], 8300);
  free(r);
  static const char *const bad[] = {
      "", "0", "65536", "8100..8000", "1..", "..2", "1...2", "a", "1,,x"};
  for (size_t i = 0; i < TEST_COUNT(bad); i++) {
    test_context("%s", bad[i]);
    CHECK_EQ_INT(wstun__parse_ports(bad[i], &r, &n), WSTUN_EPORTS);
    CHECK(r == NULL);
  }
  test_context(NULL);
}

/* ---- the configuration -------------------------------------------------- */

TEST(config_url_gives_the_handshake_path) {
  static const struct {
    const char *url;
    int want;
    const char *path;
  } cases[] = {
      {"ws://h.example", 0, "/_tunnel"},
      {"ws://h.example/", 0, "/_tunnel"},
      {"wss://h.example/base/", 0, "/base/_tunnel"},
      {"ws://h.example/a/b//?q=1", 0, "/a/b/_tunnel"},
      {"http://h.example", WSTUN_EURL, NULL},
      {"ws://[::1", WSTUN_EURL, NULL},
  };
  for (size_t i = 0; i < TEST_COUNT(cases); i++) {
    test_context("%s", cases[i].url);
    wstun__dialer_config dc;
    memset(&dc, 0, sizeof(dc));
    CHECK_EQ_INT(wstun__dialer_config_url(&dc, cases[i].url), cases[i].want);
    if (cases[i].path)
      CHECK_EQ_STR(dc.handshake_path, cases[i].path);
    wstun__dialer_config_free(&dc);
  }
  test_context(NULL);
}

TEST(config_auth_headers) {
  wstun__dialer_config dc;
  memset(&dc, 0, sizeof(dc));
  /* token:password → Authorization; none from the URL */
  CHECK_EQ_INT(wstun__dialer_config_url(&dc, "ws://h.example"), 0);
  CHECK_EQ_INT(wstun__dialer_config_auth(&dc, "tok", "pw", "v 1"), 0);
  CHECK_EQ_STR(dc.auth_header, "Basic dG9rOnB3");
  CHECK(dc.tunnel_auth_header == NULL);
  CHECK_EQ_STR(dc.client_version, "v 1");
  wstun__dialer_config_free(&dc);
  /* the URL's user:pass alone → Authorization */
  CHECK_EQ_INT(wstun__dialer_config_url(&dc, "ws://u:p@h.example"), 0);
  CHECK_EQ_INT(wstun__dialer_config_auth(&dc, "tok", NULL, "v"), 0);
  CHECK_EQ_STR(dc.auth_header, "Basic dTpw");
  CHECK(dc.tunnel_auth_header == NULL);
  wstun__dialer_config_free(&dc);
  /* both: the URL's moves to X-Tunnel-Authorization */
  CHECK_EQ_INT(wstun__dialer_config_url(&dc, "ws://u:p@h.example"), 0);
  CHECK_EQ_INT(wstun__dialer_config_auth(&dc, "tok", "pw", "v"), 0);
  CHECK_EQ_STR(dc.auth_header, "Basic dG9rOnB3");
  CHECK_EQ_STR(dc.tunnel_auth_header, "Basic dTpw");
  wstun__dialer_config_free(&dc);
}

TEST(config_proxy) {
  wstun__logger quiet = {.level = WSTUN_LOG_ERROR};
  static const char *const names[] = {"http_proxy", "HTTP_PROXY", "all_proxy",
                                      "ALL_PROXY",  "no_proxy",   "NO_PROXY"};
  for (size_t i = 0; i < TEST_COUNT(names); i++)
    unsetenv(names[i]);
  wstun__dialer_config dc;
  memset(&dc, 0, sizeof(dc));
  CHECK_EQ_INT(wstun__dialer_config_url(&dc, "ws://h.example"), 0);
  /* "host:port" is http://host:port; credentials become a Basic header */
  CHECK_EQ_INT(wstun__dialer_config_transport(&dc, NULL, "a:b@127.0.0.1:3128",
                                              0, &quiet),
               0);
  CHECK_EQ_INT(dc.has_proxy, 1);
  CHECK_EQ_INT(dc.proxy_url.port, 3128);
  CHECK_EQ_STR(dc.proxy_auth, "Basic YTpi");
  CHECK(dc.tls == NULL);
  wstun__dialer_config_free(&dc);
  /* TLS to the proxy is not supported: an error when given outright … */
  CHECK_EQ_INT(wstun__dialer_config_url(&dc, "ws://h.example"), 0);
  CHECK_EQ_INT(
      wstun__dialer_config_transport(&dc, NULL, "https://p:1", 0, &quiet),
      WSTUN_EURL);
  wstun__dialer_config_free(&dc);
  /* … ignored (direct) when it came from the environment */
  setenv("http_proxy", "socks5://p:1", 1);
  CHECK_EQ_INT(wstun__dialer_config_url(&dc, "ws://h.example"), 0);
  CHECK_EQ_INT(wstun__dialer_config_transport(&dc, NULL, NULL, 1, &quiet), 0);
  CHECK_EQ_INT(dc.has_proxy, 0);
  wstun__dialer_config_free(&dc);
  setenv("http_proxy", "127.0.0.1:8080", 1);
  CHECK_EQ_INT(wstun__dialer_config_url(&dc, "ws://h.example"), 0);
  CHECK_EQ_INT(wstun__dialer_config_transport(&dc, NULL, "", 1, &quiet), 0);
  CHECK_EQ_INT(dc.has_proxy, 1);
  CHECK_EQ_INT(dc.proxy_url.port, 8080);
  wstun__dialer_config_free(&dc);
  unsetenv("http_proxy");
}

/* ---- one attempt on loopback -------------------------------------------- */

typedef struct seen {
  int states[8];
  int errs[8];
  size_t n;
  int closed;
} seen;

static void on_state(void *owner, wstun_client_state s, int err) {
  seen *w = owner;
  if (w->n < TEST_COUNT(w->states)) {
    w->states[w->n] = (int)s;
    w->errs[w->n++] = err;
  }
}

static int on_upgraded(void *owner, wstun__conn *conn, const uint8_t *rest,
                       size_t n) {
  (void)owner;
  (void)conn;
  (void)rest;
  (void)n;
  CHECK(owner == NULL); /* never called: no server listens */
  return -1;
}

static void on_closed(void *owner) {
  ((seen *)owner)->closed++;
}

static const wstun__dialer_cbs cbs = {on_state, on_upgraded, on_closed};

static void stop_loop(uv_timer_t *t) {
  uv_stop(t->loop);
}

TEST(a_refused_attempt_backs_off_and_closes_cleanly) {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  wstun__conn_shared shared;
  wstun__conn_shared_init(&shared, &loop);
  wstun__rng rng;
  REQUIRE(wstun__rng_init(&rng) == 0);
  wstun__logger log = {.level = WSTUN_LOG_ERROR};
  seen w;
  memset(&w, 0, sizeof(w));
  wstun__dialer d;
  memset(&d, 0, sizeof(d));
  REQUIRE(wstun__url_parse("ws://127.0.0.1:9/base", &d.cfg.tunnel_url) == 0);
  d.cfg.timeout_ms = 5000;
  d.cfg.reconnect_max_ms = 30000;
  wstun__dialer_init(&d, &loop, &shared, &rng, &log, &cbs, &w);
  CHECK_EQ_INT(d.state, WSTUN__DIAL_IDLE);
  wstun__dialer_start(&d);
  CHECK_EQ_INT(w.n, 1);
  CHECK_EQ_INT(w.states[0], WSTUN_CLIENT_CONNECTING);
  CHECK(d.state == WSTUN__DIAL_CONNECTING || d.state == WSTUN__DIAL_RESOLVING);
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  /* the refusal comes within a loop turn or two; stop before the retry
   * (100..200 ms) */
  uv_timer_start(&t, stop_loop, 50, 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  REQUIRE(w.n == 2);
  CHECK_EQ_INT(w.states[1], WSTUN_CLIENT_DISCONNECTED);
  CHECK_EQ_INT(w.errs[1], WSTUN_ECONNECT);
  CHECK_EQ_INT(d.state, WSTUN__DIAL_BACKOFF);
  CHECK_EQ_INT(d.attempt, 1);
  /* stopped: the pending retry is called off */
  wstun__dialer_stop(&d);
  CHECK_EQ_INT(d.state, WSTUN__DIAL_IDLE);
  wstun__dialer_close(&d);
  uv_close((uv_handle_t *)&t, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(w.closed, 1);
  CHECK_EQ_INT(w.n, 2);
  wstun__conn_shared_close(&shared, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  wstun__dialer_config_free(&d.cfg);
  wstun__rng_free(&rng);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(backoff_doubles_with_jitter_up_to_the_cap),
      T(proxy_answers),
      T(handshake_answers),
      T(handshake_subprotocol),
      T(ports_lists),
      T(config_url_gives_the_handshake_path),
      T(config_auth_headers),
      T(config_proxy),
      T(a_refused_attempt_backs_off_and_closes_cleanly)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
