/* The operator's JSON documents (PROTOCOL.md section 5), built with
 * jansson from the live registry. */
#include <jansson.h>
#include <string.h>
#include <time.h>

#include "wstun_alloc.h"
#include "wstun_server_int.h"
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

static json_t *active_connections(wstun_server *srv, const wstun__token *t) {
  json_t *list = json_array();
  char ts[32], addr[64];
  for (const wstun__srv_tunnel *st = t->tunnels; st && list; st = st->next)
    for (const wstun__front *f = st->inflight; f; f = f->ex_next) {
      wstun__admin_time(srv, f->start_ms, ts);
      if (f->conn)
        wstun__conn_peer(f->conn, addr, sizeof(addr));
      else
        addr[0] = '\0';
      json_array_append_new(
          list, json_pack("{s:I, s:s, s:s, s:s, s:s}", "request_id",
                          (json_int_t)f->id, "method",
                          llhttp_method_name((llhttp_method_t)f->method), "uri",
                          wstun__http_head_target(&f->parser.head),
                          "remote_addr", addr, "start_time", ts));
    }
  return list;
}

int wstun__admin_auditing(wstun_server *srv, wstun__buf *out) {
  json_t *tunnels = json_object();
  for (size_t i = 0; i < srv->nbuckets && tunnels; i++)
    for (wstun__token *t = srv->buckets[i]; t; t = t->hnext) {
      const wstun__srv_tunnel *st = t->tunnels;
      json_t *o = json_pack(
          "{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:I}", "token", t->name,
          "remote_addr", st ? st->addr : "", "remote_name",
          st && st->remote_name ? st->remote_name : "", "remote_whois", "",
          "client_version", st && st->client_version ? st->client_version : "",
          "last_activity",
          time_or_null(srv, t->last_activity ? t->last_activity : t->last_seen),
          "active_connections", active_connections(srv, t), "pending_requests",
          (json_int_t)wstun__token_pending(t));
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
 * prefixes; the detail is for requesters on this host only. */
typedef struct stats_ctx {
  wstun__buf *out;
  int n, rc;
  size_t pending, dead;
} stats_ctx;

static void stats_token_line(const wstun_tunnel_info *ti, void *ud) {
  stats_ctx *c = ud;
  char red[12];
  c->rc |= wstun__buf_appendf(c->out, "token_clients_%s=%zu\n",
                              wstun__redact(ti->token, red), ti->connections);
}

static void stats_tunnel_block(const wstun_tunnel_info *ti, void *ud) {
  stats_ctx *c = ud;
  char red[12];
  int i = c->n++;
  c->pending += ti->pending_requests;
  if (ti->connections == 0)
    c->dead++;
  c->rc |= wstun__buf_appendf(
      c->out,
      "\ntunnel%02d_token=%s\ntunnel%02d_req_pending=%zu\n"
      "tunnel%02d_tun_addr=%s\ntunnel%02d_tun_dns=%s\n"
      "tunnel%02d_client_version=%s\ntunnel%02d_idle_secs=%.1f\n",
      i, wstun__redact(ti->token, red), i, ti->pending_requests, i,
      ti->remote_addr, i, ti->remote_name, i, ti->client_version, i,
      (double)ti->idle_ms / 1000.0);
}

int wstun__admin_stats_text(wstun_server *srv, int full, wstun__buf *out) {
  wstun_server_stats st;
  wstun_server_get_stats(srv, &st);
  int rc = wstun__buf_appendf(out, "tunnels=%zu\n", st.tunnels);
  if (!full || rc != 0)
    return rc;
  rc |= wstun__buf_appendf(out,
                           "max_requests_per_tunnel=%zu\n"
                           "max_clients_per_token=%zu\n",
                           srv->max_queue, srv->max_clients);
  stats_ctx c = {out, 0, 0, 0, 0};
  wstun_server_foreach_tunnel(srv, stats_token_line, &c);
  rc |= c.rc |
        wstun__buf_appendf(out, "total_clients=%zu\n", st.tunnel_connections);
  wstun_server_foreach_tunnel(srv, stats_tunnel_block, &c);
  /* the Go server's closing lines. Its dead_tunnels counts tokens whose
   * client has not been heard of for 60 s; ours, tokens that have no live
   * connection (kept for -forget-after), which is what that approximates. */
  rc |= wstun__buf_appendf(out, "\nreq_pending=%zu\ndead_tunnels=%zu\n",
                           c.pending, c.dead);
  return rc | c.rc ? WSTUN_ENOMEM : 0;
}
