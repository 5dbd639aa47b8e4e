/* What the server tells about itself: the operator's JSON documents
 * (PROTOCOL.md section 5, built with jansson), the /_stats text and the
 * Prometheus exposition of /metrics, all rendered from the registry and
 * the counters. */
#include <jansson.h>
#include <string.h>
#include <time.h>

#include "wstun_alloc.h"
#include "wstun_exchange.h"
#include "wstun_registry.h"
#include "wstun_util.h"

void wstun__admin_time(wstun_server *srv, uint64_t ms, char out[32]) {
  /* uv_now() is monotonic: convert through the current wall clock */
  time_t now = time(NULL);
  uint64_t age = (uv_now(srv->loop) - ms) / 1000;
  time_t at = now - (time_t)age;
  struct tm tm;
  gmtime_r(&at, &tm);
  strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *time_or_null(wstun_server *srv, uint64_t ms) {
  if (ms == 0)
    return json_null();
  char ts[32];
  wstun__admin_time(srv, ms, ts);
  return json_string(ts);
}

static int dump(json_t *doc, wstun__buf *out) {
  if (doc == NULL)
    return WSTUN_ENOMEM;
  char *text = json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS);
  json_decref(doc);
  if (text == NULL)
    return WSTUN_ENOMEM;
  int rc = wstun__buf_append_str(out, text);
  rc |= wstun__buf_append(out, "\n", 1);
  free(text);
  return rc ? WSTUN_ENOMEM : 0;
}

int wstun__admin_monitoring(wstun_server *srv, wstun__buf *out) {
  wstun_server_stats st;
  wstun_server_get_stats(srv, &st);
  char ts[32];
  wstun__admin_time(srv, uv_now(srv->loop), ts);
  return dump(json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "timestamp", ts,
                        "unique_tunnels", (json_int_t)st.tunnels,
                        "tunnel_connections", (json_int_t)st.tunnel_connections,
                        "pending_requests", (json_int_t)st.pending_requests,
                        "completed_requests", (json_int_t)st.completed_requests,
                        "errored_requests", (json_int_t)st.errored_requests),
              out);
}

typedef struct active_ctx {
  wstun_server *srv;
  json_t *list;
} active_ctx;

static void active_one(wstun__reg_entry *e, void *ud) {
  active_ctx *c = ud;
  wstun__exchange_info ei;
  char ts[32];
  if (c->list == NULL)
    return;
  wstun__exchange_info_get(wstun__exchange_of(e), &ei);
  wstun__admin_time(c->srv, ei.start_ms, ts);
  json_array_append_new(
      c->list, json_pack("{s:I, s:s, s:s, s:s, s:s}", "request_id",
                         (json_int_t)ei.id, "method", ei.method, "uri", ei.uri,
                         "remote_addr", ei.remote_addr, "start_time", ts));
}

static json_t *active_connections(wstun_server *srv, const wstun__token *t) {
  active_ctx c = {srv, json_array()};
  wstun__registry_foreach_inflight(t, active_one, &c);
  return c.list;
}

int wstun__admin_auditing(wstun_server *srv, wstun__buf *out) {
  json_t *tunnels = json_object();
  for (size_t i = 0; i < srv->nbuckets && tunnels; i++)
    for (wstun__token *t = srv->buckets[i]; t; t = t->hnext) {
      const wstun__srv_tunnel *st = wstun__token_first_tunnel(t);
      json_t *o = json_pack(
          "{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:I}", "token", t->name,
          "remote_addr", st ? st->addr : "", "remote_name",
          st && st->remote_name ? st->remote_name : "", "remote_whois", "",
          "client_version", st && st->client_version ? st->client_version : "",
          "last_activity",
          time_or_null(srv, t->last_activity ? t->last_activity : t->last_seen),
          "active_connections", active_connections(srv, t), "pending_requests",
          (json_int_t)wstun__token_pending(t));
      /* ours (the Go server has no v2): the newest connection's */
      if (o != NULL && st != NULL)
        json_object_set_new(o, "protocol", json_string(st->v2 ? "v2" : "v1"));
      /* omitted until they happen, as the Go server does (omitempty) */
      if (o != NULL && t->last_error) {
        json_object_set_new(o, "last_error_time",
                            time_or_null(srv, t->last_error));
        json_object_set_new(o, "last_error_addr",
                            json_string(t->last_error_addr));
      }
      if (o != NULL && t->last_success) {
        json_object_set_new(o, "last_success_time",
                            time_or_null(srv, t->last_success));
        json_object_set_new(o, "last_success_addr",
                            json_string(t->last_success_addr));
      }
      json_object_set_new(tunnels, t->name, o);
    }
  char ts[32];
  wstun__admin_time(srv, uv_now(srv->loop), ts);
  return dump(json_pack("{s:s, s:o}", "timestamp", ts, "tunnels", tunnels),
              out);
}

/* /_stats in the Go tool's format. Tokens appear only as 8-character
 * prefixes; the detail is for requesters on this host only. Unlike the Go
 * server, the per-token client counts are in that detail too (a token's
 * first 8 characters are no one else's business), and total_clients is
 * always there. */
typedef struct stats_ctx {
  wstun__buf *out;
  int n, rc;
  size_t reqs, dead;
} stats_ctx;

static void stats_token_line(const wstun_tunnel_info *ti, void *ud) {
  stats_ctx *c = ud;
  char red[12];
  if (ti->connections > 0) /* Go lists the tokens with clients */
    c->rc |= wstun__buf_appendf(c->out, "token_clients_%s=%zu\n",
                                wstun__redact(ti->token, red), ti->connections);
}

static void stats_tunnel_block(const wstun_tunnel_info *ti, void *ud) {
  stats_ctx *c = ud;
  char red[12];
  int i = c->n++;
  c->rc |=
      wstun__buf_appendf(c->out,
                         "\ntunnel%02d_token=%s\ntunnel%02d_req_pending=%zu\n"
                         "tunnel%02d_tun_addr=%s\n",
                         i, wstun__redact(ti->token, red), i,
                         ti->pending_requests, i, ti->remote_addr);
  if (ti->remote_name[0])
    c->rc |= wstun__buf_appendf(c->out, "tunnel%02d_tun_dns=%s\n", i,
                                ti->remote_name);
  if (ti->client_version[0])
    c->rc |= wstun__buf_appendf(c->out, "tunnel%02d_client_version=%s\n", i,
                                ti->client_version);
  if (ti->protocol[0]) /* ours: the Go server has no v2 */
    c->rc |=
        wstun__buf_appendf(c->out, "tunnel%02d_protocol=%s\n", i, ti->protocol);
  c->rc |= wstun__buf_appendf(c->out, "tunnel%02d_idle_secs=%.1f\n", i,
                              (double)ti->idle_ms / 1000.0);
  c->reqs += ti->pending_requests;
  c->dead += ti->idle_ms > 60000; /* the Go server's "dead" */
}

int wstun__admin_stats_text(wstun_server *srv, int full, wstun__buf *out) {
  wstun_server_stats st;
  wstun_server_get_stats(srv, &st);
  stats_ctx c = {out, 0, 0, 0, 0};
  int rc = wstun__buf_appendf(out,
                              "tunnels=%zu\n"
                              "max_requests_per_tunnel=%zu\n"
                              "max_clients_per_token=%zu\n",
                              st.tunnels, srv->max_queue, srv->max_clients);
  if (full && srv->max_clients > 0)
    wstun_server_foreach_tunnel(srv, stats_token_line, &c);
  /* the Go server has it only with a limit; scripts here read it always */
  if (full || srv->max_clients > 0)
    rc |= wstun__buf_appendf(out, "total_clients=%zu\n", st.tunnel_connections);
  if (!full) {
    rc |= wstun__buf_append_str(
        out, "More stats available when called from localhost...\n");
    return rc ? WSTUN_ENOMEM : 0;
  }
  wstun_server_foreach_tunnel(srv, stats_tunnel_block, &c);
  rc |= c.rc | wstun__buf_appendf(out, "\nreq_pending=%zu\ndead_tunnels=%zu\n",
                                  c.reqs, c.dead);
  return rc ? WSTUN_ENOMEM : 0;
}

/* ---- /metrics ----------------------------------------------------------- */

#define GAUGE(name, help, value)                                               \
  rc |= wstun__buf_appendf(                                                    \
      out, "# HELP " name " " help "\n# TYPE " name " gauge\n" name " %llu\n", \
      (unsigned long long)(value))
#define COUNTER(name, help, value)                                             \
  rc |= wstun__buf_appendf(out,                                                \
                           "# HELP " name " " help "\n# TYPE " name            \
                           " counter\n" name " %llu\n",                        \
                           (unsigned long long)(value))

static int metrics_write(const wstun__metrics *m, const wstun_server_stats *st,
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
        wstun__metrics_le[i], (unsigned long long)m->hist[i]);
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
        wstun__metrics_hs_names[r], (unsigned long long)m->hs_failures[r]);
  return rc ? WSTUN_ENOMEM : 0;
}

int wstun__admin_metrics(wstun_server *srv, wstun__buf *out) {
  wstun_server_stats st;
  wstun_server_get_stats(srv, &st);
  size_t queued = 0, by_conns[4] = {0, 0, 0, 0};
  for (size_t i = 0; i < srv->nbuckets; i++)
    for (const wstun__token *t = srv->buckets[i]; t; t = t->hnext) {
      queued += t->nqueued;
      by_conns[t->ntunnels < 3 ? t->ntunnels : 3]++;
    }
  int rc = metrics_write(&srv->metrics, &st, queued, by_conns,
                         srv->shared.bytes_in, srv->shared.bytes_out, out);
  rc |= wstun__buf_appendf(
      out,
      "# HELP wstun_connections Open connections counted against "
      "wstun_max_connections (requesters and tunnels).\n"
      "# TYPE wstun_connections gauge\nwstun_connections %zu\n"
      "# HELP wstun_max_connections The cap in effect (0 = none).\n"
      "# TYPE wstun_max_connections gauge\nwstun_max_connections %zu\n"
      "# HELP wstun_max_connections_per_ip The cap per peer address in "
      "effect (0 = none).\n"
      "# TYPE wstun_max_connections_per_ip gauge\n"
      "wstun_max_connections_per_ip %zu\n"
      "# HELP wstun_connections_refused_total Connections answered 503 "
      "over a connection cap.\n"
      "# TYPE wstun_connections_refused_total counter\n"
      "wstun_connections_refused_total %llu\n"
      "# HELP wstun_draining 1 while the server drains (/_health_check "
      "answers 503 before it stops), else 0.\n"
      "# TYPE wstun_draining gauge\nwstun_draining %d\n",
      srv->nconns, srv->max_conns, srv->max_conns_per_ip,
      (unsigned long long)srv->refused_total, srv->drain != NULL);
  if (srv->tls) /* a reloaded certificate's configuration carries these on */
    rc |= wstun__buf_appendf(
        out,
        "# HELP wstun_tls_handshakes_total TLS handshakes completed.\n"
        "# TYPE wstun_tls_handshakes_total counter\n"
        "wstun_tls_handshakes_total %llu\n"
        "# HELP wstun_tls_resumed_total TLS sessions resumed from a session "
        "ticket (one round trip, no key exchange).\n"
        "# TYPE wstun_tls_resumed_total counter\n"
        "wstun_tls_resumed_total %llu\n",
        (unsigned long long)srv->tls->handshakes,
        (unsigned long long)srv->tls->resumed);
  return rc ? WSTUN_ENOMEM : 0;
}
