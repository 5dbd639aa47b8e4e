/* wslay glue, after h2o's lib/websocket.c: the recv callback drains the
 * bytes of the current socket read and answers WOULDBLOCK when they are
 * gone (or when a sink paused us); the send callback appends to the
 * connection's output buffer and answers WOULDBLOCK above its high-water
 * mark; the connection's drain callback pumps again. Data frames bypass
 * wslay's event API (wstun__tunnel_send_data_frame): its fragmented messages
 * copy every byte into a 4 KiB buffer first and cut a frame, with a new mask
 * key, every 4 KiB. */
#include "wstun_tunnel.h"
#include "wstun_tunnel_int.h"
#include "wstun_v2.h"

#include <string.h>

#include "wstun/wstun.h"
#include "wstun_alloc.h"
#include "wstun_list.h"
#include "wstun_proto.h"

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
  if (n == 0 || n > have || m->nheads == WSTUN__OUTMSG_HEADS)
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
    wstun__tunnel_v2_abandon(t, m);
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
  if (t->conn == NULL || t->conn->closing) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  /* a frame begun is finished, so that a data frame never lands inside
   * it (its payload is at most 125 bytes, or a small v2 control frame) */
  if (!t->ws_mid_frame && wstun__conn_congested(t->conn)) {
    wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
    return -1;
  }
  if (wstun__buf_append(wstun__conn_outbuf(t->conn), data, len) != 0) {
    wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
    return -1;
  }
  t->ws_mid_frame = (flags & WSLAY_MSG_MORE) != 0;
  return (ssize_t)len;
}

static int ws_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len,
                      void *ud) {
  wstun__tunnel *t = ud;
  (void)ctx;
  return wstun__rng_mask(t->rng, buf, len) == 0 ? 0 : -1;
}

/* ---- data frames --------------------------------------------------------- */

/* wslay's frame API calls these: every byte is taken, so that a data frame
 * is always written whole and wslay's event context (control frames) finds
 * the output at a frame boundary. */
static ssize_t fr_send(const uint8_t *data, size_t len, int flags, void *ud) {
  wstun__tunnel *t = ud;
  (void)flags;
  if (t->conn == NULL || t->conn->closing ||
      wstun__buf_append(wstun__conn_outbuf(t->conn), data, len) != 0) {
    t->fr_failed = 1;
    return -1;
  }
  return (ssize_t)len;
}

static int fr_genmask(uint8_t *buf, size_t len, void *ud) {
  wstun__tunnel *t = ud;
  return wstun__rng_mask(t->rng, buf, len) == 0 ? 0 : -1;
}

int wstun__tunnel_send_data_frame(wstun__tunnel *t, int fin, int opcode,
                                  const uint8_t *a, size_t na, const uint8_t *b,
                                  size_t nb) {
  struct wslay_frame_iocb io;
  memset(&io, 0, sizeof(io));
  io.fin = (uint8_t)fin;
  io.opcode = (uint8_t)opcode;
  io.mask = (uint8_t)!t->is_server;
  io.payload_length = na + nb;
  io.data = a;
  io.data_length = na;
  if (wslay_frame_send(t->fr, &io) != (ssize_t)na || t->fr_failed)
    return -1;
  if (nb > 0) {
    io.data = b;
    io.data_length = nb;
    if (wslay_frame_send(t->fr, &io) != (ssize_t)nb || t->fr_failed)
      return -1;
  }
  return 0;
}

/* Whether data frames may go now: the connection takes them, and no close
 * went (nothing may follow it). */
int wstun__tunnel_data_ok(wstun__tunnel *t) {
  return !t->closing && !wstun__conn_congested(t->conn) &&
         !wslay_event_get_close_sent(t->ws);
}

/* v1: whether a frame could go (a message to start, or bytes of the one
 * being sent beyond the one held back). */
static int v1_more(const wstun__tunnel *t) {
  const wstun__outmsg *m = t->cur;
  if (m == NULL)
    return !wstun__list_empty(&t->queue);
  return m->finished || wstun__buf_size(&m->buf) > 1;
}

/* v1: the next frame of t->cur, as big as what is buffered up to
 * V1_FRAME_MAX (one backend read; the connection's output goes at most
 * that far above its high-water mark). 1 if one went, 0 if none can, -1
 * on failure. */
#define V1_FRAME_MAX (64 * 1024)

static int v1_send_frame(wstun__tunnel *t) {
  wstun__outmsg *m = t->cur;
  if (m == NULL || !wstun__tunnel_data_ok(t))
    return 0;
  /* One byte is held back until the producer finishes, so that the final
   * frame has something to carry; the head waits with it, so a message
   * counts as started only once some of its own bytes go. */
  size_t avail = wstun__buf_size(&m->buf) - (m->finished ? 0 : 1);
  if (!m->finished && wstun__buf_size(&m->buf) <= 1)
    return 0;
  if (avail > V1_FRAME_MAX)
    avail = V1_FRAME_MAX;
  int fin = m->finished && avail == wstun__buf_size(&m->buf);
  int opcode = m->started ? WSLAY_CONTINUATION_FRAME : WSLAY_BINARY_FRAME;
  /* the format's head goes first, in the first frame */
  if (wstun__tunnel_send_data_frame(t, fin, opcode, m->head + m->head_off,
                                    (size_t)(m->head_len - m->head_off),
                                    wstun__buf_data(&m->buf), avail) != 0)
    return -1;
  m->head_off = m->head_len;
  wstun__buf_consume(&m->buf, avail);
  m->taken += avail;
  m->started = 1;
  if (fin) {
    t->cur = NULL;
    wstun__list_push_back(&t->sent, &m->link);
  }
  return 1;
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
      wstun__tunnel_v2_msg_begin(t);
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
    wstun__tunnel_v2_chunk(t, a->data, a->data_length);
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
      wstun__tunnel_v2_msg_end(t);
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

int wstun__tunnel_ws_ensure(wstun__tunnel *t) {
  static const struct wslay_event_callbacks wcbs = {
      ws_recv,        ws_send,      ws_genmask, ws_frame_start,
      ws_frame_chunk, ws_frame_end, ws_msg};
  static const struct wslay_frame_callbacks fcbs = {fr_send, NULL, fr_genmask};
  if (t->ws != NULL)
    return 0;
  int rc = t->is_server ? wslay_event_context_server_init(&t->ws, &wcbs, t)
                        : wslay_event_context_client_init(&t->ws, &wcbs, t);
  if (rc != 0) {
    t->ws = NULL;
    return WSTUN_ENOMEM;
  }
  if (wslay_frame_context_init(&t->fr, &fcbs, t) != 0) {
    wslay_event_context_free(t->ws);
    t->ws = NULL;
    t->fr = NULL;
    return WSTUN_ENOMEM;
  }
  t->fr_failed = t->ws_mid_frame = 0;
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
         !wstun__tunnel_v2_busy(t) && t->rx_fed == t->rx_framed &&
         wslay_event_get_read_enabled(t->ws) &&
         wslay_event_get_write_enabled(t->ws) && !wslay_event_want_write(t->ws);
}

static void ws_free(wstun__tunnel *t) {
  wslay_event_context_free(t->ws);
  t->ws = NULL;
  wslay_frame_context_free(t->fr);
  t->fr = NULL;
}

static void release_if_quiescent(wstun__tunnel *t) {
  if (!quiescent(t))
    return;
  ws_free(t);
}

/* ---- pumping ------------------------------------------------------------ */

void wstun__tunnel_pump(wstun__tunnel *t) {
  /* inside wslay_event_recv (a sink sending from a callback), wslay must
   * not be entered again: the receive path pumps once it returns */
  if (t->pumping || t->closing || t->in_rx)
    return;
  if (t->ws == NULL && wstun__list_empty(&t->queue) &&
      !(t->v2 != NULL && wstun__tunnel_v2_has_out(t)))
    return; /* nothing to send, and wslay holds nothing */
  if (wstun__tunnel_ws_ensure(t) != 0) {
    wstun__tunnel_fail(t, WSTUN_ENOMEM);
    return;
  }
  t->pumping = 1;
  for (;;) {
    if (t->v2 != NULL) {
      if (wstun__tunnel_v2_start(t) != 0) {
        t->pumping = 0;
        wstun__tunnel_fail(t, t->err ? t->err : WSTUN_ENOMEM);
        return;
      }
    } else {
      if (t->cur == NULL && !wstun__list_empty(&t->queue)) {
        wstun__outmsg *m =
            wstun__list_entry(t->queue.next, wstun__outmsg, link);
        wstun__list_remove(&m->link);
        /* v1 ids are four hex digits */
        m->head_len = (uint8_t)t->proto->write_head((uint16_t)m->id, m->head);
        m->head_off = 0;
        t->cur = m;
        t->carried = 1;
      }
      if (v1_send_frame(t) < 0) {
        t->pumping = 0;
        wstun__tunnel_fail(t, WSTUN_ECLOSED);
        return;
      }
    }
    /* control frames: pongs, v2's WINDOW, RESET and GOAWAY, the close */
    if (wslay_event_send(t->ws) != 0) {
      t->pumping = 0;
      wstun__tunnel_fail(t, WSTUN_ECLOSED);
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
      wstun__tunnel_v2_drains(t);
    } else if (c && c->paused_src &&
               wstun__buf_size(&c->buf) < WSTUN__PIPE_HIGH / 2) {
      c->paused_src = 0;
      if (c->owner && c->cbs->on_drain)
        c->cbs->on_drain(c->owner, c);
    }
    if (t->closing)
      break;
    if ((t->v2 != NULL ? wstun__tunnel_v2_more(t) : v1_more(t)) &&
        wstun__tunnel_data_ok(t))
      continue;
    break;
  }
  t->pumping = 0;
  if (!t->closing) {
    wstun__conn_flush(t->conn);
    if (wslay_event_get_close_sent(t->ws))
      wstun__tunnel_fail(t, t->err ? t->err : WSTUN_ECLOSED);
  }
}

void wstun__tunnel_kick(wstun__tunnel *t) {
  wstun__tunnel_pump(t);
}

int wstun__tunnel_set_proto(wstun__tunnel *t, const wstun__proto *proto) {
  if (proto->multiplexed && t->v2 == NULL && wstun__tunnel_v2_init(t) != 0)
    return WSTUN_ENOMEM;
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
    wstun__tunnel_v2_send(t, id, m);
    return;
  }
  wstun__list_push_back(&t->queue, &m->link);
  wstun__tunnel_pump(t);
}

size_t wstun__tunnel_queued(const wstun__tunnel *t) {
  if (t->v2 != NULL)
    return wstun__tunnel_v2_queued(t);
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
    wstun__tunnel_pump(t);
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
  if (wstun__tunnel_ws_ensure(t) != 0) {
    wstun__tunnel_fail(t, WSTUN_ENOMEM);
    return len;
  }
  t->in = data;
  t->in_len = len;
  int rc = rx_run(t);
  size_t used = len - t->in_len;
  t->in = NULL;
  t->in_len = 0;
  if (rc != 0) {
    wstun__tunnel_fail(t, WSTUN_EPROTO);
    return len;
  }
  if (!t->closing && !wslay_event_want_read(t->ws) &&
      !wslay_event_want_write(t->ws))
    wstun__tunnel_fail(t, t->err ? t->err : WSTUN_ECLOSED);
  /* an idle tunnel's ping or pong: let the context go at once (a busy
   * tunnel keeps it until a tick finds it quiescent) */
  if (!t->carried)
    release_if_quiescent(t);
  return t->closing ? len : used;
}

static void tun_on_end(wstun__conn *c, int err) {
  wstun__tunnel *t = c->owner;
  (void)err;
  wstun__tunnel_fail(t, WSTUN_ECLOSED);
}

static void rx_restart(wstun__tunnel *t);

static void tun_on_drain(wstun__conn *c) {
  wstun__tunnel *t = c->owner;
  wstun__tunnel_pump(t);
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
    ws_free(t);
  wstun__tunnel_v2_free(t);
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

void wstun__tunnel_fail_msg(wstun__outmsg *m, int restartable) {
  m->queued = 0;
  m->tunnel = NULL;
  if (m->owner && m->cbs->on_failed)
    m->cbs->on_failed(m->owner, m, restartable);
  else
    wstun__outmsg_free(m);
}

void wstun__tunnel_fail(wstun__tunnel *t, int err) {
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
    wstun__tunnel_v2_fail_sinks(t);
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
    wstun__tunnel_fail_msg(m, !m->started);
  }
  while (!wstun__list_empty(&t->queue)) {
    wstun__outmsg *m = wstun__list_entry(t->queue.next, wstun__outmsg, link);
    wstun__list_remove(&m->link);
    wstun__tunnel_fail_msg(m, !m->started);
  }
  if (t->v2 != NULL)
    wstun__tunnel_v2_fail_msgs(t);
  /* Done with wslay (a close frame is already in the conn's buffer). Freed
   * now, so that closing many idle tunnels at once does not hold a context
   * for each until the handles close; not from inside wslay's own call. */
  if (t->ws && !t->in_rx)
    ws_free(t);
  /* the timer's close completes on a later loop turn: never freed here */
  wstun__closer_done(&t->closer);
}

void wstun__tunnel_close(wstun__tunnel *t, int err) {
  if (t->closing)
    return;
  if (t->conn && !t->conn->closing && wstun__tunnel_ws_ensure(t) == 0) {
    wslay_event_queue_close(t->ws, WSLAY_CODE_NORMAL_CLOSURE, NULL, 0);
    if (!t->in_rx) /* wslay is not re-entrant: no close frame then */
      wslay_event_send(t->ws);
  }
  wstun__tunnel_fail(t, err);
}

/* `*since` moved on by `by`, never past `now`. */
static void forgive(uint64_t *since, uint64_t by, uint64_t now) {
  *since = now - *since > by ? *since + by : now;
}

static void on_tick(uv_timer_t *timer) {
  wstun__tunnel *t = timer->data;
  uint64_t now = uv_now(timer->loop);
  /* A late tick means that this process did not run (stopped, a paused
   * VM, a loop held up elsewhere): what the peer sent meanwhile waits in
   * the socket, read only after the timers of this loop turn. The time we
   * were away is not the peer's silence. */
  uint64_t period = uv_timer_get_repeat(timer);
  uint64_t late = now - t->last_tick > period ? now - t->last_tick - period : 0;
  t->last_tick = now;
  forgive(&t->last_rx, late, now);
  forgive(&t->last_ctrl, late, now);
  forgive(&t->out_since, late, now);
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
    wstun__tunnel_fail(t, WSTUN_ETIMEDOUT);
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
    wstun__tunnel_fail(t, WSTUN_ETIMEDOUT);
    return;
  }
  t->carried = 0;
  if (!t->ping_interval_ms) {
    release_if_quiescent(t);
  } else {
    /* the pong lets the context go again (tun_on_data) */
    if (wstun__tunnel_ws_ensure(t) != 0) {
      wstun__tunnel_fail(t, WSTUN_ENOMEM);
      return;
    }
    struct wslay_event_msg ping = {WSLAY_PING, (const uint8_t *)"wstun", 5};
    wslay_event_queue_msg(t->ws, &ping);
    wstun__tunnel_pump(t);
  }
}

static void on_first_tick(uv_timer_t *timer) {
  wstun__tunnel *t = timer->data;
  uint64_t tick =
      t->ping_interval_ms ? t->ping_interval_ms : t->dead_after_ms / 4;
  if (tick < 250)
    tick = 250;
  t->last_tick = uv_now(timer->loop);
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
    wstun__tunnel_v2_forget(t, sink);
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
      wstun__tunnel_fail(t, WSTUN_EPROTO);
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
