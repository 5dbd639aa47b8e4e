/* The teardown of an object that owns several libuv handles (a timer, a
 * connection, …): each close completes in its own callback, on a later loop
 * turn, and the object may be freed only after the last one. A closer
 * counts the closes still pending and calls `on_closed` once, at zero.
 *
 *   wstun__closer_start(&x->closer, x_free);  // holds the count above 0
 *   wstun__closer_close_handle(&x->closer, (uv_handle_t *)&x->timer);
 *   wstun__closer_add(&x->closer);            // one more: the connection
 *   wstun__conn_close(x->conn);               // its on_close calls _done
 *   wstun__closer_done(&x->closer);           // drop the hold
 *
 * on_closed may run inside wstun__closer_done (the last one), never inside
 * wstun__closer_start or _add. */
#ifndef WSTUN_CLOSER_H
#define WSTUN_CLOSER_H

#include <uv.h>

typedef struct wstun__closer wstun__closer;
struct wstun__closer {
  unsigned pending;
  void (*on_closed)(wstun__closer *c); /* find the owner with container_of */
};

/* Begins a teardown with a count of one (the caller's hold). */
static inline void wstun__closer_start(wstun__closer *c,
                                       void (*on_closed)(wstun__closer *c)) {
  c->pending = 1;
  c->on_closed = on_closed;
}

static inline void wstun__closer_add(wstun__closer *c) {
  c->pending++;
}

static inline void wstun__closer_done(wstun__closer *c) {
  if (--c->pending == 0)
    c->on_closed(c);
}

/* uv_close()s h and counts it. h->data is taken over for the close: no
 * other callback of h may run after uv_close anyway. */
void wstun__closer_close_handle(wstun__closer *c, uv_handle_t *h);

#endif
