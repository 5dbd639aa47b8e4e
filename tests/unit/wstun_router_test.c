/* The router: every route the server knows and every base-path edge,
 * table-driven over request heads parsed by the real request parser. */
#include "wstun_router.h"

#include <stdlib.h>

#include "test.h"

typedef struct {
  wstun__http_head *h;
} got_head;

static int keep_head(void *ud, wstun__http_head *h) {
  got_head *g = ud;
  g->h = h;
  return 1; /* pause: the head stays readable */
}

static const wstun__http_parser_cbs head_cbs = {.on_head = keep_head};

typedef struct {
  const char *base;
  const char *request; /* the head (CRLF added per line by the test) */
  wstun__route_kind kind;
  int status;       /* ANSWER */
  const char *text; /* ANSWER, prefix */
  int close, stop;
  const char *tok;    /* TUNNEL */
  const char *target; /* TUNNEL */
} route_case;

static const route_case cases[] = {
    /* the Go server's endpoints */
    /* the server answers it: 200, or 503 while draining */
    {"", "GET /_health_check HTTP/1.1", WSTUN__ROUTE_HEALTH, 0, NULL, 0, 0,
     NULL, NULL},
    {"", "GET /_health_check?x=1 HTTP/1.1", WSTUN__ROUTE_HEALTH, 0, NULL, 0, 0,
     NULL, NULL},
    {"", "GET /_stats HTTP/1.1", WSTUN__ROUTE_STATS, 0, NULL, 0, 0, NULL, NULL},
    {"", "GET /_tunnel HTTP/1.1", WSTUN__ROUTE_UPGRADE, 0, NULL, 0, 1, NULL,
     NULL},
    {"", "GET /_tunnel?x HTTP/1.1", WSTUN__ROUTE_UPGRADE, 0, NULL, 0, 1, NULL,
     NULL},
    /* the operator's */
    {"", "GET /admin/monitoring HTTP/1.1", WSTUN__ROUTE_MONITORING, 0, NULL, 0,
     0, NULL, NULL},
    {"", "GET /admin/auditing HTTP/1.1", WSTUN__ROUTE_AUDITING, 0, NULL, 0, 0,
     NULL, NULL},
    {"", "GET /metrics HTTP/1.1", WSTUN__ROUTE_METRICS, 0, NULL, 0, 0, NULL,
     NULL},
    /* never tunneled, even with X-Token; /metrics is */
    {"", "GET /_stats HTTP/1.1\r\nX-Token: abc", WSTUN__ROUTE_STATS, 0, NULL, 0,
     0, NULL, NULL},
    {"", "GET /_health_check HTTP/1.1\r\nX-Token: abc", WSTUN__ROUTE_HEALTH, 0,
     NULL, 0, 0, NULL, NULL},
    {"", "GET /metrics HTTP/1.1\r\nX-Token: abc", WSTUN__ROUTE_TUNNEL, 0, NULL,
     0, 0, "abc", "/metrics"},
    /* token routes */
    {"", "GET /_token/abc/x/y?q=1 HTTP/1.1", WSTUN__ROUTE_TUNNEL, 0, NULL, 0, 0,
     "abc", "/x/y?q=1"},
    /* the Go route is ^/_token/([^/]+)(/.*): a path must follow */
    {"", "GET /_token/abc HTTP/1.1", WSTUN__ROUTE_ANSWER, 400,
     "Missing token in URI", 0, 0, NULL, NULL},
    {"", "GET /_token/abc?q=/x HTTP/1.1", WSTUN__ROUTE_ANSWER, 400,
     "Missing token in URI", 0, 0, NULL, NULL},
    {"", "GET /_token/ HTTP/1.1", WSTUN__ROUTE_ANSWER, 400,
     "Missing token in URI", 0, 0, NULL, NULL},
    {"", "GET /_token//x HTTP/1.1", WSTUN__ROUTE_ANSWER, 400,
     "Missing token in URI", 0, 0, NULL, NULL},
    {"", "GET /x HTTP/1.1\r\nX-Token: tok", WSTUN__ROUTE_TUNNEL, 0, NULL, 0, 0,
     "tok", "/x"},
    {"", "GET /x HTTP/1.1\r\nX-Token: ", WSTUN__ROUTE_ANSWER, 400,
     "Missing X-Token header", 0, 0, NULL, NULL},
    {"", "GET /x HTTP/1.1", WSTUN__ROUTE_ANSWER, 400, "Missing X-Token header",
     0, 0, NULL, NULL},
    {"", "GET / HTTP/1.1", WSTUN__ROUTE_ANSWER, 400, "Missing X-Token header",
     0, 0, NULL, NULL},
    {"", "OPTIONS * HTTP/1.1", WSTUN__ROUTE_ANSWER, 400,
     "Request target must be a path", 0, 0, NULL, NULL},
    /* upgrades to a token are tunneled (a pipe after the backend's 101;
     * the connection ends with them), others answered; CONNECT never */
    {"", "GET /x HTTP/1.1\r\nX-Token: t\r\nConnection: Upgrade\r\nUpgrade: h2c",
     WSTUN__ROUTE_TUNNEL, 0, NULL, 1, 1, "t", "/x"},
    {"",
     "GET /_token/abc/ws?a=1 HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\n"
     "Upgrade: websocket",
     WSTUN__ROUTE_TUNNEL, 0, NULL, 1, 1, "abc", "/ws?a=1"},
    /* Upgrade without Connection: upgrade is only a header */
    {"", "GET /x HTTP/1.1\r\nX-Token: t\r\nUpgrade: websocket",
     WSTUN__ROUTE_TUNNEL, 0, NULL, 0, 0, "t", "/x"},
    {"", "GET /x HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket",
     WSTUN__ROUTE_ANSWER, 404, "no tunnel endpoint here", 1, 1, NULL, NULL},
    {"", "GET /x HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c",
     WSTUN__ROUTE_ANSWER, 501, "Protocol upgrades are not tunneled", 1, 1, NULL,
     NULL},
    {"",
     "GET /_token/abc HTTP/1.1\r\nConnection: Upgrade\r\n"
     "Upgrade: websocket",
     WSTUN__ROUTE_ANSWER, 400, "Missing token in URI", 1, 1, NULL, NULL},
    {"", "CONNECT /x HTTP/1.1\r\nX-Token: t", WSTUN__ROUTE_ANSWER, 405,
     "CONNECT is not supported", 1, 1, NULL, NULL},
    {"", "CONNECT example.com:443 HTTP/1.1", WSTUN__ROUTE_ANSWER, 400,
     "Request target must be a path", 0, 0, NULL, NULL},
    /* base path edges */
    {"/wst", "GET /wst/_health_check HTTP/1.1", WSTUN__ROUTE_HEALTH, 0, NULL, 0,
     0, NULL, NULL},
    {"/wst", "GET /_health_check HTTP/1.1", WSTUN__ROUTE_ANSWER, 404,
     "404 page not found\n", 0, 0, NULL, NULL},
    {"/wst", "GET /wstx/_health_check HTTP/1.1", WSTUN__ROUTE_ANSWER, 404,
     "404 page not found", 0, 0, NULL, NULL},
    {"/wst", "GET /ws HTTP/1.1", WSTUN__ROUTE_ANSWER, 404, "404 page", 0, 0,
     NULL, NULL},
    {"/wst", "GET /wst/_tunnel HTTP/1.1", WSTUN__ROUTE_UPGRADE, 0, NULL, 0, 1,
     NULL, NULL},
    {"/wst",
     "GET /_tunnel HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket",
     WSTUN__ROUTE_ANSWER, 404, "no tunnel endpoint here", 1, 1, NULL, NULL},
    {"/wst", "GET /wst HTTP/1.1\r\nX-Token: t", WSTUN__ROUTE_TUNNEL, 0, NULL, 0,
     0, "t", "/"},
    {"/wst", "GET /wst?a=b HTTP/1.1\r\nX-Token: t", WSTUN__ROUTE_TUNNEL, 0,
     NULL, 0, 0, "t", "/?a=b"},
    {"/wst", "GET /wst/_token/abc/p HTTP/1.1", WSTUN__ROUTE_TUNNEL, 0, NULL, 0,
     0, "abc", "/p"},
    {"/wst", "GET /wst HTTP/1.1", WSTUN__ROUTE_ANSWER, 400,
     "Missing X-Token header", 0, 0, NULL, NULL},
};

static void run_case(const route_case *c, char *buf, size_t cap) {
  test_context("%s | %s", c->base, c->request);
  char raw[1024];
  snprintf(raw, sizeof(raw), "%s\r\nHost: x\r\n\r\n", c->request);
  wstun__http_parser p;
  got_head g = {NULL};
  wstun__http_parser_init(&p, HTTP_REQUEST, 65536, 0, &head_cbs, &g);
  size_t used;
  wstun__http_parser_feed(&p, (const uint8_t *)raw, strlen(raw), &used);
  CHECK(g.h != NULL);
  if (g.h == NULL) {
    wstun__http_parser_free(&p);
    return;
  }
  wstun__route_decision d;
  wstun__route_request(c->base, strlen(c->base), g.h, buf, cap, &d);
  CHECK_EQ_INT(d.kind, c->kind);
  CHECK_EQ_INT(d.close, c->close);
  CHECK_EQ_INT(d.stop, c->stop);
  if (c->kind == WSTUN__ROUTE_ANSWER) {
    CHECK_EQ_INT(d.status, c->status);
    CHECK(d.text != NULL && strncmp(d.text, c->text, strlen(c->text)) == 0);
  }
  if (c->kind == WSTUN__ROUTE_TUNNEL) {
    CHECK_EQ_INT(d.upgrade, strstr(c->request, "Connection:") != NULL);
    CHECK_EQ_INT(d.toklen, strlen(c->tok));
    CHECK(d.tok && memcmp(d.tok, c->tok, d.toklen) == 0);
    CHECK_EQ_INT(d.tlen, strlen(c->target));
    CHECK(d.target && memcmp(d.target, c->target, d.tlen) == 0);
  }
  wstun__http_parser_free(&p);
  test_context(NULL);
}

TEST(every_route) {
  char buf[4096];
  for (size_t i = 0; i < TEST_COUNT(cases); i++)
    run_case(&cases[i], buf, sizeof(buf));
}

/* A target that must be rewritten into a buffer too small for it. */
TEST(small_buffer) {
  char buf[4];
  static const route_case fit = {"/wst",
                                 "GET /wst?a HTTP/1.1\r\nX-Token: t",
                                 WSTUN__ROUTE_TUNNEL,
                                 0,
                                 NULL,
                                 0,
                                 0,
                                 "t",
                                 "/?a"};
  static const route_case nofit = {"",
                                   "GET /_token/abc/qq HTTP/1.1",
                                   WSTUN__ROUTE_TUNNEL,
                                   0,
                                   NULL,
                                   0,
                                   0,
                                   "abc",
                                   "/qq"};
  static const route_case base_nofit = {"/wst",
                                        "GET /wst?abcd HTTP/1.1\r\n"
                                        "X-Token: t",
                                        WSTUN__ROUTE_ANSWER,
                                        414,
                                        "URI too long",
                                        0,
                                        0,
                                        NULL,
                                        NULL};
  run_case(&fit, buf, sizeof(buf));
  run_case(&nofit, buf, sizeof(buf));
  run_case(&base_nofit, buf, sizeof(buf));
}

TEST(target_split) {
  char buf[64];
  wstun__route r;
  const char *t = "/base/_token/tok/a?b";
  CHECK_EQ_INT(
      wstun__route_target("/base", 5, t, strlen(t), buf, sizeof(buf), &r), 0);
  CHECK_EQ_INT(r.len, strlen("/_token/tok/a?b"));
  CHECK_EQ_INT(r.plen, strlen("/_token/tok/a"));
  CHECK_EQ_INT(r.toklen, 3);
  CHECK(memcmp(r.tok, "tok", 3) == 0);
  CHECK_EQ_INT(r.fwdlen, 4);
  CHECK(memcmp(r.fwd, "/a?b", 4) == 0);
  CHECK_EQ_INT(wstun__route_target("/base", 5, "/bas", 4, buf, sizeof(buf), &r),
               -1);
  CHECK_EQ_INT(
      wstun__route_target("/base", 5, "/base", 5, buf, sizeof(buf), &r), 0);
  CHECK_EQ_INT(r.len, 0);
  CHECK(r.tok == NULL);
  CHECK_EQ_INT(wstun__route_target("", 0, "/_token/", 8, buf, sizeof(buf), &r),
               0);
  CHECK(r.tok != NULL);
  CHECK_EQ_INT(r.toklen, 0);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {T(every_route), T(small_buffer),
                                    T(target_split)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
