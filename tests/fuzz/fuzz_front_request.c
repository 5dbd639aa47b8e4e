/* The server front's request path: HTTP bytes from a requester (any head,
 * pipelined, split at data-derived points) into a real wstun__front
 * (wstun__front_new, no socket; see fuzz_server_common.h): parse, route
 * (base path, /_token/<tok>, X-Token), and the tunnel message that
 * build_request makes of the request. Two tokens are known ("t" and
 * "tunnel-token-0123") and have no tunnel, so an exchange waits in its
 * token's queue with its message whole; the harness then fails it (502)
 * and the front goes on with the next pipelined request.
 *
 * The front's parser callbacks are wrapped: before the front's own on_head
 * runs, the head is copied (route_tunnel rewrites it in place); right
 * after, a message made for the exchange is checked:
 *  - its head parses back (llhttp glue; the tunnel writes the message's
 *    id head of the format, wstun__proto, when it sends it) as one request with
 * the same method, HTTP/1.1, and the routed target (wstun__route_target of the
 * original target: the
 *    /_token/ rest, or the path without base for X-Token);
 *  - exactly one X-Forwarded-For, ending with the peer address (after the
 *    first original value, when there was one);
 *  - no hop-by-hop header (RFC 9110 7.6.1 list, Connection and every
 *    header it names, Expect); every other original header kept, in
 *    order, with its value;
 *  - framing: the original Content-Length, else chunked if it was, else
 *    none;
 *  - with FL_V2 (the server speaks v2), an upgrade request (Connection:
 *    upgrade and Upgrade) instead keeps one "Connection: Upgrade" and one
 *    Upgrade line with every non-empty original Upgrade value, in order,
 *    and has no framing (PROTOCOL.md 7.6); its message stays open, and
 *    the harness fails it as it does the others;
 * and once the request is complete, the whole message parses back as
 * exactly one complete request using every byte, with the body the front
 * read. At the end, what the requester received (local answers, the
 * harness's 502s, 100 Continue) must be well-framed responses to the
 * requests read, HEAD-aware, at most one each.
 *
 * WSTUN_FUZZ_KNOWN tags: target-uaf looks past the use-after-free of
 * route_tunnel's target (see w_on_head); base-target past X-Token
 * requests for the base path itself ("/base", "/base?q") forwarded with a
 * target that is not a path.
 *
 * Input: byte 0 flags (FL_*), byte 1 split seed (fz_split), bytes 2..5 the
 * peer address, [N when FL_ALLOCFAIL: allocations fail after N; only memory
 * safety is checked then], then the requester's bytes. */
#include "fuzz_server_common.h"

enum {
  FL_BASE = 0x01,      /* base path "/wst" */
  FL_IPV6 = 0x02,      /* peer 2001:db8::a:b (else a.b.c.d) */
  FL_SMALLHEAD = 0x04, /* max header 1 KiB (else 64 KiB) */
  FL_SMALLBODY = 0x08, /* max body 4 KiB (else unlimited) */
  FL_EOF = 0x10,       /* the requester closes its side after the bytes */
  FL_LOST = 0x20,      /* exchanges end as tunnel_lost (else fail 502) */
  FL_V2 = 0x40,        /* the server speaks v2: upgrades are tunneled */
  FL_ALLOCFAIL = 0x80
};

#define BODY_CAP (1 << 20)

typedef struct rq {
  wstun__front *f;
  wstun__http_parser_cbs real; /* the front's own callbacks */
  int checks;
  char peer[64];
  /* the exchange being read */
  wstun__http_head orig; /* copy of the head as parsed */
  int have_orig;
  wstun__outmsg *req; /* the message made for it, or NULL */
  uint8_t *body;
  size_t body_len;
  int body_over;
  int made, completed;
  int tolerated;    /* a known bug showed in this exchange: no more checks */
  int methods[256]; /* of the heads parsed, in order (what the requester
                       needs to read the answers) */
  int nheads;
} rq;

static void head_copy(wstun__http_head *dst, const wstun__http_head *src) {
  *dst = *src;
  dst->text.base = malloc(src->text.len + 1);
  dst->hdrs = malloc((src->nhdrs + 1) * sizeof(*dst->hdrs));
  if (dst->text.base == NULL || dst->hdrs == NULL)
    abort();
  if (src->text.len)
    memcpy(dst->text.base, src->text.base, src->text.len);
  dst->text.cap = src->text.len + 1;
  if (src->nhdrs)
    memcpy(dst->hdrs, src->hdrs, src->nhdrs * sizeof(*dst->hdrs));
  dst->cap = src->nhdrs + 1;
}

static void head_copy_free(wstun__http_head *h) {
  free(h->text.base);
  free(h->hdrs);
  memset(h, 0, sizeof(*h));
}

static int count_hdr(const wstun__http_head *h, const char *name) {
  int n = 0;
  for (size_t i = 0; i < h->nhdrs; i++)
    n += fzs_ieq(wstun__http_head_name(h, i), name);
  return n;
}

/* What build_request must leave of an original header. */
static int is_upgrade(const wstun__http_head *h) {
  return wstun__http_head_has_token(h, "Connection", "upgrade") &&
         wstun__http_head_get(h, "Upgrade") != NULL;
}

static int survives(const wstun__http_head *orig, const char *name) {
  static const char *const gone[] = {"Connection",
                                     "Keep-Alive",
                                     "Proxy-Authenticate",
                                     "Proxy-Authorization",
                                     "Proxy-Connection",
                                     "TE",
                                     "Trailer",
                                     "Trailers",
                                     "Upgrade",
                                     "Expect",
                                     "X-Forwarded-For",
                                     "Content-Length",
                                     "Transfer-Encoding"};
  for (size_t i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
    if (fzs_ieq(name, gone[i]))
      return 0;
  return !wstun__http_head_has_token(orig, "Connection", name);
}

/* ---- parsing our message back ---------------------------------------------
 */

typedef struct back {
  int heads, completes;
  wstun__http_head head;
  uint8_t *body;
  size_t body_len;
} back;

static int back_on_head(void *ud, wstun__http_head *h) {
  back *b = ud;
  if (b->heads++ == 0)
    head_copy(&b->head, h);
  return 0;
}
static int back_on_body(void *ud, const uint8_t *d, size_t n) {
  back *b = ud;
  if (b->body_len + n <= BODY_CAP + 64) {
    memcpy(b->body + b->body_len, d, n);
    b->body_len += n;
  }
  return 0;
}
static int back_on_complete(void *ud) {
  back *b = ud;
  b->completes++;
  return 0;
}
static const wstun__http_parser_cbs back_cbs = {back_on_head, back_on_body,
                                                back_on_complete};

/* Parses the message (after its id) into *b; returns the parser status and
 * the bytes used. */
static int parse_back(const wstun__outmsg *m, back *b, size_t *used) {
  memset(b, 0, sizeof(*b));
  b->body = malloc(BODY_CAP + 64);
  if (b->body == NULL)
    abort();
  wstun__http_parser p;
  wstun__http_parser_init(&p, HTTP_REQUEST, 0, 0, &back_cbs, b);
  *used = 0;
  int rc = wstun__http_parser_feed(&p, wstun__buf_data(&m->buf),
                                   wstun__buf_size(&m->buf), used);
  wstun__http_parser_free(&p);
  return rc;
}

static void back_free(back *b) {
  if (b->heads)
    head_copy_free(&b->head);
  free(b->body);
}

/* ---- the checks -------------------------------------------------------------
 */

static void check_head(rq *r) {
  const wstun__http_head *o = &r->orig;
  const wstun__outmsg *m = r->req;
  wstun_server *srv = fzs_srv;
  /* where the request must go */
  char buf[4096];
  wstun__route rt;
  const char *ot = wstun__http_head_target(o);
  int rc = wstun__route_target(srv->base_path, srv->base_len, ot, o->target_len,
                               buf, sizeof(buf), &rt);
  FZ_CHECK(rc == 0, "a message for a target outside the base path");
  const char *want;
  size_t wlen;
  const char *tok;
  size_t toklen;
  if (rt.tok != NULL) {
    FZ_CHECK(rt.fwd != NULL, "a message for a /_token/ target that got 414");
    want = rt.fwd;
    wlen = rt.fwdlen;
    tok = rt.tok;
    toklen = rt.toklen;
  } else {
    want = rt.path;
    wlen = rt.len;
    static char slashed[4096 + 1];
    if (rt.plen == 0 && wlen < sizeof(slashed)) {
      /* the base path itself: forwarded as "/" (or "/?q") */
      slashed[0] = '/';
      memcpy(slashed + 1, rt.path, wlen);
      want = slashed;
      wlen++;
    }
    tok = wstun__http_head_get(o, "X-Token");
    FZ_CHECK(tok != NULL, "a message without a token");
    toklen = strlen(tok);
  }
  FZ_CHECK(wstun__registry_find_token(srv, tok, toklen) != NULL,
           "a message for an unknown token");
  if (wlen == 0 || want[0] != '/') {
    if (fzs_known("base-target")) {
      r->tolerated = 1;
      return;
    }
    FZ_CHECK(0, "target \"%.*s\" forwarded as \"%.*s\": not a path",
             (int)o->target_len, ot, (int)wlen, want);
  }

  back b;
  size_t used;
  rc = parse_back(m, &b, &used);
  if (rc == WSTUN__HTTP_ERROR || b.heads != 1) {
    fzs_dump("message", wstun__buf_data(&m->buf), wstun__buf_size(&m->buf));
    FZ_CHECK(0,
             "the message does not parse back as a request (rc %d, %d heads)",
             rc, b.heads);
  }
  const wstun__http_head *h = &b.head;
  FZ_CHECK(h->method == o->method, "method %d became %d", o->method, h->method);
  FZ_CHECK(h->major == 1 && h->minor == 1, "HTTP/%d.%d", h->major, h->minor);
  if (h->target_len != wlen ||
      memcmp(wstun__http_head_target(h), want, wlen) != 0) {
    fprintf(stderr, "original target: %.*s\nwanted: %.*s\ngot: %.*s\n",
            (int)o->target_len, ot, (int)wlen, want, (int)h->target_len,
            wstun__http_head_target(h));
    FZ_CHECK(0, "the message's target is not the routed path");
  }
  /* X-Forwarded-For */
  FZ_CHECK(count_hdr(h, "X-Forwarded-For") == 1, "%d X-Forwarded-For",
           count_hdr(h, "X-Forwarded-For"));
  const char *xff = wstun__http_head_get(h, "X-Forwarded-For");
  /* every non-empty line of the original, in order, then the peer */
  char wxff[8192];
  size_t wn = 0;
  int fits = 1;
  for (size_t i = 0; i < o->nhdrs && fits; i++) {
    const char *v = wstun__http_head_value(o, i);
    if (!fzs_ieq(wstun__http_head_name(o, i), "X-Forwarded-For") || !*v)
      continue;
    int k = snprintf(wxff + wn, sizeof(wxff) - wn, "%s, ", v);
    fits = k >= 0 && (size_t)k < sizeof(wxff) - wn;
    wn += fits ? (size_t)k : 0;
  }
  if (fits) {
    int k = snprintf(wxff + wn, sizeof(wxff) - wn, "%s", r->peer);
    fits = k >= 0 && (size_t)k < sizeof(wxff) - wn;
  }
  if (fits)
    FZ_CHECK(strcmp(xff, wxff) == 0, "X-Forwarded-For \"%s\", wanted \"%s\"",
             xff, wxff);
  size_t xl = strlen(xff), pl = strlen(r->peer);
  FZ_CHECK(xl >= pl && strcmp(xff + xl - pl, r->peer) == 0,
           "X-Forwarded-For \"%s\" does not end with the peer %s", xff,
           r->peer);
  /* framing */
  int ncl = count_hdr(h, "Content-Length"),
      nte = count_hdr(h, "Transfer-Encoding");
  int upgrade = is_upgrade(o);
  if (upgrade) {
    FZ_CHECK(srv->v2, "an upgrade's message on a server without v2");
    FZ_CHECK(ncl == 0 && nte == 0, "an upgrade with %d CL, %d TE", ncl, nte);
    FZ_CHECK(count_hdr(h, "Connection") == 1 && count_hdr(h, "Upgrade") == 1,
             "an upgrade with %d Connection, %d Upgrade",
             count_hdr(h, "Connection"), count_hdr(h, "Upgrade"));
    FZ_CHECK(strcmp(wstun__http_head_get(h, "Connection"), "Upgrade") == 0,
             "an upgrade's Connection: %s",
             wstun__http_head_get(h, "Connection"));
    wstun__buf want_up = WSTUN__BUF_INIT;
    for (size_t i = 0; i < o->nhdrs; i++) {
      const char *v = wstun__http_head_value(o, i);
      if (!fzs_ieq(wstun__http_head_name(o, i), "Upgrade") || !*v)
        continue;
      if ((want_up.len && wstun__buf_append(&want_up, ", ", 2) != 0) ||
          wstun__buf_append_str(&want_up, v) != 0)
        abort();
    }
    if (wstun__buf_append(&want_up, "", 1) != 0)
      abort();
    FZ_CHECK(strcmp(wstun__http_head_get(h, "Upgrade"),
                    (const char *)want_up.base) == 0,
             "an upgrade's Upgrade \"%s\", wanted \"%s\"",
             wstun__http_head_get(h, "Upgrade"), (const char *)want_up.base);
    wstun__buf_free(&want_up);
  } else if (o->has_content_length) {
    FZ_CHECK(ncl == 1 && nte == 0 && h->has_content_length &&
                 h->content_length == o->content_length,
             "Content-Length %llu became %d CL (%llu), %d TE",
             (unsigned long long)o->content_length, ncl,
             (unsigned long long)h->content_length, nte);
  } else if (o->chunked) {
    FZ_CHECK(ncl == 0 && nte == 1 && h->chunked, "chunked became %d CL, %d TE",
             ncl, nte);
  } else {
    FZ_CHECK(ncl == 0 && nte == 0, "no body, but %d CL, %d TE", ncl, nte);
  }
  /* every other header: the surviving originals, in order */
  size_t j = 0;
  for (size_t i = 0; i < h->nhdrs; i++) {
    const char *name = wstun__http_head_name(h, i);
    if (fzs_ieq(name, "X-Forwarded-For") || fzs_ieq(name, "Content-Length") ||
        fzs_ieq(name, "Transfer-Encoding"))
      continue;
    if (upgrade && (fzs_ieq(name, "Connection") || fzs_ieq(name, "Upgrade")))
      continue; /* checked above */
    while (j < o->nhdrs && !survives(o, wstun__http_head_name(o, j)))
      j++;
    FZ_CHECK(j < o->nhdrs, "header \"%s\" in the message is not the request's",
             name);
    FZ_CHECK(strcmp(name, wstun__http_head_name(o, j)) == 0 &&
                 strcmp(wstun__http_head_value(h, i),
                        wstun__http_head_value(o, j)) == 0,
             "header %zu \"%s: %s\" where \"%s: %s\" was due", i, name,
             wstun__http_head_value(h, i), wstun__http_head_name(o, j),
             wstun__http_head_value(o, j));
    j++;
  }
  while (j < o->nhdrs && !survives(o, wstun__http_head_name(o, j)))
    j++;
  FZ_CHECK(j == o->nhdrs, "header \"%s\" of the request lost",
           wstun__http_head_name(o, j));
  back_free(&b);
}

static void check_whole(rq *r) {
  back b;
  size_t used;
  int rc = parse_back(r->req, &b, &used);
  size_t n = wstun__buf_size(&r->req->buf);
  if (rc == WSTUN__HTTP_ERROR || b.heads != 1 || b.completes != 1 ||
      used != n) {
    fzs_dump("message", wstun__buf_data(&r->req->buf),
             wstun__buf_size(&r->req->buf));
    FZ_CHECK(0,
             "the finished message is not exactly one request: rc %d, %d "
             "heads, %d complete, %zu of %zu bytes used",
             rc, b.heads, b.completes, used, n);
  }
  if (!r->body_over)
    FZ_CHECK(b.body_len == r->body_len &&
                 memcmp(b.body, r->body, r->body_len) == 0,
             "the message's body (%zu bytes) is not the request's (%zu)",
             b.body_len, r->body_len);
  back_free(&b);
}

/* ---- the wrapped callbacks of the front's parser ---------------------------
 */

static int w_on_head(void *ud, wstun__http_head *h) {
  rq *r = ud;
  if (r->have_orig)
    head_copy_free(&r->orig);
  head_copy(&r->orig, h);
  r->have_orig = 1;
  r->body_len = 0;
  r->body_over = 0;
  /* WSTUN_FUZZ_KNOWN=target-uaf: room for what build_request adds, so
   * the text it cut the target from is not reallocated under it (the
   * harness looks past that bug; regressions/front_request/ has it) */
  if (fzs_known("target-uaf")) {
    const char *x = wstun__http_head_get(h, "X-Forwarded-For");
    if (wstun__buf_reserve(&h->text, (x ? strlen(x) : 0) + 4096) != 0)
      return -1;
  }
  r->tolerated = 0;
  if (r->nheads < 256)
    r->methods[r->nheads] = h->method;
  r->nheads++;
  wstun__outmsg *before = r->f->ex.req;
  r->req = NULL;
  int rc = r->real.on_head(r->f, h);
  if (r->f->ex.req != NULL && r->f->ex.req != before) {
    r->req = r->f->ex.req;
    r->made++;
    if (r->checks)
      check_head(r);
  }
  return rc;
}

static int w_on_body(void *ud, const uint8_t *d, size_t n) {
  rq *r = ud;
  if (r->body_len + n <= BODY_CAP) {
    memcpy(r->body + r->body_len, d, n);
    r->body_len += n;
  } else {
    r->body_over = 1;
  }
  return r->real.on_body(r->f, d, n);
}

static int w_on_complete(void *ud) {
  rq *r = ud;
  int rc = r->real.on_complete(r->f);
  if (rc >= 0 && r->req != NULL && r->f->ex.req == r->req && r->req->finished) {
    r->completed++;
    if (r->checks && !r->tolerated)
      check_whole(r);
  }
  return rc;
}

static const wstun__http_parser_cbs wrapped = {w_on_head, w_on_body,
                                               w_on_complete};

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  fz_alloc_install();
  fzs_init();
  return 0;
}

/* Ends exchanges whose message is whole (no tunnel will take it), so the
 * front reads the next request. */
static void settle(rq *r, int lost) {
  wstun__front *f = r->f;
  for (int guard = 0; guard < 100000; guard++) {
    if (f->closing || f->ex.req == NULL ||
        (!f->ex.req->finished && !f->ex.upgrade) ||
        (f->ex.state != WSTUN__EX_QUEUED && f->ex.state != WSTUN__EX_READING))
      return;
    r->req = NULL;
    if (lost)
      wstun__exchange_tunnel_lost(&f->ex);
    else
      wstun__front_fail(f, 502, "fuzz: no tunnel");
  }
}

/* ---- what the requester receives --------------------------------------------
 */

typedef struct answers {
  const rq *r;
  int finals, interims, done, last_status;
} answers;

static int a_on_head(void *ud, wstun__http_head *h) {
  answers *a = ud;
  a->last_status = h->status;
  if (h->status >= 100 && h->status < 200) {
    a->interims++;
    return 1;
  }
  int k = a->finals++;
  int head = k < a->r->nheads && k < 256 && a->r->methods[k] == HTTP_HEAD &&
             !fzs_known("head-body");
  return head || h->status == 204 || h->status == 304 ? 1 : 0;
}
static int a_on_complete(void *ud) {
  answers *a = ud;
  if (a->last_status >= 200)
    a->done++;
  return 0;
}
static const wstun__http_parser_cbs answers_cbs = {a_on_head, NULL,
                                                   a_on_complete};

/* The front's output: answers (local ones, the 502s of the harness, 100
 * Continue), well framed for the requests read (HEAD-aware), in order, at
 * most one per request (one more for a request that did not parse). */
static void check_answers(const rq *r, const wstun__conn *c) {
  size_t n = wstun__buf_size(&c->out);
  if (n == 0)
    return;
  answers a;
  memset(&a, 0, sizeof(a));
  a.r = r;
  wstun__http_parser p;
  wstun__http_parser_init(&p, HTTP_RESPONSE, 0, 0, &answers_cbs, &a);
  size_t used = 0;
  int rc = wstun__http_parser_feed(&p, wstun__buf_data(&c->out), n, &used);
  wstun__http_parser_free(&p);
  if (rc == WSTUN__HTTP_ERROR || a.finals > r->nheads + 1) {
    fzs_dump("requester output", wstun__buf_data(&c->out), n);
    FZ_CHECK(0,
             "the requester's answers are not well framed (rc %d) or too "
             "many: %d final for %d requests",
             rc, a.finals, r->nheads);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  uint8_t flags = fz_byte(&in);
  fz_split sp;
  fz_split_init(&sp, fz_byte(&in));
  uint8_t a[4];
  for (int i = 0; i < 4; i++)
    a[i] = fz_byte(&in);
  long fail_after = (flags & FL_ALLOCFAIL) ? (long)fz_byte(&in) : -1;

  rq r;
  memset(&r, 0, sizeof(r));
  r.checks = fail_after < 0;
  r.body = malloc(BODY_CAP);
  if (r.body == NULL)
    abort();
  if (flags & FL_IPV6)
    snprintf(r.peer, sizeof(r.peer), "2001:db8::%x:%x", a[0] << 8 | a[1],
             a[2] << 8 | a[3]);
  else
    snprintf(r.peer, sizeof(r.peer), "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);

  fzs_srv->v2 = (flags & FL_V2) != 0;
  fzs_begin((flags & FL_BASE) ? "/wst" : "",
            (flags & FL_SMALLHEAD) ? 1024 : 64 * 1024,
            (flags & FL_SMALLBODY) ? 4096 : 0);
  fzs_add_token("t");
  fzs_add_token("tunnel-token-0123");
  wstun__front *f = fzs_front(r.peer);
  /* the peer as the server writes it (IPv6 canonical form) */
  wstun__conn_peer_ip(f->conn, r.peer, sizeof(r.peer));
  r.f = f;
  r.real = f->parser.cbs;
  f->parser.cbs = wrapped;
  f->parser.ud = &r;
  wstun__conn *c = f->conn;

  if (fail_after >= 0)
    fz_alloc_fail_after(fail_after);
  const uint8_t *d = in.d;
  size_t left = in.n;
  while (left > 0 && !f->closing) {
    size_t chunk = fz_split_next(&sp, left);
    fzs_input(c, d, chunk);
    d += chunk;
    left -= chunk;
    settle(&r, (flags & FL_LOST) != 0);
  }
  if ((flags & FL_EOF) && !f->closing)
    fzs_eof(c);
  fz_alloc_reset();
  if (r.checks)
    check_answers(&r, c);

  fzs_end();
  if (r.have_orig)
    head_copy_free(&r.orig);
  free(r.body);
  return 0;
}
