#include "wstun_metrics.h"

static const double bucket_le[WSTUN__HIST_BUCKETS] = {
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};

static const char *const hs_names[WSTUN__HS_REASONS] = {
    "bad_method",   "no_token",         "short_token",
    "unauthorized", "too_many_clients", "bad_upgrade"};

void wstun__metrics_answer(wstun__metrics *m, int status,
                           uint64_t duration_ms) {
  int cls = status / 100;
  if (cls >= 1 && cls <= 5)
    m->by_class[cls]++;
  double secs = (double)duration_ms / 1000.0;
  for (int i = 0; i < WSTUN__HIST_BUCKETS; i++)
    if (secs <= bucket_le[i])
      m->hist[i]++;
  m->hist_count++;
  m->hist_sum += secs;
}

#define GAUGE(name, help, value)                                               \
  rc |= wstun__buf_appendf(                                                    \
      out, "# HELP " name " " help "\n# TYPE " name " gauge\n" name " %llu\n", \
      (unsigned long long)(value))
#define COUNTER(name, help, value)                                             \
  rc |= wstun__buf_appendf(out,                                                \
                           "# HELP " name " " help "\n# TYPE " name            \
                           " counter\n" name " %llu\n",                        \
                           (unsigned long long)(value))

int wstun__metrics_write(const wstun__metrics *m, const wstun_server_stats *st,
                         size_t queued, const size_t by_conns[4],
                         uint64_t bytes_in, uint64_t bytes_out,
                         wstun__buf *out) {
  int rc = 0;
  GAUGE("wstun_tunnels", "Tokens with at least one live tunnel connection.",
        st->tunnels);
  GAUGE("wstun_tunnel_connections", "Live tunnel connections.",
        st->tunnel_connections);
  GAUGE("wstun_tokens", "Tokens known to the server.", st->tokens);
  rc |= wstun__buf_appendf(
      out, "# HELP wstun_tokens_by_connections Tokens by their number of live "
           "tunnel connections.\n# TYPE wstun_tokens_by_connections gauge\n");
  static const char *const k[4] = {"0", "1", "2", "3+"};
  for (int i = 0; i < 4; i++)
    rc |= wstun__buf_appendf(
        out, "wstun_tokens_by_connections{connections=\"%s\"} %zu\n", k[i],
        by_conns[i]);
  GAUGE("wstun_pending_requests", "Requests queued or in flight.",
        st->pending_requests);
  GAUGE("wstun_queued_requests",
        "Requests waiting for a tunnel connection (queue depth).", queued);
  GAUGE("wstun_front_connections", "Open connections of HTTP requesters.",
        st->front_connections);
  uint64_t mem_bytes, mem_blocks;
  if (wstun_memory_in_use(&mem_bytes, &mem_blocks) == 0) {
    GAUGE("wstun_memory_bytes",
          "Bytes libwstun holds from the default allocator (usable sizes).",
          mem_bytes);
    GAUGE("wstun_memory_blocks",
          "Blocks libwstun holds from the default allocator.", mem_blocks);
  }
  COUNTER("wstun_tunnel_connects_total", "Tunnel connections accepted.",
          m->tunnel_connects);
  COUNTER("wstun_tunnel_disconnects_total", "Tunnel connections ended.",
          m->tunnel_disconnects);
  COUNTER("wstun_received_bytes_total", "Bytes read from all sockets.",
          bytes_in);
  COUNTER("wstun_sent_bytes_total", "Bytes written to all sockets.", bytes_out);
  rc |= wstun__buf_appendf(
      out, "# HELP wstun_requests_total Tunneled requests answered, by status "
           "class.\n# TYPE wstun_requests_total counter\n");
  for (int c = 1; c <= 5; c++)
    rc |=
        wstun__buf_appendf(out, "wstun_requests_total{status=\"%dxx\"} %llu\n",
                           c, (unsigned long long)m->by_class[c]);
  rc |= wstun__buf_appendf(
      out, "# HELP wstun_request_duration_seconds Time from request head to "
           "response head.\n# TYPE wstun_request_duration_seconds histogram\n");
  for (int i = 0; i < WSTUN__HIST_BUCKETS; i++)
    rc |= wstun__buf_appendf(
        out, "wstun_request_duration_seconds_bucket{le=\"%g\"} %llu\n",
        bucket_le[i], (unsigned long long)m->hist[i]);
  rc |= wstun__buf_appendf(
      out,
      "wstun_request_duration_seconds_bucket{le=\"+Inf\"} %llu\n"
      "wstun_request_duration_seconds_sum %.6f\n"
      "wstun_request_duration_seconds_count %llu\n",
      (unsigned long long)m->hist_count, m->hist_sum,
      (unsigned long long)m->hist_count);
  rc |= wstun__buf_appendf(
      out, "# HELP wstun_handshake_failures_total Tunnel handshakes refused, "
           "by reason.\n# TYPE wstun_handshake_failures_total counter\n");
  for (int r = 0; r < WSTUN__HS_REASONS; r++)
    rc |= wstun__buf_appendf(
        out, "wstun_handshake_failures_total{reason=\"%s\"} %llu\n",
        hs_names[r], (unsigned long long)m->hs_failures[r]);
  return rc ? WSTUN_ENOMEM : 0;
}
