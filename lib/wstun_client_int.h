/* Private structure of the tunnel client (wstun_client.c): the routing of
 * tunneled requests, over a dialer (wstun_dialer.h) that brings the tunnel
 * up and a pool of backend connections (wstun_upstream.h) that carries
 * them on. */
#ifndef WSTUN_CLIENT_INT_H
#define WSTUN_CLIENT_INT_H

#include <regex.h>
#include <uv.h>

#include "wstun/wstun.h"
#include "wstun_closer.h"
#include "wstun_conn.h"
#include "wstun_dialer.h"
#include "wstun_list.h"
#include "wstun_log.h"
#include "wstun_request.h"
#include "wstun_rng.h"
#include "wstun_tunnel.h"
#include "wstun_upstream.h"
#include "wstun_url.h"

typedef enum {
  WSTUN__CLI_OPEN = 0, /* dialing, connected or redialing */
  WSTUN__CLI_GRACE,    /* closing: requests in progress may finish; no
                          new tunnel is dialed */
  WSTUN__CLI_CLOSING,  /* handles closing, held requests awaited */
  WSTUN__CLI_FLUSHING  /* the write flusher goes last; then freed */
} wstun__cli_phase;

struct wstun_client {
  uv_loop_t *loop;
  wstun__logger log;
  wstun__rng rng;
  wstun__conn_shared shared;
  wstun__dialer dialer;
  wstun__url server_url;
  int has_server;
  /* backends */
  wstun__tls_config *backend_tls; /* https:// backends, made on first use */
  char *ca_file;
  int insecure_backends;
  wstun__upstream_pool pool;
  regex_t re;
  int has_re;
  uint64_t timeout_ms; /* ping every timeout/3, dead after timeout */
  size_t max_handler_body;
  wstun_handler_cb handler;
  void *handler_ud;
  wstun_client_state_cb state_cb;
  wstun_client_pong_cb pong_cb;
  void *state_ud;
  wstun_client_state state; /* the public one (see set_state) */
  /* the dialer's, while a drained tunnel keeps the public one CONNECTED */
  wstun_client_state dial_state;
  int dial_err;
  /* connected */
  wstun__tunnel *t;
  /* v2: the tunnel the server drains (its GOAWAY): it serves its streams
   * to their end while the next one is dialed, then it is closed */
  wstun__tunnel *old_t;
  uv_timer_t retire; /* closes old_t once idle, outside tunnel callbacks */
  int tunnel_alive;  /* tunnels from their start until their memory goes */
  wstun__list reqs;  /* every request alive */
  /* closing */
  wstun__cli_phase phase;
  uv_timer_t grace;        /* checks, while in WSTUN__CLI_GRACE */
  uint64_t grace_deadline; /* ms */
  wstun__closer closer;    /* dialer, tunnel, pool, grace timer, requests */
  int reqs_counted;        /* the closer waits for reqs to empty */
  wstun_client_close_cb close_cb;
  void *close_ud;
};

/* X-Host with -regexp: the value is parsed, and matched in full as
 * scheme://host[:port] followed by its path (a lone "/" is none), never as
 * the raw text. 0: allowed, *u filled (the caller frees it); 1: refused
 * (*u zeroed); WSTUN_ENOMEM. */
int wstun__xhost_check(const regex_t *re, const char *xhost, wstun__url *u);

#endif
