#define _GNU_SOURCE /* memmem */
/* The exchange's state machine without sockets: the test plays the
 * requester (the exchange_cbs below record what the exchange asks for)
 * and the registry and tunnel (it calls the exchange through its
 * reg_entry's callback table and its message's, as they would). A
 * response is fed whole and one byte at a time; failure, retry, replay
 * and timeout transitions are driven one by one. */
#include "wstun_exchange.h"

#include "srv_fixture.h"
#include "test.h"

#define TOKEN "exchange-test-token-aaaaaaaa"

typedef struct rec {
  int heads, ends, dones, drains;
  int status, no_body, close_delimited;
  wstun__ex_end how;
  int done_status;
  char done_text[128];
  wstun__buf body;
  int congest; /* on_body reports congestion */
  uint64_t progress;
} rec;

static rec R;

static int on_head(wstun__exchange *ex, wstun__http_head *h, int no_body,
                   int close_delimited) {
  (void)ex;
  R.heads++;
  R.status = h->status;
  R.no_body = no_body;
  R.close_delimited = close_delimited;
  return 0;
}

static int on_body(wstun__exchange *ex, const uint8_t *d, size_t n) {
  (void)ex;
  wstun__buf_append(&R.body, d, n);
  return R.congest;
}

static void on_end(wstun__exchange *ex) {
  (void)ex;
  R.ends++;
}

static void on_done(wstun__exchange *ex, wstun__ex_end how, int status,
                    const char *text) {
  (void)ex;
  R.dones++;
  R.how = how;
  R.done_status = status;
  snprintf(R.done_text, sizeof(R.done_text), "%s", text ? text : "");
}

static void on_drain(wstun__exchange *ex) {
  (void)ex;
  R.drains++;
}

static uint64_t progress(wstun__exchange *ex) {
  (void)ex;
  return R.progress;
}

static const wstun__exchange_cbs cbs = {on_head, on_body,  on_end,
                                        on_done, on_drain, progress};

/* ---- driving it --------------------------------------------------------- */

typedef struct world {
  wstun_server *srv;
  wstun__token *tok;
  /* a tunnel record for the exchange to be "on", not in the token's list
   * (the registry never lists one without its tunnel) */
  wstun__srv_tunnel st_rec;
  wstun__srv_tunnel *st;
  wstun__http_parser req;
  wstun__http_head *head;
  wstun__exchange ex;
} world;

static int keep_head(void *ud, wstun__http_head *h) {
  ((world *)ud)->head = h;
  return 1;
}
static const wstun__http_parser_cbs head_cbs = {.on_head = keep_head};

static void world_begin(world *w, const char *request) {
  memset(&R, 0, sizeof(R));
  memset(w, 0, sizeof(*w));
  w->srv = sf_begin();
  w->tok = sf_add_token(w->srv, TOKEN);
  w->st = &w->st_rec;
  wstun__list_init(&w->st->inflight);
  snprintf(w->st->addr, sizeof(w->st->addr), "192.0.2.9:4000");
  wstun__exchange_init(&w->ex, w->srv, &cbs);
  wstun__http_parser_init(&w->req, HTTP_REQUEST, 65536, 0, &head_cbs, w);
  size_t used;
  wstun__http_parser_feed(&w->req, (const uint8_t *)request, strlen(request),
                          &used);
  CHECK(w->head != NULL);
}

/* The request head arrived: reset and start; its body, if any, follows. */
static int world_start(world *w, const char *tok) {
  int upgrade = w->ex.upgrade; /* the front sets it after the reset */
  wstun__exchange_reset(&w->ex, w->head);
  w->ex.upgrade = upgrade;
  int expect;
  const char *text = NULL;
  return wstun__exchange_start(&w->ex, w->head, tok, strlen(tok), "/fwd?x=1", 8,
                               "198.51.100.7", "198.51.100.7:5555", &expect,
                               &text);
}

/* As the registry's send_on and the tunnel: take the exchange out of the
 * queue, put it "on" the tunnel record with an id, take its message. */
static wstun__outmsg *world_send(world *w) {
  CHECK_EQ_INT(w->ex.state, WSTUN__EX_QUEUED);
  wstun__registry_unlink(&w->ex.reg, 0);
  w->ex.reg.tun = w->st;
  w->ex.reg.id = 7;
  wstun__outmsg *m = w->ex.reg.cbs->on_send(&w->ex.reg);
  CHECK_EQ_INT(w->ex.state, WSTUN__EX_SENDING);
  return m;
}

/* The message was written whole: the tunnel tells, then frees it. */
static void world_sent(world *w, wstun__outmsg *m) {
  m->cbs->on_sent(m->owner, m);
  wstun__outmsg_free(m);
  CHECK_EQ_INT(w->ex.state, WSTUN__EX_WAITING);
}

static void feed_response(world *w, const char *resp, size_t step) {
  wstun__reg_entry *e = &w->ex.reg;
  CHECK(e->cbs->on_msg_begin(e));
  size_t n = strlen(resp);
  for (size_t off = 0; off < n; off += step) {
    size_t k = n - off < step ? n - off : step;
    if (e->cbs->on_msg_data(e, (const uint8_t *)resp + off, k) != 0)
      break;
  }
}

static void closed_cb(wstun__closer *c) {
  (void)c;
}

static void world_end(world *w) {
  wstun__closer closer;
  wstun__closer_start(&closer, closed_cb);
  wstun__exchange_close(&w->ex, &closer);
  wstun__closer_done(&closer);
  wstun__http_parser_free(&w->req);
  wstun__buf_free(&R.body);
  sf_end(w->srv);
}

/* ---- tests -------------------------------------------------------------- */

static const char GET[] = "GET /_token/" TOKEN "/fwd?x=1 HTTP/1.1\r\n"
                          "Host: h\r\nConnection: keep-alive\r\n"
                          "X-Forwarded-For: 203.0.113.1\r\n\r\n";

TEST(request_message) {
  world w;
  world_begin(&w, GET);
  CHECK_EQ_INT(world_start(&w, TOKEN), 0);
  CHECK_EQ_INT(w.ex.state, WSTUN__EX_READING);
  CHECK_EQ_INT(wstun__exchange_active(&w.ex), 1);
  CHECK_EQ_INT(wstun__exchange_body_end(&w.ex), 0);
  /* no live tunnel: queued */
  CHECK_EQ_INT(w.ex.state, WSTUN__EX_QUEUED);
  CHECK_EQ_INT(w.tok->nqueued, 1);
  CHECK_EQ_INT(wstun__token_pending(w.tok), 1);
  wstun__outmsg *m = world_send(&w);
  CHECK_EQ_INT(w.tok->nqueued, 0);
  const char *msg = (const char *)wstun__buf_data(&m->buf);
  size_t len = wstun__buf_size(&m->buf);
  CHECK(len > 0 && memcmp(msg, "GET /fwd?x=1 HTTP/1.1\r\n", 23) == 0);
  CHECK(memmem(msg, len, "X-Forwarded-For: 203.0.113.1, 198.51.100.7\r\n",
               44) != NULL);
  CHECK(memmem(msg, len, "Connection:", 11) == NULL); /* hop-by-hop */
  CHECK(m->finished);
  /* a small GET is kept for a replay */
  CHECK_EQ_INT(wstun__buf_size(&w.ex.replay), len);
  world_sent(&w, m);
  wstun__exchange_info info;
  wstun__exchange_info_get(&w.ex, &info);
  CHECK_EQ_INT(info.id, 7);
  CHECK_EQ_STR(info.method, "GET");
  CHECK_EQ_STR(info.uri, "/fwd?x=1");
  CHECK_EQ_STR(info.remote_addr, "198.51.100.7:5555");
  CHECK(wstun__exchange_of(&w.ex.reg) == &w.ex);
  world_end(&w);
}

static void response_in_steps(size_t step) {
  test_context("step %zu", step);
  world w;
  world_begin(&w, GET);
  CHECK_EQ_INT(world_start(&w, TOKEN), 0);
  wstun__exchange_body_end(&w.ex);
  world_sent(&w, world_send(&w));
  feed_response(&w,
                "HTTP/1.1 100 Continue\r\n\r\n"
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
                step);
  CHECK_EQ_INT(R.heads, 1); /* the interim one is dropped */
  CHECK_EQ_INT(R.status, 200);
  CHECK_EQ_INT(w.ex.state, WSTUN__EX_RESPONDING);
  CHECK_BYTES_STR(wstun__buf_data(&R.body), wstun__buf_size(&R.body),
                  "hello world");
  CHECK_EQ_INT(R.ends, 1);
  CHECK_EQ_INT(R.dones, 0); /* the message has not ended yet */
  w.ex.reg.cbs->on_msg_end(&w.ex.reg, 1);
  CHECK_EQ_INT(R.dones, 1);
  CHECK_EQ_INT(R.how, WSTUN__EX_ANSWERED);
  CHECK_EQ_INT(w.ex.state, WSTUN__EX_DONE);
  CHECK_EQ_INT(w.srv->completed, 1);
  CHECK(w.tok->last_success != 0 || w.tok->last_success_addr[0] != '\0');
  CHECK_EQ_STR(w.tok->last_success_addr, "198.51.100.7:5555");
  CHECK_EQ_INT(wstun__exchange_active(&w.ex), 0);
  world_end(&w);
  test_context(NULL);
}

TEST(response_whole_and_byte_by_byte) {
  response_in_steps(1000);
  response_in_steps(1);
  response_in_steps(7);
}

TEST(head_has_no_body) {
  world w;
  world_begin(&w, "HEAD /_token/" TOKEN "/x HTTP/1.0\r\nHost: h\r\n\r\n");
  CHECK_EQ_INT(world_start(&w, TOKEN), 0);
  wstun__exchange_body_end(&w.ex);
  world_sent(&w, world_send(&w));
  feed_response(&w, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", 1000);
  CHECK_EQ_INT(R.heads, 1);
  CHECK_EQ_INT(R.no_body, 1);
  CHECK_EQ_INT(R.close_delimited, 0);
  w.ex.reg.cbs->on_msg_end(&w.ex.reg, 1);
  CHECK_EQ_INT(R.how, WSTUN__EX_ANSWERED);
  world_end(&w);
}

TEST(http10_body_until_close) {
  world w;
  world_begin(&w, "GET /_token/" TOKEN "/x HTTP/1.0\r\nHost: h\r\n\r\n");
  CHECK_EQ_INT(world_start(&w, TOKEN), 0);
  wstun__exchange_body_end(&w.ex);
  world_sent(&w, world_send(&w));
  feed_response(&w, "HTTP/1.1 200 OK\r\n\r\nall of it", 3);
  CHECK_EQ_INT(R.close_delimited, 1);
  w.ex.reg.cbs->on_msg_end(&w.ex.reg, 1);
  CHECK_BYTES_STR(wstun__buf_data(&R.body), wstun__buf_size(&R.body),
                  "all of it");
  CHECK_EQ_INT(R.how, WSTUN__EX_ANSWERED);
  world_end(&w);
}

TEST(bad_responses_get_506) {
  static const char *const bad[] = {"", "NOT HTTP\r\n\r\n",
                                    "HTTP/1.1 200 OK\r\nContent-"};
  for (size_t i = 0; i < TEST_COUNT(bad); i++) {
    test_context("response %zu", i);
    world w;
    world_begin(&w, GET);
    CHECK_EQ_INT(world_start(&w, TOKEN), 0);
    wstun__exchange_body_end(&w.ex);
    world_sent(&w, world_send(&w));
    if (bad[i][0])
      feed_response(&w, bad[i], 1000);
    if (R.dones == 0)
      w.ex.reg.cbs->on_msg_end(&w.ex.reg, 1);
    CHECK_EQ_INT(R.dones, 1);
    CHECK_EQ_INT(R.how, WSTUN__EX_FAILED);
    CHECK_EQ_INT(R.done_status, 506);
    CHECK_EQ_INT(w.srv->errored, 1);
    world_end(&w);
  }
  test_context(NULL);
}

TEST(cut_after_head_aborts) {
  world w;
  world_begin(&w, GET);
  CHECK_EQ_INT(world_start(&w, TOKEN), 0);
  wstun__exchange_body_end(&w.ex);
  world_sent(&w, world_send(&w));
  feed_response(&w, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 1000);
  w.ex.reg.cbs->on_msg_end(&w.ex.reg, 0);
  CHECK_EQ_INT(R.dones, 1);
  CHECK_EQ_INT(R.how, WSTUN__EX_ABORTED);
  world_end(&w);
}

TEST(lost_tunnel_replays_a_get) {
  world w;
  world_begin(&w, GET);
  CHECK_EQ_INT(world_start(&w, TOKEN), 0);
  wstun__exchange_body_end(&w.ex);
  for (int i = 0; i < 2; i++) {
    world_sent(&w, world_send(&w));
    w.ex.reg.tun = NULL; /* the registry lets go first */
    w.ex.reg.cbs->on_tunnel_lost(&w.ex.reg);
    CHECK_EQ_INT(R.dones, 0);
    CHECK_EQ_INT(w.ex.state, WSTUN__EX_QUEUED); /* sent again */
    CHECK_EQ_INT(w.ex.tries, i + 1);
  }
  /* the third loss is the last */
  world_sent(&w, world_send(&w));
  w.ex.reg.tun = NULL;
  w.ex.reg.cbs->on_tunnel_lost(&w.ex.reg);
  CHECK_EQ_INT(R.dones, 1);
  CHECK_EQ_INT(R.done_status, 502);
  CHECK_EQ_STR(R.done_text, "Tunnel connection lost before the response");
  world_end(&w);
}

TEST(lost_tunnel_fails_a_post) {
  world w;
  world_begin(&w, "POST /_token/" TOKEN "/x HTTP/1.1\r\nHost: h\r\n"
                  "Content-Length: 3\r\n\r\n");
  CHECK_EQ_INT(world_start(&w, TOKEN), 0);
  CHECK_EQ_INT(wstun__exchange_body(&w.ex, (const uint8_t *)"abc", 3), 0);
  CHECK_EQ_INT(w.ex.state, WSTUN__EX_READING); /* small: waits for the end */
  wstun__exchange_body_end(&w.ex);
  /* copied (a v2 stream the client refuses goes again), but a lost tunnel
   * never replays a POST: it may have been processed */
  CHECK(wstun__buf_size(&w.ex.replay) > 0);
  world_sent(&w, world_send(&w));
  w.ex.reg.tun = NULL;
  w.ex.reg.cbs->on_tunnel_lost(&w.ex.reg);
  CHECK_EQ_INT(R.dones, 1);
  CHECK_EQ_INT(R.how, WSTUN__EX_FAILED);
  CHECK_EQ_INT(R.done_status, 502);
  world_end(&w);
}

TEST(unsent_message_is_retried_then_504) {
  world w;
  world_begin(&w, GET);
  CHECK_EQ_INT(world_start(&w, TOKEN), 0);
  wstun__exchange_body_end(&w.ex);
  for (int i = 0; i < 2; i++) {
    wstun__outmsg *m = world_send(&w);
    m->cbs->on_failed(m->owner, m, 1); /* never sent: back to the owner */
    CHECK_EQ_INT(w.ex.state, WSTUN__EX_QUEUED);
    CHECK_EQ_INT(R.dones, 0);
  }
  wstun__outmsg *m = world_send(&w);
  m->cbs->on_failed(m->owner, m, 1);
  CHECK_EQ_INT(R.dones, 1);
  CHECK_EQ_INT(R.done_status, 504);
  CHECK_EQ_STR(R.done_text, "Tunnel retry exhausted");
  world_end(&w);
}

TEST(unknown_token_and_full_queue) {
  world w;
  world_begin(&w, GET);
  CHECK_EQ_INT(world_start(&w, "no-such-token"), 404);
  CHECK_EQ_INT(w.srv->errored, 1);
  CHECK_EQ_INT(wstun__exchange_active(&w.ex), 0);
  w.srv->max_queue = 0;
  CHECK_EQ_INT(world_start(&w, TOKEN), 0);
  wstun__exchange_body_end(&w.ex);
  CHECK_EQ_INT(R.dones, 1);
  CHECK_EQ_INT(R.done_status, 504);
  CHECK_EQ_STR(R.done_text, "too many requests in-flight, tunnel broken?");
  CHECK_EQ_INT(w.tok->nqueued, 0);
  world_end(&w);
}

TEST(deadline) {
  world w;
  world_begin(&w, GET);
  w.srv->http_timeout_ms = 5;
  CHECK_EQ_INT(world_start(&w, TOKEN), 0);
  wstun__exchange_body_end(&w.ex);
  uv_run(&sf_loop, UV_RUN_DEFAULT); /* the deadline is the one timer */
  CHECK_EQ_INT(R.dones, 1);
  CHECK_EQ_INT(R.done_status, 504);
  CHECK_EQ_STR(R.done_text, "Tunnel timeout");
  CHECK_EQ_INT(w.tok->nqueued, 0);
  world_end(&w);
}

/* The head is out when the deadline comes: only a cut can tell. (A
 * congested requester holds no tunnel here: there is no live one.) */
TEST(deadline_mid_response_aborts) {
  world w;
  world_begin(&w, GET);
  w.srv->http_timeout_ms = 5;
  CHECK_EQ_INT(world_start(&w, TOKEN), 0);
  wstun__exchange_body_end(&w.ex);
  world_sent(&w, world_send(&w));
  R.congest = 1;
  feed_response(&w, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 1000);
  CHECK_EQ_INT(w.ex.reg.paused, 0);
  uv_run(&sf_loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(R.dones, 1);
  CHECK_EQ_INT(R.how, WSTUN__EX_ABORTED);
  world_end(&w);
}

TEST(cancel_is_silent) {
  world w;
  world_begin(&w, GET);
  CHECK_EQ_INT(world_start(&w, TOKEN), 0);
  wstun__exchange_body_end(&w.ex);
  wstun__exchange_cancel(&w.ex);
  CHECK_EQ_INT(w.tok->nqueued, 0);
  wstun__exchange_fail(&w.ex, 500, "x");
  CHECK_EQ_INT(R.dones, 0);
  world_end(&w);
}

/* ---- upgrades (PROTOCOL.md 7.6) ----------------------------------------- */

static const char UPGRADE[] = "GET /_token/" TOKEN "/ws HTTP/1.1\r\n"
                              "Host: h\r\nConnection: keep-alive, Upgrade\r\n"
                              "Upgrade: websocket\r\nSec-WebSocket-Key: k\r\n"
                              "Content-Length: 0\r\n\r\n";

/* An upgrade request on a v2 tunnel record: started and dispatched at its
 * head, its message left open. */
static wstun__outmsg *upgrade_sent(world *w) {
  world_begin(w, UPGRADE);
  w->srv->v2 = 1;
  w->st->v2 = 1;
  w->ex.upgrade = 1;
  CHECK_EQ_INT(world_start(w, TOKEN), 0);
  CHECK_EQ_INT(w->ex.reg.v2_only, 1);
  CHECK_EQ_INT(wstun__exchange_body_end(&w->ex), 0);
  CHECK_EQ_INT(w->ex.state, WSTUN__EX_QUEUED); /* at once, not at 64 KiB */
  wstun__outmsg *m = world_send(w);
  CHECK(!m->finished); /* the pipe's request direction stays open */
  CHECK_EQ_INT(m->nheads, 1);
  CHECK_EQ_INT(m->heads[0].len, wstun__buf_size(&m->buf));
  return m;
}

static void upgrade_pipe_in_steps(size_t step) {
  test_context("step %zu", step);
  world w;
  wstun__outmsg *m = upgrade_sent(&w);
  const char *msg = (const char *)wstun__buf_data(&m->buf);
  size_t len = wstun__buf_size(&m->buf);
  /* what makes it an upgrade is kept for the backend, our framing is not */
  CHECK(memmem(msg, len, "\r\nConnection: Upgrade\r\n", 23) != NULL);
  CHECK(memmem(msg, len, "\r\nUpgrade: websocket\r\n", 22) != NULL);
  CHECK(memmem(msg, len, "Sec-WebSocket-Key: k\r\n", 22) != NULL);
  CHECK(memmem(msg, len, "keep-alive", 10) == NULL);
  CHECK(memmem(msg, len, "Content-Length", 14) == NULL);
  CHECK(memmem(msg, len, "Transfer-Encoding", 17) == NULL);
  /* the 101 and the backend's first bytes, which are not HTTP */
  static const char resp[] = "HTTP/1.1 101 Switching Protocols\r\n"
                             "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                             "\r\n\x81\x02hiHTTP/1.1 200 OK\r\n\r\n";
  wstun__reg_entry *e = &w.ex.reg;
  CHECK(e->cbs->on_msg_begin(e));
  for (size_t off = 0; off < sizeof(resp) - 1; off += step) {
    size_t k = sizeof(resp) - 1 - off < step ? sizeof(resp) - 1 - off : step;
    CHECK_EQ_INT(e->cbs->on_msg_data(e, (const uint8_t *)resp + off, k), 0);
  }
  CHECK_EQ_INT(R.heads, 1);
  CHECK_EQ_INT(R.status, 101);
  CHECK_EQ_INT(w.ex.piping, 1);
  CHECK_EQ_INT(w.ex.state, WSTUN__EX_RESPONDING);
  CHECK_BYTES_STR(wstun__buf_data(&R.body), wstun__buf_size(&R.body),
                  "\x81\x02hiHTTP/1.1 200 OK\r\n\r\n");
  CHECK_EQ_INT(R.ends, 0);
  /* the requester's bytes go into the open message as they are */
  CHECK_EQ_INT(wstun__exchange_body(&w.ex, (const uint8_t *)"\x82\x01z", 3), 0);
  CHECK_EQ_INT(wstun__buf_size(&m->buf), len + 3);
  CHECK(memcmp(wstun__buf_data(&m->buf) + len, "\x82\x01z", 3) == 0);
  CHECK(!m->finished);
  /* its EOF ends its direction; the other goes on */
  wstun__exchange_pipe_end(&w.ex);
  CHECK(m->finished);
  CHECK_EQ_INT(R.dones, 0);
  CHECK_EQ_INT(e->cbs->on_msg_data(e, (const uint8_t *)"more", 4), 0);
  /* the backend's side ends: the pipe is over, answered */
  e->cbs->on_msg_end(e, 1);
  CHECK_EQ_INT(R.dones, 1);
  CHECK_EQ_INT(R.how, WSTUN__EX_ANSWERED);
  CHECK_EQ_INT(w.srv->completed, 1);
  CHECK_EQ_INT(R.ends, 0);
  world_end(&w);
  test_context(NULL);
}

TEST(upgrade_becomes_a_pipe_whole_and_byte_by_byte) {
  upgrade_pipe_in_steps(1000);
  upgrade_pipe_in_steps(1);
  upgrade_pipe_in_steps(5);
}

/* The backend refuses: an ordinary answer, and our direction ends. */
TEST(upgrade_refused_is_an_answer) {
  world w;
  wstun__outmsg *m = upgrade_sent(&w);
  feed_response(&w, "HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nno",
                1);
  CHECK_EQ_INT(R.status, 400);
  CHECK_EQ_INT(w.ex.piping, 0);
  CHECK(m->finished);
  CHECK_BYTES_STR(wstun__buf_data(&R.body), wstun__buf_size(&R.body), "no");
  CHECK_EQ_INT(R.ends, 1);
  w.ex.reg.cbs->on_msg_end(&w.ex.reg, 1);
  CHECK_EQ_INT(R.how, WSTUN__EX_ANSWERED);
  world_end(&w);
}

/* A 101 is refused for a request that asked for no upgrade, and on a
 * tunnel that cannot pipe (v1). */
TEST(switch_without_upgrade_or_v2_gets_506) {
  for (int i = 0; i < 2; i++) {
    test_context("case %d", i);
    world w;
    if (i == 0) {
      world_begin(&w, GET);
      w.st->v2 = 1;
      CHECK_EQ_INT(world_start(&w, TOKEN), 0);
      wstun__exchange_body_end(&w.ex);
      world_sent(&w, world_send(&w));
    } else {
      upgrade_sent(&w);
      w.st->v2 = 0;
    }
    feed_response(&w, "HTTP/1.1 101 Switching Protocols\r\n\r\n", 1000);
    CHECK_EQ_INT(R.dones, 1);
    CHECK_EQ_INT(R.done_status, 506);
    CHECK_EQ_INT(w.ex.piping, 0);
    world_end(&w);
  }
  test_context(NULL);
}

/* -protocol v1 on the server: refused at once, with the router's text. */
TEST(upgrade_on_a_v1_server_is_501) {
  world w;
  world_begin(&w, UPGRADE);
  w.ex.upgrade = 1;
  wstun__exchange_reset(&w.ex, w.head);
  CHECK_EQ_INT(w.ex.upgrade, 0); /* each request sets its own */
  w.ex.upgrade = 1;
  int expect;
  const char *text = NULL;
  CHECK_EQ_INT(wstun__exchange_start(&w.ex, w.head, TOKEN, strlen(TOKEN), "/ws",
                                     3, "198.51.100.7", "198.51.100.7:5555",
                                     &expect, &text),
               501);
  CHECK_EQ_STR(text, "Protocol upgrades are not tunneled");
  CHECK_EQ_INT(wstun__exchange_active(&w.ex), 0);
  world_end(&w);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(request_message),
      T(response_whole_and_byte_by_byte),
      T(head_has_no_body),
      T(http10_body_until_close),
      T(bad_responses_get_506),
      T(cut_after_head_aborts),
      T(lost_tunnel_replays_a_get),
      T(lost_tunnel_fails_a_post),
      T(unsent_message_is_retried_then_504),
      T(unknown_token_and_full_queue),
      T(deadline),
      T(deadline_mid_response_aborts),
      T(cancel_is_silent),
      T(upgrade_becomes_a_pipe_whole_and_byte_by_byte),
      T(upgrade_refused_is_an_answer),
      T(switch_without_upgrade_or_v2_gets_506),
      T(upgrade_on_a_v1_server_is_501),
  };
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
