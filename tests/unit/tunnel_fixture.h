/* The loopback harness the tunnel's unit tests share (wstun_tunnel_test.c
 * for v1, wstun_tunnel_v2_test.c for v2): a uv loop with a listener on
 * 127.0.0.1 port 0 and a client connection to it, so that each file's
 * tunnels start on a real TCP pair (no handshake: raw sockets); loop runs
 * bounded by a guard timer; the teardown that closes everything and checks
 * uv_loop_close() == 0, so ASan's leak checker sees what a test leaves;
 * a producer streaming a patterned message as fast as the tunnel takes
 * it; and masked client WebSocket frames for a raw peer.
 *
 * What the sinks record differs between v1 and v2, so each file keeps its
 * own env, side, rx_msg and tx types and includes this header after them.
 * It uses only the fields both have:
 *   env     loop, listener, guard, guard_fired, listener_open,
 *           flushers_open, sh_srv, sh_cli, rng_srv, rng_cli, log,
 *           connected, connect_status, and the sides srv and cli;
 *   side    t, conn, handed, freed, and rx, MAXRX rx_msgs;
 *   rx_msg  data;
 *   tx      drains, with the callbacks tx_sent and tx_failed;
 * and the file defines pre_on_data (declared below). */
#ifndef WSTUN_TUNNEL_FIXTURE_H
#define WSTUN_TUNNEL_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "test.h"
#include "wstun/wstun.h"
#include "wstun_conn.h"
#include "wstun_tunnel.h"

static inline void tf_log_cb(void *ud, wstun_log_level level,
                             const char *line) {
  (void)ud;
  printf("    [log %d] %s\n", (int)level, line);
}

/* ---- connections before (or instead of) a tunnel ------------------------ */

/* Each file's own: what a bare connection does with the bytes it reads
 * (v1 keeps a raw server side's, v2 a raw client side's). */
static size_t pre_on_data(wstun__conn *c, const uint8_t *d, size_t n);

static inline void pre_on_end(wstun__conn *c, int err) {
  (void)c;
  (void)err;
}
static inline void pre_on_connect(wstun__conn *c, int status) {
  env *e = c->owner;
  e->connected = 1;
  e->connect_status = status;
}
static inline void pre_on_close(wstun__conn *c) {
  env *e = c->owner;
  if (c == e->srv.conn)
    e->srv.conn = NULL;
  if (c == e->cli.conn)
    e->cli.conn = NULL;
}
static const wstun__conn_cbs pre_cbs = {.on_data = pre_on_data,
                                        .on_end = pre_on_end,
                                        .on_connect = pre_on_connect,
                                        .on_close = pre_on_close};

static inline void on_connection(uv_stream_t *server, int status) {
  env *e = server->data;
  if (status != 0 || e->srv.conn != NULL)
    return;
  wstun__conn *c = wstun__conn_new(&e->loop, e->sh_srv, &pre_cbs, e);
  if (c == NULL)
    return;
  e->srv.conn = c;
  if (wstun__conn_accept(c, server) != 0)
    wstun__conn_close(c);
}

/* ---- running the loop ------------------------------------------------------
 */

static inline void on_guard(uv_timer_t *t) {
  ((env *)t->data)->guard_fired = 1;
}

typedef int (*pred_fn)(env *e);

/* Runs the loop until pred holds; fails the test (at the caller's line) if
 * ms pass first. With pred NULL, just runs for ms. Returns pred's final
 * value. */
#define RUN_UNTIL(e, pred, ms)                                                 \
  run_until((e), (pred), (ms), #pred, __FILE__, __LINE__)
static inline int run_until(env *e, pred_fn pred, uint64_t ms, const char *what,
                            const char *file, int line) {
  e->guard_fired = 0;
  uv_timer_start(&e->guard, on_guard, ms, 0);
  while (!(pred && pred(e)) && !e->guard_fired)
    uv_run(&e->loop, UV_RUN_ONCE);
  uv_timer_stop(&e->guard);
  int ok = pred ? pred(e) : 1;
  if (!ok)
    test__fail(file, line, "timed out after %llu ms waiting for %s",
               (unsigned long long)ms, what);
  return ok;
}

static inline void run_for(env *e, uint64_t ms) {
  run_until(e, NULL, ms, "", "", 0);
}

/* ---- setting up and tearing down ----------------------------------------- */

static inline int both_connected(env *e) {
  return e->connected && e->srv.conn != NULL && e->srv.conn->reading;
}

/* The loop, the write flushers, the rngs and the guard, then e->cli.conn
 * connected to e->srv.conn, both bare connections (pre_cbs); e is zeroed
 * and its sides set by the caller. 0 when connected; either way the caller
 * tears it down with tf_done. */
static inline int tf_start(env *e) {
  e->log.level = WSTUN_LOG_DEBUG;
  e->log.cb = getenv("WSTUN_TEST_LOG") ? tf_log_cb : NULL;
  e->sh_srv = calloc(1, sizeof(*e->sh_srv));
  e->sh_cli = calloc(1, sizeof(*e->sh_cli));
  if (e->sh_srv == NULL || e->sh_cli == NULL)
    abort();
  CHECK_EQ_INT(uv_loop_init(&e->loop), 0);
  wstun__conn_shared_init(e->sh_srv, &e->loop);
  wstun__conn_shared_init(e->sh_cli, &e->loop);
  e->flushers_open = 2;
  CHECK_EQ_INT(wstun__rng_init(&e->rng_srv), 0);
  CHECK_EQ_INT(wstun__rng_init(&e->rng_cli), 0);
  uv_timer_init(&e->loop, &e->guard);
  e->guard.data = e;

  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  uv_tcp_init(&e->loop, &e->listener);
  e->listener.data = e;
  e->listener_open = 1;
  int rc = uv_tcp_bind(&e->listener, (const struct sockaddr *)&addr, 0);
  CHECK_EQ_INT(rc, 0);
  if (rc == 0)
    rc = uv_listen((uv_stream_t *)&e->listener, 8, on_connection);
  CHECK_EQ_INT(rc, 0);
  int alen = sizeof(addr);
  if (rc == 0)
    rc = uv_tcp_getsockname(&e->listener, (struct sockaddr *)&addr, &alen);
  CHECK(rc == 0 && ntohs(addr.sin_port) != 0);
  if (rc != 0)
    return -1;

  e->cli.conn = wstun__conn_new(&e->loop, e->sh_cli, &pre_cbs, e);
  if (e->cli.conn == NULL)
    return -1;
  rc = wstun__conn_connect(e->cli.conn, (const struct sockaddr *)&addr);
  CHECK_EQ_INT(rc, 0);
  if (rc != 0 || !RUN_UNTIL(e, both_connected, 5000))
    return -1;
  CHECK_EQ_INT(e->connect_status, 0);
  return 0;
}

static inline int all_gone(env *e) {
  return (!e->srv.handed || e->srv.freed) && (!e->cli.handed || e->cli.freed) &&
         e->srv.conn == NULL && e->cli.conn == NULL && !e->listener_open;
}
static inline void on_listener_closed(uv_handle_t *h) {
  ((env *)h->data)->listener_open = 0;
}
static inline void on_flusher_closed(uv_handle_t *h) {
  ((env *)h->data)->flushers_open--;
}
static inline int flushers_gone(env *e) {
  return e->flushers_open == 0;
}
static inline void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

/* Closes the tunnels, the connections no tunnel took and the listener,
 * checks every tunnel's memory came back and the loop closes empty, and
 * frees what tf_start made and what the sinks received. */
static inline void tf_done(env *e) {
  if (e->srv.t)
    wstun__tunnel_close(e->srv.t, WSTUN_ECLOSED);
  if (e->cli.t)
    wstun__tunnel_close(e->cli.t, WSTUN_ECLOSED);
  /* a conn the tunnel did not take */
  if (!e->srv.handed && e->srv.conn)
    wstun__conn_close(e->srv.conn);
  if (!e->cli.handed && e->cli.conn)
    wstun__conn_close(e->cli.conn);
  if (e->srv.handed)
    e->srv.conn = NULL; /* the tunnel's now */
  if (e->cli.handed)
    e->cli.conn = NULL;
  if (e->listener_open && !uv_is_closing((uv_handle_t *)&e->listener))
    uv_close((uv_handle_t *)&e->listener, on_listener_closed);
  RUN_UNTIL(e, all_gone, 5000);
  CHECK_EQ_INT(e->srv.freed, e->srv.handed);
  CHECK_EQ_INT(e->cli.freed, e->cli.handed);
  /* the shared write flushers go last, as in the server and the client */
  wstun__conn_shared_close(e->sh_srv, on_flusher_closed, e);
  wstun__conn_shared_close(e->sh_cli, on_flusher_closed, e);
  RUN_UNTIL(e, flushers_gone, 1000);
  uv_close((uv_handle_t *)&e->guard, NULL);
  uv_run(&e->loop, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&e->loop);
  CHECK_EQ_INT(rc, 0);
  if (rc != 0) {
    /* something still open: close it so the next test starts clean */
    uv_walk(&e->loop, close_any, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    uv_loop_close(&e->loop);
  }
  for (int i = 0; i < MAXRX; i++) {
    wstun__buf_free(&e->srv.rx[i].data);
    wstun__buf_free(&e->cli.rx[i].data);
  }
  wstun__rng_free(&e->rng_srv);
  wstun__rng_free(&e->rng_cli);
  free(e->sh_srv);
  free(e->sh_cli);
}

/* ---- a big message streamed by a producer --------------------------------
 */

static inline uint8_t pat(size_t i, unsigned seed) {
  return (uint8_t)((i * 2654435761u + seed) >> 11);
}

typedef struct producer {
  tx x; /* first: the outmsg owner is the producer */
  wstun__tunnel *t;
  wstun__outmsg *m;
  unsigned seed;
  size_t total, produced;
  int producing, again, finished, fulls;
} producer;

static inline void produce(producer *p);

static inline void prod_drain(void *owner, wstun__outmsg *m) {
  producer *p = owner;
  (void)m;
  p->x.drains++;
  produce(p);
}

static const wstun__outmsg_cbs prod_cbs = {tx_sent, prod_drain, tx_failed};

static inline void append_pattern(producer *p, size_t n) {
  static uint8_t chunk[64 * 1024];
  for (size_t i = 0; i < n; i++)
    chunk[i] = pat(p->produced + i, p->seed);
  if (wstun__buf_append(&p->m->buf, chunk, n) != 0)
    abort();
  p->produced += n;
}

/* Appends 64 KiB at a time while the message is not full, kicking the
 * tunnel after each; finishes at the end. Resumed by on_drain. */
static inline void produce(producer *p) {
  if (p->producing) {
    p->again = 1; /* on_drain from inside a kick */
    return;
  }
  p->producing = 1;
  do {
    p->again = 0;
    while (!p->finished && p->produced < p->total) {
      if (wstun__outmsg_full(p->m)) {
        p->fulls++;
        break;
      }
      size_t n = p->total - p->produced;
      append_pattern(p, n < 64 * 1024 ? n : 64 * 1024);
      wstun__tunnel_kick(p->t);
    }
    if (!p->finished && p->produced == p->total) {
      p->finished = 1;
      p->m->finished = 1;
      p->m = NULL; /* the tunnel's alone now: it frees it once sent */
      wstun__tunnel_kick(p->t);
    }
  } while (p->again && !p->finished);
  p->producing = 0;
}

/* A producer of total pattern bytes for t, its message made and empty:
 * the caller puts what goes before the pattern, sends it and calls
 * produce. */
static inline void producer_init(producer *p, wstun__tunnel *t, size_t total,
                                 unsigned seed) {
  memset(p, 0, sizeof(*p));
  p->t = t;
  p->total = total;
  p->seed = seed;
  p->m = wstun__outmsg_new(&prod_cbs, p);
  if (p->m == NULL)
    abort();
}

/* The message holds skip bytes of its own, then total pattern bytes. */
static inline void check_pattern(const rx_msg *m, size_t skip, size_t total,
                                 unsigned seed) {
  CHECK_EQ_INT(wstun__buf_size(&m->data), skip + total);
  size_t n = wstun__buf_size(&m->data), bad = 0, first_bad = 0;
  const uint8_t *d = wstun__buf_data(&m->data);
  for (size_t i = skip; i < n; i++)
    if (d[i] != pat(i - skip, seed) && bad++ == 0)
      first_bad = i;
  CHECK_EQ_INT(bad, 0);
  if (bad)
    printf("    first wrong byte at %zu\n", first_bad);
}

/* ---- a raw peer ------------------------------------------------------------
 */

/* A masked (zero key) client frame of any length. */
static inline size_t ws_frame(uint8_t *out, int opcode, int fin,
                              const uint8_t *p, size_t n) {
  size_t h = 2;
  out[0] = (uint8_t)((fin ? 0x80 : 0) | opcode);
  if (n < 126) {
    out[1] = (uint8_t)(0x80 | n);
  } else if (n < 65536) {
    out[1] = 0x80 | 126;
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
    h = 4;
  } else {
    out[1] = 0x80 | 127;
    for (int i = 0; i < 8; i++)
      out[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    h = 10;
  }
  memset(out + h, 0, 4);
  memcpy(out + h + 4, p, n);
  return h + 4 + n;
}

#endif
