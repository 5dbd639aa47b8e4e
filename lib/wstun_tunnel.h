/* One tunnel connection: a WebSocket (wslay) over a wstun__conn, carrying
 * tunnel messages in both directions, shared by server and client. Each
 * message belongs to one exchange, named by its id; the tunnel's format
 * (wstun__proto, v1 unless set otherwise) puts the id on the wire, so
 * producers and sinks see only (id, bytes, end).
 *
 * Outgoing messages are wstun__outmsg byte pipes: a producer appends to
 * msg->buf and calls wstun__tunnel_kick(); the tunnel sends them one after
 * the other as fragmented WebSocket messages, so a message never has to be
 * held whole. A producer hands a message over only once it is complete or
 * big enough to stream (see WSTUN__STREAM_AT): small messages never block
 * the tunnel while their producer is slow.
 *
 * Incoming messages are streamed to a sink the owner picks per message id;
 * a sink that cannot keep up pauses the whole tunnel (messages are not
 * interleaved on the wire, so nothing else could be read anyway).
 *
 * With v2 (wstun__tunnel_set_proto(t, &wstun__proto_v2), docs/PROTOCOL.md
 * section 7) a message is one direction of a stream, and many streams are
 * in flight at once. The producer marks the end of the HTTP head in its
 * message (wstun__outmsg_set_head_len): that part goes as one HEAD frame,
 * the rest as DATA frames of at most 16 KiB, one WebSocket message each,
 * taken round-robin from the streams that have bytes and credit. Each
 * stream has its own send credit and the tunnel one more (the peer's
 * WINDOW frames); a stream without credit waits and the others go on.
 * Incoming HEAD and DATA payload reaches the sink as with v1 (on_msg_begin
 * at a direction's first HEAD, on_msg_data, on_msg_end at END or when the
 * stream dies). Flow control replaces pausing: every DATA byte handed to
 * a sink counts against its stream's window (and the tunnel's) until the
 * sink reports it gone with wstun__tunnel_consumed(), so a sink that stops
 * consuming stops only its stream, after at most one window (1 MiB) more
 * bytes; in v2 tunnel_pause_rx and tunnel_resume_rx do nothing. Stream
 * ids: the server opens odd ids, increasing (tunnel_send on a new id opens
 * the stream); the client answers on the ids it was sent. */
/*
 * Re-entrancy contract. Every callback runs on the loop's thread, either
 * from the loop (a socket read, a drained write, the liveness timer) or
 * synchronously inside one of the calls below:
 *
 *   call                  may call back, before it returns
 *   --------------------  ------------------------------------------------
 *   tunnel_start          nothing (leftover bytes are parsed next turn)
 *   tunnel_set_proto      nothing
 *   tunnel_send           outmsg on_failed (the tunnel is closing: m is
 *                         handed straight back), on_sent/on_drain of
 *                         earlier messages, on_closed
 *   tunnel_kick           on_sent, on_drain, on_closed, on_failed
 *   tunnel_resume_rx      on_msg_begin/data/end, on_pong, on_sent,
 *                         on_drain, on_closed, on_failed (bytes held back
 *                         are parsed at once) -- but nothing when called
 *                         from inside on_msg_* (the running parse goes on)
 *   tunnel_close          on_msg_end(complete = 0), on_closed, on_sent,
 *                         on_failed
 *   tunnel_pause_rx, tunnel_forget_sink, tunnel_queued, outmsg_full,
 *   outmsg_set_head_len, tunnel_consumed, tunnel_reset, tunnel_goaway:
 *                         nothing (v2: the frames they make go out at once
 *                         when not inside a callback, else when it returns)
 *   outmsg_abandon        as tunnel_kick when m is being sent (it is
 *                         ended there); otherwise nothing
 *
 * Inside on_msg_begin/data/end (wslay is parsing, not re-entrant) a sink
 * may send, kick, pause, resume, forget itself and abandon messages: the
 * sending is deferred until the parse returns. It must not close the
 * tunnel; it ends its message by returning nonzero from on_msg_data.
 * Inside on_closed the owner unlinks the tunnel; every call on it after
 * that is harmless (send hands the message back, the others do nothing),
 * and its memory stays valid until on_freed, on a later loop turn. Inside
 * outmsg callbacks the owner may free its own state and send other
 * messages; the message itself is the tunnel's (on_sent, on_drain) or
 * back with the owner (on_failed).
 *
 * v2 adds: the peer's RESET calls on_reset, then the sink's on_msg_end(0)
 * and the stream's message's on_failed(restartable 0); a GOAWAY calls
 * on_goaway, then on_failed(restartable 1) for every message on a stream
 * above its last id. These come from the receive path, like on_msg_*. A
 * stream error we detect (PROTOCOL.md 7.9) ends the stream the same way,
 * without on_reset; a tunnel error closes the tunnel (GOAWAY, close 1002,
 * on_closed with WSTUN_EPROTO).
 */
#ifndef WSTUN_TUNNEL_H
#define WSTUN_TUNNEL_H

#include <stdint.h>
#include <uv.h>
#include <wslay/wslay.h>

#include "wstun_buf.h"
#include "wstun_closer.h"
#include "wstun_list.h"
#include "wstun_conn.h"
#include "wstun_log.h"
#include "wstun_proto.h"
#include "wstun_rng.h"

/* A message is handed to the tunnel once complete or this big. */
#define WSTUN__STREAM_AT (64 * 1024)
/* A producer pauses its source above this many buffered bytes. */
#define WSTUN__PIPE_HIGH (256 * 1024)
/* Heads one v2 message may carry: 100 Continue, 103 Early Hints, the
 * final one, and one spare. */
#define WSTUN__OUTMSG_HEADS 4

typedef struct wstun__tunnel wstun__tunnel;
typedef struct wstun__outmsg wstun__outmsg;

typedef struct wstun__outmsg_cbs {
  /* Every byte was handed to the socket layer. The tunnel frees msg right
   * after this returns. */
  void (*on_sent)(void *owner, wstun__outmsg *msg);
  /* The buffer fell below half of WSTUN__PIPE_HIGH: resume the source. */
  void (*on_drain)(void *owner, wstun__outmsg *msg);
  /* The tunnel died with msg queued. `restartable` is 1 when no byte of it
   * was sent (it may be re-sent elsewhere). Ownership of msg returns to the
   * owner. */
  void (*on_failed)(void *owner, wstun__outmsg *msg, int restartable);
} wstun__outmsg_cbs;

struct wstun__outmsg {
  wstun__buf buf; /* bytes not yet taken by the tunnel */
  uint64_t taken; /* bytes of buf the tunnel took so far */
  uint32_t id;    /* set by wstun__tunnel_send */
  /* v2: the HTTP heads in the message, each sent as one HEAD frame (or
   * several for one over WSTUN__V2_MAX_HEAD, PROTOCOL.md 7.2): the
   * first at offset 0, then interim (1xx) ones up to the final head, as
   * offsets from the message's first byte; v1 ignores them */
  struct {
    uint64_t at;
    uint32_t len;
  } heads[WSTUN__OUTMSG_HEADS];
  uint8_t nheads, head_next; /* heads marked / sent */
  /* the format's head, written when the tunnel starts sending */
  uint8_t head[WSTUN__PROTO_HEAD_MAX];
  uint8_t head_len, head_off;
  unsigned finished : 1, queued : 1, started : 1, paused_src : 1;
  wstun__tunnel *tunnel;
  wstun__list link; /* in tunnel->queue or tunnel->sent */
  const wstun__outmsg_cbs *cbs;
  void *owner; /* NULL once the owner gave up on it */
};

wstun__outmsg *wstun__outmsg_new(const wstun__outmsg_cbs *cbs, void *owner);
void wstun__outmsg_free(wstun__outmsg *m);
/* The owner no longer wants it: freed now if not queued; if the tunnel is
 * sending it, it is ended early with what it holds (the receiver sees an
 * incomplete HTTP message) and freed when sent. */
void wstun__outmsg_abandon(wstun__outmsg *m);
/* 1 when the producer should pause (buffer above WSTUN__PIPE_HIGH). */
int wstun__outmsg_full(wstun__outmsg *m);
/* v2: the message starts with an HTTP head of n bytes (n >= 1), sent as
 * the stream's HEAD frame once all n are in buf (a head over
 * WSTUN__V2_MAX_HEAD as several HEAD frames, PROTOCOL.md 7.2). Must be set
 * before wstun__tunnel_send on a v2 tunnel (a message without it is handed back
 * through on_failed); v1 ignores it. */
static inline void wstun__outmsg_set_head_len(wstun__outmsg *m, uint32_t n) {
  m->heads[0].at = 0;
  m->heads[0].len = n;
  m->nheads = 1;
  m->head_next = 0;
}
/* v2: the last n bytes appended to buf are one more head (an interim 1xx
 * head was the first; this is the next interim or the final one), sent as
 * its own HEAD frame. Call right after appending them and before any body
 * byte, without kicking the tunnel in between. 0, or WSTUN_EINVAL
 * (nothing changed): n is 0 or more than buf holds, it overlaps the head
 * before, or WSTUN__OUTMSG_HEADS are marked already. */
int wstun__outmsg_add_head(wstun__outmsg *m, uint32_t n);

typedef struct wstun__tunnel_cbs {
  /* A message with this id begins. Return the sink for its bytes, or NULL
   * to drop the message (v2: the stream is reset, REFUSED when the peer
   * opened it, else CANCEL). */
  void *(*on_msg_begin)(wstun__tunnel *t, uint32_t id);
  /* Bytes of the message (after the format's head). Nonzero drops the
   * rest (v2: resets the stream, CANCEL); on_msg_end(complete = 0)
   * follows unless the sink forgot itself. */
  int (*on_msg_data)(wstun__tunnel *t, void *sink, const uint8_t *data,
                     size_t len);
  /* The message ended (complete = 0 when the tunnel died mid-message). */
  void (*on_msg_end)(wstun__tunnel *t, void *sink, int complete);
  /* The tunnel is dead (err: WSTUN_ECLOSED, WSTUN_ETIMEDOUT, WSTUN_EPROTO
   * …): drop every pointer to it. Fires first, inside whatever call
   * detected the end; queued messages are handed back through on_failed
   * right after it. The memory is released later, by the tunnel itself. */
  void (*on_closed)(wstun__tunnel *t, int err);
  /* The tunnel's memory is gone (after on_closed); owner is the pointer
   * given at start. May be NULL. */
  void (*on_freed)(void *owner);
  /* A pong arrived (the answer to our ping). May be NULL. */
  void (*on_pong)(wstun__tunnel *t);
  /* v2: the peer reset stream `id` with `code` (enum wstun__v2_code; an
   * unknown one means INTERNAL_ERROR). The stream's sink and message, if
   * any, are ended right after. May be NULL. */
  void (*on_reset)(wstun__tunnel *t, uint32_t id, uint32_t code);
  /* v2: the peer sends GOAWAY: streams above `last` were not processed
   * (their messages come back restartable right after) and no new ones
   * may be opened; a code other than NO_ERROR means the peer is closing
   * the tunnel for an error. May be NULL. */
  void (*on_goaway)(wstun__tunnel *t, uint32_t last, uint32_t code);
} wstun__tunnel_cbs;

struct wstun__v2_state; /* the stream engine, wstun_tunnel.c */

struct wstun__tunnel {
  wstun__conn *conn;
  /* Made on demand and dropped while the tunnel is quiescent (see
   * release_if_quiescent): its two 4 KiB buffers are most of the memory of
   * an idle tunnel. */
  wslay_event_context_ptr ws;
  /* Data frames go out through wslay's frame API, straight from the
   * message's buffer, each written whole (wstun__tunnel_send_data_frame); made
   * and dropped with ws, which keeps control frames and the close. */
  wslay_frame_context_ptr fr;
  int fr_failed;    /* the connection refused a data frame's bytes */
  int ws_mid_frame; /* wslay's context wrote a frame's header, not its rest */
  uv_timer_t timer;
  int is_server;
  wstun__rng *rng;
  const wstun__logger *log;
  const wstun__tunnel_cbs *cbs;
  void *owner;
  const wstun__proto *proto;  /* the message format, v1 by default */
  struct wstun__v2_state *v2; /* with a multiplexed format, else NULL */
  /* outgoing */
  wstun__list queue;  /* ready, waiting their turn */
  wstun__outmsg *cur; /* being sent (v1) */
  wstun__list sent;   /* finished, owners to be told */
  /* incoming */
  const uint8_t *in;
  size_t in_len;
  int in_msg, frame_ctrl, frame_fin;
  wstun__proto_rx in_head; /* the head of the message coming in */
  void *sink;
  int drop;
  int rx_paused;
  int tx_held; /* input held back: wslay owes the peer too much (pongs) */
  int in_rx;   /* inside wslay_event_recv: wslay must not be re-entered */
  /* bytes handed to wslay, and the size of the whole frames it parsed out
   * of them: equal when wslay holds no part of a frame */
  uint64_t rx_fed, rx_framed, frame_size;
  int carried; /* a data message went either way since the last tick */
  /* liveness */
  uint64_t last_rx;   /* any byte */
  uint64_t last_ctrl; /* a control frame (pong, ping, close) */
  uint64_t ping_interval_ms, dead_after_ms;
  /* our output's progress (wstun__conn_progress) when last seen growing */
  uint64_t out_mark, out_since;
  uint64_t last_tick; /* when the tick last ran */
  int closing, err, pumping;
  wstun__closer closer; /* the timer and the conn, once closing */
};

/* Takes over `conn` (already upgraded) and starts reading; `leftover` are
 * bytes that came after the handshake. 0 or WSTUN_ENOMEM; on error the
 * caller still owns conn. */
int wstun__tunnel_start(wstun__tunnel **out, uv_loop_t *loop, wstun__conn *conn,
                        int is_server, wstun__rng *rng,
                        const wstun__logger *log, uint64_t ping_interval_ms,
                        uint64_t dead_after_ms, const wstun__tunnel_cbs *cbs,
                        void *owner, const uint8_t *leftover, size_t n);

/* Sets the message format (before any message is sent or received; the
 * handshake chose it). 0, or WSTUN_ENOMEM (the format is unchanged). */
int wstun__tunnel_set_proto(wstun__tunnel *t, const wstun__proto *proto);
/* Hands a ready message of exchange `id` over; the tunnel owns it until
 * one of its callbacks hands it back or it is sent. v1: id < 0x10000. v2:
 * a new odd id above the last opens a stream (server only); otherwise id
 * names an open stream that has no message of ours yet (the response).
 * Anything else, a stream above the peer's GOAWAY, or no head length
 * hands m back through on_failed (restartable when it may go elsewhere). */
void wstun__tunnel_send(wstun__tunnel *t, uint32_t id, wstun__outmsg *m);
/* The producer of the message being sent added bytes or finished. */
void wstun__tunnel_kick(wstun__tunnel *t);
/* A sink asks for no more input for now / resumes it. */
void wstun__tunnel_pause_rx(wstun__tunnel *t);
void wstun__tunnel_resume_rx(wstun__tunnel *t);
/* A sink is going away: drop the rest of its message if it is the one
 * being received. */
void wstun__tunnel_forget_sink(wstun__tunnel *t, void *sink);
/* Sends a close frame and closes; on_closed fires later. */
void wstun__tunnel_close(wstun__tunnel *t, int err);
/* Number of messages queued (not yet started). */
size_t wstun__tunnel_queued(const wstun__tunnel *t);

/* ---- v2 only (each is a no-op on a v1 tunnel) ---------------------------- */

/* 1 when t runs the v2 stream engine (flow control replaces pausing). */
static inline int wstun__tunnel_is_v2(const wstun__tunnel *t) {
  return t != NULL && t->v2 != NULL;
}

/* The sink of stream `id` is done with n more of the bytes on_msg_data
 * gave it (written on, or dropped), counted in order, head bytes included
 * (they carry no credit and are taken off first): the DATA bytes' credit
 * goes back to the peer,
 * with a WINDOW frame for the stream and one for the tunnel once half of
 * either window waits to be given back. After on_msg_end(complete = 1)
 * the bytes not yet consumed still hold credit until consumed or until
 * the sink is forgotten (tunnel_forget_sink gives all of it back). */
void wstun__tunnel_consumed(wstun__tunnel *t, uint32_t id, size_t n);
/* The owner gives up on stream `id`: RESET with `code` (enum
 * wstun__v2_code) goes to the peer if the stream was opened on the wire
 * and is not over both ways (an owner may call this to let go of a
 * complete stream: no frame then),
 * the stream's message is freed by the tunnel (the owner must not touch
 * it again, as after outmsg_abandon), and its sink is forgotten: no
 * callback for the stream comes after this. */
void wstun__tunnel_reset(wstun__tunnel *t, uint32_t id, uint32_t code);
/* Sends GOAWAY: last stream id = the highest the server opened (from the
 * server) or the client accepted (from the client); no stream is opened
 * after it (server: tunnel_send on a new id fails restartable; client:
 * the peer's new streams are refused with RESET REFUSED). A code other
 * than NO_ERROR is a tunnel error: the close (1002) follows the GOAWAY and
 * on_closed fires with WSTUN_EPROTO. */
void wstun__tunnel_goaway(wstun__tunnel *t, uint32_t code);

#endif
