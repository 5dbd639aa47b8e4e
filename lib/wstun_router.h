/* The server's router: what a request head asks for (a local endpoint, the
 * /_tunnel upgrade, a tunneled request, or a fixed answer), decided from
 * the head and the base path alone. Pure: no sockets, no registry, no
 * clock, so it is tested and fuzzed over plain bytes; the front acts on
 * the decision. */
#ifndef WSTUN_ROUTER_H
#define WSTUN_ROUTER_H

#include <stddef.h>

#include "wstun_http.h"

/* The answer to an upgrade that cannot be passed through: no token, or
 * only v1 tunnels (or a server without v2) for its token. */
#define WSTUN__UPGRADE_REFUSED "Protocol upgrades are not tunneled"

/* The path router of a request target of tlen bytes. */
typedef struct wstun__route {
  const char *path; /* the target without the base path */
  size_t len;
  size_t plen;     /* length of its path part (before any '?') */
  const char *tok; /* "/_token/<tok>[/path][?query]" only, else NULL */
  size_t toklen;   /* up to the first '/' or '?' after "/_token/" */
  const char *fwd; /* the target to forward: the rest from its '/', or
                      "/" + the rest written in buf; NULL if buf (cap
                      bytes) is too small (414) */
  size_t fwdlen;
} wstun__route;
/* Strips the base path (blen 0: none) and splits a /_token/ target.
 * Returns -1 (404) when the target is not under the base path, else 0. */
int wstun__route_target(const char *base, size_t blen, const char *target,
                        size_t tlen, char *buf, size_t cap, wstun__route *r);

typedef enum {
  WSTUN__ROUTE_ANSWER = 0, /* a fixed answer: status and text */
  WSTUN__ROUTE_UPGRADE,    /* /_tunnel: a tunnel client's handshake */
  WSTUN__ROUTE_HEALTH,     /* /_health_check */
  WSTUN__ROUTE_STATS,      /* /_stats */
  WSTUN__ROUTE_MONITORING, /* /admin/monitoring */
  WSTUN__ROUTE_AUDITING,   /* /admin/auditing */
  WSTUN__ROUTE_METRICS,    /* /metrics (Prometheus) */
  WSTUN__ROUTE_TUNNEL      /* down the tunnel of token tok */
} wstun__route_kind;

typedef struct wstun__route_decision {
  wstun__route_kind kind;
  int status;       /* ANSWER */
  const char *text; /* ANSWER: the body (static) */
  int close;        /* close the connection after the answer */
  /* nothing after this head may be parsed as a request (upgrades,
   * CONNECT): the request parser stops at the head */
  int stop;
  /* TUNNEL: an upgrade request (Upgrade and Connection: upgrade), to be
   * passed through as a two-way pipe after the backend's 101 */
  int upgrade;
  const char *tok; /* TUNNEL: the token (not NUL-terminated), toklen > 0 */
  size_t toklen;
  const char *target; /* TUNNEL: the origin-form target to forward */
  size_t tlen;
} wstun__route_decision;

/* Decides what the request of head h asks for. The pointers of the
 * decision point into h's text, into buf (cap bytes, the caller's, used
 * for targets rewritten to start with '/') or to static strings. */
void wstun__route_request(const char *base, size_t blen,
                          const wstun__http_head *h, char *buf, size_t cap,
                          wstun__route_decision *d);

#endif
