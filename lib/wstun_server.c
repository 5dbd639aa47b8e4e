/* The tunnel server's life: its configuration (and its reload, all or
 * nothing), the listener, and the stop in stages (wstun__srv_phase): a
 * grace period for busy requesters, then every handle closed, the write
 * flusher last. Tokens, tunnels and
 * dispatch are wstun_registry.c's; requesters' HTTP connections are
 * wstun_front.c's. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#include "wstun_alloc.h"
#include "wstun_front.h"
#include "wstun_registry.h"
#include "wstun_util.h"
#include "wstun_ws.h"

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
  cfg->protocol = 2;
  cfg->stream_idle_timeout_sec = 300;
  cfg->max_header_bytes = 64 * 1024;
  cfg->log_level = WSTUN_LOG_INFO;
  cfg->access_log = 1;
}

int wstun_server_port(const wstun_server *srv) {
  return srv->port;
}

/* ---- lifecycle ---------------------------------------------------------- */

static void sweep_tokens(uv_timer_t *timer) {
  wstun__registry_sweep(timer->data);
}

/* How often forgotten tokens are looked for: a quarter of forget_ms,
 * within 1 s .. 60 s; on a node of a cluster at least every
 * unknown_token_wait (the tokens made for requests that waited in vain go
 * then, so made-up tokens cannot pile up). */
static uint64_t sweep_every(const wstun_server *srv) {
  uint64_t every = srv->forget_ms / 4 < 1000 ? 1000 : srv->forget_ms / 4;
  if (srv->tunnel_wait_ms && every > srv->tunnel_wait_ms)
    every = srv->tunnel_wait_ms < 1000 ? 1000 : srv->tunnel_wait_ms;
  return every > 60000 ? 60000 : every;
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

/* Reads a certificate and key pair into *out (a new configuration, the
 * caller's reference). Connections keep the configuration they were
 * accepted with, so swapping srv->tls drops nothing that is open. */
static int read_tls(wstun_server *srv, const char *cert, const char *key,
                    wstun__tls_config **out) {
  char why[400];
  int rc = wstun__tls_server_config(out, cert, key, why, sizeof(why));
  if (rc != 0)
    wstun__log(&srv->log, WSTUN_LOG_ERROR, "TLS: %s", why);
  return rc;
}

/* New connections get cfg from now on (open ones keep theirs): the
 * handshake counters go on, the tickets of the old key do not. */
static void use_tls(wstun_server *srv, wstun__tls_config *cfg) {
  if (srv->tls) {
    cfg->handshakes = srv->tls->handshakes;
    cfg->resumed = srv->tls->resumed;
  }
  wstun__tls_config_unref(srv->tls);
  srv->tls = cfg;
}

/* (Re)loads the certificate and key named at start. */
static int load_tls(wstun_server *srv) {
  wstun__tls_config *cfg;
  int rc = read_tls(srv, srv->tls_cert_file, srv->tls_key_file, &cfg);
  if (rc != 0)
    return rc;
  use_tls(srv, cfg);
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
  wstun__registry_free(srv);
  wstun__free(srv->base_path);
  wstun__cidr_list_free(&srv->trusted_proxies);
  wstun__cidr_list_free(&srv->admin_allow);
  if (srv->admin_token) {
    memset(srv->admin_token, 0, strlen(srv->admin_token));
    wstun__free(srv->admin_token);
  }
  wstun__keyhash_free(&srv->bucket_hash);
  wstun__rng_free(&srv->rng);
  free_tls(srv);
  wstun__free(srv);
}

static void free_after_close(uv_handle_t *h) {
  server_free(h->data);
}

static void server_gone(wstun_server *srv);

static void on_handle_closed(uv_handle_t *h) {
  wstun_server *srv = h->data;
  srv->handles_open--;
  server_gone(srv);
}

static void close_all(wstun_server *srv);

static void on_flusher_closed(uv_handle_t *h) {
  wstun_server *srv = h->data;
  wstun_server_close_cb cb = srv->close_cb;
  void *ud = srv->close_ud;
  server_free(srv);
  if (cb)
    cb(srv, ud);
}

/* Called whenever something the close waits for went away (srv->on_gone,
 * for the fronts and tunnels). */
static void server_gone(wstun_server *srv) {
  /* graceful stop: the last busy front connection is done */
  if (srv->closing == WSTUN__SRV_DRAINING && srv->nfronts == 0) {
    close_all(srv);
    return;
  }
  if (srv->closing != WSTUN__SRV_CLOSING || srv->handles_open > 0 ||
      srv->nfronts > 0 || srv->live_tunnels > 0)
    return;
  /* everything else is gone: the write flusher goes last */
  srv->closing = WSTUN__SRV_FLUSHING;
  wstun__conn_shared_close(&srv->shared, on_flusher_closed, srv);
}

/* Grace over (or nothing left in flight): close everything. */
static void close_all(wstun_server *srv) {
  if (srv->closing >= WSTUN__SRV_CLOSING)
    return;
  srv->closing = WSTUN__SRV_CLOSING;
  uv_timer_stop(&srv->sweep);
  uv_close((uv_handle_t *)&srv->sweep, on_handle_closed);
  uv_timer_stop(&srv->grace);
  uv_close((uv_handle_t *)&srv->grace, on_handle_closed);
  wstun__registry_shutdown(srv);
  /* fronts unlink themselves only once their handles are closed */
  wstun__list *l;
  wstun__list_foreach(l, &srv->fronts) {
    wstun__front_close(wstun__list_entry(l, wstun__front, link));
  }
  server_gone(srv);
}

static void on_grace_over(uv_timer_t *timer) {
  close_all(timer->data);
}

void wstun_server_close(wstun_server *srv, unsigned grace_ms,
                        wstun_server_close_cb cb, void *user_data) {
  if (srv == NULL || srv->closing)
    return;
  wstun__server_drain_cancel(srv);
  srv->closing = WSTUN__SRV_DRAINING;
  srv->close_cb = cb;
  srv->close_ud = user_data;
  uv_close((uv_handle_t *)&srv->listener, on_handle_closed);
  /* v2 clients open their next tunnel now, while this one finishes */
  wstun__registry_goaway(srv);
  /* idle keep-alive connections go now; busy ones get the grace period */
  wstun__list *l, *tmp;
  wstun__list_foreach_safe(l, tmp, &srv->fronts) {
    wstun__front *f = wstun__list_entry(l, wstun__front, link);
    if (!wstun__front_busy(f))
      wstun__front_close(f);
  }
  int busy = 0;
  wstun__list_foreach(l, &srv->fronts) {
    busy |= !wstun__list_entry(l, wstun__front, link)->closing;
  }
  if (!busy || grace_ms == 0) {
    close_all(srv);
    return;
  }
  uv_timer_start(&srv->grace, on_grace_over, grace_ms, 0);
}

/* The numbers of the configuration, at start and at each reload: every
 * one is read where it is used (a new connection, request or tunnel), so
 * setting them is all a reload needs. */
static void set_limits(wstun_server *srv, const wstun_server_config *cfg) {
  int mq =
      cfg->max_requests_per_tunnel <= 0 ? 20 : cfg->max_requests_per_tunnel;
  srv->max_queue = mq > MAX_QUEUE_CAP ? MAX_QUEUE_CAP : (size_t)mq;
  if (mq > MAX_QUEUE_CAP)
    wstun__log(&srv->log, WSTUN_LOG_WARN,
               "max_requests_per_tunnel %d is over %d: using %d", mq,
               MAX_QUEUE_CAP, MAX_QUEUE_CAP);
  srv->max_clients =
      cfg->max_clients_per_token > 0 ? (size_t)cfg->max_clients_per_token : 0;
  int wst = cfg->ws_timeout_sec;
  wst = wst < 3 ? 3 : wst > 600 ? 600 : wst;
  if (wst != cfg->ws_timeout_sec)
    wstun__log(&srv->log, WSTUN_LOG_WARN,
               "ws_timeout_sec %d is outside 3..600: using %d",
               cfg->ws_timeout_sec, wst);
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
  srv->v2 = cfg->protocol != 1;
  srv->stream_idle_ms =
      (uint64_t)(cfg->stream_idle_timeout_sec > 0 ? cfg->stream_idle_timeout_sec
                                                  : 300) *
      1000;
  srv->max_body = cfg->max_body_bytes;
  srv->tunnel_wait_ms = cfg->unknown_token_wait_ms;
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

/* "N s", or "none" for 0 (no limit). */
static const char *limit_text(uint64_t v, const char *unit, char *buf,
                              size_t n) {
  if (v == 0)
    snprintf(buf, n, "none");
  else
    snprintf(buf, n, "%llu%s", (unsigned long long)v, unit);
  return buf;
}

/* The effective configuration, at start, after "listening on": what an
 * operator checks first when something is off. Never a secret: the admin
 * token is "required", passwords are counted, a token is cut to a prefix
 * (here at most half of it, as one too short is short already). */
static void log_config(wstun_server *srv, const wstun_server_config *cfg) {
  wstun__logger *lg = &srv->log;
  wstun__log(lg, WSTUN_LOG_INFO, "base path: %s",
             srv->base_len ? srv->base_path : "none (endpoints at /)");
  if (srv->tls)
    wstun__log(lg, WSTUN_LOG_INFO, "TLS: on, certificate %s, key %s",
               srv->tls_cert_file, srv->tls_key_file);
  else
    wstun__log(lg, WSTUN_LOG_INFO, "TLS: off");
  char clients[32], body[32];
  wstun__log(lg, WSTUN_LOG_INFO,
             "limits: max-requests-per-tunnel %zu, max-clients-per-token %s, "
             "wstimeout %llu s, httptimeout %llu s, stall-timeout %llu s, "
             "header-timeout %llu s, idle-timeout %llu s, forget-after %llu "
             "s, max-header-bytes %zu, max-body %s",
             srv->max_queue,
             limit_text(srv->max_clients, "", clients, sizeof(clients)),
             (unsigned long long)srv->ws_timeout_ms / 1000,
             (unsigned long long)srv->http_timeout_ms / 1000,
             (unsigned long long)srv->stall_ms / 1000,
             (unsigned long long)srv->header_timeout_ms / 1000,
             (unsigned long long)srv->idle_timeout_ms / 1000,
             (unsigned long long)srv->forget_ms / 1000, srv->max_header,
             limit_text(srv->max_body, " bytes", body, sizeof(body)));
  const char *allow =
      cfg->admin_allow && *cfg->admin_allow ? cfg->admin_allow : NULL;
  const char *proxies = cfg->trusted_proxies && *cfg->trusted_proxies
                            ? cfg->trusted_proxies
                            : "none";
  wstun__log(lg, WSTUN_LOG_INFO,
             "admin: /admin/... and /metrics from this host%s%s, %s; trusted "
             "proxies: %s",
             allow ? " and " : " only", allow ? allow : "",
             srv->admin_token ? "bearer token required" : "no bearer token",
             proxies);
  if (srv->npasswords == 0)
    wstun__log(lg, WSTUN_LOG_INFO,
               "passwords: none (any token of 16 characters or more may open "
               "a tunnel)");
  else
    wstun__log(lg, WSTUN_LOG_INFO, "passwords: %zu token%s need%s one",
               srv->npasswords, srv->npasswords == 1 ? "" : "s",
               srv->npasswords == 1 ? "s" : "");
  for (size_t i = 0; i < srv->npasswords; i++) {
    const char *tok = srv->passwords[i].token;
    size_t len = strlen(tok);
    if (len >= 16)
      continue;
    int shown = (int)(len / 2 < 8 ? len / 2 : 8);
    wstun__log(lg, WSTUN_LOG_WARN,
               "passwords: token %.*s... is %zu characters long: tunnel "
               "clients need 16 or more, so none can use it",
               shown, tok, len);
  }
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
  srv->on_gone = server_gone;
  wstun__list_init(&srv->fronts);
  wstun__logger_init(&srv->log, cfg->log_level, cfg->log_cb, cfg->log_record_cb,
                     cfg->log_user_data, cfg->access_log);
  int rc = wstun__registry_parse_passwords(srv, cfg->passwords);
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
  if (cfg->protocol < 0 || cfg->protocol > 2) {
    rc = WSTUN_EINVAL;
    goto fail_early;
  }
  set_limits(srv, cfg);
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
  rc = wstun__rng_init(&srv->rng);
  if (rc != 0)
    goto fail_early;
  rc = wstun__keyhash_init(&srv->bucket_hash, &srv->rng);
  if (rc != 0) {
    wstun__rng_free(&srv->rng);
    goto fail_early;
  }

  struct sockaddr_storage addr;
  const char *host = cfg->host && *cfg->host ? cfg->host : "0.0.0.0";
  if (listen_addr(loop, host, cfg->port, &addr) != 0) {
    rc = WSTUN_EINVAL;
    goto fail_rng;
  }
  uv_tcp_init(loop, &srv->listener);
  srv->listener.data = srv;
  srv->handles_open = 1;
  int lrc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&addr, 0);
  if (lrc == 0)
    lrc = uv_listen((uv_stream_t *)&srv->listener, 1024, on_connection);
  if (lrc != 0) {
    wstun__log(&srv->log, WSTUN_LOG_ERROR, "cannot listen on %s:%d: %s", host,
               cfg->port, uv_strerror(lrc));
    /* the memory goes once the handle is closed; no user callback fires */
    srv->closing = WSTUN__SRV_FLUSHING;
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
  uint64_t every = sweep_every(srv);
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
  log_config(srv, cfg);
  *out = srv;
  return 0;

fail_rng:
  wstun__keyhash_free(&srv->bucket_hash);
  wstun__rng_free(&srv->rng);
fail_early:
  wstun__free(srv->base_path);
  wstun__cidr_list_free(&srv->trusted_proxies);
  wstun__cidr_list_free(&srv->admin_allow);
  wstun__free(srv->admin_token);
  wstun__registry_free(srv);
  free_tls(srv);
  wstun__free(srv);
  return rc;
}

/* ---- reload ------------------------------------------------------------- */

int wstun_server_reload(wstun_server *srv, const wstun_server_config *cfg) {
  if (srv == NULL || cfg == NULL)
    return WSTUN_EINVAL;
  if (srv->closing)
    return WSTUN_ESTATE;
  if (cfg->protocol < 0 || cfg->protocol > 2)
    return WSTUN_EINVAL;
  int has_cert = cfg->tls_cert_file && *cfg->tls_cert_file;
  int has_key = cfg->tls_key_file && *cfg->tls_key_file;
  if (has_cert != has_key) {
    wstun__log(&srv->log, WSTUN_LOG_ERROR,
               "reload: TLS needs both a certificate and a key");
    return WSTUN_EINVAL;
  }
  if (has_cert != (srv->tls != NULL)) {
    /* the listener's scheme is what clients were told: a restart's job */
    wstun__log(&srv->log, WSTUN_LOG_ERROR,
               "reload: TLS cannot be turned %s by a reload (restart)",
               has_cert ? "on" : "off");
    return WSTUN_EINVAL;
  }
  /* everything that can fail first, into temporaries: on any error the
   * running configuration stays as it was */
  wstun__cidr_list trusted = {0}, allow = {0};
  char *admin_token = NULL, *cert = NULL, *key = NULL;
  wstun__tls_config *tls = NULL;
  int rc = wstun__cidr_list_parse(cfg->trusted_proxies, &trusted);
  if (rc == 0)
    rc = wstun__cidr_list_parse(cfg->admin_allow, &allow);
  if (rc != 0) {
    rc = rc == WSTUN_ENOMEM ? rc : WSTUN_ECIDR;
    goto fail;
  }
  if (cfg->admin_token && *cfg->admin_token &&
      (admin_token = wstun__strdup(cfg->admin_token)) == NULL) {
    rc = WSTUN_ENOMEM;
    goto fail;
  }
  if (has_cert) {
    cert = wstun__strdup(cfg->tls_cert_file);
    key = wstun__strdup(cfg->tls_key_file);
    rc = cert && key ? read_tls(srv, cert, key, &tls) : WSTUN_ENOMEM;
    if (rc != 0)
      goto fail;
  }
  /* the last that can fail; it replaces the list only when it succeeds */
  rc = wstun__registry_parse_passwords(srv, cfg->passwords);
  if (rc != 0)
    goto fail;

  srv->log.level = cfg->log_level;
  srv->log.access = cfg->access_log;
  uint64_t every_was = sweep_every(srv);
  set_limits(srv, cfg);
  if (sweep_every(srv) != every_was) {
    uint64_t every = sweep_every(srv);
    uv_timer_start(&srv->sweep, sweep_tokens, every, every);
  }
  wstun__cidr_list_free(&srv->trusted_proxies);
  srv->trusted_proxies = trusted;
  wstun__cidr_list_free(&srv->admin_allow);
  srv->admin_allow = allow;
  if (srv->admin_token) {
    memset(srv->admin_token, 0, strlen(srv->admin_token));
    wstun__free(srv->admin_token);
  }
  srv->admin_token = admin_token;
  if (has_cert) {
    use_tls(srv, tls);
    wstun__free(srv->tls_cert_file);
    wstun__free(srv->tls_key_file);
    srv->tls_cert_file = cert;
    srv->tls_key_file = key;
  }
  size_t closed = wstun__registry_recheck_auth(srv);
  wstun__log(&srv->log, WSTUN_LOG_INFO,
             "configuration reloaded%s%s (%zu password%s)",
             has_cert ? "; TLS certificate from " : "",
             has_cert ? srv->tls_cert_file : "", srv->npasswords,
             srv->npasswords == 1 ? "" : "s");
  if (closed)
    wstun__log(&srv->log, WSTUN_LOG_INFO,
               "reload: %zu tunnel%s closed: credentials no longer valid",
               closed, closed == 1 ? "" : "s");
  return 0;

fail:
  wstun__cidr_list_free(&trusted);
  wstun__cidr_list_free(&allow);
  if (admin_token) {
    memset(admin_token, 0, strlen(admin_token));
    wstun__free(admin_token);
  }
  wstun__tls_config_unref(tls);
  wstun__free(cert);
  wstun__free(key);
  wstun__log(&srv->log, WSTUN_LOG_WARN,
             "reload failed (%s): the running configuration stays in use",
             wstun_strerror(rc));
  return rc;
}
