/* The v2 stream engine of a tunnel (docs/PROTOCOL.md section 7): many
 * streams over one WebSocket, each frame one WebSocket message, with
 * per-stream and per-tunnel flow control. The tunnel's core
 * (wstun_tunnel.c) calls in through wstun__tunnel_v2_* (wstun_tunnel_int.h)
 * whenever t->v2 is set; the public calls it implements are the "v2 only"
 * ones of wstun_tunnel.h. Both files are one module, the tunnel. */
#include <string.h>

#include "wstun/wstun.h"
#include "wstun_alloc.h"
#include "wstun_list.h"
#include "wstun_tunnel.h"
#include "wstun_tunnel_int.h"
#include "wstun_v2.h"

typedef struct v2_stream {
  wstun__list link; /* in v2->streams */
  uint32_t id;
  wstun__outmsg *out;      /* our direction's message, until its END went */
  wstun__v2_credit credit; /* what we may still send on it */
  wstun__v2_window win;    /* what the peer may still send on it */
  void *sink;              /* NULL: none yet, refused or forgotten */
  uint32_t head_given;     /* HEAD bytes given to it, not yet consumed */
  unsigned local : 1;      /* we opened it */
  unsigned out_head : 1, out_end : 1;
  unsigned in_head : 1, in_data : 1, in_end : 1;
  unsigned in_head_more : 1; /* the last HEAD in was full: one may follow */
  unsigned closed : 1;
} v2_stream;

struct wstun__v2_state {
  wstun__list streams;
  size_t nopen;                     /* streams not closed */
  uint32_t last_local, last_remote; /* the highest ids opened by us / it */
  uint32_t peer_last;               /* the peer's GOAWAY, else ID_MAX */
  int goaway_got, goaway_sent;
  wstun__v2_credit credit; /* the tunnel's send credit */
  wstun__v2_window win;    /* the tunnel's receive window */
  /* the frame coming in */
  wstun__v2_rx rx;
  uint32_t rx_left;     /* its payload bytes still to come */
  v2_stream *rx_stream; /* where they go; NULL: dropped */
  /* a tunnel error: GOAWAY went, then the close (1002) */
  int fatal, close_queued;
};

/* ---- v2: the engine's life ---------------------------------------------- */

int wstun__tunnel_v2_init(wstun__tunnel *t) {
  struct wstun__v2_state *v = wstun__calloc(1, sizeof(*v));
  if (v == NULL)
    return WSTUN_ENOMEM;
  wstun__list_init(&v->streams);
  wstun__v2_credit_init(&v->credit, WSTUN__V2_TUNNEL_WINDOW);
  (void)wstun__v2_window_init(&v->win, WSTUN__V2_TUNNEL_WINDOW);
  v->peer_last = WSTUN__V2_ID_MAX;
  t->v2 = v;
  return 0;
}

size_t wstun__tunnel_v2_queued(const wstun__tunnel *t) {
  size_t n = 0;
  wstun__list *l;
  wstun__list_foreach(l, &t->v2->streams) {
    v2_stream *s = wstun__list_entry(l, v2_stream, link);
    n += s->out != NULL && !s->out_head;
  }
  return n;
}

/* ---- v2: streams over frames (docs/PROTOCOL.md section 7) ---------------
 *
 * One stream per exchange, both directions. Streams live in one list that
 * is also the order of send turns (a stream that sent a frame goes to the
 * back). A frame to send is written whole, as one WebSocket frame, from
 * its stream's buffer straight into the connection's output. A
 * stream closed on the wire stays in the list (closed = 1) while its sink
 * still holds credit after a complete message, so that its consumed()
 * calls still find it; frames for it are then dropped like those for any
 * closed stream. The list is searched linearly: at most 1024 streams are
 * open, and a map is for when the bench says so. */

static v2_stream *v2_find(const wstun__tunnel *t, uint32_t id) {
  wstun__list *l;
  wstun__list_foreach(l, &t->v2->streams) {
    v2_stream *s = wstun__list_entry(l, v2_stream, link);
    if (s->id == id)
      return s;
  }
  return NULL;
}

static v2_stream *v2_find_open(const wstun__tunnel *t, uint32_t id) {
  v2_stream *s = v2_find(t, id);
  return s != NULL && !s->closed ? s : NULL;
}

/* Ids of the streams this side opens: the server's odd ones. */
static int v2_ours(const wstun__tunnel *t, uint32_t id) {
  return (id & 1u) == (t->is_server ? 1u : 0u);
}

/* An id with no open stream: 0 when it was open once (a frame that
 * crossed a RESET: dropped), -1 when it never was (a tunnel error). */
static int v2_unknown(const wstun__tunnel *t, uint32_t id) {
  uint32_t last = v2_ours(t, id) ? t->v2->last_local : t->v2->last_remote;
  return id <= last ? 0 : -1;
}

int wstun__tunnel_v2_has_out(const wstun__tunnel *t) {
  wstun__list *l;
  wstun__list_foreach(l, &t->v2->streams) {
    if (wstun__list_entry(l, v2_stream, link)->out != NULL)
      return 1;
  }
  return 0;
}

/* Queues a whole control frame (RESET, WINDOW, GOAWAY) of n bytes (n < 0:
 * the encoder refused it). 0, or -1 when it could not be queued: the
 * tunnel failed (t->closing) or is ending anyway. */
static int v2_ctrl(wstun__tunnel *t, const uint8_t *b, int n) {
  if (t->closing || n < 0)
    return -1;
  if (wstun__tunnel_ws_ensure(t) != 0) {
    wstun__tunnel_fail(t, WSTUN_ENOMEM);
    return -1;
  }
  struct wslay_event_msg msg = {WSLAY_BINARY_FRAME, b, (size_t)n};
  int rc = wslay_event_queue_msg(t->ws, &msg);
  if (rc == WSLAY_ERR_NOMEM) {
    wstun__tunnel_fail(t, WSTUN_ENOMEM);
    return -1;
  }
  if (rc != 0)
    return -1; /* a close is queued: the tunnel ends */
  t->carried = 1;
  return 0;
}

/* n bytes held for s (NULL: a stream gone) left: gives the credit back,
 * with WINDOW frames once half a window waits (wstun__v2_window). */
static void v2_give_back(wstun__tunnel *t, v2_stream *s, uint32_t n) {
  struct wstun__v2_state *v = t->v2;
  uint8_t b[WSTUN__V2_FRAME_HEAD_MAX];
  uint32_t inc;
  if (n > 0) {
    if (s != NULL)
      (void)wstun__v2_window_release(&s->win, n);
    (void)wstun__v2_window_release(&v->win, n);
  }
  if (v->fatal)
    return;
  /* no more DATA comes on a stream that ended or closed: no WINDOW */
  if (s != NULL && !s->closed && !s->in_end &&
      (inc = wstun__v2_window_update_due(&s->win)) > 0) {
    if (v2_ctrl(t, b, wstun__v2_encode_window(s->id, inc, b)) != 0)
      return;
    (void)wstun__v2_window_sent(&s->win, inc);
  }
  if ((inc = wstun__v2_window_update_due(&v->win)) > 0) {
    if (v2_ctrl(t, b, wstun__v2_encode_window(0, inc, b)) != 0)
      return;
    (void)wstun__v2_window_sent(&v->win, inc);
  }
}

static v2_stream *v2_stream_new(wstun__tunnel *t, uint32_t id, int local) {
  struct wstun__v2_state *v = t->v2;
  v2_stream *s = wstun__calloc(1, sizeof(*s));
  if (s == NULL)
    return NULL;
  s->id = id;
  s->local = local ? 1u : 0u;
  wstun__v2_credit_init(&s->credit, WSTUN__V2_STREAM_WINDOW);
  (void)wstun__v2_window_init(&s->win, WSTUN__V2_STREAM_WINDOW);
  wstun__list_push_back(&v->streams, &s->link);
  v->nopen++;
  if (local)
    v->last_local = id;
  else
    v->last_remote = id;
  return s;
}

/* s is closed on the wire; freed unless its sink, having had its whole
 * message, still holds credit (consumed() or forget_sink() free it). */
static void v2_stream_closed(wstun__tunnel *t, v2_stream *s) {
  struct wstun__v2_state *v = t->v2;
  if (!s->closed) {
    s->closed = 1;
    v->nopen--;
  }
  if (v->rx_stream == s)
    v->rx_stream = NULL;
  if (s->sink != NULL && s->in_end && s->win.held > 0)
    return;
  uint32_t held = s->win.held;
  wstun__list_remove(&s->link);
  wstun__free(s);
  if (held > 0)
    v2_give_back(t, NULL, held);
}

/* Ends s for good. It is detached before any callback, so what the
 * callbacks do finds nothing of it. */
static void v2_stream_kill(wstun__tunnel *t, v2_stream *s, int peer_reset,
                           uint32_t code, int restartable) {
  uint32_t id = s->id;
  void *sink = s->in_end ? NULL : s->sink;
  wstun__outmsg *m = s->out;
  s->out = NULL;
  s->sink = NULL;
  v2_stream_closed(t, s);
  if (peer_reset && t->cbs->on_reset)
    t->cbs->on_reset(t, id, code);
  if (sink != NULL)
    t->cbs->on_msg_end(t, sink, 0);
  if (m != NULL)
    wstun__tunnel_fail_msg(m, restartable && !m->started);
}

/* A stream error (PROTOCOL.md 7.9): RESET with code, and the stream ends
 * here as if the peer had reset it (without on_reset). */
static void v2_stream_error(wstun__tunnel *t, v2_stream *s, uint32_t code,
                            const char *why) {
  uint8_t b[WSTUN__V2_FRAME_HEAD_MAX];
  wstun__log(t->log, WSTUN_LOG_WARN, "tunnel: stream %u: %s: RESET %s",
             (unsigned)s->id, why, wstun__v2_codename(code));
  if (v2_ctrl(t, b, wstun__v2_encode_reset(s->id, code, b)) != 0 && t->closing)
    return;
  v2_stream_kill(t, s, 0, code, 0);
}

/* A tunnel error: GOAWAY with code, then (once it left) the close 1002;
 * every stream fails when the tunnel does (tunnel_fail). Input is ignored
 * from here on. */
static void v2_fatal(wstun__tunnel *t, uint32_t code, const char *why) {
  struct wstun__v2_state *v = t->v2;
  uint8_t b[WSTUN__V2_FRAME_HEAD_MAX];
  if (v->fatal || t->closing)
    return;
  wstun__log(t->log, WSTUN_LOG_WARN, "tunnel: %s: GOAWAY %s and closing", why,
             wstun__v2_codename(code));
  uint32_t last = t->is_server ? v->last_local : v->last_remote;
  if (v2_ctrl(t, b, wstun__v2_encode_goaway(last, code, b)) != 0 && t->closing)
    return;
  v->fatal = 1;
  v->rx_stream = NULL;
  t->err = WSTUN_EPROTO;
  wstun__tunnel_pump(
      t); /* nothing from inside the receive path: it pumps after */
}

/* ---- v2: sending ----------------------------------------------------------
 */

typedef struct v2_pick {
  v2_stream *s;
  wstun__v2_frame f;
} v2_pick;

/* The next frame to send, round-robin: the first stream in turn order
 * whose next frame is whole (the head) or has credit (DATA). */
static int v2_pick_frame(const wstun__tunnel *t, v2_pick *p) {
  struct wstun__v2_state *v = t->v2;
  wstun__list *l;
  if (v->fatal)
    return 0;
  wstun__list_foreach(l, &v->streams) {
    v2_stream *s = wstun__list_entry(l, v2_stream, link);
    wstun__outmsg *m = s->out;
    if (m == NULL)
      continue;
    size_t avail = wstun__buf_size(&m->buf), n;
    memset(&p->f, 0, sizeof(p->f));
    if (m->head_next < m->nheads && m->heads[m->head_next].at <= m->taken) {
      /* a head over WSTUN__V2_MAX_HEAD goes in several HEAD frames, each
       * but the last exactly that long (7.2) */
      n = (size_t)(m->heads[m->head_next].at + m->heads[m->head_next].len -
                   m->taken);
      if (n > WSTUN__V2_MAX_HEAD)
        n = WSTUN__V2_MAX_HEAD;
      if (avail < n)
        continue; /* the producer is still writing the head */
      p->f.type = WSTUN__V2_HEAD;
    } else {
      n = avail < t->proto->max_chunk ? avail : t->proto->max_chunk;
      if (m->head_next < m->nheads &&
          n > m->heads[m->head_next].at - m->taken) /* up to the next head */
        n = (size_t)(m->heads[m->head_next].at - m->taken);
      if (n > s->credit.avail)
        n = s->credit.avail;
      if (n > v->credit.avail)
        n = v->credit.avail;
      if (n == 0 && !(m->finished && avail == 0))
        continue; /* nothing yet, or no credit */
      p->f.type = WSTUN__V2_DATA;
    }
    if (m->finished && n == avail)
      p->f.flags = WSTUN__V2_FLAG_END;
    p->f.len = (uint32_t)n;
    p->f.stream = s->id;
    p->s = s;
    return 1;
  }
  return 0;
}

/* Sends the next frame. 1 if one went, 0 if none, -1 when the connection
 * took nothing more. */
static int v2_next_frame(wstun__tunnel *t) {
  struct wstun__v2_state *v = t->v2;
  v2_pick p;
  uint8_t h[WSTUN__V2_FRAME_HEAD_MAX];
  if (!v2_pick_frame(t, &p))
    return 0;
  v2_stream *s = p.s;
  wstun__outmsg *m = s->out;
  int hl = wstun__v2_encode(&p.f, h);
  if (hl < 0)
    return -1; /* lengths were checked: cannot happen */
  if (wstun__tunnel_send_data_frame(t, 1, WSLAY_BINARY_FRAME, h, (size_t)hl,
                                    wstun__buf_data(&m->buf), p.f.len) != 0)
    return -1;
  if (p.f.type == WSTUN__V2_DATA && p.f.len > 0) {
    (void)wstun__v2_credit_take(&s->credit, p.f.len);
    (void)wstun__v2_credit_take(&v->credit, p.f.len);
  }
  wstun__buf_consume(&m->buf, p.f.len);
  m->taken += p.f.len;
  m->started = 1;
  s->out_head = 1;
  if (p.f.type == WSTUN__V2_HEAD &&
      m->taken == m->heads[m->head_next].at + m->heads[m->head_next].len)
    m->head_next++;
  t->carried = 1;
  /* its turn is over */
  wstun__list_remove(&s->link);
  wstun__list_push_back(&v->streams, &s->link);
  if (p.f.flags & WSTUN__V2_FLAG_END) {
    s->out = NULL;
    s->out_end = 1;
    wstun__list_push_back(&t->sent, &m->link);
    if (s->in_end)
      v2_stream_closed(t, s);
  }
  return 1;
}

/* pump's step: the close after a tunnel error's GOAWAY, or the next frame.
 * 0, or -1 when the connection took nothing more. */
int wstun__tunnel_v2_start(wstun__tunnel *t) {
  struct wstun__v2_state *v = t->v2;
  if (v->fatal) {
    if (!v->close_queued && wslay_event_get_queued_msg_count(t->ws) == 0) {
      v->close_queued = 1;
      wslay_event_queue_close(t->ws, WSLAY_CODE_PROTOCOL_ERROR, NULL, 0);
    }
    return 0;
  }
  if (!wstun__tunnel_data_ok(t))
    return 0;
  return v2_next_frame(t) < 0 ? -1 : 0;
}

/* Whether pump should go round again (when the connection takes more). */
int wstun__tunnel_v2_more(wstun__tunnel *t) {
  struct wstun__v2_state *v = t->v2;
  v2_pick p;
  if (v->fatal)
    return !v->close_queued && wslay_event_get_queued_msg_count(t->ws) == 0;
  return v2_pick_frame(t, &p);
}

/* on_drain for producers whose buffer went below half the high mark. */
void wstun__tunnel_v2_drains(wstun__tunnel *t) {
  while (!t->closing) {
    wstun__outmsg *m = NULL;
    wstun__list *l;
    wstun__list_foreach(l, &t->v2->streams) {
      wstun__outmsg *o = wstun__list_entry(l, v2_stream, link)->out;
      if (o != NULL && o->paused_src &&
          wstun__buf_size(&o->buf) < WSTUN__PIPE_HIGH / 2) {
        m = o;
        break;
      }
    }
    if (m == NULL)
      return;
    m->paused_src = 0;
    if (m->owner && m->cbs->on_drain)
      m->cbs->on_drain(m->owner, m);
  }
}

void wstun__tunnel_v2_send(wstun__tunnel *t, uint32_t id, wstun__outmsg *m) {
  struct wstun__v2_state *v = t->v2;
  v2_stream *s = v2_find_open(t, id);
  const char *why = NULL;
  int restartable = 0;
  if (m->nheads == 0 || m->heads[0].at != 0 || m->heads[0].len == 0) {
    why = "no head length";
  } else if (s == NULL) {
    if (!t->is_server || !v2_ours(t, id) || id <= v->last_local ||
        id > WSTUN__V2_ID_MAX) {
      why = "no such stream";
    } else if (v->goaway_got || v->goaway_sent ||
               v->nopen >= WSTUN__V2_MAX_STREAMS) {
      why = "the tunnel takes no new streams";
      restartable = 1;
    } else if ((s = v2_stream_new(t, id, 1)) == NULL) {
      why = "out of memory";
      restartable = 1;
    }
  } else if (s->out != NULL || s->out_end) {
    why = "the stream has its message already";
  }
  if (why != NULL) {
    wstun__log(t->log, WSTUN_LOG_WARN, "tunnel: stream %u: %s: not sent",
               (unsigned)id, why);
    wstun__tunnel_fail_msg(m, restartable);
    return;
  }
  s->out = m;
  wstun__tunnel_pump(t);
}

void wstun__tunnel_v2_abandon(wstun__tunnel *t, wstun__outmsg *m) {
  wstun__list *l;
  v2_stream *s = NULL;
  wstun__list_foreach(l, &t->v2->streams) {
    v2_stream *x = wstun__list_entry(l, v2_stream, link);
    if (x->out == m) {
      s = x;
      break;
    }
  }
  if (s == NULL) { /* its END went: it waits in t->sent */
    wstun__list_remove(&m->link);
    wstun__outmsg_free(m);
    return;
  }
  if (m->started) {
    /* as v1: what it holds goes, then END; the receiver's parser sees an
     * incomplete message (wstun__tunnel_reset is the way to cancel) */
    m->finished = 1;
    wstun__tunnel_kick(t);
    return;
  }
  s->out = NULL;
  wstun__outmsg_free(m);
  if (s->local && !s->out_head)
    v2_stream_closed(t, s); /* it never went on the wire */
}

/* ---- v2: receiving --------------------------------------------------------
 */

void wstun__tunnel_v2_msg_begin(wstun__tunnel *t) {
  struct wstun__v2_state *v = t->v2;
  wstun__v2_rx_init(&v->rx);
  v->rx_left = 0;
  v->rx_stream = NULL;
}

/* A HEAD or DATA header: finds (or opens) its stream and checks it may
 * come; v2->rx_stream is where its payload goes. */
static void v2_rx_stream_frame(wstun__tunnel *t, const wstun__v2_frame *f) {
  struct wstun__v2_state *v = t->v2;
  uint8_t b[WSTUN__V2_FRAME_HEAD_MAX];
  uint32_t id = f->stream;
  int data = f->type == WSTUN__V2_DATA;
  uint32_t flow = data ? f->len : 0;
  /* DATA counts against the tunnel window whatever becomes of it */
  if (flow > 0 && wstun__v2_window_recv(&v->win, flow) != 0) {
    v2_fatal(t, WSTUN__V2_FLOW_CONTROL_ERROR, "DATA beyond the tunnel window");
    return;
  }
  v2_stream *s = v2_find_open(t, id);
  if (s == NULL) {
    if (v2_unknown(t, id) == 0) { /* crossed a RESET: dropped */
      v2_give_back(t, NULL, flow);
      return;
    }
    if (t->is_server || v2_ours(t, id) || data) {
      v2_fatal(t, WSTUN__V2_PROTOCOL_ERROR, "a frame on a stream never opened");
      return;
    }
    if (v->goaway_sent || v->nopen >= WSTUN__V2_MAX_STREAMS) {
      v->last_remote = id;
      wstun__log(t->log, WSTUN_LOG_INFO, "tunnel: stream %u refused",
                 (unsigned)id);
      (void)v2_ctrl(t, b, wstun__v2_encode_reset(id, WSTUN__V2_REFUSED, b));
      return;
    }
    if ((s = v2_stream_new(t, id, 0)) == NULL) {
      wstun__tunnel_fail(t, WSTUN_ENOMEM);
      return;
    }
  }
  const char *why = NULL;
  if (s->in_end)
    why = data ? "DATA after END" : "HEAD after END";
  else if (!data && s->in_data)
    why = "HEAD after DATA";
  else if (!data && !s->local && s->in_head && !s->in_head_more)
    why = "a second request head";
  else if (data && !s->in_head)
    why = "DATA before a head";
  else if (s->local && !s->out_head)
    why = "a frame before the stream was opened";
  if (why != NULL) {
    v2_give_back(t, NULL, flow);
    if (s->local && !s->out_head)
      v2_fatal(t, WSTUN__V2_PROTOCOL_ERROR, why);
    else
      v2_stream_error(t, s, WSTUN__V2_PROTOCOL_ERROR, why);
    return;
  }
  if (flow > 0 && wstun__v2_window_recv(&s->win, flow) != 0) {
    v2_give_back(t, NULL, flow);
    v2_stream_error(t, s, WSTUN__V2_FLOW_CONTROL_ERROR,
                    "DATA beyond the stream window");
    return;
  }
  /* a full HEAD without END may be continued by the next HEAD (7.2) */
  s->in_head_more =
      !data && f->len == WSTUN__V2_MAX_HEAD && !(f->flags & WSTUN__V2_FLAG_END);
  if (data) {
    s->in_data = 1;
    if (s->sink == NULL && flow > 0) /* forgotten: dropped at once */
      v2_give_back(t, s, flow);
  } else if (!s->in_head) {
    s->in_head = 1;
    void *sink = t->cbs->on_msg_begin(t, id);
    if (t->closing)
      return;
    if ((s = v2_find_open(t, id)) == NULL)
      return; /* reset by its owner meanwhile */
    if (sink == NULL) {
      v2_stream_error(t, s, s->local ? WSTUN__V2_CANCEL : WSTUN__V2_REFUSED,
                      "refused by its owner");
      return;
    }
    s->sink = sink;
  }
  v->rx_stream = s;
}

/* The peer's GOAWAY: ours above its last id were not processed (as if
 * reset REFUSED, restartable); with an error code, none will be. */
static void v2_rx_goaway(wstun__tunnel *t, const wstun__v2_frame *f) {
  struct wstun__v2_state *v = t->v2;
  if (f->last > v->peer_last) {
    v2_fatal(t, WSTUN__V2_PROTOCOL_ERROR, "GOAWAY raised its last stream id");
    return;
  }
  v->peer_last = f->last;
  v->goaway_got = 1;
  if (t->cbs->on_goaway)
    t->cbs->on_goaway(t, f->last, f->code);
  while (!t->closing) {
    wstun__list *l;
    v2_stream *s = NULL;
    wstun__list_foreach(l, &v->streams) {
      v2_stream *x = wstun__list_entry(l, v2_stream, link);
      if (!x->closed &&
          ((x->local && x->id > f->last) || f->code != WSTUN__V2_NO_ERROR)) {
        s = x;
        break;
      }
    }
    if (s == NULL)
      return;
    if (f->code == WSTUN__V2_NO_ERROR)
      v2_stream_kill(t, s, 1, WSTUN__V2_REFUSED, 1);
    else
      v2_stream_kill(t, s, 1, f->code, 0);
  }
}

/* A frame's header (and fixed payload) is whole. */
static void v2_rx_frame(wstun__tunnel *t) {
  struct wstun__v2_state *v = t->v2;
  const wstun__v2_frame *f = &v->rx.frame;
  v2_stream *s;
  switch (f->type) {
  case WSTUN__V2_HEAD:
  case WSTUN__V2_DATA:
    v->rx_left = f->len;
    v2_rx_stream_frame(t, f);
    return;
  case WSTUN__V2_RESET:
    if ((s = v2_find_open(t, f->stream)) != NULL)
      v2_stream_kill(t, s, 1, f->code, 0);
    else if (v2_unknown(t, f->stream) != 0)
      v2_fatal(t, WSTUN__V2_PROTOCOL_ERROR, "RESET of a stream never opened");
    return;
  case WSTUN__V2_WINDOW:
    if (f->stream == 0) {
      if (wstun__v2_credit_update(&v->credit, f->increment) != 0)
        v2_fatal(t, WSTUN__V2_FLOW_CONTROL_ERROR,
                 "the tunnel window passed 2^31-1");
    } else if ((s = v2_find_open(t, f->stream)) != NULL) {
      if (wstun__v2_credit_update(&s->credit, f->increment) != 0)
        v2_stream_error(t, s, WSTUN__V2_FLOW_CONTROL_ERROR,
                        "the stream window passed 2^31-1");
    } else if (v2_unknown(t, f->stream) != 0) {
      v2_fatal(t, WSTUN__V2_PROTOCOL_ERROR, "WINDOW of a stream never opened");
    }
    return; /* the receive path pumps when it returns */
  case WSTUN__V2_GOAWAY:
    v2_rx_goaway(t, f);
    return;
  default:
    return;
  }
}

void wstun__tunnel_v2_chunk(wstun__tunnel *t, const uint8_t *d, size_t n) {
  struct wstun__v2_state *v = t->v2;
  if (t->closing || v->fatal)
    return;
  if (!v->rx.done) {
    int used = wstun__v2_rx_feed(&v->rx, d, n);
    if (used < 0) {
      v2_fatal(t, WSTUN__V2_PROTOCOL_ERROR, wstun__v2_errname(used));
      return;
    }
    d += used;
    n -= (size_t)used;
    if (!v->rx.done)
      return;
    v2_rx_frame(t);
    if (t->closing || v->fatal)
      return;
  }
  if (n == 0)
    return;
  if (n > v->rx_left) {
    v2_fatal(t, WSTUN__V2_PROTOCOL_ERROR, "a message longer than its frame");
    return;
  }
  v->rx_left -= (uint32_t)n;
  v2_stream *s = v->rx_stream;
  if (s == NULL || s->sink == NULL)
    return;
  if (v->rx.frame.type == WSTUN__V2_HEAD)
    s->head_given += (uint32_t)n; /* bounded by the sink's head parser */
  if (t->cbs->on_msg_data(t, s->sink, d, n) != 0 && !t->closing &&
      (s = v->rx_stream) != NULL)
    v2_stream_error(t, s, WSTUN__V2_CANCEL, "its sink failed");
}

void wstun__tunnel_v2_msg_end(wstun__tunnel *t) {
  struct wstun__v2_state *v = t->v2;
  if (t->closing || v->fatal)
    return;
  if (!v->rx.done || v->rx_left > 0) {
    v2_fatal(t, WSTUN__V2_PROTOCOL_ERROR, "a message shorter than its frame");
    return;
  }
  v2_stream *s = v->rx_stream;
  v->rx_stream = NULL;
  if (s == NULL || !(v->rx.frame.flags & WSTUN__V2_FLAG_END))
    return;
  uint32_t id = s->id;
  s->in_end = 1;
  if (s->sink != NULL) {
    t->cbs->on_msg_end(t, s->sink, 1);
    if (t->closing || (s = v2_find_open(t, id)) == NULL)
      return;
  }
  if (s->out_end)
    v2_stream_closed(t, s);
}

/* ---- v2: the tunnel's end, the calls ----------------------------------------
 */

/* Before on_closed: every sink still receiving ends incomplete. */
void wstun__tunnel_v2_fail_sinks(wstun__tunnel *t) {
  wstun__list *l;
  wstun__list_foreach(l, &t->v2->streams) {
    v2_stream *s = wstun__list_entry(l, v2_stream, link);
    void *sink = s->in_end ? NULL : s->sink;
    s->sink = NULL;
    if (sink != NULL)
      t->cbs->on_msg_end(t, sink, 0); /* every call on t is a no-op now */
  }
}

/* After on_closed: messages go back to their owners, streams go. */
void wstun__tunnel_v2_fail_msgs(wstun__tunnel *t) {
  struct wstun__v2_state *v = t->v2;
  v->rx_stream = NULL;
  while (!wstun__list_empty(&v->streams)) {
    v2_stream *s = wstun__list_entry(v->streams.next, v2_stream, link);
    wstun__outmsg *m = s->out;
    wstun__list_remove(&s->link);
    wstun__free(s);
    if (m != NULL)
      wstun__tunnel_fail_msg(m, !m->started);
  }
  v->nopen = 0;
}

void wstun__tunnel_v2_free(wstun__tunnel *t) {
  if (t->v2 == NULL)
    return;
  t->v2->rx_stream = NULL;
  while (!wstun__list_empty(&t->v2->streams)) {
    v2_stream *s = wstun__list_entry(t->v2->streams.next, v2_stream, link);
    wstun__list_remove(&s->link);
    wstun__free(s);
  }
  wstun__free(t->v2);
  t->v2 = NULL;
}

void wstun__tunnel_consumed(wstun__tunnel *t, uint32_t id, size_t n) {
  if (t->v2 == NULL || t->closing || n == 0)
    return;
  v2_stream *s = v2_find(t, id);
  if (s == NULL)
    return;
  /* head bytes come first and carry no credit */
  uint32_t h = n < s->head_given ? (uint32_t)n : s->head_given;
  s->head_given -= h;
  n -= h;
  if (n == 0 || s->win.held == 0)
    return;
  uint32_t k = n < s->win.held ? (uint32_t)n : s->win.held;
  v2_give_back(t, s, k);
  if (t->closing)
    return;
  if (s->closed && s->win.held == 0)
    v2_stream_closed(t, s);
  wstun__tunnel_pump(t);
}

void wstun__tunnel_reset(wstun__tunnel *t, uint32_t id, uint32_t code) {
  uint8_t b[WSTUN__V2_FRAME_HEAD_MAX];
  if (t->v2 == NULL || t->closing)
    return;
  v2_stream *s = v2_find(t, id);
  if (s == NULL)
    return;
  /* no RESET for a stream over both ways (its END came in, and the owner
   * ends it from inside on_msg_end, before it is marked closed) */
  int over = s->closed || (s->in_end && s->out_end);
  if (!over && (!s->local || s->out_head) &&
      v2_ctrl(t, b, wstun__v2_encode_reset(id, code, b)) != 0 && t->closing)
    return;
  wstun__outmsg *m = s->out;
  s->out = NULL;
  s->sink = NULL;
  if (m != NULL)
    wstun__outmsg_free(m);
  v2_stream_closed(t, s);
  wstun__tunnel_pump(t);
}

void wstun__tunnel_goaway(wstun__tunnel *t, uint32_t code) {
  struct wstun__v2_state *v = t->v2;
  uint8_t b[WSTUN__V2_FRAME_HEAD_MAX];
  if (v == NULL || t->closing || v->fatal)
    return;
  if (code != WSTUN__V2_NO_ERROR) {
    v2_fatal(t, code, "GOAWAY with an error");
    return;
  }
  if (v->goaway_sent)
    return;
  uint32_t last = t->is_server ? v->last_local : v->last_remote;
  if (v2_ctrl(t, b, wstun__v2_encode_goaway(last, code, b)) != 0)
    return;
  v->goaway_sent = 1;
  wstun__tunnel_pump(t);
}

int wstun__tunnel_v2_busy(const wstun__tunnel *t) {
  return t->v2 != NULL && (t->v2->fatal || wstun__tunnel_v2_has_out(t));
}

/* The sink goes away: its stream's bytes are dropped from here on, and
 * what it held is given back. */
void wstun__tunnel_v2_forget(wstun__tunnel *t, void *sink) {
  wstun__list *l;
  if (sink == NULL || t->closing)
    return;
  wstun__list_foreach(l, &t->v2->streams) {
    v2_stream *s = wstun__list_entry(l, v2_stream, link);
    if (s->sink != sink)
      continue;
    uint32_t held = s->win.held;
    s->sink = NULL;
    if (s->closed)
      v2_stream_closed(t, s);
    else if (held > 0)
      v2_give_back(t, s, held);
    wstun__tunnel_pump(t);
    return;
  }
}
