/* The tunnel server: listener, token registry, tunnel connections and the
 * dispatch of exchanges onto them. HTTP connections of requesters live in
 * wstun_front.c. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#include "wstun_alloc.h"
#include "wstun_proto.h"
#include "wstun_server_int.h"
#include "wstun_util.h"
#include "wstun_ws.h"

#define MIN_TOKEN_LEN 16
#define MAX_QUEUE_CAP 1000
/* File descriptors kept out of -max-connections: the listener, the event
 * loop's own, log files, resolver sockets, and connections being refused
 * with 503 (each holds one until its answer is out). */
#define FD_RESERVE 64

void wstun_server_config_init(wstun_server_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->header_timeout_sec = 30;
  cfg->max_connections = WSTUN_DEFAULT_MAX_CONNECTIONS;
  cfg->max_connections_per_ip = WSTUN_DEFAULT_MAX_CONNECTIONS_PER_IP;
  cfg->idle_timeout_sec = 60;
  cfg->host = "0.0.0.0";
  cfg->port = 80;
  cfg->base_path = "";
  cfg->max_requests_per_tunnel = 20;
  cfg->ws_timeout_sec = 30;
  cfg->http_timeout_sec = 1200;
  cfg->stall_timeout_sec = 10;
  cfg->token_forget_sec = 3600;
  cfg->max_header_bytes = 64 * 1024;
  cfg->log_level = WSTUN_LOG_INFO;
}

/* ---- passwords ---------------------------------------------------------- */

static void free_passwords(wstun_server *srv) {
  for (size_t i = 0; i < srv->npasswords; i++) {
    wstun__free(srv->passwords[i].token);
    wstun__free(srv->passwords[i].password);
  }
  wstun__free(srv->passwords);
  srv->passwords = NULL;
  srv->npasswords = 0;
}

/* "tok:pw,tok2:pw2" (spaces around entries ignored). */
static int parse_passwords(wstun_server *srv, const char *s) {
  if (s == NULL || *s == '\0')
    return 0;
  srv->passwords = wstun__calloc(wstun__list_bound(s), sizeof(*srv->passwords));
  if (srv->passwords == NULL)
    return WSTUN_ENOMEM;
  const char *cursor = s, *p;
  size_t len;
  while (wstun__list_next(&cursor, &p, &len)) {
    const char *colon = memchr(p, ':', len);
    if (colon == NULL || colon == p || colon == p + len - 1)
      return WSTUN_EPASSWORDS;
    wstun__password *pw = &srv->passwords[srv->npasswords++];
    pw->token = wstun__strndup(p, (size_t)(colon - p));
    pw->password = wstun__strndup(colon + 1, (size_t)(p + len - colon - 1));
    if (pw->token == NULL || pw->password == NULL)
      return WSTUN_ENOMEM;
  }
  return 0;
}

static const wstun__password *find_password(wstun_server *srv,
                                            const char *token) {
  for (size_t i = 0; i < srv->npasswords; i++)
    if (strcmp(srv->passwords[i].token, token) == 0)
      return &srv->passwords[i];
  return NULL;
}

/* ---- token registry ----------------------------------------------------- */

static size_t hash_token(const char *s, size_t n) {
  size_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 1099511628211ULL;
  }
  return h;
}

wstun__token *wstun__server_find_token(wstun_server *srv, const char *name,
                                       size_t len) {
  if (srv->nbuckets == 0)
    return NULL;
  wstun__token *t = srv->buckets[hash_token(name, len) % srv->nbuckets];
  for (; t; t = t->hnext)
    if (strlen(t->name) == len && memcmp(t->name, name, len) == 0)
      return t;
  return NULL;
}

static int grow_buckets(wstun_server *srv) {
  size_t n = srv->nbuckets ? srv->nbuckets * 2 : 64;
  wstun__token **b = wstun__calloc(n, sizeof(*b));
  if (b == NULL)
    return WSTUN_ENOMEM;
  for (size_t i = 0; i < srv->nbuckets; i++) {
    wstun__token *t = srv->buckets[i];
    while (t) {
      wstun__token *next = t->hnext;
      size_t h = hash_token(t->name, strlen(t->name)) % n;
      t->hnext = b[h];
      b[h] = t;
      t = next;
    }
  }
  wstun__free(srv->buckets);
  srv->buckets = b;
  srv->nbuckets = n;
  return 0;
}

static wstun__token *get_or_add_token(wstun_server *srv, const char *name) {
  size_t len = strlen(name);
  wstun__token *t = wstun__server_find_token(srv, name, len);
  if (t)
    return t;
  if (srv->ntokens >= srv->nbuckets && grow_buckets(srv) != 0)
    return NULL;
  t = wstun__calloc(1, sizeof(*t));
  if (t == NULL)
    return NULL;
  t->name = wstun__strdup(name);
  if (t->name == NULL) {
    wstun__free(t);
    return NULL;
  }
  size_t h = hash_token(name, len) % srv->nbuckets;
  t->hnext = srv->buckets[h];
  srv->buckets[h] = t;
  srv->ntokens++;
  t->last_seen = uv_now(srv->loop);
  return t;
}

static void remove_token(wstun_server *srv, wstun__token *t) {
  wstun__token **pp =
      &srv->buckets[hash_token(t->name, strlen(t->name)) % srv->nbuckets];
  while (*pp && *pp != t)
    pp = &(*pp)->hnext;
  if (*pp)
    *pp = t->hnext;
  srv->ntokens--;
  wstun__free(t->name);
  wstun__free(t);
}

size_t wstun_server_tunnel_count(const wstun_server *srv) {
  size_t n = 0;
  for (size_t i = 0; i < srv->nbuckets; i++)
    for (wstun__token *t = srv->buckets[i]; t; t = t->hnext)
      n += t->ntunnels > 0;
  return n;
}

int wstun_server_port(const wstun_server *srv) {
  return srv->port;
}

size_t wstun__token_pending(const wstun__token *t) {
  size_t n = t->nqueued;
  for (const wstun__srv_tunnel *st = t->tunnels; st; st = st->next)
    n += st->ninflight;
  return n;
}

void wstun_server_get_stats(const wstun_server *srv, wstun_server_stats *out) {
  memset(out, 0, sizeof(*out));
  for (size_t i = 0; i < srv->nbuckets; i++)
    for (const wstun__token *t = srv->buckets[i]; t; t = t->hnext) {
      out->tokens++;
      out->tunnels += t->ntunnels > 0;
      out->tunnel_connections += t->ntunnels;
      out->pending_requests += wstun__token_pending(t);
    }
  out->front_connections = srv->nfronts;
  out->completed_requests = srv->completed;
  out->errored_requests = srv->errored;
}

void wstun_server_foreach_tunnel(const wstun_server *srv,
                                 wstun_tunnel_info_cb cb, void *user_data) {
  uint64_t now = uv_now(srv->loop);
  for (size_t i = 0; i < srv->nbuckets; i++)
    for (const wstun__token *t = srv->buckets[i]; t; t = t->hnext) {
      const wstun__srv_tunnel *st = t->tunnels;
      uint64_t last =
          t->last_activity > t->last_seen ? t->last_activity : t->last_seen;
      wstun_tunnel_info info = {
          .token = t->name,
          .connections = t->ntunnels,
          .pending_requests = wstun__token_pending(t),
          .remote_addr = st ? st->addr : "",
          .client_version = st && st->client_version ? st->client_version : "",
          .remote_name = st && st->remote_name ? st->remote_name : "",
          .idle_ms = now - last,
      };
      cb(&info, user_data);
    }
}

/* ---- connection caps ---------------------------------------------------- */

wstun__ipcount *wstun__server_conn_admit(wstun_server *srv, const char *peer,
                                         const char **why) {
  *why = "too many connections";
  if (srv->max_conns && srv->nconns >= srv->max_conns)
    return NULL;
  char ip[sizeof(((wstun__ipcount *)0)->ip)];
  wstun__ip_count_key(peer, ip, sizeof(ip));
  size_t b = hash_token(ip, strlen(ip)) % WSTUN__IP_BUCKETS;
  wstun__ipcount *c = srv->ips[b];
  while (c && strcmp(c->ip, ip) != 0)
    c = c->next;
  *why = "too many connections from this address";
  /* a reverse proxy brings everybody from its one address: the proxies
   * named in trusted_proxies count in the total only */
  if (c && srv->max_conns_per_ip && c->n >= srv->max_conns_per_ip &&
      !wstun__cidr_list_match(&srv->trusted_proxies, peer))
    return NULL;
  if (c == NULL) {
    *why = "out of memory";
    c = wstun__calloc(1, sizeof(*c));
    if (c == NULL)
      return NULL;
    snprintf(c->ip, sizeof(c->ip), "%s", ip);
    c->next = srv->ips[b];
    srv->ips[b] = c;
  }
  c->n++;
  srv->nconns++;
  return c;
}

void wstun__server_conn_release(wstun_server *srv, wstun__ipcount *slot) {
  if (slot == NULL)
    return;
  srv->nconns--;
  if (--slot->n > 0)
    return;
  wstun__ipcount **pp =
      &srv->ips[hash_token(slot->ip, strlen(slot->ip)) % WSTUN__IP_BUCKETS];
  while (*pp && *pp != slot)
    pp = &(*pp)->next;
  if (*pp)
    *pp = slot->next;
  wstun__free(slot);
}

/* ---- dispatch ----------------------------------------------------------- */

static size_t waiting_count(const wstun__token *tok) {
  size_t n = tok->nqueued;
  for (const wstun__srv_tunnel *st = tok->tunnels; st; st = st->next)
    n += wstun__tunnel_queued(st->t);
  return n;
}

static wstun__srv_tunnel *pick_tunnel(wstun__token *tok) {
  /* fewest exchanges in flight; ties broken round-robin */
  wstun__srv_tunnel *best = NULL;
  unsigned i = 0, start = tok->rr++;
  size_t n = tok->ntunnels ? tok->ntunnels : 1;
  for (wstun__srv_tunnel *st = tok->tunnels; st; st = st->next, i++) {
    /* one that is closing (its owner not told yet: a message it was
     * delivering ends first) would hand the exchange straight back */
    if (st->t == NULL || st->t->closing)
      continue;
    if (best == NULL || st->ninflight < best->ninflight ||
        (st->ninflight == best->ninflight && i == start % n))
      best = st;
  }
  return best;
}

static int id_in_use(const wstun__srv_tunnel *st, uint16_t id) {
  for (const wstun__front *f = st->inflight; f; f = f->ex_next)
    if (f->id == id)
      return 1;
  return 0;
}

static uint16_t next_id(wstun__token *tok, const wstun__srv_tunnel *st) {
  for (;;) {
    uint16_t id = tok->next_id = wstun__proto_next_id(tok->next_id);
    if (st->ninflight >= WSTUN__PROTO_ID_WRAP || !id_in_use(st, id))
      return id;
  }
}

static void send_on(wstun__srv_tunnel *st, wstun__front *f) {
  f->id = next_id(st->tok, st);
  f->tun = st;
  f->state = WSTUN__EX_SENDING;
  wstun__log(&st->srv->log, WSTUN_LOG_DEBUG,
             "WS   SND token=%s id=%04x verb=%s url=%s addr=%s",
             f->token_prefix, f->id,
             llhttp_method_name((llhttp_method_t)f->method),
             wstun__http_head_target(&f->parser.head), st->addr);
  f->ex_next = st->inflight;
  st->inflight = f;
  st->ninflight++;
  wstun__tunnel_send(st->t, f->id, f->req);
}

void wstun__server_dispatch(wstun_server *srv, wstun__front *f) {
  wstun__token *tok = f->tok;
  if (waiting_count(tok) >= srv->max_queue) {
    wstun__log(&srv->log, WSTUN_LOG_WARN,
               "HTTP RET token=%s status=504 queue full (%zu waiting)",
               f->token_prefix, waiting_count(tok));
    wstun__front_fail(f, 504, "too many requests in-flight, tunnel broken?");
    return;
  }
  wstun__srv_tunnel *st = pick_tunnel(tok);
  if (st != NULL) {
    send_on(st, f);
    return;
  }
  /* momentarily down: wait for a client to (re)connect */
  f->state = WSTUN__EX_QUEUED;
  f->ex_next = NULL;
  if (tok->q_tail)
    tok->q_tail->ex_next = f;
  else
    tok->q_head = f;
  tok->q_tail = f;
  tok->nqueued++;
}

void wstun__server_unlink(wstun__front *f) {
  if (f->state == WSTUN__EX_QUEUED && f->tok) {
    wstun__token *tok = f->tok;
    wstun__front **pp = &tok->q_head, *prev = NULL;
    while (*pp && *pp != f) {
      prev = *pp;
      pp = &(*pp)->ex_next;
    }
    if (*pp) {
      *pp = f->ex_next;
      if (tok->q_tail == f)
        tok->q_tail = prev;
      tok->nqueued--;
    }
  } else if (f->tun) {
    wstun__srv_tunnel *st = f->tun;
    wstun__front **pp = &st->inflight;
    while (*pp && *pp != f)
      pp = &(*pp)->ex_next;
    if (*pp) {
      *pp = f->ex_next;
      st->ninflight--;
    }
    if (st->t) {
      wstun__tunnel_forget_sink(st->t, f);
      if (f->paused_tunnel)
        wstun__tunnel_resume_rx(st->t);
    }
    f->paused_tunnel = 0;
  }
  f->ex_next = NULL;
  f->tun = NULL;
}

/* A token got a live tunnel: move its waiting exchanges onto tunnels. */
static void drain_queue(wstun__token *tok) {
  while (tok->q_head && tok->tunnels) {
    wstun__front *f = tok->q_head;
    tok->q_head = f->ex_next;
    if (tok->q_head == NULL)
      tok->q_tail = NULL;
    tok->nqueued--;
    f->ex_next = NULL;
    send_on(pick_tunnel(tok), f);
  }
}

/* ---- tunnel connections ------------------------------------------------- */

static wstun__front *find_inflight(wstun__srv_tunnel *st, uint16_t id) {
  for (wstun__front *f = st->inflight; f; f = f->ex_next)
    if (f->id == id)
      return f;
  return NULL;
}

static void *st_msg_begin(wstun__tunnel *t, uint16_t id) {
  wstun__srv_tunnel *st = t->owner;
  wstun__front *f = find_inflight(st, id);
  if (f == NULL ||
      (f->state != WSTUN__EX_WAITING && f->state != WSTUN__EX_SENDING)) {
    wstun__log(&st->srv->log, WSTUN_LOG_INFO,
               "WS   RCV id=%04x: no such request in flight (late?): dropped",
               id);
    return NULL;
  }
  return f;
}

static int st_msg_data(wstun__tunnel *t, void *sink, const uint8_t *d,
                       size_t n) {
  (void)t;
  return wstun__front_resp_data(sink, d, n);
}

static void st_msg_end(wstun__tunnel *t, void *sink, int complete) {
  (void)t;
  wstun__front_resp_end(sink, complete);
}

static void st_closed(wstun__tunnel *t, int err) {
  wstun__srv_tunnel *st = t->owner;
  wstun_server *srv = st->srv;
  wstun__token *tok = st->tok;
  st->t = NULL;
  if (tok) {
    wstun__srv_tunnel **pp = &tok->tunnels;
    while (*pp && *pp != st)
      pp = &(*pp)->next;
    if (*pp)
      *pp = st->next;
    tok->ntunnels--;
    tok->last_seen = uv_now(srv->loop);
    srv->metrics.tunnel_disconnects++;
    st->tok = NULL;
    char red[12];
    wstun__log(&srv->log, WSTUN_LOG_INFO,
               "WS   closed token=%s addr=%s (%s); %zu left for token",
               wstun__redact(tok->name, red), st->addr, wstun_strerror(err),
               tok->ntunnels);
  }
  /* Every exchange lets go of this tunnel now. Those already written
   * cannot be replayed: they are answered at once. Those still being sent
   * come back through their message's on_failed (never sent: retried) or
   * on_sent (sent just before the end: answered then). */
  wstun__front *f = st->inflight;
  st->inflight = NULL;
  st->ninflight = 0;
  while (f) {
    wstun__front *next = f->ex_next;
    f->ex_next = NULL;
    f->tun = NULL;
    f->paused_tunnel = 0;
    if (f->state != WSTUN__EX_SENDING)
      wstun__front_tunnel_lost(f);
    f = next;
  }
}

/* Reverse DNS of a tunnel's peer, for /_stats and /admin/auditing: through
 * libuv's thread pool, so a slow resolver never blocks the loop. The
 * lookup outlives its tunnel if it must: it then just frees itself. */
typedef struct wstun__dns_lookup {
  uv_getnameinfo_t req;
  wstun__srv_tunnel *st;
} wstun__dns_lookup;

static void on_name(uv_getnameinfo_t *req, int status, const char *host,
                    const char *service) {
  wstun__dns_lookup *l = req->data;
  (void)service;
  if (l->st) {
    l->st->dns = NULL;
    if (status == 0 && host)
      l->st->remote_name = wstun__strdup(host);
  }
  wstun__free(l);
}

static void lookup_name(wstun__srv_tunnel *st, const struct sockaddr *peer) {
  wstun__dns_lookup *l = wstun__calloc(1, sizeof(*l));
  if (l == NULL)
    return;
  l->st = st;
  l->req.data = l;
  if (uv_getnameinfo(st->srv->loop, &l->req, on_name, peer, NI_NAMEREQD) != 0) {
    wstun__free(l);
    return;
  }
  st->dns = l;
}

static void st_freed(void *owner) {
  wstun__srv_tunnel *st = owner;
  wstun_server *srv = st->srv;
  if (st->dns)
    st->dns->st = NULL;
  wstun__server_conn_release(srv, st->ip);
  wstun__free(st->remote_name);
  wstun__free(st->client_version);
  wstun__free(st);
  srv->live_tunnels--;
  wstun__server_front_gone(srv);
}

static const wstun__tunnel_cbs srv_tunnel_cbs = {
    .on_msg_begin = st_msg_begin,
    .on_msg_data = st_msg_data,
    .on_msg_end = st_msg_end,
    .on_closed = st_closed,
    .on_freed = st_freed,
};

/* Basic credentials must name the token and its password. */
/* NULL when the credentials are right, else the Go server's 401 text. */
static const char *check_auth(const char *header, const char *token,
                              const char *password) {
  if (header == NULL)
    return "Authorization required for this token";
  if (strncasecmp(header, "Basic ", 6) != 0)
    return "Invalid authorization type (must be Basic)";
  unsigned char *raw = NULL;
  size_t n = 0;
  const char *b64 = header + 6;
  while (*b64 == ' ')
    b64++;
  if (wstun__base64_decode(b64, &raw, &n) != 0)
    return "Invalid authorization encoding";
  const unsigned char *colon = memchr(raw, ':', n);
  const char *why = "Invalid authorization format";
  if (colon != NULL) {
    size_t ulen = (size_t)(colon - raw);
    int user_ok = wstun__ct_equal(raw, ulen, token, strlen(token));
    int pw_ok =
        wstun__ct_equal(colon + 1, n - ulen - 1, password, strlen(password));
    why = user_ok & pw_ok ? NULL : "Invalid token or password";
  }
  wstun__free(raw);
  return why;
}

int wstun__server_upgrade(wstun__front *f, wstun__http_head *h,
                          const uint8_t *rest, size_t n) {
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
  const wstun__password *pw = find_password(srv, token);
  const char *bad = pw ? check_auth(wstun__http_head_get(h, "Authorization"),
                                    token, pw->password)
                       : NULL;
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
  wstun__token *existing = wstun__server_find_token(srv, token, strlen(token));
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
  wstun__token *tok = get_or_add_token(srv, token);
  wstun__srv_tunnel *st = tok ? wstun__calloc(1, sizeof(*st)) : NULL;
  if (st == NULL) {
    wstun__front_fail(f, 503, "Out of memory");
    return 0;
  }
  st->srv = srv;
  snprintf(st->addr, sizeof(st->addr), "%s", peer);
  st->client_version =
      wstun__strdup(wstun__http_head_get(h, "X-Client-Version"));
  wstun__conn *conn = f->conn;
  if (wstun__ws_write_accept(h, wstun__conn_outbuf(conn)) != 0 ||
      wstun__tunnel_start(&st->t, srv->loop, conn, 1, &srv->rng, &srv->log, 0,
                          srv->ws_timeout_ms, &srv_tunnel_cbs, st, rest,
                          n) != 0) {
    wstun__free(st->client_version);
    wstun__free(st);
    wstun__front_fail(f, 503, "Out of memory");
    return 0;
  }
  srv->live_tunnels++;
  srv->metrics.tunnel_connects++;
  lookup_name(st, (const struct sockaddr *)&conn->peer);
  /* the connection now belongs to the tunnel, and counts as its */
  f->conn = NULL;
  st->ip = f->ip;
  f->ip = NULL;
  wstun__conn_flush(conn);
  st->tok = tok;
  st->next = tok->tunnels;
  tok->tunnels = st;
  tok->ntunnels++;
  tok->last_seen = uv_now(srv->loop);
  wstun__log(&srv->log, WSTUN_LOG_INFO,
             "WS   new tunnel token=%s addr=%s version=%s (%zu for token)", red,
             peer, st->client_version ? st->client_version : "-",
             tok->ntunnels);
  drain_queue(tok);
  return 1;
}

/* ---- lifecycle ---------------------------------------------------------- */

static void sweep_tokens(uv_timer_t *timer) {
  wstun_server *srv = timer->data;
  uint64_t now = uv_now(srv->loop);
  for (size_t i = 0; i < srv->nbuckets; i++) {
    wstun__token *t = srv->buckets[i];
    while (t) {
      wstun__token *next = t->hnext;
      if (t->ntunnels == 0 && now - t->last_seen >= srv->forget_ms) {
        char red[12];
        wstun__log(&srv->log, WSTUN_LOG_INFO,
                   "token=%s forgotten after %llu s without a client",
                   wstun__redact(t->name, red),
                   (unsigned long long)((now - t->last_seen) / 1000));
        while (t->q_head) {
          wstun__front *f = t->q_head;
          wstun__front_fail(f, 404,
                            "Tunnel not found (or not seen in a long time)");
        }
        remove_token(srv, t);
      }
      t = next;
    }
  }
}

static void on_connection(uv_stream_t *server, int status) {
  wstun_server *srv = server->data;
  if (status < 0) {
    wstun__log(&srv->log, WSTUN_LOG_WARN, "accept: %s", uv_strerror(status));
    return;
  }
  wstun__front_accept(srv);
}

static void free_tls(wstun_server *srv) {
  wstun__tls_config_unref(srv->tls);
  srv->tls = NULL;
  wstun__free(srv->tls_cert_file);
  wstun__free(srv->tls_key_file);
}

/* (Re)loads the certificate and key named at start. Connections keep the
 * configuration they were accepted with, so nothing open is dropped. */
static int load_tls(wstun_server *srv) {
  char why[400];
  wstun__tls_config *cfg;
  int rc = wstun__tls_server_config(&cfg, srv->tls_cert_file, srv->tls_key_file,
                                    why, sizeof(why));
  if (rc != 0) {
    wstun__log(&srv->log, WSTUN_LOG_ERROR, "TLS: %s", why);
    return rc;
  }
  wstun__tls_config_unref(srv->tls);
  srv->tls = cfg;
  return 0;
}

int wstun_server_reload_tls(wstun_server *srv) {
  if (srv == NULL || srv->tls == NULL || srv->closing)
    return WSTUN_ESTATE;
  int rc = load_tls(srv);
  if (rc == 0)
    wstun__log(&srv->log, WSTUN_LOG_INFO, "TLS certificate reloaded from %s",
               srv->tls_cert_file);
  else
    wstun__log(&srv->log, WSTUN_LOG_WARN,
               "TLS reload failed; the previous certificate stays in use");
  return rc;
}

static void server_free(wstun_server *srv) {
  for (size_t i = 0; i < srv->nbuckets; i++) {
    wstun__token *t = srv->buckets[i];
    while (t) {
      wstun__token *next = t->hnext;
      wstun__free(t->name);
      wstun__free(t);
      t = next;
    }
  }
  wstun__free(srv->buckets);
  free_passwords(srv);
  wstun__free(srv->base_path);
  wstun__cidr_list_free(&srv->trusted_proxies);
  wstun__cidr_list_free(&srv->admin_allow);
  if (srv->admin_token) {
    memset(srv->admin_token, 0, strlen(srv->admin_token));
    wstun__free(srv->admin_token);
  }
  wstun__rng_free(&srv->rng);
  free_tls(srv);
  wstun__free(srv);
}

static void free_after_close(uv_handle_t *h) {
  server_free(h->data);
}

static void on_handle_closed(uv_handle_t *h) {
  wstun_server *srv = h->data;
  srv->handles_open--;
  wstun__server_front_gone(srv);
}

/* Called whenever something the close waits for went away. */
static void close_all(wstun_server *srv);

static void on_flusher_closed(uv_handle_t *h) {
  wstun_server *srv = h->data;
  wstun_server_close_cb cb = srv->close_cb;
  void *ud = srv->close_ud;
  server_free(srv);
  if (cb)
    cb(srv, ud);
}

void wstun__server_front_gone(wstun_server *srv) {
  /* graceful stop: the last busy front connection is done */
  if (srv->closing == 1 && srv->nfronts == 0) {
    close_all(srv);
    return;
  }
  if (srv->closing != 2 || srv->handles_open > 0 || srv->nfronts > 0 ||
      srv->live_tunnels > 0)
    return;
  /* everything else is gone: the write flusher goes last */
  srv->closing = 3;
  wstun__conn_shared_close(&srv->shared, on_flusher_closed, srv);
}

/* Grace over (or nothing left in flight): close everything. */
static void close_all(wstun_server *srv) {
  if (srv->closing >= 2)
    return;
  srv->closing = 2;
  uv_timer_stop(&srv->sweep);
  uv_close((uv_handle_t *)&srv->sweep, on_handle_closed);
  uv_timer_stop(&srv->grace);
  uv_close((uv_handle_t *)&srv->grace, on_handle_closed);
  for (size_t i = 0; i < srv->nbuckets; i++)
    for (wstun__token *t = srv->buckets[i]; t; t = t->hnext) {
      while (t->q_head)
        wstun__front_fail(t->q_head, 503, "Server shutting down");
      while (t->tunnels)
        wstun__tunnel_close(t->tunnels->t, WSTUN_ECLOSED);
    }
  /* fronts unlink themselves only once their handles are closed */
  for (wstun__front *f = srv->fronts; f; f = f->next)
    wstun__front_close(f);
  wstun__server_front_gone(srv);
}

static void on_grace_over(uv_timer_t *timer) {
  close_all(timer->data);
}

void wstun_server_close(wstun_server *srv, unsigned grace_ms,
                        wstun_server_close_cb cb, void *user_data) {
  if (srv == NULL || srv->closing)
    return;
  srv->closing = 1;
  srv->close_cb = cb;
  srv->close_ud = user_data;
  uv_close((uv_handle_t *)&srv->listener, on_handle_closed);
  /* idle keep-alive connections go now; busy ones get the grace period */
  wstun__front *f = srv->fronts;
  while (f) {
    wstun__front *next = f->next;
    if (!wstun__front_busy(f))
      wstun__front_close(f);
    f = next;
  }
  int busy = 0;
  for (f = srv->fronts; f; f = f->next)
    busy |= !f->closing;
  if (!busy || grace_ms == 0) {
    close_all(srv);
    return;
  }
  uv_timer_start(&srv->grace, on_grace_over, grace_ms, 0);
}

/* The listen address: an IP address, or a host name as the Go server
 * takes (-host localhost), resolved here once, synchronously, the first
 * IPv4 address preferred as Go's net.Listen does. */
static int listen_addr(uv_loop_t *loop, const char *host, int port,
                       struct sockaddr_storage *out) {
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)out) == 0 ||
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)out) == 0)
    return 0;
  /* only something that can be a host name goes to the resolver: a typo
   * such as "0.0.0.0:80" is refused here, without a DNS query */
  if (host[0] == '\0' || host[strspn(host, "abcdefghijklmnopqrstuvwxyz"
                                           "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                           "0123456789.-")] != '\0')
    return WSTUN_EINVAL;
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  uv_getaddrinfo_t req;
  if (uv_getaddrinfo(loop, &req, NULL, host, NULL, &hints) != 0)
    return WSTUN_EINVAL;
  const struct addrinfo *pick = NULL;
  for (const struct addrinfo *ai = req.addrinfo; ai; ai = ai->ai_next)
    if ((ai->ai_family == AF_INET &&
         (pick == NULL || pick->ai_family != AF_INET)) ||
        (ai->ai_family == AF_INET6 && pick == NULL))
      pick = ai;
  int rc = WSTUN_EINVAL;
  if (pick != NULL && pick->ai_addrlen <= sizeof(*out)) {
    memcpy(out, pick->ai_addr, pick->ai_addrlen);
    if (pick->ai_family == AF_INET)
      ((struct sockaddr_in *)out)->sin_port = htons((uint16_t)port);
    else
      ((struct sockaddr_in6 *)out)->sin6_port = htons((uint16_t)port);
    rc = 0;
  }
  uv_freeaddrinfo(req.addrinfo);
  return rc;
}

int wstun_server_start(uv_loop_t *loop, const wstun_server_config *cfg,
                       wstun_server **out) {
  if (loop == NULL || cfg == NULL || out == NULL || cfg->port < 0 ||
      cfg->port > 65535)
    return WSTUN_EINVAL;
  wstun_server *srv = wstun__calloc(1, sizeof(*srv));
  if (srv == NULL)
    return WSTUN_ENOMEM;
  srv->loop = loop;
  srv->log.level = cfg->log_level;
  srv->log.cb = cfg->log_cb;
  srv->log.user_data = cfg->log_user_data;
  int rc = parse_passwords(srv, cfg->passwords);
  if (rc != 0)
    goto fail_early;
  const char *bp = cfg->base_path ? cfg->base_path : "";
  size_t bl = strlen(bp);
  while (bl > 0 && bp[bl - 1] == '/')
    bl--;
  if (bl > 0 && bp[0] != '/') {
    srv->base_path = wstun__malloc(bl + 2);
    if (srv->base_path) {
      srv->base_path[0] = '/';
      memcpy(srv->base_path + 1, bp, bl);
      srv->base_path[bl + 1] = '\0';
    }
  } else {
    srv->base_path = wstun__strndup(bp, bl);
  }
  if (srv->base_path == NULL) {
    rc = WSTUN_ENOMEM;
    goto fail_early;
  }
  srv->base_len = strlen(srv->base_path);
  int mq =
      cfg->max_requests_per_tunnel <= 0 ? 20 : cfg->max_requests_per_tunnel;
  srv->max_queue = mq > MAX_QUEUE_CAP ? MAX_QUEUE_CAP : (size_t)mq;
  srv->max_clients =
      cfg->max_clients_per_token > 0 ? (size_t)cfg->max_clients_per_token : 0;
  int wst = cfg->ws_timeout_sec;
  wst = wst < 3 ? 3 : wst > 600 ? 600 : wst;
  srv->ws_timeout_ms = (uint64_t)wst * 1000;
  srv->http_timeout_ms =
      (uint64_t)(cfg->http_timeout_sec > 0 ? cfg->http_timeout_sec : 1200) *
      1000;
  srv->stall_ms =
      (uint64_t)(cfg->stall_timeout_sec > 0 ? cfg->stall_timeout_sec : 10) *
      1000;
  srv->forget_ms =
      (uint64_t)(cfg->token_forget_sec > 0 ? cfg->token_forget_sec : 3600) *
      1000;
  srv->max_header = cfg->max_header_bytes ? cfg->max_header_bytes : 64 * 1024;
  rc = wstun__cidr_list_parse(cfg->trusted_proxies, &srv->trusted_proxies);
  if (rc == 0)
    rc = wstun__cidr_list_parse(cfg->admin_allow, &srv->admin_allow);
  if (rc != 0) {
    rc = rc == WSTUN_ENOMEM ? rc : WSTUN_ECIDR; /* not a malformed list */
    goto fail_early;
  }
  if (cfg->admin_token && *cfg->admin_token) {
    srv->admin_token = wstun__strdup(cfg->admin_token);
    if (srv->admin_token == NULL) {
      rc = WSTUN_ENOMEM;
      goto fail_early;
    }
  }
  int has_cert = cfg->tls_cert_file && *cfg->tls_cert_file;
  int has_key = cfg->tls_key_file && *cfg->tls_key_file;
  if (has_cert != has_key) {
    wstun__log(&srv->log, WSTUN_LOG_ERROR,
               "TLS needs both a certificate and a key");
    rc = WSTUN_EINVAL;
    goto fail_early;
  }
  if (has_cert) {
    srv->tls_cert_file = wstun__strdup(cfg->tls_cert_file);
    srv->tls_key_file = wstun__strdup(cfg->tls_key_file);
    rc = srv->tls_cert_file && srv->tls_key_file ? load_tls(srv) : WSTUN_ENOMEM;
    if (rc != 0)
      goto fail_early;
  }
  srv->max_body = cfg->max_body_bytes;
  srv->header_timeout_ms =
      (uint64_t)(cfg->header_timeout_sec > 0 ? cfg->header_timeout_sec : 30) *
      1000;
  srv->idle_timeout_ms =
      (uint64_t)(cfg->idle_timeout_sec > 0 ? cfg->idle_timeout_sec : 60) * 1000;
  srv->max_conns = cfg->max_connections > 0 ? (size_t)cfg->max_connections : 0;
  srv->max_conns_per_ip =
      cfg->max_connections_per_ip > 0 ? (size_t)cfg->max_connections_per_ip : 0;
  /* Past the fd limit accept() fails and the peer gets nothing (libuv
   * drops it): below it, a connection over the cap still gets its 503. */
  struct rlimit nofile;
  if (srv->max_conns && getrlimit(RLIMIT_NOFILE, &nofile) == 0 &&
      nofile.rlim_cur != RLIM_INFINITY) {
    size_t fds = (size_t)nofile.rlim_cur;
    size_t cap = fds > 2 * FD_RESERVE ? fds - FD_RESERVE : fds / 2;
    if (cap < 1)
      cap = 1;
    if (srv->max_conns > cap) {
      wstun__log(&srv->log, WSTUN_LOG_INFO,
                 "max-connections %zu lowered to %zu: the open file limit "
                 "is %zu",
                 srv->max_conns, cap, fds);
      srv->max_conns = cap;
    }
  }
  rc = wstun__rng_init(&srv->rng);
  if (rc != 0)
    goto fail_early;

  struct sockaddr_storage addr;
  const char *host = cfg->host && *cfg->host ? cfg->host : "0.0.0.0";
  if (listen_addr(loop, host, cfg->port, &addr) != 0) {
    rc = WSTUN_EINVAL;
    goto fail_rng;
  }
  uv_tcp_init(loop, &srv->listener);
  srv->listener.data = srv;
  srv->handles_open = 1;
  if (uv_tcp_bind(&srv->listener, (struct sockaddr *)&addr, 0) != 0 ||
      uv_listen((uv_stream_t *)&srv->listener, 1024, on_connection) != 0) {
    wstun__log(&srv->log, WSTUN_LOG_ERROR, "cannot listen on %s:%d", host,
               cfg->port);
    /* the memory goes once the handle is closed; no user callback fires */
    srv->closing = 3;
    uv_close((uv_handle_t *)&srv->listener, free_after_close);
    return WSTUN_ELISTEN;
  }
  struct sockaddr_storage bound;
  int blen = sizeof(bound);
  uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&bound, &blen);
  srv->port = ntohs(bound.ss_family == AF_INET6
                        ? ((struct sockaddr_in6 *)&bound)->sin6_port
                        : ((struct sockaddr_in *)&bound)->sin_port);
  wstun__conn_shared_init(&srv->shared, loop);
  uv_timer_init(loop, &srv->sweep);
  srv->sweep.data = srv;
  uint64_t every = srv->forget_ms / 4 < 1000 ? 1000 : srv->forget_ms / 4;
  if (every > 60000)
    every = 60000;
  uv_timer_start(&srv->sweep, sweep_tokens, every, every);
  uv_timer_init(loop, &srv->grace);
  srv->grace.data = srv;
  srv->handles_open = 3;
  char ip[64] = "";
  if (bound.ss_family == AF_INET6)
    uv_ip6_name((struct sockaddr_in6 *)&bound, ip, sizeof(ip));
  else
    uv_ip4_name((struct sockaddr_in *)&bound, ip, sizeof(ip));
  wstun__log(&srv->log, WSTUN_LOG_INFO, "listening on %s:%d%s", ip, srv->port,
             srv->tls ? " (TLS)" : "");
  char all[32] = "no limit", per_ip[32] = "no limit";
  if (srv->max_conns)
    snprintf(all, sizeof(all), "%zu", srv->max_conns);
  if (srv->max_conns_per_ip)
    snprintf(per_ip, sizeof(per_ip), "%zu", srv->max_conns_per_ip);
  wstun__log(&srv->log, WSTUN_LOG_INFO,
             "connections at most: %s in all, %s per address%s", all, per_ip,
             srv->max_conns_per_ip && srv->trusted_proxies.n
                 ? " (trusted proxies exempt)"
                 : "");
  *out = srv;
  return 0;

fail_rng:
  wstun__rng_free(&srv->rng);
fail_early:
  wstun__free(srv->base_path);
  wstun__cidr_list_free(&srv->trusted_proxies);
  wstun__cidr_list_free(&srv->admin_allow);
  wstun__free(srv->admin_token);
  free_passwords(srv);
  free_tls(srv);
  wstun__free(srv);
  return rc;
}
