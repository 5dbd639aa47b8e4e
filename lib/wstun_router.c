/* The server's router (see wstun_router.h): the base path, the Go
 * server's endpoints (/_health_check, /_stats, /_tunnel), the operator's
 * (/admin/..., /metrics), and the two ways of naming a token
 * (/_token/<token>/path and X-Token). A pure function of the head. */
#include <string.h>

#include "wstun_router.h"

/* a WebSocket handshake that will never reach /_tunnel */
#define NO_TUNNEL_HERE "no tunnel endpoint here: check the base path"

int wstun__route_target(const char *base, size_t blen, const char *target,
                        size_t tlen, char *buf, size_t cap, wstun__route *r) {
  memset(r, 0, sizeof(*r));
  if (blen > 0) {
    if (tlen < blen || memcmp(target, base, blen) != 0 ||
        (tlen > blen && target[blen] != '/' && target[blen] != '?'))
      return -1;
    target += blen;
    tlen -= blen;
  }
  r->path = target;
  r->len = tlen;
  const char *q = memchr(target, '?', tlen);
  r->plen = q ? (size_t)(q - target) : tlen;
  if (r->plen < 8 || memcmp(target, "/_token/", 8) != 0)
    return 0;
  const char *tok = target + 8;
  size_t toklen = 0;
  while (toklen < tlen - 8 && tok[toklen] != '/' && tok[toklen] != '?')
    toklen++;
  const char *rest = tok + toklen;
  size_t rlen = tlen - 8 - toklen;
  r->tok = tok;
  r->toklen = toklen;
  if (rlen > 0 && rest[0] == '/') {
    r->fwd = rest;
    r->fwdlen = rlen;
  } else if (rlen + 1 < cap) {
    /* "/_token/tok" or "/_token/tok?q": the path is "/" */
    buf[0] = '/';
    memcpy(buf + 1, rest, rlen);
    buf[rlen + 1] = '\0';
    r->fwd = buf;
    r->fwdlen = rlen + 1;
  }
  return 0;
}

static void answer(wstun__route_decision *d, int status, const char *text) {
  d->kind = WSTUN__ROUTE_ANSWER;
  d->status = status;
  d->text = text;
}

static void tunnel(wstun__route_decision *d, const char *tok, size_t toklen,
                   const char *target, size_t tlen) {
  if (toklen == 0) {
    answer(d, 400, "Missing X-Token header");
    return;
  }
  d->kind = WSTUN__ROUTE_TUNNEL;
  d->tok = tok;
  d->toklen = toklen;
  d->target = target;
  d->tlen = tlen;
}

void wstun__route_request(const char *base, size_t blen,
                          const wstun__http_head *h, char *buf, size_t cap,
                          wstun__route_decision *d) {
  memset(d, 0, sizeof(*d));
  const char *target = wstun__http_head_target(h);
  size_t tlen = h->target_len;
  if (target[0] != '/') {
    answer(d, 400, "Request target must be a path");
    return;
  }
  wstun__route rt;
  /* a WebSocket handshake anywhere but on /_tunnel is a tunnel client
   * with the wrong base path (or none): say so instead of a bare 404 */
  int ws = wstun__http_head_has_token(h, "Connection", "upgrade") &&
           wstun__http_head_has_token(h, "Upgrade", "websocket");
  if (wstun__route_target(base, blen, target, tlen, buf, cap, &rt) != 0) {
    if (ws) {
      d->close = 1; /* llhttp reads nothing after an upgrade head */
      d->stop = 1;
      answer(d, 404, NO_TUNNEL_HERE);
      return;
    }
    answer(d, 404, "404 page not found\n"); /* Go's ServeMux text */
    return;
  }
  target = rt.path;
  tlen = rt.len;
  size_t plen = rt.plen;
#define IS_PATH(lit) (plen == sizeof(lit) - 1 && memcmp(target, lit, plen) == 0)
  if (IS_PATH("/_tunnel")) {
    d->kind = WSTUN__ROUTE_UPGRADE;
    d->stop = 1; /* no body; the upgrade happens after the head */
    return;
  }
  /* llhttp ends a CONNECT or upgrade request at its head whatever its
   * framing says; the bytes after it must never be read as the next
   * request (smuggling): answer and close. CONNECT is never tunneled; an
   * upgrade to a token is, as a two-way pipe once the backend answers
   * 101 (PROTOCOL.md 7.6; the registry refuses it on a v1 tunnel). */
  int upgrade = wstun__http_head_has_token(h, "Connection", "upgrade") &&
                wstun__http_head_get(h, "Upgrade") != NULL;
  if (h->method == HTTP_CONNECT || upgrade) {
    d->close = 1;
    d->stop = 1;
    d->upgrade = upgrade;
  }
  int named = rt.tok != NULL || wstun__http_head_get(h, "X-Token") != NULL;
  if (h->method == HTTP_CONNECT) {
    answer(d, 405, "CONNECT is not supported");
    return;
  }
  if (upgrade && !named) {
    answer(d, ws ? 404 : 501, ws ? NO_TUNNEL_HERE : WSTUN__UPGRADE_REFUSED);
    return;
  }
  if (rt.tok != NULL) {
    /* the Go route is ^/_token/([^/]+)(/.*): a token, then a path */
    if (rt.toklen == 0 || rt.fwd != rt.tok + rt.toklen) {
      answer(d, 400, "Missing token in URI");
      return;
    }
    tunnel(d, rt.tok, rt.toklen, rt.fwd, rt.fwdlen);
    return;
  }
  /* the Go server's own endpoints are never tunneled, even with X-Token;
   * /metrics is ours, and with X-Token it is a backend's, as in Go */
  if (IS_PATH("/_health_check")) {
    d->kind = WSTUN__ROUTE_HEALTH; /* 200, or 503 while draining */
    return;
  }
  if (IS_PATH("/_stats")) {
    d->kind = WSTUN__ROUTE_STATS;
    return;
  }
  if (IS_PATH("/admin/monitoring")) {
    d->kind = WSTUN__ROUTE_MONITORING;
    return;
  }
  if (IS_PATH("/admin/auditing")) {
    d->kind = WSTUN__ROUTE_AUDITING;
    return;
  }
  const char *xtok = wstun__http_head_get(h, "X-Token");
  if (xtok != NULL) {
    if (plen == 0) {
      /* the base path itself ("/wst", "/wst?q"): the backend gets "/",
       * "/?q", never a target that is not a path */
      if (tlen + 1 > cap) {
        answer(d, 414, "URI too long");
        return;
      }
      buf[0] = '/';
      memcpy(buf + 1, target, tlen);
      target = buf;
      tlen++;
    }
    tunnel(d, xtok, strlen(xtok), target, tlen);
    return;
  }
  if (IS_PATH("/metrics")) {
    d->kind = WSTUN__ROUTE_METRICS;
    return;
  }
#undef IS_PATH
  answer(d, 400, "Missing X-Token header");
}
