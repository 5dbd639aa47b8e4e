/* The server's response path: a real tunnel (the /_tunnel upgrade through
 * a front, the front's upgrade, on a handle that never opened; see
 * fuzz_server_common.h), 1 to 4 requesters whose requests (GET, HEAD,
 * HTTP/1.0 GET, POST with a body) are in flight on it, then WebSocket
 * binary messages from the tunnel client, masked, split into fragments at
 * data-derived points (pings between fragments on demand), fed to the
 * tunnel's connection in data-derived chunks: responses for the requests,
 * several back to back in one message, bad ids, garbage, truncated ones,
 * 1xx, bodies by Content-Length, chunked or by the end of the message.
 *
 * With FL_PIPELINE each requester sends a second GET right behind the
 * first; the front reads it once the first is answered, and it goes out
 * with a new id (messages are then made and sent one at a time, so that a
 * selector can name it).
 *
 * What a requester receives is its front connection's output buffer (the
 * loop never runs while feeding). Checks, per requester, after every
 * chunk, after the input and again after the tunnel is closed:
 *  - the output parses (llhttp glue, HEAD-aware, 204/304 bodyless) as
 *    responses, 1xx ones allowed before each final one, at most one final
 *    response per request the front has read, with no byte after the one
 *    for the last: one request, one response;
 *  - an exchange that is over on a connection still open (or ending
 *    gracefully: then a body delimited by the close is complete) has
 *    delivered its complete final response; a connection that was closed
 *    or reset may have cut it;
 *  - no memory errors, nothing left on the loop, every front freed.
 *
 * WSTUN_FUZZ_KNOWN tags: second-response (no checks for a requester once
 * a message for it went on after a complete response),
 * interim-final (an exchange ended by a 1xx alone), head-body (the server's
 * own answers to HEAD carry a body: no check of bytes after a final
 * response to HEAD).
 *
 * Input: byte 0 flags (FL_*), byte 1 fragment split seed, byte 2 delivery
 * split seed, byte 3 the requests (2 bits each: 0 GET, 1 HEAD, 2 HTTP/1.0
 * GET, 3 POST), byte 4 number of requesters - 1 (low 2 bits), [N when
 * FL_ALLOCFAIL], then
 * messages: a selector byte (id: low 3 bits 0-3 the id of requester
 * n % count as it is now, 4 an id nobody uses, 5 a prefix that is not
 * hex, 6 only half a prefix, 7 no prefix added: the payload has its own;
 * bit 3 set: no new message, the payload goes on the one before, so that
 * one bit makes two responses one message), a 2-byte big-endian length,
 * and that many payload bytes (fewer at the end of the input). */
#include "fuzz_server_common.h"

enum {
  FL_PING = 0x01,      /* a ping frame between fragments */
  FL_CLOSE = 0x02,     /* the tunnel is closed half way through the input */
  FL_EOF = 0x04,       /* requesters close their side after their request */
  FL_PIPELINE = 0x10,  /* each requester pipelines a second GET; messages are
                          then made one at a time, their ids taken as they
                          are sent (the second requests get theirs late) */
  FL_ALLOCFAIL = 0x20, /* allocations fail after N once the requests are in
                          flight; only memory safety is checked */
};

#define TOKEN "tunnel-token-0123"
#define SEL_MORE 0x08 /* selector: the payload goes on the message before */
#define MAX_FRONTS 4

typedef struct requester {
  wstun__front *f;
  wstun__conn *c; /* stays readable until the loop runs */
  int kind;       /* 0 GET, 1 HEAD, 2 HTTP/1.0 GET, 3 POST */
  size_t seen_n;  /* what the last check saw: output size, states */
  int seen_state, seen_closing;
  int tainted; /* second-response: sent a message that would show it */
  wstun__http_parser_cbs real; /* the front's parser callbacks */
  int nheads;                  /* requests the front has read */
  int methods[2];
} requester;

static requester reqs[MAX_FRONTS];
static int nreqs;
static int checks_on; /* 0 once allocations may fail: memory safety only */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fz_alloc_install();
  fzs_init();
  return 0;
}

/* The front's on_head, wrapped to count the requests it read. */
static int w_on_head(void *ud, wstun__http_head *h) {
  requester *q = ud;
  if (q->nheads < 2)
    q->methods[q->nheads] = h->method;
  q->nheads++;
  return q->real.on_head(q->f, h);
}
static int w_on_body(void *ud, const uint8_t *d, size_t n) {
  requester *q = ud;
  return q->real.on_body(q->f, d, n);
}
static int w_on_complete(void *ud) {
  requester *q = ud;
  return q->real.on_complete(q->f);
}
static const wstun__http_parser_cbs wrapped = {w_on_head, w_on_body,
                                               w_on_complete};

/* ---- what a requester sees --------------------------------------------------
 */

typedef struct view {
  const requester *q;
  int interims, finals, done;
  int status;
} view;

static int v_on_head(void *ud, wstun__http_head *h) {
  view *v = ud;
  v->status = h->status;
  if (h->status >= 100 && h->status < 200) {
    v->interims++;
    return 1;
  }
  int k = v->finals++;
  int head = k < 2 && k < v->q->nheads && v->q->methods[k] == HTTP_HEAD;
  /* head-body: the server's own answers (write_simple) carry their body
   * even to HEAD; read it as they write it */
  const char *ct = wstun__http_head_get(h, "Content-Type");
  if (head && fzs_known("head-body") && h->status >= 502 && h->status <= 506 &&
      ct != NULL && strcmp(ct, "text/plain; charset=utf-8") == 0)
    head = 0;
  /* RFC 9112 6.3: whatever the headers say (llhttp would read a body of
   * Content-Length after a 204 or 304) */
  return head || h->status == 204 || h->status == 304 ? 1 : 0;
}
static int v_on_complete(void *ud) {
  view *v = ud;
  if (v->status < 200)
    return 0;
  v->done++;
  /* stop after the answer to the last request read: any byte after it
   * would be a response to nothing */
  return v->done >= v->q->nheads ? 1 : 0;
}
static const wstun__http_parser_cbs view_cbs = {v_on_head, NULL, v_on_complete};

static void check_requester(const requester *q, int i, const char *when) {
  const wstun__front *f = q->f;
  const wstun__conn *c = q->c;
  size_t n = wstun__buf_size(&c->out);
  const uint8_t *out = n ? wstun__buf_data(&c->out) : (const uint8_t *)"";
  view v;
  memset(&v, 0, sizeof(v));
  v.q = q;
  wstun__http_parser p;
  wstun__http_parser_init(&p, HTTP_RESPONSE, 0, 0, &view_cbs, &v);
  size_t used = 0;
  int rc = n ? wstun__http_parser_feed(&p, out, n, &used) : WSTUN__HTTP_OK;
  int ending = c->close_after_write && !c->closing;
  if (rc == WSTUN__HTTP_OK && ending && v.done < v.finals)
    (void)wstun__http_parser_finish(&p); /* a body ended by the close */
  wstun__http_parser_free(&p);
  int over = f == NULL || f->ex.state == WSTUN__EX_NONE ||
             f->ex.state == WSTUN__EX_DONE;
  int head_sent = q->methods[0] == HTTP_HEAD ||
                  (q->nheads > 1 && q->methods[1] == HTTP_HEAD);
  const char *bad = NULL;
  if (rc == WSTUN__HTTP_ERROR)
    bad = "not well-framed responses";
  else if (v.done >= q->nheads && used < n && !fzs_known("second-response") &&
           !(head_sent && fzs_known("head-body")))
    bad = "bytes after the response to the last request (a second "
          "response?)";
  else if (over && !c->closing && v.done < q->nheads &&
           !(v.interims && v.finals < q->nheads && fzs_known("interim-final")))
    bad = v.finals >= q->nheads
              ? "the exchange is over but its response is incomplete"
              : "the exchange is over without a final response";
  if (bad != NULL) {
    fzs_dump("requester output", out, n);
    FZ_CHECK(0,
             "%s: requester %d (%s) %s: %d requests read, %d interim, %d "
             "final, %d complete, %zu of %zu bytes parsed, state %d, conn "
             "closing %d ending %d",
             when, i,
             q->kind == 1   ? "HEAD"
             : q->kind == 2 ? "HTTP/1.0"
                            : "GET/POST",
             bad, q->nheads, v.interims, v.finals, v.done, used, n,
             f ? (int)f->ex.state : -1, (int)c->closing, ending);
  }
}

/* WSTUN_FUZZ_KNOWN=second-response: a message whose payload goes on after
 * a complete final response makes the server write more than one
 * response, and the requester's stream is garbage from then on: its
 * checks stop. */
static void taint_if_more(int who, const uint8_t *d, size_t n) {
  if (who < 0 || !checks_on || !fzs_known("second-response"))
    return;
  requester *q = &reqs[who];
  view v;
  memset(&v, 0, sizeof(v));
  requester one = *q;
  one.nheads = 1;
  one.methods[0] = q->kind == 1 ? HTTP_HEAD : HTTP_GET;
  v.q = &one;
  wstun__http_parser p;
  wstun__http_parser_init(&p, HTTP_RESPONSE, 0, 0, &view_cbs, &v);
  size_t used = 0;
  int rc = wstun__http_parser_feed(&p, d, n, &used);
  wstun__http_parser_free(&p);
  if (rc == WSTUN__HTTP_PAUSED && used < n)
    q->tainted = 1;
}

/* Checks the requesters whose output or state changed since last time
 * (every byte delivered one at a time would make it quadratic). */
static void check_all(const char *when) {
  if (!checks_on)
    return;
  for (int i = 0; i < nreqs; i++) {
    requester *q = &reqs[i];
    size_t n = wstun__buf_size(&q->c->out);
    int state = (int)q->f->ex.state, closing = q->c->closing;
    if (n == q->seen_n && state == q->seen_state && closing == q->seen_closing)
      continue;
    q->seen_n = n;
    q->seen_state = state;
    q->seen_closing = closing;
    if (!q->tainted)
      check_requester(q, i, when);
  }
}

/* ---- the tunnel client's bytes ----------------------------------------------
 */

typedef struct out {
  uint8_t *d;
  size_t n, cap;
} out;

static void put(out *o, const void *d, size_t n) {
  if (n == 0)
    return;
  if (o->n + n > o->cap) {
    size_t cap = o->cap ? o->cap : 1024;
    while (cap < o->n + n)
      cap *= 2;
    o->d = realloc(o->d, cap);
    if (o->d == NULL)
      abort();
    o->cap = cap;
  }
  memcpy(o->d + o->n, d, n);
  o->n += n;
}

/* One masked frame, as a client sends it. */
static void frame(out *o, int fin, int opcode, const uint8_t *p, size_t n) {
  static const uint8_t key[4] = {0x37, 0xfa, 0x21, 0x3d};
  uint8_t h[14];
  size_t hl = 0;
  h[hl++] = (uint8_t)((fin ? 0x80 : 0) | opcode);
  if (n < 126) {
    h[hl++] = (uint8_t)(0x80 | n);
  } else if (n < 65536) {
    h[hl++] = 0x80 | 126;
    h[hl++] = (uint8_t)(n >> 8);
    h[hl++] = (uint8_t)n;
  } else {
    h[hl++] = 0x80 | 127;
    for (int i = 7; i >= 0; i--)
      h[hl++] = (uint8_t)((uint64_t)n >> (8 * i));
  }
  memcpy(h + hl, key, 4);
  hl += 4;
  put(o, h, hl);
  for (size_t i = 0; i < n; i++) {
    uint8_t b = p[i] ^ key[i % 4];
    put(o, &b, 1);
  }
}

/* A binary message in fragments. */
static void message(out *o, const uint8_t *m, size_t n, fz_split *sp,
                    int pings) {
  size_t off = 0;
  int first = 1;
  do {
    size_t k = fz_split_next(sp, n - off);
    int fin = off + k == n;
    frame(o, fin, first ? 0x2 : 0x0, m + off, k);
    if (!fin && pings)
      frame(o, 1, 0x9, (const uint8_t *)"p", 1);
    first = 0;
    off += k;
  } while (off < n);
}

/* ---- the requests -----------------------------------------------------------
 */

static const char *const request_text[4] = {
    "GET /_token/" TOKEN "/?get HTTP/1.1\r\nHost: s\r\n\r\n",
    "HEAD /_token/" TOKEN "/?head HTTP/1.1\r\nHost: s\r\n\r\n",
    "GET /_token/" TOKEN "/?old HTTP/1.0\r\nHost: s\r\n\r\n",
    "POST /_token/" TOKEN "/?post HTTP/1.1\r\nHost: s\r\n"
    "Content-Length: 5\r\n\r\nhello",
};

/* pipelined after the first with FL_PIPELINE: read once it is answered */
static const char second_text[] =
    "GET /_token/" TOKEN "/?second HTTP/1.1\r\nHost: s\r\n\r\n";

static const char upgrade_text[] =
    "GET /_tunnel HTTP/1.1\r\nHost: s\r\nOrigin: " TOKEN "\r\n"
    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n";

/* Bytes for the tunnel's connection, as tun_on_data takes them (the
 * connection itself stays paused: its first tick never runs). */
static void tunnel_input(wstun__token *tok, const uint8_t *d, size_t n) {
  while (n > 0 && fzs_tunnel(tok)) {
    wstun__tunnel *t = fzs_tunnel(tok);
    wstun__conn *c = t->conn;
    c->in_data = 1;
    size_t used = c->cbs->on_data(c, d, n);
    c->in_data = 0;
    FZ_CHECK(used <= n, "tunnel on_data used %zu of %zu", used, n);
    d += used;
    n -= used;
    if (used == 0)
      break; /* paused with nobody to resume it, or wslay wants nothing */
  }
}

/* Delivers the frames in o in data-derived chunks, checking the
 * requesters after each; closes the tunnel once close_at bytes are in. */
static void feed(wstun__token *tok, const out *o, fz_split *dsp,
                 size_t close_at, int *closed) {
  size_t off = 0;
  while (off < o->n && fzs_tunnel(tok)) {
    size_t k = fz_split_next(dsp, o->n - off);
    tunnel_input(tok, o->d + off, k);
    off += k;
    check_all("while feeding");
    if (!*closed && off >= close_at && fzs_tunnel(tok)) {
      *closed = 1;
      wstun__tunnel_close(fzs_tunnel(tok), WSTUN_ECLOSED);
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  uint8_t flags = fz_byte(&in);
  fz_split fsp, dsp;
  fz_split_init(&fsp, fz_byte(&in));
  fz_split_init(&dsp, fz_byte(&in));
  uint8_t kinds = fz_byte(&in);
  nreqs = 1 + (fz_byte(&in) & 3);
  long fail_after = (flags & FL_ALLOCFAIL) ? (long)fz_byte(&in) : -1;
  checks_on = 1;

  fzs_begin("", 64 * 1024, 0);
  wstun__token *tok = fzs_add_token(TOKEN);
  wstun__front *up = fzs_front(NULL);
  fzs_input(up->conn, (const uint8_t *)upgrade_text, sizeof(upgrade_text) - 1);
  FZ_CHECK(fzs_tunnel(tok) != NULL, "the upgrade did not make a tunnel");

  for (int i = 0; i < nreqs; i++) {
    char ip[32];
    snprintf(ip, sizeof(ip), "192.0.2.%d", i + 1);
    requester *q = &reqs[i];
    memset(q, 0, sizeof(*q));
    q->seen_state = -1;
    q->kind = (kinds >> (2 * i)) & 3;
    q->f = fzs_front(ip);
    q->c = q->f->conn;
    q->real = q->f->parser.cbs;
    q->f->parser.cbs = wrapped;
    q->f->parser.ud = q;
    q->c->high_water = (size_t)1 << 40; /* never congested: never drains */
    char text[256];
    snprintf(text, sizeof(text), "%s%s", request_text[q->kind],
             (flags & FL_PIPELINE) ? second_text : "");
    fzs_input(q->c, (const uint8_t *)text, strlen(text));
    FZ_CHECK(q->f->ex.state == WSTUN__EX_WAITING,
             "request %d not in flight (state %d)", i, (int)q->f->ex.state);
    if (flags & FL_EOF)
      fzs_eof(q->c);
  }

  if (fail_after >= 0) {
    checks_on = 0;
    fz_alloc_fail_after(fail_after);
  }

  /* the tunnel client's messages */
  out o = {NULL, 0, 0};
  out msg = {NULL, 0, 0};
  int pipeline = (flags & FL_PIPELINE) != 0, closed = 0;
  int who = -1; /* the requester the message being made is for */
  size_t total = in.n;
  while (in.n > 0) {
    uint8_t sel = fz_byte(&in);
    size_t len = (size_t)fz_byte(&in) << 8;
    len |= fz_byte(&in);
    if (len > in.n)
      len = in.n;
    if (!(sel & SEL_MORE) || msg.n == 0) {
      if (msg.n > 4)
        taint_if_more(who, msg.d + 4, msg.n - 4);
      who = -1;
      if (msg.n > 0) {
        message(&o, msg.d, msg.n, &fsp, (flags & FL_PING) != 0);
        if (pipeline) {
          /* sent now, so that the next prefix is taken from the ids of
           * the exchanges as they are now */
          int close_now = (flags & FL_CLOSE) && in.n <= total / 2;
          feed(tok, &o, &dsp, close_now ? 0 : SIZE_MAX, &closed);
          o.n = 0;
        }
      }
      msg.n = 0;
      uint8_t pre[4];
      switch (sel & 7) {
      case 0:
      case 1:
      case 2:
      case 3:
        who = (sel & 3) % nreqs;
        /* v1 ids are 16-bit on the wire (reg.id is wide for v2) */
        wstun__proto_write_prefix((uint16_t)reqs[who].f->ex.reg.id, pre);
        put(&msg, pre, 4);
        break;
      case 4:
        wstun__proto_write_prefix(0x0fff, pre);
        put(&msg, pre, 4);
        break;
      case 5:
        put(&msg, "zz0x", 4);
        break;
      case 6:
        put(&msg, "00", 2);
        len = 0;
        break;
      default:
        break;
      }
    }
    put(&msg, in.d, len);
    in.d += len;
    in.n -= len;
  }
  if (msg.n > 4)
    taint_if_more(who, msg.d + 4, msg.n - 4);
  if (msg.n > 0)
    message(&o, msg.d, msg.n, &fsp, (flags & FL_PING) != 0);
  free(msg.d);
  feed(tok, &o, &dsp, (flags & FL_CLOSE) && !pipeline ? o.n / 2 : SIZE_MAX,
       &closed);
  free(o.d);
  check_all("after the input");
  /* the tunnel goes: every exchange still waiting is answered or cut */
  while (fzs_tunnel(tok))
    wstun__tunnel_close(fzs_tunnel(tok), WSTUN_ECLOSED);
  check_all("after the tunnel closed");
  for (int i = 0; i < nreqs && checks_on; i++) {
    const wstun__front *f = reqs[i].f;
    /* (a pipelined request read after the tunnel went waits in the
     * token's queue for the next one) */
    FZ_CHECK(f->ex.state == WSTUN__EX_NONE || f->ex.state == WSTUN__EX_DONE ||
                 f->ex.state == WSTUN__EX_QUEUED || f->closing,
             "requester %d still waits (state %d) with the tunnel gone", i,
             (int)f->ex.state);
  }
  fz_alloc_reset();
  fzs_end();
  return 0;
}
