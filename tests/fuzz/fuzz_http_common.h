/* The body of the http_request and http_response targets: feed the input to
 * a wstun__http_parser in data-derived chunks, and after every complete
 * message check the head and exercise the head helpers (head_get,
 * has_token, strip_hop_by_hop, head_add, set_target, head_write); every
 * head we serialize must parse again into the same head.
 *
 * Input layout: byte 0 flags, byte 1 split seed (see fz_split), then when
 * flags has FL_ALLOCFAIL one byte N (the N+1-th allocation fails), then
 * the HTTP bytes. */
#ifndef WSTUN_FUZZ_HTTP_COMMON_H
#define WSTUN_FUZZ_HTTP_COMMON_H

#include <ctype.h>

#include "fuzz_util.h"
#include "wstun_buf.h"
#include "wstun_http.h"

#define FZ_MAX_HEAD (8 * 1024)
#define FZ_MAX_BODY (64 * 1024)

enum {
  FL_HEAD_RESPONSE = 0x01, /* responses: on_head returns 1 (answer to HEAD) */
  FL_KEEP_FRAMING = 0x02,  /* strip_hop_by_hop(framing = 0) */
  FL_SET_TARGET = 0x04,    /* requests: cut the target like /_token/ does */
  FL_FAIL_HEAD = 0x08,     /* on_head fails the 3rd message with 502 */
  FL_ALLOCFAIL = 0x80      /* fail allocations after N (memory safety only) */
};

typedef struct fz_http {
  llhttp_type_t type;
  uint8_t flags;
  uint8_t pick; /* varies which '/' set_target cuts at */
  int heads, completes, processed;
  size_t nhdrs_at_head; /* headers when on_head ran */
  int folded;           /* the input has a line starting with SP/HT */
  uint64_t body;
  int checks; /* 0 once an allocation failed: only memory safety counts */
} fz_http;

/* ---- reference helpers (independent of lib/) --------------------------------
 */

static int fz_ieq(const char *a, size_t an, const char *b) {
  size_t bn = strlen(b);
  if (an != bn)
    return 0;
  for (size_t i = 0; i < an; i++)
    if (tolower((unsigned char)a[i]) != tolower((unsigned char)b[i]))
      return 0;
  return 1;
}

/* 1 if some `list` header's comma-separated elements (OWS trimmed) equal
 * `tok` (case-insensitive), per RFC 9110 5.6.1. */
static int fz_ref_has_token(const wstun__http_head *h, const char *list,
                            const char *tok, size_t tokn) {
  for (size_t i = 0; i < h->nhdrs; i++) {
    if (!fz_ieq(wstun__http_head_name(h, i), h->hdrs[i].name_len, list))
      continue;
    const char *v = wstun__http_head_value(h, i);
    size_t vn = h->hdrs[i].value_len;
    size_t s = 0;
    while (s <= vn) {
      size_t e = s;
      while (e < vn && v[e] != ',')
        e++;
      size_t a = s, b = e;
      while (a < b && (v[a] == ' ' || v[a] == '\t'))
        a++;
      while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
        b--;
      if (b - a == tokn && tokn > 0) {
        size_t k = 0;
        while (k < tokn && tolower((unsigned char)v[a + k]) ==
                               tolower((unsigned char)tok[k]))
          k++;
        if (k == tokn)
          return 1;
      }
      s = e + 1;
    }
  }
  return 0;
}

/* Bugs already reported can be tolerated while hunting for others:
 * WSTUN_FUZZ_KNOWN is a comma-separated list of the tags in this file
 * (grep fz_known). Unset (the default, and what run.sh uses) means every
 * check is on. */
static int fz_known(const char *tag) {
  const char *k = getenv("WSTUN_FUZZ_KNOWN");
  return k != NULL && strstr(k, tag) != NULL;
}

/* ---- head invariants
 * ------------------------------------------------------------ */

static int fz_is_tchar(unsigned char c) {
  return isalnum(c) || (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static void fz_check_head(const wstun__http_head *h, int is_request) {
  FZ_CHECK(h->is_request == is_request, "is_request %d", h->is_request);
  FZ_CHECK(h->nhdrs <= h->cap, "nhdrs %zu > cap %zu", h->nhdrs, h->cap);
  const char *t = wstun__http_head_target(h);
  /* "reason-nul": llhttp lets NUL bytes through in a reason phrase and
   * wstun_http.c's on_status does not refuse them (on_header_value does),
   * so the string is cut short at the first NUL when written */
  if (!(!is_request && memchr(t, '\0', h->target_len) != NULL &&
        fz_known("reason-nul")))
    FZ_CHECK(strlen(t) == h->target_len, "target: strlen %zu, target_len %u",
             strlen(t), h->target_len);
  for (size_t i = 0; i < h->target_len; i++)
    FZ_CHECK(t[i] != '\r' && t[i] != '\n', "CR/LF in target/reason");
  /* "status-range": llhttp 8 takes any number of digits ("HTTP/1.1 7 OK",
   * "HTTP/1.1 0200 OK") and head_write relays "HTTP/1.1 7 OK", which is
   * not a status line (RFC 9112 4: status-code = 3DIGIT) */
  if (!is_request && !fz_known("status-range"))
    FZ_CHECK(h->status >= 100 && h->status <= 999,
             "status %d accepted (not 3 digits when written)", h->status);
  /* "http09": llhttp 8 takes a request line without a version as
   * HTTP/0.9 ("GET /x", "CONNECT " with an empty target) and goes on
   * with headers; head_write makes it HTTP/1.1 */
  if (is_request && !(h->major == 0 && fz_known("http09"))) {
    FZ_CHECK(h->major >= 1, "HTTP/%u.%u request accepted", h->major, h->minor);
    FZ_CHECK(h->target_len > 0, "empty request target");
  }
  if (is_request) {
    for (size_t i = 0; i < h->target_len; i++)
      FZ_CHECK(t[i] != ' ', "space in request target");
  }
  for (size_t i = 0; i < h->nhdrs; i++) {
    const char *nm = wstun__http_head_name(h, i);
    const char *v = wstun__http_head_value(h, i);
    FZ_CHECK(h->hdrs[i].name_off + (uint64_t)h->hdrs[i].name_len < h->text.len,
             "header %zu name out of the text", i);
    FZ_CHECK(h->hdrs[i].value_off + (uint64_t)h->hdrs[i].value_len <
                 h->text.len,
             "header %zu value out of the text", i);
    FZ_CHECK(strlen(nm) == h->hdrs[i].name_len, "header %zu name length", i);
    FZ_CHECK(strlen(v) == h->hdrs[i].value_len, "header %zu value length", i);
    FZ_CHECK(h->hdrs[i].name_len > 0, "empty header name");
    for (size_t k = 0; k < h->hdrs[i].name_len; k++)
      FZ_CHECK(fz_is_tchar((unsigned char)nm[k]), "bad char in header name");
    for (size_t k = 0; k < h->hdrs[i].value_len; k++)
      FZ_CHECK(v[k] != '\r' && v[k] != '\n', "CR/LF in header value");
    if (h->hdrs[i].value_len > 0) {
      char last = v[h->hdrs[i].value_len - 1];
      FZ_CHECK(last != ' ' && last != '\t', "trailing whitespace kept");
    }
  }
}

/* ---- re-parsing serialized heads
 * ------------------------------------------------ */

static int fz_reparse_on_head(void *ud, wstun__http_head *h) {
  (void)h;
  ++*(int *)ud;
  return 0;
}
static const wstun__http_parser_cbs fz_reparse_cbs = {fz_reparse_on_head, NULL,
                                                      NULL};

/* Parses `text` (a head we wrote) with a fresh parser of the same type: 1
 * if the head came out, 0 if not. Either way *p is to be freed. */
static int fz_reparse(llhttp_type_t type, const wstun__buf *text,
                      wstun__http_parser *p, int *heads) {
  *heads = 0;
  wstun__http_parser_init(p, type, 0, 0, &fz_reparse_cbs, heads);
  size_t used = 0;
  int rc = wstun__http_parser_feed(p, wstun__buf_data(text),
                                   wstun__buf_size(text), &used);
  if (rc == WSTUN__HTTP_ERROR || *heads != 1) {
    return 0;
  }
  return 1;
}

static void fz_dump(const char *what, const wstun__buf *b) {
  fprintf(stderr, "%s (%zu bytes): \"", what, wstun__buf_size(b));
  for (size_t i = 0; i < wstun__buf_size(b); i++) {
    uint8_t c = wstun__buf_data(b)[i];
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
      fputc(c, stderr);
    else
      fprintf(stderr, "\\x%02x", c);
  }
  fprintf(stderr, "\"\n");
}

/* `got` (re-parsed from our own output) must be the head `want` describes. */
static void fz_same_head(const wstun__http_head *want,
                         const wstun__http_head *got, const wstun__buf *text) {
  int ok = 1;
  if (want->is_request) {
    ok &= got->method == want->method;
    ok &= got->target_len == want->target_len &&
          memcmp(wstun__http_head_target(got), wstun__http_head_target(want),
                 want->target_len) == 0;
  } else {
    ok &= got->status == want->status;
    const char *reason = want->target_len ? wstun__http_head_target(want)
                                          : wstun__http_reason(want->status);
    ok &= strcmp(wstun__http_head_target(got), reason) == 0;
  }
  ok &= got->major == 1 && got->minor == 1;
  ok &= got->nhdrs == want->nhdrs;
  for (size_t i = 0; ok && i < want->nhdrs; i++) {
    ok &= got->hdrs[i].name_len == want->hdrs[i].name_len &&
          memcmp(wstun__http_head_name(got, i), wstun__http_head_name(want, i),
                 want->hdrs[i].name_len) == 0;
    ok &= got->hdrs[i].value_len == want->hdrs[i].value_len &&
          memcmp(wstun__http_head_value(got, i),
                 wstun__http_head_value(want, i), want->hdrs[i].value_len) == 0;
  }
  if (!ok)
    fz_dump("serialized head", text);
  FZ_CHECK(ok, "our serialization of a parsed head re-parses differently");
}

/* Serializes h and checks the result parses back into h. */
static void fz_roundtrip(fz_http *s, const wstun__http_head *h,
                         const char *when) {
  wstun__buf out;
  wstun__buf_init(&out);
  if (wstun__http_head_write(h, &out) != 0) {
    FZ_CHECK(!s->checks || fz_alloc_failed, "head_write failed (%s)", when);
    wstun__buf_free(&out);
    return;
  }
  wstun__http_parser p;
  int heads = 0;
  int parsed = fz_reparse(s->type, &out, &p, &heads);
  const char *why = parsed ? NULL : llhttp_get_error_reason(&p.llhttp);
  /* "method-protocol": llhttp accepts RTSP/ICE request lines
   * ("DESCRIBE / RTSP/1.0"); head_write turns them into HTTP/1.1 request
   * lines that llhttp refuses ("Invalid method for HTTP/x.x request") */
  /* "obs-fold": a header line starting with SP/HT continues the previous
   * one; llhttp 8 joins it (the value comes out with a SP instead of the
   * CRLF) but judged Connection/Upgrade/Transfer-Encoding on the folded
   * form, so the joined line we write means something else to it */
  int tolerated = (why != NULL && strstr(why, "Invalid method for HTTP") &&
                   fz_known("method-protocol")) ||
                  (s->folded && fz_known("obs-fold"));
  if ((!parsed && tolerated) || (h->major == 0 && fz_known("http09"))) {
    wstun__http_parser_free(&p);
    wstun__buf_free(&out);
    return;
  }
  if (s->checks && !fz_alloc_failed) {
    if (!parsed) {
      fz_dump("serialized head", &out);
      fprintf(stderr, "re-parse: status %d (%s), llhttp: %s\n", p.error_status,
              p.error_text ? p.error_text : "-", why ? why : "-");
    }
    FZ_CHECK(parsed, "our serialization of a parsed head does not parse (%s)",
             when);
    fz_same_head(h, &p.head, &out);
  }
  wstun__http_parser_free(&p);
  wstun__buf_free(&out);
}

/* ---- after a complete message
 * ------------------------------------------------- */

static const char *const fz_hop[] = {"Connection",
                                     "Keep-Alive",
                                     "Proxy-Authenticate",
                                     "Proxy-Authorization",
                                     "Proxy-Connection",
                                     "TE",
                                     "Trailer",
                                     "Trailers",
                                     "Upgrade"};

static int fz_should_strip(const wstun__http_head *orig, const char *name,
                           size_t n, int framing) {
  for (size_t i = 0; i < sizeof(fz_hop) / sizeof(fz_hop[0]); i++)
    if (fz_ieq(name, n, fz_hop[i]))
      return 1;
  if (framing && (fz_ieq(name, n, "Transfer-Encoding") ||
                  fz_ieq(name, n, "Content-Length")))
    return 1;
  return fz_ref_has_token(orig, "Connection", name, n);
}

static void fz_process(fz_http *s, wstun__http_head *h) {
  int checks = s->checks && !fz_alloc_failed;
  if (checks)
    fz_check_head(h, s->type == HTTP_REQUEST);

  /* head_get: the first header of that name, whatever its case */
  for (size_t i = 0; i < h->nhdrs; i++) {
    const char *nm = wstun__http_head_name(h, i);
    const char *got = wstun__http_head_get(h, nm);
    size_t first = i;
    for (size_t k = 0; k < i; k++)
      if (fz_ieq(wstun__http_head_name(h, k), h->hdrs[k].name_len, nm)) {
        first = k;
        break;
      }
    FZ_CHECK(got == wstun__http_head_value(h, first), "head_get(%s)", nm);
    /* has_token agrees with the reference on Connection */
    int lib = wstun__http_head_has_token(h, "Connection", nm);
    int ref = fz_ref_has_token(h, "Connection", nm, h->hdrs[i].name_len);
    FZ_CHECK(lib == ref, "has_token(Connection, %s): lib %d, reference %d", nm,
             lib, ref);
  }
  (void)wstun__http_head_get(h, "Host");
  (void)wstun__http_head_has_token(h, "Connection", "close");
  (void)wstun__http_head_has_token(h, "Transfer-Encoding", "chunked");

  /* as parsed */
  fz_roundtrip(s, h, "as parsed");

  /* keep a copy of the original (our own re-parse) to check strip against */
  wstun__buf orig_text;
  wstun__buf_init(&orig_text);
  wstun__http_parser orig;
  int heads = 0, have_orig = 0;
  if (wstun__http_head_write(h, &orig_text) == 0)
    have_orig = fz_reparse(s->type, &orig_text, &orig, &heads);
  else
    wstun__http_parser_init(&orig, s->type, 0, 0, &fz_reparse_cbs, &heads);

  /* every user in lib/ strips with framing = 1 and then writes its own
   * Content-Length or Transfer-Encoding: chunked; framing = 0 is checked
   * for the strip itself and memory safety only (an upgrade request may
   * carry a Transfer-Encoding llhttp only refuses once Upgrade is gone) */
  int framing = (s->flags & FL_KEEP_FRAMING) == 0;
  size_t before = h->nhdrs;
  wstun__http_head_strip_hop_by_hop(h, framing);
  if (checks && have_orig && !fz_alloc_failed) {
    const wstun__http_head *o = &orig.head;
    FZ_CHECK(o->nhdrs == before, "copy has %zu headers, head %zu", o->nhdrs,
             before);
    size_t k = 0;
    for (size_t i = 0; i < o->nhdrs; i++) {
      const char *nm = wstun__http_head_name(o, i);
      if (fz_should_strip(o, nm, o->hdrs[i].name_len, framing))
        continue;
      FZ_CHECK(k < h->nhdrs, "strip_hop_by_hop removed %s", nm);
      FZ_CHECK(strcmp(wstun__http_head_name(h, k), nm) == 0 &&
                   strcmp(wstun__http_head_value(h, k),
                          wstun__http_head_value(o, i)) == 0,
               "strip_hop_by_hop: header %zu is %s, want %s", k,
               wstun__http_head_name(h, k), nm);
      k++;
    }
    FZ_CHECK(k == h->nhdrs, "strip_hop_by_hop kept %zu headers, want %zu",
             h->nhdrs, k);
  }
  wstun__http_parser_free(&orig);
  wstun__buf_free(&orig_text);

  /* what the server does next: its own framing, X-Forwarded-For, and
   * /_token/<tok>/rest becomes /rest (a target cut out of the old one, in
   * the same text) */
  if (framing) {
    char len[32];
    int rc = 0;
    if (h->has_content_length) {
      snprintf(len, sizeof(len), "%llu", (unsigned long long)h->content_length);
      rc = wstun__http_head_add(h, "Content-Length", len);
    } else if (h->chunked) {
      rc = wstun__http_head_add(h, "Transfer-Encoding", "chunked");
    }
    FZ_CHECK(rc == 0 || fz_alloc_failed, "head_add failed");
  }
  size_t nh = h->nhdrs;
  int added = wstun__http_head_add(h, "X-Forwarded-For", "192.0.2.1") == 0;
  FZ_CHECK(added || fz_alloc_failed, "head_add failed");
  if (added && checks) {
    FZ_CHECK(h->nhdrs == nh + 1, "head_add did not add");
    FZ_CHECK(strcmp(wstun__http_head_name(h, nh), "X-Forwarded-For") == 0 &&
                 strcmp(wstun__http_head_value(h, nh), "192.0.2.1") == 0,
             "head_add stored something else");
  }
  if (h->is_request && (s->flags & FL_SET_TARGET) &&
      h->method != HTTP_CONNECT) {
    const char *t = wstun__http_head_target(h);
    size_t slashes = 0;
    for (size_t i = 0; i < h->target_len; i++)
      slashes += t[i] == '/';
    if (slashes > 0) {
      size_t want = s->pick % slashes, at = 0;
      for (size_t i = 0; i < h->target_len; i++)
        if (t[i] == '/' && want-- == 0) {
          at = i;
          break;
        }
      size_t len = h->target_len - at;
      char *copy = malloc(len + 1);
      if (copy == NULL)
        abort();
      memcpy(copy, t + at, len);
      copy[len] = '\0';
      int rc = wstun__http_head_set_target(h, t + at, len);
      FZ_CHECK(rc == 0 || fz_alloc_failed, "set_target failed");
      if (rc == 0 && checks)
        FZ_CHECK(h->target_len == len &&
                     strcmp(wstun__http_head_target(h), copy) == 0,
                 "set_target from inside the text: got \"%s\", want \"%s\"",
                 wstun__http_head_target(h), copy);
      free(copy);
    }
  }
  if (checks)
    fz_check_head(h, s->type == HTTP_REQUEST);
  if (framing)
    fz_roundtrip(s, h, "after strip/add/set_target");
}

/* ---- the parser under test
 * --------------------------------------------------- */

static int fz_on_head(void *ud, wstun__http_head *h) {
  fz_http *s = ud;
  s->heads++;
  s->body = 0;
  s->nhdrs_at_head = h->nhdrs;
  if ((s->flags & FL_FAIL_HEAD) && s->heads == 3)
    return -1;
  if (s->type == HTTP_RESPONSE && (s->flags & FL_HEAD_RESPONSE))
    return 1;
  return 0;
}

static int fz_on_body(void *ud, const uint8_t *d, size_t n) {
  fz_http *s = ud;
  FZ_CHECK(s->heads == s->completes + 1, "body outside of a message");
  FZ_CHECK(n > 0, "empty body callback");
  (void)d;
  s->body += n;
  FZ_CHECK(s->body <= FZ_MAX_BODY, "body %llu beyond max_body",
           (unsigned long long)s->body);
  return 0;
}

static int fz_on_complete(void *ud) {
  fz_http *s = ud;
  s->completes++;
  FZ_CHECK(s->completes == s->heads, "%d completes for %d heads", s->completes,
           s->heads);
  return 1; /* pause after each message, as the server does */
}

static const wstun__http_parser_cbs fz_cbs = {fz_on_head, fz_on_body,
                                              fz_on_complete};

static void fz_complete_message(fz_http *s, wstun__http_parser *p) {
  if (s->completes <= s->processed)
    return;
  s->processed = s->completes;
  wstun__http_head *h = &p->head;
  /* "trailers": wstun_http.c's header callbacks also run for the trailer
   * fields of a chunked body, after on_head, and append them to
   * head->hdrs; whoever reads the head after the body (the client's
   * in-process handler: wstun_request_header) sees them as headers */
  if (h->nhdrs != s->nhdrs_at_head && fz_known("trailers"))
    h->nhdrs = s->nhdrs_at_head < h->nhdrs ? s->nhdrs_at_head : h->nhdrs;
  if (s->checks && !fz_alloc_failed)
    FZ_CHECK(h->nhdrs == s->nhdrs_at_head,
             "head had %zu headers at on_head, %zu once the message completed",
             s->nhdrs_at_head, h->nhdrs);
  if (s->checks && !fz_alloc_failed) {
    FZ_CHECK(p->max_head == 0 || p->head_bytes <= p->max_head,
             "head of %zu bytes passed max_head", p->head_bytes);
    /* CONNECT and upgrades end at the head for llhttp, whatever
     * Content-Length says (the rest is another protocol) */
    if (h->has_content_length && !h->chunked && !p->llhttp.upgrade &&
        !(s->type == HTTP_RESPONSE && (s->flags & FL_HEAD_RESPONSE)))
      FZ_CHECK(s->body == h->content_length || h->status / 100 == 1 ||
                   h->status == 204 || h->status == 304,
               "body of %llu bytes for Content-Length %llu",
               (unsigned long long)s->body,
               (unsigned long long)h->content_length);
  }
  fz_process(s, h);
}

static int fz_http_run(llhttp_type_t type, const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  fz_http s;
  memset(&s, 0, sizeof(s));
  s.type = type;
  s.flags = fz_byte(&in);
  uint8_t seed = fz_byte(&in);
  s.pick = seed;
  s.checks = 1;
  static int installed;
  if (!installed) {
    fz_alloc_install();
    installed = 1;
  }
  fz_alloc_failed = 0;
  if (s.flags & FL_ALLOCFAIL)
    fz_alloc_fail_after(fz_byte(&in));
  fz_split sp;
  fz_split_init(&sp, seed);
  for (size_t i = 0; i + 1 < in.n; i++)
    if (in.d[i] == '\n' && (in.d[i + 1] == ' ' || in.d[i + 1] == '\t'))
      s.folded = 1;

  wstun__http_parser p;
  wstun__http_parser_init(&p, type, FZ_MAX_HEAD, FZ_MAX_BODY, &fz_cbs, &s);
  const uint8_t *d = in.d;
  size_t left = in.n;
  int failed = 0;
  while (left > 0 && !failed) {
    size_t chunk = fz_split_next(&sp, left);
    const uint8_t *c = d;
    size_t cl = chunk;
    d += chunk;
    left -= chunk;
    while (cl > 0) {
      size_t used = 0;
      int rc = wstun__http_parser_feed(&p, c, cl, &used);
      FZ_CHECK(used <= cl, "consumed %zu of %zu", used, cl);
      if (rc == WSTUN__HTTP_ERROR) {
        FZ_CHECK(p.error_status >= 400 && p.error_status <= 599,
                 "error_status %d", p.error_status);
        failed = 1;
        break;
      }
      c += used;
      cl -= used;
      if (rc == WSTUN__HTTP_PAUSED) {
        fz_complete_message(&s, &p);
        if (llhttp_get_errno(&p.llhttp) == HPE_PAUSED_UPGRADE) {
          failed = 1; /* the rest belongs to another protocol */
          break;
        }
        wstun__http_parser_resume(&p);
      } else {
        FZ_CHECK(cl == 0, "OK with %zu bytes not consumed", cl);
      }
    }
  }
  if (!failed && type == HTTP_RESPONSE) {
    /* end of the tunnel message: completes an EOF-delimited body */
    int rc = wstun__http_parser_finish(&p);
    if (rc == WSTUN__HTTP_OK)
      fz_complete_message(&s, &p);
  }
  if (s.checks && !fz_alloc_failed)
    FZ_CHECK(s.completes <= s.heads, "more completes than heads");
  wstun__http_parser_free(&p);
  fz_alloc_reset();
  return 0;
}

#endif
