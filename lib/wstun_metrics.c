/* The counters behind /metrics, kept by the server as exchanges end and
 * tunnels come and go. Rendered by wstun_admin.c. */
#include "wstun_metrics.h"

const double wstun__metrics_le[WSTUN__HIST_BUCKETS] = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

const char *const wstun__metrics_hs_names[WSTUN__HS_REASONS] = {
    "bad_method",   "no_token",         "short_token",
    "unauthorized", "too_many_clients", "bad_upgrade"};

void wstun__metrics_answer(wstun__metrics *m, int status,
                           uint64_t duration_ms) {
  int cls = status / 100;
  if (cls >= 1 && cls <= 5)
    m->by_class[cls]++;
  double secs = (double)duration_ms / 1000.0;
  for (int i = 0; i < WSTUN__HIST_BUCKETS; i++)
    if (secs <= wstun__metrics_le[i])
      m->hist[i]++;
  m->hist_count++;
  m->hist_sum += secs;
}
