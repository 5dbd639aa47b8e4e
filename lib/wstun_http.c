/* llhttp glue. llhttp may split any token across callbacks, so strings are
 * appended to head->text as they come and closed by the *_complete
 * callbacks. Limits (header block, body) are enforced here so every user
 * gets the same 431/413 answers. */
#include "wstun_http.h"

#include <stdio.h>
#include <string.h>

#include "wstun/wstun.h"
#include "wstun_alloc.h"
#include "wstun_util.h"

void wstun__http_head_init(wstun__http_head *h) {
  memset(h, 0, sizeof(*h));
}

void wstun__http_head_free(wstun__http_head *h) {
  wstun__buf_free(&h->text);
  wstun__free(h->hdrs);
  memset(h, 0, sizeof(*h));
}

void wstun__http_head_reset(wstun__http_head *h) {
  wstun__buf text = h->text;
  wstun__hdr *hdrs = h->hdrs;
  size_t cap = h->cap;
  memset(h, 0, sizeof(*h));
  wstun__buf_reset(&text);
  h->text = text;
  h->hdrs = hdrs;
  h->cap = cap;
}

const char *wstun__http_head_target(const wstun__http_head *h) {
  return h->target_len || h->target_off
             ? (const char *)h->text.base + h->target_off
             : "";
}
const char *wstun__http_head_name(const wstun__http_head *h, size_t i) {
  return (const char *)h->text.base + h->hdrs[i].name_off;
}
const char *wstun__http_head_value(const wstun__http_head *h, size_t i) {
  return (const char *)h->text.base + h->hdrs[i].value_off;
}

const char *wstun__http_head_get(const wstun__http_head *h, const char *name) {
  for (size_t i = 0; i < h->nhdrs; i++)
    if (wstun__ascii_casecmp_n(wstun__http_head_name(h, i), h->hdrs[i].name_len,
                               name) == 0)
      return wstun__http_head_value(h, i);
  return NULL;
}

const char *wstun__http_head_get_last(const wstun__http_head *h,
                                      const char *name) {
  for (size_t i = h->nhdrs; i-- > 0;)
    if (wstun__ascii_casecmp_n(wstun__http_head_name(h, i), h->hdrs[i].name_len,
                               name) == 0)
      return wstun__http_head_value(h, i);
  return NULL;
}

int wstun__http_head_join(const wstun__http_head *h, const char *name,
                          wstun__buf *out) {
  int n = 0;
  for (size_t i = 0; i < h->nhdrs; i++) {
    if (h->hdrs[i].value_len == 0 ||
        wstun__ascii_casecmp_n(wstun__http_head_name(h, i), h->hdrs[i].name_len,
                               name) != 0)
      continue;
    if ((n > 0 && wstun__buf_append(out, ", ", 2) != 0) ||
        wstun__buf_append(out, wstun__http_head_value(h, i),
                          h->hdrs[i].value_len) != 0)
      return WSTUN_ENOMEM;
    n++;
  }
  return n;
}

size_t wstun__http_head_remove(wstun__http_head *h, const char *name) {
  size_t w = 0, removed = 0;
  for (size_t i = 0; i < h->nhdrs; i++) {
    if (wstun__ascii_casecmp_n(wstun__http_head_name(h, i), h->hdrs[i].name_len,
                               name) == 0) {
      removed++;
      continue;
    }
    h->hdrs[w++] = h->hdrs[i];
  }
  h->nhdrs = w;
  return removed;
}

static int text_append(wstun__http_head *h, const char *s, size_t n,
                       uint32_t *off) {
  if (h->text.len + n + 1 > UINT32_MAX)
    return WSTUN_ENOMEM;
  *off = (uint32_t)h->text.len;
  /* `s` may point into the text itself (a target cut out of the old one):
   * keep its offset across the reallocation */
  const uint8_t *base = h->text.base;
  int inside = base && (const uint8_t *)s >= base &&
               (const uint8_t *)s < base + h->text.cap;
  size_t soff = inside ? (size_t)((const uint8_t *)s - base) : 0;
  if (wstun__buf_reserve(&h->text, n + 1) != 0)
    return WSTUN_ENOMEM;
  if (inside)
    s = (const char *)h->text.base + soff;
  memmove(h->text.base + h->text.len, s, n);
  h->text.base[h->text.len + n] = '\0';
  h->text.len += n + 1;
  return 0;
}

static int hdrs_grow(wstun__http_head *h) {
  if (h->nhdrs < h->cap)
    return 0;
  size_t cap = h->cap ? h->cap * 2 : 16;
  wstun__hdr *n = wstun__realloc(h->hdrs, cap * sizeof(*n));
  if (n == NULL)
    return WSTUN_ENOMEM;
  h->hdrs = n;
  h->cap = cap;
  return 0;
}

int wstun__http_head_add(wstun__http_head *h, const char *name,
                         const char *value) {
  if (hdrs_grow(h) != 0)
    return WSTUN_ENOMEM;
  wstun__hdr *e = &h->hdrs[h->nhdrs];
  size_t nl = strlen(name), vl = strlen(value);
  /* `name` or `value` may point into the text (a header copied from
   * another): make room for both strings at once, so appending the name
   * cannot move the text from under the value */
  const char *base = (const char *)h->text.base;
  int nin = base && name >= base && name < base + h->text.cap;
  int vin = base && value >= base && value < base + h->text.cap;
  size_t noff = nin ? (size_t)(name - base) : 0;
  size_t voff = vin ? (size_t)(value - base) : 0;
  if (h->text.len + nl + vl + 2 > UINT32_MAX ||
      wstun__buf_reserve(&h->text, nl + vl + 2) != 0)
    return WSTUN_ENOMEM;
  if (nin)
    name = (const char *)h->text.base + noff;
  if (vin)
    value = (const char *)h->text.base + voff;
  if (text_append(h, name, nl, &e->name_off) != 0 ||
      text_append(h, value, vl, &e->value_off) != 0)
    return WSTUN_ENOMEM;
  e->name_len = (uint32_t)nl;
  e->value_len = (uint32_t)vl;
  h->nhdrs++;
  return 0;
}

int wstun__http_head_set_target(wstun__http_head *h, const char *target,
                                size_t len) {
  uint32_t off;
  if (text_append(h, target, len, &off) != 0)
    return WSTUN_ENOMEM;
  h->target_off = off;
  h->target_len = (uint32_t)len;
  return 0;
}

/* Calls fn for every comma-separated token of every `name` header. */
static int for_each_token(const wstun__http_head *h, const char *name,
                          int (*fn)(void *, const char *, size_t), void *arg) {
  for (size_t i = 0; i < h->nhdrs; i++) {
    if (wstun__ascii_casecmp_n(wstun__http_head_name(h, i), h->hdrs[i].name_len,
                               name) != 0)
      continue;
    const char *v = wstun__http_head_value(h, i);
    while (*v) {
      while (*v == ' ' || *v == '\t' || *v == ',')
        v++;
      size_t n = strcspn(v, ",");
      size_t t = n;
      while (t > 0 && (v[t - 1] == ' ' || v[t - 1] == '\t'))
        t--;
      if (t > 0 && fn(arg, v, t))
        return 1;
      v += n;
    }
  }
  return 0;
}

static int token_matches(void *arg, const char *tok, size_t n) {
  return wstun__ascii_casecmp_n(tok, n, (const char *)arg) == 0;
}

int wstun__http_head_has_token(const wstun__http_head *h, const char *name,
                               const char *token) {
  return for_each_token(h, name, token_matches, (void *)token);
}

void wstun__http_head_strip_hop_by_hop(wstun__http_head *h, int framing) {
  static const char *const hop[] = {"Keep-Alive",
                                    "Proxy-Authenticate",
                                    "Proxy-Authorization",
                                    "Proxy-Connection",
                                    "TE",
                                    "Trailer",
                                    "Trailers",
                                    "Upgrade"};
  /* every header that Connection names goes, however many (RFC 9110
   * 7.6.1); Connection itself last, since it is the list */
  size_t w = 0;
  for (size_t i = 0; i < h->nhdrs; i++) {
    const char *name = wstun__http_head_name(h, i);
    if (wstun__http_head_has_token(h, "Connection", name) &&
        wstun__ascii_casecmp_n(name, h->hdrs[i].name_len, "Connection") != 0)
      continue;
    h->hdrs[w++] = h->hdrs[i];
  }
  h->nhdrs = w;
  wstun__http_head_remove(h, "Connection");
  for (size_t i = 0; i < sizeof(hop) / sizeof(hop[0]); i++)
    wstun__http_head_remove(h, hop[i]);
  if (framing) {
    wstun__http_head_remove(h, "Transfer-Encoding");
    wstun__http_head_remove(h, "Content-Length");
  }
}

int wstun__http_head_strip_for_upgrade(wstun__http_head *h) {
  wstun__buf up = WSTUN__BUF_INIT;
  int n = wstun__http_head_join(h, "Upgrade", &up);
  int rc = n < 0 ? n : wstun__buf_append(&up, "", 1);
  wstun__http_head_strip_hop_by_hop(h, 1);
  if (rc == 0 && n > 0) {
    rc = wstun__http_head_add(h, "Connection", "Upgrade");
    rc |= wstun__http_head_add(h, "Upgrade", (const char *)up.base);
  }
  wstun__buf_free(&up);
  return rc != 0 ? WSTUN_ENOMEM : 0;
}

int wstun__http_head_frame(wstun__http_head *h, int has_len, uint64_t len,
                           int chunk_ok, int *chunked) {
  *chunked = 0;
  if (has_len) {
    char text[32];
    snprintf(text, sizeof(text), "%llu", (unsigned long long)len);
    return wstun__http_head_add(h, "Content-Length", text);
  }
  if (!chunk_ok)
    return 0;
  *chunked = 1;
  return wstun__http_head_add(h, "Transfer-Encoding", "chunked");
}

/* The IANA HTTP Status Code Registry (RFC 9110 and the RFCs it names),
 * typed in: llhttp's HTTP_STATUS_MAP has enum names, not phrases, and
 * mixes in unofficial codes (419, 420, 52x, ...). 418 is "(Unused)" in
 * the registry; it gets the phrase of RFC 2324 that everyone (Go
 * included) sends. Unregistered codes get an empty phrase, which RFC 9112
 * allows. */
static const struct {
  short code;
  const char *phrase;
} reasons[] = {
    {100, "Continue"},
    {101, "Switching Protocols"},
    {102, "Processing"},
    {103, "Early Hints"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {203, "Non-Authoritative Information"},
    {204, "No Content"},
    {205, "Reset Content"},
    {206, "Partial Content"},
    {207, "Multi-Status"},
    {208, "Already Reported"},
    {226, "IM Used"},
    {300, "Multiple Choices"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {305, "Use Proxy"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {402, "Payment Required"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {406, "Not Acceptable"},
    {407, "Proxy Authentication Required"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {410, "Gone"},
    {411, "Length Required"},
    {412, "Precondition Failed"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {415, "Unsupported Media Type"},
    {416, "Range Not Satisfiable"},
    {417, "Expectation Failed"},
    {418, "I'm a teapot"},
    {421, "Misdirected Request"},
    {422, "Unprocessable Content"},
    {423, "Locked"},
    {424, "Failed Dependency"},
    {425, "Too Early"},
    {426, "Upgrade Required"},
    {428, "Precondition Required"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {451, "Unavailable For Legal Reasons"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
    {505, "HTTP Version Not Supported"},
    {506, "Variant Also Negotiates"},
    {507, "Insufficient Storage"},
    {508, "Loop Detected"},
    {510, "Not Extended"},
    {511, "Network Authentication Required"},
};

const char *wstun__http_reason(int status) {
  size_t lo = 0, hi = sizeof(reasons) / sizeof(reasons[0]);
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (reasons[mid].code == status)
      return reasons[mid].phrase;
    if (reasons[mid].code < status)
      lo = mid + 1;
    else
      hi = mid;
  }
  return "";
}

int wstun__http_head_write(const wstun__http_head *h, wstun__buf *out) {
  int rc;
  if (h->is_request)
    rc = wstun__buf_appendf(out, "%s %s HTTP/1.1\r\n",
                            llhttp_method_name((llhttp_method_t)h->method),
                            wstun__http_head_target(h));
  else
    rc = wstun__buf_appendf(out, "HTTP/1.1 %d %s\r\n", h->status,
                            h->target_len ? wstun__http_head_target(h)
                                          : wstun__http_reason(h->status));
  for (size_t i = 0; rc == 0 && i < h->nhdrs; i++) {
    rc |= wstun__buf_append(out, wstun__http_head_name(h, i),
                            h->hdrs[i].name_len);
    rc |= wstun__buf_append(out, ": ", 2);
    rc |= wstun__buf_append(out, wstun__http_head_value(h, i),
                            h->hdrs[i].value_len);
    rc |= wstun__buf_append(out, "\r\n", 2);
  }
  if (rc == 0)
    rc = wstun__buf_append(out, "\r\n", 2);
  return rc ? WSTUN_ENOMEM : 0;
}

int wstun__http_write_chunk_header(wstun__buf *out, size_t len) {
  return wstun__buf_appendf(out, "%zx\r\n", len);
}

int wstun__http_write_body(wstun__buf *out, const void *data, size_t n,
                           int chunked) {
  int rc = 0;
  if (!chunked)
    return wstun__buf_append(out, data, n) == 0 ? 0 : WSTUN_ENOMEM;
  if (n == 0)
    return 0; /* an empty chunk would be the last one */
  rc |= wstun__http_write_chunk_header(out, n);
  rc |= wstun__buf_append(out, data, n);
  rc |= wstun__buf_append(out, WSTUN__HTTP_CHUNK_TRAILER, 2);
  return rc ? WSTUN_ENOMEM : 0;
}

int wstun__http_write_response(wstun__buf *out, int status,
                               const char *content_type, const void *body,
                               size_t n, const char *extra_headers, int flags) {
  int rc = wstun__buf_appendf(
      out,
      "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n",
      status, wstun__http_reason(status), content_type, n,
      extra_headers ? extra_headers : "",
      flags & WSTUN__HTTP_CLOSE ? "Connection: close\r\n" : "");
  if (rc != 0 || (flags & WSTUN__HTTP_NO_BODY))
    return rc;
  return wstun__buf_append(out, body, n);
}

int wstun__http_write_simple(wstun__buf *out, int status, const char *body,
                             const char *extra_headers, int flags) {
  return wstun__http_write_response(out, status, "text/plain; charset=utf-8",
                                    body, strlen(body), extra_headers, flags);
}

/* ---- parser ------------------------------------------------------------ */

#define PARSER(l) ((wstun__http_parser *)(l)->data)

static int fail(wstun__http_parser *p, int status, const char *text) {
  p->error_status = status;
  p->error_text = text;
  return HPE_USER;
}

/* Counts head bytes against the limit. */
static int head_bytes(wstun__http_parser *p, size_t n) {
  p->head_bytes += n;
  if (p->max_head && p->head_bytes > p->max_head)
    return fail(p, 431, "Request header fields too large");
  return 0;
}

/* Appends to the last open string of the head (no NUL yet). */
static int grow_open(wstun__http_parser *p, const char *at, size_t n) {
  if (wstun__buf_append(&p->head.text, at, n) != 0)
    return fail(p, 500, "Out of memory");
  return 0;
}

static int close_open(wstun__http_parser *p, uint32_t start, uint32_t *off,
                      uint32_t *len) {
  *off = start;
  *len = (uint32_t)(p->head.text.len - start);
  if (wstun__buf_append(&p->head.text, "", 1) != 0)
    return fail(p, 500, "Out of memory");
  return 0;
}

static int on_message_begin(llhttp_t *l) {
  wstun__http_parser *p = PARSER(l);
  wstun__http_head_reset(&p->head);
  p->head.is_request = llhttp_get_type(l) == HTTP_REQUEST;
  p->head_bytes = 16; /* method, version, spaces and CRLFs of line one */
  p->body_bytes = 0;
  p->in_head = 1;
  p->in_msg = 1;
  p->field_open = p->value_open = 0;
  return 0;
}

/* The string being collected starts at head.text.len when it opens; we
 * remember that in target_off / a new header entry. */
static int on_url(llhttp_t *l, const char *at, size_t n) {
  wstun__http_parser *p = PARSER(l);
  if (head_bytes(p, n))
    return HPE_USER;
  if (!p->field_open) {
    p->head.target_off = (uint32_t)p->head.text.len;
    p->field_open = 1;
  }
  return grow_open(p, at, n);
}

static int on_url_complete(llhttp_t *l) {
  wstun__http_parser *p = PARSER(l);
  if (!p->field_open) {
    p->head.target_off = (uint32_t)p->head.text.len;
  }
  p->field_open = 0;
  return close_open(p, p->head.target_off, &p->head.target_off,
                    &p->head.target_len)
             ? HPE_USER
             : 0;
}

static int on_header_field(llhttp_t *l, const char *at, size_t n) {
  wstun__http_parser *p = PARSER(l);
  if (!p->in_head)
    return 0; /* trailer fields of a chunked body: not part of the head */
  if (head_bytes(p, n))
    return HPE_USER;
  if (!p->field_open) {
    if (hdrs_grow(&p->head) != 0)
      return fail(p, 500, "Out of memory");
    memset(&p->head.hdrs[p->head.nhdrs], 0, sizeof(wstun__hdr));
    p->head.hdrs[p->head.nhdrs].name_off = (uint32_t)p->head.text.len;
    p->field_open = 1;
  }
  return grow_open(p, at, n);
}

/* RFC 9110 5.6.2 token characters: anything else in a field name (a space
 * before the colon above all) is refused, since a lenient reading of
 * "Host : x" is how requests get smuggled past header filters. */
static int is_tchar(unsigned char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
      (c >= '0' && c <= '9'))
    return 1;
  return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int on_header_field_complete(llhttp_t *l) {
  wstun__http_parser *p = PARSER(l);
  if (!p->in_head)
    return 0;
  if (!p->field_open)
    return fail(p, 400, "Bad request: empty header name");
  /* ": " and CRLF count against the head limit too */
  if (head_bytes(p, 4))
    return HPE_USER;
  p->field_open = 0;
  wstun__hdr *e = &p->head.hdrs[p->head.nhdrs];
  if (close_open(p, e->name_off, &e->name_off, &e->name_len))
    return HPE_USER;
  const unsigned char *name = p->head.text.base + e->name_off;
  if (e->name_len == 0)
    return fail(p, 400, "Bad request: empty header name");
  for (uint32_t i = 0; i < e->name_len; i++)
    if (!is_tchar(name[i]))
      return fail(p, 400, "Bad request: invalid header name");
  e->value_off = (uint32_t)p->head.text.len;
  p->value_open = 1;
  return 0;
}

static int on_header_value(llhttp_t *l, const char *at, size_t n) {
  wstun__http_parser *p = PARSER(l);
  if (!p->in_head)
    return 0; /* trailer fields of a chunked body: not part of the head */
  /* A value piece right after a line break is obsolete line folding
   * (RFC 9112 5.2). llhttp joins it, but judged Connection and
   * Transfer-Encoding on the folded form: refuse it, as the RFC allows. */
  char before = (const uint8_t *)at > p->feed_base ? at[-1] : p->feed_prev;
  if (n > 0 && before == '\n')
    return fail(p, 400, "Bad request: obsolete line folding");
  if (head_bytes(p, n))
    return HPE_USER;
  for (size_t i = 0; i < n; i++)
    if (at[i] == '\r' || at[i] == '\n' || at[i] == '\0')
      return fail(p, 400, "Bad request: invalid header value");
  return grow_open(p, at, n);
}

static int on_header_value_complete(llhttp_t *l) {
  wstun__http_parser *p = PARSER(l);
  if (!p->in_head)
    return 0;
  if (!p->value_open)
    return fail(p, 400, "Bad request");
  p->value_open = 0;
  wstun__hdr *e = &p->head.hdrs[p->head.nhdrs];
  if (close_open(p, e->value_off, &e->value_off, &e->value_len))
    return HPE_USER;
  /* trim trailing whitespace llhttp leaves in values */
  char *v = (char *)p->head.text.base + e->value_off;
  while (e->value_len > 0 &&
         (v[e->value_len - 1] == ' ' || v[e->value_len - 1] == '\t'))
    v[--e->value_len] = '\0';
  p->head.nhdrs++;
  return 0;
}

static int on_status(llhttp_t *l, const char *at, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)at[i];
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return fail(PARSER(l), 502, "Bad status line");
  }
  return on_url(l, at, n);
}
static int on_status_complete(llhttp_t *l) {
  return on_url_complete(l);
}

/* Counts transfer codings; stops at one that is not "chunked". */
static int te_coding(void *arg, const char *tok, size_t n) {
  (*(int *)arg)++;
  return wstun__ascii_casecmp_n(tok, n, "chunked") != 0;
}

static int on_headers_complete(llhttp_t *l) {
  wstun__http_parser *p = PARSER(l);
  wstun__http_head *h = &p->head;
  p->in_head = 0;
  h->major = llhttp_get_http_major(l);
  h->minor = llhttp_get_http_minor(l);
  h->method = llhttp_get_method(l);
  h->status = llhttp_get_status_code(l);
  h->keep_alive = llhttp_should_keep_alive(l);
  h->chunked = (l->flags & F_CHUNKED) != 0;
  h->has_content_length = (l->flags & F_CONTENT_LENGTH) != 0;
  h->content_length = h->has_content_length ? l->content_length : 0;
  h->has_body_framing = h->chunked || h->has_content_length;
  /* What llhttp lets through but nobody should relay: HTTP/0.9 request
   * lines, RTSP methods (and the HTTP/2 preface), status codes that are
   * not three digits. Each would be re-written as something else. */
  if (h->is_request) {
    if (h->major == 0)
      return fail(p, 400, "Bad request: HTTP/1.x required");
    if (h->method > HTTP_SOURCE)
      return fail(p, 400, "Bad request: unsupported method");
    if (h->target_len == 0)
      return fail(p, 400, "Bad request: empty target");
  } else if (h->status < 100 || h->status > 999) {
    return fail(p, 502, "Bad status line");
  }
  /* Bodies are re-framed on the way (chunked removed, our own framing
   * added), so any other coding (gzip, chunked) would be dropped without
   * a word: refused instead. RFC 9112 6.1: a server that does not
   * understand a transfer coding SHOULD answer 501 (a request whose
   * codings do not end with chunked is llhttp's 400, 6.3's MUST); a
   * response cannot be relayed faithfully (HTTP/1.0 requesters take no
   * coding at all), so it is a 502, as Go's net/http client refuses it. */
  int codings = 0;
  if ((h->chunked || !h->is_request) &&
      (for_each_token(h, "Transfer-Encoding", te_coding, &codings) ||
       codings > 1))
    return h->is_request ? fail(p, 501, "Transfer-Encoding not supported")
                         : fail(p, 502,
                                "Transfer-Encoding of the response not "
                                "supported (only chunked)");
  if (h->has_content_length && p->max_body && h->content_length > p->max_body)
    return fail(p, 413, "Request body too large");
  int rc = p->cbs.on_head ? p->cbs.on_head(p->ud, h) : 0;
  if (rc < 0) {
    if (p->error_status == 0)
      p->error_status = 400;
    return HPE_USER;
  }
  /* llhttp: 1 = no body; keep an upgrade request's body semantics plain */
  return rc == 1 ? 1 : 0;
}

static int on_body(llhttp_t *l, const char *at, size_t n) {
  wstun__http_parser *p = PARSER(l);
  p->body_bytes += n;
  if (p->max_body && p->body_bytes > p->max_body)
    return fail(p, 413, "Request body too large");
  if (p->cbs.on_body && p->cbs.on_body(p->ud, (const uint8_t *)at, n)) {
    if (p->error_status == 0)
      p->error_status = 502;
    return HPE_USER;
  }
  return 0;
}

static int on_message_complete(llhttp_t *l) {
  wstun__http_parser *p = PARSER(l);
  p->in_msg = 0;
  int rc = p->cbs.on_complete ? p->cbs.on_complete(p->ud) : 0;
  if (rc < 0) {
    if (p->error_status == 0)
      p->error_status = 502;
    return HPE_USER;
  }
  return rc == 1 ? HPE_PAUSED : 0;
}

void wstun__http_parser_init(wstun__http_parser *p, llhttp_type_t type,
                             size_t max_head, uint64_t max_body,
                             const wstun__http_parser_cbs *cbs, void *ud) {
  memset(p, 0, sizeof(*p));
  llhttp_settings_init(&p->settings);
  p->settings.on_message_begin = on_message_begin;
  p->settings.on_url = on_url;
  p->settings.on_url_complete = on_url_complete;
  p->settings.on_status = on_status;
  p->settings.on_status_complete = on_status_complete;
  p->settings.on_header_field = on_header_field;
  p->settings.on_header_field_complete = on_header_field_complete;
  p->settings.on_header_value = on_header_value;
  p->settings.on_header_value_complete = on_header_value_complete;
  p->settings.on_headers_complete = on_headers_complete;
  p->settings.on_body = on_body;
  p->settings.on_message_complete = on_message_complete;
  llhttp_init(&p->llhttp, type, &p->settings);
  p->llhttp.data = p;
  p->max_head = max_head;
  p->max_body = max_body;
  p->cbs = *cbs;
  p->ud = ud;
  wstun__http_head_init(&p->head);
}

void wstun__http_parser_free(wstun__http_parser *p) {
  wstun__http_head_free(&p->head);
}

static int map_error(wstun__http_parser *p, llhttp_errno_t err) {
  if (p->error_status == 0) {
    if (p->in_head && p->max_head && p->head_bytes > p->max_head) {
      p->error_status = 431;
      p->error_text = "Request header fields too large";
    } else {
      p->error_status = 400;
      p->error_text = "Bad request";
    }
  }
  (void)err;
  return WSTUN__HTTP_ERROR;
}

int wstun__http_parser_feed(wstun__http_parser *p, const uint8_t *data,
                            size_t len, size_t *consumed) {
  *consumed = 0;
  if (p->error_status)
    return WSTUN__HTTP_ERROR;
  llhttp_errno_t state = llhttp_get_errno(&p->llhttp);
  if (state == HPE_PAUSED || state == HPE_PAUSED_UPGRADE)
    return WSTUN__HTTP_PAUSED; /* nothing is parsed until resumed */
  p->feed_base = data;
  llhttp_errno_t err = llhttp_execute(&p->llhttp, (const char *)data, len);
  if (len > 0)
    p->feed_prev = (char)data[len - 1];
  if (err == HPE_OK) {
    *consumed = len;
    return WSTUN__HTTP_OK;
  }
  if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    *consumed =
        (size_t)((const uint8_t *)llhttp_get_error_pos(&p->llhttp) - data);
    return WSTUN__HTTP_PAUSED;
  }
  return map_error(p, err);
}

int wstun__http_parser_finish(wstun__http_parser *p) {
  if (p->error_status)
    return WSTUN__HTTP_ERROR;
  llhttp_errno_t err = llhttp_finish(&p->llhttp);
  if (err == HPE_OK || err == HPE_PAUSED)
    return WSTUN__HTTP_OK;
  return map_error(p, err);
}

void wstun__http_parser_resume(wstun__http_parser *p) {
  if (llhttp_get_errno(&p->llhttp) == HPE_PAUSED_UPGRADE)
    llhttp_resume_after_upgrade(&p->llhttp);
  else
    llhttp_resume(&p->llhttp);
}

int wstun__http_parser_in_message(const wstun__http_parser *p) {
  return p->in_msg;
}
