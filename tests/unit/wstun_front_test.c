/* Front connections through the seam the fuzz targets use: a front made by
 * wstun__front_new on a connection handle that never opened, its input
 * handed to the connection's on_data as wstun__conn would, its answers
 * read from the connection's output buffer (the loop does not run while
 * it is fed, so nothing is written away). Routing, keep-alive and
 * pipelining in order, local answers, the upgrade's refusals, a tunneled
 * request waiting for its tunnel, 100 Continue. */
#define _GNU_SOURCE /* memmem */
#include "wstun_front.h"
#include "wstun_registry.h"

#include "srv_fixture.h"
#include "test.h"

#define TOKEN "front-test-token-aaaaaaaaaaa"

static wstun__front *front(wstun_server *srv, const char *ip) {
  wstun__front *f = wstun__front_new(srv);
  CHECK(f != NULL);
  uv_ip4_addr(ip, 40000, (struct sockaddr_in *)&f->conn->peer);
  return f;
}

/* As wstun__conn delivers: what the owner leaves waits (paused). */
static size_t input(wstun__front *f, const char *s) {
  wstun__conn *c = f->conn;
  c->in_data = 1;
  size_t used = c->cbs->on_data(c, (const uint8_t *)s, strlen(s));
  c->in_data = 0;
  return used;
}

static const char *out_text(wstun__front *f, char *buf, size_t cap) {
  size_t n = wstun__buf_size(&f->conn->out);
  if (n >= cap)
    n = cap - 1;
  memcpy(buf, wstun__buf_data(&f->conn->out), n);
  buf[n] = '\0';
  return buf;
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
    n++;
  return n;
}

static void finish(wstun_server *srv) {
  wstun__list *l, *tmp;
  wstun__list_foreach_safe(l, tmp, &srv->fronts) {
    wstun__front_close(wstun__list_entry(l, wstun__front, link));
  }
  uv_run(&sf_loop, UV_RUN_DEFAULT);
  CHECK(wstun__list_empty(&srv->fronts));
  CHECK_EQ_INT(srv->nfronts, 0);
  sf_end(srv);
}

TEST(local_answers_in_order) {
  wstun_server *srv = sf_begin();
  wstun__front *f = front(srv, "192.0.2.1");
  CHECK_EQ_INT(wstun__front_busy(f), 0);
  const char *in = "GET /_health_check HTTP/1.1\r\nHost: h\r\n\r\n"
                   "HEAD /_health_check HTTP/1.1\r\nHost: h\r\n\r\n"
                   "GET /nowhere HTTP/1.1\r\nHost: h\r\n\r\n";
  CHECK_EQ_INT(input(f, in), strlen(in));
  char buf[4096];
  const char *o = out_text(f, buf, sizeof(buf));
  CHECK_EQ_INT(count(o, "HTTP/1.1 200 OK\r\n"), 2);
  CHECK_EQ_INT(count(o, "WSTUNSRV RUNNING\n"), 1); /* the HEAD has none */
  const char *a = strstr(o, "WSTUNSRV");
  const char *b = strstr(o, "HTTP/1.1 400 ");
  CHECK(a != NULL && b != NULL && a < b);
  CHECK(strstr(o, "Missing X-Token header") != NULL);
  CHECK(strstr(o, "Connection: close") == NULL); /* keep-alive */
  CHECK_EQ_INT(f->phase, WSTUN__FRONT_IDLE);
  finish(srv);
}

TEST(bad_request_closes) {
  wstun_server *srv = sf_begin();
  wstun__front *f = front(srv, "192.0.2.1");
  input(f, "GARBAGE\r\n\r\nGET /_health_check HTTP/1.1\r\n\r\n");
  char buf[4096];
  const char *o = out_text(f, buf, sizeof(buf));
  CHECK(strncmp(o, "HTTP/1.1 400 ", 13) == 0);
  CHECK(strstr(o, "Connection: close\r\n") != NULL);
  CHECK(strstr(o, "WSTUNSRV") == NULL); /* nothing read after */
  finish(srv);
}

TEST(base_path) {
  wstun_server *srv = sf_begin();
  wstun__free(srv->base_path);
  srv->base_path = wstun__strdup("/wst");
  srv->base_len = 4;
  wstun__front *f = front(srv, "192.0.2.1");
  input(f, "GET /_health_check HTTP/1.1\r\n\r\n"
           "GET /wst/_health_check HTTP/1.1\r\n\r\n");
  char buf[4096];
  const char *o = out_text(f, buf, sizeof(buf));
  CHECK(strncmp(o, "HTTP/1.1 404 ", 13) == 0);
  CHECK(strstr(o, "404 page not found\n") != NULL);
  CHECK(strstr(o, "WSTUNSRV RUNNING") != NULL);
  finish(srv);
}

TEST(stats_detail_for_this_host_only) {
  wstun_server *srv = sf_begin();
  sf_add_token(srv, TOKEN);
  wstun__front *near = front(srv, "127.0.0.1");
  wstun__front *far = front(srv, "192.0.2.1");
  input(near, "GET /_stats HTTP/1.1\r\n\r\n");
  input(far, "GET /_stats HTTP/1.1\r\n\r\n");
  char buf[4096];
  CHECK(strstr(out_text(near, buf, sizeof(buf)), "req_pending=0") != NULL);
  CHECK(strstr(out_text(far, buf, sizeof(buf)), "More stats available") !=
        NULL);
  input(far, "GET /metrics HTTP/1.1\r\n\r\n");
  CHECK(strstr(out_text(far, buf, sizeof(buf)), "HTTP/1.1 403 ") != NULL);
  input(near, "GET /metrics HTTP/1.1\r\n\r\n");
  CHECK(strstr(out_text(near, buf, sizeof(buf)), "wstun_tokens 1\n") != NULL);
  finish(srv);
}

TEST(upgrade_refused) {
  wstun_server *srv = sf_begin();
  wstun__front *f = front(srv, "192.0.2.1");
  input(f, "POST /_tunnel HTTP/1.1\r\nHost: h\r\n\r\n");
  char buf[4096];
  const char *o = out_text(f, buf, sizeof(buf));
  CHECK(strncmp(o, "HTTP/1.1 400 ", 13) == 0);
  CHECK(strstr(o, "Only GET requests are supported") != NULL);
  CHECK(strstr(o, "Connection: close\r\n") != NULL);
  CHECK_EQ_INT(srv->metrics.hs_failures[WSTUN__HS_BAD_METHOD], 1);
  wstun__front *g = front(srv, "192.0.2.1");
  input(g, "GET /_tunnel HTTP/1.1\r\nHost: h\r\nOrigin: short\r\n\r\n");
  CHECK(strstr(out_text(g, buf, sizeof(buf)),
               "Rendez-vous token is too short") != NULL);
  finish(srv);
}

TEST(tunneled_request_waits_in_order) {
  wstun_server *srv = sf_begin();
  wstun__token *t = sf_add_token(srv, TOKEN);
  wstun__front *f = front(srv, "192.0.2.1");
  const char *in = "GET /_token/" TOKEN "/a HTTP/1.1\r\nHost: h\r\n\r\n"
                   "GET /_health_check HTTP/1.1\r\n\r\n";
  size_t used = input(f, in);
  /* the first waits for a tunnel; the second waits its turn */
  CHECK(used < strlen(in));
  CHECK_EQ_INT(f->phase, WSTUN__FRONT_BUSY);
  CHECK_EQ_INT(f->ex.state, WSTUN__EX_QUEUED);
  CHECK_EQ_INT(t->nqueued, 1);
  CHECK_EQ_INT(wstun__front_busy(f), 1);
  CHECK_EQ_INT(wstun__buf_size(&f->conn->out), 0);
  wstun__front_fail(f, 502, "no tunnel");
  CHECK_EQ_INT(t->nqueued, 0);
  CHECK_EQ_INT(f->phase, WSTUN__FRONT_IDLE);
  input(f, in + used);
  char buf[4096];
  const char *o = out_text(f, buf, sizeof(buf));
  const char *a = strstr(o, "HTTP/1.1 502 ");
  const char *b = strstr(o, "WSTUNSRV RUNNING");
  CHECK(a != NULL && b != NULL && a < b);
  CHECK_EQ_INT(srv->errored, 1);
  finish(srv);
}

TEST(unknown_token_and_continue) {
  wstun_server *srv = sf_begin();
  sf_add_token(srv, TOKEN);
  wstun__front *f = front(srv, "192.0.2.1");
  input(f, "GET /x HTTP/1.1\r\nX-Token: nope\r\n\r\n");
  char buf[4096];
  CHECK(strstr(out_text(f, buf, sizeof(buf)), "Tunnel not found") != NULL);
  wstun__front *g = front(srv, "192.0.2.1");
  input(g, "POST /x HTTP/1.1\r\nX-Token: " TOKEN "\r\n"
           "Expect: 100-continue\r\nContent-Length: 3\r\n\r\n");
  CHECK_EQ_STR(out_text(g, buf, sizeof(buf)), "HTTP/1.1 100 Continue\r\n\r\n");
  CHECK_EQ_INT(g->ex.state, WSTUN__EX_READING); /* its body is to come */
  input(g, "abc");
  CHECK_EQ_INT(g->ex.state, WSTUN__EX_QUEUED);
  finish(srv);
}

/* An upgrade to a token: its head goes at once (the bytes behind it wait
 * in the connection), the 101 is written with what makes it one, then the
 * requester's bytes go raw into the open request message, and the end of
 * the tunnel client's direction ends the exchange and the connection. */
TEST(upgrade_becomes_a_pipe) {
  wstun_server *srv = sf_begin();
  srv->v2 = 1;
  wstun__token *t = sf_add_token(srv, TOKEN);
  wstun__front *f = front(srv, "192.0.2.1");
  const char *in = "GET /_token/" TOKEN "/ws HTTP/1.1\r\nHost: h\r\n"
                   "Connection: Upgrade\r\nUpgrade: x-echo\r\n\r\nearly";
  size_t used = input(f, in);
  CHECK_EQ_INT(used, strlen(in) - 5); /* "early" waits for the 101 */
  CHECK_EQ_INT(f->ex.state, WSTUN__EX_QUEUED);
  CHECK_EQ_INT(f->ex.upgrade, 1);
  CHECK_EQ_INT(f->close_after, 1);
  /* as the registry's send_on: onto a v2 tunnel record */
  wstun__srv_tunnel st;
  memset(&st, 0, sizeof(st));
  wstun__list_init(&st.inflight);
  st.v2 = 1;
  st.tok = t;
  wstun__reg_entry *e = &f->ex.reg;
  wstun__registry_unlink(e, 0);
  e->tun = &st;
  e->id = 1;
  wstun__outmsg *m = e->cbs->on_send(e);
  CHECK(m != NULL && !m->finished);
  size_t head_len = wstun__buf_size(&m->buf);
  CHECK(e->cbs->on_msg_begin(e));
  static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\n"
                             "Upgrade: x-echo\r\nConnection: Upgrade\r\n"
                             "\r\nfrom the backend";
  CHECK_EQ_INT(e->cbs->on_msg_data(e, (const uint8_t *)resp, strlen(resp)), 0);
  char buf[4096];
  const char *o = out_text(f, buf, sizeof(buf));
  CHECK(strncmp(o, "HTTP/1.1 101 Switching Protocols\r\n", 34) == 0);
  CHECK(strstr(o, "\r\nConnection: Upgrade\r\nUpgrade: x-echo\r\n\r\n"
                  "from the backend") != NULL);
  CHECK(strstr(o, "Transfer-Encoding") == NULL);
  CHECK_EQ_INT(f->piping, 1);
  /* the held bytes and what follows: raw, into the message */
  CHECK_EQ_INT(input(f, "early"), 5);
  CHECK_EQ_INT(input(f, "GET / HTTP/1.1\r\n\r\n"), 18);
  CHECK_BYTES_STR(wstun__buf_data(&m->buf) + head_len,
                  wstun__buf_size(&m->buf) - head_len,
                  "earlyGET / HTTP/1.1\r\n\r\n");
  /* the tunnel client's side ends: the pipe is over */
  e->cbs->on_msg_end(e, 1);
  CHECK_EQ_INT(f->ex.state, WSTUN__EX_DONE);
  CHECK_EQ_INT(f->conn->close_after_write, 1);
  finish(srv);
}

/* ---- the access log ----------------------------------------------------- */

static struct {
  int n;
  wstun_log_request r[8];
  char path[8][128], token[8][16], remote[8][64], text[8][512];
} acc;

static void acc_cb(void *ud, const wstun_log_record *rec) {
  (void)ud;
  if (rec->request == NULL || acc.n >= 8)
    return;
  int i = acc.n++;
  acc.r[i] = *rec->request;
  snprintf(acc.path[i], 128, "%s", rec->request->path);
  snprintf(acc.token[i], 16, "%s",
           rec->request->token ? rec->request->token : "-");
  snprintf(acc.remote[i], 64, "%s",
           rec->request->remote ? rec->request->remote : "-");
  snprintf(acc.text[i], 512, "%s", rec->msg);
}

static wstun_server *access_server(int on) {
  wstun_server *srv = sf_begin();
  memset(&acc, 0, sizeof(acc));
  wstun__logger_init(&srv->log, WSTUN_LOG_INFO, NULL, acc_cb, NULL, on);
  return srv;
}

TEST(access_lines) {
  wstun_server *srv = access_server(1);
  wstun__token *t = sf_add_token(srv, TOKEN);
  wstun__front *f = front(srv, "192.0.2.1");
  /* local answers, HEAD without body bytes, an unknown token cut to its
   * prefix in the path and the field */
  input(f, "GET /_health_check HTTP/1.1\r\n\r\n"
           "HEAD /_health_check HTTP/1.1\r\n\r\n"
           "GET /_token/unknown-token-0123456789/p?q=1 HTTP/1.1\r\n\r\n");
  REQUIRE(acc.n == 3);
  CHECK_EQ_STR(acc.path[0], "/_health_check");
  CHECK_EQ_INT(acc.r[0].status, 200);
  CHECK(acc.r[0].bytes == strlen("WSTUNSRV RUNNING\n"));
  CHECK_EQ_STR(acc.remote[0], "192.0.2.1:40000");
  CHECK_EQ_STR(acc.token[0], "-");
  CHECK(acc.r[0].id == -1);
  CHECK_EQ_STR(acc.r[1].method, "HEAD");
  CHECK(acc.r[1].bytes == 0);
  CHECK_EQ_STR(acc.path[2], "/_token/unknown-.../p?q=1");
  CHECK_EQ_STR(acc.token[2], "unknown-...");
  CHECK_EQ_INT(acc.r[2].status, 404);
  CHECK_EQ_STR(acc.text[2], "access method=GET path=/_token/unknown-.../p?q=1 "
                            "status=404 bytes=45 duration_ms=0 "
                            "remote=192.0.2.1:40000 token=unknown-...");
  /* a tunneled request failed before it reached a tunnel: its forwarded
   * path, no id */
  input(f, "GET /_token/" TOKEN "/a HTTP/1.1\r\n\r\n");
  wstun__front_fail(f, 502, "no tunnel");
  REQUIRE(acc.n == 4);
  CHECK_EQ_STR(acc.path[3], "/a");
  CHECK_EQ_INT(acc.r[3].status, 502);
  CHECK_EQ_STR(acc.token[3], "front-te...");
  CHECK(acc.r[3].id == -1);
  /* the requester goes before an answer: 499 */
  input(f, "GET /_token/" TOKEN "/b HTTP/1.1\r\n\r\n");
  CHECK_EQ_INT(t->nqueued, 1);
  wstun__front_close(f);
  REQUIRE(acc.n == 5);
  CHECK_EQ_STR(acc.path[4], "/b");
  CHECK_EQ_INT(acc.r[4].status, 499);
  /* no head, no line: garbage, a refused upgrade without a token */
  wstun__front *g = front(srv, "192.0.2.2");
  input(g, "\x16\x03\x01 nonsense\r\n\r\n");
  CHECK_EQ_INT(acc.n, 5);
  wstun__front *h = front(srv, "192.0.2.3");
  input(h, "POST /_tunnel HTTP/1.1\r\nOrigin: " TOKEN "\r\n\r\n");
  REQUIRE(acc.n == 6);
  CHECK_EQ_STR(acc.path[5], "/_tunnel");
  CHECK_EQ_INT(acc.r[5].status, 400);
  finish(srv);
  /* off: nothing */
  srv = access_server(0);
  f = front(srv, "192.0.2.1");
  input(f, "GET /_health_check HTTP/1.1\r\n\r\n");
  CHECK_EQ_INT(acc.n, 0);
  finish(srv);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {T(local_answers_in_order),
                                    T(bad_request_closes),
                                    T(base_path),
                                    T(stats_detail_for_this_host_only),
                                    T(upgrade_refused),
                                    T(tunneled_request_waits_in_order),
                                    T(unknown_token_and_continue),
                                    T(upgrade_becomes_a_pipe),
                                    T(access_lines)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
