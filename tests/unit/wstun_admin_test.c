/* What the server tells about itself, rendered from a registry built by
 * hand: the Prometheus exposition of /metrics, the /_stats text (short
 * and full), and the JSON of /admin/monitoring and /admin/auditing with an
 * exchange in flight. */
#define _GNU_SOURCE /* memmem */
#include <jansson.h>

#include "srv_fixture.h"
#include "test.h"
#include "wstun_exchange.h"

#define TOK_A "admin-test-token-aaaaaaaaaaa" /* "admin-te..." in /_stats */
#define TOK_B "zzzzzzzz-token-with-no-client"

static int has_line(const wstun__buf *b, const char *line) {
  char want[256];
  snprintf(want, sizeof(want), "\n%s\n", line);
  const char *d = (const char *)wstun__buf_data(b);
  size_t n = wstun__buf_size(b), k = strlen(line);
  if (n >= k + 1 && memcmp(d, line, k) == 0 && d[k] == '\n')
    return 1; /* the first line */
  return memmem(d, n, want, strlen(want)) != NULL;
}

#define CHECK_LINE(buf, line)                                                  \
  do {                                                                         \
    test_context("%s", line);                                                  \
    CHECK(has_line(buf, line));                                                \
    test_context(NULL);                                                        \
  } while (0)

typedef struct reg {
  wstun_server *srv;
  wstun__token *a, *b;
  wstun__srv_tunnel *st1, *st2;
  wstun__http_parser req;
  wstun__http_head *head;
  wstun__exchange ex; /* in flight on st1 */
} reg;

static int keep_head(void *ud, wstun__http_head *h) {
  ((reg *)ud)->head = h;
  return 1;
}
static const wstun__http_parser_cbs head_cbs = {.on_head = keep_head};

/* Token A: two tunnel connections, one exchange in flight, one queued
 * (counted only); token B: none. Four answers counted by class. */
static void reg_build(reg *r) {
  memset(r, 0, sizeof(*r));
  r->srv = sf_begin();
  wstun_server *srv = r->srv;
  r->b = sf_add_token(srv, TOK_B);
  r->a = sf_add_token(srv, TOK_A);
  r->st2 = sf_add_tunnel(r->a, "192.0.2.2:2222");
  r->st1 = sf_add_tunnel(r->a, "192.0.2.1:1111"); /* listed first */
  r->st1->client_version = wstun__strdup("1.2.3");
  r->a->nqueued = 1;
  wstun__http_parser_init(&r->req, HTTP_REQUEST, 65536, 0, &head_cbs, r);
  const char *raw = "POST /up?x HTTP/1.1\r\nHost: h\r\n\r\n";
  size_t used;
  wstun__http_parser_feed(&r->req, (const uint8_t *)raw, strlen(raw), &used);
  r->ex.srv = srv;
  r->ex.head = r->head;
  r->ex.method = HTTP_POST;
  r->ex.reg.id = 0x2a;
  r->ex.reg.tok = r->a;
  r->ex.reg.tun = r->st1;
  r->ex.start_ms = uv_now(srv->loop);
  snprintf(r->ex.peer, sizeof(r->ex.peer), "198.51.100.9:999");
  wstun__list_push_back(&r->st1->inflight, &r->ex.reg.link);
  r->st1->ninflight = 1;
  wstun__metrics_answer(&srv->metrics, 200, 3);   /* 0.003 s */
  wstun__metrics_answer(&srv->metrics, 204, 700); /* 0.7 s */
  wstun__metrics_answer(&srv->metrics, 404, 1);
  wstun__metrics_answer(&srv->metrics, 504, 20000);
  srv->metrics.tunnel_connects = 5;
  srv->metrics.tunnel_disconnects = 3;
  srv->metrics.hs_failures[WSTUN__HS_UNAUTHORIZED] = 2;
  srv->completed = 2;
  srv->errored = 2;
  srv->nfronts = 4;
  srv->nconns = 6;
  srv->max_conns = 100;
  srv->max_conns_per_ip = 10;
  srv->refused_total = 8;
  srv->max_clients = 3;
}

static void reg_free(reg *r) {
  wstun__list_remove(&r->ex.reg.link);
  r->a->nqueued = 0;
  wstun__free(r->st1->client_version);
  r->st1->client_version = NULL;
  wstun__http_parser_free(&r->req);
  sf_end(r->srv);
}

TEST(prometheus) {
  reg r;
  reg_build(&r);
  wstun__buf out = WSTUN__BUF_INIT;
  CHECK_EQ_INT(wstun__admin_metrics(r.srv, &out), 0);
  CHECK_LINE(&out, "# TYPE wstun_tunnels gauge");
  CHECK_LINE(&out, "wstun_tunnels 1");
  CHECK_LINE(&out, "wstun_tunnel_connections 2");
  CHECK_LINE(&out, "wstun_tokens 2");
  CHECK_LINE(&out, "wstun_tokens_by_connections{connections=\"0\"} 1");
  CHECK_LINE(&out, "wstun_tokens_by_connections{connections=\"1\"} 0");
  CHECK_LINE(&out, "wstun_tokens_by_connections{connections=\"2\"} 1");
  CHECK_LINE(&out, "wstun_tokens_by_connections{connections=\"3+\"} 0");
  CHECK_LINE(&out, "wstun_pending_requests 2");
  CHECK_LINE(&out, "wstun_queued_requests 1");
  CHECK_LINE(&out, "wstun_front_connections 4");
  CHECK_LINE(&out, "wstun_tunnel_connects_total 5");
  CHECK_LINE(&out, "wstun_tunnel_disconnects_total 3");
  CHECK_LINE(&out, "# TYPE wstun_requests_total counter");
  CHECK_LINE(&out, "wstun_requests_total{status=\"1xx\"} 0");
  CHECK_LINE(&out, "wstun_requests_total{status=\"2xx\"} 2");
  CHECK_LINE(&out, "wstun_requests_total{status=\"4xx\"} 1");
  CHECK_LINE(&out, "wstun_requests_total{status=\"5xx\"} 1");
  CHECK_LINE(&out, "# TYPE wstun_request_duration_seconds histogram");
  CHECK_LINE(&out, "wstun_request_duration_seconds_bucket{le=\"0.001\"} 1");
  CHECK_LINE(&out, "wstun_request_duration_seconds_bucket{le=\"0.005\"} 2");
  CHECK_LINE(&out, "wstun_request_duration_seconds_bucket{le=\"0.5\"} 2");
  CHECK_LINE(&out, "wstun_request_duration_seconds_bucket{le=\"1\"} 3");
  CHECK_LINE(&out, "wstun_request_duration_seconds_bucket{le=\"10\"} 3");
  CHECK_LINE(&out, "wstun_request_duration_seconds_bucket{le=\"+Inf\"} 4");
  CHECK_LINE(&out, "wstun_request_duration_seconds_sum 20.704000");
  CHECK_LINE(&out, "wstun_request_duration_seconds_count 4");
  CHECK_LINE(&out, "wstun_handshake_failures_total{reason=\"unauthorized\"} 2");
  CHECK_LINE(&out, "wstun_handshake_failures_total{reason=\"bad_method\"} 0");
  CHECK_LINE(&out, "wstun_connections 6");
  CHECK_LINE(&out, "wstun_max_connections 100");
  CHECK_LINE(&out, "wstun_max_connections_per_ip 10");
  CHECK_LINE(&out, "wstun_connections_refused_total 8");
  CHECK_LINE(&out, "wstun_draining 0");
  /* every sample line is "name[{labels}] value" after its HELP and TYPE */
  const char *d = (const char *)wstun__buf_data(&out);
  CHECK(wstun__buf_size(&out) > 0 && d[wstun__buf_size(&out) - 1] == '\n');
  wstun__buf_free(&out);
  reg_free(&r);
}

TEST(stats_text) {
  reg r;
  reg_build(&r);
  wstun__buf out = WSTUN__BUF_INIT;
  CHECK_EQ_INT(wstun__admin_stats_text(r.srv, 0, &out), 0);
  CHECK_LINE(&out, "tunnels=1");
  CHECK_LINE(&out, "max_requests_per_tunnel=20");
  CHECK_LINE(&out, "max_clients_per_token=3");
  CHECK_LINE(&out, "total_clients=2");
  CHECK_LINE(&out, "More stats available when called from localhost...");
  CHECK(!has_line(&out, "req_pending=2"));
  wstun__buf_free(&out);
  CHECK_EQ_INT(wstun__admin_stats_text(r.srv, 1, &out), 0);
  CHECK_LINE(&out, "token_clients_admin-te...=2");
  CHECK(!has_line(&out, "token_clients_zzzzzzzz...=0"));
  CHECK_LINE(&out, "tunnel00_token=admin-te...");
  CHECK_LINE(&out, "tunnel00_req_pending=2");
  CHECK_LINE(&out, "tunnel00_tun_addr=192.0.2.1:1111");
  CHECK_LINE(&out, "tunnel00_client_version=1.2.3");
  CHECK_LINE(&out, "tunnel01_token=zzzzzzzz...");
  CHECK_LINE(&out, "tunnel01_req_pending=0");
  CHECK_LINE(&out, "req_pending=2");
  CHECK_LINE(&out, "dead_tunnels=0");
  wstun__buf_free(&out);
  reg_free(&r);
}

static json_t *parse(const wstun__buf *b) {
  json_error_t err;
  return json_loadb((const char *)wstun__buf_data(b), wstun__buf_size(b), 0,
                    &err);
}

TEST(monitoring_and_auditing) {
  reg r;
  reg_build(&r);
  wstun__buf out = WSTUN__BUF_INIT;
  CHECK_EQ_INT(wstun__admin_monitoring(r.srv, &out), 0);
  json_t *m = parse(&out);
  CHECK(m != NULL);
  CHECK_EQ_INT(json_integer_value(json_object_get(m, "unique_tunnels")), 1);
  CHECK_EQ_INT(json_integer_value(json_object_get(m, "tunnel_connections")), 2);
  CHECK_EQ_INT(json_integer_value(json_object_get(m, "pending_requests")), 2);
  CHECK_EQ_INT(json_integer_value(json_object_get(m, "completed_requests")), 2);
  CHECK_EQ_INT(json_integer_value(json_object_get(m, "errored_requests")), 2);
  json_decref(m);
  wstun__buf_free(&out);

  CHECK_EQ_INT(wstun__admin_auditing(r.srv, &out), 0);
  json_t *a = parse(&out);
  CHECK(a != NULL);
  json_t *ta = json_object_get(json_object_get(a, "tunnels"), TOK_A);
  CHECK(ta != NULL);
  CHECK_EQ_STR(json_string_value(json_object_get(ta, "remote_addr")),
               "192.0.2.1:1111");
  CHECK_EQ_STR(json_string_value(json_object_get(ta, "client_version")),
               "1.2.3");
  CHECK_EQ_INT(json_integer_value(json_object_get(ta, "pending_requests")), 2);
  CHECK(json_object_get(ta, "last_error_time") == NULL); /* omitempty */
  json_t *ac = json_object_get(ta, "active_connections");
  CHECK_EQ_INT(json_array_size(ac), 1);
  json_t *c = json_array_get(ac, 0);
  CHECK_EQ_INT(json_integer_value(json_object_get(c, "request_id")), 0x2a);
  CHECK_EQ_STR(json_string_value(json_object_get(c, "method")), "POST");
  CHECK_EQ_STR(json_string_value(json_object_get(c, "uri")), "/up?x");
  CHECK_EQ_STR(json_string_value(json_object_get(c, "remote_addr")),
               "198.51.100.9:999");
  json_t *tb = json_object_get(json_object_get(a, "tunnels"), TOK_B);
  CHECK(tb != NULL);
  CHECK_EQ_INT(json_array_size(json_object_get(tb, "active_connections")), 0);
  json_decref(a);
  wstun__buf_free(&out);
  reg_free(&r);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {T(prometheus), T(stats_text),
                                    T(monitoring_and_auditing)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
