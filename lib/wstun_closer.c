/* The teardown counter (see wstun_closer.h): the one uv_close callback. */
#include "wstun_closer.h"

static void on_handle_closed(uv_handle_t *h) {
  wstun__closer_done(h->data);
}

void wstun__closer_close_handle(wstun__closer *c, uv_handle_t *h) {
  wstun__closer_add(c);
  h->data = c;
  uv_close(h, on_handle_closed);
}
