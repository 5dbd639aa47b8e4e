/* Private structures of the tunnel server, shared by its modules:
 * wstun_server.c (config, listener, lifecycle), wstun_registry.c (tokens,
 * tunnels, queues, dispatch), wstun_front.c (the HTTP connections of
 * requesters), wstun_admin.c (what the server tells about itself). */
#ifndef WSTUN_SERVER_INT_H
#define WSTUN_SERVER_INT_H

#include <uv.h>

#include "wstun/wstun.h"
#include "wstun_cidr.h"
#include "wstun_conn.h"
#include "wstun_http.h"
#include "wstun_list.h"
#include "wstun_log.h"
#include "wstun_metrics.h"
#include "wstun_keyhash.h"
#include "wstun_rng.h"
#include "wstun_tunnel.h"

typedef struct wstun__token wstun__token;
typedef struct wstun__srv_tunnel wstun__srv_tunnel;
typedef struct wstun__front wstun__front;
typedef struct wstun__reg_entry wstun__reg_entry;

/* Open connections per peer address, for max_connections_per_ip. */
typedef struct wstun__ipcount {
  struct wstun__ipcount *next;
  unsigned n;
  char ip[48]; /* wstun__ip_count_key */
} wstun__ipcount;
#define WSTUN__IP_BUCKETS 256

typedef struct wstun__password {
  char *token;
  char *password;
} wstun__password;

/* An exchange as the registry sees it (wstun_registry.h): embedded in the
 * exchange, which the registry calls through cbs. */
struct wstun__reg_entry {
  const struct wstun__reg_entry_cbs *cbs;
  wstun__list link; /* in tok->queue (queued) or tun->inflight */
  wstun__token *tok;
  wstun__srv_tunnel *tun; /* the tunnel it was put on, while there */
  uint32_t id;            /* v1: the token's 16-bit id; v2: the stream's */
  unsigned queued : 1;    /* waiting in tok->queue */
  unsigned paused : 1;    /* holds tun's input paused (its requester is slow) */
  unsigned v2_only : 1;   /* an upgrade: only a v2 tunnel can carry it */
};

struct wstun__token {
  char *name;
  wstun__token *hnext; /* hash chain */
  uint64_t hash;       /* keyed hash of name, computed once */
  wstun__list tunnels; /* srv_tunnel.link: live connections serving it */
  size_t ntunnels;
  wstun__list queue; /* reg_entry.link: exchanges waiting for a tunnel */
  size_t nqueued;
  uint64_t last_seen; /* ms: last connect or disconnect */
  /* exchanges pointing at it (wstun__registry_token_hold): never freed
   * while held, whatever their state (a request still uploading its body
   * is in no list of the token's) */
  size_t users;
  unsigned had_tunnel : 1; /* 0: made by _expect_token, no tunnel yet */
  /* the last request id given (Go's lastID), so the first one is 1 */
  uint16_t next_id;
  unsigned rr;  /* round-robin cursor */
  int draining; /* inside drain_queue (not re-entered) */
  /* for /admin/auditing */
  uint64_t last_activity, last_error, last_success; /* uv_now ms, 0 = never */
  char last_error_addr[64], last_success_addr[64];
};

struct wstun__srv_tunnel {
  wstun_server *srv;
  wstun__tunnel *t;     /* NULL once dead */
  wstun__token *tok;    /* NULL once dead */
  wstun__list link;     /* in tok->tunnels */
  wstun__list inflight; /* reg_entry.link: exchanges dispatched here */
  size_t ninflight;
  int v2;               /* negotiated wstun.v2: one stream per exchange */
  uint32_t last_stream; /* v2: the last stream id opened (odd, increasing) */
  int goaway;           /* v2: GOAWAY went either way: no new streams */
  char addr[64];
  wstun__ipcount *ip; /* taken over from the front connection */
  char *client_version;
  /* the Authorization header of its handshake (NULL: none), so that a
   * reload of the passwords can tell whether it would still be let in */
  char *auth;
  char *remote_name;             /* reverse DNS of the peer, once known */
  struct wstun__dns_lookup *dns; /* in flight, or NULL */
};

/* The stages of a server's stop, in order. */
typedef enum {
  WSTUN__SRV_RUNNING = 0,
  WSTUN__SRV_DRAINING, /* grace period: busy fronts finish, no new ones */
  WSTUN__SRV_CLOSING,  /* every handle, front and tunnel being closed */
  WSTUN__SRV_FLUSHING  /* only the write flusher left; then freed */
} wstun__srv_phase;

struct wstun_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_timer_t sweep;
  uv_timer_t grace;
  int port;
  wstun__conn_shared shared;
  wstun__logger log;
  wstun__rng rng;
  /* the bucket hash of tokens and peer addresses (registry.c) */
  wstun__keyhash bucket_hash;
  char *base_path;
  size_t base_len;
  wstun__password *passwords;
  size_t npasswords;
  size_t max_queue;
  size_t max_clients;
  uint64_t ws_timeout_ms, http_timeout_ms, forget_ms;
  uint64_t stall_ms;       /* cut a requester that holds its tunnel this long */
  int v2;                  /* answer a wstun.v2 offer (protocol 2) */
  uint64_t stream_idle_ms; /* v2: a response idle this long is reset */
  size_t max_header;
  uint64_t max_body;
  uint64_t header_timeout_ms;
  uint64_t idle_timeout_ms; /* keep-alive idle and first-byte wait */
  size_t max_conns, max_conns_per_ip, nconns;
  /* connections refused over a cap: all, and since the last log line */
  uint64_t refused_total, refused_unlogged, refused_logged_ms;
  int refused_logged;
  wstun__ipcount *ips[WSTUN__IP_BUCKETS];
  wstun__token **buckets;
  size_t nbuckets, ntokens;
  wstun__list fronts; /* front.link */
  size_t nfronts;
  size_t live_tunnels; /* srv_tunnel structures not yet freed */
  size_t dns_lookups;  /* reverse lookups of live tunnels' peers in flight */
  uint64_t completed, errored; /* exchanges answered by a tunnel / not */
  wstun__metrics metrics;
  wstun__cidr_list trusted_proxies, admin_allow;
  char *admin_token;
  wstun__tls_config *tls; /* NULL: plain HTTP */
  char *tls_cert_file, *tls_key_file;
  wstun__srv_phase closing;
  int handles_open;
  /* something the close waits for went away (a front, a tunnel, a
   * handle): wstun_server.c's, so that lower modules need not call up */
  void (*on_gone)(wstun_server *srv);
  /* takes a connection off the listener when there is no memory to serve
   * it (libuv reports no more connections until one is accepted) */
  uv_tcp_t spare;
  int spare_busy, accept_waiting;
  wstun_server_close_cb close_cb;
  void *close_ud;
  /* clusters (wstun_server_drain.c): requests for a token without a tunnel
   * wait this long for one (0: the lone server's ways); the last
   * /_health_check (uv_now ms, 0 = never); the drain under way, or NULL */
  uint64_t tunnel_wait_ms;
  uint64_t health_checked_ms;
  struct wstun__drain *drain;
};

/* wstun_server_drain.c: a drain's wait cancelled by wstun_server_close().
 * (wstun_front.c answers /_health_check: 503 while srv->drain is set.) */
void wstun__server_drain_cancel(wstun_server *srv);

/* wstun_admin.c: JSON documents of /admin/monitoring and /admin/auditing */
int wstun__admin_monitoring(wstun_server *srv, wstun__buf *out);
int wstun__admin_auditing(wstun_server *srv, wstun__buf *out);
/* /_stats text; `full` adds the per-token detail. */
int wstun__admin_stats_text(wstun_server *srv, int full, wstun__buf *out);
/* /metrics: the Prometheus text exposition 0.0.4 */
int wstun__admin_metrics(wstun_server *srv, wstun__buf *out);
/* RFC 3339 UTC ("2025-01-09T15:30:45Z") of a uv_now() instant. */
void wstun__admin_time(wstun_server *srv, uint64_t ms, char out[32]);

#endif
