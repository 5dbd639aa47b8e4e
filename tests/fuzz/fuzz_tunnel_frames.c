/* The receiving side of wstun__tunnel: WebSocket frames (wslay) through our
 * frame callbacks (ws_frame_start/chunk/end: the id prefix, sinks, text
 * frames, control frames in the middle of a message) into sinks that
 * behave as the server's do (feed an HTTP response parser, fail on bad
 * bytes, pause and resume the tunnel, go away mid-message).
 *
 * No sockets (fuzz_tunnel_common.h): what the tunnel writes (pongs, close
 * frames, outgoing messages) only piles up in the connection's output
 * buffer.
 *
 * Checks: callbacks only for live sinks, each sink ended exactly once
 * unless it went away (forget_sink), no message callback after on_closed,
 * on_freed always comes, nothing left on the loop.
 *
 * Input: byte 0 flags (see FL_*), byte 1 split seed (see fz_split), then
 * the bytes the peer sent. */
#include "fuzz_util.h"
#include "wstun_http.h"
#include "wstun_proto.h"
#include "wstun_tunnel.h"

enum {
  FL_SERVER = 0x01,  /* server side (expects masked frames) */
  FL_PARSE = 0x02,   /* sinks parse HTTP responses and fail on bad ones */
  FL_PAUSE = 0x04,   /* sinks pause the tunnel after every chunk */
  FL_DROP = 0x08,    /* on_msg_begin refuses odd ids */
  FL_FORGET = 0x10,  /* sinks of ids divisible by 4 go away after a chunk */
  FL_SEND = 0x20,    /* outgoing messages are queued while receiving */
  FL_CLOSE = 0x40,   /* the owner closes the tunnel half way */
  FL_FAILDATA = 0x80 /* on_msg_data fails on a chunk containing '!' */
};

#define MAX_SINKS 4096

typedef struct sink {
  int state; /* 1 open, 2 ended, 3 forgotten */
  uint32_t id;
  int parser_init;
  wstun__http_parser p;
} sink;

/* Hands m to the tunnel under the id it was made with. */
static void send_msg(wstun__tunnel *t, wstun__outmsg *m) {
  wstun__tunnel_send(t, m->id, m);
}

static int resp_on_head(void *ud, wstun__http_head *h) {
  (void)ud;
  (void)h;
  return 0;
}
static const wstun__http_parser_cbs resp_cbs = {resp_on_head, NULL, NULL};

typedef struct env {
  uint8_t flags;
  wstun__tunnel *t; /* NULL after on_closed */
  int closed, freed;
  int paused;
  sink *sinks;
  size_t nsinks;
  int begins, ends;
  /* outgoing */
  wstun__outmsg *streaming; /* unfinished message we may abandon/finish */
  int streaming_done;
} env;

/* after env and sink: the common part uses them */
#include "fuzz_tunnel_common.h"

static void sink_release(sink *s) {
  if (s->parser_init)
    wstun__http_parser_free(&s->p);
  s->parser_init = 0;
}

static void *on_msg_begin(wstun__tunnel *t, uint32_t id) {
  env *e = t->owner;
  FZ_CHECK(!e->closed, "on_msg_begin after on_closed");
  e->begins++;
  if ((e->flags & FL_DROP) && (id & 1))
    return NULL;
  sink *s = fzt_new_sink(e, id);
  if (s == NULL)
    return NULL;
  if (e->flags & FL_PARSE) {
    wstun__http_parser_init(&s->p, HTTP_RESPONSE, 8192, 65536, &resp_cbs, s);
    s->parser_init = 1;
  }
  return s;
}

static int on_msg_data(wstun__tunnel *t, void *sk, const uint8_t *d, size_t n) {
  env *e = t->owner;
  sink *s = sk;
  fzt_check_data(e, s, n);
  if ((e->flags & FL_FAILDATA) && memchr(d, '!', n) != NULL)
    return 1;
  if (s->parser_init) {
    size_t used = 0;
    int rc = wstun__http_parser_feed(&s->p, d, n, &used);
    if (rc == WSTUN__HTTP_ERROR)
      return 1;
  }
  if ((e->flags & FL_FORGET) && (s->id % 4) == 0) {
    wstun__tunnel_forget_sink(t, s);
    sink_release(s);
    s->state = 3;
    return 0;
  }
  if (e->flags & FL_PAUSE) {
    wstun__tunnel_pause_rx(t);
    e->paused = 1;
  }
  return 0;
}

static void on_msg_end(wstun__tunnel *t, void *sk, int complete) {
  env *e = t->owner;
  sink *s = sk;
  FZ_CHECK(!e->closed, "on_msg_end after on_closed");
  FZ_CHECK(s != NULL && s->state == 1, "on_msg_end for a sink in state %d",
           s ? s->state : -1);
  FZ_CHECK(complete == 0 || complete == 1, "complete = %d", complete);
  if (complete && s->parser_init)
    (void)wstun__http_parser_finish(&s->p);
  sink_release(s);
  s->state = 2;
  e->ends++;
}

static const wstun__tunnel_cbs tcbs = {.on_msg_begin = on_msg_begin,
                                       .on_msg_data = on_msg_data,
                                       .on_msg_end = on_msg_end,
                                       .on_closed = fzt_on_closed,
                                       .on_freed = fzt_on_freed};

/* ---- outgoing messages ------------------------------------------------------
 */

static void out_sent(void *owner, wstun__outmsg *m) {
  env *e = owner;
  if (m == e->streaming)
    e->streaming_done = 1;
}
static void out_drain(void *owner, wstun__outmsg *m) {
  (void)owner;
  (void)m;
}
static void out_failed(void *owner, wstun__outmsg *m, int restartable) {
  env *e = owner;
  (void)restartable;
  if (m == e->streaming)
    e->streaming_done = 1;
  wstun__outmsg_free(m); /* ownership came back */
}
static const wstun__outmsg_cbs ocbs = {out_sent, out_drain, out_failed};

static wstun__outmsg *out_new(env *e, uint16_t id, const char *body,
                              int finished) {
  wstun__outmsg *m = wstun__outmsg_new(&ocbs, e);
  if (m == NULL)
    abort();
  uint8_t pre[WSTUN__PROTO_PREFIX_LEN];
  wstun__proto_write_prefix(id, pre);
  if (wstun__buf_append(&m->buf, pre, sizeof(pre)) != 0 ||
      wstun__buf_append_str(&m->buf, body) != 0)
    abort();
  m->finished = finished ? 1u : 0u;
  return m;
}

/* The sinks paused the tunnel: let them resume it, as a drained front
 * connection does. */
static void unpause(env *e) {
  for (int guard = 0; e->paused && e->t != NULL && guard < 100000; guard++) {
    e->paused = 0;
    wstun__tunnel_resume_rx(e->t);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  env e;
  fz_split sp;
  wstun__conn *conn = fzt_begin(&e, &in, &sp, &tcbs);
  wstun__tunnel *t = e.t;

  if (e.flags & FL_SEND) {
    send_msg(
        t, out_new(&e, 1, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", 1));
    e.streaming = out_new(
        &e, 2, "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 0);
    send_msg(t, e.streaming);
    send_msg(t, out_new(&e, 3, "GET /queued HTTP/1.1\r\n\r\n", 1));
  }

  const uint8_t *d = in.d;
  size_t left = in.n;
  size_t half = in.n / 2;
  int halfway_done = 0;
  while (left > 0 && e.t != NULL && !conn->closing) {
    size_t chunk = fz_split_next(&sp, left);
    const uint8_t *c = d;
    size_t cl = chunk;
    d += chunk;
    left -= chunk;
    while (cl > 0 && e.t != NULL) {
      size_t used = fzt_deliver(conn, c, cl);
      c += used;
      cl -= used;
      if (e.t == NULL)
        break;
      if (used == 0 && !e.paused && !e.t->rx_paused)
        break; /* no progress and nobody paused: wslay wants nothing */
      unpause(&e);
    }
    if (e.t != NULL && e.streaming && !e.streaming_done && left <= half &&
        !halfway_done) {
      halfway_done = 1;
      /* the producer of the streaming message: more bytes, then either
       * the end or giving up on it */
      wstun__buf_append_str(&e.streaming->buf, "5\r\nhello\r\n");
      if (e.flags & FL_PARSE) {
        wstun__outmsg_abandon(e.streaming);
      } else {
        wstun__buf_append_str(&e.streaming->buf, "0\r\n\r\n");
        e.streaming->finished = 1;
        wstun__tunnel_kick(e.t);
      }
      e.streaming = NULL;
    }
    if ((e.flags & FL_CLOSE) && e.t != NULL && left <= half)
      wstun__tunnel_close(e.t, WSTUN_ECLOSED);
  }

  if (e.t != NULL && e.streaming && !e.streaming_done) {
    wstun__outmsg_abandon(e.streaming);
    e.streaming = NULL;
  }
  fzt_end(&e);

  for (size_t i = 0; i < e.nsinks; i++) {
    FZ_CHECK(e.sinks[i].state != 1,
             "sink %zu (id %04x) never ended: the exchange would hang", i,
             e.sinks[i].id);
    sink_release(&e.sinks[i]);
  }
  free(e.sinks);
  return 0;
}
