/* The tunnel client: dials the server (resolving, connecting, the
 * WebSocket handshake with the token), redials with backoff after every
 * drop, and routes each tunneled request to a backend (wstun_upstream.c)
 * or to the embedder's in-process handler. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wstun_alloc.h"
#include "wstun_client_int.h"
#include "wstun_proxy.h"
#include "wstun_util.h"
#include "wstun_ws.h"

#define HANDSHAKE_MAX_HEAD (64 * 1024)
#define REQ_MAX_HEAD (1 << 20)
#define FIRST_RETRY_MS 200

static const wstun__tunnel_cbs cli_tunnel_cbs;
static const wstun__http_parser_cbs req_cbs;
static void schedule_reconnect(wstun_client *cli);
static void dial(wstun_client *cli);

void wstun_client_config_init(wstun_client_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->timeout_sec = 30;
  cfg->backend_timeout_sec = 1200;
  cfg->stall_timeout_sec = 10;
  cfg->reconnect_max_ms = 30000;
  cfg->max_idle_per_backend = 256;
  cfg->backend_idle_sec = 30;
  cfg->max_handler_body = 8 * 1024 * 1024;
  cfg->log_level = WSTUN_LOG_INFO;
}

wstun_client_state wstun_client_get_state(const wstun_client *c) {
  return c->state;
}

static void set_state(wstun_client *cli, wstun_client_state s, int err) {
  cli->state = s;
  if (cli->state_cb)
    cli->state_cb(cli, s, err, cli->state_ud);
}

/* ---- requests ----------------------------------------------------------- */

static void req_free(wstun_request *req) {
  wstun_client *cli = req->cli;
  if (req->prev)
    req->prev->next = req->next;
  else if (cli->reqs == req)
    cli->reqs = req->next;
  if (req->next)
    req->next->prev = req->prev;
  req->prev = req->next = NULL;
  wstun__upstream_detach(req);
  if (req->resp) {
    wstun__outmsg *m = req->resp;
    req->resp = NULL;
    wstun__outmsg_abandon(m);
  }
  if (req->t) {
    wstun__tunnel_forget_sink(req->t, req);
    if (req->paused_tunnel)
      wstun__tunnel_resume_rx(req->t);
  }
  wstun__http_parser_free(&req->parser);
  wstun__buf_free(&req->to_backend);
  wstun__buf_free(&req->replay);
  wstun__buf_free(&req->body);
  wstun__free(req->backend_key);
  wstun__free(req->backend_host);
  wstun__free(req->method_str);
  wstun__free(req);
}

void wstun__client_req_done(wstun_request *req) {
  /* Never free under a caller that still uses req (busy), nor while the
   * in-process handler holds it. Otherwise free once both directions are
   * over: the response handed out and sent, the request message read to
   * its end; or at once when the tunnel is gone. */
  if (req->busy > 0 || req->handler_holds)
    return;
  if (req->t == NULL ||
      (req->resp == NULL && req->resp_handed && req->msg_ended))
    req_free(req);
}

static void resp_sent(void *owner, wstun__outmsg *m) {
  wstun_request *req = owner;
  (void)m;
  req->resp = NULL;
  wstun__client_req_done(req);
}

static void resp_drain(void *owner, wstun__outmsg *m) {
  wstun_request *req = owner;
  (void)m;
  wstun__upstream_push(req); /* resumes reading the backend */
}

static void resp_failed(void *owner, wstun__outmsg *m, int restartable) {
  wstun_request *req = owner;
  (void)restartable;
  wstun__outmsg_free(m);
  req->resp = NULL;
  req->t = NULL;
  wstun__client_req_done(req);
}

const wstun__outmsg_cbs wstun__resp_msg_cbs = {
    .on_sent = resp_sent,
    .on_drain = resp_drain,
    .on_failed = resp_failed,
};

void wstun__client_answer(wstun_request *req, int status, const char *text) {
  wstun_client *cli = req->cli;
  if (req->resp_started || req->t == NULL)
    return;
  req->resp_started = 1;
  wstun__log(&cli->log, WSTUN_LOG_DEBUG, "HTTP RET id=%04x status=%d %s",
             req->id, status, text);
  req->resp = wstun__outmsg_new(&wstun__resp_msg_cbs, req);
  if (req->resp == NULL)
    return;
  if (wstun__http_write_simple(&req->resp->buf, status, text, NULL,
                               req->method == HTTP_HEAD ? WSTUN__HTTP_NO_BODY
                                                        : 0) != 0) {
    wstun__outmsg_free(req->resp);
    req->resp = NULL;
    return;
  }
  req->resp->finished = 1;
  req->resp_handed = 1;
  if (req->state != WSTUN__CR_HANDLER)
    req->state = WSTUN__CR_ANSWERED;
  wstun__tunnel_send(req->t, req->id, req->resp);
}

static void *cli_msg_begin(wstun__tunnel *t, uint16_t id) {
  wstun_client *cli = t->owner;
  wstun_request *req = wstun__calloc(1, sizeof(*req));
  if (req == NULL)
    return NULL;
  req->cli = cli;
  req->t = t;
  req->id = id;
  wstun__http_parser_init(&req->parser, HTTP_REQUEST, REQ_MAX_HEAD,
                          cli->handler ? cli->max_handler_body : 0, &req_cbs,
                          req);
  req->next = cli->reqs;
  if (cli->reqs)
    cli->reqs->prev = req;
  cli->reqs = req;
  return req;
}

static int cli_msg_data(wstun__tunnel *t, void *sink, const uint8_t *d,
                        size_t n) {
  wstun_request *req = sink;
  (void)t;
  if (req->req_complete) {
    req->msg_extra += n; /* a message carries one request */
    return 0;
  }
  if (req->state == WSTUN__CR_ANSWERED)
    return 0;
  size_t used;
  req->busy++;
  int rc = wstun__http_parser_feed(&req->parser, d, n, &used);
  if (rc == WSTUN__HTTP_PAUSED)
    req->msg_extra += n - used;
  if (rc == WSTUN__HTTP_ERROR) {
    int st = req->parser.error_status ? req->parser.error_status : 400;
    if (st == 502 || st == 503)
      st = 400;
    wstun__upstream_detach(req);
    wstun__client_answer(req, st,
                         req->parser.error_text ? req->parser.error_text
                                                : "Bad request");
  }
  req->busy--;
  wstun__client_req_done(req);
  return 0;
}

static void cli_msg_end(wstun__tunnel *t, void *sink, int complete) {
  wstun_request *req = sink;
  (void)t;
  req->msg_ended = 1;
  req->busy++;
  if (req->msg_extra > 0)
    wstun__log(&req->cli->log, WSTUN_LOG_WARN,
               "WS   RCV id=%04x: %llu bytes after the request in its "
               "message: dropped",
               req->id, (unsigned long long)req->msg_extra);
  if (!req->req_complete && req->state != WSTUN__CR_ANSWERED) {
    /* the request stopped short: the backend must not take it as whole */
    wstun__upstream_detach(req);
    if (complete)
      wstun__client_answer(req, 400, "Incomplete request from the tunnel");
    else
      req->t = NULL;
  }
  req->busy--;
  wstun__client_req_done(req);
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

/* Host header value for the backend: the port only when not the default. */
static void host_header(const wstun__url *u, char *out, size_t n) {
  int v6 = strchr(u->host, ':') != NULL;
  if (u->port_given && u->port != (wstun__url_is_tls(u) ? 443 : 80))
    snprintf(out, n, "%s%s%s:%d", v6 ? "[" : "", u->host, v6 ? "]" : "",
             u->port);
  else
    snprintf(out, n, "%s%s%s", v6 ? "[" : "", u->host, v6 ? "]" : "");
}

/* X-Host: allowed only with -regexp, matched in full against the parsed
 * scheme://host[:port] followed by the path as written (never the raw
 * text, which could hide another host behind userinfo). As in the Go
 * client, a path is then a prefix of the request's path; a lone "/" is
 * none. Returns 0 and fills *u, or answers. */
static int check_xhost(wstun_request *req, const char *xhost, wstun__url *u) {
  wstun_client *cli = req->cli;
  char msg[512];
  if (!cli->has_re) {
    wstun__client_answer(
        req, 403,
        "X-Host header disallowed by wstunnel cli (no -regexp option)");
    return -1;
  }
  int ok = wstun__url_parse(xhost, u) == 0 && u->userinfo == NULL &&
           (strcmp(u->scheme, "http") == 0 || strcmp(u->scheme, "https") == 0);
  if (ok) {
    const char *path = strcmp(u->path, "/") == 0 ? "" : u->path;
    int v6 = strchr(u->host, ':') != NULL;
    size_t n = strlen(u->scheme) + strlen(u->host) + strlen(path) + 16;
    char *canon = wstun__malloc(n);
    if (canon == NULL) {
      wstun__url_free(u);
      return -2;
    }
    if (u->port_given)
      snprintf(canon, n, "%s://%s%s%s:%d%s", u->scheme, v6 ? "[" : "", u->host,
               v6 ? "]" : "", u->port, path);
    else
      snprintf(canon, n, "%s://%s%s%s%s", u->scheme, v6 ? "[" : "", u->host,
               v6 ? "]" : "", path);
    ok = regexec(&cli->re, canon, 0, NULL, 0) == 0;
    wstun__free(canon);
  }
  if (!ok) {
    wstun__url_free(u);
    snprintf(msg, sizeof(msg),
             "X-Host header '%.300s' does not match regexp in wstunnel cli",
             xhost);
    wstun__client_answer(req, 403, msg);
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
  wstun_client *cli = req->cli;
  req->method = h->method;
  wstun__log(&cli->log, WSTUN_LOG_DEBUG, "WS   RCV id=%04x verb=%s url=%s",
             req->id, llhttp_method_name((llhttp_method_t)h->method),
             wstun__http_head_target(h));
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
    wstun__client_answer(
        req, 403, "X-Host header required by wstunnel cli (no -server option)");
    return 0;
  }
  char host[600];
  host_header(backend, host, sizeof(host));
  int rc = set_backend(req, backend);
  if (rc == 0)
    rc = prefix_target(h, backend);
  wstun__url_free(&xu);
  if (rc != 0)
    return -1;
  wstun__http_head_strip_hop_by_hop(h, 1);
  wstun__http_head_remove(h, "X-Host");
  wstun__http_head_remove(h, "Host");
  rc = wstun__http_head_add(h, "Host", host);
  rc |= wstun__http_head_frame(h, h->has_content_length, h->content_length,
                               h->chunked, &req->req_chunked);
  if (rc != 0 || wstun__http_head_write(h, &req->to_backend) != 0)
    return -1;
  req->state = WSTUN__CR_FORWARD;
  wstun__upstream_start(req);
  return 0;
}

static int req_on_body(void *ud, const uint8_t *d, size_t n) {
  wstun_request *req = ud;
  int rc = 0;
  switch (req->state) {
  case WSTUN__CR_HANDLER:
    return wstun__buf_append(&req->body, d, n) == 0 ? 0 : -1;
  case WSTUN__CR_FORWARD:
    if (req->req_chunked) {
      rc |= wstun__http_write_chunk_header(&req->to_backend, n);
      rc |= wstun__buf_append(&req->to_backend, d, n);
      rc |= wstun__buf_append(&req->to_backend, "\r\n", 2);
    } else {
      rc = wstun__buf_append(&req->to_backend, d, n);
    }
    if (rc != 0)
      return -1;
    wstun__upstream_push(req);
    return 0;
  default:
    return 0;
  }
}

static int req_on_complete(void *ud) {
  wstun_request *req = ud;
  req->req_complete = 1;
  if (req->state == WSTUN__CR_FORWARD) {
    if (req->req_chunked &&
        wstun__buf_append_str(&req->to_backend, WSTUN__HTTP_LAST_CHUNK) != 0)
      return -1;
    wstun__upstream_push(req);
  } else if (req->state == WSTUN__CR_HANDLER && !req->handler_called) {
    req->handler_called = 1;
    req->handler_holds = 1;
    req->cli->live++; /* a close waits for the handler's answer */
    req->cli->handler(req, req->cli->handler_ud);
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

int wstun_request_respond(wstun_request *req, int status,
                          const char *content_type, const void *body,
                          size_t len) {
  if (req == NULL || !req->handler_holds)
    return WSTUN_EINVAL;
  wstun_client *cli = req->cli;
  req->handler_holds = 0;
  req->busy++;
  int rc = 0;
  if (status < 100 || status > 599) {
    wstun__client_answer(req, 500, "Handler gave an invalid status");
    rc = WSTUN_EINVAL;
  } else if (req->t == NULL) {
    rc = WSTUN_ECLOSED;
  } else {
    wstun__outmsg *m = wstun__outmsg_new(&wstun__resp_msg_cbs, req);
    int w = m ? 0 : WSTUN_ENOMEM;
    if (w == 0) {
      w |= wstun__buf_appendf(&m->buf, "HTTP/1.1 %d %s\r\n", status,
                              wstun__http_reason(status));
      if (content_type)
        w |= wstun__buf_appendf(&m->buf, "Content-Type: %s\r\n", content_type);
      w |= wstun__buf_appendf(&m->buf, "Content-Length: %zu\r\n\r\n", len);
      w |= wstun__buf_append(&m->buf, body, len);
    }
    if (w != 0) {
      wstun__outmsg_free(m);
      wstun__client_answer(req, 500, "Out of memory");
      rc = WSTUN_ENOMEM;
    } else {
      m->finished = 1;
      req->resp = m;
      req->resp_started = 1;
      req->resp_handed = 1;
      wstun__tunnel_send(req->t, req->id, m);
    }
  }
  req->busy--;
  wstun__client_req_done(req);
  cli->live--;
  wstun__client_release(cli);
  return rc;
}

/* ---- the tunnel --------------------------------------------------------- */

static void cli_tunnel_closed(wstun__tunnel *t, int err) {
  wstun_client *cli = t->owner;
  cli->t = NULL;
  cli->last_err = err;
  wstun__log(&cli->log, WSTUN_LOG_WARN, "tunnel closed: %s",
             wstun_strerror(err));
  /* every request on it is lost: responses queued on the tunnel are let go
   * (the tunnel frees them), backends are cut */
  wstun_request *req = cli->reqs;
  while (req) {
    wstun_request *next = req->next;
    if (req->resp && req->resp_handed) {
      req->resp->owner = NULL;
      req->resp = NULL;
    }
    req->t = NULL;
    req->msg_ended = 1;
    req->paused_tunnel = 0;
    wstun__upstream_detach(req);
    wstun__client_req_done(req); /* frees unless busy or the handler's */
    req = next;
  }
  /* a tunnel that lived a while earns a quick reconnect; one dropped at
   * once (a server refusing us after the handshake) keeps backing off */
  if (uv_now(cli->loop) - cli->connected_at >= 10000)
    cli->attempt = 0;
  set_state(cli, WSTUN_CLIENT_DISCONNECTED, err);
  if (!cli->closing)
    schedule_reconnect(cli);
  else if (cli->reqs == NULL)
    wstun__client_release(cli);
}

static void cli_tunnel_freed(void *owner) {
  wstun_client *cli = owner;
  cli->live--;
  wstun__client_release(cli);
}

static void cli_tunnel_pong(wstun__tunnel *t) {
  wstun_client *cli = t->owner;
  if (cli->pong_cb)
    cli->pong_cb(cli, cli->state_ud);
}

static const wstun__tunnel_cbs cli_tunnel_cbs = {
    .on_pong = cli_tunnel_pong,
    .on_msg_begin = cli_msg_begin,
    .on_msg_data = cli_msg_data,
    .on_msg_end = cli_msg_end,
    .on_closed = cli_tunnel_closed,
    .on_freed = cli_tunnel_freed,
};

/* ---- dialing and the handshake ----------------------------------------- */

static void dial_fail(wstun_client *cli, int err, const char *why) {
  wstun__log(&cli->log, WSTUN_LOG_WARN, "cannot open tunnel to %s://%s:%d: %s",
             cli->tunnel_url.scheme, cli->tunnel_url.host, cli->tunnel_url.port,
             why);
  cli->last_err = err;
  if (cli->dial) {
    wstun__conn_close(cli->dial);
    cli->dial = NULL;
  }
  if (cli->hs_init) {
    wstun__http_parser_free(&cli->hs);
    cli->hs_init = 0;
  }
  set_state(cli, WSTUN_CLIENT_DISCONNECTED, err);
  if (!cli->closing)
    schedule_reconnect(cli);
}

static int hs_on_head(void *ud, wstun__http_head *h) {
  wstun_client *cli = ud;
  (void)h;
  cli->hs_done = 1;
  return 1;
}

static int hs_on_complete(void *ud) {
  (void)ud;
  return 1;
}

static const wstun__http_parser_cbs hs_cbs = {
    .on_head = hs_on_head,
    .on_complete = hs_on_complete,
};

static void send_handshake(wstun_client *cli);

/* TCP is up (and the proxy's tunnel open): TLS next for wss://, then the
 * WebSocket handshake. */
static void transport_ready(wstun_client *cli) {
  if (cli->tunnel_tls == NULL) {
    send_handshake(cli);
    return;
  }
  cli->dial_phase = DIAL_TLS;
  if (wstun__conn_start_tls(cli->dial, cli->tunnel_tls, cli->tunnel_url.host) !=
      0)
    dial_fail(cli, WSTUN_ENOMEM, "out of memory");
}

static void dial_on_secure(wstun__conn *c, int status) {
  wstun_client *cli = c->owner;
  if (status != 0) {
    char why[256];
    snprintf(why, sizeof(why), "TLS: %s", wstun__conn_strerror(c, status));
    dial_fail(cli, status, why);
    return;
  }
  send_handshake(cli);
}

/* Feeds the answer of the proxy or the server; its head once complete,
 * else NULL (more to come, or the attempt failed with `bad`). */
static const wstun__http_head *dial_head(wstun_client *cli, const uint8_t *data,
                                         size_t len, size_t *used, int err,
                                         const char *bad) {
  *used = 0;
  if (wstun__http_parser_feed(&cli->hs, data, len, used) == WSTUN__HTTP_ERROR) {
    dial_fail(cli, err, bad);
    return NULL;
  }
  return cli->hs_done ? &cli->hs.head : NULL;
}

/* The proxy's answer to CONNECT: 2xx opens the way; anything else (407
 * without or with wrong credentials, 403, 502) is a failed attempt. */
static size_t proxy_on_data(wstun_client *cli, const uint8_t *data,
                            size_t len) {
  size_t used;
  const wstun__http_head *h = dial_head(cli, data, len, &used, WSTUN_ECONNECT,
                                        "bad answer from the proxy");
  if (h == NULL)
    return len;
  if (h->status < 200 || h->status > 299) {
    char why[200];
    snprintf(why, sizeof(why), "proxy answered %d %.120s", h->status,
             wstun__http_head_target(h));
    dial_fail(cli, WSTUN_ECONNECT, why);
    return len;
  }
  wstun__http_parser_free(&cli->hs);
  cli->hs_init = 0;
  if (used < len) {
    /* the server speaks only after we do: these bytes are the proxy's */
    dial_fail(cli, WSTUN_ECONNECT, "proxy sent data after its answer");
    return len;
  }
  transport_ready(cli);
  return len;
}

static size_t dial_on_data(wstun__conn *c, const uint8_t *data, size_t len) {
  wstun_client *cli = c->owner;
  if (cli->dial_phase == DIAL_PROXY)
    return proxy_on_data(cli, data, len);
  size_t used;
  const wstun__http_head *h = dial_head(cli, data, len, &used, WSTUN_EHANDSHAKE,
                                        "bad handshake response");
  if (h == NULL)
    return len;
  if (h->status != 101) {
    char why[160];
    snprintf(why, sizeof(why), "server answered %d %s", h->status,
             wstun__http_head_target(h));
    dial_fail(cli, WSTUN_EHANDSHAKE, why);
    return len;
  }
  if (wstun__ws_check_accept(h, cli->ws_key) != 0) {
    dial_fail(cli, WSTUN_EHANDSHAKE, "bad Sec-WebSocket-Accept");
    return len;
  }
  wstun__http_parser_free(&cli->hs);
  cli->hs_init = 0;
  uv_timer_stop(&cli->timer);
  wstun__conn *conn = cli->dial;
  cli->dial = NULL;
  uint64_t ping = cli->timeout_ms / 3;
  if (wstun__tunnel_start(&cli->t, cli->loop, conn, 0, &cli->rng, &cli->log,
                          ping ? ping : 1000, cli->timeout_ms, &cli_tunnel_cbs,
                          cli, data + used, len - used) != 0) {
    cli->dial = conn;
    dial_fail(cli, WSTUN_ENOMEM, "out of memory");
    return len;
  }
  /* the connection's place in `live` passes to the tunnel (on_freed) */
  cli->connected_at = uv_now(cli->loop);
  char red[12];
  wstun__log(&cli->log, WSTUN_LOG_INFO, "tunnel open to %s://%s:%d token=%s",
             cli->tunnel_url.scheme, cli->tunnel_url.host, cli->tunnel_url.port,
             wstun__redact(cli->token, red));
  set_state(cli, WSTUN_CLIENT_CONNECTED, 0);
  return len;
}

static void dial_on_end(wstun__conn *c, int err) {
  wstun_client *cli = c->owner;
  const char *who = cli->dial_phase == DIAL_PROXY ? "the proxy" : "the server";
  char why[256];
  if (err == UV_EOF)
    snprintf(why, sizeof(why), "%s closed the connection during the %s", who,
             cli->dial_phase == DIAL_PROXY ? "CONNECT" : "handshake");
  else
    snprintf(why, sizeof(why), "%s", wstun__conn_strerror(c, err));
  dial_fail(cli, WSTUN_ECLOSED, why);
}

static void dial_on_close(wstun__conn *c) {
  wstun_client *cli = c->owner;
  cli->live--;
  wstun__client_release(cli);
}

/* The request of this phase is queued: send it, then parse the answer's
 * head (dial_on_data). */
static void await_answer(wstun_client *cli, int phase) {
  wstun__http_parser_init(&cli->hs, HTTP_RESPONSE, HANDSHAKE_MAX_HEAD, 0,
                          &hs_cbs, cli);
  cli->hs_init = 1;
  cli->hs_done = 0;
  cli->dial_phase = phase;
  wstun__conn_flush(cli->dial);
  wstun__conn_start_read(cli->dial);
}

static void send_handshake(wstun_client *cli) {
  wstun__buf *out = wstun__conn_outbuf(cli->dial);
  char hostport[600];
  host_header(&cli->tunnel_url, hostport, sizeof(hostport));
  int krc = wstun__ws_new_key(&cli->rng, cli->ws_key);
  if (krc != 0) {
    dial_fail(cli, krc, "no randomness");
    return;
  }
  int rc = wstun__buf_appendf(out,
                              "GET %s HTTP/1.1\r\nHost: %s\r\n"
                              "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Version: 13\r\n"
                              "Sec-WebSocket-Key: %s\r\nOrigin: %s\r\n"
                              "X-Client-Version: %s\r\n",
                              cli->handshake_path, hostport, cli->ws_key,
                              cli->token, cli->client_version);
  if (cli->auth_header)
    rc |= wstun__buf_appendf(out, "Authorization: %s\r\n", cli->auth_header);
  if (cli->tunnel_auth_header)
    rc |= wstun__buf_appendf(out, "X-Tunnel-Authorization: %s\r\n",
                             cli->tunnel_auth_header);
  rc |= wstun__buf_append_str(out, "\r\n");
  if (rc != 0) {
    dial_fail(cli, WSTUN_ENOMEM, "out of memory");
    return;
  }
  await_answer(cli, DIAL_WS);
}

static void send_connect(wstun_client *cli) {
  if (wstun__proxy_connect_request(wstun__conn_outbuf(cli->dial),
                                   cli->tunnel_url.host, cli->tunnel_url.port,
                                   cli->proxy_auth) != 0) {
    dial_fail(cli, WSTUN_ENOMEM, "out of memory");
    return;
  }
  await_answer(cli, DIAL_PROXY);
}

static void dial_on_connect(wstun__conn *c, int status) {
  wstun_client *cli = c->owner;
  if (status != 0) {
    char why[200];
    if (cli->has_proxy)
      snprintf(why, sizeof(why), "proxy %s:%d: %s", cli->proxy_url.host,
               cli->proxy_url.port, uv_strerror(status));
    dial_fail(cli, WSTUN_ECONNECT, cli->has_proxy ? why : uv_strerror(status));
    return;
  }
  if (cli->has_proxy)
    send_connect(cli);
  else
    transport_ready(cli);
}

static const wstun__conn_cbs dial_conn_cbs = {
    .on_data = dial_on_data,
    .on_end = dial_on_end,
    .on_connect = dial_on_connect,
    .on_close = dial_on_close,
    .on_secure = dial_on_secure,
};

static void on_dial_timeout(uv_timer_t *t) {
  wstun_client *cli = t->data;
  if (cli->resolving) {
    uv_cancel((uv_req_t *)&cli->gai);
    return; /* on_resolved reports it */
  }
  dial_fail(cli, WSTUN_ETIMEDOUT, "timed out");
}

/* -client-ports: bind a socket to the first free port of the list and
 * give it to the connection. libuv reports EADDRINUSE only at connect
 * time, so the port is tried with a plain bind() first. */
static int bind_source_port(wstun_client *cli, wstun__conn *c, int family) {
  for (size_t i = 0; i < cli->nports; i++)
    for (unsigned port = cli->ports[i][0]; port <= cli->ports[i][1]; port++) {
      int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
      if (fd < 0)
        return -errno;
      struct sockaddr_storage ss;
      memset(&ss, 0, sizeof(ss));
      socklen_t len;
      if (family == AF_INET6) {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        len = sizeof(*a6);
      } else {
        struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        len = sizeof(*a4);
      }
      if (bind(fd, (struct sockaddr *)&ss, len) == 0) {
        int rc = uv_tcp_open(&c->tcp, fd);
        if (rc != 0)
          close(fd);
        return rc == 0 ? (int)port : rc;
      }
      int err = errno;
      close(fd);
      if (err != EADDRINUSE && err != EACCES)
        return -err;
    }
  return UV_EADDRINUSE;
}

static void connect_to(wstun_client *cli, const struct sockaddr *addr) {
  cli->dial = wstun__conn_new(cli->loop, &cli->shared, &dial_conn_cbs, cli);
  if (cli->dial == NULL) {
    dial_fail(cli, WSTUN_ENOMEM, "out of memory");
    return;
  }
  cli->live++;
  if (cli->nports) {
    int port = bind_source_port(cli, cli->dial, addr->sa_family);
    if (port < 0) {
      dial_fail(cli, WSTUN_ECONNECT,
                port == UV_EADDRINUSE ? "no free port in -client-ports"
                                      : uv_strerror(port));
      return;
    }
    wstun__log(&cli->log, WSTUN_LOG_DEBUG, "tunnel source port %d", port);
  }
  int rc = wstun__conn_connect(cli->dial, addr);
  if (rc != 0)
    dial_fail(cli, WSTUN_ECONNECT, uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  wstun_client *cli = req->data;
  cli->resolving = 0;
  cli->live--;
  if (cli->closing) {
    uv_freeaddrinfo(res);
    wstun__client_release(cli);
    return;
  }
  if (status != 0 || res == NULL) {
    uv_freeaddrinfo(res);
    dial_fail(cli, WSTUN_ECONNECT,
              status == UV_ECANCELED ? "name resolution timed out"
                                     : uv_strerror(status));
    return;
  }
  connect_to(cli, res->ai_addr);
  uv_freeaddrinfo(res);
}

static void dial(wstun_client *cli) {
  if (cli->closing)
    return;
  set_state(cli, WSTUN_CLIENT_CONNECTING, 0);
  uv_timer_start(&cli->timer, on_dial_timeout, cli->timeout_ms, 0);
  struct sockaddr_storage ss;
  cli->gai.data = cli;
  cli->dial_phase = DIAL_TCP;
  /* through a proxy, only the proxy's name is resolved here */
  const wstun__url *to = cli->has_proxy ? &cli->proxy_url : &cli->tunnel_url;
  int rc = wstun__resolve(cli->loop, to->host, to->port, &ss, &cli->gai,
                          on_resolved);
  if (rc == 1) {
    connect_to(cli, (struct sockaddr *)&ss);
    return;
  }
  if (rc != 0) {
    dial_fail(cli, WSTUN_ECONNECT, "cannot resolve");
    return;
  }
  cli->resolving = 1;
  cli->live++;
}

static void on_retry_timer(uv_timer_t *t) {
  dial(t->data);
}

static void schedule_reconnect(wstun_client *cli) {
  /* exponential backoff with full jitter; the first retry is quick */
  uint64_t base = FIRST_RETRY_MS;
  for (unsigned i = 0; i < cli->attempt && base < cli->reconnect_max_ms; i++)
    base *= 2;
  if (base > cli->reconnect_max_ms)
    base = cli->reconnect_max_ms;
  uint32_t r = 0;
  wstun__rng_bytes(&cli->rng, &r, sizeof(r));
  uint64_t delay = base / 2 + (base / 2 ? r % (base / 2 + 1) : 0);
  cli->attempt++;
  wstun__log(&cli->log, WSTUN_LOG_INFO, "reconnecting in %llu ms",
             (unsigned long long)delay);
  uv_timer_start(&cli->timer, on_retry_timer, delay, 0);
}

/* ---- start and close ---------------------------------------------------- */

/* "8000..8100,8300" → inclusive ranges; WSTUN_EPORTS if malformed. */
int wstun__parse_ports(const char *s, uint16_t (**out)[2], size_t *n) {
  *out = NULL;
  *n = 0;
  uint16_t(*r)[2] = wstun__calloc(wstun__list_bound(s), sizeof(*r));
  if (r == NULL)
    return WSTUN_ENOMEM;
  const char *cursor = s, *p;
  size_t len;
  while (wstun__list_next(&cursor, &p, &len)) {
    unsigned long v[2] = {0, 0};
    int k = 0;
    size_t i = 0;
    for (; k < 2; k++) {
      size_t start = i;
      while (i < len && p[i] >= '0' && p[i] <= '9') {
        v[k] = v[k] * 10 + (unsigned long)(p[i] - '0');
        if (v[k] > 65535)
          goto bad;
        i++;
      }
      if (i == start || v[k] == 0)
        goto bad;
      if (i == len) {
        if (k == 0)
          v[1] = v[0];
        break;
      }
      if (k == 1 || len - i < 3 || p[i] != '.' || p[i + 1] != '.')
        goto bad;
      i += 2;
    }
    if (i != len || v[1] < v[0])
      goto bad;
    r[*n][0] = (uint16_t)v[0];
    r[*n][1] = (uint16_t)v[1];
    (*n)++;
  }
  if (*n == 0)
    goto bad;
  *out = r;
  return 0;
bad:
  wstun__free(r);
  *n = 0;
  return WSTUN_EPORTS;
}

static void client_free(wstun_client *cli) {
  wstun__free(cli->ports);
  wstun__url_free(&cli->tunnel_url);
  wstun__url_free(&cli->server_url);
  if (cli->has_re)
    regfree(&cli->re);
  wstun__free(cli->handshake_path);
  wstun__free(cli->token);
  if (cli->password) {
    memset(cli->password, 0, strlen(cli->password));
    wstun__free(cli->password);
  }
  wstun__free(cli->auth_header);
  wstun__free(cli->tunnel_auth_header);
  wstun__free(cli->client_version);
  wstun__tls_config_unref(cli->tunnel_tls);
  wstun__tls_config_unref(cli->backend_tls);
  wstun__free(cli->ca_file);
  if (cli->proxy_url.userinfo)
    memset(cli->proxy_url.userinfo, 0, strlen(cli->proxy_url.userinfo));
  wstun__url_free(&cli->proxy_url);
  if (cli->proxy_auth) {
    memset(cli->proxy_auth, 0, strlen(cli->proxy_auth));
    wstun__free(cli->proxy_auth);
  }
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

void wstun__client_release(wstun_client *cli) {
  if (!cli->closing || cli->live > 0 || cli->released)
    return;
  /* everything else is gone: the write flusher goes last */
  cli->released = 1;
  wstun__conn_shared_close(&cli->shared, on_flusher_closed, cli);
}

static void on_timer_closed(uv_handle_t *h) {
  wstun_client *cli = h->data;
  cli->live--;
  wstun__client_release(cli);
}

static void close_now(wstun_client *cli) {
  if (cli->closed_now)
    return;
  cli->closed_now = 1;
  uv_timer_stop(&cli->timer);
  uv_close((uv_handle_t *)&cli->timer, on_timer_closed);
  if (cli->resolving)
    uv_cancel((uv_req_t *)&cli->gai);
  if (cli->dial) {
    wstun__conn_close(cli->dial);
    cli->dial = NULL;
  }
  if (cli->hs_init) {
    wstun__http_parser_free(&cli->hs);
    cli->hs_init = 0;
  }
  if (cli->t)
    wstun__tunnel_close(cli->t, WSTUN_ECLOSED);
  for (wstun_request *req = cli->reqs, *next; req; req = next) {
    next = req->next;
    req->t = NULL;
    wstun__client_req_done(req);
  }
  wstun__upstream_close_all(cli);
  wstun__client_release(cli);
}

static void on_grace_check(uv_timer_t *t) {
  wstun_client *cli = t->data;
  if (cli->reqs == NULL || cli->t == NULL ||
      uv_now(cli->loop) >= cli->grace_deadline)
    close_now(cli);
}

void wstun_client_close(wstun_client *cli, unsigned grace_ms,
                        wstun_client_close_cb cb, void *user_data) {
  if (cli == NULL || cli->closing)
    return;
  cli->closing = 1;
  cli->close_cb = cb;
  cli->close_ud = user_data;
  if (cli->reqs == NULL || cli->t == NULL || grace_ms == 0) {
    close_now(cli);
    return;
  }
  /* requests in progress may finish; no new tunnel is dialed meanwhile */
  cli->grace_deadline = uv_now(cli->loop) + grace_ms;
  uv_timer_start(&cli->timer, on_grace_check, 50, 50);
}

static char *basic_auth(const char *user, const char *pass) {
  size_t n = strlen(user) + 1 + strlen(pass);
  char *raw = wstun__malloc(n + 1);
  if (raw == NULL)
    return NULL;
  snprintf(raw, n + 1, "%s:%s", user, pass);
  char *b64 = NULL;
  int rc = wstun__base64_encode(raw, n, &b64);
  memset(raw, 0, n);
  wstun__free(raw);
  if (rc != 0)
    return NULL;
  char *h = wstun__malloc(strlen(b64) + 7);
  if (h)
    snprintf(h, strlen(b64) + 7, "Basic %s", b64);
  memset(b64, 0, strlen(b64));
  wstun__free(b64);
  return h;
}

/* The Basic header for a URL's "user:password" (or "user"), as curl
 * sends it. NULL when out of memory. */
static char *basic_auth_userinfo(const char *ui) {
  const char *colon = strchr(ui, ':');
  if (colon == NULL)
    return basic_auth(ui, "");
  char *user = wstun__strndup(ui, (size_t)(colon - ui));
  char *h = user ? basic_auth(user, colon + 1) : NULL;
  wstun__free(user);
  return h;
}

static int setup_tls_and_proxy(wstun_client *cli,
                               const wstun_client_config *cfg) {
  cli->insecure_backends = cfg->insecure_backends;
  if (cfg->ca_file && *cfg->ca_file) {
    cli->ca_file = wstun__strdup(cfg->ca_file);
    if (cli->ca_file == NULL)
      return WSTUN_ENOMEM;
  }
  char why[400];
  if (wstun__url_is_tls(&cli->tunnel_url)) {
    int rc = wstun__tls_client_config(&cli->tunnel_tls, cli->ca_file, 1, why,
                                      sizeof(why));
    if (rc != 0) {
      wstun__log(&cli->log, WSTUN_LOG_ERROR, "TLS: %s", why);
      return rc;
    }
    wstun__tls_config_modern(cli->tunnel_tls);
  } else if (cli->ca_file &&
             wstun__client_backend_tls(cli, why, sizeof(why)) == NULL) {
    /* only backends use it: still, a bad file is an error at start */
    wstun__log(&cli->log, WSTUN_LOG_ERROR, "TLS: %s", why);
    return WSTUN_ETLS;
  }
  const char *proxy = cfg->proxy_url;
  int from_env = 0;
  if ((proxy == NULL || *proxy == '\0') && cfg->proxy_from_env) {
    proxy = wstun__proxy_from_env(cli->tunnel_url.scheme, cli->tunnel_url.host);
    from_env = 1;
  }
  if (proxy == NULL || *proxy == '\0')
    return 0;
  /* "host:port" means http://host:port, as for curl */
  const char *sep = strstr(proxy, "://");
  char url[1024];
  snprintf(url, sizeof(url), "%s%s", sep ? "" : "http://", proxy);
  int rc = wstun__url_parse(url, &cli->proxy_url);
  if (rc == 0 && strcmp(cli->proxy_url.scheme, "http") != 0)
    rc = WSTUN_EURL; /* TLS to the proxy itself is not supported */
  if (rc != 0 && from_env) {
    /* a desktop's all_proxy=socks5://... must not stop the tunnel; the
     * value may hold credentials, so only its scheme is named */
    wstun__log(&cli->log, WSTUN_LOG_WARN,
               "ignoring the proxy from the environment (%.*s): only "
               "http://host:port proxies are supported; connecting directly",
               (int)(sep ? sep - proxy + 3 : 0), proxy);
    wstun__url_free(&cli->proxy_url);
    return 0;
  }
  if (rc != 0)
    return rc;
  cli->has_proxy = 1;
  if (cli->proxy_url.userinfo) {
    cli->proxy_auth = basic_auth_userinfo(cli->proxy_url.userinfo);
    if (cli->proxy_auth == NULL)
      return WSTUN_ENOMEM;
  }
  wstun__log(&cli->log, WSTUN_LOG_INFO, "tunnel goes through proxy %s:%d%s",
             cli->proxy_url.host, cli->proxy_url.port,
             cli->proxy_auth ? " (with credentials)" : "");
  return 0;
}

wstun__tls_config *wstun__client_backend_tls(wstun_client *cli, char *why,
                                             size_t n) {
  if (cli->backend_tls == NULL &&
      wstun__tls_client_config(&cli->backend_tls, cli->ca_file,
                               !cli->insecure_backends, why, n) != 0)
    return NULL;
  return cli->backend_tls;
}

static int client_setup(wstun_client *cli, const wstun_client_config *cfg) {
  if (cfg->token == NULL || strlen(cfg->token) < 16 || cfg->tunnel_url == NULL)
    return WSTUN_EINVAL;
  for (const char *p = cfg->token; *p; p++)
    if ((unsigned char)*p < 0x21 || *p == 0x7f)
      return WSTUN_EINVAL;
  int rc = wstun__url_parse(cfg->tunnel_url, &cli->tunnel_url);
  if (rc != 0)
    return rc;
  if (strcmp(cli->tunnel_url.scheme, "ws") != 0 &&
      strcmp(cli->tunnel_url.scheme, "wss") != 0)
    return WSTUN_EURL;
  /* the URL's path is the server's base path */
  const char *path = cli->tunnel_url.path;
  size_t plen = strcspn(path, "?");
  while (plen > 0 && path[plen - 1] == '/')
    plen--;
  cli->handshake_path = wstun__malloc(plen + sizeof("/_tunnel"));
  if (cli->handshake_path == NULL)
    return WSTUN_ENOMEM;
  memcpy(cli->handshake_path, path, plen);
  memcpy(cli->handshake_path + plen, "/_tunnel", sizeof("/_tunnel"));
  if (cfg->server_url && *cfg->server_url) {
    rc = wstun__url_parse(cfg->server_url, &cli->server_url);
    if (rc != 0)
      return rc;
    if (strcmp(cli->server_url.scheme, "http") != 0 &&
        strcmp(cli->server_url.scheme, "https") != 0)
      return WSTUN_EURL;
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
    rc = wstun__parse_ports(cfg->client_ports, &cli->ports, &cli->nports);
    if (rc != 0)
      return rc;
  }
  rc = setup_tls_and_proxy(cli, cfg);
  if (rc != 0)
    return rc;
  cli->token = wstun__strdup(cfg->token);
  cli->client_version =
      wstun__strdup(cfg->client_version ? cfg->client_version
                                        : "wstun " WSTUN_VERSION_STRING);
  if (cli->token == NULL || cli->client_version == NULL)
    return WSTUN_ENOMEM;
  char *url_auth = NULL;
  if (cli->tunnel_url.userinfo) {
    url_auth = basic_auth_userinfo(cli->tunnel_url.userinfo);
    if (url_auth == NULL)
      return WSTUN_ENOMEM;
  }
  if (cfg->password && *cfg->password) {
    cli->password = wstun__strdup(cfg->password);
    cli->auth_header = basic_auth(cli->token, cfg->password);
    if (cli->password == NULL || cli->auth_header == NULL) {
      wstun__free(url_auth);
      return WSTUN_ENOMEM;
    }
    cli->tunnel_auth_header = url_auth;
  } else {
    cli->auth_header = url_auth;
  }
  cli->timeout_ms =
      (uint64_t)(cfg->timeout_sec > 0 ? cfg->timeout_sec : 30) * 1000;
  cli->backend_timeout_ms =
      (uint64_t)(cfg->backend_timeout_sec > 0 ? cfg->backend_timeout_sec
                                              : 1200) *
      1000;
  cli->stall_ms =
      (uint64_t)(cfg->stall_timeout_sec > 0 ? cfg->stall_timeout_sec : 10) *
      1000;
  cli->reconnect_max_ms =
      (uint64_t)(cfg->reconnect_max_ms > 0 ? cfg->reconnect_max_ms : 30000);
  cli->max_idle =
      cfg->max_idle_per_backend > 0 ? (size_t)cfg->max_idle_per_backend : 256;
  cli->backend_idle_ms =
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

int wstun_client_start(uv_loop_t *loop, const wstun_client_config *cfg,
                       wstun_client **out) {
  if (loop == NULL || cfg == NULL || out == NULL)
    return WSTUN_EINVAL;
  wstun_client *cli = wstun__calloc(1, sizeof(*cli));
  if (cli == NULL)
    return WSTUN_ENOMEM;
  cli->loop = loop;
  cli->log.level = cfg->log_level;
  cli->log.cb = cfg->log_cb;
  cli->log.user_data = cfg->log_user_data;
  int rc = wstun__rng_init(&cli->rng);
  if (rc != 0) {
    wstun__free(cli);
    return rc;
  }
  rc = client_setup(cli, cfg);
  if (rc != 0) {
    client_free(cli);
    return rc;
  }
  wstun__conn_shared_init(&cli->shared, loop);
  uv_timer_init(loop, &cli->timer);
  cli->timer.data = cli;
  cli->live = 1; /* the timer */
  cli->state = WSTUN_CLIENT_CONNECTING;
  *out = cli;
  dial(cli);
  return 0;
}
