/* The tunnel client: its configuration, start and close, and the routing
 * of each tunneled request (X-Host and -regexp, -server, the request head
 * rewritten for the backend) to the backend pool (wstun_upstream.c) or to
 * the embedder's in-process handler. Owns the client object, the tunnel
 * once the dialer (wstun_dialer.c) hands over its connection, and the
 * list of live requests; a request's own lifetime is wstun_request.c's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wstun_alloc.h"
#include "wstun_client_int.h"
#include "wstun_util.h"
#include "wstun_v2.h"

#define REQ_MAX_HEAD (1 << 20)

static const wstun__tunnel_cbs cli_tunnel_cbs;
static void on_retire(uv_timer_t *timer);
static const wstun__http_parser_cbs req_cbs;
static const wstun__request_cbs cli_req_cbs;

void wstun_client_config_init(wstun_client_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->timeout_sec = 30;
  cfg->backend_timeout_sec = 1200;
  cfg->stall_timeout_sec = 10;
  cfg->protocol = 2;
  cfg->reconnect_max_ms = 30000;
  cfg->max_idle_per_backend = 256;
  cfg->backend_idle_sec = 30;
  cfg->max_handler_body = 8 * 1024 * 1024;
  cfg->log_level = WSTUN_LOG_INFO;
  cfg->access_log = 1;
}

wstun_client_state wstun_client_get_state(const wstun_client *c) {
  return c->state;
}

/* The public state (wstun_client_get_state, the state callback) is the
 * dialer's, but for one case: while a drained tunnel (v2 GOAWAY) still
 * serves, requests still pass, so the client stays CONNECTED while the
 * next tunnel is dialed, even if that dial fails; what the dialer reached
 * meanwhile is published when the drained tunnel closes. */
static void set_state(wstun_client *cli, wstun_client_state s, int err) {
  cli->dial_state = s;
  cli->dial_err = err;
  if (cli->old_t != NULL && cli->state == WSTUN_CLIENT_CONNECTED) {
    if (s == WSTUN_CLIENT_DISCONNECTED)
      wstun__log(&cli->log, WSTUN_LOG_INFO,
                 "next tunnel not up yet (%s): the drained tunnel still "
                 "serves, the state stays connected",
                 wstun_strerror(err));
    return;
  }
  cli->state = s;
  if (cli->state_cb)
    cli->state_cb(cli, s, err, cli->state_ud);
}

/* ---- requests ----------------------------------------------------------- */

/* The request's last reference went (wstun_request.c frees it next). */
static void cli_req_release(wstun_request *req) {
  wstun_client *cli = req->owner;
  wstun__list_remove(&req->link);
  wstun__upstream_detach(req);
  if (cli->old_t != NULL && cli->phase == WSTUN__CLI_OPEN)
    uv_timer_start(&cli->retire, on_retire, 0, 0); /* maybe its last */
  if (cli->reqs_counted && wstun__list_empty(&cli->reqs)) {
    cli->reqs_counted = 0;
    wstun__closer_done(&cli->closer);
  }
}

static const wstun__request_cbs cli_req_cbs = {
    .on_release = cli_req_release,
};

static void *cli_msg_begin(wstun__tunnel *t, uint32_t wire_id) {
  wstun_client *cli = t->owner;
  uint32_t id = wire_id; /* v1: four hex digits; v2: the stream */
  wstun_request *req = wstun__request_new(t, id, &cli->log, &cli_req_cbs, cli);
  if (req == NULL)
    return NULL;
  wstun__http_parser_init(&req->parser, HTTP_REQUEST, REQ_MAX_HEAD,
                          cli->handler ? cli->max_handler_body : 0, &req_cbs,
                          req);
  wstun__list_push_front(&cli->reqs, &req->link);
  return req;
}

/* An upgrade's bytes after its head: to the backend as they are (their
 * credit goes back as its connection takes them), or dropped when it is
 * gone or refused the upgrade. */
static void pipe_to_backend(wstun_request *req, const uint8_t *d, size_t n) {
  if (req->state == WSTUN__CR_FORWARD && req->up != NULL &&
      wstun__buf_append(&req->to_backend, d, n) == 0) {
    req->pipe_out += n;
    wstun__upstream_push(req);
    return;
  }
  wstun__request_consume(req);
}

static int cli_msg_data(wstun__tunnel *t, void *sink, const uint8_t *d,
                        size_t n) {
  wstun_request *req = sink;
  (void)t;
  /* v2: the bytes hold credit until they reach the backend (upstream.c
   * gives it back as its connection takes them); any other bytes are
   * done with at once */
  req->unconsumed += n;
  if (req->upgrade && req->req_complete) {
    pipe_to_backend(req, d, n);
    return 0;
  }
  if (req->req_complete) {
    req->msg_extra += n; /* a message carries one request */
    wstun__request_consume(req);
    return 0;
  }
  if (req->state == WSTUN__CR_ANSWERED) {
    wstun__request_consume(req);
    return 0;
  }
  size_t used;
  wstun__request_ref(req);
  int rc = wstun__http_parser_feed(&req->parser, d, n, &used);
  if (rc == WSTUN__HTTP_PAUSED && req->upgrade && used < n) {
    pipe_to_backend(req, d + used, n - used); /* after the head: the pipe's */
    wstun__request_unref(req);
    return 0;
  }
  if (rc == WSTUN__HTTP_PAUSED)
    req->msg_extra += n - used;
  if (rc == WSTUN__HTTP_ERROR) {
    int st = req->parser.error_status ? req->parser.error_status : 400;
    if (st == 502 || st == 503)
      st = 400;
    wstun__upstream_detach(req);
    wstun__request_answer(req, st,
                          req->parser.error_text ? req->parser.error_text
                                                 : "Bad request");
  }
  if (req->state != WSTUN__CR_FORWARD || req->up == NULL)
    wstun__request_consume(req);
  wstun__request_unref(req);
  return 0;
}

static void cli_msg_end(wstun__tunnel *t, void *sink, int complete) {
  wstun_request *req = sink;
  wstun_client *cli = req->owner;
  (void)t;
  wstun__request_ref(req);
  req->msg_ended = 1;
  if (req->msg_extra > 0)
    wstun__log(&cli->log, WSTUN_LOG_WARN,
               "WS   RCV id=%04x: %llu bytes after the request in its "
               "message: dropped",
               req->id, (unsigned long long)req->msg_extra);
  if (req->piping && req->up != NULL)
    wstun__upstream_pipe_end(req); /* the requester closed its side */
  if (!req->req_complete && req->state != WSTUN__CR_ANSWERED) {
    /* the request stopped short: the backend must not take it as whole */
    wstun__upstream_detach(req);
    if (complete)
      wstun__request_answer(req, 400, "Incomplete request from the tunnel");
    else
      wstun__request_end_exchange(req);
  }
  wstun__request_msg_ended(req);
  wstun__request_unref(req);
}

/* ---- routing a request ------------------------------------------------- */

static int set_backend(wstun_request *req, const wstun__url *u) {
  char key[600];
  int v6 = strchr(u->host, ':') != NULL;
  snprintf(key, sizeof(key), "%s://%s%s%s:%d", u->scheme, v6 ? "[" : "",
           u->host, v6 ? "]" : "", u->port);
  req->backend_key = wstun__strdup(key);
  req->backend_host = wstun__strdup(u->host);
  req->backend_port = u->port;
  return req->backend_key && req->backend_host ? 0 : WSTUN_ENOMEM;
}

/* As in the Go client, a path in X-Host is then a prefix of the request's
 * path. */
int wstun__xhost_check(const regex_t *re, const char *xhost, wstun__url *u) {
  int ok = wstun__url_parse(xhost, u) == 0 && u->userinfo == NULL &&
           (strcmp(u->scheme, "http") == 0 || strcmp(u->scheme, "https") == 0);
  if (ok) {
    const char *path = strcmp(u->path, "/") == 0 ? "" : u->path;
    int v6 = strchr(u->host, ':') != NULL;
    size_t n = strlen(u->scheme) + strlen(u->host) + strlen(path) + 16;
    char *canon = wstun__malloc(n);
    if (canon == NULL) {
      wstun__url_free(u);
      return WSTUN_ENOMEM;
    }
    if (u->port_given)
      snprintf(canon, n, "%s://%s%s%s:%d%s", u->scheme, v6 ? "[" : "", u->host,
               v6 ? "]" : "", u->port, path);
    else
      snprintf(canon, n, "%s://%s%s%s%s", u->scheme, v6 ? "[" : "", u->host,
               v6 ? "]" : "", path);
    ok = regexec(re, canon, 0, NULL, 0) == 0;
    wstun__free(canon);
  }
  if (!ok) {
    wstun__url_free(u);
    return 1;
  }
  return 0;
}

/* X-Host: allowed only with -regexp (wstun__xhost_check). Returns 0 and
 * fills *u, -1 after answering, -2 when out of memory. */
static int check_xhost(wstun_request *req, const char *xhost, wstun__url *u) {
  wstun_client *cli = req->owner;
  char msg[512];
  if (!cli->has_re) {
    wstun__request_answer(
        req, 403,
        "X-Host header disallowed by wstunnel cli (no -regexp option)");
    return -1;
  }
  int rc = wstun__xhost_check(&cli->re, xhost, u);
  if (rc == WSTUN_ENOMEM)
    return -2;
  if (rc != 0) {
    snprintf(msg, sizeof(msg),
             "X-Host header '%.300s' does not match regexp in wstunnel cli",
             xhost);
    wstun__request_answer(req, 403, msg);
    return -1;
  }
  return 0;
}

/* The Go client requests `backend + RequestURI`, a string concatenation:
 * a path in -server or X-Host is a prefix (http://h/pre + /a?q → /pre/a?q).
 * -server's trailing "/" was cut at start, as Go does; an X-Host of just
 * "http://h/" adds nothing (Go would send "//a?q"). Only origin-form
 * targets get it. */
static int prefix_target(wstun__http_head *h, const wstun__url *backend) {
  const char *pre = backend->path;
  size_t plen = strlen(pre);
  const char *t = wstun__http_head_target(h);
  if (plen == 0 || strcmp(pre, "/") == 0 || t[0] != '/')
    return 0;
  size_t tlen = strlen(t);
  char *nt = wstun__malloc(plen + tlen + 1);
  if (nt == NULL)
    return WSTUN_ENOMEM;
  memcpy(nt, pre, plen);
  memcpy(nt + plen, t, tlen + 1);
  int rc = wstun__http_head_set_target(h, nt, plen + tlen);
  wstun__free(nt);
  return rc;
}

static int req_on_head(void *ud, wstun__http_head *h) {
  wstun_request *req = ud;
  wstun_client *cli = req->owner;
  wstun__request_note_head(req, h, cli->dialer.cfg.token);
  wstun__log(&cli->log, WSTUN_LOG_DEBUG, "WS   RCV id=%04x verb=%s url=%s",
             req->id, llhttp_method_name((llhttp_method_t)h->method),
             wstun__http_head_target(h));
  /* an upgrade passes through only on v2, and only to a backend; on v1
   * it goes as a plain request, its Upgrade stripped, as it always did */
  req->upgrade = wstun__tunnel_is_v2(req->t) &&
                 wstun__http_head_has_token(h, "Connection", "upgrade") &&
                 wstun__http_head_get(h, "Upgrade") != NULL;
  if (cli->handler && req->upgrade) {
    req->upgrade = 0;
    wstun__request_answer(req, 501,
                          "Protocol upgrades are not supported by the "
                          "in-process handler");
    return 0;
  }
  if (cli->handler) {
    req->state = WSTUN__CR_HANDLER;
    req->method_str =
        wstun__strdup(llhttp_method_name((llhttp_method_t)h->method));
    return req->method_str ? 0 : -1;
  }
  wstun__url xu;
  memset(&xu, 0, sizeof(xu));
  const wstun__url *backend;
  const char *xhost = wstun__http_head_get(h, "X-Host");
  if (xhost != NULL) {
    int xrc = check_xhost(req, xhost, &xu);
    if (xrc != 0)
      return xrc == -2 ? -1 : 0;
    backend = &xu;
  } else if (cli->has_server) {
    backend = &cli->server_url;
  } else {
    wstun__request_answer(
        req, 403, "X-Host header required by wstunnel cli (no -server option)");
    return 0;
  }
  char host[600];
  wstun__url_host_header(backend, host, sizeof(host));
  int rc = set_backend(req, backend);
  if (rc == 0)
    rc = prefix_target(h, backend);
  wstun__url_free(&xu);
  if (rc != 0)
    return -1;
  if (req->upgrade) /* the rest of the message is the pipe's, no body */
    rc = wstun__http_head_strip_for_upgrade(h);
  else
    wstun__http_head_strip_hop_by_hop(h, 1);
  wstun__http_head_remove(h, "X-Host");
  wstun__http_head_remove(h, "Host");
  rc |= wstun__http_head_add(h, "Host", host);
  if (!req->upgrade)
    rc |= wstun__http_head_frame(h, h->has_content_length, h->content_length,
                                 h->chunked, &req->req_chunked);
  if (rc != 0 || wstun__http_head_write(h, &req->to_backend) != 0)
    return -1;
  req->state = WSTUN__CR_FORWARD;
  wstun__upstream_start(&cli->pool, req);
  return 0;
}

static int req_on_body(void *ud, const uint8_t *d, size_t n) {
  wstun_request *req = ud;
  switch (req->state) {
  case WSTUN__CR_HANDLER:
    return wstun__buf_append(&req->body, d, n) == 0 ? 0 : -1;
  case WSTUN__CR_FORWARD:
    if (wstun__http_write_body(&req->to_backend, d, n, req->req_chunked) != 0)
      return -1;
    wstun__upstream_push(req);
    return 0;
  default:
    return 0;
  }
}

static int req_on_complete(void *ud) {
  wstun_request *req = ud;
  wstun_client *cli = req->owner;
  req->req_complete = 1;
  if (req->state == WSTUN__CR_FORWARD) {
    if (req->req_chunked &&
        wstun__buf_append_str(&req->to_backend, WSTUN__HTTP_LAST_CHUNK) != 0)
      return -1;
    wstun__upstream_push(req);
  } else if (req->state == WSTUN__CR_HANDLER && !req->handler_called) {
    req->handler_called = 1;
    /* the handler's reference: a close waits for its answer or cancel */
    req->handler_ref = 1;
    wstun__request_ref(req);
    cli->handler(req, cli->handler_ud);
  }
  return 1; /* one request per message */
}

static const wstun__http_parser_cbs req_cbs = {
    .on_head = req_on_head,
    .on_body = req_on_body,
    .on_complete = req_on_complete,
};

/* ---- the in-process handler API ----------------------------------------- */

const char *wstun_request_method(const wstun_request *req) {
  return req->method_str ? req->method_str : "GET";
}

const char *wstun_request_target(const wstun_request *req) {
  return wstun__http_head_target(&req->parser.head);
}

const char *wstun_request_header(const wstun_request *req, const char *name) {
  return wstun__http_head_get(&req->parser.head, name);
}

const uint8_t *wstun_request_body(const wstun_request *req, size_t *len) {
  if (len)
    *len = wstun__buf_size(&req->body);
  return wstun__buf_size(&req->body) ? wstun__buf_data(&req->body)
                                     : (const uint8_t *)"";
}

/* The handler lets go of req; a pin keeps it for the caller meanwhile. */
static void handler_release(wstun_request *req) {
  req->handler_ref = 0;
  wstun__request_unref(req);
}

int wstun_request_respond(wstun_request *req, int status,
                          const char *content_type, const void *body,
                          size_t len) {
  if (req == NULL || !req->handler_ref)
    return WSTUN_EINVAL;
  wstun__request_ref(req);
  handler_release(req);
  int rc = 0;
  if (status < 100 || status > 599) {
    wstun__request_answer(req, 500, "Handler gave an invalid status");
    rc = WSTUN_EINVAL;
  } else if (req->t == NULL) {
    rc = WSTUN_ECLOSED;
  } else {
    wstun__outmsg *m = wstun__outmsg_new(&wstun__request_resp_cbs, req);
    int w = m ? 0 : WSTUN_ENOMEM;
    if (w == 0) {
      w |= wstun__buf_appendf(&m->buf, "HTTP/1.1 %d %s\r\n", status,
                              wstun__http_reason(status));
      if (content_type)
        w |= wstun__buf_appendf(&m->buf, "Content-Type: %s\r\n", content_type);
      w |= wstun__buf_appendf(&m->buf, "Content-Length: %zu\r\n\r\n", len);
      wstun__request_mark_head(m, wstun__buf_size(&m->buf));
      w |= wstun__buf_append(&m->buf, body, len);
    }
    if (w != 0) {
      wstun__outmsg_free(m);
      wstun__request_answer(req, 500, "Out of memory");
      rc = WSTUN_ENOMEM;
    } else {
      m->finished = 1;
      req->resp = m;
      req->resp_started = 1;
      req->resp_handed = 1;
      wstun__request_note_answer(req, status, len);
      wstun__tunnel_send(req->t, req->id, m);
    }
  }
  wstun__request_unref(req);
  return rc;
}

int wstun_request_cancel(wstun_request *req) {
  if (req == NULL || !req->handler_ref)
    return WSTUN_EINVAL;
  wstun__request_ref(req);
  handler_release(req);
  wstun__request_answer(req, 503, "Request cancelled by the handler");
  wstun__request_unref(req);
  return 0;
}

/* ---- the tunnel --------------------------------------------------------- */

static void cli_tunnel_closed(wstun__tunnel *t, int err) {
  wstun_client *cli = t->owner;
  int current = t == cli->t;
  if (current)
    cli->t = NULL;
  else if (t == cli->old_t)
    cli->old_t = NULL;
  wstun__log(&cli->log, current ? WSTUN_LOG_WARN : WSTUN_LOG_INFO,
             "%s closed: %s", current ? "tunnel" : "drained tunnel",
             wstun_strerror(err));
  /* every request on it is lost: responses queued on the tunnel are let go
   * (the tunnel frees them), backends are cut; those on the other tunnel
   * (a drained one, or the next) go on */
  wstun__list *l, *tmp;
  wstun__list_foreach_safe(l, tmp, &cli->reqs) {
    wstun_request *req = wstun__list_entry(l, wstun_request, link);
    if (req->t != NULL && req->t != t)
      continue;
    if (req->resp && req->resp_handed) {
      req->resp->owner = NULL;
      req->resp = NULL;
    }
    req->t = NULL;
    req->msg_ended = 1;
    req->paused_tunnel = 0;
    wstun__upstream_detach(req);
    wstun__request_end_exchange(req); /* frees unless pinned or held */
  }
  if (!current) {
    /* the drained tunnel served to here: the next one's state shows now */
    if (cli->t == NULL)
      set_state(cli,
                cli->phase == WSTUN__CLI_OPEN ? cli->dial_state
                                              : WSTUN_CLIENT_DISCONNECTED,
                cli->phase == WSTUN__CLI_OPEN ? cli->dial_err : err);
    return;
  }
  set_state(cli, WSTUN_CLIENT_DISCONNECTED, err);
  wstun__dialer_lost(&cli->dialer); /* redials unless closing */
}

/* The drained tunnel is closed once no request uses it (WebSocket close
 * 1000). From a timer: tunnel callbacks may not close their tunnel. */
static void on_retire(uv_timer_t *timer) {
  wstun_client *cli = timer->data;
  if (cli->old_t == NULL || cli->phase != WSTUN__CLI_OPEN)
    return;
  wstun__list *l;
  wstun__list_foreach(l, &cli->reqs) {
    if (wstun__list_entry(l, wstun_request, link)->t == cli->old_t)
      return; /* a stream still runs on it: a later release calls again */
  }
  wstun__log(&cli->log, WSTUN_LOG_INFO,
             "drained tunnel: its last request is done: closing it");
  wstun__tunnel_close(cli->old_t, WSTUN_ECLOSED);
}

/* v2: the server drains this tunnel (it is stopping, or out of ids): its
 * streams go on to their end, and the next tunnel is dialed to the same
 * URL now (behind a balancer, another node), so new requests find it. */
static void cli_tunnel_goaway(wstun__tunnel *t, uint32_t last, uint32_t code) {
  wstun_client *cli = t->owner;
  (void)last;
  if (code != WSTUN__V2_NO_ERROR || t != cli->t ||
      cli->phase != WSTUN__CLI_OPEN)
    return; /* an error: the tunnel closes next (cli_tunnel_closed) */
  wstun__log(&cli->log, WSTUN_LOG_INFO,
             "tunnel drained by the server (GOAWAY): dialing the next one; "
             "this one closes when its requests are done");
  if (cli->old_t != NULL) /* drained twice before the first was done */
    wstun__tunnel_close(cli->old_t, WSTUN_ECLOSED);
  cli->old_t = t;
  cli->t = NULL;
  cli->dial_state = WSTUN_CLIENT_CONNECTING; /* shown if old_t ends first */
  cli->dial_err = 0;
  wstun__dialer_lost(&cli->dialer);
  uv_timer_start(&cli->retire, on_retire, 0, 0);
}

static void cli_tunnel_freed(void *owner) {
  wstun_client *cli = owner;
  cli->tunnel_alive--;
  if (cli->phase >= WSTUN__CLI_CLOSING)
    wstun__closer_done(&cli->closer);
}

static void cli_tunnel_pong(wstun__tunnel *t) {
  wstun_client *cli = t->owner;
  if (cli->pong_cb)
    cli->pong_cb(cli, cli->state_ud);
}

/* v2: the server reset a stream (its requester went away, a timeout):
 * the backend request is aborted, its connection closed at once. */
static void cli_stream_reset(wstun__tunnel *t, uint32_t id, uint32_t code) {
  wstun_client *cli = t->owner;
  wstun__list *l;
  wstun__list_foreach(l, &cli->reqs) {
    wstun_request *req = wstun__list_entry(l, wstun_request, link);
    if (req->t != t || req->id != id)
      continue;
    wstun__log(&cli->log, WSTUN_LOG_DEBUG,
               "WS   RCV id=%04x: reset by the server (%s): backend request "
               "aborted",
               (unsigned)id, wstun__v2_codename(code));
    wstun__request_ref(req);
    wstun__upstream_detach(req);
    wstun__request_reset(req);
    wstun__request_unref(req);
    return;
  }
}

static const wstun__tunnel_cbs cli_tunnel_cbs = {
    .on_reset = cli_stream_reset,
    .on_goaway = cli_tunnel_goaway,
    .on_pong = cli_tunnel_pong,
    .on_msg_begin = cli_msg_begin,
    .on_msg_data = cli_msg_data,
    .on_msg_end = cli_msg_end,
    .on_closed = cli_tunnel_closed,
    .on_freed = cli_tunnel_freed,
};

/* ---- the dialer's callbacks --------------------------------------------- */

static void dl_on_state(void *owner, wstun_client_state s, int err) {
  set_state(owner, s, err);
}

static int dl_on_upgraded(void *owner, wstun__conn *conn,
                          const uint8_t *leftover, size_t n) {
  wstun_client *cli = owner;
  uint64_t ping = cli->timeout_ms / 3;
  int rc = wstun__tunnel_start(&cli->t, cli->loop, conn, 0, &cli->rng,
                               &cli->log, ping ? ping : 1000, cli->timeout_ms,
                               &cli_tunnel_cbs, cli, leftover, n);
  if (rc != 0)
    return rc;
  cli->tunnel_alive++; /* until on_freed */
  /* the 101 named wstun.v2: both sides speak v2 from its first byte */
  if (cli->dialer.v2 && wstun__tunnel_set_proto(cli->t, &wstun__proto_v2) != 0)
    wstun__tunnel_close(cli->t, WSTUN_ENOMEM); /* redials (on_closed) */
  return 0;
}

static void dl_on_closed(void *owner) {
  wstun_client *cli = owner;
  wstun__closer_done(&cli->closer);
}

static const wstun__dialer_cbs cli_dialer_cbs = {
    .on_state = dl_on_state,
    .on_upgraded = dl_on_upgraded,
    .on_closed = dl_on_closed,
};

/* ---- the pool's callbacks ----------------------------------------------- */

/* The TLS configuration for https:// backends (made on first use), or
 * NULL with the reason in `why`. */
static wstun__tls_config *backend_tls(void *ud, char *why, size_t n) {
  wstun_client *cli = ud;
  if (cli->backend_tls == NULL &&
      wstun__tls_client_config(&cli->backend_tls, cli->ca_file,
                               !cli->insecure_backends, why, n) != 0)
    return NULL;
  return cli->backend_tls;
}

static void pool_on_closed(void *ud) {
  wstun_client *cli = ud;
  wstun__closer_done(&cli->closer);
}

static const wstun__upstream_pool_cbs cli_pool_cbs = {
    .backend_tls = backend_tls,
    .on_closed = pool_on_closed,
};

/* ---- close -------------------------------------------------------------- */

static void client_free(wstun_client *cli) {
  wstun__dialer_config_free(&cli->dialer.cfg);
  wstun__url_free(&cli->server_url);
  if (cli->has_re)
    regfree(&cli->re);
  wstun__tls_config_unref(cli->backend_tls);
  wstun__free(cli->ca_file);
  wstun__rng_free(&cli->rng);
  wstun__free(cli);
}

static void on_flusher_closed(uv_handle_t *h) {
  wstun_client *cli = h->data;
  wstun_client_close_cb cb = cli->close_cb;
  void *ud = cli->close_ud;
  client_free(cli);
  if (cb)
    cb(cli, ud);
}

/* Every handle and request is gone: the write flusher goes last. */
static void on_all_closed(wstun__closer *c) {
  wstun_client *cli = wstun__list_entry(c, wstun_client, closer);
  cli->phase = WSTUN__CLI_FLUSHING;
  wstun__conn_shared_close(&cli->shared, on_flusher_closed, cli);
}

static void close_now(wstun_client *cli) {
  if (cli->phase >= WSTUN__CLI_CLOSING)
    return;
  cli->phase = WSTUN__CLI_CLOSING;
  wstun__closer_start(&cli->closer, on_all_closed);
  uv_timer_stop(&cli->grace);
  wstun__closer_close_handle(&cli->closer, (uv_handle_t *)&cli->grace);
  uv_timer_stop(&cli->retire);
  wstun__closer_close_handle(&cli->closer, (uv_handle_t *)&cli->retire);
  wstun__closer_add(&cli->closer); /* dl_on_closed */
  wstun__dialer_close(&cli->dialer);
  for (int i = 0; i < cli->tunnel_alive; i++)
    wstun__closer_add(&cli->closer); /* cli_tunnel_freed, each */
  if (cli->t)
    wstun__tunnel_close(cli->t, WSTUN_ECLOSED);
  if (cli->old_t)
    wstun__tunnel_close(cli->old_t, WSTUN_ECLOSED);
  wstun__list *l, *tmp;
  wstun__list_foreach_safe(l, tmp, &cli->reqs) {
    wstun__request_end_exchange(wstun__list_entry(l, wstun_request, link));
  }
  wstun__closer_add(&cli->closer); /* pool_on_closed */
  wstun__upstream_pool_close(&cli->pool);
  /* what is left is held: by an in-process handler until it answers or
   * cancels (cli_req_release) */
  if (!wstun__list_empty(&cli->reqs)) {
    cli->reqs_counted = 1;
    wstun__closer_add(&cli->closer);
  }
  wstun__closer_done(&cli->closer);
}

static void on_grace_check(uv_timer_t *t) {
  wstun_client *cli = t->data;
  if (wstun__list_empty(&cli->reqs) || cli->t == NULL ||
      uv_now(cli->loop) >= cli->grace_deadline)
    close_now(cli);
}

void wstun_client_close(wstun_client *cli, unsigned grace_ms,
                        wstun_client_close_cb cb, void *user_data) {
  if (cli == NULL || cli->phase != WSTUN__CLI_OPEN)
    return;
  cli->phase = WSTUN__CLI_GRACE;
  cli->close_cb = cb;
  cli->close_ud = user_data;
  wstun__dialer_stop(&cli->dialer);
  wstun__upstream_pool_drain(&cli->pool);
  if (wstun__list_empty(&cli->reqs) || cli->t == NULL || grace_ms == 0) {
    close_now(cli);
    return;
  }
  /* requests in progress may finish; no new tunnel is dialed meanwhile.
   * v2 (PROTOCOL.md 7.7): GOAWAY tells the server to send no new request
   * here (it queues them for another client); a stream it opened anyway
   * is refused, and the server sends it again elsewhere. */
  if (wstun__tunnel_is_v2(cli->t))
    wstun__tunnel_goaway(cli->t, WSTUN__V2_NO_ERROR);
  cli->grace_deadline = uv_now(cli->loop) + grace_ms;
  uv_timer_start(&cli->grace, on_grace_check, 50, 50);
}

void wstun_client_set_log_level(wstun_client *cli, wstun_log_level level) {
  if (cli)
    cli->log.level = level;
}

/* ---- start -------------------------------------------------------------- */

static int client_setup(wstun_client *cli, const wstun_client_config *cfg) {
  wstun__dialer_config *dc = &cli->dialer.cfg;
  if (cfg->token == NULL || strlen(cfg->token) < 16 || cfg->tunnel_url == NULL)
    return WSTUN_EINVAL;
  for (const char *p = cfg->token; *p; p++)
    if ((unsigned char)*p < 0x21 || *p == 0x7f)
      return WSTUN_EINVAL;
  /* a bad URL is named (never shown: it may hold a password) */
  int rc = wstun__dialer_config_url(dc, cfg->tunnel_url);
  if (rc == WSTUN_EURL)
    wstun__log(&cli->log, WSTUN_LOG_ERROR,
               "tunnel_url: malformed, or not ws:// or wss:// (want "
               "ws[s]://[user:pass@]host[:port][/base])");
  if (rc != 0)
    return rc;
  if (cfg->server_url && *cfg->server_url) {
    rc = wstun__url_parse(cfg->server_url, &cli->server_url);
    if (rc == 0 && strcmp(cli->server_url.scheme, "http") != 0 &&
        strcmp(cli->server_url.scheme, "https") != 0)
      rc = WSTUN_EURL;
    if (rc == WSTUN_EURL)
      wstun__log(&cli->log, WSTUN_LOG_ERROR,
                 "server_url: malformed, or not http:// or https:// (want "
                 "http[s]://host[:port][/prefix])");
    if (rc != 0)
      return rc;
    /* a path is a prefix of every request's (see prefix_target); one
     * trailing "/" goes, as in the Go client */
    size_t splen = strlen(cli->server_url.path);
    if (splen > 0 && cli->server_url.path[splen - 1] == '/')
      cli->server_url.path[splen - 1] = '\0';
    cli->has_server = 1;
  }
  if (cfg->regexp && *cfg->regexp) {
    size_t n = strlen(cfg->regexp) + 5;
    char *anchored = wstun__malloc(n);
    if (anchored == NULL)
      return WSTUN_ENOMEM;
    snprintf(anchored, n, "^(%s)$", cfg->regexp);
    rc = regcomp(&cli->re, anchored, REG_EXTENDED | REG_NOSUB);
    wstun__free(anchored);
    if (rc != 0)
      return WSTUN_EREGEX;
    cli->has_re = 1;
  }
  if (cfg->client_ports && *cfg->client_ports) {
    rc = wstun__parse_ports(cfg->client_ports, &dc->ports, &dc->nports);
    if (rc != 0)
      return rc;
  }
  cli->insecure_backends = cfg->insecure_backends;
  if (cfg->ca_file && *cfg->ca_file) {
    cli->ca_file = wstun__strdup(cfg->ca_file);
    if (cli->ca_file == NULL)
      return WSTUN_ENOMEM;
  }
  char why[400];
  if (!wstun__url_is_tls(&dc->tunnel_url) && cli->ca_file &&
      backend_tls(cli, why, sizeof(why)) == NULL) {
    /* only backends use it: still, a bad file is an error at start */
    wstun__log(&cli->log, WSTUN_LOG_ERROR, "TLS: %s", why);
    return WSTUN_ETLS;
  }
  rc = wstun__dialer_config_transport(dc, cli->ca_file, cfg->proxy_url,
                                      cfg->proxy_from_env, &cli->log);
  if (rc == WSTUN_EURL)
    wstun__log(&cli->log, WSTUN_LOG_ERROR,
               "proxy_url: malformed, or not http:// (want "
               "http://[user:pass@]host:port)");
  if (rc != 0)
    return rc;
  rc = wstun__dialer_config_auth(dc, cfg->token, cfg->password,
                                 cfg->client_version
                                     ? cfg->client_version
                                     : "wstun " WSTUN_VERSION_STRING);
  if (rc != 0)
    return rc;
  if (cfg->protocol < 0 || cfg->protocol > 2)
    return WSTUN_EINVAL;
  dc->offer_v2 = cfg->protocol != 1;
  cli->timeout_ms = dc->timeout_ms =
      (uint64_t)(cfg->timeout_sec > 0 ? cfg->timeout_sec : 30) * 1000;
  cli->pool.backend_timeout_ms =
      (uint64_t)(cfg->backend_timeout_sec > 0 ? cfg->backend_timeout_sec
                                              : 1200) *
      1000;
  cli->pool.stall_ms =
      (uint64_t)(cfg->stall_timeout_sec > 0 ? cfg->stall_timeout_sec : 10) *
      1000;
  dc->reconnect_max_ms =
      (uint64_t)(cfg->reconnect_max_ms > 0 ? cfg->reconnect_max_ms : 30000);
  cli->pool.max_idle =
      cfg->max_idle_per_backend > 0 ? (size_t)cfg->max_idle_per_backend : 256;
  cli->pool.idle_ms =
      (uint64_t)(cfg->backend_idle_sec > 0 ? cfg->backend_idle_sec : 30) * 1000;
  cli->max_handler_body =
      cfg->max_handler_body ? cfg->max_handler_body : 8 << 20;
  cli->handler = cfg->handler;
  cli->handler_ud = cfg->handler_user_data;
  cli->state_cb = cfg->state_cb;
  cli->pong_cb = cfg->pong_cb;
  cli->state_ud = cfg->state_user_data;
  return 0;
}

/* What the client runs with, once at start: the tunnel URL without its
 * user:password, the token's prefix, whether a password goes with it,
 * where requests go, the timeout. */
static void log_config(wstun_client *cli, const wstun_client_config *cfg) {
  const wstun__dialer_config *dc = &cli->dialer.cfg;
  char host[600], red[12], backend[1200];
  wstun__url_host_header(&dc->tunnel_url, host, sizeof(host));
  if (cli->handler)
    snprintf(backend, sizeof(backend), "the in-process handler");
  else if (cli->has_server) {
    char sh[600];
    wstun__url_host_header(&cli->server_url, sh, sizeof(sh));
    snprintf(backend, sizeof(backend), "%s://%s%s%s%.200s%s",
             cli->server_url.scheme, sh, cli->server_url.path,
             cli->has_re ? " (and X-Host matching " : "",
             cli->has_re ? cfg->regexp : "", cli->has_re ? ")" : "");
  } else
    snprintf(backend, sizeof(backend), "X-Host matching %.200s", cfg->regexp);
  wstun__log(&cli->log, WSTUN_LOG_INFO,
             "tunnel %s://%s%s token=%s %s; requests go to %s; timeout %llu s",
             dc->tunnel_url.scheme, host, dc->tunnel_url.path,
             wstun__redact(dc->token, red),
             dc->auth_header ? "with a password" : "without a password",
             backend, (unsigned long long)cli->timeout_ms / 1000);
}

int wstun_client_start(uv_loop_t *loop, const wstun_client_config *cfg,
                       wstun_client **out) {
  if (loop == NULL || cfg == NULL || out == NULL)
    return WSTUN_EINVAL;
  wstun_client *cli = wstun__calloc(1, sizeof(*cli));
  if (cli == NULL)
    return WSTUN_ENOMEM;
  cli->loop = loop;
  wstun__logger_init(&cli->log, cfg->log_level, cfg->log_cb, cfg->log_record_cb,
                     cfg->log_user_data, cfg->access_log);
  int rc = wstun__rng_init(&cli->rng);
  if (rc != 0) {
    wstun__free(cli);
    return rc;
  }
  wstun__upstream_pool_init(&cli->pool, loop, &cli->shared, &cli->log,
                            &cli_pool_cbs, cli);
  wstun__list_init(&cli->reqs);
  rc = client_setup(cli, cfg);
  if (rc != 0) {
    client_free(cli);
    return rc;
  }
  log_config(cli, cfg);
  wstun__conn_shared_init(&cli->shared, loop);
  wstun__dialer_init(&cli->dialer, loop, &cli->shared, &cli->rng, &cli->log,
                     &cli_dialer_cbs, cli);
  uv_timer_init(loop, &cli->grace);
  cli->grace.data = cli;
  uv_timer_init(loop, &cli->retire);
  cli->retire.data = cli;
  cli->state = WSTUN_CLIENT_CONNECTING;
  *out = cli;
  wstun__dialer_start(&cli->dialer);
  return 0;
}
