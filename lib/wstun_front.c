/* Front connections: the HTTP connections of requesters on the server.
 * A front accepts (with the connection caps and TLS), parses requests
 * (llhttp), asks the router what each one wants, answers the local ones
 * (health, stats, admin, metrics, errors), hands the tunnel upgrade to the
 * registry, and for a tunneled request runs its exchange (embedded here,
 * wstun_exchange.c), writing the response the exchange passes up through
 * exchange_cbs. It owns the connection's timeouts (TLS handshake, request
 * head, keep-alive idle), keep-alive itself, and backpressure on the
 * requester. Requests on a connection are answered in order: pipelined
 * ones wait in the connection's input until the one before is done. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "wstun_alloc.h"
#include "wstun_front.h"
#include "wstun_registry.h"
#include "wstun_router.h"
#include "wstun_util.h"
#include "wstun_ws.h"

/* Response bytes buffered for a requester before its tunnel stops reading:
 * enough to ride out a slow moment of one reader without holding up the
 * others on the tunnel, bounded per connection. */
#define FRONT_OUT_MAX (2u << 20)

static const wstun__conn_cbs front_conn_cbs;
static const wstun__http_parser_cbs req_cbs;
static const wstun__exchange_cbs ex_cbs;

static void front_next(wstun__front *f);

/* ---- small helpers ------------------------------------------------------ */

static void set_timer(wstun__front *f, uint64_t ms, uv_timer_cb cb) {
  if (!f->closing)
    uv_timer_start(&f->timer, cb, ms, 0);
}

/* How our own answers are written: closing the connection after them, and
 * with no body when they answer a HEAD (the requester would read the body
 * as the start of its next response). */
static int answer_flags(const wstun__front *f) {
  return (f->close_after || f->srv->closing ? WSTUN__HTTP_CLOSE : 0) |
         (f->head_req ? WSTUN__HTTP_NO_BODY : 0);
}

/* ---- the access log ---------------------------------------------------- */

/* What was answered, for the request's access line. */
static void note_answer(wstun__front *f, int status, size_t body) {
  f->resp_status = status;
  if (!f->head_req)
    f->resp_bytes += body;
}

/* The target as the access line shows it: a /_token/TOKEN segment cut to
 * the token's prefix, in memory the caller frees (*owned), or, without
 * memory for that, "/_token/..."; else the target itself. */
static const char *access_path(const wstun_server *srv, const char *target,
                               size_t tlen, char **owned) {
  char buf[8];
  wstun__route rt;
  *owned = NULL;
  if (wstun__route_target(srv->base_path, srv->base_len, target, tlen, buf,
                          sizeof(buf), &rt) != 0 ||
      rt.tok == NULL)
    return target;
  char red[12];
  char *tok = wstun__strndup(rt.tok, rt.toklen);
  wstun__redact(tok ? tok : "", red);
  size_t before = (size_t)(rt.tok - target), after = tlen - before - rt.toklen;
  size_t rlen = strlen(red);
  char *out = tok ? wstun__malloc(before + rlen + after + 1) : NULL;
  wstun__free(tok);
  if (out == NULL)
    return "/_token/...";
  memcpy(out, target, before);
  memcpy(out + before, red, rlen);
  memcpy(out + before + rlen, rt.tok + rt.toklen, after);
  out[before + rlen + after] = '\0';
  *owned = out;
  return out;
}

/* The request's line, once: when it is answered, or when the connection
 * goes first (499 if nothing was answered). */
static void access_done(wstun__front *f) {
  if (!f->req_open)
    return;
  f->req_open = 0;
  wstun_server *srv = f->srv;
  if (!WSTUN__ACCESS_ON(&srv->log))
    return;
  const wstun__http_head *h = &f->parser.head;
  char *owned;
  wstun_log_request r = {0};
  r.method = llhttp_method_name((llhttp_method_t)h->method);
  r.path = access_path(srv, wstun__http_head_target(h), h->target_len, &owned);
  r.status = f->resp_status ? f->resp_status : 499;
  r.bytes = f->resp_bytes;
  r.bytes_in = f->pipe_in;
  r.duration_ms = uv_now(srv->loop) - f->ex.start_ms;
  r.remote = f->req_peer[0] ? f->req_peer : NULL;
  r.token = f->req_token ? f->ex.token_prefix : NULL;
  r.id = f->req_token && f->ex.has_id ? (int64_t)f->ex.reg.id : -1;
  wstun__log_access(&srv->log, &r);
  wstun__free(owned);
}

/* A request head was read: its access line is owed from now on. */
static void access_begin(wstun__front *f) {
  f->req_open = 1;
  f->req_token = 0;
  f->resp_status = 0;
  f->resp_bytes = 0;
  f->pipe_in = 0;
  f->req_peer[0] = '\0';
  if (WSTUN__ACCESS_ON(&f->srv->log) && f->conn)
    wstun__conn_peer(f->conn, f->req_peer, sizeof(f->req_peer));
}

/* Writes a complete short answer on the connection. Errors carry
 * nosniff, as the Go server's (http.Error) do. */
static void write_simple(wstun__front *f, int status, const char *text) {
  if (f->conn == NULL)
    return;
  note_answer(f, status, text ? strlen(text) : 0);
  wstun__http_write_simple(
      wstun__conn_outbuf(f->conn), status, text ? text : "",
      status >= 400 ? "X-Content-Type-Options: nosniff\r\n" : NULL,
      answer_flags(f));
  wstun__conn_flush(f->conn);
}

int wstun__front_busy(const wstun__front *f) {
  return !f->closing && (f->phase != WSTUN__FRONT_IDLE ||
                         wstun__http_parser_in_message(&f->parser));
}

/* ---- teardown ----------------------------------------------------------- */

/* The timers and the connection are closed: the memory goes. */
static void front_freed(wstun__closer *c) {
  wstun__front *f = wstun__list_entry(c, wstun__front, closer);
  wstun_server *srv = f->srv;
  wstun__list_remove(&f->link);
  srv->nfronts--;
  wstun__registry_conn_release(srv, f->ip);
  wstun__http_parser_free(&f->parser);
  wstun__free(f);
  if (srv->on_gone)
    srv->on_gone(srv);
}

static void front_conn_closed(wstun__conn *c) {
  wstun__front *f = c->owner;
  if (c->tls && c->tls->failed) {
    /* failed handshakes, plain HTTP on the TLS port, truncations: noise
     * from scanners mostly, so only at debug */
    char peer[80];
    wstun__log(&f->srv->log, WSTUN_LOG_DEBUG, "TLS with %s failed: %s",
               wstun__conn_peer(c, peer, sizeof(peer)), c->tls->why);
  }
  f->conn = NULL;
  if (!f->closing)
    wstun__front_close(f); /* closed after a final response */
  else
    wstun__closer_done(&f->closer); /* the close front_close began */
}

void wstun__front_close(wstun__front *f) {
  if (f->closing)
    return;
  access_done(f);
  f->closing = 1;
  f->phase = WSTUN__FRONT_IDLE;
  wstun__closer_start(&f->closer, front_freed);
  wstun__exchange_close(&f->ex, &f->closer);
  uv_timer_stop(&f->timer);
  wstun__closer_close_handle(&f->closer, (uv_handle_t *)&f->timer);
  if (f->conn) {
    wstun__closer_add(&f->closer);
    wstun__conn_close(f->conn);
  }
  wstun__closer_done(&f->closer);
}

/* Ends the connection abruptly (RST), so a requester can tell a cut
 * response from a complete one even when the body is close-delimited. */
static void front_abort(wstun__front *f) {
  if (f->conn)
    wstun__conn_abort(f->conn);
  wstun__front_close(f);
}

/* ---- the connection's timeouts ------------------------------------------ */

static void on_idle_timeout(uv_timer_t *t) {
  wstun__front_close(t->data);
}

/* The request head did not arrive in time (slowloris): say so, close. */
static void on_head_timeout(uv_timer_t *t) {
  wstun__front *f = t->data;
  if (f->phase != WSTUN__FRONT_IDLE || f->conn == NULL) {
    wstun__front_close(f);
    return;
  }
  f->close_after = 1;
  f->phase = WSTUN__FRONT_ANSWERED;
  write_simple(f, 408, "Request header timeout");
  front_next(f);
}

/* A TLS handshake gets no more time than a request head (-header-timeout):
 * a peer that connects and sends nothing, or part of a ClientHello, would
 * otherwise hold its connection slot for the whole idle timeout. No
 * answer: nothing can be said before the handshake. */
static void on_tls_timeout(uv_timer_t *t) {
  wstun__front *f = t->data;
  if (f->conn && f->conn->tls && !f->conn->tls->handshake_done) {
    char peer[80];
    wstun__log(&f->srv->log, WSTUN_LOG_DEBUG,
               "TLS with %s: no handshake within %llu ms: closing",
               wstun__conn_peer(f->conn, peer, sizeof(peer)),
               (unsigned long long)f->srv->header_timeout_ms);
  }
  wstun__front_close(f);
}

/* The request is answered (or failed): next request, or close. */
static void front_next(wstun__front *f) {
  if (f->phase == WSTUN__FRONT_ANSWERED)
    access_done(f);
  if (f->closing || f->conn == NULL)
    return;
  if (f->phase != WSTUN__FRONT_ANSWERED)
    return;
  f->phase = WSTUN__FRONT_IDLE;
  f->head_req = 0;
  if (f->close_after || f->srv->closing) {
    uv_timer_stop(&f->timer);
    set_timer(f, 5000, on_idle_timeout); /* bound a peer that never reads */
    wstun__conn_end(f->conn);
    return;
  }
  /* Answered before its body was all read (an early error or response):
   * read and drop the rest, as a server's lingering close does, so the
   * requester is not cut off mid-upload and the connection stays usable. */
  if (wstun__http_parser_in_message(&f->parser))
    f->discarding = 1;
  set_timer(f, f->srv->idle_timeout_ms, on_idle_timeout);
  wstun__http_parser_resume(&f->parser);
  wstun__conn_resume(f->conn);
}

/* An answer of our own that ends the request: counted and logged as the
 * exchange's answers are (the upgrade's refusals). */
static void local_fail(wstun__front *f, int status, const char *text) {
  if (f->closing)
    return;
  if (status != 0) {
    wstun__exchange_log_ret(&f->ex, status);
    write_simple(f, status, text);
  } else if (f->conn) {
    wstun__conn_flush(f->conn);
  }
  f->phase = WSTUN__FRONT_ANSWERED;
  front_next(f);
}

void wstun__front_fail(wstun__front *f, int status, const char *text) {
  if (f->closing)
    return;
  if (wstun__exchange_active(&f->ex))
    wstun__exchange_fail(&f->ex, status, text);
  else
    local_fail(f, status, text);
}

/* ---- the exchange's calls ----------------------------------------------- */

static wstun__front *ex_front(wstun__exchange *ex) {
  return wstun__list_entry(ex, wstun__front, ex);
}

/* The requester's bytes held since the upgrade's head go into the pipe:
 * resumed from the loop, not from inside the tunnel's receive path that
 * brought the 101. */
static void on_pipe_start(uv_timer_t *t) {
  wstun__front *f = t->data;
  if (f->conn && f->piping)
    wstun__conn_resume(f->conn);
}

/* An upgrade's 101: written with what makes it one, then the connection
 * is a pipe (front_on_data), closed when it ends. */
static int pipe_head(wstun__front *f, wstun__http_head *h) {
  if (wstun__http_head_strip_for_upgrade(h) != 0 || f->conn == NULL ||
      wstun__http_head_write(h, wstun__conn_outbuf(f->conn)) != 0)
    return -1;
  note_answer(f, h->status, 0);
  wstun__conn_flush(f->conn);
  f->resp_chunked = 0;
  f->close_after = 1;
  f->piping = 1;
  set_timer(f, 0, on_pipe_start);
  return 0;
}

static int ex_on_head(wstun__exchange *ex, wstun__http_head *h, int no_body,
                      int close_delimited) {
  wstun__front *f = ex_front(ex);
  if (ex->piping)
    return pipe_head(f, h);
  /* HTTP/1.0 requesters get a body ended by the connection's close */
  int http11 = f->parser.head.major == 1 && f->parser.head.minor >= 1;
  wstun__http_head_strip_hop_by_hop(h, 1);
  int rc = wstun__http_head_frame(h, h->has_content_length, h->content_length,
                                  !no_body && http11, &f->resp_chunked);
  if (close_delimited || f->close_after || f->srv->closing) {
    f->close_after = 1;
    rc |= wstun__http_head_add(h, "Connection", "close");
  }
  /* the registered phrase, as the Go server relays it ("201 Created Fine"
   * goes out as "201 Created"); an unregistered code keeps the client's */
  if (wstun__http_reason(h->status)[0] != '\0')
    h->target_len = 0;
  if (rc != 0 || f->conn == NULL ||
      wstun__http_head_write(h, wstun__conn_outbuf(f->conn)) != 0)
    return -1;
  note_answer(f, h->status, 0);
  wstun__conn_flush(f->conn);
  return 0;
}

static int ex_on_body(wstun__exchange *ex, const uint8_t *d, size_t n) {
  wstun__front *f = ex_front(ex);
  if (f->conn == NULL)
    return -1;
  if (wstun__http_write_body(wstun__conn_outbuf(f->conn), d, n,
                             f->resp_chunked) != 0)
    return -1;
  f->resp_bytes += n;
  wstun__conn_flush(f->conn);
  return wstun__conn_congested(f->conn) ? 1 : 0;
}

static void ex_on_end(wstun__exchange *ex) {
  wstun__front *f = ex_front(ex);
  if (f->resp_chunked && f->conn)
    wstun__conn_write(f->conn, WSTUN__HTTP_LAST_CHUNK,
                      sizeof(WSTUN__HTTP_LAST_CHUNK) - 1);
}

static void ex_on_done(wstun__exchange *ex, wstun__ex_end how, int status,
                       const char *text) {
  wstun__front *f = ex_front(ex);
  switch (how) {
  case WSTUN__EX_ABORTED:
    front_abort(f);
    return;
  case WSTUN__EX_FAILED_CLOSE:
    f->close_after = 1;
    /* fall through */
  case WSTUN__EX_FAILED:
    if (status != 0)
      write_simple(f, status, text);
    else if (f->conn)
      wstun__conn_flush(f->conn);
    break;
  case WSTUN__EX_ANSWERED:
    break;
  }
  f->phase = WSTUN__FRONT_ANSWERED;
  front_next(f);
}

static void ex_on_drain(wstun__exchange *ex) {
  wstun__front *f = ex_front(ex);
  if (f->conn && !f->closing)
    wstun__conn_resume(f->conn);
}

static uint64_t ex_progress(wstun__exchange *ex) {
  wstun__front *f = ex_front(ex);
  return f->conn ? wstun__conn_progress(f->conn) : 0;
}

static const wstun__exchange_cbs ex_cbs = {
    .on_head = ex_on_head,
    .on_body = ex_on_body,
    .on_end = ex_on_end,
    .on_done = ex_on_done,
    .on_drain = ex_on_drain,
    .progress = ex_progress,
};

/* ---- requests ----------------------------------------------------------- */

static void local_answer(wstun__front *f, int status, const char *text) {
  f->phase = WSTUN__FRONT_ANSWERED;
  write_simple(f, status, text);
}

/* Who is asking: the TCP peer, or, when the peer is a configured trusted
 * proxy, the address that proxy appended last to X-Forwarded-For. Never
 * the header of an arbitrary peer: anyone can write it. */
static void requester_ip(wstun__front *f, const wstun__http_head *h, char *out,
                         size_t n) {
  wstun__conn_peer_ip(f->conn, out, n);
  if (!wstun__cidr_list_match(&f->srv->trusted_proxies, out))
    return;
  const char *xff = wstun__http_head_get_last(h, "X-Forwarded-For");
  if (xff == NULL)
    return;
  const char *last = strrchr(xff, ',');
  last = last ? last + 1 : xff;
  while (*last == ' ')
    last++;
  size_t len = strcspn(last, " \t");
  char ip[64];
  if (len > 0 && len < sizeof(ip)) {
    memcpy(ip, last, len);
    ip[len] = '\0';
    if (len < n && wstun__ip_valid(ip)) {
      memcpy(out, ip, len + 1);
      return;
    }
  }
  /* the proxy said who it was for, but not as an address we can judge
   * ("ip:port", "unknown", empty): a stranger, never the proxy itself */
  out[0] = '\0';
}

/* 503 while the server drains (wstun_server_drain.c), so that a balancer
 * takes the node out while it still serves; every check is noted, since
 * a drain waits only when a balancer is watching. */
static void route_health(wstun__front *f) {
  wstun_server *srv = f->srv;
  srv->health_checked_ms = uv_now(srv->loop);
  if (srv->drain != NULL)
    local_answer(f, 503, "WSTUNSRV DRAINING\n");
  else
    local_answer(f, 200, "WSTUNSRV RUNNING\n");
}

/* Full detail only to a requester on this host. */
static int route_stats(wstun__front *f, const wstun__http_head *h) {
  char ip[64];
  requester_ip(f, h, ip, sizeof(ip));
  wstun__buf text = WSTUN__BUF_INIT;
  int rc = wstun__admin_stats_text(f->srv, wstun__ip_is_loopback(ip), &text);
  rc |= wstun__buf_append(&text, "", 1);
  local_answer(f, rc ? 503 : 200,
               rc ? "Out of memory" : (const char *)text.base);
  wstun__buf_free(&text);
  return 0;
}

/* /admin/... and /metrics name every token: this host and -admin-allow
 * only, and the bearer token when one is configured. Answers and returns
 * 0 when refused. */
static int admin_allowed(wstun__front *f, const wstun__http_head *h) {
  wstun_server *srv = f->srv;
  char ip[64];
  requester_ip(f, h, ip, sizeof(ip));
  if (!wstun__ip_is_loopback(ip) &&
      !wstun__cidr_list_match(&srv->admin_allow, ip)) {
    local_answer(f, 403, "Forbidden");
    return 0;
  }
  if (srv->admin_token) {
    const char *auth = wstun__http_head_get(h, "Authorization");
    int ok = auth && strncasecmp(auth, "Bearer ", 7) == 0 &&
             wstun__ct_equal(auth + 7, strlen(auth + 7), srv->admin_token,
                             strlen(srv->admin_token));
    if (!ok) {
      f->phase = WSTUN__FRONT_ANSWERED;
      note_answer(f, 401, strlen("Unauthorized"));
      if (f->conn) {
        wstun__http_write_simple(
            wstun__conn_outbuf(f->conn), 401, "Unauthorized",
            "WWW-Authenticate: Bearer realm=\"wstunnel\"\r\n", answer_flags(f));
        wstun__conn_flush(f->conn);
      }
      return 0;
    }
  }
  return 1;
}

static void answer_doc(wstun__front *f, int rc, wstun__buf *doc,
                       const char *ctype) {
  f->phase = WSTUN__FRONT_ANSWERED;
  if (rc != 0)
    write_simple(f, 503, "Out of memory");
  else if (f->conn) {
    note_answer(f, 200, wstun__buf_size(doc));
    wstun__http_write_response(wstun__conn_outbuf(f->conn), 200, ctype,
                               wstun__buf_data(doc), wstun__buf_size(doc), NULL,
                               answer_flags(f));
    wstun__conn_flush(f->conn);
  }
  wstun__buf_free(doc);
}

static int route_admin(wstun__front *f, const wstun__http_head *h,
                       int auditing) {
  if (!admin_allowed(f, h))
    return 0;
  wstun__buf doc = WSTUN__BUF_INIT;
  int rc = auditing ? wstun__admin_auditing(f->srv, &doc)
                    : wstun__admin_monitoring(f->srv, &doc);
  answer_doc(f, rc, &doc, "application/json");
  return 0;
}

static int route_metrics(wstun__front *f, const wstun__http_head *h) {
  if (!admin_allowed(f, h))
    return 0;
  wstun__buf doc = WSTUN__BUF_INIT;
  int rc = wstun__admin_metrics(f->srv, &doc);
  answer_doc(f, rc, &doc, "text/plain; version=0.0.4; charset=utf-8");
  return 0;
}

static void route_tunnel(wstun__front *f, wstun__http_head *h, const char *tok,
                         size_t toklen, const char *target, size_t tlen) {
  char ip[64], peer[64];
  wstun__conn_peer_ip(f->conn, ip, sizeof(ip));
  wstun__conn_peer(f->conn, peer, sizeof(peer));
  int expect;
  const char *text;
  f->req_token = 1;
  int status = wstun__exchange_start(&f->ex, h, tok, toklen, target, tlen, ip,
                                     peer, &expect, &text);
  if (status != 0) {
    local_answer(f, status, text);
    return;
  }
  if (expect)
    wstun__conn_write(f->conn, "HTTP/1.1 100 Continue\r\n\r\n", 25);
  f->phase = WSTUN__FRONT_BUSY;
}

static int req_on_head(void *ud, wstun__http_head *h) {
  wstun__front *f = ud;
  wstun_server *srv = f->srv;
  f->head_req = h->method == HTTP_HEAD;
  f->close_after = !h->keep_alive;
  f->phase = WSTUN__FRONT_IDLE;
  wstun__exchange_reset(&f->ex, h);
  access_begin(f);
  uv_timer_stop(&f->timer);
  char buf[4096];
  wstun__route_decision d;
  wstun__route_request(srv->base_path, srv->base_len, h, buf, sizeof(buf), &d);
  switch (d.kind) {
  case WSTUN__ROUTE_UPGRADE:
    f->upgrade = 1;
    break;
  case WSTUN__ROUTE_HEALTH:
    route_health(f);
    break;
  case WSTUN__ROUTE_STATS:
    route_stats(f, h);
    break;
  case WSTUN__ROUTE_MONITORING:
  case WSTUN__ROUTE_AUDITING:
    route_admin(f, h, d.kind == WSTUN__ROUTE_AUDITING);
    break;
  case WSTUN__ROUTE_METRICS:
    route_metrics(f, h);
    break;
  case WSTUN__ROUTE_TUNNEL:
    f->ex.upgrade = d.upgrade;
    if (d.close)
      f->close_after = 1; /* an upgrade: a pipe, or refused */
    route_tunnel(f, h, d.tok, d.toklen, d.target, d.tlen);
    break;
  case WSTUN__ROUTE_ANSWER:
    if (d.close)
      f->close_after = 1;
    local_answer(f, d.status, d.text);
    break;
  }
  return d.stop;
}

static int req_on_body(void *ud, const uint8_t *d, size_t n) {
  wstun__front *f = ud;
  int rc = wstun__exchange_body(&f->ex, d, n);
  if (rc < 0) {
    f->parser.error_status = 503;
    return -1;
  }
  if (rc > 0 && f->conn)
    wstun__conn_pause(f->conn);
  return 0;
}

static int req_on_complete(void *ud) {
  wstun__front *f = ud;
  if (f->upgrade)
    return 1;
  if (f->discarding) {
    f->discarding = 0; /* the dropped body is over: parse the next request */
    return 0;
  }
  if (wstun__exchange_body_end(&f->ex) != 0) {
    f->parser.error_status = 503;
    return -1;
  }
  /* one request at a time: stop parsing here */
  return 1;
}

static const wstun__http_parser_cbs req_cbs = {
    .on_head = req_on_head,
    .on_body = req_on_body,
    .on_complete = req_on_complete,
};

/* ---- the tunnel handshake ---------------------------------------------- */

#define MIN_TOKEN_LEN 16

/* The /_tunnel upgrade: checks, answers, and on success hands the
 * connection to a new tunnel (returns 1), else answers an error (0). */
static int upgrade(wstun__front *f, wstun__http_head *h, const uint8_t *rest,
                   size_t n) {
  wstun_server *srv = f->srv;
  char peer[64], red[12];
  wstun__conn_peer(f->conn, peer, sizeof(peer));
  if (h->method != HTTP_GET) {
    srv->metrics.hs_failures[WSTUN__HS_BAD_METHOD]++;
    /* the Go server's words, byte for byte */
    local_fail(f, 400, "Only GET requests are supported");
    return 0;
  }
  const char *token = wstun__http_head_get(h, "Origin");
  if (token == NULL) {
    srv->metrics.hs_failures[WSTUN__HS_NO_TOKEN]++;
    local_fail(f, 400, "Origin header with rendez-vous token required");
    return 0;
  }
  if (strlen(token) < MIN_TOKEN_LEN) {
    srv->metrics.hs_failures[WSTUN__HS_SHORT_TOKEN]++;
    local_fail(f, 400, "Rendez-vous token is too short (must be 16 chars)");
    return 0;
  }
  wstun__redact(token, red);
  memcpy(f->ex.token_prefix, red, sizeof(red)); /* for the access line */
  f->req_token = 1;
  const char *bad = wstun__registry_check_auth(
      srv, token, wstun__http_head_get(h, "Authorization"));
  if (bad != NULL) {
    srv->metrics.hs_failures[WSTUN__HS_UNAUTHORIZED]++;
    wstun__log(&srv->log, WSTUN_LOG_WARN, "WS   refused token=%s addr=%s: %s",
               red, peer, bad);
    note_answer(f, 401, strlen(bad));
    wstun__buf *out = wstun__conn_outbuf(f->conn);
    wstun__http_write_simple(out, 401, bad,
                             "WWW-Authenticate: Basic realm=\"wstunnel\"\r\n"
                             "X-Content-Type-Options: nosniff\r\n",
                             1);
    local_fail(f, 0, NULL);
    return 0;
  }
  wstun__token *existing =
      wstun__registry_find_token(srv, token, strlen(token));
  if (srv->max_clients && existing && existing->ntunnels >= srv->max_clients) {
    char msg[96];
    srv->metrics.hs_failures[WSTUN__HS_TOO_MANY_CLIENTS]++;
    snprintf(msg, sizeof(msg),
             "Maximum number of clients (%zu) reached for this token",
             srv->max_clients);
    wstun__log(&srv->log, WSTUN_LOG_WARN, "WS   refused token=%s addr=%s: %s",
               red, peer, msg);
    local_fail(f, 429, msg);
    return 0;
  }
  const char *why = NULL;
  int status = wstun__ws_check_upgrade(h, &why);
  if (status != 0) {
    srv->metrics.hs_failures[WSTUN__HS_BAD_UPGRADE]++;
    local_fail(f, status, why);
    return 0;
  }
  if (wstun__registry_add_tunnel(srv, token, peer, h, f->conn, f->ip, rest,
                                 n) != 0) {
    local_fail(f, 503, "Out of memory");
    return 0;
  }
  /* the connection now belongs to the tunnel, and counts as its; its
   * request is no access-log line: the tunnel's own lines follow */
  f->conn = NULL;
  f->ip = NULL;
  f->req_open = 0;
  return 1;
}

/* ---- connection callbacks ----------------------------------------------- */

static size_t front_on_data(wstun__conn *c, const uint8_t *data, size_t len) {
  wstun__front *f = c->owner;
  size_t off = 0;
  if (f->piping) {
    /* after a 101: the requester's bytes, raw, while the pipe is open */
    int rc = 0;
    if (wstun__exchange_active(&f->ex)) {
      f->pipe_in += len;
      rc = wstun__exchange_body(&f->ex, data, len);
    }
    if (rc < 0)
      front_abort(f);
    else if (rc > 0 && f->conn)
      wstun__conn_pause(f->conn); /* the stream has no room: wait */
    return len;
  }
  while (off < len && !f->closing) {
    if (f->phase != WSTUN__FRONT_IDLE &&
        !wstun__http_parser_in_message(&f->parser))
      return off; /* the next request waits for this one's answer */
    /* a requester that pipelines and does not read its answers: no more
     * requests until it has read some (front_on_drain resumes), or local
     * answers would pile up without bound */
    if (f->phase == WSTUN__FRONT_IDLE &&
        !wstun__http_parser_in_message(&f->parser) && wstun__conn_congested(c))
      return off;
    int was_in = wstun__http_parser_in_message(&f->parser);
    size_t used = 0;
    int rc = wstun__http_parser_feed(&f->parser, data + off, len - off, &used);
    off += used;
    if (f->closing)
      return len;
    /* a new head began and is not complete yet: it gets a deadline */
    if (!was_in && f->phase == WSTUN__FRONT_IDLE && f->parser.in_head &&
        wstun__http_parser_in_message(&f->parser))
      set_timer(f, f->srv->header_timeout_ms, on_head_timeout);
    if (rc == WSTUN__HTTP_ERROR) {
      int status = f->parser.error_status ? f->parser.error_status : 400;
      const char *text =
          f->parser.error_text ? f->parser.error_text : "Bad request";
      f->close_after = 1;
      if (f->phase != WSTUN__FRONT_BUSY) {
        f->phase = WSTUN__FRONT_ANSWERED;
        write_simple(f, status, text);
        front_next(f);
      } else {
        wstun__exchange_fail(&f->ex, status, text);
      }
      return len;
    }
    if (rc == WSTUN__HTTP_PAUSED) {
      if (f->upgrade) {
        f->upgrade = 0;
        f->close_after = 1; /* a refused upgrade ends the connection */
        if (upgrade(f, &f->parser.head, data + off, len - off)) {
          wstun__front_close(f); /* the tunnel owns the socket now */
          return len;
        }
        /* refused: answered; nothing more is read on this connection */
        return len;
      }
      if (f->phase == WSTUN__FRONT_ANSWERED) {
        front_next(f);
        if (f->closing || f->conn == NULL || f->conn->close_after_write)
          return len;
        continue;
      }
      return off; /* keep the pipelined rest */
    }
  }
  return len;
}

static void front_on_end(wstun__conn *c, int err) {
  wstun__front *f = c->owner;
  /* a pipe's requester closed its side: that direction ends (END) and
   * the other goes on until the tunnel client ends it */
  if (f->piping && err == UV_EOF && wstun__exchange_active(&f->ex) &&
      !f->closing) {
    wstun__exchange_pipe_end(&f->ex);
    return;
  }
  /* TLS failures are logged when the connection closes */
  wstun__front_close(f);
}

/* The TLS handshake is over: from now on the plain idle timeout, and
 * each request head its own deadline (front_on_data). */
static void front_on_secure(wstun__conn *c, int status) {
  wstun__front *f = c->owner;
  if (status != 0) {
    wstun__front_close(f); /* why is logged when the connection closes */
    return;
  }
  set_timer(f, f->srv->idle_timeout_ms, on_idle_timeout);
}

static void front_on_drain(wstun__conn *c) {
  wstun__front *f = c->owner;
  wstun__exchange_drained(&f->ex);
  /* reading stopped on congested output between requests (front_on_data) */
  if (!f->closing && f->phase == WSTUN__FRONT_IDLE && !c->close_after_write)
    wstun__conn_resume(c);
}

static const wstun__conn_cbs front_conn_cbs = {
    .on_data = front_on_data,
    .on_end = front_on_end,
    .on_drain = front_on_drain,
    .on_close = front_conn_closed,
    .on_secure = front_on_secure,
};

static void on_spare_closed(uv_handle_t *h) {
  wstun_server *srv = h->data;
  srv->spare_busy = 0;
  srv->handles_open--;
  if (srv->accept_waiting && !srv->closing) {
    srv->accept_waiting = 0;
    wstun__front_accept(srv);
  }
  if (srv->on_gone)
    srv->on_gone(srv);
}

/* No memory for the new connection: it is accepted into the server's
 * spare handle and closed at once, since libuv reports no further
 * connections until the pending one is accepted. While the spare is still
 * closing, the connection waits for it (on_spare_closed). */
static void drop_unserved(wstun_server *srv) {
  if (srv->spare_busy) {
    srv->accept_waiting = 1;
    return;
  }
  if (uv_tcp_init(srv->loop, &srv->spare) != 0)
    return;
  srv->spare.data = srv;
  srv->spare_busy = 1;
  srv->handles_open++;
  char ip[64] = "?";
  if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&srv->spare) ==
      0) {
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getpeername(&srv->spare, (struct sockaddr *)&ss, &len) == 0) {
      if (ss.ss_family == AF_INET6)
        uv_ip6_name((struct sockaddr_in6 *)&ss, ip, sizeof(ip));
      else
        uv_ip4_name((struct sockaddr_in *)&ss, ip, sizeof(ip));
    }
  }
  wstun__log(&srv->log, WSTUN_LOG_WARN,
             "connection from %s dropped: out of memory", ip);
  uv_close((uv_handle_t *)&srv->spare, on_spare_closed);
}

wstun__front *wstun__front_new(wstun_server *srv) {
  wstun__front *f = wstun__calloc(1, sizeof(*f));
  if (f == NULL)
    return NULL;
  f->srv = srv;
  f->conn = wstun__conn_new(srv->loop, &srv->shared, &front_conn_cbs, f);
  if (f->conn == NULL) {
    wstun__free(f);
    return NULL;
  }
  f->conn->high_water = FRONT_OUT_MAX;
  uv_timer_init(srv->loop, &f->timer);
  f->timer.data = f;
  wstun__exchange_init(&f->ex, srv, &ex_cbs);
  wstun__http_parser_init(&f->parser, HTTP_REQUEST, srv->max_header,
                          srv->max_body, &req_cbs, f);
  wstun__list_push_front(&srv->fronts, &f->link);
  srv->nfronts++;
  return f;
}

void wstun__front_accept(wstun_server *srv) {
  wstun__front *f = wstun__front_new(srv);
  if (f == NULL) {
    drop_unserved(srv);
    return;
  }
  if (wstun__conn_accept(f->conn, (uv_stream_t *)&srv->listener) != 0 ||
      (srv->tls && wstun__conn_start_tls(f->conn, srv->tls, NULL) != 0)) {
    wstun__front_close(f);
    return;
  }
  char ip[64];
  const char *why;
  f->ip = wstun__registry_conn_admit(
      srv, wstun__conn_peer_ip(f->conn, ip, sizeof(ip)), &why);
  if (f->ip == NULL) {
    /* over a connection cap: a short answer, nothing read. One log line
     * per 10 s at most, or a flood would flood the log as well. */
    uint64_t now = uv_now(srv->loop);
    srv->refused_total++;
    if (!srv->refused_logged || now - srv->refused_logged_ms >= 10000) {
      wstun__log(&srv->log, WSTUN_LOG_WARN,
                 "connection from %s refused: %s (%zu open; %llu more "
                 "refused since the last such line)",
                 ip, why, srv->nconns,
                 (unsigned long long)srv->refused_unlogged);
      srv->refused_logged = 1;
      srv->refused_logged_ms = now;
      srv->refused_unlogged = 0;
    } else {
      srv->refused_unlogged++;
    }
    f->close_after = 1;
    f->phase = WSTUN__FRONT_ANSWERED;
    write_simple(f, 503,
                 strcmp(why, "out of memory") == 0 ? "Out of memory"
                                                   : "Too many connections");
    front_next(f);
    return;
  }
  if (f->srv->tls)
    set_timer(f,
              f->srv->header_timeout_ms < f->srv->idle_timeout_ms
                  ? f->srv->header_timeout_ms
                  : f->srv->idle_timeout_ms,
              on_tls_timeout);
  else
    set_timer(f, f->srv->idle_timeout_ms, on_idle_timeout);
}
