/* Front connections: HTTP requesters on the server. Each connection runs
 * one exchange at a time: its request is parsed (llhttp), routed to a local
 * endpoint or turned into a tunnel message, and the response coming back
 * from the tunnel is parsed again and re-framed for this connection.
 * Pipelined requests wait in the connection's input until the exchange
 * before them is done. */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "wstun_alloc.h"
#include "wstun_registry.h"
#include "wstun_router.h"
#include "wstun_util.h"
#include "wstun_ws.h"

#define RESP_MAX_HEAD (1 << 20) /* response heads from tunnel clients */
/* Response bytes buffered for a requester before its tunnel stops reading:
 * enough to ride out a slow moment of one reader without holding up the
 * others on the tunnel, bounded per connection. */
#define FRONT_OUT_MAX (2u << 20)

static const wstun__conn_cbs front_conn_cbs;
static const wstun__http_parser_cbs req_cbs;
static const wstun__http_parser_cbs resp_cbs;
static const wstun__outmsg_cbs req_msg_cbs;
static const wstun__reg_entry_cbs reg_cbs;

static void front_next(wstun__front *f);

/* ---- small helpers ------------------------------------------------------ */

static void set_timer(wstun__front *f, uint64_t ms, uv_timer_cb cb) {
  if (!f->closing)
    uv_timer_start(&f->timer, cb, ms, 0);
}

static int resp_started(const wstun__front *f) {
  return f->state == WSTUN__EX_RESPONDING;
}

/* Writes a complete short answer on the connection. Errors carry
 * nosniff, as the Go server's (http.Error) do. */
/* How our own answers are written: closing the connection after them, and
 * with no body when they answer a HEAD (the requester would read the body
 * as the start of its next response). */
static int answer_flags(const wstun__front *f) {
  return (f->close_after || f->srv->closing ? WSTUN__HTTP_CLOSE : 0) |
         (f->head_req ? WSTUN__HTTP_NO_BODY : 0);
}

static void write_simple(wstun__front *f, int status, const char *text) {
  if (f->conn == NULL)
    return;
  wstun__http_write_simple(
      wstun__conn_outbuf(f->conn), status, text ? text : "",
      status >= 400 ? "X-Content-Type-Options: nosniff\r\n" : NULL,
      answer_flags(f));
  wstun__conn_flush(f->conn);
}

/* Drops everything the exchange holds on tunnels and queues. */
static void exchange_release(wstun__front *f) {
  wstun__registry_unlink(&f->reg);
  wstun__buf_free(&f->replay);
  if (f->req) {
    wstun__outmsg *m = f->req;
    f->req = NULL;
    wstun__outmsg_abandon(m);
  }
  if (f->resp_init) {
    wstun__http_parser_free(&f->resp);
    f->resp_init = 0;
  }
  f->reg.tok = NULL;
}

int wstun__front_busy(const wstun__front *f) {
  return !f->closing && (f->state != WSTUN__EX_NONE ||
                         wstun__http_parser_in_message(&f->parser));
}

/* ---- teardown ----------------------------------------------------------- */

static void front_maybe_free(wstun__front *f) {
  if (!f->timer_closed || !f->conn_closed)
    return;
  wstun_server *srv = f->srv;
  wstun__list_remove(&f->link);
  srv->nfronts--;
  wstun__registry_conn_release(srv, f->ip);
  wstun__http_parser_free(&f->parser);
  wstun__free(f);
  if (srv->on_gone)
    srv->on_gone(srv);
}

static void on_timer_closed(uv_handle_t *h) {
  wstun__front *f = h->data;
  f->timer_closed = 1;
  front_maybe_free(f);
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
  f->conn_closed = 1;
  if (!f->closing)
    wstun__front_close(f); /* closed after a final response */
  else
    front_maybe_free(f);
}

void wstun__front_close(wstun__front *f) {
  if (f->closing)
    return;
  f->closing = 1;
  exchange_release(f);
  f->state = WSTUN__EX_NONE;
  uv_timer_stop(&f->timer);
  uv_close((uv_handle_t *)&f->timer, on_timer_closed);
  if (f->conn)
    wstun__conn_close(f->conn);
  else
    f->conn_closed = 1;
  front_maybe_free(f);
}

/* Ends the connection abruptly (RST), so a requester can tell a cut
 * response from a complete one even when the body is close-delimited. */
static void front_abort(wstun__front *f) {
  if (f->conn)
    wstun__conn_abort(f->conn);
  wstun__front_close(f);
}

/* ---- finishing an exchange ---------------------------------------------- */

static void log_ret(wstun__front *f, int status) {
  wstun__metrics_answer(&f->srv->metrics, status,
                        uv_now(f->srv->loop) - f->start_ms);
  wstun__log(&f->srv->log, WSTUN_LOG_DEBUG,
             "HTTP RET token=%s id=%04x status=%d (%llu ms)", f->token_prefix,
             f->reg.id, status,
             (unsigned long long)(uv_now(f->srv->loop) - f->start_ms));
}

/* Bookkeeping for /admin: how the exchange of a known token ended. */
static void account(wstun__front *f, int ok) {
  wstun__token *t = f->reg.tok;
  char addr[64] = "";
  if (f->conn)
    wstun__conn_peer(f->conn, addr, sizeof(addr));
  if (ok)
    f->srv->completed++;
  else
    f->srv->errored++;
  if (t == NULL)
    return;
  if (ok) {
    t->last_success = uv_now(f->srv->loop);
    memcpy(t->last_success_addr, addr, sizeof(addr));
  } else {
    t->last_error = uv_now(f->srv->loop);
    memcpy(t->last_error_addr, addr, sizeof(addr));
  }
}

void wstun__front_fail(wstun__front *f, int status, const char *text) {
  if (f->closing)
    return;
  if (f->reg.tok && f->state != WSTUN__EX_RESPONDING)
    account(f, 0);
  int started = resp_started(f);
  exchange_release(f);
  if (started) {
    /* the head is out: only a cut connection can tell the requester */
    front_abort(f);
    return;
  }
  if (status != 0) {
    log_ret(f, status);
    write_simple(f, status, text);
  } else if (f->conn) {
    wstun__conn_flush(f->conn);
  }
  f->state = WSTUN__EX_DONE;
  front_next(f);
}

/* Safe methods only (RFC 9110 9.2.1): sending one twice changes nothing on
 * the backend, so a request whose tunnel died before answering may go out
 * again. Bigger requests are not copied: they stream. */
#define REPLAY_MAX (16 * 1024)
static int replayable_method(int method) {
  return method == HTTP_GET || method == HTTP_HEAD || method == HTTP_OPTIONS ||
         method == HTTP_TRACE;
}

static int replay(wstun__front *f) {
  if (wstun__buf_size(&f->replay) == 0 || f->resp_init || f->closing ||
      f->state != WSTUN__EX_WAITING || f->reg.tok == NULL || f->tries + 1 >= 3)
    return 0;
  wstun__outmsg *m = wstun__outmsg_new(&req_msg_cbs, f);
  if (m == NULL || wstun__buf_append(&m->buf, wstun__buf_data(&f->replay),
                                     wstun__buf_size(&f->replay)) != 0) {
    if (m)
      wstun__outmsg_free(m);
    return 0;
  }
  f->tries++;
  wstun__log(&f->srv->log, WSTUN_LOG_INFO,
             "WS   SND token=%s id=%04x: tunnel lost before the response: "
             "sending it again (try %d)",
             f->token_prefix, f->reg.id, f->tries + 1);
  wstun__registry_unlink(&f->reg);
  m->finished = 1;
  f->req = m;
  f->state = WSTUN__EX_READING;
  wstun__registry_dispatch(f->srv, &f->reg);
  return 1;
}

static void tunnel_lost(wstun__front *f) {
  if (replay(f))
    return;
  wstun__log(
      &f->srv->log, WSTUN_LOG_INFO,
      "HTTP RET token=%s id=%04x: tunnel lost with the request in flight",
      f->token_prefix, f->reg.id);
  wstun__front_fail(f, 502, "Tunnel connection lost before the response");
}

static void on_idle_timeout(uv_timer_t *t) {
  wstun__front_close(t->data);
}

/* The request head did not arrive in time (slowloris): say so, close. */
static void on_head_timeout(uv_timer_t *t) {
  wstun__front *f = t->data;
  if (f->state != WSTUN__EX_NONE || f->conn == NULL) {
    wstun__front_close(f);
    return;
  }
  f->close_after = 1;
  f->state = WSTUN__EX_DONE;
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

static void on_deadline(uv_timer_t *t) {
  wstun__front *f = t->data;
  wstun__log(&f->srv->log, WSTUN_LOG_INFO,
             "HTTP RET token=%s id=%04x status=504: no response in time",
             f->token_prefix, f->reg.id);
  wstun__front_fail(f, 504, "Tunnel timeout");
}

/* ---- a requester that holds its tunnel ---------------------------------- */

/* While the exchange's response holds the tunnel paused (its requester
 * reads slower than the tunnel client sends), the timer watches the
 * output instead of the deadline: a requester that takes no byte for
 * stall_ms is cut, so that the other exchanges on the tunnel go on. */
static uint64_t deadline_left(wstun__front *f) {
  uint64_t end = f->start_ms + f->srv->http_timeout_ms;
  uint64_t now = uv_now(f->srv->loop);
  return end > now ? end - now : 0;
}

static void on_stall_check(uv_timer_t *t) {
  wstun__front *f = t->data;
  wstun_server *srv = f->srv;
  uint64_t now = uv_now(srv->loop);
  if (f->conn == NULL || deadline_left(f) == 0) {
    on_deadline(t);
    return;
  }
  uint64_t p = wstun__conn_progress(f->conn);
  if (p != f->stall_mark) {
    f->stall_mark = p;
    f->stall_since = now;
  }
  if (now - f->stall_since >= srv->stall_ms) {
    wstun__log(&srv->log, WSTUN_LOG_WARN,
               "HTTP RET token=%s id=%04x: requester read nothing for %llu "
               "ms while holding the tunnel: cut",
               f->token_prefix, f->reg.id,
               (unsigned long long)(now - f->stall_since));
    wstun__front_fail(f, 0, NULL);
    return;
  }
  uint64_t next = srv->stall_ms / 4 < 100 ? 100 : srv->stall_ms / 4;
  uint64_t left = deadline_left(f);
  set_timer(f, next < left ? next : left, on_stall_check);
}

static void stall_watch_start(wstun__front *f) {
  f->stall_mark = wstun__conn_progress(f->conn);
  f->stall_since = uv_now(f->srv->loop);
  uint64_t next = f->srv->stall_ms / 4 < 100 ? 100 : f->srv->stall_ms / 4;
  uint64_t left = deadline_left(f);
  set_timer(f, next < left ? next : left, on_stall_check);
}

static void stall_watch_stop(wstun__front *f) {
  set_timer(f, deadline_left(f), on_deadline);
}

/* The same for the request: a message streamed onto the tunnel is sent
 * alone until it ends, so an uploader that stops sending its body holds
 * up everything else to go through that tunnel. While the request is
 * streamed, the timer checks that the tunnel is not left waiting for its
 * bytes for stall_ms; an uploader that does so gets 408 and its message
 * is ended where it stands (the tunnel client sees it cut short). */
static void on_upload_check(uv_timer_t *t) {
  wstun__front *f = t->data;
  wstun_server *srv = f->srv;
  uint64_t now = uv_now(srv->loop);
  uint64_t left = deadline_left(f);
  if (left == 0) {
    on_deadline(t);
    return;
  }
  wstun__outmsg *m = f->req;
  if (m == NULL || m->finished ||
      (f->state != WSTUN__EX_QUEUED && f->state != WSTUN__EX_SENDING)) {
    set_timer(f, left, on_deadline); /* written: back to the deadline */
    return;
  }
  /* starving the tunnel: it is sending this message and has taken all
   * there is (one byte is always held back) */
  int starving = f->state == WSTUN__EX_SENDING && m->tunnel &&
                 m->tunnel->cur == m && wstun__buf_size(&m->buf) <= 1;
  if (!starving || m->taken != f->stall_mark) {
    f->stall_mark = m->taken;
    f->stall_since = now;
  } else if (now - f->stall_since >= srv->stall_ms) {
    wstun__log(&srv->log, WSTUN_LOG_WARN,
               "HTTP RET token=%s id=%04x status=408: request body stalled "
               "for %llu ms while holding the tunnel",
               f->token_prefix, f->reg.id,
               (unsigned long long)(now - f->stall_since));
    f->close_after = 1; /* the rest of the body will not be read */
    wstun__front_fail(f, 408, "Request body timeout");
    return;
  }
  uint64_t next = srv->stall_ms / 4 < 100 ? 100 : srv->stall_ms / 4;
  set_timer(f, next < left ? next : left, on_upload_check);
}

/* The exchange is done (answered or failed): next request, or close. */
static void front_next(wstun__front *f) {
  if (f->closing || f->conn == NULL)
    return;
  if (f->state != WSTUN__EX_DONE)
    return;
  f->state = WSTUN__EX_NONE;
  f->reg.tok = NULL;
  f->reg.tun = NULL;
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

/* ---- requests ----------------------------------------------------------- */

static void local_answer(wstun__front *f, int status, const char *text) {
  f->state = WSTUN__EX_DONE;
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
      f->state = WSTUN__EX_DONE;
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
  f->state = WSTUN__EX_DONE;
  if (rc != 0)
    write_simple(f, 503, "Out of memory");
  else if (f->conn) {
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

/* Builds the head of the tunnel message: origin-form target, no
 * hop-by-hop headers, the requester appended to X-Forwarded-For, and our
 * own body framing. `target` may point into the head's text, which every
 * header added below may move: it is copied first. */
static int build_request(wstun__front *f, wstun__http_head *h,
                         const char *target, size_t tlen) {
  if (wstun__http_head_set_target(h, target, tlen) != 0)
    return WSTUN_ENOMEM;
  char ip[64];
  wstun__conn_peer_ip(f->conn, ip, sizeof(ip));
  /* every line, in order, as one list: the proxies' appended last */
  wstun__buf v = WSTUN__BUF_INIT;
  int n = wstun__http_head_join(h, "X-Forwarded-For", &v);
  int rc = n < 0 ? n : 0;
  if (n > 0)
    rc |= wstun__buf_append(&v, ", ", 2);
  rc |= wstun__buf_append_str(&v, ip);
  rc |= wstun__buf_append(&v, "", 1);
  if (rc != 0) {
    wstun__buf_free(&v);
    return WSTUN_ENOMEM;
  }
  int expect = wstun__http_head_has_token(h, "Expect", "100-continue");
  wstun__http_head_strip_hop_by_hop(h, 1);
  wstun__http_head_remove(h, "Expect");
  wstun__http_head_remove(h, "X-Forwarded-For");
  rc = wstun__http_head_add(h, "X-Forwarded-For", (const char *)v.base);
  wstun__buf_free(&v);
  rc |= wstun__http_head_frame(h, h->has_content_length, h->content_length,
                               h->chunked, &f->req_chunked);
  f->req = rc == 0 ? wstun__outmsg_new(&req_msg_cbs, f) : NULL;
  if (f->req == NULL)
    return WSTUN_ENOMEM;
  if (wstun__http_head_write(h, &f->req->buf) != 0)
    return WSTUN_ENOMEM;
  if (expect)
    wstun__conn_write(f->conn, "HTTP/1.1 100 Continue\r\n\r\n", 25);
  return 0;
}

static void dispatch_if_ready(wstun__front *f) {
  if (f->state != WSTUN__EX_READING || f->req == NULL)
    return;
  size_t size = wstun__buf_size(&f->req->buf);
  if (f->req->finished && f->tries == 0 && size <= REPLAY_MAX &&
      replayable_method(f->method) &&
      wstun__buf_append(&f->replay, wstun__buf_data(&f->req->buf), size) != 0)
    wstun__buf_free(&f->replay); /* no copy: no replay, nothing else lost */
  if (f->req->finished || wstun__buf_size(&f->req->buf) >= WSTUN__STREAM_AT) {
    wstun__registry_dispatch(f->srv, &f->reg);
    if (f->req && !f->req->finished && !f->closing &&
        (f->state == WSTUN__EX_QUEUED || f->state == WSTUN__EX_SENDING)) {
      f->stall_mark = f->req->taken;
      f->stall_since = uv_now(f->srv->loop);
      set_timer(f, f->srv->stall_ms / 4 < 100 ? 100 : f->srv->stall_ms / 4,
                on_upload_check);
    }
  }
}

static int route_tunnel(wstun__front *f, wstun__http_head *h, const char *tok,
                        size_t toklen, const char *target, size_t tlen) {
  wstun_server *srv = f->srv;
  wstun__token *t = wstun__registry_find_token(srv, tok, toklen);
  char tmp[12];
  char *tokz = wstun__strndup(tok, toklen);
  wstun__redact(tokz ? tokz : "", tmp);
  wstun__free(tokz);
  memcpy(f->token_prefix, tmp, sizeof(tmp));
  if (t == NULL) {
    wstun__log(&srv->log, WSTUN_LOG_DEBUG, "HTTP RCV token=%s: unknown token",
               f->token_prefix);
    account(f, 0); /* the Go server counts it as an errored request */
    local_answer(f, 404, "Tunnel not found (or not seen in a long time)");
    return 0;
  }
  if (build_request(f, h, target, tlen) != 0) {
    local_answer(f, 503, "Out of memory");
    return 0;
  }
  f->reg.tok = t;
  t->last_activity = uv_now(srv->loop);
  f->tries = 0;
  f->state = WSTUN__EX_READING;
  f->start_ms = uv_now(srv->loop);
  if (WSTUN__LOG_ON(&srv->log, WSTUN_LOG_DEBUG)) {
    char addr[64];
    wstun__conn_peer(f->conn, addr, sizeof(addr));
    wstun__log(&srv->log, WSTUN_LOG_DEBUG,
               "HTTP RCV token=%s verb=%s url=%s addr=%s", f->token_prefix,
               llhttp_method_name((llhttp_method_t)h->method),
               wstun__http_head_target(h), addr);
  }
  set_timer(f, srv->http_timeout_ms, on_deadline);
  return 0;
}

static int req_on_head(void *ud, wstun__http_head *h) {
  wstun__front *f = ud;
  wstun_server *srv = f->srv;
  f->method = h->method;
  f->head_req = h->method == HTTP_HEAD;
  f->close_after = !h->keep_alive;
  f->start_ms = uv_now(srv->loop);
  f->reg.id = 0;
  f->state = WSTUN__EX_NONE;
  uv_timer_stop(&f->timer);
  char buf[4096];
  wstun__route_decision d;
  wstun__route_request(srv->base_path, srv->base_len, h, buf, sizeof(buf), &d);
  switch (d.kind) {
  case WSTUN__ROUTE_UPGRADE:
    f->upgrade = 1;
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
  if (f->req == NULL)
    return 0; /* answered already: discard */
  wstun__buf *b = &f->req->buf;
  int rc = 0;
  if (f->req_chunked) {
    rc |= wstun__http_write_chunk_header(b, n);
    rc |= wstun__buf_append(b, d, n);
    rc |= wstun__buf_append(b, "\r\n", 2);
  } else {
    rc = wstun__buf_append(b, d, n);
  }
  if (rc != 0) {
    f->parser.error_status = 503;
    return -1;
  }
  if (f->state == WSTUN__EX_READING)
    dispatch_if_ready(f);
  else if (f->state == WSTUN__EX_SENDING)
    wstun__registry_kick(&f->reg);
  if (f->req && wstun__outmsg_full(f->req) && f->conn)
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
  if (f->req != NULL) {
    if (f->req_chunked &&
        wstun__buf_append_str(&f->req->buf, WSTUN__HTTP_LAST_CHUNK) != 0) {
      f->parser.error_status = 503;
      return -1;
    }
    f->req->finished = 1;
    if (f->state == WSTUN__EX_READING)
      dispatch_if_ready(f);
    else if (f->state == WSTUN__EX_SENDING)
      wstun__registry_kick(&f->reg);
  }
  /* one exchange at a time: stop parsing here */
  return 1;
}

static const wstun__http_parser_cbs req_cbs = {
    .on_head = req_on_head,
    .on_body = req_on_body,
    .on_complete = req_on_complete,
};

/* ---- the request message's life on the tunnel --------------------------- */

static void req_msg_sent(void *owner, wstun__outmsg *m) {
  wstun__front *f = owner;
  (void)m;
  f->req = NULL;
  if (f->state != WSTUN__EX_SENDING)
    return;
  f->state = WSTUN__EX_WAITING;
  if (f->reg.tun == NULL) /* written, but the tunnel died right after */
    tunnel_lost(f);
}

static void req_msg_drain(void *owner, wstun__outmsg *m) {
  wstun__front *f = owner;
  (void)m;
  if (f->conn && !f->closing && f->state != WSTUN__EX_DONE)
    wstun__conn_resume(f->conn);
}

static void req_msg_failed(void *owner, wstun__outmsg *m, int restartable) {
  wstun__front *f = owner;
  wstun__registry_unlink(&f->reg);
  if (restartable && f->state == WSTUN__EX_SENDING && ++f->tries < 3) {
    wstun__log(&f->srv->log, WSTUN_LOG_INFO,
               "WS   SND token=%s id=%04x failed: retrying (try %d)",
               f->token_prefix, f->reg.id, f->tries + 1);
    f->state = WSTUN__EX_READING;
    if (m->finished || wstun__buf_size(&m->buf) >= WSTUN__STREAM_AT)
      wstun__registry_dispatch(f->srv, &f->reg);
    return;
  }
  f->req = NULL;
  wstun__outmsg_free(m);
  if (restartable) {
    wstun__log(&f->srv->log, WSTUN_LOG_INFO,
               "WS   SND token=%s id=%04x failed after %d tries: 504",
               f->token_prefix, f->reg.id, f->tries);
    wstun__front_fail(f, 504, "Tunnel retry exhausted");
  } else
    tunnel_lost(f);
}

static const wstun__outmsg_cbs req_msg_cbs = {
    .on_sent = req_msg_sent,
    .on_drain = req_msg_drain,
    .on_failed = req_msg_failed,
};

/* ---- responses from the tunnel ------------------------------------------ */

static int resp_on_head(void *ud, wstun__http_head *h) {
  wstun__front *f = ud;
  int status = h->status;
  if (status == 101) {
    /* upgrades are never tunneled: a 101 would tell a proxy in front of
     * us to pass raw bytes from now on, straight to this server */
    wstun__log(&f->srv->log, WSTUN_LOG_WARN,
               "WS   RCV token=%s id=%04x: 101 from the tunnel client refused",
               f->token_prefix, f->reg.id);
    return -1;
  }
  if (status >= 100 && status < 200)
    return 1; /* interim (the 100 Continue is ours to send): dropped */
  int no_body = f->method == HTTP_HEAD || status == 204 || status == 304;
  /* HTTP/1.0 requesters get a body ended by the connection's close */
  int http11 = f->parser.head.major == 1 && f->parser.head.minor >= 1;
  wstun__http_head_strip_hop_by_hop(h, 1);
  int rc = wstun__http_head_frame(h, h->has_content_length, h->content_length,
                                  !no_body && http11, &f->resp_chunked);
  f->resp_close = !h->has_content_length && !no_body && !http11;
  if (f->resp_close || f->close_after || f->srv->closing) {
    f->close_after = 1;
    rc |= wstun__http_head_add(h, "Connection", "close");
  }
  /* the registered phrase, as the Go server relays it ("201 Created Fine"
   * goes out as "201 Created"); an unregistered code keeps the client's */
  if (wstun__http_reason(status)[0] != '\0')
    h->target_len = 0;
  if (rc != 0 || f->conn == NULL ||
      wstun__http_head_write(h, wstun__conn_outbuf(f->conn)) != 0)
    return -1;
  f->state = WSTUN__EX_RESPONDING;
  /* as the Go server: only 2xx and 3xx answers are completed requests */
  account(f, status >= 200 && status < 400);
  wstun__log(&f->srv->log, WSTUN_LOG_DEBUG,
             "WS   RCV token=%s id=%04x status=%d", f->token_prefix, f->reg.id,
             status);
  log_ret(f, status);
  wstun__conn_flush(f->conn);
  return no_body ? 1 : 0;
}

static int resp_on_body(void *ud, const uint8_t *d, size_t n) {
  wstun__front *f = ud;
  if (f->conn == NULL)
    return -1;
  wstun__buf *out = wstun__conn_outbuf(f->conn);
  int rc = 0;
  if (f->resp_chunked) {
    rc |= wstun__http_write_chunk_header(out, n);
    rc |= wstun__buf_append(out, d, n);
    rc |= wstun__buf_append(out, "\r\n", 2);
  } else {
    rc = wstun__buf_append(out, d, n);
  }
  if (rc != 0)
    return -1;
  wstun__conn_flush(f->conn);
  if (wstun__conn_congested(f->conn) && wstun__registry_pause_rx(&f->reg))
    stall_watch_start(f);
  return 0;
}

static int resp_on_complete(void *ud) {
  wstun__front *f = ud;
  int status = f->resp.head.status;
  if (status >= 100 && status < 200)
    return 0; /* an interim response (dropped): the final one follows */
  if (f->resp_chunked && f->conn)
    wstun__conn_write(f->conn, WSTUN__HTTP_LAST_CHUNK,
                      sizeof(WSTUN__HTTP_LAST_CHUNK) - 1);
  f->resp_done = 1;
  /* a message carries one response: whatever follows is never parsed (it
   * would go to the requester as the answer to its next request) */
  return 1;
}

static const wstun__http_parser_cbs resp_cbs = {
    .on_head = resp_on_head,
    .on_body = resp_on_body,
    .on_complete = resp_on_complete,
};

/* The tunnel client's answer is no HTTP response: 506 with an empty body,
 * what the Go server sends; the why goes to the log. */
static void fail_506(wstun__front *f, const char *why) {
  wstun__log(&f->srv->log, WSTUN_LOG_WARN, "WS   RCV token=%s id=%04x: %s",
             f->token_prefix, f->reg.id, why);
  wstun__front_fail(f, 506, "");
}

static int front_resp_data(wstun__front *f, const uint8_t *d, size_t n) {
  if (!f->resp_init) {
    wstun__http_parser_init(&f->resp, HTTP_RESPONSE, RESP_MAX_HEAD, 0,
                            &resp_cbs, f);
    f->resp_init = 1;
    f->resp_done = 0;
    f->resp_extra = 0;
  }
  if (f->resp_done) {
    f->resp_extra += n; /* bytes after a complete response: dropped */
    return 0;
  }
  size_t used;
  int rc = wstun__http_parser_feed(&f->resp, d, n, &used);
  if (rc == WSTUN__HTTP_PAUSED)
    f->resp_extra += n - used;
  if (rc == WSTUN__HTTP_ERROR) {
    fail_506(f, f->resp.error_status == 502 && f->resp.error_text
                    ? f->resp.error_text /* says what */
                    : "unparsable response");
    return -1;
  }
  return 0;
}

static void response_done(wstun__front *f) {
  exchange_release(f);
  f->state = WSTUN__EX_DONE;
  front_next(f);
}

static void front_resp_end(wstun__front *f, int complete) {
  if (f->closing || f->state == WSTUN__EX_DONE)
    return;
  if (!f->resp_init) {
    if (complete)
      fail_506(f, "empty response");
    else
      tunnel_lost(f);
    return;
  }
  if (!f->resp_done && complete &&
      wstun__http_parser_finish(&f->resp) == WSTUN__HTTP_OK && f->resp_close)
    f->resp_done = 1;
  if (f->resp_done) {
    if (f->resp_extra > 0)
      wstun__log(&f->srv->log, WSTUN_LOG_WARN,
                 "WS   RCV token=%s id=%04x: %llu bytes after the response "
                 "in its message: dropped",
                 f->token_prefix, f->reg.id, (unsigned long long)f->resp_extra);
    response_done(f);
    return;
  }
  if (!resp_started(f)) {
    if (complete)
      fail_506(f, "incomplete response head");
    else
      tunnel_lost(f);
    return;
  }
  wstun__log(&f->srv->log, WSTUN_LOG_WARN,
             "HTTP RET token=%s id=%04x: response cut short: aborting",
             f->token_prefix, f->reg.id);
  front_abort(f);
}

/* ---- the registry's calls ---------------------------------------------- */

static wstun__front *entry_front(wstun__reg_entry *e) {
  return wstun__list_entry(e, wstun__front, reg);
}

static wstun__outmsg *reg_on_send(wstun__reg_entry *e) {
  wstun__front *f = entry_front(e);
  f->state = WSTUN__EX_SENDING;
  wstun__log(&f->srv->log, WSTUN_LOG_DEBUG,
             "WS   SND token=%s id=%04x verb=%s url=%s addr=%s",
             f->token_prefix, e->id,
             llhttp_method_name((llhttp_method_t)f->method),
             wstun__http_head_target(&f->parser.head), e->tun->addr);
  return f->req;
}

static int reg_on_msg_begin(wstun__reg_entry *e) {
  wstun__front *f = entry_front(e);
  return f->state == WSTUN__EX_WAITING || f->state == WSTUN__EX_SENDING;
}

static int reg_on_msg_data(wstun__reg_entry *e, const uint8_t *d, size_t n) {
  return front_resp_data(entry_front(e), d, n);
}

static void reg_on_msg_end(wstun__reg_entry *e, int complete) {
  front_resp_end(entry_front(e), complete);
}

static void reg_on_tunnel_lost(wstun__reg_entry *e) {
  wstun__front *f = entry_front(e);
  /* one still being sent comes back through its message's callbacks */
  if (f->state != WSTUN__EX_SENDING)
    tunnel_lost(f);
}

static void reg_on_fail(wstun__reg_entry *e, int status, const char *text) {
  wstun__front_fail(entry_front(e), status, text);
}

static const wstun__reg_entry_cbs reg_cbs = {
    .on_send = reg_on_send,
    .on_msg_begin = reg_on_msg_begin,
    .on_msg_data = reg_on_msg_data,
    .on_msg_end = reg_on_msg_end,
    .on_tunnel_lost = reg_on_tunnel_lost,
    .on_fail = reg_on_fail,
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
    wstun__front_fail(f, 400, "Only GET requests are supported");
    return 0;
  }
  const char *token = wstun__http_head_get(h, "Origin");
  if (token == NULL) {
    srv->metrics.hs_failures[WSTUN__HS_NO_TOKEN]++;
    wstun__front_fail(f, 400, "Origin header with rendez-vous token required");
    return 0;
  }
  if (strlen(token) < MIN_TOKEN_LEN) {
    srv->metrics.hs_failures[WSTUN__HS_SHORT_TOKEN]++;
    wstun__front_fail(f, 400,
                      "Rendez-vous token is too short (must be 16 chars)");
    return 0;
  }
  wstun__redact(token, red);
  const char *bad = wstun__registry_check_auth(
      srv, token, wstun__http_head_get(h, "Authorization"));
  if (bad != NULL) {
    srv->metrics.hs_failures[WSTUN__HS_UNAUTHORIZED]++;
    wstun__log(&srv->log, WSTUN_LOG_WARN, "WS   refused token=%s addr=%s: %s",
               red, peer, bad);
    wstun__buf *out = wstun__conn_outbuf(f->conn);
    wstun__http_write_simple(out, 401, bad,
                             "WWW-Authenticate: Basic realm=\"wstunnel\"\r\n"
                             "X-Content-Type-Options: nosniff\r\n",
                             1);
    wstun__front_fail(f, 0, NULL);
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
    wstun__front_fail(f, 429, msg);
    return 0;
  }
  const char *why = NULL;
  int status = wstun__ws_check_upgrade(h, &why);
  if (status != 0) {
    srv->metrics.hs_failures[WSTUN__HS_BAD_UPGRADE]++;
    wstun__front_fail(f, status, why);
    return 0;
  }
  if (wstun__registry_add_tunnel(srv, token, peer, h, f->conn, f->ip, rest,
                                 n) != 0) {
    wstun__front_fail(f, 503, "Out of memory");
    return 0;
  }
  /* the connection now belongs to the tunnel, and counts as its */
  f->conn = NULL;
  f->ip = NULL;
  return 1;
}

/* ---- connection callbacks ----------------------------------------------- */

static size_t front_on_data(wstun__conn *c, const uint8_t *data, size_t len) {
  wstun__front *f = c->owner;
  size_t off = 0;
  while (off < len && !f->closing) {
    if (f->state != WSTUN__EX_NONE &&
        !wstun__http_parser_in_message(&f->parser))
      return off; /* the next request waits for this exchange */
    /* a requester that pipelines and does not read its answers: no more
     * requests until it has read some (front_on_drain resumes), or local
     * answers would pile up without bound */
    if (f->state == WSTUN__EX_NONE &&
        !wstun__http_parser_in_message(&f->parser) && wstun__conn_congested(c))
      return off;
    int was_in = wstun__http_parser_in_message(&f->parser);
    size_t used = 0;
    int rc = wstun__http_parser_feed(&f->parser, data + off, len - off, &used);
    off += used;
    if (f->closing)
      return len;
    /* a new head began and is not complete yet: it gets a deadline */
    if (!was_in && f->state == WSTUN__EX_NONE && f->parser.in_head &&
        wstun__http_parser_in_message(&f->parser))
      set_timer(f, f->srv->header_timeout_ms, on_head_timeout);
    if (rc == WSTUN__HTTP_ERROR) {
      int status = f->parser.error_status ? f->parser.error_status : 400;
      const char *text =
          f->parser.error_text ? f->parser.error_text : "Bad request";
      f->close_after = 1;
      if (f->state == WSTUN__EX_NONE || f->state == WSTUN__EX_DONE) {
        f->state = WSTUN__EX_DONE;
        write_simple(f, status, text);
        front_next(f);
      } else {
        wstun__front_fail(f, status, text);
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
      if (f->state == WSTUN__EX_DONE) {
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
  (void)err; /* TLS failures are logged when the connection closes */
  wstun__front_close(c->owner);
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
  if (f->reg.paused && f->reg.tun && f->reg.tun->t) {
    if (f->state == WSTUN__EX_RESPONDING)
      stall_watch_stop(f);
    wstun__registry_resume_rx(&f->reg);
  }
  /* reading stopped on congested output between requests (front_on_data) */
  if (!f->closing && f->state == WSTUN__EX_NONE && !c->close_after_write)
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
  wstun__http_parser_init(&f->parser, HTTP_REQUEST, srv->max_header,
                          srv->max_body, &req_cbs, f);
  f->reg.cbs = &reg_cbs;
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
    f->state = WSTUN__EX_DONE;
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
