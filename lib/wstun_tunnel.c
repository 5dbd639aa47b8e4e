/* wslay glue, after h2o's lib/websocket.c: the recv callback drains the
 * bytes of the current socket read and answers WOULDBLOCK when they are
 * gone (or when a sink paused us); the send callback appends to the
 * connection's output buffer and answers WOULDBLOCK above its high-water
 * mark; the connection's drain callback pumps again. */
#include "wstun_tunnel.h"

#include <string.h>

#include "wstun/wstun.h"
#include "wstun_alloc.h"
#include "wstun_list.h"
#include "wstun_proto.h"
#include "wstun_v2.h"

/* the v2 stream engine, at the end of this file */
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
  wstun__buf fr;           /* the frame being sent, header and payload */
  int fr_busy;
  /* the frame coming in */
  wstun__v2_rx rx;
  uint32_t rx_left;     /* its payload bytes still to come */
  v2_stream *rx_stream; /* where they go; NULL: dropped */
  /* a tunnel error: GOAWAY went, then the close (1002) */
  int fatal, close_queued;
};

static int v2_has_out(const wstun__tunnel *t);
static int v2_busy(const wstun__tunnel *t);
static int v2_start(wstun__tunnel *t);
static int v2_more(wstun__tunnel *t);
static void v2_drains(wstun__tunnel *t);
static void v2_send(wstun__tunnel *t, uint32_t id, wstun__outmsg *m);
static void v2_abandon(wstun__tunnel *t, wstun__outmsg *m);
static void v2_msg_begin(wstun__tunnel *t);
static void v2_chunk(wstun__tunnel *t, const uint8_t *d, size_t n);
static void v2_msg_end(wstun__tunnel *t);
static void v2_fail_sinks(wstun__tunnel *t);
static void v2_fail_msgs(wstun__tunnel *t);
static void v2_forget(wstun__tunnel *t, void *sink);
static void v2_free(wstun__tunnel *t);

/* ---- outgoing messages ------------------------------------------------- */

wstun__outmsg *wstun__outmsg_new(const wstun__outmsg_cbs *cbs, void *owner) {
  wstun__outmsg *m = wstun__calloc(1, sizeof(*m));
  if (m == NULL)
    return NULL;
  m->cbs = cbs;
  m->owner = owner;
  return m;
}

void wstun__outmsg_free(wstun__outmsg *m) {
  if (m == NULL)
    return;
  wstun__buf_free(&m->buf);
  wstun__free(m);
}

int wstun__outmsg_add_head(wstun__outmsg *m, uint32_t n) {
  size_t have = wstun__buf_size(&m->buf);
  if (n == 0 || n > WSTUN__V2_MAX_HEAD || n > have ||
      m->nheads == WSTUN__OUTMSG_HEADS)
    return WSTUN_EINVAL;
  uint64_t at = m->taken + have - n;
  if (m->nheads > 0 &&
      at < m->heads[m->nheads - 1].at + m->heads[m->nheads - 1].len)
    return WSTUN_EINVAL;
  m->heads[m->nheads].at = at;
  m->heads[m->nheads].len = n;
  m->nheads++;
  return 0;
}

int wstun__outmsg_full(wstun__outmsg *m) {
  if (wstun__buf_size(&m->buf) > WSTUN__PIPE_HIGH) {
    m->paused_src = 1;
    return 1;
  }
  return 0;
}

void wstun__outmsg_abandon(wstun__outmsg *m) {
  if (m == NULL)
    return;
  m->owner = NULL;
  if (!m->queued) {
    wstun__outmsg_free(m);
    return;
  }
  wstun__tunnel *t = m->tunnel;
  if (t->v2 != NULL) {
    v2_abandon(t, m);
    return;
  }
  if (t->cur != m) {
    wstun__list_remove(&m->link);
    wstun__outmsg_free(m);
    return;
  }
  /* Being sent: a WebSocket message cannot be withdrawn, so end it now.
   * At least one byte is always held back until the producer finishes, so
   * the final frame has something to carry. */
  m->finished = 1;
  wstun__tunnel_kick(t);
}

/* ---- wslay callbacks --------------------------------------------------- */

/* Messages wslay may hold for sending (pongs it owes, a close, the data
 * message being sent) before the tunnel stops reading. wslay answers every
 * ping with a queued pong, so a peer that pings and never reads would
 * otherwise grow that queue without end; a sane peer pings every few
 * seconds and reads its pongs. */
#define TX_QUEUE_MAX 32

static int tx_backlog(const wstun__tunnel *t) {
  return t->ws != NULL &&
         wslay_event_get_queued_msg_count(t->ws) > TX_QUEUE_MAX;
}

static ssize_t ws_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                       int flags, void *ud) {
  wstun__tunnel *t = ud;
  (void)flags;
  if (t->rx_paused || t->in_len == 0 || t->closing) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  if (tx_backlog(t)) {
    /* the rest waits (conn->pending) until the output drains */
    t->tx_held = 1;
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  size_t n = len < t->in_len ? len : t->in_len;
  memcpy(buf, t->in, n);
  t->in += n;
  t->in_len -= n;
  t->rx_fed += n;
  return (ssize_t)n;
}

static ssize_t ws_send(wslay_event_context_ptr ctx, const uint8_t *data,
                       size_t len, int flags, void *ud) {
  wstun__tunnel *t = ud;
  (void)flags;
  if (t->conn == NULL || t->conn->closing) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  if (wstun__conn_congested(t->conn)) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  if (wstun__buf_append(wstun__conn_outbuf(t->conn), data, len) != 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  return (ssize_t)len;
}

static int ws_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                      void *ud) {
  wstun__tunnel *t = ud;
  (void)ctx;
  return wstun__rng_bytes(t->rng, buf, len) == 0 ? 0 : -1;
}

static ssize_t ws_read_msg(wslay_event_context_ptr ctx, uint8_t *buf,
                           size_t len, const union wslay_event_msg_source *src,
                           int *eof, void *ud) {
  wstun__tunnel *t = ud;
  wstun__outmsg *m = t->cur;
  (void)ctx;
  (void)src;
  if (m == NULL)
    return 0;
  /* One byte is held back until the producer finishes, so that the final
   * frame has something to carry; the head waits with it, so a message
   * counts as started only once some of its own bytes go. */
  if (!m->finished && wstun__buf_size(&m->buf) <= 1)
    return 0;
  /* the format's head goes first */
  size_t n = 0;
  if (m->head_off < m->head_len) {
    n = (size_t)(m->head_len - m->head_off);
    if (n > len)
      n = len;
    memcpy(buf, m->head + m->head_off, n);
    m->head_off = (uint8_t)(m->head_off + n);
    m->started = 1;
    buf += n;
    len -= n;
  }
  size_t avail = wstun__buf_size(&m->buf) - (m->finished ? 0 : 1);
  size_t take = avail < len ? avail : len;
  if (take > 0) {
    memcpy(buf, wstun__buf_data(&m->buf), take);
    wstun__buf_consume(&m->buf, take);
    m->taken += take;
    m->started = 1;
    n += take;
  }
  if (m->finished && m->head_off == m->head_len &&
      wstun__buf_size(&m->buf) == 0) {
    *eof = 1;
    t->cur = NULL;
    wstun__list_push_back(&t->sent, &m->link);
  }
  return (ssize_t)n;
}

/* Header plus payload (RFC 6455 section 5.2). wslay takes only the shortest
 * length encoding, and masked frames only on the server side. */
static uint64_t frame_size(uint64_t payload, int masked) {
  uint64_t header = 2;
  if (payload >= 65536)
    header += 8;
  else if (payload >= 126)
    header += 2;
  if (masked)
    header += 4;
  return header + payload;
}

static void ws_frame_start(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_start_arg *a,
                           void *ud) {
  wstun__tunnel *t = ud;
  t->frame_fin = a->fin;
  t->frame_ctrl = (a->opcode & 0x8) != 0;
  t->frame_size = frame_size(a->payload_length, t->is_server);
  if (t->frame_ctrl)
    return;
  t->carried = 1;
  if (a->opcode == WSLAY_TEXT_FRAME) {
    wstun__log(t->log, WSTUN_LOG_WARN,
               "tunnel: text message received: closing");
    t->err = WSTUN_EPROTO;
    wslay_event_queue_close(ctx, WSLAY_CODE_UNSUPPORTED_DATA, NULL, 0);
    t->drop = 1;
    return;
  }
  if (a->opcode == WSLAY_BINARY_FRAME) {
    t->in_msg = 1;
    if (t->v2 != NULL)
      v2_msg_begin(t);
    else
      t->proto->rx_begin(&t->in_head);
    t->sink = NULL;
    t->drop = 0;
  }
}

static void ws_frame_chunk(wslay_event_context_ptr ctx,
                           const struct wslay_event_on_frame_recv_chunk_arg *a,
                           void *ud) {
  wstun__tunnel *t = ud;
  (void)ctx;
  if (t->frame_ctrl || !t->in_msg || t->drop)
    return;
  if (t->v2 != NULL) {
    v2_chunk(t, a->data, a->data_length);
    return;
  }
  const uint8_t *d = a->data;
  size_t n = a->data_length;
  if (!t->in_head.done) {
    int used = t->proto->rx_feed(&t->in_head, d, n);
    if (used < 0) {
      wstun__log(t->log, WSTUN_LOG_WARN, "tunnel: message without id: dropped");
      t->drop = 1;
      return;
    }
    d += used;
    n -= (size_t)used;
    if (!t->in_head.done)
      return;
    t->sink = t->cbs->on_msg_begin(t, t->in_head.id);
    if (t->sink == NULL) {
      t->drop = 1;
      return;
    }
  }
  if (n > 0 && t->sink != NULL) {
    if (t->cbs->on_msg_data(t, t->sink, d, n) != 0) {
      /* the sink may have forgotten itself already (forget_sink) */
      void *sink = t->sink;
      t->sink = NULL;
      t->drop = 1;
      if (sink)
        t->cbs->on_msg_end(t, sink, 0);
    }
  }
}

static void ws_frame_end(wslay_event_context_ptr ctx, void *ud) {
  wstun__tunnel *t = ud;
  (void)ctx;
  t->rx_framed += t->frame_size;
  if (t->frame_ctrl || !t->in_msg || !t->frame_fin)
    return;
  t->in_msg = 0;
  if (t->v2 != NULL) {
    if (!t->drop)
      v2_msg_end(t);
    t->drop = 0;
    return;
  }
  if (t->sink != NULL && !t->drop) {
    void *sink = t->sink;
    t->sink = NULL;
    t->cbs->on_msg_end(t, sink, 1);
  }
  t->sink = NULL;
  t->drop = 0;
}

static void ws_msg(wslay_event_context_ptr ctx,
                   const struct wslay_event_on_msg_recv_arg *a, void *ud) {
  /* Only control frames arrive here (no_buffering mode); wslay answers
   * pings itself. A pinging side counts only control frames as signs of
   * life: bytes alone could be a frame that never ends. */
  wstun__tunnel *t = ud;
  (void)ctx;
  t->last_ctrl = uv_now(t->timer.loop);
  if (a->opcode == WSLAY_PONG && t->cbs->on_pong && !t->closing)
    t->cbs->on_pong(t);
}

/* ---- the wslay context, held only while needed -------------------------- */

/* An idle tunnel carries nothing but pings and pongs, and wslay's context
 * (two 4 KiB buffers, 8.7 KB with its queues) would be most of its memory.
 * So the context is made when there is something to read or send and
 * dropped again when the tunnel is quiescent: nothing in flight either way
 * and no part of a frame inside wslay. Between frames wslay keeps no state
 * a new context would lack (fragmented messages count as in flight). */

static int ws_ensure(wstun__tunnel *t) {
  static const struct wslay_event_callbacks wcbs = {
      ws_recv,        ws_send,      ws_genmask, ws_frame_start,
      ws_frame_chunk, ws_frame_end, ws_msg};
  if (t->ws != NULL)
    return 0;
  int rc = t->is_server ? wslay_event_context_server_init(&t->ws, &wcbs, t)
                        : wslay_event_context_client_init(&t->ws, &wcbs, t);
  if (rc != 0) {
    t->ws = NULL;
    return WSTUN_ENOMEM;
  }
  wslay_event_config_set_no_buffering(t->ws, 1);
  /* the largest control frame is 125 bytes; data is streamed, unbounded */
  wslay_event_config_set_max_recv_msg_length(t->ws, UINT64_MAX);
  t->rx_fed = t->rx_framed = 0;
  return 0;
}

static int quiescent(const wstun__tunnel *t) {
  return t->ws != NULL && !t->closing && !t->in_rx && !t->pumping &&
         !t->rx_paused && !t->in_msg && t->cur == NULL &&
         wstun__list_empty(&t->queue) && wstun__list_empty(&t->sent) &&
         !v2_busy(t) && t->rx_fed == t->rx_framed &&
         wslay_event_get_read_enabled(t->ws) &&
         wslay_event_get_write_enabled(t->ws) && !wslay_event_want_write(t->ws);
}

static void release_if_quiescent(wstun__tunnel *t) {
  if (!quiescent(t))
    return;
  wslay_event_context_free(t->ws);
  t->ws = NULL;
}

/* ---- pumping ------------------------------------------------------------ */

static void tunnel_fail(wstun__tunnel *t, int err);

static void pump(wstun__tunnel *t) {
  /* inside wslay_event_recv (a sink sending from a callback), wslay must
   * not be entered again: the receive path pumps once it returns */
  if (t->pumping || t->closing || t->in_rx)
    return;
  if (t->ws == NULL && wstun__list_empty(&t->queue) &&
      !(t->v2 != NULL && v2_has_out(t)))
    return; /* nothing to send, and wslay holds nothing */
  if (ws_ensure(t) != 0) {
    tunnel_fail(t, WSTUN_ENOMEM);
    return;
  }
  t->pumping = 1;
  for (;;) {
    if (t->v2 != NULL) {
      if (v2_start(t) != 0) {
        t->pumping = 0;
        tunnel_fail(t, t->err ? t->err : WSTUN_ENOMEM);
        return;
      }
    } else if (t->cur == NULL && !wstun__list_empty(&t->queue)) {
      wstun__outmsg *m = wstun__list_entry(t->queue.next, wstun__outmsg, link);
      wstun__list_remove(&m->link);
      /* v1 ids are four hex digits */
      m->head_len = (uint8_t)t->proto->write_head((uint16_t)m->id, m->head);
      m->head_off = 0;
      t->cur = m;
      t->carried = 1;
      struct wslay_event_fragmented_msg fm;
      memset(&fm, 0, sizeof(fm));
      fm.opcode = WSLAY_BINARY_FRAME;
      fm.source.data = t;
      fm.read_callback = ws_read_msg;
      if (wslay_event_queue_fragmented_msg(t->ws, &fm) != 0) {
        t->pumping = 0;
        tunnel_fail(t, WSTUN_ENOMEM);
        return;
      }
    }
    if (wslay_event_send(t->ws) != 0) {
      t->pumping = 0;
      tunnel_fail(t, WSTUN_ECLOSED);
      return;
    }
    /* tell owners outside of wslay's call stack */
    while (!wstun__list_empty(&t->sent)) {
      wstun__outmsg *m = wstun__list_entry(t->sent.next, wstun__outmsg, link);
      wstun__list_remove(&m->link);
      if (m->owner && m->cbs->on_sent)
        m->cbs->on_sent(m->owner, m);
      wstun__outmsg_free(m);
    }
    wstun__outmsg *c = t->cur;
    if (t->v2 != NULL) {
      v2_drains(t);
    } else if (c && c->paused_src &&
               wstun__buf_size(&c->buf) < WSTUN__PIPE_HIGH / 2) {
      c->paused_src = 0;
      if (c->owner && c->cbs->on_drain)
        c->cbs->on_drain(c->owner, c);
    }
    if (t->closing)
      break;
    if ((t->v2 != NULL ? v2_more(t)
                       : t->cur == NULL && !wstun__list_empty(&t->queue)) &&
        !wstun__conn_congested(t->conn))
      continue;
    break;
  }
  t->pumping = 0;
  if (!t->closing) {
    wstun__conn_flush(t->conn);
    if (wslay_event_get_close_sent(t->ws))
      tunnel_fail(t, t->err ? t->err : WSTUN_ECLOSED);
  }
}

void wstun__tunnel_kick(wstun__tunnel *t) {
  pump(t);
}

int wstun__tunnel_set_proto(wstun__tunnel *t, const wstun__proto *proto) {
  if (proto->multiplexed && t->v2 == NULL) {
    struct wstun__v2_state *v = wstun__calloc(1, sizeof(*v));
    if (v == NULL)
      return WSTUN_ENOMEM;
    wstun__list_init(&v->streams);
    wstun__buf_init(&v->fr);
    wstun__v2_credit_init(&v->credit, WSTUN__V2_TUNNEL_WINDOW);
    (void)wstun__v2_window_init(&v->win, WSTUN__V2_TUNNEL_WINDOW);
    v->peer_last = WSTUN__V2_ID_MAX;
    t->v2 = v;
  }
  t->proto = proto;
  return 0;
}

void wstun__tunnel_send(wstun__tunnel *t, uint32_t id, wstun__outmsg *m) {
  m->id = id;
  m->queued = 1;
  m->tunnel = t;
  if (t->closing) {
    /* never sent: hand it straight back */
    m->queued = 0;
    m->tunnel = NULL;
    if (m->owner && m->cbs->on_failed)
      m->cbs->on_failed(m->owner, m, 1);
    else
      wstun__outmsg_free(m);
    return;
  }
  if (t->v2 != NULL) {
    v2_send(t, id, m);
    return;
  }
  wstun__list_push_back(&t->queue, &m->link);
  pump(t);
}

size_t wstun__tunnel_queued(const wstun__tunnel *t) {
  if (t->v2 != NULL) {
    size_t n = 0;
    wstun__list *l;
    wstun__list_foreach(l, &t->v2->streams) {
      v2_stream *s = wstun__list_entry(l, v2_stream, link);
      n += s->out != NULL && !s->out_head;
    }
    return n;
  }
  return wstun__list_count(&t->queue);
}

/* ---- conn callbacks ----------------------------------------------------- */

/* wslay's receive path over t->in (and what wslay holds), then the sending
 * it caused. Input stops (tx_held) while wslay owes the peer too many
 * frames; those are only sent after wslay_event_recv returns, so when
 * sending cleared them, receiving goes on. Still owed after the send means
 * the connection is congested: its drain resumes us (tun_on_drain). */
static int rx_run(wstun__tunnel *t) {
  for (;;) {
    t->in_rx = 1;
    int rc = wslay_event_recv(t->ws);
    t->in_rx = 0;
    if (rc != 0)
      return rc;
    pump(t);
    if (t->closing || !t->tx_held || tx_backlog(t))
      return 0;
    t->tx_held = 0;
  }
}

static size_t tun_on_data(wstun__conn *c, const uint8_t *data, size_t len) {
  wstun__tunnel *t = c->owner;
  if (t->closing)
    return len;
  t->last_rx = uv_now(t->timer.loop);
  if (ws_ensure(t) != 0) {
    tunnel_fail(t, WSTUN_ENOMEM);
    return len;
  }
  t->in = data;
  t->in_len = len;
  int rc = rx_run(t);
  size_t used = len - t->in_len;
  t->in = NULL;
  t->in_len = 0;
  if (rc != 0) {
    tunnel_fail(t, WSTUN_EPROTO);
    return len;
  }
  if (!t->closing && !wslay_event_want_read(t->ws) &&
      !wslay_event_want_write(t->ws))
    tunnel_fail(t, t->err ? t->err : WSTUN_ECLOSED);
  /* an idle tunnel's ping or pong: let the context go at once (a busy
   * tunnel keeps it until a tick finds it quiescent) */
  if (!t->carried)
    release_if_quiescent(t);
  return t->closing ? len : used;
}

static void tun_on_end(wstun__conn *c, int err) {
  wstun__tunnel *t = c->owner;
  (void)err;
  tunnel_fail(t, WSTUN_ECLOSED);
}

static void rx_restart(wstun__tunnel *t);

static void tun_on_drain(wstun__conn *c) {
  wstun__tunnel *t = c->owner;
  pump(t);
  if (t->tx_held && !t->closing && !tx_backlog(t)) {
    t->tx_held = 0;
    if (!t->rx_paused)
      rx_restart(t);
  }
}

/* The timer and the connection are closed: the memory can go. */
static void tunnel_free(wstun__closer *closer) {
  wstun__tunnel *t = wstun__list_entry(closer, wstun__tunnel, closer);
  if (t->ws)
    wslay_event_context_free(t->ws);
  v2_free(t);
  if (t->cbs->on_freed)
    t->cbs->on_freed(t->owner);
  wstun__free(t);
}

static void tun_on_close(wstun__conn *c) {
  wstun__tunnel *t = c->owner;
  t->conn = NULL;
  wstun__closer_done(&t->closer); /* only tunnel_fail closes the conn */
}

static const wstun__conn_cbs tunnel_conn_cbs = {
    .on_data = tun_on_data,
    .on_end = tun_on_end,
    .on_drain = tun_on_drain,
    .on_close = tun_on_close,
};

static void fail_msg(wstun__outmsg *m, int restartable) {
  m->queued = 0;
  m->tunnel = NULL;
  if (m->owner && m->cbs->on_failed)
    m->cbs->on_failed(m->owner, m, restartable);
  else
    wstun__outmsg_free(m);
}

static void tunnel_fail(wstun__tunnel *t, int err) {
  if (t->closing)
    return;
  t->closing = 1;
  t->err = err;
  wstun__closer_start(&t->closer, tunnel_free);
  wstun__closer_close_handle(&t->closer, (uv_handle_t *)&t->timer);
  /* A close frame or final frames still buffered get one write attempt
   * (libuv writes at once when it can); a dead peer must not keep the
   * socket open. */
  if (t->conn) {
    wstun__conn_flush_now(t->conn);
    wstun__closer_add(&t->closer);
    wstun__conn_close(t->conn);
  }
  if (t->in_msg && t->sink) {
    void *sink = t->sink;
    t->sink = NULL;
    t->cbs->on_msg_end(t, sink, 0);
  }
  if (t->v2 != NULL)
    v2_fail_sinks(t);
  /* the owner unlinks the tunnel before failed messages come back, so they
   * are never re-queued onto it */
  t->cbs->on_closed(t, err);
  while (!wstun__list_empty(&t->sent)) {
    wstun__outmsg *m = wstun__list_entry(t->sent.next, wstun__outmsg, link);
    wstun__list_remove(&m->link);
    if (m->owner && m->cbs->on_sent)
      m->cbs->on_sent(m->owner, m);
    wstun__outmsg_free(m);
  }
  if (t->cur) {
    wstun__outmsg *m = t->cur;
    t->cur = NULL;
    fail_msg(m, !m->started);
  }
  while (!wstun__list_empty(&t->queue)) {
    wstun__outmsg *m = wstun__list_entry(t->queue.next, wstun__outmsg, link);
    wstun__list_remove(&m->link);
    fail_msg(m, !m->started);
  }
  if (t->v2 != NULL)
    v2_fail_msgs(t);
  /* Done with wslay (a close frame is already in the conn's buffer). Freed
   * now, so that closing many idle tunnels at once does not hold a context
   * for each until the handles close; not from inside wslay's own call. */
  if (t->ws && !t->in_rx) {
    wslay_event_context_free(t->ws);
    t->ws = NULL;
  }
  /* the timer's close completes on a later loop turn: never freed here */
  wstun__closer_done(&t->closer);
}

void wstun__tunnel_close(wstun__tunnel *t, int err) {
  if (t->closing)
    return;
  if (t->conn && !t->conn->closing && ws_ensure(t) == 0) {
    wslay_event_queue_close(t->ws, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
    if (!t->in_rx) /* wslay is not re-entrant: no close frame then */
      wslay_event_send(t->ws);
  }
  tunnel_fail(t, err);
}

static void on_tick(uv_timer_t *timer) {
  wstun__tunnel *t = timer->data;
  uint64_t now = uv_now(timer->loop);
  /* while we hold the input back (a slow requester downstream), the
   * peer's silence is ours, not its; not so when we hold it back because
   * the peer does not read what we owe it (tx_held) */
  if ((t->rx_paused || (t->conn && t->conn->paused)) && !t->tx_held)
    t->last_rx = t->last_ctrl = now;
  /* the side that pings (the client) waits for pongs; the other side for
   * anything at all (PROTOCOL.md section 4) */
  uint64_t seen = t->ping_interval_ms ? t->last_ctrl : t->last_rx;
  if (t->dead_after_ms && now - seen >= t->dead_after_ms) {
    wstun__log(t->log, WSTUN_LOG_INFO,
               "tunnel: nothing heard for %llu ms: closing",
               (unsigned long long)(now - seen));
    tunnel_fail(t, WSTUN_ETIMEDOUT);
    return;
  }
  /* a peer that talks but takes none of what we write is as dead as a
   * silent one: everything sent its way would wait for -httptimeout */
  uint64_t p = t->conn ? wstun__conn_progress(t->conn) : 0;
  if (t->conn == NULL || wstun__conn_queued(t->conn) == 0 || p != t->out_mark) {
    t->out_mark = p;
    t->out_since = now;
  } else if (t->dead_after_ms && now - t->out_since >= t->dead_after_ms) {
    wstun__log(t->log, WSTUN_LOG_INFO,
               "tunnel: the peer took nothing of our output for %llu ms: "
               "closing",
               (unsigned long long)(now - t->out_since));
    tunnel_fail(t, WSTUN_ETIMEDOUT);
    return;
  }
  t->carried = 0;
  if (!t->ping_interval_ms) {
    release_if_quiescent(t);
  } else {
    /* the pong lets the context go again (tun_on_data) */
    if (ws_ensure(t) != 0) {
      tunnel_fail(t, WSTUN_ENOMEM);
      return;
    }
    struct wslay_event_msg ping = {WSLAY_PING, (const uint8_t *)"wstun", 5};
    wslay_event_queue_msg(t->ws, &ping);
    pump(t);
  }
}

static void on_first_tick(uv_timer_t *timer) {
  wstun__tunnel *t = timer->data;
  uint64_t tick =
      t->ping_interval_ms ? t->ping_interval_ms : t->dead_after_ms / 4;
  if (tick < 250)
    tick = 250;
  uv_timer_start(&t->timer, on_tick, tick, tick);
  wstun__conn_resume(t->conn);
}

void wstun__tunnel_pause_rx(wstun__tunnel *t) {
  if (t->v2 != NULL)
    return; /* v2: flow control, per stream (wstun__tunnel_consumed) */
  t->rx_paused = 1;
}

void wstun__tunnel_forget_sink(wstun__tunnel *t, void *sink) {
  if (t->v2 != NULL) {
    v2_forget(t, sink);
    return;
  }
  if (t->sink == sink && sink != NULL) {
    t->sink = NULL;
    t->drop = 1;
  }
}

void wstun__tunnel_resume_rx(wstun__tunnel *t) {
  if (t->v2 != NULL || !t->rx_paused || t->closing)
    return;
  t->rx_paused = 0;
  /* Called from inside the receive path (a sink finishing its message):
   * wslay is mid-call and not re-entrant, and `in` still holds the rest of
   * this read. Clearing the flag is enough: the running receive goes on. */
  if (t->in_rx)
    return;
  rx_restart(t);
}

/* Input may flow again (no sink paused it, no output backlog). */
static void rx_restart(wstun__tunnel *t) {
  /* wslay may hold bytes it read ahead: let it parse them first */
  if (t->ws != NULL) {
    t->in = NULL;
    t->in_len = 0;
    if (rx_run(t) != 0) {
      tunnel_fail(t, WSTUN_EPROTO);
      return;
    }
  }
  if (!t->closing && !t->rx_paused && !t->tx_held)
    wstun__conn_resume(t->conn);
}

int wstun__tunnel_start(wstun__tunnel **out, uv_loop_t *loop, wstun__conn *conn,
                        int is_server, wstun__rng *rng,
                        const wstun__logger *log, uint64_t ping_interval_ms,
                        uint64_t dead_after_ms, const wstun__tunnel_cbs *cbs,
                        void *owner, const uint8_t *leftover, size_t n) {
  wstun__tunnel *t = wstun__calloc(1, sizeof(*t));
  if (t == NULL)
    return WSTUN_ENOMEM;
  t->conn = conn;
  t->is_server = is_server;
  t->rng = rng;
  t->log = log;
  t->cbs = cbs;
  t->owner = owner;
  t->proto = &wstun__proto_v1;
  wstun__list_init(&t->queue);
  wstun__list_init(&t->sent);
  t->ping_interval_ms = ping_interval_ms;
  t->dead_after_ms = dead_after_ms;
  /* Bytes that followed the handshake are parsed on the first loop turn,
   * so on_closed never fires before this returns. Called from the
   * connection's on_data they are the tail of what is being delivered,
   * maybe from conn->pending itself: handed back rather than copied into
   * the buffer they are read from. */
  if (n > 0 && conn->in_data)
    wstun__conn_keep_tail(conn, n);
  else if (n > 0 && wstun__buf_append(&conn->pending, leftover, n) != 0) {
    wstun__free(t);
    return WSTUN_ENOMEM;
  }
  uv_timer_init(loop, &t->timer);
  t->timer.data = t;
  t->last_rx = t->last_ctrl = uv_now(loop);
  wstun__conn_set_owner(conn, &tunnel_conn_cbs, t);
  wstun__conn_pause(conn);
  uv_timer_start(&t->timer, on_first_tick, 0, 0);
  *out = t;
  return 0;
}

/* ---- v2: streams over frames (docs/PROTOCOL.md section 7) ---------------
 *
 * One stream per exchange, both directions. Streams live in one list that
 * is also the order of send turns (a stream that sent a frame goes to the
 * back). A frame to send is copied whole into v2->fr and handed to wslay
 * as one message; its length is in its header, so it must be complete
 * before it starts, and the copy lets its stream go away meanwhile. A
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

static int v2_has_out(const wstun__tunnel *t) {
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
  if (ws_ensure(t) != 0) {
    tunnel_fail(t, WSTUN_ENOMEM);
    return -1;
  }
  struct wslay_event_msg msg = {WSLAY_BINARY_FRAME, b, (size_t)n};
  int rc = wslay_event_queue_msg(t->ws, &msg);
  if (rc == WSLAY_ERR_NOMEM) {
    tunnel_fail(t, WSTUN_ENOMEM);
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
    fail_msg(m, restartable && !m->started);
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
  pump(t); /* nothing from inside the receive path: it pumps after */
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
  if (v->fr_busy || v->fatal)
    return 0;
  wstun__list_foreach(l, &v->streams) {
    v2_stream *s = wstun__list_entry(l, v2_stream, link);
    wstun__outmsg *m = s->out;
    if (m == NULL)
      continue;
    size_t avail = wstun__buf_size(&m->buf), n;
    memset(&p->f, 0, sizeof(p->f));
    if (m->head_next < m->nheads && m->heads[m->head_next].at == m->taken) {
      if (avail < m->heads[m->head_next].len)
        continue; /* the producer is still writing the head */
      p->f.type = WSTUN__V2_HEAD;
      n = m->heads[m->head_next].len;
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

/* Copies the next frame into v2->fr. 1 if there is one, 0 if none, -1 on
 * ENOMEM. */
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
  wstun__buf_reset(&v->fr);
  if (wstun__buf_append(&v->fr, h, (size_t)hl) != 0 ||
      wstun__buf_append(&v->fr, wstun__buf_data(&m->buf), p.f.len) != 0)
    return -1;
  if (p.f.type == WSTUN__V2_DATA && p.f.len > 0) {
    (void)wstun__v2_credit_take(&s->credit, p.f.len);
    (void)wstun__v2_credit_take(&v->credit, p.f.len);
  }
  wstun__buf_consume(&m->buf, p.f.len);
  m->taken += p.f.len;
  m->started = 1;
  s->out_head = 1;
  if (p.f.type == WSTUN__V2_HEAD)
    m->head_next++;
  v->fr_busy = 1;
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

static ssize_t ws_read_frame(wslay_event_context_ptr ctx, uint8_t *buf,
                             size_t len,
                             const union wslay_event_msg_source *src, int *eof,
                             void *ud) {
  wstun__tunnel *t = ud;
  struct wstun__v2_state *v = t->v2;
  (void)ctx;
  (void)src;
  size_t n = wstun__buf_size(&v->fr);
  if (n > len)
    n = len;
  memcpy(buf, wstun__buf_data(&v->fr), n);
  wstun__buf_consume(&v->fr, n);
  if (wstun__buf_size(&v->fr) == 0) {
    *eof = 1;
    v->fr_busy = 0;
  }
  return (ssize_t)n;
}

/* pump's step: the close after a tunnel error's GOAWAY, or the next frame.
 * 0, or -1 on ENOMEM. */
static int v2_start(wstun__tunnel *t) {
  struct wstun__v2_state *v = t->v2;
  if (v->fatal) {
    if (!v->close_queued && wslay_event_get_queued_msg_count(t->ws) == 0) {
      v->close_queued = 1;
      wslay_event_queue_close(t->ws, WSLAY_CODE_PROTOCOL_ERROR, NULL, 0);
    }
    return 0;
  }
  int r = v2_next_frame(t);
  if (r <= 0)
    return r;
  struct wslay_event_fragmented_msg fm;
  memset(&fm, 0, sizeof(fm));
  fm.opcode = WSLAY_BINARY_FRAME;
  fm.source.data = t;
  fm.read_callback = ws_read_frame;
  return wslay_event_queue_fragmented_msg(t->ws, &fm) == 0 ? 0 : -1;
}

/* Whether pump should go round again (when the connection takes more). */
static int v2_more(wstun__tunnel *t) {
  struct wstun__v2_state *v = t->v2;
  v2_pick p;
  if (v->fatal)
    return !v->close_queued && wslay_event_get_queued_msg_count(t->ws) == 0;
  return v2_pick_frame(t, &p);
}

/* on_drain for producers whose buffer went below half the high mark. */
static void v2_drains(wstun__tunnel *t) {
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

static void v2_send(wstun__tunnel *t, uint32_t id, wstun__outmsg *m) {
  struct wstun__v2_state *v = t->v2;
  v2_stream *s = v2_find_open(t, id);
  const char *why = NULL;
  int restartable = 0;
  if (m->nheads == 0 || m->heads[0].at != 0 || m->heads[0].len == 0 ||
      m->heads[0].len > WSTUN__V2_MAX_HEAD) {
    why = "no head length, or a head too long";
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
    fail_msg(m, restartable);
    return;
  }
  s->out = m;
  pump(t);
}

static void v2_abandon(wstun__tunnel *t, wstun__outmsg *m) {
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

static void v2_msg_begin(wstun__tunnel *t) {
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
      tunnel_fail(t, WSTUN_ENOMEM);
      return;
    }
  }
  const char *why = NULL;
  if (s->in_end)
    why = data ? "DATA after END" : "HEAD after END";
  else if (!data && s->in_data)
    why = "HEAD after DATA";
  else if (!data && !s->local && s->in_head)
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

static void v2_chunk(wstun__tunnel *t, const uint8_t *d, size_t n) {
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
    s->head_given += (uint32_t)n; /* at most WSTUN__V2_MAX_HEAD per frame */
  if (t->cbs->on_msg_data(t, s->sink, d, n) != 0 && !t->closing &&
      (s = v->rx_stream) != NULL)
    v2_stream_error(t, s, WSTUN__V2_CANCEL, "its sink failed");
}

static void v2_msg_end(wstun__tunnel *t) {
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
static void v2_fail_sinks(wstun__tunnel *t) {
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
static void v2_fail_msgs(wstun__tunnel *t) {
  struct wstun__v2_state *v = t->v2;
  v->rx_stream = NULL;
  while (!wstun__list_empty(&v->streams)) {
    v2_stream *s = wstun__list_entry(v->streams.next, v2_stream, link);
    wstun__outmsg *m = s->out;
    wstun__list_remove(&s->link);
    wstun__free(s);
    if (m != NULL)
      fail_msg(m, !m->started);
  }
  v->nopen = 0;
}

static void v2_free(wstun__tunnel *t) {
  if (t->v2 == NULL)
    return;
  t->v2->rx_stream = NULL;
  while (!wstun__list_empty(&t->v2->streams)) {
    v2_stream *s = wstun__list_entry(t->v2->streams.next, v2_stream, link);
    wstun__list_remove(&s->link);
    wstun__free(s);
  }
  wstun__buf_free(&t->v2->fr);
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
  pump(t);
}

void wstun__tunnel_reset(wstun__tunnel *t, uint32_t id, uint32_t code) {
  uint8_t b[WSTUN__V2_FRAME_HEAD_MAX];
  if (t->v2 == NULL || t->closing)
    return;
  v2_stream *s = v2_find(t, id);
  if (s == NULL)
    return;
  if (!s->closed && (!s->local || s->out_head) &&
      v2_ctrl(t, b, wstun__v2_encode_reset(id, code, b)) != 0 && t->closing)
    return;
  wstun__outmsg *m = s->out;
  s->out = NULL;
  s->sink = NULL;
  if (m != NULL)
    wstun__outmsg_free(m);
  v2_stream_closed(t, s);
  pump(t);
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
  pump(t);
}

static int v2_busy(const wstun__tunnel *t) {
  return t->v2 != NULL && (t->v2->fr_busy || t->v2->fatal || v2_has_out(t));
}

/* The sink goes away: its stream's bytes are dropped from here on, and
 * what it held is given back. */
static void v2_forget(wstun__tunnel *t, void *sink) {
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
    pump(t);
    return;
  }
}
