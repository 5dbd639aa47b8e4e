/* HTTP/1.x glue over llhttp: an incremental parser that collects the head
 * (request or status line plus headers) and streams the body, and the
 * serialization of heads and chunked framing. Pure: no I/O. */
#ifndef WSTUN_HTTP_H
#define WSTUN_HTTP_H

#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>

#include "wstun_buf.h"

typedef struct wstun__hdr {
  uint32_t name_off, name_len; /* into head->text, NUL-terminated */
  uint32_t value_off, value_len;
} wstun__hdr;

typedef struct wstun__http_head {
  int is_request;
  int method; /* llhttp_method_t, requests */
  int status; /* responses */
  uint8_t major, minor;
  uint32_t target_off, target_len; /* request target or reason phrase */
  wstun__buf text;                 /* storage of every string of the head */
  wstun__hdr *hdrs;
  size_t nhdrs, cap;
  int keep_alive;       /* as llhttp decided for this message */
  int has_body_framing; /* Content-Length or chunked present */
  int chunked;
  uint64_t content_length; /* valid when has_content_length */
  int has_content_length;
} wstun__http_head;

void wstun__http_head_init(wstun__http_head *h);
void wstun__http_head_free(wstun__http_head *h);
void wstun__http_head_reset(wstun__http_head *h);

/* Pointers returned below stay valid until the head is modified. */
const char *wstun__http_head_target(const wstun__http_head *h);
const char *wstun__http_head_name(const wstun__http_head *h, size_t i);
const char *wstun__http_head_value(const wstun__http_head *h, size_t i);
/* First value of a header (case-insensitive name), or NULL. */
const char *wstun__http_head_get(const wstun__http_head *h, const char *name);
/* Last value of a header, or NULL: what an intermediary appended last
 * (X-Forwarded-For), never an earlier line a requester wrote. */
const char *wstun__http_head_get_last(const wstun__http_head *h,
                                      const char *name);
/* Appends the non-empty values of every `name` line, in order, joined by
 * ", " (one list, as RFC 9110 5.3 reads them) to `out` (not into the head
 * itself). Returns how many values, or WSTUN_ENOMEM. */
int wstun__http_head_join(const wstun__http_head *h, const char *name,
                          wstun__buf *out);
/* Removes every header with that name; returns how many. */
size_t wstun__http_head_remove(wstun__http_head *h, const char *name);
/* Appends a header; 0 or WSTUN_ENOMEM. `name` and `value` may point into
 * the head itself (they are copied before anything moves); any other
 * pointer into the head is stale afterwards. */
int wstun__http_head_add(wstun__http_head *h, const char *name,
                         const char *value);
/* Replaces the target (requests); 0 or WSTUN_ENOMEM. `target` may point
 * into the head, but must still be valid: take it before adding headers. */
int wstun__http_head_set_target(wstun__http_head *h, const char *target,
                                size_t len);
/* Removes the hop-by-hop headers of RFC 9110 7.6.1 plus every header
 * named in Connection, and framing headers (Content-Length,
 * Transfer-Encoding) when `framing` is set. */
void wstun__http_head_strip_hop_by_hop(wstun__http_head *h, int framing);
/* The same for the head of an upgrade (a request with Upgrade and
 * Connection: upgrade, or its 101), which the next hop must see as one:
 * the hop-by-hop and framing headers go, then "Connection: Upgrade" and
 * one Upgrade line with every protocol the head named come back (none
 * when it named none). 0 or WSTUN_ENOMEM. */
int wstun__http_head_strip_for_upgrade(wstun__http_head *h);
/* Re-frames a message whose framing headers were stripped: adds
 * Content-Length when `has_len`, else "Transfer-Encoding: chunked" when
 * `chunk_ok` (then *chunked = 1: the body must be chunk-encoded), else
 * nothing. 0 or WSTUN_ENOMEM. */
int wstun__http_head_frame(wstun__http_head *h, int has_len, uint64_t len,
                           int chunk_ok, int *chunked);
/* 1 if the comma-separated header `name` contains `token`. */
int wstun__http_head_has_token(const wstun__http_head *h, const char *name,
                               const char *token);

/* Serializes "METHOD target HTTP/1.1\r\n" or "HTTP/1.1 status reason\r\n",
 * the headers, and the blank line. 0 or WSTUN_ENOMEM. */
int wstun__http_head_write(const wstun__http_head *h, wstun__buf *out);

/* Chunked framing. */
int wstun__http_write_chunk_header(wstun__buf *out, size_t len);
/* Appends body bytes as they go on the wire: as they are, or as one chunk
 * when re-encoding as chunked (nothing for n == 0: that would be the last
 * chunk). 0 or WSTUN_ENOMEM. */
int wstun__http_write_body(wstun__buf *out, const void *data, size_t n,
                           int chunked);
#define WSTUN__HTTP_CHUNK_TRAILER "\r\n"
#define WSTUN__HTTP_LAST_CHUNK "0\r\n\r\n"

/* Flags of the writers below. */
#define WSTUN__HTTP_CLOSE 1 /* add Connection: close */
#define WSTUN__HTTP_NO_BODY                                                    \
  2 /* the answer to a HEAD: the head only, its                                \
       Content-Length still the body's */

/* A short text response: status line, Content-Type text/plain,
 * Content-Length, optional extra header lines ("Name: v\r\n"), body. */
int wstun__http_write_simple(wstun__buf *out, int status, const char *body,
                             const char *extra_headers, int flags);

/* The same with any content type and body. */
int wstun__http_write_response(wstun__buf *out, int status,
                               const char *content_type, const void *body,
                               size_t n, const char *extra_headers, int flags);

/* The registered reason phrase of a status code; "" for an unregistered
 * code. Never NULL. */
const char *wstun__http_reason(int status);

/* ---- parser ------------------------------------------------------------ */

typedef struct wstun__http_parser_cbs {
  /* Head complete. Return 0 to go on, 1 to tell the parser there is no
   * body (responses to HEAD), or a negative value to fail with
   * p->error_status (set it first, 400 if left 0). */
  int (*on_head)(void *ud, wstun__http_head *head);
  /* Body bytes (chunked framing already removed). Nonzero fails. */
  int (*on_body)(void *ud, const uint8_t *data, size_t len);
  /* Message complete. Return 0 to go on or 1 to pause the parser right
   * after this message (pipelining). */
  int (*on_complete)(void *ud);
} wstun__http_parser_cbs;

typedef struct wstun__http_parser {
  llhttp_t llhttp;
  llhttp_settings_t settings;
  wstun__http_head head;
  size_t head_bytes;
  size_t max_head; /* 0 = unlimited */
  uint64_t body_bytes;
  uint64_t max_body; /* 0 = unlimited */
  int in_head;
  int in_msg;
  int error_status; /* after an error: 400, 413, 431 … */
  const char *error_text;
  int field_open, value_open; /* a header field/value is being collected */
  const uint8_t *feed_base;   /* start of the bytes being fed */
  char feed_prev;             /* last byte of the previous feed */
  wstun__http_parser_cbs cbs;
  void *ud;
} wstun__http_parser;

/* type: HTTP_REQUEST or HTTP_RESPONSE. */
void wstun__http_parser_init(wstun__http_parser *p, llhttp_type_t type,
                             size_t max_head, uint64_t max_body,
                             const wstun__http_parser_cbs *cbs, void *ud);
void wstun__http_parser_free(wstun__http_parser *p);

enum {
  WSTUN__HTTP_OK = 0,     /* everything consumed */
  WSTUN__HTTP_PAUSED = 1, /* on_complete asked to pause; *consumed < len
                             possibly */
  WSTUN__HTTP_ERROR = -1  /* see error_status / error_text */
};

/* Feeds bytes. *consumed tells how many were used (all, unless paused or
 * failed). */
int wstun__http_parser_feed(wstun__http_parser *p, const uint8_t *data,
                            size_t len, size_t *consumed);
/* The input ended: completes a body delimited by end of input.
 * WSTUN__HTTP_OK or WSTUN__HTTP_ERROR (message incomplete). */
int wstun__http_parser_finish(wstun__http_parser *p);
/* After WSTUN__HTTP_PAUSED: ready for the next message. */
void wstun__http_parser_resume(wstun__http_parser *p);
/* 1 between the first byte of a message and its completion. */
int wstun__http_parser_in_message(const wstun__http_parser *p);

#endif
