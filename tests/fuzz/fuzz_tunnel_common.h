/* The tunnel without sockets, for the tunnel_frames (v1) and tunnel_v2
 * targets: one loop, connection flusher and rng per process; per input a
 * wstun__tunnel on a wstun__conn whose TCP handle was never opened. The
 * target hands it bytes through fzt_deliver, as wstun__conn's deliver()
 * does, and never runs the loop while feeding, so what the tunnel writes
 * only piles up in the connection's output buffer. fzt_end closes the
 * tunnel and runs the loop until its memory is gone (the first write
 * attempt fails with EBADF: one more error path).
 *
 * What a sink does differs between the targets, so each keeps its own env
 * and sink types and includes this header after them. It uses only the
 * fields both have:
 *   env   flags, t (NULL after on_closed), closed, freed, sinks, nsinks;
 *   sink  state (1 while open), id;
 * and the target's MAX_SINKS and FL_SERVER (server side, masked frames). */
#ifndef WSTUN_FUZZ_TUNNEL_COMMON_H
#define WSTUN_FUZZ_TUNNEL_COMMON_H

#include <uv.h>

#include "fuzz_util.h"
#include "wstun_conn.h"
#include "wstun_tunnel.h"

static uv_loop_t fzt_loop;
static wstun__conn_shared *fzt_shared;
static wstun__rng fzt_rng;
static const wstun__logger fzt_logger = {.level = WSTUN_LOG_ERROR};

/* the connection's owner until the tunnel takes it */
static inline size_t fzt_pre_on_data(wstun__conn *c, const uint8_t *d,
                                     size_t n) {
  (void)c;
  (void)d;
  return n;
}
static inline void fzt_pre_on_end(wstun__conn *c, int err) {
  (void)c;
  (void)err;
}
static const wstun__conn_cbs fzt_pre_cbs = {.on_data = fzt_pre_on_data,
                                            .on_end = fzt_pre_on_end};

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  if (uv_loop_init(&fzt_loop) != 0)
    abort();
  fzt_shared = calloc(1, sizeof(*fzt_shared));
  if (fzt_shared == NULL)
    abort();
  wstun__conn_shared_init(fzt_shared, &fzt_loop);
  if (wstun__rng_init(&fzt_rng) != 0)
    abort();
  return 0;
}

/* As wstun__conn's deliver(): the bytes go to the owner's on_data. */
static inline size_t fzt_deliver(wstun__conn *c, const uint8_t *d, size_t n) {
  c->in_data = 1;
  size_t used = c->cbs->on_data(c, d, n);
  c->in_data = 0;
  FZ_CHECK(used <= n, "on_data used %zu of %zu", used, n);
  return used;
}

/* ---- the sinks -------------------------------------------------------------
 */

/* The next sink, open for stream id; NULL (the message is refused) once
 * MAX_SINKS are taken. */
static inline sink *fzt_new_sink(env *e, uint32_t id) {
  if (e->nsinks == MAX_SINKS)
    return NULL;
  sink *s = &e->sinks[e->nsinks++];
  memset(s, 0, sizeof(*s));
  s->state = 1;
  s->id = id;
  return s;
}

/* What every on_msg_data may assume. */
static inline void fzt_check_data(const env *e, const sink *s, size_t n) {
  FZ_CHECK(!e->closed, "on_msg_data after on_closed");
  FZ_CHECK(s != NULL && s->state == 1, "on_msg_data for a sink in state %d",
           s ? s->state : -1);
  FZ_CHECK(n > 0, "empty on_msg_data");
}

static inline void fzt_on_closed(wstun__tunnel *t, int err) {
  env *e = t->owner;
  FZ_CHECK(!e->closed, "on_closed twice");
  FZ_CHECK(err < 0, "on_closed with err %d", err);
  e->closed = 1;
  e->t = NULL;
}

static inline void fzt_on_freed(void *owner) {
  env *e = owner;
  FZ_CHECK(e->closed, "on_freed before on_closed");
  FZ_CHECK(!e->freed, "on_freed twice");
  e->freed = 1;
}

/* ---- one input -------------------------------------------------------------
 */

/* Reads the flags and split seed bytes, then starts e->t (the server side
 * with FL_SERVER) on a new connection and returns the connection. */
static inline wstun__conn *fzt_begin(env *e, fz_in *in, fz_split *sp,
                                     const wstun__tunnel_cbs *cbs) {
  memset(e, 0, sizeof(*e));
  e->flags = fz_byte(in);
  fz_split_init(sp, fz_byte(in));
  e->sinks = calloc(MAX_SINKS, sizeof(sink));
  if (e->sinks == NULL)
    abort();
  wstun__conn *conn =
      wstun__conn_new(&fzt_loop, fzt_shared, &fzt_pre_cbs, NULL);
  if (conn == NULL)
    abort();
  wstun__tunnel *t = NULL;
  int rc = wstun__tunnel_start(&t, &fzt_loop, conn, (e->flags & FL_SERVER) != 0,
                               &fzt_rng, &fzt_logger, 0, 0, cbs, e, NULL, 0);
  FZ_CHECK(rc == 0, "tunnel_start: %d", rc);
  e->t = t;
  return conn;
}

/* Closes the tunnel if it still runs and checks that it is gone with all
 * its memory and nothing is left on the loop. The sinks are the
 * target's. */
static inline void fzt_end(env *e) {
  if (e->t != NULL)
    wstun__tunnel_close(e->t, WSTUN_ECLOSED);
  FZ_CHECK(e->closed, "tunnel_close did not close");
  uv_run(&fzt_loop, UV_RUN_DEFAULT);
  FZ_CHECK(e->freed, "tunnel memory not released after the loop ran");
  FZ_CHECK(!uv_loop_alive(&fzt_loop), "handles left on the loop");
}

#endif
