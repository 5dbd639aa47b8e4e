/* A node's way out of a cluster (wstun_server_drain()): /_health_check
 * turns 503 while the node keeps serving, so the balancer stops sending
 * it new work while every request it routes there by stickiness is still
 * answered; after the wait the usual stop moves the tunnels away (v1
 * clients: their tunnels close and they reconnect through the balancer;
 * this is also the moment for a v2 GOAWAY). Part of the server module. */
#include "wstun_alloc.h"
#include "wstun_server_int.h"

/* A /_health_check this recent means a balancer is watching. */
#define WATCHED_MS 10000

typedef struct wstun__drain {
  uv_timer_t timer;
  wstun_server *srv;
  unsigned grace_ms;
  wstun_server_close_cb cb;
  void *ud;
} wstun__drain;

static void drain_free(uv_handle_t *h) {
  wstun__free(h->data);
}

static void drain_over(uv_timer_t *t) {
  wstun__drain *d = t->data;
  wstun_server *srv = d->srv;
  srv->drain = NULL;
  uv_close((uv_handle_t *)&d->timer, drain_free);
  wstun__log(&srv->log, WSTUN_LOG_INFO,
             "drain: the balancer had its time; stopping (tunnels move once "
             "their requests are answered)");
  wstun_server_close(srv, d->grace_ms, d->cb, d->ud);
}

void wstun__server_drain_cancel(wstun_server *srv) {
  wstun__drain *d = srv->drain;
  if (d == NULL)
    return;
  srv->drain = NULL;
  uv_timer_stop(&d->timer);
  uv_close((uv_handle_t *)&d->timer, drain_free);
}

void wstun_server_drain(wstun_server *srv, unsigned wait_ms, unsigned grace_ms,
                        wstun_server_close_cb cb, void *user_data) {
  if (srv == NULL || srv->closing || srv->drain)
    return;
  uint64_t now = uv_now(srv->loop);
  int watched =
      srv->health_checked_ms != 0 && now - srv->health_checked_ms < WATCHED_MS;
  wstun__drain *d = wait_ms && watched ? wstun__calloc(1, sizeof(*d)) : NULL;
  if (d == NULL) {
    /* nobody to tell: the wait's time goes to the busy requests */
    wstun_server_close(srv, grace_ms + wait_ms, cb, user_data);
    return;
  }
  d->srv = srv;
  d->grace_ms = grace_ms;
  d->cb = cb;
  d->ud = user_data;
  uv_timer_init(srv->loop, &d->timer);
  d->timer.data = d;
  uv_timer_start(&d->timer, drain_over, wait_ms, 0);
  srv->drain = d;
  wstun__log(&srv->log, WSTUN_LOG_INFO,
             "drain: /_health_check answers 503 for %u ms while everything "
             "else is served",
             wait_ms);
}
