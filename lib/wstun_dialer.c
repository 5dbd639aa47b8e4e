/* The dialer (see wstun_dialer.h): one attempt at a time from resolving
 * to the WebSocket upgrade, the attempt's deadline, and the backoff
 * between attempts. Owns the attempt's connection until the handshake
 * succeeds, its timer and resolver, and the dial configuration; hands the
 * upgraded connection to its owner and never sees a request. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "wstun_alloc.h"
#include "wstun_dialer.h"
#include "wstun_list.h"
#include "wstun_proxy.h"
#include "wstun_util.h"
#include "wstun_v2.h"
#include "wstun_ws.h"

#define HANDSHAKE_MAX_HEAD (64 * 1024)

static void dial(wstun__dialer *d);

/* ---- pure pieces -------------------------------------------------------- */

uint64_t wstun__dialer_backoff(unsigned attempt, uint64_t max_ms, uint32_t r) {
  /* exponential backoff with full jitter; the first retry is quick */
  uint64_t base = WSTUN__DIAL_FIRST_RETRY_MS;
  for (unsigned i = 0; i < attempt && base < max_ms; i++)
    base *= 2;
  if (base > max_ms)
    base = max_ms;
  return base / 2 + (base / 2 ? r % (base / 2 + 1) : 0);
}

static int hs_on_head(void *ud, wstun__http_head *h) {
  wstun__dialer *d = ud;
  d->hs_done = 1;
  /* the server refuses (401, 429 …): its body says why; read it when it
   * has a framed one (a body that runs to the close is not waited for) */
  if (d->state == WSTUN__DIAL_HANDSHAKE && h->status >= 200 &&
      ((h->has_content_length && h->content_length > 0) || h->chunked)) {
    d->hs_body_wait = 1;
    return 0;
  }
  return 1;
}

static int hs_on_body(void *ud, const uint8_t *data, size_t len) {
  wstun__dialer *d = ud;
  size_t room = sizeof(d->hs_body) - d->hs_body_len;
  size_t n = len < room ? len : room;
  memcpy(d->hs_body + d->hs_body_len, data, n);
  d->hs_body_len += n;
  return 0;
}

static int hs_on_complete(void *ud) {
  wstun__dialer *d = ud;
  d->hs_body_done = 1;
  return 1;
}

static const wstun__http_parser_cbs hs_cbs = {
    .on_head = hs_on_head,
    .on_body = hs_on_body,
    .on_complete = hs_on_complete,
};

/* "server answered 401 Unauthorized: Invalid token or password", with the
 * body's first line (control bytes as '?'), and for a 401 a hint at the
 * password, the usual cause. */
static void refusal_why(const wstun__dialer *d, char *why, size_t whyn) {
  const wstun__http_head *h = &d->hs.head;
  char body[WSTUN__DIAL_WHY_BODY + 1];
  size_t n = 0;
  for (; n < d->hs_body_len && d->hs_body[n] != '\n' && d->hs_body[n] != '\r';
       n++) {
    unsigned char c = (unsigned char)d->hs_body[n];
    body[n] = c < 0x20 || c == 0x7f ? '?' : (char)c;
  }
  body[n] = '\0';
  const char *hint = "";
  if (h->status == 401)
    hint = d->cfg.auth_header ? "; the token's password was refused (wstuncli: "
                                "-token TOKEN:PASSWORD, -password-file or "
                                "WSTUNNEL_PASSWORD)"
                              : "; no password was sent and the server wants "
                                "one for this token (wstuncli: -token "
                                "TOKEN:PASSWORD, -password-file or "
                                "WSTUNNEL_PASSWORD)";
  snprintf(why, whyn, "server answered %d %.100s%s%s%s", h->status,
           wstun__http_head_target(h), n ? ": " : "", body, hint);
}

int wstun__dialer_expect(wstun__dialer *d, wstun__dial_state phase) {
  wstun__dialer_answer_done(d);
  wstun__http_parser_init(&d->hs, HTTP_RESPONSE, HANDSHAKE_MAX_HEAD, 0, &hs_cbs,
                          d);
  d->hs_init = 1;
  d->hs_done = 0;
  d->hs_body_wait = d->hs_body_done = 0;
  d->hs_body_len = 0;
  d->state = phase;
  return 0;
}

void wstun__dialer_answer_done(wstun__dialer *d) {
  if (d->hs_init) {
    wstun__http_parser_free(&d->hs);
    d->hs_init = 0;
  }
}

int wstun__dialer_feed(wstun__dialer *d, const uint8_t *data, size_t len,
                       size_t *used, char *why, size_t whyn) {
  int proxy = d->state == WSTUN__DIAL_PROXY;
  *used = 0;
  if (wstun__http_parser_feed(&d->hs, data, len, used) == WSTUN__HTTP_ERROR) {
    if (!proxy && d->hs_body_wait) /* a refusal with a bad body: still one */
      refusal_why(d, why, whyn);
    else
      snprintf(why, whyn, "%s",
               proxy ? "bad answer from the proxy" : "bad handshake response");
    return proxy ? WSTUN_ECONNECT : WSTUN_EHANDSHAKE;
  }
  if (!d->hs_done)
    return 0;
  const wstun__http_head *h = &d->hs.head;
  if (proxy) {
    /* 2xx opens the way; anything else (407 without or with wrong
     * credentials, 403, 502) is a failed attempt */
    if (h->status < 200 || h->status > 299) {
      char tmp[200];
      snprintf(tmp, sizeof(tmp), "proxy answered %d %.120s", h->status,
               wstun__http_head_target(h));
      snprintf(why, whyn, "%s", tmp);
      return WSTUN_ECONNECT;
    }
    if (*used < len) {
      /* the server speaks only after we do: these bytes are the proxy's */
      snprintf(why, whyn, "proxy sent data after its answer");
      return WSTUN_ECONNECT;
    }
    return 1;
  }
  if (h->status != 101) {
    if (d->hs_body_wait && !d->hs_body_done &&
        d->hs_body_len < sizeof(d->hs_body))
      return 0; /* the rest of the refusal's body */
    refusal_why(d, why, whyn);
    return WSTUN_EHANDSHAKE;
  }
  if (wstun__ws_check_accept(h, d->ws_key) != 0) {
    snprintf(why, whyn, "bad Sec-WebSocket-Accept");
    return WSTUN_EHANDSHAKE;
  }
  /* no subprotocol in the 101: a v1 server (the Go one), v1 on this same
   * connection; one we did not offer: a failed handshake (RFC 6455 4.1) */
  if (wstun__ws_check_protocol(
          h, d->cfg.offer_v2 ? WSTUN__V2_SUBPROTOCOL : NULL, &d->v2) != 0) {
    snprintf(why, whyn, "server chose a subprotocol we did not offer");
    return WSTUN_EHANDSHAKE;
  }
  return 1;
}

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

/* ---- an attempt --------------------------------------------------------- */

static void set_state(wstun__dialer *d, wstun__dial_state s) {
  d->state = s;
}

static void on_retry_timer(uv_timer_t *t) {
  dial(t->data);
}

static void schedule_reconnect(wstun__dialer *d) {
  uint32_t r = 0;
  wstun__rng_bytes(d->rng, &r, sizeof(r));
  uint64_t delay =
      wstun__dialer_backoff(d->attempt, d->cfg.reconnect_max_ms, r);
  d->attempt++;
  wstun__log(d->log, WSTUN_LOG_INFO, "reconnecting in %llu ms",
             (unsigned long long)delay);
  set_state(d, WSTUN__DIAL_BACKOFF);
  uv_timer_start(&d->timer, on_retry_timer, delay, 0);
}

static void dial_fail(wstun__dialer *d, int err, const char *why) {
  const wstun__url *u = &d->cfg.tunnel_url;
  wstun__log(d->log, WSTUN_LOG_WARN, "cannot open tunnel to %s://%s:%d: %s",
             u->scheme, u->host, u->port, why);
  if (d->conn) {
    wstun__conn_close(d->conn);
    d->conn = NULL;
  }
  wstun__dialer_answer_done(d);
  set_state(d, WSTUN__DIAL_IDLE);
  d->cbs->on_state(d->owner, WSTUN_CLIENT_DISCONNECTED, err);
  if (!d->stopped)
    schedule_reconnect(d);
}

static void send_handshake(wstun__dialer *d);

/* TCP is up (and the proxy's tunnel open): TLS next for wss://, then the
 * WebSocket handshake. */
static void transport_ready(wstun__dialer *d) {
  if (d->cfg.tls == NULL) {
    send_handshake(d);
    return;
  }
  set_state(d, WSTUN__DIAL_TLS);
  /* a redial resumes the last session with this server: one round trip,
   * no key exchange (the name checked is the host, so it is in the key) */
  const wstun__url *u = &d->cfg.tunnel_url;
  char key[300];
  snprintf(key, sizeof(key), "%s:%d", u->host, u->port);
  if (wstun__conn_start_tls_resume(d->conn, d->cfg.tls, u->host, key) != 0)
    dial_fail(d, WSTUN_ENOMEM, "out of memory");
}

static void dial_on_secure(wstun__conn *c, int status) {
  wstun__dialer *d = c->owner;
  if (status != 0) {
    char why[256];
    snprintf(why, sizeof(why), "TLS: %s", wstun__conn_strerror(c, status));
    dial_fail(d, status, why);
    return;
  }
  wstun__log(d->log, WSTUN_LOG_DEBUG, "TLS: %s (%llu of %llu resumed)",
             c->tls->resumed ? "session resumed" : "full handshake",
             (unsigned long long)d->cfg.tls->resumed,
             (unsigned long long)d->cfg.tls->handshakes);
  send_handshake(d);
}

/* The upgrade succeeded: the connection goes to the owner. */
static void upgraded(wstun__dialer *d, const uint8_t *rest, size_t n) {
  wstun__dialer_answer_done(d);
  uv_timer_stop(&d->timer);
  wstun__conn *conn = d->conn;
  d->conn = NULL;
  if (d->cbs->on_upgraded(d->owner, conn, rest, n) != 0) {
    d->conn = conn;
    dial_fail(d, WSTUN_ENOMEM, "out of memory");
    return;
  }
  d->conns--; /* its on_close is the new owner's now */
  set_state(d, WSTUN__DIAL_CONNECTED);
  d->connected_at = uv_now(d->loop);
  char red[12];
  const wstun__url *u = &d->cfg.tunnel_url;
  wstun__log(d->log, WSTUN_LOG_INFO,
             "tunnel open to %s://%s:%d token=%s protocol=%s", u->scheme,
             u->host, u->port, wstun__redact(d->cfg.token, red),
             d->v2 ? "v2" : "v1");
  d->cbs->on_state(d->owner, WSTUN_CLIENT_CONNECTED, 0);
}

static size_t dial_on_data(wstun__conn *c, const uint8_t *data, size_t len) {
  wstun__dialer *d = c->owner;
  size_t used;
  char why[512];
  int rc = wstun__dialer_feed(d, data, len, &used, why, sizeof(why));
  if (rc < 0)
    dial_fail(d, rc, why);
  else if (rc == 1 && d->state == WSTUN__DIAL_PROXY) {
    wstun__dialer_answer_done(d);
    transport_ready(d);
  } else if (rc == 1)
    upgraded(d, data + used, len - used);
  return len;
}

static void dial_on_end(wstun__conn *c, int err) {
  wstun__dialer *d = c->owner;
  int proxy = d->state == WSTUN__DIAL_PROXY;
  char why[512];
  if (!proxy && d->hs_init && d->hs_done && d->hs.head.status != 101) {
    refusal_why(d, why, sizeof(why)); /* closed in the refusal's body */
    dial_fail(d, WSTUN_EHANDSHAKE, why);
    return;
  }
  if (err == UV_EOF)
    snprintf(why, sizeof(why), "%s closed the connection during the %s",
             proxy ? "the proxy" : "the server",
             proxy ? "CONNECT" : "handshake");
  else
    snprintf(why, sizeof(why), "%s", wstun__conn_strerror(c, err));
  dial_fail(d, WSTUN_ECLOSED, why);
}

static void dial_on_close(wstun__conn *c) {
  wstun__dialer *d = c->owner;
  d->conns--;
  if (d->closing)
    wstun__closer_done(&d->closer);
}

/* The request of this phase is queued: send it, then parse the answer's
 * head (dial_on_data). */
static void await_answer(wstun__dialer *d, wstun__dial_state phase) {
  wstun__dialer_expect(d, phase);
  wstun__conn_flush(d->conn);
  wstun__conn_start_read(d->conn);
}

static void send_handshake(wstun__dialer *d) {
  const wstun__dialer_config *cfg = &d->cfg;
  wstun__buf *out = wstun__conn_outbuf(d->conn);
  char hostport[600];
  wstun__url_host_header(&cfg->tunnel_url, hostport, sizeof(hostport));
  int krc = wstun__ws_new_key(d->rng, d->ws_key);
  if (krc != 0) {
    dial_fail(d, krc, "no randomness");
    return;
  }
  int rc = wstun__buf_appendf(out,
                              "GET %s HTTP/1.1\r\nHost: %s\r\n"
                              "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Version: 13\r\n"
                              "Sec-WebSocket-Key: %s\r\nOrigin: %s\r\n"
                              "X-Client-Version: %s\r\n",
                              cfg->handshake_path, hostport, d->ws_key,
                              cfg->token, cfg->client_version);
  if (cfg->offer_v2)
    rc |= wstun__buf_append_str(
        out, "Sec-WebSocket-Protocol: " WSTUN__V2_SUBPROTOCOL "\r\n");
  if (cfg->auth_header)
    rc |= wstun__buf_appendf(out, "Authorization: %s\r\n", cfg->auth_header);
  if (cfg->tunnel_auth_header)
    rc |= wstun__buf_appendf(out, "X-Tunnel-Authorization: %s\r\n",
                             cfg->tunnel_auth_header);
  rc |= wstun__buf_append_str(out, "\r\n");
  if (rc != 0) {
    dial_fail(d, WSTUN_ENOMEM, "out of memory");
    return;
  }
  await_answer(d, WSTUN__DIAL_HANDSHAKE);
}

static void send_connect(wstun__dialer *d) {
  if (wstun__proxy_connect_request(
          wstun__conn_outbuf(d->conn), d->cfg.tunnel_url.host,
          d->cfg.tunnel_url.port, d->cfg.proxy_auth) != 0) {
    dial_fail(d, WSTUN_ENOMEM, "out of memory");
    return;
  }
  await_answer(d, WSTUN__DIAL_PROXY);
}

static void dial_on_connect(wstun__conn *c, int status) {
  wstun__dialer *d = c->owner;
  const wstun__dialer_config *cfg = &d->cfg;
  if (status != 0) {
    char why[200];
    if (cfg->has_proxy)
      snprintf(why, sizeof(why), "proxy %s:%d: %s", cfg->proxy_url.host,
               cfg->proxy_url.port, uv_strerror(status));
    dial_fail(d, WSTUN_ECONNECT, cfg->has_proxy ? why : uv_strerror(status));
    return;
  }
  if (cfg->has_proxy)
    send_connect(d);
  else
    transport_ready(d);
}

static const wstun__conn_cbs dial_conn_cbs = {
    .on_data = dial_on_data,
    .on_end = dial_on_end,
    .on_connect = dial_on_connect,
    .on_close = dial_on_close,
    .on_secure = dial_on_secure,
};

static void on_dial_timeout(uv_timer_t *t) {
  wstun__dialer *d = t->data;
  if (d->resolving) {
    uv_cancel((uv_req_t *)&d->gai);
    return; /* on_resolved reports it */
  }
  dial_fail(d, WSTUN_ETIMEDOUT, "timed out");
}

/* -client-ports: bind a socket to the first free port of the list and
 * give it to the connection. libuv reports EADDRINUSE only at connect
 * time, so the port is tried with a plain bind() first. */
static int bind_source_port(wstun__dialer *d, wstun__conn *c, int family) {
  for (size_t i = 0; i < d->cfg.nports; i++)
    for (unsigned port = d->cfg.ports[i][0]; port <= d->cfg.ports[i][1];
         port++) {
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

static void connect_to(wstun__dialer *d, const struct sockaddr *addr) {
  set_state(d, WSTUN__DIAL_CONNECTING);
  d->conn = wstun__conn_new(d->loop, d->shared, &dial_conn_cbs, d);
  if (d->conn == NULL) {
    dial_fail(d, WSTUN_ENOMEM, "out of memory");
    return;
  }
  d->conns++;
  if (d->cfg.nports) {
    int port = bind_source_port(d, d->conn, addr->sa_family);
    if (port < 0) {
      dial_fail(d, WSTUN_ECONNECT,
                port == UV_EADDRINUSE ? "no free port in -client-ports"
                                      : uv_strerror(port));
      return;
    }
    wstun__log(d->log, WSTUN_LOG_DEBUG, "tunnel source port %d", port);
  }
  int rc = wstun__conn_connect(d->conn, addr);
  if (rc != 0)
    dial_fail(d, WSTUN_ECONNECT, uv_strerror(rc));
}

static void on_resolved(uv_getaddrinfo_t *req, int status,
                        struct addrinfo *res) {
  wstun__dialer *d = req->data;
  d->resolving = 0;
  if (d->closing) {
    uv_freeaddrinfo(res);
    wstun__closer_done(&d->closer);
    return;
  }
  if (status != 0 || res == NULL) {
    uv_freeaddrinfo(res);
    dial_fail(d, WSTUN_ECONNECT,
              status == UV_ECANCELED ? "name resolution timed out"
                                     : uv_strerror(status));
    return;
  }
  connect_to(d, res->ai_addr);
  uv_freeaddrinfo(res);
}

static void dial(wstun__dialer *d) {
  if (d->stopped)
    return;
  d->cbs->on_state(d->owner, WSTUN_CLIENT_CONNECTING, 0);
  uv_timer_start(&d->timer, on_dial_timeout, d->cfg.timeout_ms, 0);
  struct sockaddr_storage ss;
  d->gai.data = d;
  set_state(d, WSTUN__DIAL_RESOLVING);
  /* through a proxy, only the proxy's name is resolved here */
  const wstun__url *to =
      d->cfg.has_proxy ? &d->cfg.proxy_url : &d->cfg.tunnel_url;
  int rc =
      wstun__resolve(d->loop, to->host, to->port, &ss, &d->gai, on_resolved);
  if (rc == 1) {
    connect_to(d, (struct sockaddr *)&ss);
    return;
  }
  if (rc != 0) {
    dial_fail(d, WSTUN_ECONNECT, "cannot resolve");
    return;
  }
  d->resolving = 1;
}

/* ---- configuration ------------------------------------------------------ */

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

int wstun__dialer_config_url(wstun__dialer_config *dc, const char *tunnel_url) {
  int rc = wstun__url_parse(tunnel_url, &dc->tunnel_url);
  if (rc != 0)
    return rc;
  if (strcmp(dc->tunnel_url.scheme, "ws") != 0 &&
      strcmp(dc->tunnel_url.scheme, "wss") != 0)
    return WSTUN_EURL;
  /* the URL's path is the server's base path */
  const char *path = dc->tunnel_url.path;
  size_t plen = strcspn(path, "?");
  while (plen > 0 && path[plen - 1] == '/')
    plen--;
  dc->handshake_path = wstun__malloc(plen + sizeof("/_tunnel"));
  if (dc->handshake_path == NULL)
    return WSTUN_ENOMEM;
  memcpy(dc->handshake_path, path, plen);
  memcpy(dc->handshake_path + plen, "/_tunnel", sizeof("/_tunnel"));
  return 0;
}

int wstun__dialer_config_transport(wstun__dialer_config *dc,
                                   const char *ca_file, const char *proxy,
                                   int from_env, const wstun__logger *log) {
  if (wstun__url_is_tls(&dc->tunnel_url)) {
    char why[400];
    int rc = wstun__tls_client_config(&dc->tls, ca_file, 1, why, sizeof(why));
    if (rc != 0) {
      wstun__log(log, WSTUN_LOG_ERROR, "TLS: %s", why);
      return rc;
    }
    wstun__tls_config_modern(dc->tls);
  }
  if ((proxy == NULL || *proxy == '\0') && from_env)
    proxy = wstun__proxy_from_env(dc->tunnel_url.scheme, dc->tunnel_url.host);
  else
    from_env = 0;
  if (proxy == NULL || *proxy == '\0')
    return 0;
  /* "host:port" means http://host:port, as for curl */
  const char *sep = strstr(proxy, "://");
  char url[1024];
  snprintf(url, sizeof(url), "%s%s", sep ? "" : "http://", proxy);
  int rc = wstun__url_parse(url, &dc->proxy_url);
  if (rc == 0 && strcmp(dc->proxy_url.scheme, "http") != 0)
    rc = WSTUN_EURL; /* TLS to the proxy itself is not supported */
  if (rc != 0 && from_env) {
    /* a desktop's all_proxy=socks5://... must not stop the tunnel; the
     * value may hold credentials, so only its scheme is named */
    wstun__log(log, WSTUN_LOG_WARN,
               "ignoring the proxy from the environment (%.*s): only "
               "http://host:port proxies are supported; connecting directly",
               (int)(sep ? sep - proxy + 3 : 0), proxy);
    wstun__url_free(&dc->proxy_url);
    return 0;
  }
  if (rc != 0)
    return rc;
  dc->has_proxy = 1;
  if (dc->proxy_url.userinfo) {
    dc->proxy_auth = basic_auth_userinfo(dc->proxy_url.userinfo);
    if (dc->proxy_auth == NULL)
      return WSTUN_ENOMEM;
  }
  wstun__log(log, WSTUN_LOG_INFO, "tunnel goes through proxy %s:%d%s",
             dc->proxy_url.host, dc->proxy_url.port,
             dc->proxy_auth ? " (with credentials)" : "");
  return 0;
}

int wstun__dialer_config_auth(wstun__dialer_config *dc, const char *token,
                              const char *password,
                              const char *client_version) {
  dc->token = wstun__strdup(token);
  dc->client_version = wstun__strdup(client_version);
  if (dc->token == NULL || dc->client_version == NULL)
    return WSTUN_ENOMEM;
  char *url_auth = NULL;
  if (dc->tunnel_url.userinfo) {
    url_auth = basic_auth_userinfo(dc->tunnel_url.userinfo);
    if (url_auth == NULL)
      return WSTUN_ENOMEM;
  }
  if (password && *password) {
    dc->password = wstun__strdup(password);
    dc->auth_header = basic_auth(dc->token, password);
    if (dc->password == NULL || dc->auth_header == NULL) {
      wstun__free(url_auth);
      return WSTUN_ENOMEM;
    }
    dc->tunnel_auth_header = url_auth;
  } else {
    dc->auth_header = url_auth;
  }
  return 0;
}

/* ---- the owner's calls -------------------------------------------------- */

void wstun__dialer_config_free(wstun__dialer_config *cfg) {
  wstun__free(cfg->ports);
  if (cfg->password) {
    memset(cfg->password, 0, strlen(cfg->password));
    wstun__free(cfg->password);
  }
  wstun__url_free(&cfg->tunnel_url);
  wstun__free(cfg->handshake_path);
  wstun__free(cfg->token);
  wstun__free(cfg->auth_header);
  wstun__free(cfg->tunnel_auth_header);
  wstun__free(cfg->client_version);
  wstun__tls_config_unref(cfg->tls);
  if (cfg->proxy_url.userinfo)
    memset(cfg->proxy_url.userinfo, 0, strlen(cfg->proxy_url.userinfo));
  wstun__url_free(&cfg->proxy_url);
  if (cfg->proxy_auth) {
    memset(cfg->proxy_auth, 0, strlen(cfg->proxy_auth));
    wstun__free(cfg->proxy_auth);
  }
  memset(cfg, 0, sizeof(*cfg));
}

void wstun__dialer_init(wstun__dialer *d, uv_loop_t *loop,
                        wstun__conn_shared *shared, wstun__rng *rng,
                        const wstun__logger *log, const wstun__dialer_cbs *cbs,
                        void *owner) {
  d->loop = loop;
  d->shared = shared;
  d->rng = rng;
  d->log = log;
  d->cbs = cbs;
  d->owner = owner;
  d->state = WSTUN__DIAL_IDLE;
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
}

void wstun__dialer_start(wstun__dialer *d) {
  dial(d);
}

void wstun__dialer_lost(wstun__dialer *d) {
  /* a tunnel that lived a while earns a quick reconnect; one dropped at
   * once (a server refusing us after the handshake) keeps backing off */
  if (uv_now(d->loop) - d->connected_at >= WSTUN__DIAL_STABLE_MS)
    d->attempt = 0;
  set_state(d, WSTUN__DIAL_IDLE);
  if (!d->stopped)
    schedule_reconnect(d);
}

void wstun__dialer_stop(wstun__dialer *d) {
  d->stopped = 1;
  if (d->state == WSTUN__DIAL_BACKOFF) {
    uv_timer_stop(&d->timer);
    set_state(d, WSTUN__DIAL_IDLE);
  }
}

static void dialer_closed(wstun__closer *c) {
  wstun__dialer *d = wstun__list_entry(c, wstun__dialer, closer);
  d->cbs->on_closed(d->owner);
}

void wstun__dialer_close(wstun__dialer *d) {
  if (d->closing)
    return;
  d->stopped = d->closing = 1;
  wstun__closer_start(&d->closer, dialer_closed);
  uv_timer_stop(&d->timer);
  wstun__closer_close_handle(&d->closer, (uv_handle_t *)&d->timer);
  if (d->resolving) {
    wstun__closer_add(&d->closer); /* on_resolved drops it */
    uv_cancel((uv_req_t *)&d->gai);
  }
  if (d->conn) {
    wstun__conn_close(d->conn);
    d->conn = NULL;
  }
  wstun__dialer_answer_done(d);
  /* this attempt's connection and earlier ones still closing */
  for (size_t i = 0; i < d->conns; i++)
    wstun__closer_add(&d->closer);
  set_state(d, WSTUN__DIAL_IDLE);
  wstun__closer_done(&d->closer);
}
