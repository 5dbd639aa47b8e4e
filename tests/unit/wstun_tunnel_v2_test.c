/* The tunnel's v2 engine (docs/PROTOCOL.md section 7) on a real uv loop:
 * a loopback TCP pair on 127.0.0.1 port 0 with a server-side and a
 * client-side tunnel, both set to v2 right after start (no handshake yet:
 * the tunnels start on raw sockets). For the wire checks the client side
 * is a raw peer instead: the test writes masked WebSocket frames carrying
 * v2 frames built by hand (section 7.10's golden bytes) and parses what
 * the server's tunnel writes back. Every loop run is bounded by a guard
 * timer, and every test ends by closing everything and checking
 * uv_loop_close() == 0, so ASan's leak checker sees what a test leaves. */
#include "wstun_tunnel.h"

#include <stdlib.h>

#include "test.h"
#include "wstun/wstun.h"
#include "wstun_conn.h"
#include "wstun_proto.h"
#include "wstun_v2.h"

#define MAXRX 40
#define MIB (1024 * 1024)

typedef struct env env;

typedef struct rx_msg {
  struct side *s;
  uint32_t id;
  wstun__buf data;
  size_t consumed; /* bytes reported to wstun__tunnel_consumed */
  int ended, complete;
  int order; /* when it ended, counted per side from 1 */
} rx_msg;

typedef struct side {
  env *e;
  char tag;
  wstun__tunnel *t; /* NULL once on_closed fired */
  wstun__conn *conn;
  int handed;
  rx_msg rx[MAXRX];
  int nrx, nend;
  int closed, close_err, freed;
  /* the sink's behaviour */
  uint32_t hold_id; /* does not consume this stream's bytes (0: none) */
  int hold_all;     /* consumes nothing */
  uint32_t refuse_id;
  /* what the peer did */
  uint32_t reset_id, reset_code;
  int resets;
  uint32_t goaway_last, goaway_code;
  int goaways;
} side;

struct env {
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_timer_t guard;
  int guard_fired, listener_open, flushers_open;
  wstun__conn_shared *sh_srv, *sh_cli;
  wstun__rng rng_srv, rng_cli;
  wstun__logger log;
  int connected, connect_status;
  int raw;           /* the client side is a raw peer */
  wstun__buf raw_in; /* what the server wrote to it */
  side srv, cli;
};

static env E;

/* ---- outgoing messages -----------------------------------------------------
 */

typedef struct tx {
  int sent, failed, restartable, drains;
} tx;

static void tx_sent(void *owner, wstun__outmsg *m) {
  (void)m;
  ((tx *)owner)->sent++;
}
static void tx_drain(void *owner, wstun__outmsg *m) {
  (void)m;
  ((tx *)owner)->drains++;
}
static void tx_failed(void *owner, wstun__outmsg *m, int restartable) {
  tx *x = owner;
  x->failed++;
  x->restartable = restartable;
  wstun__outmsg_free(m);
}
static const wstun__outmsg_cbs tx_cbs = {tx_sent, tx_drain, tx_failed};

/* A whole message: head (its own length marked) then body. */
static wstun__outmsg *msg_new(tx *x, const char *head, const void *body,
                              size_t n, int finished) {
  wstun__outmsg *m = wstun__outmsg_new(&tx_cbs, x);
  if (m == NULL)
    abort();
  if (wstun__buf_append(&m->buf, head, strlen(head)) != 0 ||
      wstun__buf_append(&m->buf, body, n) != 0)
    abort();
  wstun__outmsg_set_head_len(m, (uint32_t)strlen(head));
  m->finished = finished ? 1u : 0u;
  return m;
}

/* ---- the sinks -------------------------------------------------------------
 */

static void *on_msg_begin(wstun__tunnel *t, uint32_t id) {
  side *s = t->owner;
  if (id == s->refuse_id || s->nrx >= MAXRX)
    return NULL;
  rx_msg *m = &s->rx[s->nrx++];
  m->s = s;
  m->id = id;
  return m;
}

static int on_msg_data(wstun__tunnel *t, void *sink, const uint8_t *data,
                       size_t len) {
  rx_msg *m = sink;
  if (m->ended)
    printf("    data after the end of stream %u\n", (unsigned)m->id);
  if (wstun__buf_append(&m->data, data, len) != 0)
    return 1;
  if (m->id != m->s->hold_id && !m->s->hold_all) {
    m->consumed += len;
    wstun__tunnel_consumed(t, m->id, len);
  }
  return 0;
}

static void on_msg_end(wstun__tunnel *t, void *sink, int complete) {
  side *s = t->owner;
  rx_msg *m = sink;
  m->ended++;
  m->complete = complete;
  m->order = ++s->nend;
}

static void on_closed(wstun__tunnel *t, int err) {
  side *s = t->owner;
  s->closed++;
  s->close_err = err;
  s->t = NULL;
}

static void on_freed(void *owner) {
  ((side *)owner)->freed++;
}

static void on_reset(wstun__tunnel *t, uint32_t id, uint32_t code) {
  side *s = t->owner;
  s->resets++;
  s->reset_id = id;
  s->reset_code = code;
}

static void on_goaway(wstun__tunnel *t, uint32_t last, uint32_t code) {
  side *s = t->owner;
  s->goaways++;
  s->goaway_last = last;
  s->goaway_code = code;
}

static const wstun__tunnel_cbs tun_cbs = {
    .on_msg_begin = on_msg_begin,
    .on_msg_data = on_msg_data,
    .on_msg_end = on_msg_end,
    .on_closed = on_closed,
    .on_freed = on_freed,
    .on_reset = on_reset,
    .on_goaway = on_goaway,
};

/* ---- connections before (or instead of) a tunnel ------------------------ */

static size_t pre_on_data(wstun__conn *c, const uint8_t *d, size_t n) {
  env *e = c->owner;
  if (e->raw && c == e->cli.conn && wstun__buf_append(&e->raw_in, d, n) != 0)
    abort();
  return n;
}

/* after env, side, rx_msg, tx and pre_on_data: the fixture uses them */
#include "tunnel_fixture.h"

/* ---- setting up and tearing down ----------------------------------------- */

static void side_init(env *e, side *s, char tag) {
  memset(s, 0, sizeof(*s));
  s->e = e;
  s->tag = tag;
}

/* 0 when the tunnels run, both in v2; with raw, the client side is left a
 * bare connection. The env is always torn down by env_done. */
static int env_start(env *e, int raw) {
  memset(e, 0, sizeof(*e));
  side_init(e, &e->srv, 's');
  side_init(e, &e->cli, 'c');
  e->raw = raw;
  wstun__buf_init(&e->raw_in);
  if (tf_start(e) != 0)
    return -1;

  int rc = wstun__tunnel_start(&e->srv.t, &e->loop, e->srv.conn, 1, &e->rng_srv,
                               &e->log, 0, 0, &tun_cbs, &e->srv, NULL, 0);
  CHECK_EQ_INT(rc, 0);
  if (rc != 0)
    return -1;
  e->srv.handed = 1;
  CHECK_EQ_INT(wstun__tunnel_set_proto(e->srv.t, &wstun__proto_v2), 0);
  if (raw) {
    CHECK_EQ_INT(wstun__conn_start_read(e->cli.conn), 0);
    return 0;
  }
  rc = wstun__tunnel_start(&e->cli.t, &e->loop, e->cli.conn, 0, &e->rng_cli,
                           &e->log, 0, 0, &tun_cbs, &e->cli, NULL, 0);
  CHECK_EQ_INT(rc, 0);
  if (rc != 0)
    return -1;
  e->cli.handed = 1;
  CHECK_EQ_INT(wstun__tunnel_set_proto(e->cli.t, &wstun__proto_v2), 0);
  return 0;
}

static void env_done(env *e) {
  tf_done(e);
  wstun__buf_free(&e->raw_in);
}

static rx_msg *find_rx(side *s, uint32_t id) {
  for (int i = 0; i < s->nrx; i++)
    if (s->rx[i].id == id)
      return &s->rx[i];
  return NULL;
}

static void check_rx(side *s, uint32_t id, const char *head, const void *body,
                     size_t n, int complete) {
  rx_msg *m = find_rx(s, id);
  CHECK(m != NULL);
  if (m == NULL)
    return;
  size_t hl = strlen(head);
  CHECK_EQ_INT(m->ended, 1);
  CHECK_EQ_INT(m->complete, complete);
  CHECK_EQ_INT(wstun__buf_size(&m->data), hl + n);
  if (wstun__buf_size(&m->data) == hl + n) {
    CHECK_MEM(wstun__buf_data(&m->data), head, hl);
    CHECK_MEM(wstun__buf_data(&m->data) + hl, body, n);
  }
}

/* ---- a small exchange ------------------------------------------------------
 */

static const char REQ_GET[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
static const char RESP_HI[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n";

static int cli_got_1(env *e) {
  return e->cli.nrx >= 1 && e->cli.rx[0].ended;
}
static int srv_got_1(env *e) {
  return e->srv.nrx >= 1 && e->srv.rx[0].ended;
}

TEST(request_and_response_on_one_stream) {
  env *e = &E;
  if (env_start(e, 0) == 0) {
    /* static: a message may still be queued when env_done ends it */
    static tx xs, xc;
    memset(&xs, 0, sizeof(xs));
    memset(&xc, 0, sizeof(xc));
    wstun__tunnel_send(e->srv.t, 1, msg_new(&xs, REQ_GET, "", 0, 1));
    if (RUN_UNTIL(e, cli_got_1, 5000))
      check_rx(&e->cli, 1, REQ_GET, "", 0, 1);
    wstun__tunnel_send(e->cli.t, 1, msg_new(&xc, RESP_HI, "hi", 2, 1));
    if (RUN_UNTIL(e, srv_got_1, 5000))
      check_rx(&e->srv, 1, RESP_HI, "hi", 2, 1);
    CHECK_EQ_INT(xs.sent, 1);
    CHECK_EQ_INT(xc.sent, 1);
    CHECK_EQ_INT(xs.failed + xc.failed, 0);
    CHECK_EQ_INT(e->srv.closed + e->cli.closed, 0);
    CHECK_EQ_INT(e->srv.resets + e->cli.resets, 0);
    CHECK_EQ_INT(wstun__tunnel_queued(e->srv.t), 0);
  }
  env_done(e);
}

TEST(messages_that_cannot_go_come_back) {
  env *e = &E;
  if (env_start(e, 0) == 0) {
    /* static: a message may still be queued when env_done ends it */
    static tx a, b, c, d;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&c, 0, sizeof(c));
    memset(&d, 0, sizeof(d));
    /* the client opens nothing; ids go up; a head length is needed */
    wstun__tunnel_send(e->cli.t, 2, msg_new(&a, REQ_GET, "", 0, 1));
    CHECK_EQ_INT(a.failed, 1);
    wstun__tunnel_send(e->srv.t, 5, msg_new(&b, REQ_GET, "", 0, 1));
    wstun__tunnel_send(e->srv.t, 3, msg_new(&c, REQ_GET, "", 0, 1));
    CHECK_EQ_INT(c.failed, 1);
    CHECK_EQ_INT(c.restartable, 0);
    wstun__outmsg *m = msg_new(&d, REQ_GET, "", 0, 1);
    wstun__outmsg_set_head_len(m, 0);
    wstun__tunnel_send(e->srv.t, 7, m);
    CHECK_EQ_INT(d.failed, 1);
    if (RUN_UNTIL(e, cli_got_1, 5000))
      CHECK_EQ_INT(e->cli.rx[0].id, 5);
    CHECK_EQ_INT(b.sent, 1);
  }
  env_done(e);
}

/* ---- streams interleave ----------------------------------------------------
 */

static const char REQ_BIG[] = "POST /big HTTP/1.1\r\nHost: a\r\n\r\n";

static void producer_start(producer *p, wstun__tunnel *t, uint32_t id,
                           const char *head, size_t total, unsigned seed) {
  producer_init(p, t, total, seed);
  if (wstun__buf_append(&p->m->buf, head, strlen(head)) != 0)
    abort();
  wstun__outmsg_set_head_len(p->m, (uint32_t)strlen(head));
  append_pattern(p, WSTUN__STREAM_AT);
  wstun__tunnel_send(t, id, p->m);
  produce(p);
}

static producer P1, P2;

static int cli_two_ended(env *e) {
  return e->cli.nend >= 2;
}

TEST(a_small_stream_passes_a_big_one) {
  env *e = &E;
  const size_t total = 4 * MIB;
  if (env_start(e, 0) == 0) {
    /* static: a message may still be queued when env_done ends it */
    static tx xs;
    memset(&xs, 0, sizeof(xs));
    producer_start(&P1, e->srv.t, 1, REQ_BIG, total, 7);
    CHECK(P1.fulls >= 1); /* the producer is held back */
    /* the big one is under way (its head and first frames are out) */
    wstun__tunnel_send(e->srv.t, 3, msg_new(&xs, REQ_GET, "", 0, 1));
    if (RUN_UNTIL(e, cli_two_ended, 30000)) {
      rx_msg *big = find_rx(&e->cli, 1), *small = find_rx(&e->cli, 3);
      CHECK(big != NULL && small != NULL);
      if (big && small) {
        CHECK(small->order < big->order);
        CHECK_EQ_INT(big->complete, 1);
        check_pattern(big, strlen(REQ_BIG), total, 7);
        check_rx(&e->cli, 3, REQ_GET, "", 0, 1);
      }
    }
    CHECK(P1.x.drains >= 1); /* resumed by on_drain */
    CHECK_EQ_INT(P1.x.sent, 1);
    CHECK_EQ_INT(xs.sent, 1);
    CHECK_EQ_INT(e->srv.closed + e->cli.closed, 0);
  }
  env_done(e);
}

static int cli_began(env *e) {
  return e->cli.nrx >= 1;
}
static int cli_began_2(env *e) {
  return e->cli.nrx >= 2;
}

static int both_big_done(env *e) {
  return P1.x.sent && P2.x.sent && e->cli.nend >= 1 && e->srv.nend >= 1;
}

TEST(big_streams_both_ways_at_once) {
  env *e = &E;
  const size_t total = 3 * MIB;
  static const char RESP_BIG[] = "HTTP/1.1 200 OK\r\n\r\n";
  if (env_start(e, 0) == 0) {
    /* static: a message may still be queued when env_done ends it */
    static tx xs;
    memset(&xs, 0, sizeof(xs));
    /* the request's body and the response's flow at the same time */
    producer_start(&P1, e->srv.t, 1, REQ_BIG, total, 7);
    RUN_UNTIL(e, cli_began, 5000);
    if (e->cli.nrx == 1)
      producer_start(&P2, e->cli.t, 1, RESP_BIG, total, 11);
    (void)xs;
    if (RUN_UNTIL(e, both_big_done, 30000)) {
      check_pattern(&e->cli.rx[0], strlen(REQ_BIG), total, 7);
      check_pattern(&e->srv.rx[0], strlen(RESP_BIG), total, 11);
    }
    CHECK_EQ_INT(e->srv.closed + e->cli.closed, 0);
  }
  env_done(e);
}

/* ---- flow control ----------------------------------------------------------
 */

static int cli_small_ended(env *e) {
  rx_msg *m = find_rx(&e->cli, 3);
  return m != NULL && m->ended;
}
static int cli_big_ended(env *e) {
  rx_msg *m = find_rx(&e->cli, 1);
  return m != NULL && m->ended;
}

TEST(a_sink_that_consumes_nothing_stalls_only_its_stream) {
  env *e = &E;
  const size_t total = 4 * MIB;
  if (env_start(e, 0) == 0) {
    /* static: a message may still be queued when env_done ends it */
    static tx xs;
    memset(&xs, 0, sizeof(xs));
    e->cli.hold_id = 1;
    producer_start(&P1, e->srv.t, 1, REQ_BIG, total, 5);
    run_for(e, 300);
    rx_msg *big = find_rx(&e->cli, 1);
    CHECK(big != NULL);
    if (big) {
      /* one window of DATA, not a byte more */
      CHECK_EQ_INT(wstun__buf_size(&big->data),
                   strlen(REQ_BIG) + WSTUN__V2_STREAM_WINDOW);
      CHECK_EQ_INT(big->ended, 0);
    }
    /* the producer is paused, bounded: its buffer and one window */
    CHECK(P1.produced <=
          WSTUN__V2_STREAM_WINDOW + WSTUN__PIPE_HIGH + 2 * WSTUN__STREAM_AT);
    /* another stream goes by */
    wstun__tunnel_send(e->srv.t, 3, msg_new(&xs, REQ_GET, "", 0, 1));
    if (RUN_UNTIL(e, cli_small_ended, 5000))
      check_rx(&e->cli, 3, REQ_GET, "", 0, 1);
    /* the sink catches up, and then keeps up */
    e->cli.hold_id = 0;
    if (big) {
      size_t n = wstun__buf_size(&big->data) - big->consumed;
      big->consumed += n;
      wstun__tunnel_consumed(e->cli.t, 1, n);
    }
    if (RUN_UNTIL(e, cli_big_ended, 30000))
      check_pattern(find_rx(&e->cli, 1), strlen(REQ_BIG), total, 5);
    CHECK_EQ_INT(P1.x.sent, 1);
    CHECK_EQ_INT(e->srv.closed + e->cli.closed, 0);
  }
  env_done(e);
}

TEST(pause_rx_does_not_stop_a_v2_tunnel) {
  env *e = &E;
  if (env_start(e, 0) == 0) {
    /* static: a message may still be queued when env_done ends it */
    static tx xs;
    memset(&xs, 0, sizeof(xs));
    wstun__tunnel_pause_rx(e->cli.t);
    wstun__tunnel_send(e->srv.t, 1, msg_new(&xs, REQ_GET, "", 0, 1));
    if (RUN_UNTIL(e, cli_got_1, 5000))
      check_rx(&e->cli, 1, REQ_GET, "", 0, 1);
  }
  env_done(e);
}

/* ---- reset and goaway ------------------------------------------------------
 */

static int cli_reset_seen(env *e) {
  return e->cli.resets > 0;
}
static int srv_reset_seen(env *e) {
  return e->srv.resets > 0;
}

TEST(reset_ends_the_stream_on_the_other_side_both_ways) {
  env *e = &E;
  if (env_start(e, 0) == 0) {
    /* static: a message may still be queued when env_done ends it */
    static tx a, b, c;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&c, 0, sizeof(c));
    /* server -> client: the requester went away */
    wstun__tunnel_send(e->srv.t, 1, msg_new(&a, REQ_BIG, "part", 4, 0));
    RUN_UNTIL(e, cli_began, 5000); /* not ended: its begin is enough */
    CHECK_EQ_INT(e->cli.nrx, 1);
    wstun__tunnel_reset(e->srv.t, 1, WSTUN__V2_CANCEL);
    if (RUN_UNTIL(e, cli_reset_seen, 5000)) {
      CHECK_EQ_INT(e->cli.reset_id, 1);
      CHECK_EQ_INT(e->cli.reset_code, WSTUN__V2_CANCEL);
      CHECK_EQ_INT(e->cli.rx[0].ended, 1);
      CHECK_EQ_INT(e->cli.rx[0].complete, 0);
    }
    CHECK_EQ_INT(a.failed + a.sent, 0); /* freed by the tunnel, silently */
    /* client -> server: the backend failed; the server's message (still
     * open) comes back */
    wstun__tunnel_send(e->srv.t, 3, msg_new(&b, REQ_BIG, "more", 4, 0));
    RUN_UNTIL(e, cli_began_2, 5000);
    CHECK_EQ_INT(e->cli.nrx, 2);
    wstun__tunnel_send(e->cli.t, 3, msg_new(&c, RESP_HI, "h", 1, 0));
    run_for(e, 50);
    wstun__tunnel_reset(e->cli.t, 3, WSTUN__V2_INTERNAL_ERROR);
    if (RUN_UNTIL(e, srv_reset_seen, 5000)) {
      CHECK_EQ_INT(e->srv.reset_id, 3);
      CHECK_EQ_INT(e->srv.reset_code, WSTUN__V2_INTERNAL_ERROR);
      CHECK_EQ_INT(b.failed, 1);
      CHECK_EQ_INT(b.restartable, 0);
      rx_msg *m = find_rx(&e->srv, 3);
      CHECK(m != NULL && m->ended == 1 && m->complete == 0);
    }
    CHECK_EQ_INT(e->srv.closed + e->cli.closed, 0);
  }
  env_done(e);
}

static int cli_goaway_seen(env *e) {
  return e->cli.goaways > 0;
}
static int srv_goaway_seen(env *e) {
  return e->srv.goaways > 0;
}

TEST(goaway_is_delivered_and_refuses_streams) {
  env *e = &E;
  if (env_start(e, 0) == 0) {
    /* static: a message may still be queued when env_done ends it */
    static tx a, b, c, d;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&c, 0, sizeof(c));
    memset(&d, 0, sizeof(d));
    wstun__tunnel_send(e->srv.t, 1, msg_new(&a, REQ_GET, "", 0, 1));
    RUN_UNTIL(e, cli_got_1, 5000);
    /* the client drains: stream 3, still unanswered, was never taken */
    wstun__tunnel_goaway(e->cli.t, WSTUN__V2_NO_ERROR);
    wstun__tunnel_send(e->srv.t, 3, msg_new(&b, REQ_GET, "", 0, 1));
    if (RUN_UNTIL(e, srv_goaway_seen, 5000)) {
      CHECK_EQ_INT(e->srv.goaway_last, 1);
      CHECK_EQ_INT(e->srv.goaway_code, WSTUN__V2_NO_ERROR);
    }
    run_for(e, 50);
    /* 3 crossed the GOAWAY: not served (its message, whole in one HEAD,
     * had gone already) */
    CHECK_EQ_INT(b.sent + b.failed, 1);
    CHECK(find_rx(&e->cli, 3) == NULL);
    CHECK_EQ_INT(e->srv.reset_id, 3);
    CHECK_EQ_INT(e->srv.reset_code, WSTUN__V2_REFUSED);
    /* no new streams after it */
    wstun__tunnel_send(e->srv.t, 5, msg_new(&c, REQ_GET, "", 0, 1));
    CHECK_EQ_INT(c.failed, 1);
    CHECK_EQ_INT(c.restartable, 1);
    /* stream 1 goes on to its end */
    wstun__tunnel_send(e->cli.t, 1, msg_new(&d, RESP_HI, "hi", 2, 1));
    if (RUN_UNTIL(e, srv_got_1, 5000))
      check_rx(&e->srv, 1, RESP_HI, "hi", 2, 1);
    /* and the server's GOAWAY reaches the client */
    wstun__tunnel_goaway(e->srv.t, WSTUN__V2_NO_ERROR);
    if (RUN_UNTIL(e, cli_goaway_seen, 5000))
      CHECK_EQ_INT(e->cli.goaway_last, 3);
    CHECK_EQ_INT(e->srv.closed + e->cli.closed, 0);
  }
  env_done(e);
}

static int cli_two_begun(env *e) {
  return e->cli.nrx >= 2;
}

TEST(abandon_ends_a_started_stream_and_drops_an_unstarted_one) {
  env *e = &E;
  if (env_start(e, 0) == 0) {
    static tx a, b, c;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&c, 0, sizeof(c));
    /* started: what it holds goes, then END (as v1's early end) */
    wstun__outmsg *m1 = msg_new(&a, REQ_BIG, "part", 4, 0);
    wstun__tunnel_send(e->srv.t, 1, m1);
    run_for(e, 50);
    wstun__buf_append(&m1->buf, "+", 1);
    wstun__outmsg_abandon(m1);
    if (RUN_UNTIL(e, cli_got_1, 5000))
      check_rx(&e->cli, 1, REQ_BIG, "part+", 5, 1);
    CHECK_EQ_INT(a.sent + a.failed, 0); /* the owner gave it up */
    /* never started (its head is not all there): it never reaches the
     * wire, and the next stream goes as usual */
    wstun__outmsg *m3 = msg_new(&b, "GET /3 HTT", "", 0, 0);
    wstun__outmsg_set_head_len(m3, 40);
    wstun__tunnel_send(e->srv.t, 3, m3);
    CHECK_EQ_INT(wstun__tunnel_queued(e->srv.t), 1);
    wstun__outmsg_abandon(m3);
    CHECK_EQ_INT(wstun__tunnel_queued(e->srv.t), 0);
    wstun__tunnel_send(e->srv.t, 5, msg_new(&c, REQ_GET, "", 0, 1));
    if (RUN_UNTIL(e, cli_two_begun, 5000))
      CHECK_EQ_INT(e->cli.rx[1].id, 5);
    CHECK(find_rx(&e->cli, 3) == NULL);
    CHECK_EQ_INT(e->srv.closed + e->cli.closed, 0);
  }
  env_done(e);
}

/* ---- a raw peer: the wire --------------------------------------------------
 */

/* Sends one binary WebSocket message holding bytes p. */
static void raw_send(env *e, const uint8_t *p, size_t n) {
  uint8_t *f = malloc(n + 14);
  if (f == NULL)
    abort();
  size_t fl = ws_frame(f, 0x2, 1, p, n);
  CHECK_EQ_INT(wstun__conn_write(e->cli.conn, f, fl), 0);
  free(f);
}

/* The next whole message the server wrote (continuations joined); 1 and
 * its opcode and bytes, or 0 when none is whole yet. */
static int raw_msg(env *e, int *opcode, wstun__buf *out) {
  const uint8_t *d = wstun__buf_data(&e->raw_in);
  size_t n = wstun__buf_size(&e->raw_in), at = 0;
  wstun__buf_reset(out);
  int op = -1;
  while (at + 2 <= n) {
    int fin = d[at] & 0x80, o = d[at] & 0x0f;
    uint64_t len = d[at + 1] & 0x7f;
    size_t h = 2;
    if (len == 126) {
      if (at + 4 > n)
        return 0;
      len = (uint64_t)d[at + 2] << 8 | d[at + 3];
      h = 4;
    } else if (len == 127) {
      if (at + 10 > n)
        return 0;
      len = 0;
      for (int i = 0; i < 8; i++)
        len = len << 8 | d[at + 2 + i];
      h = 10;
    }
    if (at + h + len > n)
      return 0;
    if (o >= 8) { /* a control frame: whole on its own */
      if (op != -1) {
        at += h + (size_t)len; /* skipped inside a message */
        continue;
      }
      op = o;
      wstun__buf_append(out, d + at + h, (size_t)len);
      wstun__buf_consume(&e->raw_in, at + h + (size_t)len);
      *opcode = op;
      return 1;
    }
    if (o != 0)
      op = o;
    wstun__buf_append(out, d + at + h, (size_t)len);
    at += h + (size_t)len;
    if (fin) {
      wstun__buf_consume(&e->raw_in, at);
      *opcode = op;
      return 1;
    }
  }
  return 0;
}

/* Reads messages until a v2 frame of this type (skipping others) comes;
 * its bytes in out. 0 if none within ms. */
static int raw_expect(env *e, int type, wstun__buf *out, uint64_t ms) {
  uint64_t until = uv_now(&e->loop) + ms;
  for (;;) {
    int op;
    while (raw_msg(e, &op, out)) {
      if (op == 0x2 && wstun__buf_size(out) >= 9 &&
          wstun__buf_data(out)[0] == type)
        return 1;
      if (op == 0x8 && type == 0x8)
        return 1;
    }
    if (uv_now(&e->loop) >= until)
      return 0;
    run_for(e, 10);
  }
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

/* Section 7.10's golden frames (stream 1 unless said) */
static const uint8_t G_RESP_HEAD[] = {
    0x01, 0x00, 0x00, 0x00, 0x26, 0x00, 0x00, 0x00, 0x01, 'H',  'T', 'T',
    'P',  '/',  '1',  '.',  '1',  ' ',  '2',  '0',  '0',  ' ',  'O', 'K',
    '\r', '\n', 'C',  'o',  'n',  't',  'e',  'n',  't',  '-',  'L', 'e',
    'n',  'g',  't',  'h',  ':',  ' ',  '2',  '\r', '\n', '\r', '\n'};
static const uint8_t G_DATA[] = {0x02, 0x00, 0x00, 0x00, 0x02, 0x00,
                                 0x00, 0x00, 0x01, 0x68, 0x69};
static const uint8_t G_END[] = {0x02, 0x01, 0x00, 0x00, 0x00,
                                0x00, 0x00, 0x00, 0x01};

/* The server opens stream 1 towards the raw peer (request not ended). */
static void open_stream_1(env *e, tx *x) {
  wstun__buf b = WSTUN__BUF_INIT;
  wstun__tunnel_send(e->srv.t, 1, msg_new(x, REQ_BIG, "", 0, 0));
  CHECK(raw_expect(e, WSTUN__V2_HEAD, &b, 2000));
  if (wstun__buf_size(&b) >= 9)
    CHECK_EQ_INT(be32(wstun__buf_data(&b) + 5), 1);
  wstun__buf_free(&b);
}

TEST(golden_frames_from_a_raw_peer_make_a_response) {
  env *e = &E;
  if (env_start(e, 1) == 0) {
    /* static: a message may still be queued when env_done ends it */
    static tx x;
    memset(&x, 0, sizeof(x));
    open_stream_1(e, &x);
    raw_send(e, G_RESP_HEAD, sizeof(G_RESP_HEAD));
    raw_send(e, G_DATA, sizeof(G_DATA));
    raw_send(e, G_END, sizeof(G_END));
    if (RUN_UNTIL(e, srv_got_1, 5000))
      check_rx(&e->srv, 1, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", "hi",
               2, 1);
    CHECK_EQ_INT(e->srv.closed, 0);
  }
  env_done(e);
}

/* A DATA frame of n pattern bytes on stream id. */
static size_t data_frame(uint8_t *out, uint32_t id, size_t n, int end) {
  wstun__v2_frame f = {
      WSTUN__V2_DATA, (uint8_t)(end ? 1 : 0), (uint32_t)n, id, 0, 0, 0};
  int hl = wstun__v2_encode(&f, out);
  for (size_t i = 0; i < n; i++)
    out[(size_t)hl + i] = pat(i, 1);
  return (size_t)hl + n;
}

TEST(window_updates_go_at_half_the_window) {
  env *e = &E;
  if (env_start(e, 1) == 0) {
    /* static: a message may still be queued when env_done ends it */
    static tx x;
    memset(&x, 0, sizeof(x));
    wstun__buf b = WSTUN__BUF_INIT;
    uint8_t *f = malloc(9 + 65536);
    if (f == NULL)
      abort();
    open_stream_1(e, &x);
    raw_send(e, G_RESP_HEAD, sizeof(G_RESP_HEAD));
    /* 512 KiB - 1 in 16 KiB frames: not yet half */
    size_t half = WSTUN__V2_STREAM_WINDOW / 2, sent = 0;
    while (sent < half - 1) {
      size_t n = half - 1 - sent < 16384 ? half - 1 - sent : 16384;
      raw_send(e, f, data_frame(f, 1, n, 0));
      sent += n;
    }
    run_for(e, 100);
    CHECK(!raw_expect(e, WSTUN__V2_WINDOW, &b, 50));
    raw_send(e, f, data_frame(f, 1, 1, 0));
    CHECK(raw_expect(e, WSTUN__V2_WINDOW, &b, 2000));
    static const uint8_t want[] = {0x04, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00,
                                   0x00, 0x01, 0x00, 0x08, 0x00, 0x00};
    CHECK_EQ_INT(wstun__buf_size(&b), sizeof(want)); /* 7.10's v2_window */
    if (wstun__buf_size(&b) == sizeof(want))
      CHECK_MEM(wstun__buf_data(&b), want, sizeof(want));
    /* the tunnel's at 8 MiB: sixteen more streams' worth of half windows
     * (the server opens them; the peer answers each with 512 KiB) */
    sent = half;
    static tx ys[MAXRX];
    memset(ys, 0, sizeof(ys));
    for (uint32_t id = 3; sent < WSTUN__V2_TUNNEL_WINDOW / 2; id += 2) {
      wstun__buf hb = WSTUN__BUF_INIT;
      wstun__tunnel_send(e->srv.t, id, msg_new(&ys[id / 2], REQ_GET, "", 0, 1));
      CHECK(raw_expect(e, WSTUN__V2_HEAD, &hb, 2000));
      wstun__buf_free(&hb);
      uint8_t h[sizeof(G_RESP_HEAD)];
      memcpy(h, G_RESP_HEAD, sizeof(h));
      h[8] = (uint8_t)id;
      raw_send(e, h, sizeof(h));
      for (size_t k = 0; k < half; k += 65536)
        raw_send(e, f, data_frame(f, id, 65536, 0));
      sent += half;
    }
    run_for(e, 100);
    int tunnel_window = 0;
    while (raw_expect(e, WSTUN__V2_WINDOW, &b, 50))
      if (be32(wstun__buf_data(&b) + 5) == 0) {
        tunnel_window++;
        CHECK_EQ_INT(be32(wstun__buf_data(&b) + 9),
                     WSTUN__V2_TUNNEL_WINDOW / 2);
      }
    CHECK_EQ_INT(tunnel_window, 1);
    CHECK_EQ_INT(e->srv.closed, 0);
    CHECK_EQ_INT(e->srv.resets, 0);
    free(f);
    wstun__buf_free(&b);
  }
  env_done(e);
}

static const char RESP_100[] = "HTTP/1.1 100 Continue\r\n\r\n";

TEST(interim_heads_go_as_their_own_head_frames) {
  env *e = &E;
  if (env_start(e, 0) == 0) {
    static tx a, b;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    wstun__tunnel_send(e->srv.t, 1, msg_new(&a, REQ_GET, "", 0, 1));
    RUN_UNTIL(e, cli_got_1, 5000);
    /* the client answers 100 Continue, then 200 and its body */
    wstun__outmsg *m = msg_new(&b, RESP_100, "", 0, 0);
    wstun__tunnel_send(e->cli.t, 1, m);
    wstun__buf_append(&m->buf, RESP_HI, strlen(RESP_HI));
    CHECK_EQ_INT(wstun__outmsg_add_head(m, (uint32_t)strlen(RESP_HI)), 0);
    /* not more than buf holds; not overlapping the head before */
    CHECK_EQ_INT(wstun__outmsg_add_head(m, 1u << 20), WSTUN_EINVAL);
    CHECK_EQ_INT(wstun__outmsg_add_head(m, 0), WSTUN_EINVAL);
    wstun__buf_append(&m->buf, "hi", 2);
    m->finished = 1;
    wstun__tunnel_kick(e->cli.t);
    char both[128];
    snprintf(both, sizeof(both), "%s%s", RESP_100, RESP_HI);
    /* a second HEAD on the server's own stream is allowed (interim) */
    if (RUN_UNTIL(e, srv_got_1, 5000))
      check_rx(&e->srv, 1, both, "hi", 2, 1);
    CHECK_EQ_INT(e->srv.resets + e->cli.resets, 0);
    CHECK_EQ_INT(b.sent, 1);
  }
  env_done(e);
}

/* The raw peer's next DATA frame is "hi" with END, on stream 1. */
static void expect_hi_end(env *e, wstun__buf *b) {
  static const uint8_t hi_end[] = {0x02, 0x01, 0x00, 0x00, 0x02, 0x00,
                                   0x00, 0x00, 0x01, 0x68, 0x69};
  CHECK(raw_expect(e, WSTUN__V2_DATA, b, 2000));
  CHECK_EQ_INT(wstun__buf_size(b), sizeof(hi_end));
  if (wstun__buf_size(b) == sizeof(hi_end))
    CHECK_MEM(wstun__buf_data(b), hi_end, sizeof(hi_end));
}

TEST(each_marked_head_is_one_head_frame_on_the_wire) {
  env *e = &E;
  if (env_start(e, 1) == 0) {
    static tx a;
    memset(&a, 0, sizeof(a));
    wstun__buf b = WSTUN__BUF_INIT;
    wstun__outmsg *m = msg_new(&a, RESP_100, "", 0, 0);
    wstun__buf_append(&m->buf, RESP_HI, strlen(RESP_HI));
    CHECK_EQ_INT(wstun__outmsg_add_head(m, (uint32_t)strlen(RESP_HI)), 0);
    wstun__buf_append(&m->buf, "hi", 2);
    m->finished = 1;
    wstun__tunnel_send(e->srv.t, 1, m);
    CHECK(raw_expect(e, WSTUN__V2_HEAD, &b, 2000));
    CHECK_EQ_INT(wstun__buf_size(&b), 9 + strlen(RESP_100));
    CHECK(raw_expect(e, WSTUN__V2_HEAD, &b, 2000));
    CHECK_EQ_INT(wstun__buf_size(&b), 9 + strlen(RESP_HI));
    if (wstun__buf_size(&b) == 9 + strlen(RESP_HI))
      CHECK_MEM(wstun__buf_data(&b) + 9, RESP_HI, strlen(RESP_HI));
    expect_hi_end(e, &b);
    wstun__buf_free(&b);
  }
  env_done(e);
}

/* An HTTP head of exactly n bytes (n >= 40): a request or status line,
 * one long header line, the empty line. Caller frees. */
static char *long_head(const char *first, size_t n) {
  char *h = malloc(n + 1);
  if (h == NULL)
    abort();
  size_t fl = strlen(first);
  memcpy(h, first, fl);
  memcpy(h + fl, "X-Long: ", 8);
  for (size_t i = fl + 8; i < n - 4; i++)
    h[i] = (char)('a' + i % 26);
  memcpy(h + n - 4, "\r\n\r\n", 5);
  return h;
}

/* 7.2: a head over 256 KiB goes in several HEAD frames, each but the last
 * exactly WSTUN__V2_MAX_HEAD long and without END; then the body. */
TEST(a_head_over_the_frame_limit_goes_in_several_head_frames) {
  env *e = &E;
  if (env_start(e, 1) == 0) {
    static tx a;
    memset(&a, 0, sizeof(a));
    const size_t n = 2 * WSTUN__V2_MAX_HEAD + 1000;
    char *head = long_head("POST / HTTP/1.1\r\nContent-Length: 2\r\n", n);
    wstun__tunnel_send(e->srv.t, 1, msg_new(&a, head, "hi", 2, 1));
    wstun__buf b = WSTUN__BUF_INIT, all = WSTUN__BUF_INIT;
    const size_t want[3] = {WSTUN__V2_MAX_HEAD, WSTUN__V2_MAX_HEAD, 1000};
    for (int i = 0; i < 3; i++) {
      test_context("HEAD frame %d", i);
      int came = raw_expect(e, WSTUN__V2_HEAD, &b, 5000);
      CHECK(came); /* a HEAD frame came */
      if (!came)
        break;
      CHECK_EQ_INT(wstun__buf_size(&b), 9 + want[i]);
      CHECK_EQ_INT(wstun__buf_data(&b)[1], 0); /* no END: the body follows */
      CHECK_EQ_INT(be32(wstun__buf_data(&b) + 5), 1);
      wstun__buf_append(&all, wstun__buf_data(&b) + 9, wstun__buf_size(&b) - 9);
    }
    test_context(NULL);
    CHECK_EQ_INT(wstun__buf_size(&all), n);
    if (wstun__buf_size(&all) == n)
      CHECK_MEM(wstun__buf_data(&all), head, n);
    expect_hi_end(e, &b);
    wstun__buf_free(&b);
    wstun__buf_free(&all);
    free(head);
  }
  env_done(e);
}

/* The receiver takes a continued head as one: a long request head (and one
 * of exactly 256 KiB, followed by DATA) reaches the client whole, and a
 * long response head the server; nothing is reset. */
TEST(long_heads_arrive_whole_both_ways) {
  env *e = &E;
  if (env_start(e, 0) == 0) {
    static tx a, b, c;
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    memset(&c, 0, sizeof(c));
    char *req = long_head("POST / HTTP/1.1\r\nContent-Length: 2\r\n",
                          WSTUN__V2_MAX_HEAD * 2 + 77);
    char *full = long_head("GET / HTTP/1.1\r\nContent-Length: 2\r\n",
                           WSTUN__V2_MAX_HEAD);
    char *resp = long_head("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
                           WSTUN__V2_MAX_HEAD + 5);
    wstun__tunnel_send(e->srv.t, 1, msg_new(&a, req, "ab", 2, 1));
    wstun__tunnel_send(e->srv.t, 3, msg_new(&c, full, "cd", 2, 1));
    if (RUN_UNTIL(e, cli_two_ended, 5000)) {
      check_rx(&e->cli, 1, req, "ab", 2, 1);
      check_rx(&e->cli, 3, full, "cd", 2, 1);
    }
    wstun__tunnel_send(e->cli.t, 1, msg_new(&b, resp, "hi", 2, 1));
    if (RUN_UNTIL(e, srv_got_1, 5000))
      check_rx(&e->srv, 1, resp, "hi", 2, 1);
    CHECK_EQ_INT(a.sent + b.sent + c.sent, 3);
    CHECK_EQ_INT(a.failed + b.failed + c.failed, 0);
    CHECK_EQ_INT(e->srv.resets + e->cli.resets, 0);
    CHECK_EQ_INT(e->srv.closed + e->cli.closed, 0);
    free(req);
    free(full);
    free(resp);
  }
  env_done(e);
}

static int srv_closed(env *e) {
  return e->srv.closed > 0;
}

/* A tunnel error: GOAWAY with the code, then close 1002, on_closed EPROTO. */
static void expect_tunnel_error(env *e, uint32_t code) {
  wstun__buf b = WSTUN__BUF_INIT;
  CHECK(raw_expect(e, WSTUN__V2_GOAWAY, &b, 2000));
  CHECK_EQ_INT(wstun__buf_size(&b), 17);
  if (wstun__buf_size(&b) == 17)
    CHECK_EQ_INT(be32(wstun__buf_data(&b) + 13), code);
  CHECK(raw_expect(e, 0x8, &b, 2000));
  if (wstun__buf_size(&b) >= 2)
    CHECK_EQ_INT(wstun__buf_data(&b)[0] << 8 | wstun__buf_data(&b)[1], 1002);
  if (RUN_UNTIL(e, srv_closed, 2000))
    CHECK_EQ_INT(e->srv.close_err, WSTUN_EPROTO);
  wstun__buf_free(&b);
}

static void expect_stream_error(env *e, uint32_t id, uint32_t code) {
  wstun__buf b = WSTUN__BUF_INIT;
  CHECK(raw_expect(e, WSTUN__V2_RESET, &b, 2000));
  if (wstun__buf_size(&b) == 13) {
    CHECK_EQ_INT(be32(wstun__buf_data(&b) + 5), id);
    CHECK_EQ_INT(be32(wstun__buf_data(&b) + 9), code);
  }
  run_for(e, 20);
  CHECK_EQ_INT(e->srv.closed, 0);
  wstun__buf_free(&b);
}

TEST(malformed_frames_are_tunnel_errors) {
  static const struct {
    const char *what;
    uint8_t bytes[20];
    size_t n;
    int open; /* stream 1 opened first */
  } cases[] = {
      {"type 06", {0x06, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0}, 13, 0},
      {"flag 02 on DATA", {0x02, 0x02, 0, 0, 0, 0, 0, 0, 1}, 9, 1},
      {"RESET of length 3", {0x03, 0, 0, 0, 3, 0, 0, 0, 1, 0, 0, 0}, 12, 1},
      {"reserved bit", {0x04, 0, 0, 0, 4, 0x80, 0, 0, 1, 0, 0, 0, 1}, 13, 1},
      {"HEAD on stream 0", {0x01, 0x01, 0, 0, 1, 0, 0, 0, 0, 'x'}, 10, 0},
      {"WINDOW of 0", {0x04, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0}, 13, 0},
      {"HEAD from the client (stream 2)",
       {0x01, 0x01, 0, 0, 1, 0, 0, 0, 2, 'x'},
       10,
       0},
      {"DATA on a stream never opened",
       {0x02, 0x01, 0, 0, 0, 0, 0, 0, 5},
       9,
       1},
      {"message shorter than its frame",
       {0x02, 0x00, 0, 0, 4, 0, 0, 0, 1, 'a'},
       10,
       1},
      {"message longer than its frame",
       {0x03, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 5, 9},
       14,
       1},
      {"message shorter than a header", {0x02, 0x01, 0}, 3, 0},
      {"GOAWAY raising its last id (after 0)",
       {0x05, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
       17,
       0},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    env *e = &E;
    test_context("%s", cases[i].what);
    if (env_start(e, 1) == 0) {
      /* static: a message may still be queued when env_done ends it */
      static tx x;
      memset(&x, 0, sizeof(x));
      if (cases[i].open)
        open_stream_1(e, &x);
      if (i == sizeof(cases) / sizeof(cases[0]) - 1) {
        /* a first GOAWAY lowers to 0; the second raises to 1 */
        raw_send(e, cases[i].bytes, cases[i].n);
        uint8_t g[17];
        memcpy(g, cases[i].bytes, 17);
        g[12] = 1;
        raw_send(e, g, 17);
      } else {
        raw_send(e, cases[i].bytes, cases[i].n);
      }
      expect_tunnel_error(e, WSTUN__V2_PROTOCOL_ERROR);
      if (cases[i].open) {
        CHECK_EQ_INT(x.failed, 1); /* its message came back */
      }
    }
    env_done(e);
  }
  test_context(NULL);
}

TEST(data_beyond_the_tunnel_window_is_a_tunnel_error) {
  env *e = &E;
  if (env_start(e, 1) == 0) {
    /* 17 streams whose sinks hold 1 MiB each (no consumption) */
    uint8_t *f = malloc(9 + 65536);
    if (f == NULL)
      abort();
    static tx ys[MAXRX];
    memset(ys, 0, sizeof(ys));
    e->srv.hold_all = 1;
    for (uint32_t id = 1; id <= 33; id += 2) {
      wstun__buf hb = WSTUN__BUF_INIT;
      wstun__tunnel_send(e->srv.t, id, msg_new(&ys[id / 2], REQ_GET, "", 0, 1));
      CHECK(raw_expect(e, WSTUN__V2_HEAD, &hb, 2000));
      wstun__buf_free(&hb);
    }
    for (uint32_t id = 1; id <= 33 && e->srv.closed == 0; id += 2) {
      uint8_t h[sizeof(G_RESP_HEAD)];
      memcpy(h, G_RESP_HEAD, sizeof(h));
      h[8] = (uint8_t)id;
      raw_send(e, h, sizeof(h));
      run_for(e, 1);
      for (size_t k = 0; k < WSTUN__V2_STREAM_WINDOW; k += 65536)
        raw_send(e, f, data_frame(f, id, 65536, 0));
      run_for(e, 5);
    }
    expect_tunnel_error(e, WSTUN__V2_FLOW_CONTROL_ERROR);
    free(f);
  }
  env_done(e);
}

TEST(stream_errors_reset_the_stream_and_the_tunnel_goes_on) {
  env *e = &E;
  uint8_t *f = malloc(9 + 65536);
  if (f == NULL)
    abort();
  /* DATA before the response head */
  if (env_start(e, 1) == 0) {
    /* static: a message may still be queued when env_done ends it */
    static tx x;
    memset(&x, 0, sizeof(x));
    open_stream_1(e, &x);
    raw_send(e, G_DATA, sizeof(G_DATA));
    expect_stream_error(e, 1, WSTUN__V2_PROTOCOL_ERROR);
    CHECK_EQ_INT(x.failed, 1);
  }
  env_done(e);
  /* HEAD after DATA */
  if (env_start(e, 1) == 0) {
    /* static: a message may still be queued when env_done ends it */
    static tx x;
    memset(&x, 0, sizeof(x));
    open_stream_1(e, &x);
    raw_send(e, G_RESP_HEAD, sizeof(G_RESP_HEAD));
    raw_send(e, G_DATA, sizeof(G_DATA));
    raw_send(e, G_RESP_HEAD, sizeof(G_RESP_HEAD));
    expect_stream_error(e, 1, WSTUN__V2_PROTOCOL_ERROR);
    rx_msg *m = find_rx(&e->srv, 1);
    CHECK(m != NULL && m->ended == 1 && m->complete == 0);
  }
  env_done(e);
  /* DATA after END */
  if (env_start(e, 1) == 0) {
    /* static: a message may still be queued when env_done ends it */
    static tx x;
    memset(&x, 0, sizeof(x));
    open_stream_1(e, &x);
    raw_send(e, G_RESP_HEAD, sizeof(G_RESP_HEAD));
    raw_send(e, G_END, sizeof(G_END));
    raw_send(e, G_DATA, sizeof(G_DATA));
    expect_stream_error(e, 1, WSTUN__V2_PROTOCOL_ERROR);
  }
  env_done(e);
  /* DATA beyond the stream window (the sink holds it all) */
  if (env_start(e, 1) == 0) {
    /* static: a message may still be queued when env_done ends it */
    static tx x;
    memset(&x, 0, sizeof(x));
    e->srv.hold_id = 1;
    open_stream_1(e, &x);
    raw_send(e, G_RESP_HEAD, sizeof(G_RESP_HEAD));
    for (size_t k = 0; k < WSTUN__V2_STREAM_WINDOW; k += 65536)
      raw_send(e, f, data_frame(f, 1, 65536, 0));
    raw_send(e, f, data_frame(f, 1, 1, 0));
    expect_stream_error(e, 1, WSTUN__V2_FLOW_CONTROL_ERROR);
    /* frames that crossed the RESET are dropped, not errors */
    raw_send(e, G_DATA, sizeof(G_DATA));
    static const uint8_t reset1[] = {0x03, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 5};
    raw_send(e, reset1, sizeof(reset1));
    run_for(e, 50);
    CHECK_EQ_INT(e->srv.closed, 0);
    /* and the tunnel still carries streams */
    /* static: a message may still be queued when env_done ends it */
    static tx y;
    memset(&y, 0, sizeof(y));
    wstun__buf b = WSTUN__BUF_INIT;
    wstun__tunnel_send(e->srv.t, 3, msg_new(&y, REQ_GET, "", 0, 1));
    CHECK(raw_expect(e, WSTUN__V2_HEAD, &b, 2000));
    wstun__buf_free(&b);
  }
  env_done(e);
  /* the peer's RESET (7.10's golden RESET, on stream 3) */
  if (env_start(e, 1) == 0) {
    /* static: a message may still be queued when env_done ends it */
    static tx x, y;
    memset(&x, 0, sizeof(x));
    memset(&y, 0, sizeof(y));
    open_stream_1(e, &x);
    wstun__buf b = WSTUN__BUF_INIT;
    wstun__tunnel_send(e->srv.t, 3, msg_new(&y, REQ_BIG, "", 0, 0));
    CHECK(raw_expect(e, WSTUN__V2_HEAD, &b, 2000));
    wstun__buf_free(&b);
    static const uint8_t g_reset[] = {0x03, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00,
                                      0x00, 0x03, 0x00, 0x00, 0x00, 0x05};
    raw_send(e, g_reset, sizeof(g_reset));
    if (RUN_UNTIL(e, srv_reset_seen, 2000)) {
      CHECK_EQ_INT(e->srv.reset_id, 3);
      CHECK_EQ_INT(e->srv.reset_code, WSTUN__V2_CANCEL);
    }
    CHECK_EQ_INT(y.failed, 1);
    CHECK_EQ_INT(x.failed, 0);
    CHECK_EQ_INT(e->srv.closed, 0);
  }
  env_done(e);
  free(f);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(request_and_response_on_one_stream),
      T(messages_that_cannot_go_come_back),
      T(a_small_stream_passes_a_big_one),
      T(big_streams_both_ways_at_once),
      T(a_sink_that_consumes_nothing_stalls_only_its_stream),
      T(pause_rx_does_not_stop_a_v2_tunnel),
      T(reset_ends_the_stream_on_the_other_side_both_ways),
      T(goaway_is_delivered_and_refuses_streams),
      T(abandon_ends_a_started_stream_and_drops_an_unstarted_one),
      T(golden_frames_from_a_raw_peer_make_a_response),
      T(window_updates_go_at_half_the_window),
      T(interim_heads_go_as_their_own_head_frames),
      T(each_marked_head_is_one_head_frame_on_the_wire),
      T(a_head_over_the_frame_limit_goes_in_several_head_frames),
      T(long_heads_arrive_whole_both_ways),
      T(malformed_frames_are_tunnel_errors),
      T(data_beyond_the_tunnel_window_is_a_tunnel_error),
      T(stream_errors_reset_the_stream_and_the_tunnel_goes_on),
  };
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
