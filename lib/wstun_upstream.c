/* Connections from the tunnel client to HTTP backends, kept alive in a
 * pool per backend. Each carries one request at a time: the request bytes
 * flow from the tunnel to the backend, the response is parsed, re-framed
 * and streamed back into a tunnel message. Owns each connection's
 * lifetime (its timer, resolver and conn, torn down with a closer); the
 * request's lifetime is wstun_request.c's, and nothing here calls the
 * client: what only the client knows comes through the pool's callbacks. */
#include <stdio.h>
#include <string.h>

#include "wstun_alloc.h"
#include "wstun_closer.h"
#include "wstun_upstream.h"
#include "wstun_util.h"
#include "wstun_v2.h"

#define CONNECT_TIMEOUT_MS 10000
#define REPLAY_MAX (64 * 1024) /* requests up to this size can be retried */
#define RESP_MAX_HEAD (1 << 20)
/* Request bytes buffered for a backend before the tunnel stops reading. */
#define BACKEND_OUT_MAX (2u << 20)

struct wstun__upstream {
  wstun__upstream_pool *pool;
  wstun__conn *conn;
  char *key;
  wstun_request *req;
  wstun__http_parser parser;
  uv_timer_t timer;
  uv_getaddrinfo_t gai;
  wstun__list link;      /* pool->all */
  wstun__list idle_link; /* pool->idle, while idle */
  int connected, reused, got_bytes, idle, resolving;
  int closing, paused_by_msg;
  int ending;            /* a pipe's end: closed once its output is written */
  wstun__closer closer;  /* timer, resolver and conn, once closing */
  int paused_connecting; /* the tunnel waits for the connection to be up */
  int interim;           /* skipping a 1xx response */
  uint64_t deadline;     /* uv_now() ms: the backend must have answered */
  /* while the request holds the tunnel paused: the output's progress when
   * last seen growing; while the response is streamed onto the tunnel: the
   * bytes the tunnel took of it, likewise */
  uint64_t stall_mark, stall_since, resp_mark, resp_since;
};

static const wstun__conn_cbs up_conn_cbs;
static const wstun__http_parser_cbs resp_cbs;
static void up_close(wstun__upstream *up);
static void connect_new(wstun__upstream_pool *pool, wstun_request *req);

/* The response message: the request's own callbacks, and the backend is
 * read again when the tunnel took enough of it. */
static void up_resp_drain(void *owner, wstun__outmsg *m) {
  (void)m;
  wstun__upstream_push(owner);
}

static const wstun__outmsg_cbs up_resp_cbs = {
    .on_sent = wstun__request_resp_sent,
    .on_drain = up_resp_drain,
    .on_failed = wstun__request_resp_failed,
};

/* Event handlers pin the request they work for, so that nothing they call
 * frees it under them; the last unpin frees it if it is done. */
static wstun_request *pin(wstun__upstream *up) {
  wstun_request *req = up->req;
  if (req)
    wstun__request_ref(req);
  return req;
}

static void unpin(wstun_request *req) {
  if (req)
    wstun__request_unref(req);
}

/* ---- lifecycle ---------------------------------------------------------- */

static void idle_remove(wstun__upstream *up) {
  if (!up->idle)
    return;
  wstun__list_remove(&up->idle_link);
  up->idle = 0;
  up->pool->nidle--;
}

static void up_free(wstun__closer *closer) {
  wstun__upstream *up = wstun__list_entry(closer, wstun__upstream, closer);
  wstun__upstream_pool *pool = up->pool;
  wstun__list_remove(&up->link);
  pool->nall--;
  wstun__http_parser_free(&up->parser);
  wstun__free(up->key);
  wstun__free(up);
  if (pool->closing == 1 && pool->nall == 0) {
    pool->closing = 2; /* told */
    pool->cbs->on_closed(pool->ud);
  }
}

static void up_conn_closed(wstun__conn *c) {
  wstun__upstream *up = c->owner;
  up->conn = NULL;
  if (up->closing) /* else it closed on its own: up_close will not wait */
    wstun__closer_done(&up->closer);
  else if (up->ending)
    up_close(up); /* a pipe's end (upstream_pipe_end): nothing waits */
}

static void up_close(wstun__upstream *up) {
  if (up->closing)
    return;
  up->closing = 1;
  idle_remove(up);
  if (up->req) {
    up->req->up = NULL;
    up->req = NULL;
  }
  wstun__closer_start(&up->closer, up_free);
  uv_timer_stop(&up->timer);
  wstun__closer_close_handle(&up->closer, (uv_handle_t *)&up->timer);
  if (up->resolving) {
    wstun__closer_add(&up->closer); /* up_on_resolved drops it */
    uv_cancel((uv_req_t *)&up->gai);
  }
  if (up->conn) {
    wstun__closer_add(&up->closer); /* up_conn_closed drops it */
    wstun__conn_close(up->conn);
  }
  wstun__closer_done(&up->closer);
}

static wstun__upstream *up_new(wstun__upstream_pool *pool, const char *key) {
  wstun__upstream *up = wstun__calloc(1, sizeof(*up));
  if (up == NULL)
    return NULL;
  up->pool = pool;
  up->key = wstun__strdup(key);
  if (up->key)
    up->conn = wstun__conn_new(pool->loop, pool->shared, &up_conn_cbs, up);
  if (up->conn == NULL) {
    wstun__free(up->key);
    wstun__free(up);
    return NULL;
  }
  up->conn->high_water = BACKEND_OUT_MAX;
  uv_timer_init(pool->loop, &up->timer);
  up->timer.data = up;
  wstun__http_parser_init(&up->parser, HTTP_RESPONSE, RESP_MAX_HEAD, 0,
                          &resp_cbs, up);
  wstun__list_push_front(&pool->all, &up->link);
  pool->nall++;
  return up;
}

void wstun__upstream_pool_init(wstun__upstream_pool *pool, uv_loop_t *loop,
                               wstun__conn_shared *shared,
                               const wstun__logger *log,
                               const wstun__upstream_pool_cbs *cbs, void *ud) {
  memset(pool, 0, sizeof(*pool));
  pool->loop = loop;
  pool->shared = shared;
  pool->log = log;
  pool->cbs = cbs;
  pool->ud = ud;
  wstun__list_init(&pool->all);
  wstun__list_init(&pool->idle);
}

void wstun__upstream_pool_drain(wstun__upstream_pool *pool) {
  pool->draining = 1;
}

void wstun__upstream_pool_close(wstun__upstream_pool *pool) {
  if (pool->closing)
    return;
  pool->draining = pool->closing = 1;
  wstun__list *l, *tmp;
  wstun__list_foreach_safe(l, tmp, &pool->all) {
    up_close(wstun__list_entry(l, wstun__upstream, link));
  }
  if (pool->nall == 0) {
    pool->closing = 2;
    pool->cbs->on_closed(pool->ud);
  }
}

/* The request no longer goes to a backend (answered, given up, detached):
 * if it had paused the tunnel (backend congested, or not connected yet),
 * nothing else will resume it, and the rest of its message must still be
 * read (and dropped) for it to end. Left paused, the tunnel would stall
 * every request on it until the client's ping timeout. A reference keeps
 * req alive through the resume; it may be freed when that goes (callers
 * hold their own). */
static void unpause_tunnel(wstun_request *req) {
  if (req->paused_tunnel && req->t) {
    req->paused_tunnel = 0;
    wstun__request_ref(req);
    wstun__tunnel_resume_rx(req->t);
    wstun__request_unref(req);
  }
}

void wstun__upstream_detach(wstun_request *req) {
  wstun__upstream *up = req->up;
  if (up == NULL)
    return;
  req->up = NULL;
  up->req = NULL;
  up_close(up); /* mid-exchange: the connection cannot be reused */
  unpause_tunnel(req);
}

/* ---- a pipe (after an upgrade's 101) --------------------------------------
 */

/* The backend's bytes, raw, into the response message; its reading
 * pauses while the message is full (up_resp_drain resumes it). */
static void hand_over(wstun_request *req);

static void pipe_from_backend(wstun__upstream *up, const uint8_t *d, size_t n) {
  wstun_request *req = up->req;
  if (req == NULL || req->resp == NULL || req->resp->finished)
    return;
  if (wstun__buf_append(&req->resp->buf, d, n) != 0) {
    wstun__upstream_detach(req); /* out of memory: the pipe is cut */
    if (req->t)
      wstun__tunnel_reset(req->t, req->id, WSTUN__V2_INTERNAL_ERROR);
    req->resp = NULL;
    req->state = WSTUN__CR_ANSWERED;
    wstun__request_resp_done(req);
    return;
  }
  req->resp_bytes += n;
  hand_over(req);
  if (req->resp && wstun__outmsg_full(req->resp) && !up->paused_by_msg) {
    up->paused_by_msg = 1;
    wstun__conn_pause(up->conn);
  }
}

/* The response direction of a pipe ends (END) after what it holds. */
static void pipe_finish(wstun_request *req) {
  if (req->resp && !req->resp->finished) {
    req->resp->finished = 1;
    hand_over(req);
  }
}

void wstun__upstream_pipe_end(wstun_request *req) {
  wstun__upstream *up = req->up;
  if (up == NULL || !req->piping)
    return;
  wstun__log(req->log, WSTUN_LOG_DEBUG,
             "WS   RCV id=%04x: pipe closed by the requester: backend %s "
             "closed after its bytes",
             req->id, req->backend_key);
  req->up = NULL;
  up->req = NULL;
  up->ending = 1;
  if (up->conn)
    wstun__conn_end(up->conn); /* written out first, then closed */
  else
    up_close(up);
  wstun__request_ref(req);
  pipe_finish(req);
  wstun__request_unref(req);
}

/* ---- failing ------------------------------------------------------------ */

/* The backend failed before answering anything. */
static void fail_before_response(wstun__upstream *up, const char *why) {
  wstun_request *req = up->req;
  wstun__upstream_pool *pool = up->pool;
  up->req = NULL;
  if (req)
    req->up = NULL;
  int reused = up->reused;
  up_close(up);
  if (req == NULL)
    return;
  /* a kept-alive connection may have been closed by the backend just as
   * we reused it: replay the request once on a fresh connection */
  if (reused && !req->retried && req->replay_ok) {
    req->retried = 1;
    wstun__buf both = WSTUN__BUF_INIT;
    if (wstun__buf_append(&both, wstun__buf_data(&req->replay),
                          wstun__buf_size(&req->replay)) == 0 &&
        wstun__buf_append(&both, wstun__buf_data(&req->to_backend),
                          wstun__buf_size(&req->to_backend)) == 0) {
      wstun__buf_free(&req->to_backend);
      req->to_backend = both;
      wstun__buf_reset(&req->replay);
      connect_new(pool, req);
      return;
    }
    wstun__buf_free(&both);
  }
  char msg[256];
  snprintf(msg, sizeof(msg), "Backend %s unavailable: %s", req->backend_key,
           why);
  wstun__log(req->log, WSTUN_LOG_WARN, "HTTP RET id=%04x status=502 %s",
             req->id, msg);
  req->state = WSTUN__CR_ANSWERED;
  wstun__request_answer(req, 502, msg);
  unpause_tunnel(req);
}

/* The backend failed after the response head went out: end the tunnel
 * message early so the requester sees a cut response, not a short one. */
static void fail_mid_response(wstun__upstream *up) {
  wstun_request *req = up->req;
  up_close(up);
  if (req == NULL)
    return;
  unpause_tunnel(req);
  wstun__log(req->log, WSTUN_LOG_WARN,
             "HTTP RET id=%04x: backend response cut short", req->id);
  if (req->resp && !req->resp_handed) {
    /* nothing reached the server yet: a clean error is still possible */
    wstun__outmsg_free(req->resp);
    req->resp = NULL;
    req->resp_started = 0;
    req->state = WSTUN__CR_ANSWERED;
    wstun__request_answer(req, 502, "Backend response cut short");
    unpause_tunnel(req);
    return;
  }
  if (req->resp && wstun__tunnel_is_v2(req->t)) {
    /* v2: RESET CANCEL tells the server the response is cut (it cuts its
     * requester); the tunnel frees the message */
    req->resp = NULL;
    wstun__tunnel_reset(req->t, req->id, WSTUN__V2_CANCEL);
  } else if (req->resp) {
    wstun__outmsg *m = req->resp;
    req->resp = NULL;
    wstun__outmsg_abandon(m);
  }
  req->resp_handed = 1;
  req->state = WSTUN__CR_ANSWERED;
  unpause_tunnel(req);
  wstun__request_resp_done(req); /* the cut response is all it gets */
}

static void on_backend_timeout_pinned(uv_timer_t *t) {
  wstun__upstream *up = t->data;
  if (up->idle) {
    up_close(up); /* idle expiry */
    return;
  }
  if (up->req && up->req->resp_started)
    fail_mid_response(up);
  else if (!up->connected)
    fail_before_response(up, "connect timed out");
  else {
    wstun_request *req = up->req;
    up->req = NULL;
    if (req)
      req->up = NULL;
    up_close(up);
    if (req) {
      req->state = WSTUN__CR_ANSWERED;
      wstun__request_answer(req, 504, "Backend timeout");
      unpause_tunnel(req);
    }
  }
}

static void on_backend_timeout(uv_timer_t *t) {
  wstun_request *req = pin((wstun__upstream *)t->data);
  on_backend_timeout_pinned(t);
  unpin(req);
}

static void start_deadline(wstun__upstream *up) {
  up->deadline = uv_now(up->pool->loop) + up->pool->backend_timeout_ms;
  uv_timer_start(&up->timer, on_backend_timeout, up->pool->backend_timeout_ms,
                 0);
}

static void resume_deadline(wstun__upstream *up) {
  uint64_t now = uv_now(up->pool->loop);
  uv_timer_start(&up->timer, on_backend_timeout,
                 up->deadline > now ? up->deadline - now : 0, 0);
}

/* ---- a backend that holds the tunnel ------------------------------------ */

/* Messages are not interleaved on the tunnel: while a request body waits
 * for its backend, nothing else is read from the tunnel. So while the
 * tunnel is paused for it, the timer watches the backend's intake instead
 * of the deadline, and a backend that takes no byte for stall_ms is given
 * up. Likewise a response streamed onto the tunnel is sent alone until it
 * ends: a backend that leaves the tunnel waiting for its next bytes for
 * stall_ms is given up too (the requester sees a cut response). */
static void on_stall_check(uv_timer_t *t);

/* The response is being sent and the tunnel has taken all there is (one
 * byte is always held back). */
static int resp_starving(const wstun_request *req) {
  const wstun__outmsg *m = req->resp;
  return m && m->tunnel && m->tunnel->cur == m && wstun__buf_size(&m->buf) <= 1;
}

static void on_stall_check_pinned(uv_timer_t *t) {
  wstun__upstream *up = t->data;
  wstun_request *req = up->req;
  wstun__upstream_pool *pool = up->pool;
  uint64_t now = uv_now(pool->loop);
  int resp_watch = req && req->resp && req->resp_handed && !req->resp->finished;
  if (req == NULL || (!req->paused_tunnel && !resp_watch) ||
      now >= up->deadline) {
    resume_deadline(up);
    return;
  }
  if (resp_watch) {
    if (!resp_starving(req) || req->resp->taken != up->resp_mark) {
      up->resp_mark = req->resp->taken;
      up->resp_since = now;
    } else if (now - up->resp_since >= pool->stall_ms) {
      wstun__log(pool->log, WSTUN_LOG_WARN,
                 "HTTP RET id=%04x: backend %s sent nothing for %llu ms of "
                 "a response holding the tunnel: cut",
                 req->id, req->backend_key,
                 (unsigned long long)(now - up->resp_since));
      fail_mid_response(up);
      return;
    }
  }
  uint64_t p = wstun__conn_progress(up->conn);
  if (!req->paused_tunnel || p != up->stall_mark) {
    up->stall_mark = p;
    up->stall_since = now;
  } else if (now - up->stall_since >= pool->stall_ms) {
    wstun__log(pool->log, WSTUN_LOG_WARN,
               "HTTP RET id=%04x: backend %s took none of the request for "
               "%llu ms while holding the tunnel: given up",
               req->id, req->backend_key,
               (unsigned long long)(now - up->stall_since));
    req->replay_ok = 0; /* the same backend would hold it again */
    if (req->resp_started)
      fail_mid_response(up); /* both release the tunnel */
    else
      fail_before_response(up, "not reading the request");
    return;
  }
  uint64_t next = pool->stall_ms / 4 < 100 ? 100 : pool->stall_ms / 4;
  uint64_t left = up->deadline - now;
  uv_timer_start(&up->timer, on_stall_check, next < left ? next : left, 0);
}

static void on_stall_check(uv_timer_t *t) {
  wstun_request *req = pin((wstun__upstream *)t->data);
  on_stall_check_pinned(t);
  unpin(req);
}

/* ---- sending the request ------------------------------------------------ */

/* The next n bytes of to_backend go out: a copy is kept while the
 * request is small, for one retry on a stale keep-alive connection. */
static void keep_for_replay(wstun_request *req, size_t n) {
  if (!req->replay_ok)
    return;
  if (wstun__buf_size(&req->replay) + n <= REPLAY_MAX)
    wstun__buf_append(&req->replay, wstun__buf_data(&req->to_backend), n);
  else {
    req->replay_ok = 0;
    wstun__buf_free(&req->replay);
  }
}

static void flush_request(wstun__upstream *up) {
  wstun_request *req = up->req;
  if (req == NULL || up->closing)
    return;
  if (wstun__tunnel_is_v2(req->t)) {
    /* flow control bounds what waits here: credit goes back only for
     * bytes the backend connection took while not congested */
    if (!up->connected)
      return;
    size_t n = wstun__buf_size(&req->to_backend);
    if (n > 0) {
      keep_for_replay(req, n);
      wstun__conn_write(up->conn, wstun__buf_data(&req->to_backend), n);
      wstun__buf_reset(&req->to_backend);
    }
    if (!wstun__conn_congested(up->conn))
      wstun__request_consume(req);
    return;
  }
  if (!up->connected) {
    /* the body waits in to_backend meanwhile (up to the connect timeout):
     * bounded like the connection's own buffer */
    if (req->t && !req->paused_tunnel &&
        wstun__buf_size(&req->to_backend) > BACKEND_OUT_MAX) {
      req->paused_tunnel = 1;
      up->paused_connecting = 1;
      wstun__tunnel_pause_rx(req->t);
    }
    return;
  }
  size_t n = wstun__buf_size(&req->to_backend);
  if (n > 0) {
    keep_for_replay(req, n);
    wstun__conn_write(up->conn, wstun__buf_data(&req->to_backend), n);
    wstun__buf_reset(&req->to_backend);
  }
  int congested = wstun__conn_congested(up->conn);
  if (req->t && congested) {
    wstun__tunnel_pause_rx(req->t); /* again: another may have resumed it */
    if (!req->paused_tunnel || up->paused_connecting) {
      req->paused_tunnel = 1;
      up->paused_connecting = 0;
      up->stall_mark = wstun__conn_progress(up->conn);
      up->stall_since = uv_now(up->pool->loop);
      uint64_t q = up->pool->stall_ms / 4;
      uv_timer_start(&up->timer, on_stall_check, q < 100 ? 100 : q, 0);
    }
  } else if (up->paused_connecting) {
    up->paused_connecting = 0;
    unpause_tunnel(req);
  }
}

void wstun__upstream_push(wstun_request *req) {
  wstun__upstream *up = req->up;
  if (up == NULL)
    return;
  flush_request(up); /* bounds the body while the backend is connecting */
  if (up->paused_by_msg &&
      (req->resp == NULL || !wstun__outmsg_full(req->resp))) {
    up->paused_by_msg = 0;
    wstun__conn_resume(up->conn);
  }
}

/* The connection can carry the request (TCP up, and TLS for https://). */
static void up_ready(wstun__upstream *up) {
  up->connected = 1;
  start_deadline(up);
  wstun__conn_start_read(up->conn);
  flush_request(up);
}

static void up_on_connect_pinned(wstun__conn *c, int status) {
  wstun__upstream *up = c->owner;
  if (status != 0) {
    fail_before_response(up, uv_strerror(status));
    return;
  }
  if (up->req == NULL) {
    up_close(up); /* nobody waits for it any more */
    return;
  }
  if (strncmp(up->key, "https:", 6) != 0) {
    up_ready(up);
    return;
  }
  char why[400];
  wstun__upstream_pool *pool = up->pool;
  wstun__tls_config *cfg = pool->cbs->backend_tls(pool->ud, why, sizeof(why));
  if (cfg == NULL) {
    fail_before_response(up, why);
    return;
  }
  /* on_secure goes on (the connect timeout still runs) */
  if (wstun__conn_start_tls(c, cfg, up->req->backend_host) != 0)
    fail_before_response(up, "out of memory");
}

static void up_on_secure_pinned(wstun__conn *c, int status) {
  wstun__upstream *up = c->owner;
  if (status != 0) {
    char why[256];
    snprintf(why, sizeof(why), "TLS: %s", wstun__conn_strerror(c, status));
    fail_before_response(up, why);
    return;
  }
  up_ready(up);
}

static void up_on_secure(wstun__conn *c, int status) {
  wstun_request *req = pin((wstun__upstream *)c->owner);
  up_on_secure_pinned(c, status);
  unpin(req);
}

static void up_on_connect(wstun__conn *c, int status) {
  wstun_request *req = pin((wstun__upstream *)c->owner);
  up_on_connect_pinned(c, status);
  unpin(req);
}

static void start_connect(wstun__upstream *up, const struct sockaddr *addr) {
  int rc = wstun__conn_connect(up->conn, addr);
  if (rc != 0)
    fail_before_response(up, uv_strerror(rc));
}

static void up_on_resolved_pinned(uv_getaddrinfo_t *r, int status,
                                  struct addrinfo *res) {
  wstun__upstream *up = r->data;
  up->resolving = 0;
  if (up->closing || status != 0 || res == NULL) {
    uv_freeaddrinfo(res);
    if (!up->closing)
      fail_before_response(up,
                           status == 0 ? "no address" : uv_strerror(status));
    else
      wstun__closer_done(&up->closer); /* up_close counted us */
    return;
  }
  start_connect(up, res->ai_addr);
  uv_freeaddrinfo(res);
}

static void up_on_resolved(uv_getaddrinfo_t *r, int status,
                           struct addrinfo *res) {
  wstun_request *req = pin((wstun__upstream *)r->data);
  up_on_resolved_pinned(r, status, res);
  unpin(req);
}

static void connect_new(wstun__upstream_pool *pool, wstun_request *req) {
  wstun__upstream *up = up_new(pool, req->backend_key);
  if (up == NULL) {
    req->state = WSTUN__CR_ANSWERED;
    wstun__request_answer(req, 502, "Out of memory");
    return;
  }
  up->req = req;
  req->up = up;
  uv_timer_start(&up->timer, on_backend_timeout, CONNECT_TIMEOUT_MS, 0);
  struct sockaddr_storage ss;
  up->gai.data = up;
  up->resolving = 1;
  int rc = wstun__resolve(pool->loop, req->backend_host, req->backend_port, &ss,
                          &up->gai, up_on_resolved);
  if (rc == 1) {
    up->resolving = 0;
    start_connect(up, (struct sockaddr *)&ss);
    return;
  }
  if (rc != 0) {
    up->resolving = 0;
    fail_before_response(up, "cannot resolve");
  }
}

void wstun__upstream_start(wstun__upstream_pool *pool, wstun_request *req) {
  req->replay_ok = 1;
  wstun__list *l;
  wstun__list_foreach(l, &pool->idle) {
    wstun__upstream *up = wstun__list_entry(l, wstun__upstream, idle_link);
    if (strcmp(up->key, req->backend_key) != 0)
      continue;
    idle_remove(up);
    up->reused = 1;
    up->req = req;
    req->up = up;
    wstun__http_parser_resume(&up->parser);
    start_deadline(up);
    wstun__conn_resume(up->conn);
    wstun__conn_start_read(up->conn);
    flush_request(up);
    return;
  }
  connect_new(pool, req);
}

/* ---- the response ------------------------------------------------------- */

/* v1: a response goes on the tunnel once whole or big enough to stream
 * (it then holds the tunnel until its end). v2: at once, head first; its
 * bytes go out as they come, interleaved with the other streams'. */
static void hand_over(wstun_request *req) {
  int v2 = wstun__tunnel_is_v2(req->t);
  if (req->resp && !req->resp_handed && req->t &&
      (req->resp->finished || v2 ||
       wstun__buf_size(&req->resp->buf) >= WSTUN__STREAM_AT)) {
    req->resp_handed = 1;
    wstun__tunnel_send(req->t, req->id, req->resp);
    if (v2 && req->up) {
      /* the head is out: the backend deadline is over, a response that
       * goes quiet is the server's to time out (its idle-stream timeout
       * resets the stream) */
      uv_timer_stop(&req->up->timer);
    } else if (req->up && req->resp && !req->resp->finished) {
      /* streamed: watch that the backend keeps it going (on_stall_check) */
      wstun__upstream *up = req->up;
      up->resp_mark = req->resp->taken;
      up->resp_since = uv_now(up->pool->loop);
      uint64_t q = up->pool->stall_ms / 4;
      uv_timer_start(&up->timer, on_stall_check, q < 100 ? 100 : q, 0);
    }
  } else if (req->resp && req->resp_handed && req->t) {
    wstun__tunnel_kick(req->t);
  }
}

static int resp_on_head(void *ud, wstun__http_head *h) {
  wstun__upstream *up = ud;
  wstun_request *req = up->req;
  if (req == NULL)
    return -1;
  int status = h->status;
  if (status == 101 && req->upgrade) {
    /* switched: the head goes with what makes it an upgrade, then the
     * connection's bytes both ways (resp_on_complete hands it over) */
    req->resp = wstun__outmsg_new(&up_resp_cbs, req);
    if (req->resp == NULL || wstun__http_head_strip_for_upgrade(h) != 0 ||
        wstun__http_head_write(h, &req->resp->buf) != 0)
      return -1;
    wstun__request_mark_head(req->resp, wstun__buf_size(&req->resp->buf));
    req->resp_started = 1;
    req->piping = 1;
    wstun__request_note_answer(req, status, 0);
    wstun__log(req->log, WSTUN_LOG_DEBUG, "HTTP RET id=%04x status=101: piping",
               req->id);
    return 1;
  }
  if (status >= 100 && status < 200) {
    /* an interim answer (100 Continue, 103 Early Hints): the final one
     * follows on the same connection */
    up->interim = 1;
    return 1;
  }
  int no_body = req->method == HTTP_HEAD || status == 204 || status == 304;
  wstun__http_head_strip_hop_by_hop(h, 1);
  int rc = wstun__http_head_frame(h, h->has_content_length, h->content_length,
                                  !no_body, &req->resp_chunked);
  req->resp = wstun__outmsg_new(&up_resp_cbs, req);
  if (rc != 0 || req->resp == NULL)
    return -1;
  if (wstun__http_head_write(h, &req->resp->buf) != 0)
    return -1;
  wstun__request_mark_head(req->resp, wstun__buf_size(&req->resp->buf));
  req->resp_started = 1;
  wstun__request_note_answer(req, status, 0);
  wstun__log(req->log, WSTUN_LOG_DEBUG, "HTTP RET id=%04x status=%d", req->id,
             status);
  return no_body ? 1 : 0;
}

static int resp_on_body(void *ud, const uint8_t *d, size_t n) {
  wstun__upstream *up = ud;
  wstun_request *req = up->req;
  if (req == NULL || req->resp == NULL)
    return -1;
  if (wstun__http_write_body(&req->resp->buf, d, n, req->resp_chunked) != 0)
    return -1;
  req->resp_bytes += n;
  hand_over(req);
  if (req->resp && wstun__outmsg_full(req->resp) && !up->paused_by_msg) {
    up->paused_by_msg = 1;
    wstun__conn_pause(up->conn);
  }
  return 0;
}

static int resp_on_complete(void *ud) {
  wstun__upstream *up = ud;
  if (up->interim) {
    up->interim = 0;
    return 0;
  }
  wstun_request *req = up->req;
  if (req == NULL || req->resp == NULL)
    return -1;
  if (req->piping) {
    hand_over(req); /* the 101 goes; the connection stays this request's */
    return 1;
  }
  if (req->resp_chunked &&
      wstun__buf_append_str(&req->resp->buf, WSTUN__HTTP_LAST_CHUNK) != 0)
    return -1;
  req->resp->finished = 1;
  /* a refused upgrade's connection is not reused: the requester's bytes
   * after its head could follow it */
  int reusable = up->parser.head.keep_alive && req->req_complete &&
                 !req->upgrade && wstun__buf_size(&req->to_backend) == 0;
  up->req = NULL;
  req->up = NULL;
  if (!req->req_complete)
    req->state = WSTUN__CR_ANSWERED; /* the rest of its body is discarded */
  if (req->paused_tunnel && req->t) {
    req->paused_tunnel = 0;
    wstun__tunnel_resume_rx(req->t);
  }
  wstun__upstream_pool *pool = up->pool;
  size_t same = 0;
  wstun__list *l;
  wstun__list_foreach(l, &pool->idle) {
    same += strcmp(wstun__list_entry(l, wstun__upstream, idle_link)->key,
                   up->key) == 0;
  }
  if (!reusable || pool->draining || same >= pool->max_idle) {
    up_close(up);
  } else {
    up->idle = 1;
    wstun__list_push_front(&pool->idle, &up->idle_link);
    pool->nidle++;
    uv_timer_start(&up->timer, on_backend_timeout, pool->idle_ms, 0);
  }
  /* last: sending may complete at once and free req */
  hand_over(req);
  return 1; /* stop: the next response belongs to the next request */
}

static const wstun__http_parser_cbs resp_cbs = {
    .on_head = resp_on_head,
    .on_body = resp_on_body,
    .on_complete = resp_on_complete,
};

/* ---- connection callbacks ----------------------------------------------- */

static size_t up_on_data_pinned(wstun__conn *c, const uint8_t *data,
                                size_t len) {
  wstun__upstream *up = c->owner;
  if (up->idle || up->req == NULL) {
    up_close(up); /* bytes nobody asked for: the connection is unusable */
    return len;
  }
  up->got_bytes = 1;
  if (up->req->piping) {
    pipe_from_backend(up, data, len);
    return len;
  }
  uint32_t id = up->req->id;
  size_t used = 0;
  int rc = wstun__http_parser_feed(&up->parser, data, len, &used);
  if (rc == WSTUN__HTTP_ERROR) {
    if (up->req && up->req->resp_started)
      fail_mid_response(up);
    else
      fail_before_response(up, up->parser.error_status == 502 &&
                                       up->parser.error_text
                                   ? up->parser.error_text /* says what */
                                   : "unparsable response");
    return len;
  }
  if (rc == WSTUN__HTTP_PAUSED && up->req && up->req->piping) {
    if (used < len) /* bytes right behind the 101: the pipe's */
      pipe_from_backend(up, data + used, len - used);
    return len;
  }
  if (rc == WSTUN__HTTP_PAUSED) {
    /* response complete; what came after it answers nothing we asked:
     * the backend and we no longer agree where its messages end, so the
     * connection is not reused */
    if (used < len) {
      wstun__log(up->pool->log, WSTUN_LOG_WARN,
                 "HTTP RET id=%04x: backend sent %zu bytes after the "
                 "response: dropped, connection closed",
                 id, len - used);
      up_close(up);
    }
    return len;
  }
  return used;
}

static size_t up_on_data(wstun__conn *c, const uint8_t *data, size_t len) {
  wstun_request *req = pin((wstun__upstream *)c->owner);
  size_t n = up_on_data_pinned(c, data, len);
  unpin(req);
  return n;
}

static void up_on_end_pinned(wstun__conn *c, int err) {
  wstun__upstream *up = c->owner;
  if (up->idle || up->req == NULL) {
    up_close(up);
    return;
  }
  if (up->req->piping && err == UV_EOF) {
    /* the backend closed the pipe: the response direction ends (END)
     * after its last bytes; what the requester still sends is dropped */
    wstun_request *req = up->req;
    wstun__log(req->log, WSTUN_LOG_DEBUG,
               "HTTP RET id=%04x: pipe closed by backend %s", req->id,
               req->backend_key);
    up->req = NULL;
    req->up = NULL;
    up_close(up);
    pipe_finish(req);
    return;
  }
  if (up->req->resp_started) {
    /* a body delimited by the connection's end completes here, but only
     * at a clean end: a reset or a TLS stream cut without close_notify
     * may have lost its tail */
    if (err == UV_EOF &&
        wstun__http_parser_finish(&up->parser) == WSTUN__HTTP_OK &&
        up->req == NULL) {
      up_close(up);
      return;
    }
    fail_mid_response(up);
    return;
  }
  fail_before_response(up, err == UV_EOF ? "connection closed"
                                         : wstun__conn_strerror(c, err));
}

static void up_on_end(wstun__conn *c, int err) {
  wstun_request *req = pin((wstun__upstream *)c->owner);
  up_on_end_pinned(c, err);
  unpin(req);
}

static void up_on_drain_pinned(wstun__conn *c) {
  wstun__upstream *up = c->owner;
  wstun_request *req = up->req;
  if (req && wstun__tunnel_is_v2(req->t))
    wstun__request_consume(req); /* the backend took them */
  if (req && req->paused_tunnel && req->t) {
    req->paused_tunnel = 0;
    resume_deadline(up);
    wstun__tunnel_resume_rx(req->t);
  }
}

static void up_on_drain(wstun__conn *c) {
  wstun_request *req = pin((wstun__upstream *)c->owner);
  up_on_drain_pinned(c);
  unpin(req);
}

static const wstun__conn_cbs up_conn_cbs = {
    .on_data = up_on_data,
    .on_end = up_on_end,
    .on_drain = up_on_drain,
    .on_connect = up_on_connect,
    .on_close = up_conn_closed,
    .on_secure = up_on_secure,
};
