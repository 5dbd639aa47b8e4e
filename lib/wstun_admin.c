/* The operator's JSON documents (PROTOCOL.md section 5), built with
 * jansson from the live registry. */
#include <jansson.h>
#include <string.h>
#include <time.h>

#include "wstun_alloc.h"
#include "wstun_server_int.h"

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

static size_t token_pending(const wstun__token *t) {
  size_t n = t->nqueued;
  for (const wstun__srv_tunnel *st = t->tunnels; st; st = st->next)
    n += st->ninflight;
  return n;
}

int wstun__admin_monitoring(wstun_server *srv, wstun__buf *out) {
  size_t unique = 0, conns = 0, pending = 0;
  for (size_t i = 0; i < srv->nbuckets; i++)
    for (wstun__token *t = srv->buckets[i]; t; t = t->hnext) {
      unique += t->ntunnels > 0;
      conns += t->ntunnels;
      pending += token_pending(t);
    }
  char ts[32];
  wstun__admin_time(srv, uv_now(srv->loop), ts);
  return dump(json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "timestamp", ts,
                        "unique_tunnels", (json_int_t)unique,
                        "tunnel_connections", (json_int_t)conns,
                        "pending_requests", (json_int_t)pending,
                        "completed_requests", (json_int_t)srv->completed,
                        "errored_requests", (json_int_t)srv->errored),
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
          "{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:s, s:o, s:s, s:I}",
          "token", t->name, "remote_addr", st ? st->addr : "", "remote_name",
          "", "remote_whois", "", "client_version",
          st && st->client_version ? st->client_version : "", "last_activity",
          time_or_null(srv, t->last_activity ? t->last_activity : t->last_seen),
          "active_connections", active_connections(srv, t), "last_error_time",
          time_or_null(srv, t->last_error), "last_error_addr",
          t->last_error_addr, "last_success_time",
          time_or_null(srv, t->last_success), "last_success_addr",
          t->last_success_addr, "pending_requests",
          (json_int_t)token_pending(t));
      json_object_set_new(tunnels, t->name, o);
    }
  char ts[32];
  wstun__admin_time(srv, uv_now(srv->loop), ts);
  return dump(json_pack("{s:s, s:o}", "timestamp", ts, "tunnels", tunnels), out);
}
