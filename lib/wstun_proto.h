/* Tunnel message format v1 (wstunnel 1.x): every request and response is a
 * binary WebSocket message "<id as %04x><raw HTTP/1.1 message>", with no
 * separator (the Go peer writes Fprintf("%04x", id) and then the message,
 * and reads the id back with Fscanf on exactly 4 bytes). This module owns
 * only the id prefix; the HTTP part belongs to wstun_http. */
#ifndef WSTUN_PROTO_H
#define WSTUN_PROTO_H

#include <stddef.h>
#include <stdint.h>

#define WSTUN__PROTO_PREFIX_LEN 4 /* "abcd" */

/* The Go server counts ids up and wraps below this bound. It also keeps
 * every id below 0x8000: the Go client parses the id into an int16 and
 * drops the tunnel on "8000" or more. */
#define WSTUN__PROTO_ID_WRAP 32000
#define WSTUN__PROTO_ID_MAX 0x7fff
_Static_assert(WSTUN__PROTO_ID_WRAP - 1 <= WSTUN__PROTO_ID_MAX,
               "every id must fit the Go client's int16");

/* The id after `last`, as the Go server counts: (last + 1) % 32000, so the
 * first id of a token is 0001. Below WSTUN__PROTO_ID_WRAP whatever `last`
 * is. */
static inline uint16_t wstun__proto_next_id(uint16_t last) {
  return (uint16_t)((last + 1u) % WSTUN__PROTO_ID_WRAP);
}

/* Writes "%04x" (4 bytes, no NUL). */
void wstun__proto_write_prefix(uint16_t id,
                               uint8_t out[WSTUN__PROTO_PREFIX_LEN]);

/* Incremental prefix decoder: feed bytes until it reports done. */
typedef struct wstun__proto_prefix {
  uint8_t got; /* bytes of the prefix seen so far */
  uint16_t id;
} wstun__proto_prefix;

void wstun__proto_prefix_init(wstun__proto_prefix *p);
/* Consumes up to the rest of the prefix from data. Returns the number of
 * bytes consumed (>= 0) or -1 if the bytes are not a valid prefix. Done
 * when p->got == WSTUN__PROTO_PREFIX_LEN. Accepts upper-case hex digits
 * too (be liberal in what you accept). */
int wstun__proto_prefix_feed(wstun__proto_prefix *p, const uint8_t *data,
                             size_t len);
static inline int wstun__proto_prefix_done(const wstun__proto_prefix *p) {
  return p->got == WSTUN__PROTO_PREFIX_LEN;
}

#endif
