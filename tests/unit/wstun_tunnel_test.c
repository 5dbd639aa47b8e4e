/* conn + tunnel on a real uv loop: a loopback TCP pair on 127.0.0.1 port 0,
 * a server-side tunnel on the accepted socket and a client-side tunnel on
 * the other (no handshake: the tunnel starts on raw sockets). Every loop
 * run is bounded by a guard timer, and every test ends by closing
 * everything and checking uv_loop_close() == 0, so ASan's leak checker
 * sees whatever a test leaves behind. */
#include "wstun_tunnel.h"

#include <stdlib.h>

#include "test.h"
#include "wstun/wstun.h"
#include "wstun_conn.h"
#include "wstun_proto.h"

#define MAXRX 16
#define MIB (1024 * 1024)

typedef struct env env;

typedef struct rx_msg {
  uint32_t id;
  wstun__buf data;
  int ended, complete;
} rx_msg;

typedef struct side {
  env *e;
  char tag;         /* 's' or 'c' in the event log */
  wstun__tunnel *t; /* NULL once on_closed fired */
  wstun__conn *conn;
  int handed; /* conn belongs to the tunnel */
  rx_msg rx[MAXRX];
  int nrx;
  int closed, close_err, freed;
  uint64_t closed_at;
  /* behaviour of the sink */
  int drop_id;     /* on_msg_begin refuses this id (-1: none) */
  int pause_on_id; /* on_msg_begin pauses rx for this id (-1: none) */
  int pauses;
  int resume_on_end_id; /* on_msg_end resumes rx for this id (-1: none) */
} side;

struct env {
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_timer_t guard;
  int guard_fired;
  int listener_open;
  int flushers_open;
  wstun__conn_shared *sh_srv, *sh_cli;
  wstun__rng rng_srv, rng_cli;
  wstun__logger log;
  int connected, connect_status;
  side srv, cli;
  wstun__buf raw; /* what reached a raw server side (env_opts.srv_raw) */
  char events[512];
  uint64_t started_at;
};

/* ---- event log ----------------------------------------------------------- */

/* Hands m to the tunnel under the id it was made with. */
static void send_msg(wstun__tunnel *t, wstun__outmsg *m) {
  wstun__tunnel_send(t, m->id, m);
}

static void ev(env *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void ev(env *e, const char *fmt, ...) {
  size_t n = strlen(e->events);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->events + n, sizeof(e->events) - n, fmt, ap);
  va_end(ap);
}

/* ---- outgoing messages --------------------------------------------------- */

typedef struct tx {
  env *e;
  char tag;
  int sent, failed, restartable, drains;
} tx;

static void tx_sent(void *owner, wstun__outmsg *m) {
  tx *x = owner;
  (void)m;
  x->sent++;
  ev(x->e, "S%c ", x->tag);
}

static void tx_drain(void *owner, wstun__outmsg *m) {
  tx *x = owner;
  (void)m;
  x->drains++;
}

static void tx_failed(void *owner, wstun__outmsg *m, int restartable) {
  tx *x = owner;
  x->failed++;
  x->restartable = restartable;
  ev(x->e, "F%c%d ", x->tag, restartable);
  wstun__outmsg_free(m); /* ownership came back */
}

static const wstun__outmsg_cbs tx_cbs = {tx_sent, tx_drain, tx_failed};

static wstun__outmsg *msg_new(tx *x, uint16_t id, const void *body, size_t n,
                              int finished) {
  wstun__outmsg *m = wstun__outmsg_new(&tx_cbs, x);
  if (m == NULL)
    abort();
  m->id = id; /* for send_msg */
  if (wstun__buf_append(&m->buf, body, n) != 0)
    abort();
  m->finished = finished ? 1u : 0u;
  return m;
}

/* ---- tunnel callbacks ---------------------------------------------------- */

static void *on_msg_begin(wstun__tunnel *t, uint32_t id) {
  side *s = t->owner;
  ev(s->e, "B%c%x ", s->tag, (unsigned)id);
  if ((int)id == s->drop_id || s->nrx >= MAXRX)
    return NULL;
  rx_msg *m = &s->rx[s->nrx++];
  m->id = id;
  if ((int)id == s->pause_on_id) {
    s->pauses++;
    wstun__tunnel_pause_rx(t);
  }
  return m;
}

static int on_msg_data(wstun__tunnel *t, void *sink, const uint8_t *data,
                       size_t len) {
  rx_msg *m = sink;
  (void)t;
  if (m->ended)
    printf("    data after the end of message %04x\n", m->id);
  return wstun__buf_append(&m->data, data, len) == 0 ? 0 : 1;
}

static void on_msg_end(wstun__tunnel *t, void *sink, int complete) {
  side *s = t->owner;
  rx_msg *m = sink;
  m->ended++;
  m->complete = complete;
  /* as the server's front does: a sink finishing its message resumes the
   * tunnel it paused, from inside the tunnel's own receive call */
  if ((int)m->id == s->resume_on_end_id)
    wstun__tunnel_resume_rx(t);
  ev(s->e, "E%c%x%s ", s->tag, (unsigned)m->id, complete ? "" : "!");
}

static void on_closed(wstun__tunnel *t, int err) {
  side *s = t->owner;
  s->closed++;
  s->close_err = err;
  s->closed_at = uv_now(&s->e->loop);
  s->t = NULL;
  ev(s->e, "C%c ", s->tag);
}

static void on_freed(void *owner) {
  side *s = owner;
  s->freed++;
}

static const wstun__tunnel_cbs tun_cbs = {on_msg_begin, on_msg_data, on_msg_end,
                                          on_closed,    on_freed,    NULL,
                                          NULL,         NULL};

/* ---- connections before the tunnel takes them -----------------------------
 */

static size_t pre_on_data(wstun__conn *c, const uint8_t *d, size_t n) {
  env *e = c->owner;
  if (c == e->srv.conn && wstun__buf_append(&e->raw, d, n) != 0)
    abort();
  return n;
}

/* after env, side, rx_msg, tx and pre_on_data: the fixture uses them */
#include "tunnel_fixture.h"

/* ---- setting up and tearing down ----------------------------------------- */

typedef struct {
  uint64_t srv_ping, srv_dead, cli_ping, cli_dead;
  const uint8_t *srv_leftover;
  size_t srv_leftover_len;
  int srv_raw; /* no server tunnel: its conn keeps the raw bytes (e->raw) */
} env_opts;

static void side_init(env *e, side *s, char tag) {
  memset(s, 0, sizeof(*s));
  s->e = e;
  s->tag = tag;
  s->drop_id = -1;
  s->pause_on_id = -1;
  s->resume_on_end_id = -1;
}

/* 0 when both tunnels run. The env is always torn down by env_done. */
static int env_start(env *e, const env_opts *o) {
  memset(e, 0, sizeof(*e));
  side_init(e, &e->srv, 's');
  side_init(e, &e->cli, 'c');
  if (tf_start(e) != 0)
    return -1;

  int rc = 0;
  if (o->srv_raw)
    goto client;
  rc = wstun__tunnel_start(&e->srv.t, &e->loop, e->srv.conn, 1, &e->rng_srv,
                           &e->log, o->srv_ping, o->srv_dead, &tun_cbs, &e->srv,
                           o->srv_leftover, o->srv_leftover_len);
  CHECK_EQ_INT(rc, 0);
  if (rc != 0)
    return -1;
  e->srv.handed = 1;
client:
  rc = wstun__tunnel_start(&e->cli.t, &e->loop, e->cli.conn, 0, &e->rng_cli,
                           &e->log, o->cli_ping, o->cli_dead, &tun_cbs, &e->cli,
                           NULL, 0);
  CHECK_EQ_INT(rc, 0);
  if (rc != 0)
    return -1;
  e->cli.handed = 1;
  e->started_at = uv_now(&e->loop);
  return 0;
}

static void env_done(env *e) {
  tf_done(e);
  wstun__buf_free(&e->raw);
}

static void check_rx(const rx_msg *m, uint16_t id, const void *data, size_t n,
                     int complete) {
  CHECK_EQ_INT(m->id, id);
  CHECK_EQ_INT(m->ended, 1);
  CHECK_EQ_INT(m->complete, complete);
  CHECK_EQ_INT(wstun__buf_size(&m->data), n);
  if (wstun__buf_size(&m->data) == n)
    CHECK_MEM(wstun__buf_data(&m->data), data, n);
}

static const env_opts quiet = {0, 0, 0, 0, NULL, 0, 0};

/* ---- small messages --------------------------------------------------------
 */

static env E; /* one test at a time; env_start resets it */

static int small_done(env *e) {
  return e->srv.nrx == 1 && e->srv.rx[0].ended && e->cli.nrx == 1 &&
         e->cli.rx[0].ended;
}

TEST(small_message_both_ways) {
  env *e = &E;
  if (env_start(e, &quiet) == 0) {
    tx xc = {e, '1', 0, 0, 0, 0}, xs = {e, '2', 0, 0, 0, 0};
    send_msg(e->cli.t, msg_new(&xc, 1, "hello", 5, 1));
    send_msg(e->srv.t, msg_new(&xs, 0xabcd, "world", 5, 1));
    if (RUN_UNTIL(e, small_done, 5000)) {
      check_rx(&e->srv.rx[0], 1, "hello", 5, 1);
      check_rx(&e->cli.rx[0], 0xabcd, "world", 5, 1);
    }
    CHECK_EQ_INT(xc.sent, 1);
    CHECK_EQ_INT(xs.sent, 1);
    CHECK_EQ_INT(xc.failed + xs.failed, 0);
    CHECK_EQ_INT(e->srv.closed + e->cli.closed, 0);
    CHECK_EQ_INT(wstun__tunnel_queued(e->cli.t), 0);
  }
  env_done(e);
}

static int srv_got_one(env *e) {
  return e->srv.nrx >= 1 && e->srv.rx[0].ended;
}

TEST(http_message_with_high_id) {
  env *e = &E;
  static const char req[] =
      "GET /x?y HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n"
      "\r\nhi";
  if (env_start(e, &quiet) == 0) {
    tx x = {e, '1', 0, 0, 0, 0};
    send_msg(e->cli.t, msg_new(&x, 31999, req, sizeof(req) - 1, 1));
    if (RUN_UNTIL(e, srv_got_one, 5000))
      check_rx(&e->srv.rx[0], 31999, req, sizeof(req) - 1, 1);
    CHECK_EQ_INT(x.sent, 1);
  }
  env_done(e);
}

/* ---- a 5 MiB message streamed by a producer --------------------------------
 */

static void producer_start(producer *p, env *e, wstun__tunnel *t, uint16_t id,
                           size_t total, unsigned seed) {
  producer_init(p, t, total, seed);
  p->x.e = e;
  p->x.tag = (char)('0' + id % 10);
  p->m->id = id;                       /* for send_msg */
  append_pattern(p, WSTUN__STREAM_AT); /* big enough to hand over */
  send_msg(t, p->m);
  produce(p);
}

static producer P1, P2;

static int big_done(env *e) {
  return e->srv.nrx >= 1 && e->srv.rx[0].ended && e->cli.nrx >= 1 &&
         e->cli.rx[0].ended && P1.x.sent && P2.x.sent;
}

TEST(five_mib_streamed_both_ways) {
  env *e = &E;
  const size_t total = 5 * MIB;
  if (env_start(e, &quiet) == 0) {
    producer_start(&P1, e, e->cli.t, 2, total, 7);
    producer_start(&P2, e, e->srv.t, 3, total, 99);
    /* the producers cannot run ahead: the pipe filled up at once */
    CHECK(P1.fulls >= 1);
    CHECK(P1.produced < total);
    if (RUN_UNTIL(e, big_done, 30000)) {
      CHECK_EQ_INT(e->srv.rx[0].id, 2);
      CHECK_EQ_INT(e->srv.rx[0].complete, 1);
      check_pattern(&e->srv.rx[0], 0, total, 7);
      CHECK_EQ_INT(e->cli.rx[0].id, 3);
      CHECK_EQ_INT(e->cli.rx[0].complete, 1);
      check_pattern(&e->cli.rx[0], 0, total, 99);
    }
    CHECK_EQ_INT(P1.x.sent, 1);
    CHECK_EQ_INT(P2.x.sent, 1);
    CHECK(P1.x.drains >= 1); /* resumed by on_drain */
    CHECK(P2.x.drains >= 1);
    CHECK_EQ_INT(P1.x.failed + P2.x.failed, 0);
    CHECK_EQ_INT(e->srv.nrx, 1);
    CHECK_EQ_INT(e->cli.nrx, 1);
    CHECK_EQ_INT(e->srv.closed + e->cli.closed, 0);
  }
  env_done(e);
}

/* ---- several messages in a row ------------------------------------------- */

static int three_done(env *e) {
  return e->srv.nrx == 3 && e->srv.rx[2].ended;
}

TEST(three_messages_arrive_in_order) {
  env *e = &E;
  if (env_start(e, &quiet) == 0) {
    size_t mid_len = 100 * 1024;
    uint8_t *mid = malloc(mid_len);
    if (mid == NULL)
      abort();
    for (size_t i = 0; i < mid_len; i++)
      mid[i] = pat(i, 5);
    tx a = {e, 'a', 0, 0, 0, 0}, b = {e, 'b', 0, 0, 0, 0},
       c = {e, 'c', 0, 0, 0, 0};
    send_msg(e->cli.t, msg_new(&a, 1, "first", 5, 1));
    send_msg(e->cli.t, msg_new(&b, 2, mid, mid_len, 1));
    send_msg(e->cli.t, msg_new(&c, 3, "third", 5, 1));
    if (RUN_UNTIL(e, three_done, 10000)) {
      check_rx(&e->srv.rx[0], 1, "first", 5, 1);
      check_rx(&e->srv.rx[1], 2, mid, mid_len, 1);
      check_rx(&e->srv.rx[2], 3, "third", 5, 1);
    }
    CHECK_EQ_INT(a.sent + b.sent + c.sent, 3);
    /* told in order, never interleaved on the receiving side */
    CHECK(strstr(e->events, "Sa Sb Sc ") != NULL);
    CHECK(strstr(e->events, "Bs1 Es1 Bs2 Es2 Bs3 Es3 ") != NULL);
    if (test__state.test_failures)
      printf("    events: %s\n", e->events);
    free(mid);
  }
  env_done(e);
}

/* ---- a sink pausing the tunnel --------------------------------------------
 */

static int two_done(env *e) {
  return e->srv.nrx == 2 && e->srv.rx[0].ended && e->srv.rx[1].ended;
}

/* Regression: resuming from inside the receive call (the message that
 * paused the tunnel ends within bytes wslay had already read) lost the rest
 * of the current socket read and re-entered wslay; the next message then
 * started mid-body ("message without id") or wslay aborted. */
TEST(resume_from_inside_receive_keeps_the_stream_in_step) {
  env *e = &E;
  if (env_start(e, &quiet) == 0) {
    e->srv.pause_on_id = 1;
    e->srv.resume_on_end_id = 1;
    static uint8_t one[3000], two[3000];
    for (size_t i = 0; i < sizeof(one); i++) {
      one[i] = pat(i, 11);
      two[i] = pat(i, 12);
    }
    tx a = {e, 'a', 0, 0, 0, 0}, b = {e, 'b', 0, 0, 0, 0};
    /* queued together: both go out in one write, one read on the server */
    send_msg(e->cli.t, msg_new(&a, 1, one, sizeof(one), 1));
    send_msg(e->cli.t, msg_new(&b, 2, two, sizeof(two), 1));
    if (RUN_UNTIL(e, two_done, 5000)) {
      check_rx(&e->srv.rx[0], 1, one, sizeof(one), 1);
      check_rx(&e->srv.rx[1], 2, two, sizeof(two), 1);
    }
    CHECK_EQ_INT(e->srv.closed, 0);
    if (test__state.test_failures)
      printf("    events: %s\n", e->events);
  }
  env_done(e);
}

static int srv_begun(env *e) {
  return e->srv.nrx >= 1;
}
static int both_paused_done(env *e) {
  return e->srv.nrx == 2 && e->srv.rx[0].ended && e->srv.rx[1].ended;
}

TEST(pause_rx_stops_delivery_until_resume) {
  env *e = &E;
  if (env_start(e, &quiet) == 0) {
    const size_t big = 1 * MIB;
    uint8_t *body = malloc(big);
    if (body == NULL)
      abort();
    for (size_t i = 0; i < big; i++)
      body[i] = pat(i, 11);
    e->srv.pause_on_id = 5;
    tx a = {e, 'a', 0, 0, 0, 0}, b = {e, 'b', 0, 0, 0, 0};
    send_msg(e->cli.t, msg_new(&a, 5, body, big, 1));
    send_msg(e->cli.t, msg_new(&b, 6, "after", 5, 1));
    if (RUN_UNTIL(e, srv_begun, 5000)) {
      run_for(e, 300);
      size_t got1 = wstun__buf_size(&e->srv.rx[0].data);
      CHECK_EQ_INT(e->srv.pauses, 1);
      CHECK_EQ_INT(e->srv.rx[0].ended, 0);
      CHECK_EQ_INT(e->srv.nrx, 1); /* the next message has not begun */
      CHECK(got1 < big / 2);
      run_for(e, 300);
      /* nothing more arrived while paused */
      CHECK_EQ_INT(wstun__buf_size(&e->srv.rx[0].data), got1);
      CHECK_EQ_INT(e->srv.nrx, 1);
      CHECK_EQ_INT(e->srv.closed + e->cli.closed, 0);
      REQUIRE(e->srv.t != NULL);
      wstun__tunnel_resume_rx(e->srv.t);
      if (RUN_UNTIL(e, both_paused_done, 10000)) {
        check_rx(&e->srv.rx[0], 5, body, big, 1);
        check_rx(&e->srv.rx[1], 6, "after", 5, 1);
      }
      CHECK_EQ_INT(a.sent + b.sent, 2);
    }
    free(body);
  }
  env_done(e);
}

/* ---- liveness -------------------------------------------------------------
 */

TEST(pings_keep_an_idle_tunnel_alive) {
  env *e = &E;
  /* the client pings, the server only listens (as in wstunnel) */
  env_opts o = {0, 700, 100, 700, NULL, 0, 0};
  if (env_start(e, &o) == 0) {
    run_for(e, 2000);
    CHECK_EQ_INT(e->srv.closed, 0);
    CHECK_EQ_INT(e->cli.closed, 0);
    /* and still carries messages */
    tx x = {e, 'x', 0, 0, 0, 0};
    if (e->cli.t) {
      send_msg(e->cli.t, msg_new(&x, 1, "still here", 10, 1));
      if (RUN_UNTIL(e, srv_got_one, 5000))
        check_rx(&e->srv.rx[0], 1, "still here", 10, 1);
    }
  }
  env_done(e);
}

static int cli_closed(env *e) {
  return e->cli.closed > 0;
}
static int srv_closed(env *e) {
  return e->srv.closed > 0;
}
static int both_closed(env *e) {
  return e->srv.closed > 0 && e->cli.closed > 0;
}

TEST(peer_that_stops_reading_times_out) {
  env *e = &E;
  /* the server stops reading at once, so the client's pings go
   * unanswered */
  env_opts o = {0, 0, 100, 500, NULL, 0, 0};
  if (env_start(e, &o) == 0) {
    wstun__tunnel_pause_rx(e->srv.t);
    if (RUN_UNTIL(e, cli_closed, 5000)) {
      CHECK_EQ_INT(e->cli.close_err, WSTUN_ETIMEDOUT);
      uint64_t after = e->cli.closed_at - e->started_at;
      CHECK(after >= 450);
      /* about dead_after, not some later timeout; loose, as time this
       * process was descheduled is forgiven (a late tick) */
      CHECK(after <= 4000);
    }
    CHECK_EQ_INT(e->cli.closed, 1);
  }
  env_done(e);
}

TEST(silent_peer_times_out) {
  env *e = &E;
  /* nobody pings: the server gives up after dead_after, the client sees
   * the connection end */
  env_opts o = {0, 500, 0, 0, NULL, 0, 0};
  if (env_start(e, &o) == 0) {
    if (RUN_UNTIL(e, both_closed, 5000)) {
      CHECK_EQ_INT(e->srv.close_err, WSTUN_ETIMEDOUT);
      CHECK_EQ_INT(e->cli.close_err, WSTUN_ECLOSED);
      CHECK(e->srv.closed_at - e->started_at >= 450);
    }
  }
  env_done(e);
}

TEST(paused_receiver_does_not_time_out_a_live_peer) {
  env *e = &E;
  /* The server's sink pauses (its requester reads slowly) while the client
   * keeps pinging: the client is alive, the server just is not reading.
   * PROTOCOL.md 4: the server closes a tunnel that has sent nothing for
   * wstimeout; this one did send. */
  env_opts o = {0, 600, 100, 0, NULL, 0, 0};
  if (env_start(e, &o) == 0) {
    e->srv.pause_on_id = 1;
    tx x = {e, 'x', 0, 0, 0, 0};
    send_msg(e->cli.t, msg_new(&x, 1, "slow sink", 9, 1));
    RUN_UNTIL(e, srv_begun, 5000);
    run_for(e, 2000);
    CHECK_EQ_INT(e->srv.closed, 0);
    if (e->srv.closed)
      printf("    server closed with %d after %llu ms\n", e->srv.close_err,
             (unsigned long long)(e->srv.closed_at - e->started_at));
    if (e->srv.t) {
      wstun__tunnel_resume_rx(e->srv.t);
      if (RUN_UNTIL(e, srv_got_one, 5000))
        check_rx(&e->srv.rx[0], 1, "slow sink", 9, 1);
    }
  }
  env_done(e);
}

/* ---- closing ----------------------------------------------------------------
 */

static tx F1, F2, F3;
static int three_failed(env *e) {
  (void)e;
  return F1.failed && F2.failed && F3.failed;
}

TEST(close_hands_back_unstarted_messages) {
  env *e = &E;
  if (env_start(e, &quiet) == 0) {
    F1 = (tx){e, '1', 0, 0, -1, 0};
    F2 = (tx){e, '2', 0, 0, -1, 0};
    F3 = (tx){e, '3', 0, 0, -1, 0};
    /* m1 holds a single byte and is not finished: nothing of it can go
     * yet, and m2, m3 wait behind it */
    wstun__outmsg *m1 = wstun__outmsg_new(&tx_cbs, &F1);
    if (m1 == NULL)
      abort();
    wstun__buf_append(&m1->buf, "0", 1);
    send_msg(e->srv.t, m1);
    send_msg(e->srv.t, msg_new(&F2, 2, "two", 3, 1));
    send_msg(e->srv.t, msg_new(&F3, 3, "three", 5, 1));
    run_for(e, 100);
    CHECK_EQ_INT(e->cli.nrx, 0);
    CHECK_EQ_INT(wstun__tunnel_queued(e->srv.t), 2);
    /* the client goes away */
    wstun__tunnel_close(e->cli.t, WSTUN_ECLOSED);
    CHECK_EQ_INT(e->cli.closed, 1); /* at once */
    CHECK_EQ_INT(e->cli.close_err, WSTUN_ECLOSED);
    if (RUN_UNTIL(e, srv_closed, 5000)) {
      CHECK_EQ_INT(e->srv.close_err, WSTUN_ECLOSED);
      CHECK(three_failed(e));
      CHECK_EQ_INT(F1.restartable, 1);
      CHECK_EQ_INT(F2.restartable, 1);
      CHECK_EQ_INT(F3.restartable, 1);
      CHECK_EQ_INT(F1.sent + F2.sent + F3.sent, 0);
      /* on_closed first, then the messages, in queue order */
      CHECK(strstr(e->events, "Cs F11 F21 F31 ") != NULL);
      if (test__state.test_failures)
        printf("    events: %s\n", e->events);
    }
  }
  env_done(e);
}

static int cli_ended_one(env *e) {
  return e->cli.nrx >= 1 && e->cli.rx[0].ended;
}
static int cli_got_some(env *e) {
  return e->cli.nrx >= 1 && wstun__buf_size(&e->cli.rx[0].data) >= 9;
}

TEST(close_mid_message) {
  env *e = &E;
  if (env_start(e, &quiet) == 0) {
    F1 = (tx){e, '1', 0, 0, -1, 0};
    /* started but not finished: "0001" + 10 bytes, one held back */
    send_msg(e->srv.t, msg_new(&F1, 1, "0123456789", 10, 0));
    RUN_UNTIL(e, cli_got_some, 5000);
    CHECK_EQ_INT(e->cli.rx[0].ended, 0);
    wstun__tunnel_close(e->srv.t, WSTUN_ECLOSED);
    CHECK_EQ_INT(e->srv.closed, 1);
    CHECK_EQ_INT(F1.failed, 1);
    CHECK_EQ_INT(F1.restartable, 0); /* bytes of it went out */
    if (RUN_UNTIL(e, cli_ended_one, 5000)) {
      CHECK_EQ_INT(e->cli.rx[0].complete, 0);
      CHECK_MEM(wstun__buf_data(&e->cli.rx[0].data), "012345678", 9);
    }
    RUN_UNTIL(e, cli_closed, 5000);
    CHECK_EQ_INT(e->cli.close_err, WSTUN_ECLOSED);
  }
  env_done(e);
}

TEST(send_on_closed_tunnel_fails_restartable) {
  env *e = &E;
  if (env_start(e, &quiet) == 0) {
    wstun__tunnel *t = e->cli.t;
    wstun__tunnel_close(t, WSTUN_ECLOSED);
    /* closed but not yet freed: a send made now comes straight back */
    F1 = (tx){e, '1', 0, 0, -1, 0};
    send_msg(t, msg_new(&F1, 1, "late", 4, 1));
    CHECK_EQ_INT(F1.failed, 1);
    CHECK_EQ_INT(F1.restartable, 1);
    RUN_UNTIL(e, srv_closed, 5000);
  }
  env_done(e);
}

/* ---- abandoning messages ----------------------------------------------------
 */

TEST(abandon_queued_and_current) {
  env *e = &E;
  if (env_start(e, &quiet) == 0) {
    F1 = (tx){e, '1', 0, 0, -1, 0};
    F2 = (tx){e, '2', 0, 0, -1, 0};
    wstun__outmsg *m1 = msg_new(&F1, 1, "partial", 7, 0);
    wstun__outmsg *m2 = msg_new(&F2, 2, "never", 5, 1);
    send_msg(e->srv.t, m1);
    send_msg(e->srv.t, m2);
    CHECK_EQ_INT(wstun__tunnel_queued(e->srv.t), 1);
    wstun__outmsg_abandon(m2); /* queued: gone at once */
    CHECK_EQ_INT(wstun__tunnel_queued(e->srv.t), 0);
    wstun__outmsg_abandon(m1); /* being sent: ended with what it holds */
    if (RUN_UNTIL(e, cli_ended_one, 5000))
      check_rx(&e->cli.rx[0], 1, "partial", 7, 1);
    run_for(e, 100);
    CHECK_EQ_INT(e->cli.nrx, 1);
    /* the owner gave up: no callbacks */
    CHECK_EQ_INT(F1.sent + F1.failed + F2.sent + F2.failed, 0);
    /* and an unqueued message is just freed */
    wstun__outmsg_abandon(msg_new(&F2, 3, "x", 1, 1));
    /* the tunnel still works */
    tx x = {e, 'x', 0, 0, 0, 0};
    send_msg(e->srv.t, msg_new(&x, 4, "next", 4, 1));
    run_for(e, 200);
    CHECK_EQ_INT(e->cli.nrx, 2);
    if (e->cli.nrx == 2)
      check_rx(&e->cli.rx[1], 4, "next", 4, 1);
  }
  env_done(e);
}

/* ---- bytes that came with the handshake, odd frames ------------------------
 */

/* A masked client frame with a zero mask key (payload as is). */
static size_t frame(uint8_t *out, int opcode, int fin, const char *payload,
                    size_t n) {
  out[0] = (uint8_t)((fin ? 0x80 : 0) | opcode);
  out[1] = (uint8_t)(0x80 | n); /* n < 126 */
  memset(out + 2, 0, 4);
  memcpy(out + 6, payload, n);
  return 6 + n;
}

static int srv_two(env *e) {
  return e->srv.nrx >= 2 && e->srv.rx[1].ended;
}

TEST(leftover_bytes_are_parsed) {
  env *e = &E;
  uint8_t lo[256];
  size_t n = frame(lo, 0x2, 1, "0007hi", 6);
  /* and a message in two fragments */
  n += frame(lo + n, 0x2, 0, "00", 2);
  n += frame(lo + n, 0x0, 0, "08fr", 4);
  n += frame(lo + n, 0x0, 1, "ag", 2);
  env_opts o = {0, 0, 0, 0, lo, n, 0};
  if (env_start(e, &o) == 0) {
    CHECK_EQ_INT(e->srv.nrx, 0); /* parsed on the first loop turn */
    if (RUN_UNTIL(e, srv_two, 5000)) {
      check_rx(&e->srv.rx[0], 7, "hi", 2, 1);
      check_rx(&e->srv.rx[1], 8, "frag", 4, 1);
    }
  }
  env_done(e);
}

TEST(text_frame_closes_with_eproto) {
  env *e = &E;
  uint8_t lo[64];
  size_t n = frame(lo, 0x1, 1, "0001hi", 6);
  env_opts o = {0, 0, 0, 0, lo, n, 0};
  if (env_start(e, &o) == 0) {
    if (RUN_UNTIL(e, both_closed, 5000)) {
      CHECK_EQ_INT(e->srv.close_err, WSTUN_EPROTO);
      CHECK_EQ_INT(e->cli.close_err, WSTUN_ECLOSED);
    }
    CHECK_EQ_INT(e->srv.nrx, 0);
  }
  env_done(e);
}

TEST(bad_prefix_and_refused_ids_are_dropped) {
  env *e = &E;
  uint8_t lo[256];
  size_t n = frame(lo, 0x2, 1, "zzzzjunk", 8);   /* no id */
  n += frame(lo + n, 0x2, 1, "0009refused", 11); /* sink refuses */
  n += frame(lo + n, 0x2, 1, "000aok", 6);
  n += frame(lo + n, 0x2, 1, "00", 2); /* cut short prefix */
  n += frame(lo + n, 0x2, 1, "000bok2", 7);
  env_opts o = {0, 0, 0, 0, lo, n, 0};
  if (env_start(e, &o) == 0) {
    e->srv.drop_id = 9;
    if (RUN_UNTIL(e, srv_two, 5000)) {
      check_rx(&e->srv.rx[0], 0xa, "ok", 2, 1);
      check_rx(&e->srv.rx[1], 0xb, "ok2", 3, 1);
    }
    run_for(e, 100);
    CHECK_EQ_INT(e->srv.nrx, 2);
    CHECK_EQ_INT(e->srv.closed, 0); /* dropping is not fatal */
  }
  env_done(e);
}

TEST(unmasked_client_frame_is_a_protocol_error) {
  env *e = &E;
  uint8_t lo[64] = {0x82, 6};
  memcpy(lo + 2, "0001hi", 6);
  env_opts o = {0, 0, 0, 0, lo, 8, 0};
  if (env_start(e, &o) == 0) {
    RUN_UNTIL(e, srv_closed, 5000);
    CHECK_EQ_INT(e->srv.nrx, 0);
  }
  env_done(e);
}

/* ---- the wslay context of an idle tunnel --------------------------------
 */

static int both_let_go(env *e) {
  return e->srv.t && e->cli.t && e->srv.t->ws == NULL && e->cli.t->ws == NULL;
}

TEST(idle_tunnel_lets_go_of_wslay_and_takes_it_back) {
  env *e = &E;
  env_opts o = {0, 2000, 100, 2000, NULL, 0, 0};
  if (env_start(e, &o) == 0) {
    tx xc = {e, '1', 0, 0, 0, 0}, xs = {e, '2', 0, 0, 0, 0};
    send_msg(e->cli.t, msg_new(&xc, 1, "hello", 5, 1));
    send_msg(e->srv.t, msg_new(&xs, 2, "world", 5, 1));
    RUN_UNTIL(e, small_done, 5000);
    /* pings go on; between them neither side holds a context */
    RUN_UNTIL(e, both_let_go, 3000);
    run_for(e, 350);
    CHECK_EQ_INT(e->srv.closed + e->cli.closed, 0);
    if (e->srv.t && e->cli.t) {
      send_msg(e->cli.t, msg_new(&xc, 3, "again", 5, 1));
      send_msg(e->srv.t, msg_new(&xs, 4, "back", 4, 1));
    }
    if (RUN_UNTIL(e, srv_two, 5000))
      check_rx(&e->srv.rx[1], 3, "again", 5, 1);
    run_for(e, 100);
    CHECK_EQ_INT(e->cli.nrx, 2);
    if (e->cli.nrx == 2)
      check_rx(&e->cli.rx[1], 4, "back", 4, 1);
    RUN_UNTIL(e, both_let_go, 3000);
  }
  env_done(e);
}

static void raw_to_server(env *e, const uint8_t *d, size_t n) {
  CHECK_EQ_INT(wstun__conn_write(e->cli.conn, d, n), 0);
  run_for(e, 30);
}

TEST(a_frame_split_across_reads_keeps_the_context) {
  env *e = &E;
  /* the server ticks every 250 ms and lets its context go whenever it
   * finds the tunnel quiescent; bytes of a frame wslay holds must keep it */
  env_opts o = {0, 0, 0, 0, NULL, 0, 0};
  size_t n300 = 300, n70k = 70000;
  uint8_t *a = malloc(n300), *b = malloc(n70k), *s = malloc(n70k + n300 + 100);
  if (a == NULL || b == NULL || s == NULL)
    abort();
  memcpy(a, "000c", 4);
  memcpy(b, "000d", 4);
  for (size_t i = 4; i < n300; i++)
    a[i] = pat(i, 3);
  for (size_t i = 4; i < n70k; i++)
    b[i] = pat(i, 4);
  size_t n = ws_frame(s, 0x9, 1, (const uint8_t *)"ping", 4); /* 10 */
  size_t a_at = n;
  n += ws_frame(s + n, 0x2, 1, a, n300); /* 2+2+4 header */
  n += ws_frame(s + n, 0x9, 1, (const uint8_t *)"ping", 4);
  size_t b_at = n;
  n += ws_frame(s + n, 0x2, 1, b, n70k); /* 2+8+4 header */
  if (env_start(e, &o) == 0) {
    run_for(e, 30);
    /* a ping and one byte of the next header */
    raw_to_server(e, s, a_at + 1);
    CHECK(e->srv.t && e->srv.t->ws != NULL);
    raw_to_server(e, s + a_at + 1, 3); /* half of the 16-bit length */
    run_for(e, 300);                   /* a tick */
    CHECK(e->srv.t && e->srv.t->ws != NULL);
    /* the rest of that frame, a ping, part of the 64-bit length */
    raw_to_server(e, s + a_at + 4, b_at + 5 - (a_at + 4));
    run_for(e, 600); /* ticks: the first forgets the message, the next
                      * would let go if it missed the partial header */
    CHECK(e->srv.t && e->srv.t->ws != NULL);
    CHECK_EQ_INT(e->srv.nrx, 1);
    raw_to_server(e, s + b_at + 5, n - (b_at + 5));
    if (RUN_UNTIL(e, srv_two, 5000)) {
      check_rx(&e->srv.rx[0], 0xc, a + 4, n300 - 4, 1);
      check_rx(&e->srv.rx[1], 0xd, b + 4, n70k - 4, 1);
    }
    run_for(e, 600);
    CHECK(e->srv.t && e->srv.t->ws == NULL);
    CHECK_EQ_INT(e->srv.closed, 0);
  }
  env_done(e);
  free(a);
  free(b);
  free(s);
}

/* ---- the frames on the wire ---------------------------------------------- */

typedef struct wire {
  const uint8_t *p;
  size_t left;
} wire;

static ssize_t wire_recv(uint8_t *buf, size_t len, int flags, void *ud) {
  wire *w = ud;
  (void)flags;
  if (w->left == 0)
    return -1;
  size_t n = len < w->left ? len : w->left;
  memcpy(buf, w->p, n);
  w->p += n;
  w->left -= n;
  return (ssize_t)n;
}

static int raw_has(env *e) {
  return wstun__buf_size(&e->raw) >= 2 * MIB + 4;
}

/* A big message goes out in frames as big as what is buffered (not 4 KiB
 * each, as wslay's fragmented messages cut them), masked, BINARY then
 * CONTINUATION with FIN on the last, and the pings sent meanwhile land
 * between whole frames. Checked on the wire with wslay's frame decoder. */
TEST(big_message_goes_in_few_whole_frames) {
  env *e = &E;
  env_opts o = {0, 0, 20, 0, NULL, 0, 1};
  size_t n = 2 * MIB;
  uint8_t *body = malloc(n);
  if (body == NULL)
    abort();
  for (size_t i = 0; i < n; i++)
    body[i] = pat(i, 5);
  if (env_start(e, &o) == 0) {
    run_for(e, 300); /* a ping first (ticks are at least 250 ms apart) */
    tx x = {e, '1', 0, 0, 0, 0};
    send_msg(e->cli.t, msg_new(&x, 0x2a, body, n, 1));
    RUN_UNTIL(e, raw_has, 5000);
    run_for(e, 60);
    CHECK_EQ_INT(x.sent, 1);
    wire w = {wstun__buf_data(&e->raw), wstun__buf_size(&e->raw)};
    static const struct wslay_frame_callbacks fcbs = {NULL, wire_recv, NULL};
    wslay_frame_context_ptr fr;
    REQUIRE(wslay_frame_context_init(&fr, &fcbs, &w) == 0);
    wstun__buf got = WSTUN__BUF_INIT;
    int data_frames = 0, pings = 0, fins = 0, bad = 0;
    uint64_t frame_left = 0;
    for (;;) {
      struct wslay_frame_iocb io;
      memset(&io, 0, sizeof(io));
      ssize_t r = wslay_frame_recv(fr, &io);
      if (r < 0)
        break;
      if (!io.mask)
        bad++;
      if (io.opcode == WSLAY_PING) {
        pings += frame_left == 0;
        continue;
      }
      if (frame_left == 0) { /* a new data frame */
        frame_left = io.payload_length;
        int want =
            data_frames == 0 ? WSLAY_BINARY_FRAME : WSLAY_CONTINUATION_FRAME;
        if (io.opcode != want || fins > 0)
          bad++;
        data_frames++;
      }
      frame_left -= (uint64_t)r;
      if (frame_left == 0 && io.fin)
        fins++;
      if (wstun__buf_append(&got, io.data, io.data_length) != 0)
        abort();
    }
    wslay_frame_context_free(fr);
    CHECK_EQ_INT(w.left, 0);
    CHECK_EQ_INT(bad, 0);
    CHECK_EQ_INT(fins, 1);
    CHECK(pings >= 1);
    /* 2 MiB in frames of up to 64 KiB: 32 or a few more, never 512 */
    CHECK(data_frames >= 32 && data_frames <= 64);
    CHECK_EQ_INT(wstun__buf_size(&got), n + 4);
    if (wstun__buf_size(&got) == n + 4) {
      CHECK_MEM(wstun__buf_data(&got), "002a", 4);
      CHECK_MEM(wstun__buf_data(&got) + 4, body, n);
    }
    wstun__buf_free(&got);
  }
  env_done(e);
  free(body);
}

static int raw_at_least(env *e, size_t n) {
  return wstun__buf_size(&e->raw) >= n;
}
static size_t want_raw;
static int raw_has_want(env *e) {
  return raw_at_least(e, want_raw);
}

/* wslay's context wrote a control frame's header with the output exactly
 * at its high-water mark, which the header took over: the frame's payload
 * must still follow at once, or the next data frame would land inside the
 * ping once the output drains. The wire must parse as whole frames. */
TEST(a_control_frame_begun_at_the_high_water_mark_is_finished) {
  env *e = &E;
  env_opts o = {0, 0, 0, 0, NULL, 0, 1};
  size_t fill_len = 0;
  uint8_t *fill = NULL;
  if (env_start(e, &o) == 0) {
    tx x = {e, '1', 0, 0, 0, 0};
    send_msg(e->cli.t, msg_new(&x, 1, "hello", 5, 1)); /* makes the context */
    want_raw = 2 + 4 + 9;
    RUN_UNTIL(e, raw_has_want, 2000);
    wstun__tunnel *t = e->cli.t;
    REQUIRE(t != NULL && t->ws != NULL && t->conn != NULL);
    /* the output exactly at the mark, with a whole (masked) frame */
    size_t room = t->conn->high_water - wstun__conn_queued(t->conn);
    fill_len = room - 14; /* 64-bit length and mask key */
    fill = calloc(1, room);
    uint8_t *body = calloc(1, fill_len);
    REQUIRE(fill != NULL && body != NULL);
    memcpy(body, "0002", 4);
    CHECK_EQ_INT(ws_frame(fill, 0x2, 1, body, fill_len), room);
    free(body);
    CHECK_EQ_INT(wstun__buf_append(wstun__conn_outbuf(t->conn), fill, room), 0);
    CHECK_EQ_INT(wstun__conn_queued(t->conn), t->conn->high_water);
    struct wslay_event_msg ping = {WSLAY_PING, (const uint8_t *)"mark", 4};
    CHECK_EQ_INT(wslay_event_queue_msg(t->ws, &ping), 0);
    wstun__tunnel_kick(t); /* the header goes, the output is above */
    send_msg(t, msg_new(&x, 3, "after", 5, 1));
    want_raw += room + 6 + 4 + 2 + 4 + 9;
    RUN_UNTIL(e, raw_has_want, 5000);
    run_for(e, 30);
    wire w = {wstun__buf_data(&e->raw), wstun__buf_size(&e->raw)};
    static const struct wslay_frame_callbacks fcbs = {NULL, wire_recv, NULL};
    wslay_frame_context_ptr fr;
    REQUIRE(wslay_frame_context_init(&fr, &fcbs, &w) == 0);
    wstun__buf seen = WSTUN__BUF_INIT; /* opcode and payload size per frame */
    int bad = 0;
    uint64_t got = 0;
    for (;;) {
      struct wslay_frame_iocb io;
      memset(&io, 0, sizeof(io));
      ssize_t r = wslay_frame_recv(fr, &io);
      if (r < 0)
        break;
      if (io.opcode == WSLAY_PING &&
          (io.data_length != 4 || memcmp(io.data, "mark", 4) != 0))
        bad++;
      got += (uint64_t)r; /* a frame comes in pieces of up to 4 KiB */
      if (got == io.payload_length) {
        got = 0;
        if (wstun__buf_appendf(&seen, "%d:%llu ", io.opcode,
                               (unsigned long long)io.payload_length) != 0)
          abort();
      }
    }
    wslay_frame_context_free(fr);
    CHECK_EQ_INT(w.left, 0);
    CHECK_EQ_INT(bad, 0);
    char expect[64];
    snprintf(expect, sizeof(expect), "2:9 2:%zu 9:4 2:9 ", fill_len);
    CHECK_BYTES_STR(wstun__buf_data(&seen), wstun__buf_size(&seen), expect);
    wstun__buf_free(&seen);
  }
  env_done(e);
  free(fill);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(small_message_both_ways),
      T(http_message_with_high_id),
      T(five_mib_streamed_both_ways),
      T(three_messages_arrive_in_order),
      T(resume_from_inside_receive_keeps_the_stream_in_step),
      T(pause_rx_stops_delivery_until_resume),
      T(pings_keep_an_idle_tunnel_alive),
      T(peer_that_stops_reading_times_out),
      T(silent_peer_times_out),
      T(paused_receiver_does_not_time_out_a_live_peer),
      T(close_hands_back_unstarted_messages),
      T(close_mid_message),
      T(send_on_closed_tunnel_fails_restartable),
      T(abandon_queued_and_current),
      T(leftover_bytes_are_parsed),
      T(text_frame_closes_with_eproto),
      T(bad_prefix_and_refused_ids_are_dropped),
      T(unmasked_client_frame_is_a_protocol_error),
      T(idle_tunnel_lets_go_of_wslay_and_takes_it_back),
      T(a_frame_split_across_reads_keeps_the_context),
      T(big_message_goes_in_few_whole_frames),
      T(a_control_frame_begun_at_the_high_water_mark_is_finished),
  };
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
