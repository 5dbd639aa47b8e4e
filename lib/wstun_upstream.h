/* Keep-alive connections from the tunnel client to HTTP backends. A pool
 * is handed what it needs at init (loop, logger, timeouts, and a callback
 * table for what only its owner knows: the TLS configuration for https://
 * backends, and the end of a close); a request (wstun_request.h) is given
 * to it with its head already written in req->to_backend, and the pool
 * answers it through the request alone. */
#ifndef WSTUN_UPSTREAM_H
#define WSTUN_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "wstun_conn.h"
#include "wstun_list.h"
#include "wstun_log.h"
#include "wstun_request.h"
#include "wstun_tls.h"

typedef struct wstun__upstream_pool_cbs {
  /* The TLS configuration for https:// backends, or NULL with the reason
   * in `why`. */
  wstun__tls_config *(*backend_tls)(void *ud, char *why, size_t n);
  /* After wstun__upstream_pool_close(): the last connection's handles are
   * closed. May run inside wstun__upstream_pool_close. */
  void (*on_closed)(void *ud);
} wstun__upstream_pool_cbs;

typedef struct wstun__upstream_pool {
  uv_loop_t *loop;
  wstun__conn_shared *shared;
  const wstun__logger *log;
  uint64_t backend_timeout_ms; /* the backend must have answered */
  uint64_t stall_ms;           /* a backend holding the tunnel is given up */
  uint64_t idle_ms;            /* idle keep-alive connections are closed */
  size_t max_idle;             /* idle connections kept per backend */
  const wstun__upstream_pool_cbs *cbs;
  void *ud;
  wstun__list all;  /* every connection, until its handles are closed */
  wstun__list idle; /* kept alive, most recently used first */
  size_t nall, nidle;
  int draining; /* finished connections are closed, not kept */
  int closing;  /* 1 once closing, 2 once on_closed was called */
} wstun__upstream_pool;

/* Fills the pool; the caller then sets the limits (fields above). */
void wstun__upstream_pool_init(wstun__upstream_pool *pool, uv_loop_t *loop,
                               wstun__conn_shared *shared,
                               const wstun__logger *log,
                               const wstun__upstream_pool_cbs *cbs, void *ud);
/* Starts forwarding req (head already in req->to_backend) to its backend. */
void wstun__upstream_start(wstun__upstream_pool *pool, wstun_request *req);
/* More request bytes were appended to req->to_backend (or it completed). */
void wstun__upstream_push(wstun_request *req);
/* A pipe's request direction ended (END: the requester closed its side):
 * the backend connection is closed once it took what was written to it,
 * and the response direction ends (END) with what the backend sent so
 * far. No-op unless req is piping. */
void wstun__upstream_pipe_end(wstun_request *req);
/* The request goes away (tunnel died, request aborted): close its backend
 * connection if any. */
void wstun__upstream_detach(wstun_request *req);
/* From now on a connection whose exchange ends is closed, not kept. */
void wstun__upstream_pool_drain(wstun__upstream_pool *pool);
/* Closes every connection; cbs->on_closed fires once all are gone. */
void wstun__upstream_pool_close(wstun__upstream_pool *pool);

#endif
