/* The v2 engine of wstun__tunnel (PROTOCOL.md section 7) receiving: v2
 * frames, each wrapped by the harness in one binary WebSocket message (in
 * one to four fragments, masked when the tunnel is the server), into the
 * stream engine (stream states, windows, RESET, WINDOW, GOAWAY, stream and
 * tunnel errors) and sinks that consume, hold, fail, reset their stream
 * and go away; between messages the owner consumes, resets, forgets,
 * sends GOAWAY and sends messages. As in fuzz_tunnel_frames.c there are no
 * sockets (fuzz_tunnel_common.h): what the tunnel writes piles up in its
 * connection's output buffer.
 *
 * Checks: callbacks only for live sinks, each sink ended exactly once
 * unless its owner forgot or reset it, nothing after on_closed, on_freed
 * always comes, nothing left on the loop.
 *
 * Input: byte 0 flags (FL_*), byte 1 split seed, then records: an op
 * byte; below 0xf0 a message: 2-byte length, its bytes (a v2 frame, or
 * not), in (op & 3) + 1 fragments; 0xf0 consumed (sink index, 3-byte
 * count), 0xf1 reset (4-byte id, code), 0xf2 goaway (code), 0xf3 forget
 * (sink index), 0xf4 send (4-byte id, finished bit), 0xf5 close, 0xf6 a
 * HEAD of the largest length (4-byte id, flags byte; its payload 'h's), so
 * that heads continued over several frames (7.2) come in, 0xf7 send a
 * message whose head spans three HEAD frames (4-byte id). */
#include "fuzz_util.h"
#include "wstun_proto.h"
#include "wstun_tunnel.h"
#include "wstun_v2.h"

enum {
  FL_SERVER = 0x01,   /* server side: opens streams 1, 3, 5 first */
  FL_HOLD = 0x02,     /* sinks consume only when an op says so */
  FL_FAILDATA = 0x04, /* on_msg_data fails on a chunk containing '!' */
  FL_FORGET = 0x08,   /* sinks of ids 3 mod 4 go away after a chunk */
  FL_RESET = 0x10,    /* a sink resets its stream on a chunk with '#' */
  FL_SEND = 0x20      /* the client answers each request at its end */
};

#define MAX_SINKS 2048

typedef struct sink {
  int state; /* 1 open, 2 ended, 3 forgotten or reset by its owner */
  uint32_t id;
  size_t given, consumed;
} sink;

typedef struct env {
  uint8_t flags;
  wstun__tunnel *t; /* NULL after on_closed */
  int closed, freed;
  sink *sinks;
  size_t nsinks;
  size_t held; /* given to sinks and not consumed, all streams */
} env;

/* after env and sink: the common part uses them */
#include "fuzz_tunnel_common.h"

static sink *open_sink(env *e, uint32_t id) {
  for (size_t i = e->nsinks; i-- > 0;)
    if (e->sinks[i].id == id && e->sinks[i].state == 1)
      return &e->sinks[i];
  return NULL;
}

static void *on_msg_begin(wstun__tunnel *t, uint32_t id) {
  env *e = t->owner;
  FZ_CHECK(!e->closed, "on_msg_begin after on_closed");
  FZ_CHECK(id != 0 && id <= WSTUN__V2_ID_MAX, "stream id %u", (unsigned)id);
  FZ_CHECK(open_sink(e, id) == NULL, "a second sink for stream %u",
           (unsigned)id);
  return fzt_new_sink(e, id);
}

static void consume(env *e, sink *s, size_t n) {
  if (n > s->given - s->consumed)
    n = s->given - s->consumed;
  s->consumed += n;
  e->held -= n;
  wstun__tunnel_consumed(e->t, s->id, n);
}

static int on_msg_data(wstun__tunnel *t, void *sk, const uint8_t *d, size_t n) {
  env *e = t->owner;
  sink *s = sk;
  fzt_check_data(e, s, n);
  s->given += n;
  e->held += n;
  if ((e->flags & FL_FAILDATA) && memchr(d, '!', n) != NULL)
    return 1;
  if ((e->flags & FL_RESET) && memchr(d, '#', n) != NULL) {
    e->held -= s->given - s->consumed;
    s->state = 3;
    wstun__tunnel_reset(t, s->id, WSTUN__V2_CANCEL);
    return 0;
  }
  if ((e->flags & FL_FORGET) && (s->id % 4) == 3) {
    e->held -= s->given - s->consumed;
    s->state = 3;
    wstun__tunnel_forget_sink(t, s);
    return 0;
  }
  if (!(e->flags & FL_HOLD))
    consume(e, s, n);
  return 0;
}

static void out_sent(void *owner, wstun__outmsg *m) {
  (void)owner;
  (void)m;
}
static void out_drain(void *owner, wstun__outmsg *m) {
  (void)owner;
  (void)m;
}
static void out_failed(void *owner, wstun__outmsg *m, int restartable) {
  (void)owner;
  (void)restartable;
  wstun__outmsg_free(m);
}
static const wstun__outmsg_cbs ocbs = {out_sent, out_drain, out_failed};

static void send_on(env *e, uint32_t id, const char *head, const char *body,
                    int finished) {
  wstun__outmsg *m = wstun__outmsg_new(&ocbs, e);
  if (m == NULL)
    abort();
  if (wstun__buf_append_str(&m->buf, head) != 0 ||
      wstun__buf_append_str(&m->buf, body) != 0)
    abort();
  wstun__outmsg_set_head_len(m, (uint32_t)strlen(head));
  m->finished = finished ? 1u : 0u;
  wstun__tunnel_send(e->t, id, m);
}

static void on_msg_end(wstun__tunnel *t, void *sk, int complete) {
  env *e = t->owner;
  sink *s = sk;
  FZ_CHECK(s != NULL && s->state == 1, "on_msg_end for a sink in state %d",
           s ? s->state : -1);
  FZ_CHECK(complete == 0 || complete == 1, "complete = %d", complete);
  s->state = 2;
  if (!complete) {
    /* the stream died: nothing of it is held any more */
    e->held -= s->given - s->consumed;
    s->consumed = s->given;
  }
  if (complete && (e->flags & FL_SEND) && !(e->flags & FL_SERVER) && !e->closed)
    send_on(e, s->id, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", "hi", 1);
}

static void on_reset(wstun__tunnel *t, uint32_t id, uint32_t code) {
  env *e = t->owner;
  (void)code;
  FZ_CHECK(!e->closed, "on_reset after on_closed");
  FZ_CHECK(id != 0, "on_reset of stream 0");
}

static void on_goaway(wstun__tunnel *t, uint32_t last, uint32_t code) {
  env *e = t->owner;
  (void)code;
  FZ_CHECK(!e->closed, "on_goaway after on_closed");
  FZ_CHECK(last <= WSTUN__V2_ID_MAX, "GOAWAY last %u", (unsigned)last);
}

static const wstun__tunnel_cbs tcbs = {.on_msg_begin = on_msg_begin,
                                       .on_msg_data = on_msg_data,
                                       .on_msg_end = on_msg_end,
                                       .on_closed = fzt_on_closed,
                                       .on_freed = fzt_on_freed,
                                       .on_reset = on_reset,
                                       .on_goaway = on_goaway};

/* Feeds bytes in data-derived chunks while the tunnel takes them. */
static void feed(env *e, wstun__conn *conn, fz_split *sp, const uint8_t *d,
                 size_t n) {
  while (n > 0 && e->t != NULL && !conn->closing) {
    size_t chunk = fz_split_next(sp, n);
    size_t used = fzt_deliver(conn, d, chunk);
    d += used;
    n -= used;
    if (used == 0)
      return; /* held back (output backlog): the rest is lost */
  }
}

/* One WebSocket message of p in k fragments (masked, zero key, when the
 * tunnel is the server). */
static void ws_message(wstun__buf *out, const uint8_t *p, size_t n, int k,
                       int masked) {
  for (int i = 0; i < k; i++) {
    size_t from = n * (size_t)i / (size_t)k,
           to = n * (size_t)(i + 1) / (size_t)k;
    size_t len = to - from;
    uint8_t h[14];
    size_t hl = 2;
    h[0] = (uint8_t)((i == k - 1 ? 0x80 : 0) | (i == 0 ? 0x2 : 0x0));
    if (len < 126) {
      h[1] = (uint8_t)len;
    } else if (len < 65536) {
      h[1] = 126;
      h[2] = (uint8_t)(len >> 8);
      h[3] = (uint8_t)len;
      hl = 4;
    } else {
      h[1] = 127;
      for (int j = 0; j < 8; j++)
        h[2 + j] = (uint8_t)((uint64_t)len >> (56 - 8 * j));
      hl = 10;
    }
    if (masked) {
      h[1] |= 0x80;
      memset(h + hl, 0, 4);
      hl += 4;
    }
    if (wstun__buf_append(out, h, hl) != 0 ||
        wstun__buf_append(out, p + from, len) != 0)
      abort();
  }
}

static uint32_t take32(fz_in *in) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++)
    v = v << 8 | fz_byte(in);
  return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  env e;
  fz_split sp;
  wstun__conn *conn = fzt_begin(&e, &in, &sp, &tcbs);
  int server = (e.flags & FL_SERVER) != 0;
  FZ_CHECK(wstun__tunnel_set_proto(e.t, &wstun__proto_v2) == 0, "set_proto");
  if (server) {
    send_on(&e, 1, "GET / HTTP/1.1\r\nHost: a\r\n\r\n", "", 1);
    send_on(&e, 3, "POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n", "ab", 0);
    send_on(&e, 5, "GET /x HTTP/1.1\r\n\r\n", "", 1);
  }

  wstun__buf msg = WSTUN__BUF_INIT;
  while (in.n > 0 && e.t != NULL && !conn->closing) {
    uint8_t op = fz_byte(&in);
    if (op < 0xf0) {
      size_t len = (size_t)fz_byte(&in) << 8;
      len |= fz_byte(&in);
      if (len > in.n)
        len = in.n;
      wstun__buf_reset(&msg);
      ws_message(&msg, in.d, len, (op & 3) + 1, server);
      in.d += len;
      in.n -= len;
      feed(&e, conn, &sp, wstun__buf_data(&msg), wstun__buf_size(&msg));
      continue;
    }
    switch (op) {
    case 0xf0: {
      size_t i = fz_byte(&in);
      size_t n = (size_t)fz_byte(&in) << 16;
      n |= (size_t)fz_byte(&in) << 8;
      n |= fz_byte(&in);
      if (e.nsinks > 0 && e.sinks[i % e.nsinks].state != 3)
        consume(&e, &e.sinks[i % e.nsinks], n);
      break;
    }
    case 0xf1: {
      uint32_t id = take32(&in);
      sink *s = open_sink(&e, id);
      if (s == NULL) { /* an ended sink may still hold credit */
        for (size_t i = 0; i < e.nsinks; i++)
          if (e.sinks[i].id == id && e.sinks[i].state == 2)
            s = &e.sinks[i];
      }
      if (s != NULL) {
        e.held -= s->given - s->consumed;
        s->consumed = s->given;
        s->state = 3;
      }
      wstun__tunnel_reset(e.t, id, fz_byte(&in) % 8);
      break;
    }
    case 0xf2:
      wstun__tunnel_goaway(e.t, fz_byte(&in) % 8 == 7 ? WSTUN__V2_CANCEL : 0);
      break;
    case 0xf3: {
      size_t i = fz_byte(&in);
      if (e.nsinks > 0 && e.sinks[i % e.nsinks].state != 3) {
        sink *s = &e.sinks[i % e.nsinks];
        e.held -= s->given - s->consumed;
        s->consumed = s->given;
        if (s->state == 1)
          s->state = 3;
        wstun__tunnel_forget_sink(e.t, s);
      }
      break;
    }
    case 0xf4: {
      uint32_t id = take32(&in);
      send_on(&e, id, "HTTP/1.1 200 OK\r\n\r\n", "body", fz_byte(&in) & 1);
      break;
    }
    case 0xf5:
      wstun__tunnel_close(e.t, WSTUN_ECLOSED);
      break;
    case 0xf6: {
      wstun__v2_frame f = {WSTUN__V2_HEAD, 0, WSTUN__V2_MAX_HEAD, 0, 0, 0, 0};
      f.stream = take32(&in);
      f.flags = fz_byte(&in);
      uint8_t h[WSTUN__V2_FRAME_HEAD_MAX];
      int hl = wstun__v2_encode(&f, h);
      if (hl < 0)
        break;
      uint8_t *fr = malloc((size_t)hl + WSTUN__V2_MAX_HEAD);
      if (fr == NULL)
        abort();
      memcpy(fr, h, (size_t)hl);
      memset(fr + hl, 'h', WSTUN__V2_MAX_HEAD);
      wstun__buf_reset(&msg);
      ws_message(&msg, fr, (size_t)hl + WSTUN__V2_MAX_HEAD, 1, server);
      free(fr);
      feed(&e, conn, &sp, wstun__buf_data(&msg), wstun__buf_size(&msg));
      break;
    }
    case 0xf7: {
      uint32_t id = take32(&in);
      char *big = malloc(2 * WSTUN__V2_MAX_HEAD + 101);
      if (big == NULL)
        abort();
      memset(big, 'b', 2 * WSTUN__V2_MAX_HEAD + 100);
      memcpy(big, "GET / HTTP/1.1\r\n", 16);
      memcpy(big + 2 * WSTUN__V2_MAX_HEAD + 96, "\r\n\r\n", 4);
      big[2 * WSTUN__V2_MAX_HEAD + 100] = '\0';
      send_on(&e, id, big, "", 1);
      free(big);
      break;
    }
    default:
      break;
    }
  }
  wstun__buf_free(&msg);

  fzt_end(&e);
  for (size_t i = 0; i < e.nsinks; i++)
    FZ_CHECK(e.sinks[i].state != 1,
             "sink %zu (stream %u) never ended: the exchange would hang", i,
             (unsigned)e.sinks[i].id);
  free(e.sinks);
  return 0;
}
