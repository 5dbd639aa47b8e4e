/* Counters for /metrics (Prometheus text exposition 0.0.4), kept by the
 * server as exchanges end and tunnels come and go; wstun_admin.c renders
 * them. */
#ifndef WSTUN_METRICS_H
#define WSTUN_METRICS_H

#include <stdint.h>

#include "wstun/wstun.h"
#include "wstun_buf.h"

#define WSTUN__HIST_BUCKETS 12

/* why a tunnel handshake was refused */
typedef enum {
  WSTUN__HS_BAD_METHOD = 0,
  WSTUN__HS_NO_TOKEN,
  WSTUN__HS_SHORT_TOKEN,
  WSTUN__HS_UNAUTHORIZED,
  WSTUN__HS_TOO_MANY_CLIENTS,
  WSTUN__HS_BAD_UPGRADE,
  WSTUN__HS_REASONS
} wstun__hs_reason;

typedef struct wstun__metrics {
  uint64_t by_class[6];               /* answers by status class 1xx..5xx */
  uint64_t hist[WSTUN__HIST_BUCKETS]; /* request durations, cumulative below */
  uint64_t hist_count;
  double hist_sum; /* seconds */
  uint64_t tunnel_connects, tunnel_disconnects;
  uint64_t hs_failures[WSTUN__HS_REASONS];
} wstun__metrics;

void wstun__metrics_answer(wstun__metrics *m, int status, uint64_t duration_ms);

/* the histogram's upper bounds (seconds) and the reasons' label values */
extern const double wstun__metrics_le[WSTUN__HIST_BUCKETS];
extern const char *const wstun__metrics_hs_names[WSTUN__HS_REASONS];

#endif
