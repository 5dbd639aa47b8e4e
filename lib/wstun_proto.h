/* Tunnel message formats: how each message carries the id of the exchange
 * it belongs to. The tunnel module (wstun_tunnel.c) is the only user: it
 * writes a message's head when it starts sending it and decodes the head
 * of each message it receives, so producers and sinks deal in (id, bytes)
 * and never see the format. One format per tunnel, chosen at the
 * handshake; v1 is the only one today, and a second one implements the
 * same wstun__proto beside it.
 *
 * v1 (wstunnel 1.x): every request and response is a binary WebSocket
 * message "<id as %04x><raw HTTP/1.1 message>", with no separator (the Go
 * peer writes Fprintf("%04x", id) and then the message, and reads the id
 * back with Fscanf on exactly 4 bytes). The HTTP part belongs to
 * wstun_http. */
#ifndef WSTUN_PROTO_H
#define WSTUN_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* The longest head any format writes in front of a message's bytes. */
#define WSTUN__PROTO_HEAD_MAX 16

/* Decoder state for the head of one incoming message. */
typedef struct wstun__proto_rx {
  uint8_t got; /* head bytes seen so far */
  uint8_t done;
  uint16_t id;
} wstun__proto_rx;

typedef struct wstun__proto {
  const char *name;
  /* 0: one message at a time, each a WebSocket message with this format's
   * head (v1; the functions below). 1: many streams interleaved in frames
   * of at most max_chunk payload bytes, with flow control: the tunnel runs
   * its stream engine over the v2 codec (wstun_v2.h) and the functions
   * below are NULL. The engine's state (streams, windows, the order of
   * frames) is the tunnel's, and v2 is the only multiplexed format: a
   * vtable of frame-kind callbacks between the tunnel and the codec would
   * have one implementation and hide nothing. */
  unsigned multiplexed;
  size_t max_chunk; /* DATA payload per frame (multiplexed only) */
  /* Writes the head of an outgoing message of exchange `id` into out
   * (WSTUN__PROTO_HEAD_MAX bytes) and returns its length. */
  size_t (*write_head)(uint16_t id, uint8_t *out);
  /* An incoming message begins: reset rx. */
  void (*rx_begin)(wstun__proto_rx *rx);
  /* Consumes head bytes from data: returns how many (>= 0; rx->done once
   * the head is whole, rx->id then set), or -1 when the bytes are not a
   * head of this format. Never consumes past the head, so it may be fed
   * any split of the input, one byte at a time included. */
  int (*rx_feed)(wstun__proto_rx *rx, const uint8_t *data, size_t len);
} wstun__proto;

extern const wstun__proto wstun__proto_v1;
/* docs/PROTOCOL.md section 7; set on both ends right after the tunnel
 * starts (the handshake negotiates it). */
extern const wstun__proto wstun__proto_v2;

/* ---- v1 ------------------------------------------------------------------ */

#define WSTUN__PROTO_PREFIX_LEN 4 /* "abcd" */

/* The Go server counts ids up and wraps below this bound. It also keeps
 * every id below 0x8000: the Go client parses the id into an int16 and
 * drops the tunnel on "8000" or more. */
#define WSTUN__PROTO_ID_WRAP 32000
#define WSTUN__PROTO_ID_MAX 0x7fff
_Static_assert(WSTUN__PROTO_ID_WRAP - 1 <= WSTUN__PROTO_ID_MAX,
               "every id must fit the Go client's int16");
_Static_assert(WSTUN__PROTO_PREFIX_LEN <= WSTUN__PROTO_HEAD_MAX,
               "the v1 prefix is a head");

/* The id after `last`, as the Go server counts: (last + 1) % 32000, so the
 * first id of a token is 0001. Below WSTUN__PROTO_ID_WRAP whatever `last`
 * is. */
static inline uint16_t wstun__proto_next_id(uint16_t last) {
  return (uint16_t)((last + 1u) % WSTUN__PROTO_ID_WRAP);
}

/* The v1 head: writes "%04x" (4 bytes, no NUL). Exposed for tests and for
 * test peers that build wire bytes by hand. */
void wstun__proto_write_prefix(uint16_t id,
                               uint8_t out[WSTUN__PROTO_PREFIX_LEN]);

/* Incremental v1 prefix decoder: feed bytes until it reports done. */
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
