/* The exchange (see wstun_exchange.h): one request in flight on the
 * server, from its head to the end of its response. It owns the request's
 * tunnel message (and a copy to replay), the response parser, the
 * deadline and stall watches, the retries, and the state machine:
 *
 *   NONE -start-> READING -ready-> QUEUED -a tunnel-> SENDING -sent->
 *   WAITING -head-> RESPONDING -end-> DONE      (any -fail-> DONE)
 *
 * The registry calls it through reg_cbs (its reg_entry), the tunnel
 * through req_msg_cbs (its message), and it tells its requester through
 * the wstun__exchange_cbs it was given: nothing here touches a socket. */
#include <string.h>

#include "wstun_alloc.h"
#include "wstun_exchange.h"
#include "wstun_registry.h"
#include "wstun_router.h"
#include "wstun_util.h"

#define RESP_MAX_HEAD (1 << 20) /* response heads from tunnel clients */

static const wstun__http_parser_cbs resp_cbs;
static const wstun__outmsg_cbs req_msg_cbs;
static const wstun__reg_entry_cbs reg_cbs;

/* ---- small helpers ------------------------------------------------------ */

static void set_timer(wstun__exchange *ex, uint64_t ms, uv_timer_cb cb) {
  if (!ex->cancelled)
    uv_timer_start(&ex->timer, cb, ms, 0);
}

/* Drops everything the exchange holds on tunnels and queues. The message
 * goes first: on a v2 tunnel the stream's end (RESET, unless it is over
 * both ways) then frees what the tunnel still holds of it. */
static void release(wstun__exchange *ex) {
  if (ex->req) {
    wstun__outmsg *m = ex->req;
    ex->req = NULL;
    wstun__outmsg_abandon(m);
  }
  uint32_t code = ex->end_code    ? ex->end_code
                  : ex->resp_done ? WSTUN__V2_NO_ERROR
                                  : WSTUN__V2_CANCEL;
  wstun__registry_unlink(&ex->reg, code);
  wstun__buf_free(&ex->replay);
  if (ex->resp_init) {
    wstun__http_parser_free(&ex->resp);
    ex->resp_init = 0;
  }
  if (ex->reg.tok) {
    wstun__registry_token_drop(ex->reg.tok);
    ex->reg.tok = NULL;
  }
  uv_timer_stop(&ex->timer);
}

void wstun__exchange_init(wstun__exchange *ex, wstun_server *srv,
                          const wstun__exchange_cbs *cbs) {
  ex->srv = srv;
  ex->cbs = cbs;
  ex->reg.cbs = &reg_cbs;
  uv_timer_init(srv->loop, &ex->timer);
  ex->timer.data = ex;
}

void wstun__exchange_reset(wstun__exchange *ex, const wstun__http_head *h) {
  ex->method = h->method;
  ex->head = h;
  ex->start_ms = uv_now(ex->srv->loop);
  ex->reg.id = 0;
  ex->has_id = 0;
  ex->state = WSTUN__EX_NONE;
  ex->end_code = 0;
  ex->reset_pending = 0;
  ex->resp_hold = 0;
  ex->unconsumed = 0;
  ex->moved = 0;
  ex->upgrade = 0;
  ex->piping = 0;
}

int wstun__exchange_active(const wstun__exchange *ex) {
  return ex->state != WSTUN__EX_NONE && ex->state != WSTUN__EX_DONE;
}

void wstun__exchange_cancel(wstun__exchange *ex) {
  if (ex->cancelled)
    return;
  release(ex);
  ex->cancelled = 1;
  ex->state = WSTUN__EX_NONE;
}

void wstun__exchange_close(wstun__exchange *ex, wstun__closer *closer) {
  wstun__exchange_cancel(ex);
  wstun__closer_close_handle(closer, (uv_handle_t *)&ex->timer);
}

wstun__exchange *wstun__exchange_of(wstun__reg_entry *e) {
  return wstun__list_entry(e, wstun__exchange, reg);
}

void wstun__exchange_info_get(const wstun__exchange *ex,
                              wstun__exchange_info *out) {
  out->id = ex->reg.id;
  out->method = llhttp_method_name((llhttp_method_t)ex->method);
  out->uri = ex->head ? wstun__http_head_target(ex->head) : "";
  out->remote_addr = ex->peer;
  out->start_ms = ex->start_ms;
}

/* Hands the exchange to the registry: on a tunnel, queued, or failed. */
static void dispatch(wstun__exchange *ex) {
  if (wstun__registry_dispatch(ex->srv, &ex->reg))
    ex->state = WSTUN__EX_QUEUED;
}

/* ---- finishing ---------------------------------------------------------- */

void wstun__exchange_log_ret(wstun__exchange *ex, int status) {
  wstun_server *srv = ex->srv;
  wstun__metrics_answer(&srv->metrics, status,
                        uv_now(srv->loop) - ex->start_ms);
  wstun__log(&srv->log, WSTUN_LOG_DEBUG,
             "HTTP RET token=%s id=%04x status=%d (%llu ms)", ex->token_prefix,
             ex->reg.id, status,
             (unsigned long long)(uv_now(srv->loop) - ex->start_ms));
}

/* Bookkeeping for /admin: how the exchange of a known token ended. */
static void account(wstun__exchange *ex, int ok) {
  wstun__token *t = ex->reg.tok;
  if (ok)
    ex->srv->completed++;
  else
    ex->srv->errored++;
  if (t == NULL)
    return;
  if (ok) {
    t->last_success = uv_now(ex->srv->loop);
    memcpy(t->last_success_addr, ex->peer, sizeof(ex->peer));
  } else {
    t->last_error = uv_now(ex->srv->loop);
    memcpy(t->last_error_addr, ex->peer, sizeof(ex->peer));
  }
}

static void fail(wstun__exchange *ex, int status, const char *text,
                 wstun__ex_end how) {
  if (ex->cancelled)
    return;
  if (ex->reg.tok && ex->state != WSTUN__EX_RESPONDING)
    account(ex, 0);
  int started = ex->state == WSTUN__EX_RESPONDING;
  release(ex);
  ex->state = WSTUN__EX_DONE;
  if (started) {
    /* the head is out: only a cut connection can tell the requester */
    ex->cbs->on_done(ex, WSTUN__EX_ABORTED, 0, NULL);
    return;
  }
  if (status != 0)
    wstun__exchange_log_ret(ex, status);
  ex->cbs->on_done(ex, how, status, text);
}

void wstun__exchange_fail(wstun__exchange *ex, int status, const char *text) {
  fail(ex, status, text, WSTUN__EX_FAILED);
}

/* Safe methods only (RFC 9110 9.2.1): sending one twice changes nothing on
 * the backend, so a request whose tunnel died before answering may go out
 * again. Bigger requests are not copied: they stream. */
#define REPLAY_MAX (16 * 1024)
static int replayable_method(int method) {
  return method == HTTP_GET || method == HTTP_HEAD || method == HTTP_OPTIONS ||
         method == HTTP_TRACE;
}

/* Sends the request again from its copy: after its tunnel died (safe
 * methods only), or after a v2 client refused its stream (any method: the
 * client did not process it). */
static int resend(wstun__exchange *ex, const char *why) {
  if (wstun__buf_size(&ex->replay) == 0 || ex->resp_init || ex->cancelled ||
      (ex->state != WSTUN__EX_WAITING && ex->state != WSTUN__EX_SENDING) ||
      ex->reg.tok == NULL || ex->tries + 1 >= 3)
    return 0;
  wstun__outmsg *m = wstun__outmsg_new(&req_msg_cbs, ex);
  if (m == NULL || wstun__buf_append(&m->buf, wstun__buf_data(&ex->replay),
                                     wstun__buf_size(&ex->replay)) != 0) {
    if (m)
      wstun__outmsg_free(m);
    return 0;
  }
  ex->tries++;
  wstun__log(&ex->srv->log, WSTUN_LOG_INFO,
             "WS   SND token=%s id=%04x: %s: sending it again (try %d)",
             ex->token_prefix, ex->reg.id, why, ex->tries + 1);
  wstun__registry_unlink(&ex->reg, WSTUN__V2_CANCEL);
  if (ex->req_head_len > 0)
    wstun__outmsg_set_head_len(m, ex->req_head_len);
  m->finished = 1;
  ex->req = m;
  ex->state = WSTUN__EX_READING;
  dispatch(ex);
  return 1;
}

static int replay(wstun__exchange *ex) {
  return ex->state == WSTUN__EX_WAITING && replayable_method(ex->method) &&
         resend(ex, "tunnel lost before the response");
}

void wstun__exchange_tunnel_lost(wstun__exchange *ex) {
  if (replay(ex))
    return;
  wstun__log(
      &ex->srv->log, WSTUN_LOG_INFO,
      "HTTP RET token=%s id=%04x: tunnel lost with the request in flight",
      ex->token_prefix, ex->reg.id);
  wstun__exchange_fail(ex, 502, "Tunnel connection lost before the response");
}

/* ---- the deadline and the stall watches --------------------------------- */

static uint64_t deadline_left(wstun__exchange *ex);
static void on_deadline(uv_timer_t *t);

/* Cluster nodes: the request waited its time for its token's tunnel
 * (answered 404, returns 1), or it got one and the usual deadline is
 * armed again (returns 1 unless that is over too). */
static int tunnel_wait_over(wstun__exchange *ex) {
  if (ex->tunnel_wait_end == 0)
    return 0;
  /* waiting for a tunnel: queued, or its body still coming while the
   * token has none (one that came meanwhile takes it once it is whole) */
  int waiting = ex->state == WSTUN__EX_QUEUED ||
                (ex->state == WSTUN__EX_READING &&
                 (ex->reg.tok == NULL || ex->reg.tok->ntunnels == 0));
  if (waiting && uv_now(ex->srv->loop) >= ex->tunnel_wait_end) {
    wstun__log(&ex->srv->log, WSTUN_LOG_INFO,
               "HTTP RET token=%s status=404: no tunnel came in %llu ms",
               ex->token_prefix, (unsigned long long)ex->srv->tunnel_wait_ms);
    wstun__exchange_fail(ex, 404,
                         "Tunnel not found (or not seen in a long time)");
    return 1;
  }
  if (!waiting)
    ex->tunnel_wait_end = 0;
  uint64_t left = deadline_left(ex);
  if (left == 0)
    return 0;
  set_timer(ex, left, on_deadline);
  return 1;
}

static void on_deadline(uv_timer_t *t) {
  wstun__exchange *ex = t->data;
  if (tunnel_wait_over(ex))
    return;
  ex->end_code = WSTUN__V2_TIMEOUT;
  wstun__log(&ex->srv->log, WSTUN_LOG_INFO,
             "HTTP RET token=%s id=%04x status=504: no response in time",
             ex->token_prefix, ex->reg.id);
  wstun__exchange_fail(ex, 504, "Tunnel timeout");
}

static uint64_t deadline_left(wstun__exchange *ex) {
  uint64_t end = ex->start_ms + ex->srv->http_timeout_ms;
  if (ex->tunnel_wait_end != 0 && ex->tunnel_wait_end < end &&
      (ex->state == WSTUN__EX_READING || ex->state == WSTUN__EX_QUEUED))
    end = ex->tunnel_wait_end;
  uint64_t now = uv_now(ex->srv->loop);
  return end > now ? end - now : 0;
}

static uint64_t stall_period(const wstun__exchange *ex) {
  return ex->srv->stall_ms / 4 < 100 ? 100 : ex->srv->stall_ms / 4;
}

/* While the exchange's response holds the tunnel paused (its requester
 * reads slower than the tunnel client sends), the timer watches the
 * output instead of the deadline: a requester that takes no byte for
 * stall_ms is cut, so that the other exchanges on the tunnel go on. */
static void on_stall_check(uv_timer_t *t) {
  wstun__exchange *ex = t->data;
  wstun_server *srv = ex->srv;
  uint64_t now = uv_now(srv->loop);
  if (deadline_left(ex) == 0) {
    on_deadline(t);
    return;
  }
  uint64_t p = ex->cbs->progress(ex);
  if (p != ex->stall_mark) {
    ex->stall_mark = p;
    ex->stall_since = now;
  }
  if (now - ex->stall_since >= srv->stall_ms) {
    wstun__log(&srv->log, WSTUN_LOG_WARN,
               "HTTP RET token=%s id=%04x: requester read nothing for %llu "
               "ms while holding the tunnel: cut",
               ex->token_prefix, ex->reg.id,
               (unsigned long long)(now - ex->stall_since));
    wstun__exchange_fail(ex, 0, NULL);
    return;
  }
  uint64_t next = stall_period(ex), left = deadline_left(ex);
  set_timer(ex, next < left ? next : left, on_stall_check);
}

static void stall_watch_start(wstun__exchange *ex) {
  ex->stall_mark = ex->cbs->progress(ex);
  ex->stall_since = uv_now(ex->srv->loop);
  uint64_t next = stall_period(ex), left = deadline_left(ex);
  set_timer(ex, next < left ? next : left, on_stall_check);
}

static void stall_watch_stop(wstun__exchange *ex) {
  set_timer(ex, deadline_left(ex), on_deadline);
}

/* v2, once the response head is in: the deadline gives way to a watch of
 * the stream's movement. Bytes either way (response bytes from the tunnel,
 * request bytes from the requester, bytes the requester took) keep it
 * going; none for stream_idle_ms resets the stream (TIMEOUT) and cuts the
 * requester. So an event stream or a download that keeps moving lives as
 * long as it moves.
 *
 * And while the stream holds its credit (resp_hold: the requester's
 * output is congested), a requester that takes nothing for stall_ms is
 * cut the same way, as in v1: a stalled stream holds up to a window (1
 * MiB) of the tunnel's 16, so sixteen of them would block the tunnel for
 * stream_idle_ms (PROTOCOL.md 7.4). */
static uint64_t stream_movement(wstun__exchange *ex) {
  return ex->moved + ex->cbs->progress(ex);
}

static uint64_t stream_check_period(const wstun__exchange *ex) {
  uint64_t period = ex->srv->stream_idle_ms / 4;
  if (ex->resp_hold && stall_period(ex) < period)
    period = stall_period(ex);
  return period < 100 ? 100 : period;
}

/* 1 when the requester of a held stream took nothing for stall_ms (the
 * stream is then reset and the requester cut). */
static int stream_stalled(wstun__exchange *ex, uint64_t now) {
  if (!ex->resp_hold)
    return 0;
  uint64_t p = ex->cbs->progress(ex);
  if (p != ex->hold_mark) {
    ex->hold_mark = p;
    ex->hold_since = now;
    return 0;
  }
  if (now - ex->hold_since < ex->srv->stall_ms)
    return 0;
  wstun__log(&ex->srv->log, WSTUN_LOG_WARN,
             "HTTP RET token=%s id=%04x: requester read nothing for %llu ms "
             "while its stream held the tunnel's credit: reset",
             ex->token_prefix, ex->reg.id,
             (unsigned long long)(now - ex->hold_since));
  ex->end_code = WSTUN__V2_TIMEOUT;
  wstun__exchange_fail(ex, 0, NULL);
  return 1;
}

static void on_stream_idle_check(uv_timer_t *t) {
  wstun__exchange *ex = t->data;
  wstun_server *srv = ex->srv;
  uint64_t now = uv_now(srv->loop);
  if (stream_stalled(ex, now))
    return;
  uint64_t mark = stream_movement(ex);
  if (mark != ex->stall_mark) {
    ex->stall_mark = mark;
    ex->stall_since = now;
  } else if (now - ex->stall_since >= srv->stream_idle_ms) {
    wstun__log(&srv->log, WSTUN_LOG_INFO,
               "HTTP RET token=%s id=%04x: stream idle for %llu ms: reset",
               ex->token_prefix, ex->reg.id,
               (unsigned long long)(now - ex->stall_since));
    ex->end_code = WSTUN__V2_TIMEOUT;
    wstun__exchange_fail(ex, 0, NULL);
    return;
  }
  set_timer(ex, stream_check_period(ex), on_stream_idle_check);
}

static void stream_idle_watch(wstun__exchange *ex) {
  ex->stall_mark = stream_movement(ex);
  ex->stall_since = uv_now(ex->srv->loop);
  uint64_t period = ex->srv->stream_idle_ms / 4;
  set_timer(ex, period < 100 ? 100 : period, on_stream_idle_check);
}

void wstun__exchange_drained(wstun__exchange *ex) {
  if (ex->resp_hold) {
    /* v2: what the requester took is given back to the tunnel client */
    uint64_t n = ex->unconsumed;
    ex->resp_hold = 0;
    ex->unconsumed = 0;
    wstun__registry_consumed(&ex->reg, (size_t)n);
    return;
  }
  if (ex->reg.paused && ex->reg.tun && ex->reg.tun->t) {
    if (ex->state == WSTUN__EX_RESPONDING)
      stall_watch_stop(ex);
    wstun__registry_resume_rx(&ex->reg);
  }
}

/* The same for the request: a message streamed onto the tunnel is sent
 * alone until it ends, so an uploader that stops sending its body holds
 * up everything else to go through that tunnel. While the request is
 * streamed, the timer checks that the tunnel is not left waiting for its
 * bytes for stall_ms; an uploader that does so gets 408 and its message
 * is ended where it stands (the tunnel client sees it cut short). */
static void on_upload_check(uv_timer_t *t) {
  wstun__exchange *ex = t->data;
  wstun_server *srv = ex->srv;
  uint64_t now = uv_now(srv->loop);
  uint64_t left = deadline_left(ex);
  if (left == 0) {
    on_deadline(t);
    return;
  }
  wstun__outmsg *m = ex->req;
  /* a v2 stream waits for its uploader alone: nothing to watch */
  if (m == NULL || m->finished || wstun__registry_is_v2(&ex->reg) ||
      (ex->state != WSTUN__EX_QUEUED && ex->state != WSTUN__EX_SENDING)) {
    set_timer(ex, left, on_deadline); /* written: back to the deadline */
    return;
  }
  /* starving the tunnel: it is sending this message and has taken all
   * there is (one byte is always held back) */
  int starving = ex->state == WSTUN__EX_SENDING && m->tunnel &&
                 m->tunnel->cur == m && wstun__buf_size(&m->buf) <= 1;
  if (!starving || m->taken != ex->stall_mark) {
    ex->stall_mark = m->taken;
    ex->stall_since = now;
  } else if (now - ex->stall_since >= srv->stall_ms) {
    wstun__log(&srv->log, WSTUN_LOG_WARN,
               "HTTP RET token=%s id=%04x status=408: request body stalled "
               "for %llu ms while holding the tunnel",
               ex->token_prefix, ex->reg.id,
               (unsigned long long)(now - ex->stall_since));
    /* the rest of the body will not be read */
    fail(ex, 408, "Request body timeout", WSTUN__EX_FAILED_CLOSE);
    return;
  }
  uint64_t next = stall_period(ex);
  set_timer(ex, next < left ? next : left, on_upload_check);
}

/* ---- the request -------------------------------------------------------- */

/* Builds the head of the tunnel message: origin-form target, no
 * hop-by-hop headers, the requester appended to X-Forwarded-For, and our
 * own body framing. `target` may point into the head's text, which every
 * header added below may move: it is copied first. */
static int build_request(wstun__exchange *ex, wstun__http_head *h,
                         const char *target, size_t tlen, const char *ip,
                         int *expect) {
  if (wstun__http_head_set_target(h, target, tlen) != 0)
    return WSTUN_ENOMEM;
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
  *expect = wstun__http_head_has_token(h, "Expect", "100-continue");
  /* an upgrade keeps what makes it one; the bytes after its head are the
   * pipe's, never a body (the front's parser stopped at the head) */
  if (ex->upgrade)
    rc = wstun__http_head_strip_for_upgrade(h);
  else
    wstun__http_head_strip_hop_by_hop(h, 1);
  wstun__http_head_remove(h, "Expect");
  wstun__http_head_remove(h, "X-Forwarded-For");
  rc |= wstun__http_head_add(h, "X-Forwarded-For", (const char *)v.base);
  wstun__buf_free(&v);
  if (ex->upgrade)
    ex->req_chunked = 0;
  else
    rc |= wstun__http_head_frame(h, h->has_content_length, h->content_length,
                                 h->chunked, &ex->req_chunked);
  ex->req = rc == 0 ? wstun__outmsg_new(&req_msg_cbs, ex) : NULL;
  if (ex->req == NULL)
    return WSTUN_ENOMEM;
  if (wstun__http_head_write(h, &ex->req->buf) != 0)
    return WSTUN_ENOMEM;
  /* v2 sends it as the stream's HEAD frame, or several above 256 KiB
   * (only with -max-header-bytes raised that far; 7.2) */
  size_t head = wstun__buf_size(&ex->req->buf);
  ex->req_head_len = head <= UINT32_MAX ? (uint32_t)head : 0;
  if (ex->req_head_len > 0)
    wstun__outmsg_set_head_len(ex->req, ex->req_head_len);
  return 0;
}

int wstun__exchange_start(wstun__exchange *ex, wstun__http_head *h,
                          const char *tok, size_t toklen, const char *target,
                          size_t tlen, const char *peer_ip, const char *peer,
                          int *expect, const char **text) {
  wstun_server *srv = ex->srv;
  snprintf(ex->peer, sizeof(ex->peer), "%s", peer);
  *expect = 0;
  wstun__token *t = wstun__registry_find_token(srv, tok, toklen);
  if (t == NULL && srv->tunnel_wait_ms)
    t = wstun__registry_expect_token(srv, tok, toklen); /* NULL: 404 */
  char tmp[12];
  char *tokz = wstun__strndup(tok, toklen);
  wstun__redact(tokz ? tokz : "", tmp);
  wstun__free(tokz);
  memcpy(ex->token_prefix, tmp, sizeof(tmp));
  if (t == NULL) {
    wstun__log(&srv->log, WSTUN_LOG_DEBUG, "HTTP RCV token=%s: unknown token",
               ex->token_prefix);
    account(ex, 0); /* the Go server counts it as an errored request */
    *text = "Tunnel not found (or not seen in a long time)";
    return 404;
  }
  if (ex->upgrade && !srv->v2) {
    /* -protocol v1: no tunnel can carry it (PROTOCOL.md 7.6) */
    *text = WSTUN__UPGRADE_REFUSED;
    return 501;
  }
  ex->reg.v2_only = ex->upgrade != 0;
  if (build_request(ex, h, target, tlen, peer_ip, expect) != 0) {
    wstun__outmsg *m = ex->req;
    ex->req = NULL;
    if (m)
      wstun__outmsg_abandon(m);
    *expect = 0;
    *text = "Out of memory";
    return 503;
  }
  ex->reg.tok = t;
  wstun__registry_token_hold(t);
  t->last_activity = uv_now(srv->loop);
  ex->tries = 0;
  ex->state = WSTUN__EX_READING;
  ex->start_ms = uv_now(srv->loop);
  wstun__log(&srv->log, WSTUN_LOG_DEBUG,
             "HTTP RCV token=%s verb=%s url=%s addr=%s", ex->token_prefix,
             llhttp_method_name((llhttp_method_t)h->method),
             wstun__http_head_target(h), ex->peer);
  ex->tunnel_wait_end = 0;
  if (srv->tunnel_wait_ms && t->ntunnels == 0)
    ex->tunnel_wait_end = ex->start_ms + srv->tunnel_wait_ms;
  set_timer(ex, deadline_left(ex), on_deadline);
  return 0;
}

static void dispatch_if_ready(wstun__exchange *ex) {
  if (ex->state != WSTUN__EX_READING || ex->req == NULL)
    return;
  size_t size = wstun__buf_size(&ex->req->buf);
  /* every method: a v2 stream refused (never processed) goes again */
  if (ex->req->finished && ex->tries == 0 && size <= REPLAY_MAX &&
      wstun__buf_append(&ex->replay, wstun__buf_data(&ex->req->buf), size) != 0)
    wstun__buf_free(&ex->replay); /* no copy: no replay, nothing else lost */
  /* an upgrade's head goes at once: nothing follows it before the 101 */
  if (ex->req->finished || ex->upgrade ||
      wstun__buf_size(&ex->req->buf) >= WSTUN__STREAM_AT) {
    dispatch(ex);
    if (ex->req && !ex->req->finished && !ex->cancelled &&
        (ex->state == WSTUN__EX_QUEUED || ex->state == WSTUN__EX_SENDING)) {
      ex->stall_mark = ex->req->taken;
      ex->stall_since = uv_now(ex->srv->loop);
      set_timer(ex, stall_period(ex), on_upload_check);
    }
  }
}

/* The request's bytes went into the message: on towards the tunnel. */
static void request_grew(wstun__exchange *ex) {
  if (ex->state == WSTUN__EX_READING)
    dispatch_if_ready(ex);
  else if (ex->state == WSTUN__EX_SENDING || ex->piping)
    wstun__registry_kick(&ex->reg);
}

int wstun__exchange_body(wstun__exchange *ex, const uint8_t *d, size_t n) {
  if (ex->req == NULL || ex->req->finished)
    return 0; /* answered already, or a pipe's direction ended: discard */
  ex->moved += n;
  if (wstun__http_write_body(&ex->req->buf, d, n, ex->req_chunked) != 0)
    return WSTUN_ENOMEM;
  request_grew(ex);
  return ex->req && wstun__outmsg_full(ex->req) ? 1 : 0;
}

int wstun__exchange_body_end(wstun__exchange *ex) {
  if (ex->req == NULL)
    return 0;
  if (ex->upgrade && !ex->piping) {
    request_grew(ex); /* the head is whole: on its way, the message open */
    return 0;
  }
  if (ex->req_chunked &&
      wstun__buf_append_str(&ex->req->buf, WSTUN__HTTP_LAST_CHUNK) != 0)
    return WSTUN_ENOMEM;
  ex->req->finished = 1;
  request_grew(ex);
  return 0;
}

void wstun__exchange_pipe_end(wstun__exchange *ex) {
  if (!ex->piping || ex->req == NULL || ex->req->finished || ex->cancelled)
    return;
  ex->req->finished = 1; /* END after what the requester sent */
  wstun__registry_kick(&ex->reg);
}

/* ---- the request message's life on the tunnel --------------------------- */

static void on_reset_now(wstun__exchange *ex, uint32_t code);

static void req_msg_sent(void *owner, wstun__outmsg *m) {
  wstun__exchange *ex = owner;
  (void)m;
  ex->req = NULL;
  if (ex->state != WSTUN__EX_SENDING)
    return;
  ex->state = WSTUN__EX_WAITING;
  if (ex->reset_pending) { /* reset as its last bytes went */
    ex->reset_pending = 0;
    on_reset_now(ex, ex->reset_code);
  } else if (ex->reg.tun == NULL) /* written, but the tunnel died after */
    wstun__exchange_tunnel_lost(ex);
}

static void req_msg_drain(void *owner, wstun__outmsg *m) {
  wstun__exchange *ex = owner;
  (void)m;
  if (!ex->cancelled && ex->state != WSTUN__EX_DONE)
    ex->cbs->on_drain(ex);
}

static void req_msg_failed(void *owner, wstun__outmsg *m, int restartable) {
  wstun__exchange *ex = owner;
  if (ex->reset_pending) {
    /* the client reset the stream (on_reset_now waited for m) */
    ex->reset_pending = 0;
    if (ex->reset_code == WSTUN__V2_REFUSED && !m->started)
      restartable = 1; /* no byte went: m itself goes again */
    else {
      ex->req = NULL;
      wstun__outmsg_free(m);
      on_reset_now(ex, ex->reset_code);
      return;
    }
  }
  wstun__registry_unlink(&ex->reg, WSTUN__V2_CANCEL);
  if (restartable && ex->state == WSTUN__EX_SENDING && ++ex->tries < 3) {
    wstun__log(&ex->srv->log, WSTUN_LOG_INFO,
               "WS   SND token=%s id=%04x failed: retrying (try %d)",
               ex->token_prefix, ex->reg.id, ex->tries + 1);
    ex->state = WSTUN__EX_READING;
    if (m->finished || ex->upgrade ||
        wstun__buf_size(&m->buf) >= WSTUN__STREAM_AT)
      dispatch(ex);
    return;
  }
  ex->req = NULL;
  wstun__outmsg_free(m);
  if (restartable) {
    wstun__log(&ex->srv->log, WSTUN_LOG_INFO,
               "WS   SND token=%s id=%04x failed after %d tries: 504",
               ex->token_prefix, ex->reg.id, ex->tries);
    wstun__exchange_fail(ex, 504, "Tunnel retry exhausted");
  } else
    wstun__exchange_tunnel_lost(ex);
}

static const wstun__outmsg_cbs req_msg_cbs = {
    .on_sent = req_msg_sent,
    .on_drain = req_msg_drain,
    .on_failed = req_msg_failed,
};

/* ---- the response from the tunnel --------------------------------------- */

static int resp_on_switch(wstun__exchange *ex, wstun__http_head *h);

static int resp_on_head(void *ud, wstun__http_head *h) {
  wstun__exchange *ex = ud;
  int status = h->status;
  if (status == 101 && ex->upgrade && wstun__registry_is_v2(&ex->reg))
    return resp_on_switch(ex, h);
  if (status == 101) {
    /* only an upgrade request may switch, and only on v2: a 101 would
     * tell a proxy in front of us to pass raw bytes from now on */
    wstun__log(&ex->srv->log, WSTUN_LOG_WARN,
               "WS   RCV token=%s id=%04x: 101 from the tunnel client refused",
               ex->token_prefix, ex->reg.id);
    return -1;
  }
  if (status >= 100 && status < 200)
    return 1; /* interim (the 100 Continue is ours to send): dropped */
  int no_body = ex->method == HTTP_HEAD || status == 204 || status == 304;
  if (ex->upgrade && ex->req && !ex->req->finished) {
    /* refused: an ordinary answer, and our direction ends (7.6) */
    ex->req->finished = 1;
    wstun__registry_kick(&ex->reg);
  }
  /* HTTP/1.0 requesters get a body ended by the connection's close */
  int http11 = ex->head->major == 1 && ex->head->minor >= 1;
  ex->resp_close = !h->has_content_length && !no_body && !http11;
  if (ex->cbs->on_head(ex, h, no_body, ex->resp_close) != 0)
    return -1;
  ex->state = WSTUN__EX_RESPONDING;
  /* as the Go server: only 2xx and 3xx answers are completed requests */
  account(ex, status >= 200 && status < 400);
  wstun__log(&ex->srv->log, WSTUN_LOG_DEBUG,
             "WS   RCV token=%s id=%04x status=%d", ex->token_prefix,
             ex->reg.id, status);
  wstun__exchange_log_ret(ex, status);
  if (wstun__registry_is_v2(&ex->reg))
    stream_idle_watch(ex); /* -httptimeout bounded the wait for the head */
  return no_body ? 1 : 0;
}

/* The backend switched protocols: from now on the stream is a pipe. The
 * response direction's bytes go to the requester as they are (through
 * on_body, with its credit and stall watch); the requester's go into the
 * request message (wstun__exchange_body) until either side ends. */
static int resp_on_switch(wstun__exchange *ex, wstun__http_head *h) {
  ex->piping = 1; /* tells on_head it is a 101 */
  if (ex->cbs->on_head(ex, h, 0, 0) != 0) {
    ex->piping = 0;
    return -1;
  }
  ex->state = WSTUN__EX_RESPONDING;
  account(ex, 1);
  wstun__log(&ex->srv->log, WSTUN_LOG_DEBUG,
             "WS   RCV token=%s id=%04x status=101: piping", ex->token_prefix,
             ex->reg.id);
  wstun__exchange_log_ret(ex, 101);
  stream_idle_watch(ex); /* the only timeout of a pipe */
  return 1;
}

static int resp_on_body(void *ud, const uint8_t *d, size_t n) {
  wstun__exchange *ex = ud;
  int rc = ex->cbs->on_body(ex, d, n);
  if (rc < 0)
    return -1;
  if (rc > 0 && wstun__registry_is_v2(&ex->reg)) {
    if (!ex->resp_hold) { /* credit is held back: only this stream waits */
      ex->resp_hold = 1;
      ex->hold_mark = ex->cbs->progress(ex);
      ex->hold_since = uv_now(ex->srv->loop);
      set_timer(ex, stream_check_period(ex), on_stream_idle_check);
    }
  } else if (rc > 0 && wstun__registry_pause_rx(&ex->reg))
    stall_watch_start(ex);
  return 0;
}

static int resp_on_complete(void *ud) {
  wstun__exchange *ex = ud;
  if (ex->piping)
    return 1; /* the 101 is over: no more HTTP in this direction */
  int status = ex->resp.head.status;
  if (status >= 100 && status < 200)
    return 0; /* an interim response (dropped): the final one follows */
  ex->cbs->on_end(ex);
  ex->resp_done = 1;
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
static void fail_506(wstun__exchange *ex, const char *why) {
  wstun__log(&ex->srv->log, WSTUN_LOG_WARN, "WS   RCV token=%s id=%04x: %s",
             ex->token_prefix, ex->reg.id, why);
  wstun__exchange_fail(ex, 506, "");
}

static int resp_data(wstun__exchange *ex, const uint8_t *d, size_t n) {
  if (!ex->resp_init) {
    wstun__http_parser_init(&ex->resp, HTTP_RESPONSE, RESP_MAX_HEAD, 0,
                            &resp_cbs, ex);
    ex->resp_init = 1;
    ex->resp_done = 0;
    ex->resp_extra = 0;
  }
  if (ex->piping)
    return resp_on_body(ex, d, n) != 0 ? -1 : 0;
  if (ex->resp_done) {
    ex->resp_extra += n; /* bytes after a complete response: dropped */
    return 0;
  }
  size_t used;
  int rc = wstun__http_parser_feed(&ex->resp, d, n, &used);
  if (rc == WSTUN__HTTP_PAUSED && ex->piping && !ex->cancelled &&
      ex->state == WSTUN__EX_RESPONDING)
    return used < n && resp_on_body(ex, d + used, n - used) != 0 ? -1 : 0;
  if (rc == WSTUN__HTTP_PAUSED)
    ex->resp_extra += n - used;
  if (rc == WSTUN__HTTP_ERROR) {
    fail_506(ex, ex->resp.error_status == 502 && ex->resp.error_text
                     ? ex->resp.error_text /* says what */
                     : "unparsable response");
    return -1;
  }
  return 0;
}

static void resp_end(wstun__exchange *ex, int complete) {
  if (ex->cancelled || ex->state == WSTUN__EX_DONE)
    return;
  if (!ex->resp_init) {
    if (complete)
      fail_506(ex, "empty response");
    else
      wstun__exchange_tunnel_lost(ex);
    return;
  }
  if (ex->piping && complete) {
    /* the backend's side ended (END): the requester gets the rest and
     * the connection's close; a request direction still open is reset
     * (NO_ERROR) with what it holds */
    wstun__log(&ex->srv->log, WSTUN_LOG_DEBUG,
               "WS   RCV token=%s id=%04x: pipe closed by the tunnel client "
               "(%llu bytes moved)",
               ex->token_prefix, ex->reg.id, (unsigned long long)ex->moved);
    ex->resp_done = 1;
  }
  if (!ex->resp_done && complete &&
      wstun__http_parser_finish(&ex->resp) == WSTUN__HTTP_OK && ex->resp_close)
    ex->resp_done = 1;
  if (ex->resp_done) {
    if (ex->resp_extra > 0)
      wstun__log(&ex->srv->log, WSTUN_LOG_WARN,
                 "WS   RCV token=%s id=%04x: %llu bytes after the response "
                 "in its message: dropped",
                 ex->token_prefix, ex->reg.id,
                 (unsigned long long)ex->resp_extra);
    release(ex);
    ex->state = WSTUN__EX_DONE;
    ex->cbs->on_done(ex, WSTUN__EX_ANSWERED, 0, NULL);
    return;
  }
  if (ex->state != WSTUN__EX_RESPONDING) {
    if (complete)
      fail_506(ex, "incomplete response head");
    else
      wstun__exchange_tunnel_lost(ex);
    return;
  }
  wstun__log(&ex->srv->log, WSTUN_LOG_WARN,
             "HTTP RET token=%s id=%04x: response cut short: aborting",
             ex->token_prefix, ex->reg.id);
  release(ex);
  ex->state = WSTUN__EX_DONE;
  ex->cbs->on_done(ex, WSTUN__EX_ABORTED, 0, NULL);
}

/* ---- the registry's calls ----------------------------------------------- */

static wstun__outmsg *reg_on_send(wstun__reg_entry *e) {
  wstun__exchange *ex = wstun__exchange_of(e);
  ex->state = WSTUN__EX_SENDING;
  ex->has_id = 1;
  wstun__log(&ex->srv->log, WSTUN_LOG_DEBUG,
             "WS   SND token=%s id=%04x verb=%s url=%s addr=%s",
             ex->token_prefix, e->id,
             llhttp_method_name((llhttp_method_t)ex->method),
             wstun__http_head_target(ex->head), e->tun->addr);
  return ex->req;
}

static int reg_on_msg_begin(wstun__reg_entry *e) {
  wstun__exchange *ex = wstun__exchange_of(e);
  return ex->state == WSTUN__EX_WAITING || ex->state == WSTUN__EX_SENDING;
}

static int reg_on_msg_data(wstun__reg_entry *e, const uint8_t *d, size_t n) {
  wstun__exchange *ex = wstun__exchange_of(e);
  ex->moved += n;
  int rc = resp_data(ex, d, n);
  if (rc != 0 || ex->cancelled || ex->state == WSTUN__EX_DONE)
    return rc;
  /* v2: the bytes are with the requester's connection now; while it is
   * congested their credit is held (exchange_drained gives it back), so
   * a requester that stops reading stops only its own stream */
  if (ex->resp_hold)
    ex->unconsumed += n;
  else
    wstun__registry_consumed(e, n);
  return 0;
}

static void reg_on_msg_end(wstun__reg_entry *e, int complete) {
  resp_end(wstun__exchange_of(e), complete);
}

static void reg_on_tunnel_lost(wstun__reg_entry *e) {
  wstun__exchange *ex = wstun__exchange_of(e);
  /* one still being sent comes back through its message's callbacks */
  if (ex->state != WSTUN__EX_SENDING)
    wstun__exchange_tunnel_lost(ex);
}

static void reg_on_fail(wstun__reg_entry *e, int status, const char *text) {
  wstun__exchange_fail(wstun__exchange_of(e), status, text);
}

/* The client reset the stream: a REFUSED one (never processed, e.g. above
 * its GOAWAY) goes again from its copy when there is one; otherwise the
 * requester gets 502, or a cut response once its head is out. */
static void on_reset_now(wstun__exchange *ex, uint32_t code) {
  wstun__log(&ex->srv->log, WSTUN_LOG_INFO,
             "WS   RCV token=%s id=%04x: stream reset by the client (%s)",
             ex->token_prefix, ex->reg.id, wstun__v2_codename(code));
  if (code == WSTUN__V2_REFUSED && resend(ex, "stream refused"))
    return;
  ex->end_code = WSTUN__V2_NO_ERROR; /* nothing left to reset */
  if (code == WSTUN__V2_REFUSED && ex->state != WSTUN__EX_RESPONDING)
    wstun__exchange_fail(ex, 503, "Tunnel client refused the request");
  else
    wstun__exchange_fail(ex, 502, "Tunnel client reset the request");
}

static void reg_on_reset(wstun__reg_entry *e, uint32_t code) {
  wstun__exchange *ex = wstun__exchange_of(e);
  if (ex->cancelled || !wstun__exchange_active(ex))
    return;
  if (ex->req && ex->state == WSTUN__EX_SENDING) {
    /* the tunnel hands the message back next (req_msg_failed) */
    ex->reset_pending = 1;
    ex->reset_code = code;
    return;
  }
  on_reset_now(ex, code);
}

static const wstun__reg_entry_cbs reg_cbs = {
    .on_send = reg_on_send,
    .on_msg_begin = reg_on_msg_begin,
    .on_msg_data = reg_on_msg_data,
    .on_msg_end = reg_on_msg_end,
    .on_tunnel_lost = reg_on_tunnel_lost,
    .on_fail = reg_on_fail,
    .on_reset = reg_on_reset,
};
