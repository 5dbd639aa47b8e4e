/* The WebSocket opening handshake (RFC 6455 section 4), both sides, as pure
 * functions over parsed heads. Framing itself is wslay's, glued to
 * sockets in wstun_tunnel. */
#ifndef WSTUN_WS_H
#define WSTUN_WS_H

#include <stddef.h>

#include "wstun_buf.h"
#include "wstun_http.h"
#include "wstun_rng.h"

#define WSTUN__WS_KEY_LEN 24    /* base64 of 16 bytes */
#define WSTUN__WS_ACCEPT_LEN 28 /* base64 of a SHA-1 digest */

/* base64(SHA-1(key + GUID)) into out (NUL-terminated). 0 or WSTUN_EINVAL. */
int wstun__ws_accept_key(const char *key, char out[WSTUN__WS_ACCEPT_LEN + 1]);

/* A fresh Sec-WebSocket-Key (NUL-terminated). 0, WSTUN_ERNG, or
 * WSTUN_EINVAL. */
int wstun__ws_new_key(wstun__rng *rng, char out[WSTUN__WS_KEY_LEN + 1]);

/* Server side: checks an upgrade request. Returns 0 when it is a valid
 * WebSocket upgrade, else the HTTP status to answer (400 or 426) with
 * *why set to a short text. */
int wstun__ws_check_upgrade(const wstun__http_head *req, const char **why);

/* Server side: the 101 answer for a checked request. */
int wstun__ws_write_accept(const wstun__http_head *req, wstun__buf *out);
/* The same, naming the chosen subprotocol in Sec-WebSocket-Protocol
 * (`protocol` NULL: no such line, as wstun__ws_write_accept). */
int wstun__ws_write_accept_proto(const wstun__http_head *req,
                                 const char *protocol, wstun__buf *out);

/* Server side: 1 when the request offers subprotocol `name`, an exact
 * (case-sensitive) element of the comma-separated list of any of its
 * Sec-WebSocket-Protocol lines, else 0 (also when out of memory: the
 * offer is then declined, and the tunnel speaks v1). */
int wstun__ws_offers(const wstun__http_head *req, const char *name);

/* Client side: the subprotocol part of the server's answer. `offered` is
 * the one we offered, or NULL. 0 with *chosen = 0 when the answer names
 * none, 0 with *chosen = 1 when it names exactly `offered`, and
 * WSTUN_EHANDSHAKE when it names anything else (RFC 6455 4.1: a
 * subprotocol we did not offer fails the handshake). */
int wstun__ws_check_protocol(const wstun__http_head *resp, const char *offered,
                             int *chosen);

/* Client side: checks the server's answer to a request sent with `key`.
 * 0 or WSTUN_EHANDSHAKE. */
int wstun__ws_check_accept(const wstun__http_head *resp, const char *key);

/* base64 helpers over mbedTLS; 0 or WSTUN_EINVAL/WSTUN_ENOMEM. The decoded
 * output is NUL-terminated; *out is freed by the caller. */
int wstun__base64_encode(const void *in, size_t n, char **out);
int wstun__base64_decode(const char *in, unsigned char **out, size_t *n);

#endif
