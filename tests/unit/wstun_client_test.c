/* wstun_client_start() as an embedder calls it: what each malformed
 * configuration is refused with, that zeros mean the defaults, and a start
 * with every option set failing at each allocation in turn without
 * holding memory afterwards. Nothing here reaches a server: the tunnel
 * URL names a loopback port that nobody listens on, and each client is
 * closed right after it starts. */
#include <stdlib.h>
#include <string.h>
#include <wstun/wstun.h>

#include "test.h"

#define TOKEN "client-test-token-0123456789"
#define NOWHERE "ws://127.0.0.1:9" /* discard port: connection refused */

static void base_config(wstun_client_config *c) {
  wstun_client_config_init(c);
  c->tunnel_url = NOWHERE;
  c->token = TOKEN;
  c->server_url = "http://127.0.0.1:9";
}

static int failing_allocations;

/* Starts and at once closes a client; returns what start returned. */
static int start_with(const wstun_client_config *c) {
  uv_loop_t loop;
  CHECK_EQ_INT(uv_loop_init(&loop), 0);
  wstun_client *cli = NULL;
  int rc = wstun_client_start(&loop, c, &cli);
  if (rc == 0) {
    /* dialing starts at once; an allocation failing there is a failed
     * dial (DISCONNECTED, a retry scheduled), not a failed start */
    wstun_client_state st = wstun_client_get_state(cli);
    if (failing_allocations)
      CHECK(st != WSTUN_CLIENT_CONNECTED);
    else
      CHECK_EQ_INT(st, WSTUN_CLIENT_CONNECTING);
    wstun_client_close(cli, 0, NULL, NULL);
  } else {
    CHECK(cli == NULL);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  return rc;
}

TEST(configuration_errors) {
  wstun_client_config c;
  base_config(&c);
  uv_loop_t loop;
  wstun_client *cli = NULL;
  CHECK_EQ_INT(wstun_client_start(NULL, &c, &cli), WSTUN_EINVAL);
  CHECK_EQ_INT(wstun_client_start(&loop, NULL, &cli), WSTUN_EINVAL);
  CHECK_EQ_INT(wstun_client_start(&loop, &c, NULL), WSTUN_EINVAL);
  static const struct {
    const char *tunnel, *token, *server, *regexp, *ports, *proxy;
    int want;
  } cases[] = {
      {NULL, TOKEN, NULL, NULL, NULL, NULL, WSTUN_EINVAL},
      {NOWHERE, NULL, NULL, NULL, NULL, NULL, WSTUN_EINVAL},
      {NOWHERE, "short-token", NULL, NULL, NULL, NULL, WSTUN_EINVAL},
      {NOWHERE, "a token with spaces", NULL, NULL, NULL, NULL, WSTUN_EINVAL},
      {NOWHERE, "token-with-a-tab\t-xx", NULL, NULL, NULL, NULL, WSTUN_EINVAL},
      {NOWHERE, "token-with-del\x7f-xxxxx", NULL, NULL, NULL, NULL,
       WSTUN_EINVAL},
      {"http://127.0.0.1:9", TOKEN, NULL, NULL, NULL, NULL, WSTUN_EURL},
      {"ws://[::1", TOKEN, NULL, NULL, NULL, NULL, WSTUN_EURL},
      {NOWHERE, TOKEN, "ftp://127.0.0.1:9", NULL, NULL, NULL, WSTUN_EURL},
      {NOWHERE, TOKEN, "ws://127.0.0.1:9", NULL, NULL, NULL, WSTUN_EURL},
      {NOWHERE, TOKEN, "http://127.0.0.1:99999", NULL, NULL, NULL, WSTUN_EURL},
      {NOWHERE, TOKEN, NULL, "(unclosed", NULL, NULL, WSTUN_EREGEX},
      {NOWHERE, TOKEN, "http://127.0.0.1:9", NULL, "8000..7000", NULL,
       WSTUN_EPORTS},
      {NOWHERE, TOKEN, "http://127.0.0.1:9", NULL, "80,x", NULL, WSTUN_EPORTS},
      {NOWHERE, TOKEN, "http://127.0.0.1:9", NULL, NULL, "https://127.0.0.1:9",
       WSTUN_EURL},
  };
  for (size_t i = 0; i < TEST_COUNT(cases); i++) {
    test_context("case %zu", i);
    wstun_client_config_init(&c);
    c.tunnel_url = cases[i].tunnel;
    c.token = cases[i].token;
    c.server_url = cases[i].server;
    c.regexp = cases[i].regexp;
    c.client_ports = cases[i].ports;
    c.proxy_url = cases[i].proxy;
    CHECK_EQ_INT(start_with(&c), cases[i].want);
  }
  test_context(NULL);
}

TEST(zeros_mean_defaults) {
  wstun_client_config c;
  base_config(&c);
  c.timeout_sec = 0;
  c.backend_timeout_sec = 0;
  c.backend_idle_sec = 0;
  c.reconnect_max_ms = 0;
  c.max_idle_per_backend = 0;
  c.max_handler_body = 0;
  CHECK_EQ_INT(start_with(&c), 0);
}

TEST(a_bad_proxy_from_the_environment_is_ignored) {
  /* a desktop's all_proxy=socks5://... must not stop the tunnel */
  wstun_client_config c;
  base_config(&c);
  c.proxy_from_env = 1;
  static const char *const names[] = {"http_proxy", "HTTP_PROXY", "no_proxy",
                                      "NO_PROXY"};
  for (size_t i = 0; i < TEST_COUNT(names); i++)
    unsetenv(names[i]);
  setenv("all_proxy", "socks5://127.0.0.1:9", 1);
  CHECK_EQ_INT(start_with(&c), 0);
  c.proxy_from_env = 0; /* the same URL given outright is an error */
  c.proxy_url = "socks5://127.0.0.1:9";
  CHECK_EQ_INT(start_with(&c), WSTUN_EURL);
  unsetenv("all_proxy");
}

/* ---- out of memory during wstun_client_start ---------------------------- */

#include "failalloc.h"

TEST(start_fails_cleanly_at_every_allocation) {
  CHECK_EQ_INT(wstun_set_allocator(&counting), 0);
  failing_allocations = 1;
  wstun_client_config c;
  base_config(&c);
  c.tunnel_url = "ws://user:secret@127.0.0.1:9/base/";
  c.password = "pw";
  c.server_url = "http://127.0.0.1:9/prefix/";
  c.regexp = "http://127\\.0\\.0\\.1:[0-9]+";
  c.client_ports = "40000..40010,40020";
  c.proxy_url = "127.0.0.1:9";
  c.client_version = "test 1.0";
  int ok = 0;
  for (long n = 1; n < 1000 && !ok; n++) {
    test_context("failing allocation %ld", n);
    mem.live = mem.count = 0;
    mem.fail_at = n;
    int rc = start_with(&c);
    if (rc == 0)
      ok = mem.count < n; /* nothing failed: all allocations seen */
    else
      CHECK_EQ_INT(rc, WSTUN_ENOMEM);
    CHECK_EQ_INT(mem.live, 0);
  }
  test_context(NULL);
  CHECK(ok);
  failing_allocations = 0;
  CHECK_EQ_INT(wstun_set_allocator(NULL), 0);
}

/* ---- X-Host against -regexp (no sockets) --------------------------------- */

#include <regex.h>
#include <stdio.h>

#include "wstun_client_int.h"

TEST(xhost_is_matched_parsed_and_whole) {
  static const struct {
    const char *re, *xhost;
    int want; /* 0 allowed, 1 refused */
    const char *host;
    int port;
  } cases[] = {
      {"http://127\\.0\\.0\\.1:[0-9]+", "http://127.0.0.1:8080", 0, "127.0.0.1",
       8080},
      /* the path as written is part of what is matched; "/" alone is not */
      {"http://127\\.0\\.0\\.1:[0-9]+", "http://127.0.0.1:8080/", 0,
       "127.0.0.1", 8080},
      {"http://127\\.0\\.0\\.1:[0-9]+", "http://127.0.0.1:8080/x", 1, NULL, 0},
      {"http://127\\.0\\.0\\.1:[0-9]+(/.*)?", "http://127.0.0.1:8080/x", 0,
       "127.0.0.1", 8080},
      /* matched in full, not as a prefix or a substring */
      {"http://a\\.example", "http://a.example.evil.com", 1, NULL, 0},
      {"a\\.example", "http://a.example", 1, NULL, 0},
      /* no port given: none in the canonical form, the scheme's default */
      {"https://a\\.example", "https://a.example", 0, "a.example", 443},
      {"https://a\\.example", "https://a.example:443", 1, NULL, 0},
      /* userinfo could hide another host: always refused */
      {".*", "http://a.example@b.example", 1, NULL, 0},
      {".*", "http://user:pw@b.example", 1, NULL, 0},
      /* only http and https; nothing unparsable */
      {".*", "ftp://a.example", 1, NULL, 0},
      {".*", "ws://a.example", 1, NULL, 0},
      {".*", "a.example:80", 1, NULL, 0},
      {".*", "http://[::1", 1, NULL, 0},
      {".*", "http://a.example:99999", 1, NULL, 0},
      {".*", "", 1, NULL, 0},
      /* case: the scheme is folded by the parser, the host is matched as
       * written */
      {"http://a\\.example", "HTTP://a.example", 0, "a.example", 80},
      {"http://a\\.example", "http://A.example", 1, NULL, 0},
      /* IPv6 literals are matched with their brackets */
      {"http://\\[::1\\]:8080", "http://[::1]:8080", 0, "::1", 8080},
  };
  for (size_t i = 0; i < TEST_COUNT(cases); i++) {
    test_context("case %zu: %s", i, cases[i].xhost);
    char anchored[256];
    snprintf(anchored, sizeof(anchored), "^(%s)$", cases[i].re);
    regex_t re;
    REQUIRE(regcomp(&re, anchored, REG_EXTENDED | REG_NOSUB) == 0);
    wstun__url u;
    memset(&u, 0, sizeof(u));
    int rc = wstun__xhost_check(&re, cases[i].xhost, &u);
    CHECK_EQ_INT(rc, cases[i].want);
    if (rc == 0) {
      CHECK_EQ_STR(u.host, cases[i].host);
      CHECK_EQ_INT(u.port, cases[i].port);
    } else {
      CHECK(u.host == NULL); /* nothing left to free */
    }
    wstun__url_free(&u);
    regfree(&re);
  }
  test_context(NULL);
}

/* ---- requests an in-process handler holds ------------------------------- */

/* A server and a client on one loop; an HTTP client of our own sends two
 * requests through them. The handler keeps each: the first is cancelled
 * (the requester sees 503), the second is still held when the client is
 * closed, and the close waits for it: its later respond is WSTUN_ECLOSED
 * and only then does the close complete. */

#define HTOKEN "held-requests-token-0123456789"

typedef struct held_app {
  uv_loop_t loop;
  wstun_server *srv;
  wstun_client *cli;
  uv_tcp_t http;
  uv_connect_t connect_req;
  uv_write_t write_req;
  uv_timer_t timer;
  char request[256];
  char response[4096];
  size_t got;
  int step; /* 1: first request, 2: second, 3: closing */
  wstun_request *held;
  int handler_calls, connected, cli_closed;
  int second_rc;
  /* the client's access lines */
  int naccess;
  int access_status[4];
  char access_path[4][64], access_backend[4][16], access_text[4][512];
} held_app;

static void h_log(void *ud, const wstun_log_record *rec) {
  held_app *a = ud;
  if (rec->request == NULL || a->naccess >= 4)
    return;
  CHECK_EQ_INT(rec->level, WSTUN_LOG_INFO);
  int i = a->naccess++;
  a->access_status[i] = rec->request->status;
  snprintf(a->access_path[i], 64, "%s", rec->request->path);
  snprintf(a->access_backend[i], 16, "%s",
           rec->request->backend ? rec->request->backend : "");
  snprintf(a->access_text[i], 512, "%s", rec->msg);
}

static void send_request(held_app *a);

static void h_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf) {
  held_app *a = h->data;
  (void)n;
  buf->base = a->response + a->got;
  buf->len = sizeof(a->response) - 1 - a->got;
}

static void on_http_closed(uv_handle_t *h) {
  held_app *a = h->data;
  if (a->step == 1) {
    a->step = 2;
    send_request(a);
  }
}

static void h_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  held_app *a = s->data;
  (void)buf;
  if (n > 0) {
    a->got += (size_t)n;
    a->response[a->got] = '\0';
    return;
  }
  if (n < 0 && a->step == 1) {
    CHECK(strncmp(a->response, "HTTP/1.1 503", 12) == 0);
    uv_close((uv_handle_t *)&a->http, on_http_closed);
  }
}

static void h_written(uv_write_t *w, int status) {
  held_app *a = w->data;
  CHECK_EQ_INT(status, 0);
  uv_read_start((uv_stream_t *)&a->http, h_alloc, h_read);
}

static void h_connected(uv_connect_t *c, int status) {
  held_app *a = c->data;
  CHECK_EQ_INT(status, 0);
  uv_buf_t b = uv_buf_init(a->request, (unsigned)strlen(a->request));
  a->write_req.data = a;
  uv_write(&a->write_req, (uv_stream_t *)&a->http, &b, 1, h_written);
}

static void send_request(held_app *a) {
  a->got = 0;
  a->response[0] = '\0';
  snprintf(a->request, sizeof(a->request),
           "GET /_token/%s/held%d HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           "Connection: close\r\n\r\n",
           HTOKEN, a->step);
  uv_tcp_init(&a->loop, &a->http);
  a->http.data = a;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", wstun_server_port(a->srv), &addr);
  a->connect_req.data = a;
  uv_tcp_connect(&a->connect_req, &a->http, (struct sockaddr *)&addr,
                 h_connected);
}

static void h_state(wstun_client *cli, wstun_client_state state, int err,
                    void *ud) {
  held_app *a = ud;
  (void)cli;
  (void)err;
  if (state == WSTUN_CLIENT_CONNECTED && !a->connected) {
    a->connected = 1;
    a->step = 1;
    send_request(a);
  }
}

static void on_cli_closed(wstun_client *cli, void *ud) {
  held_app *a = ud;
  (void)cli;
  a->cli_closed = 1;
}

static void later(uv_timer_t *t) {
  held_app *a = t->data;
  if (a->step == 1) {
    CHECK_EQ_INT(wstun_request_cancel(a->held), 0);
    a->held = NULL;
  } else if (a->step == 2) {
    a->step = 3;
    wstun_client_close(a->cli, 0, on_cli_closed, a);
    uv_timer_start(&a->timer, later, 300, 0);
  } else {
    /* the close has been waiting for the held request */
    CHECK_EQ_INT(a->cli_closed, 0);
    a->second_rc = wstun_request_respond(a->held, 200, "text/plain", "x", 1);
    a->held = NULL;
    uv_close((uv_handle_t *)&a->timer, NULL);
    uv_close((uv_handle_t *)&a->http, NULL);
    wstun_server_close(a->srv, 0, NULL, NULL);
  }
}

static void holding_handler(wstun_request *req, void *ud) {
  held_app *a = ud;
  a->handler_calls++;
  CHECK(a->held == NULL);
  a->held = req;
  uv_timer_start(&a->timer, later, 0, 0);
}

TEST(held_requests_are_cancelled_or_awaited_by_close) {
  held_app *a = calloc(1, sizeof(*a));
  REQUIRE(a != NULL);
  REQUIRE(uv_loop_init(&a->loop) == 0);
  wstun_server_config scfg;
  wstun_server_config_init(&scfg);
  scfg.host = "127.0.0.1";
  scfg.port = 0;
  scfg.log_level = WSTUN_LOG_ERROR;
  REQUIRE(wstun_server_start(&a->loop, &scfg, &a->srv) == 0);
  char url[64];
  snprintf(url, sizeof(url), "ws://127.0.0.1:%d", wstun_server_port(a->srv));
  wstun_client_config c;
  wstun_client_config_init(&c);
  c.tunnel_url = url;
  c.token = HTOKEN;
  c.handler = holding_handler;
  c.handler_user_data = a;
  c.state_cb = h_state;
  c.state_user_data = a;
  c.log_level = WSTUN_LOG_INFO;
  c.log_record_cb = h_log;
  c.log_user_data = a;
  REQUIRE(wstun_client_start(&a->loop, &c, &a->cli) == 0);
  uv_timer_init(&a->loop, &a->timer);
  a->timer.data = a;
  CHECK_EQ_INT(wstun_request_cancel(NULL), WSTUN_EINVAL);
  uv_run(&a->loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(a->handler_calls, 2);
  CHECK_EQ_INT(a->step, 3);
  CHECK_EQ_INT(a->second_rc, WSTUN_ECLOSED);
  CHECK_EQ_INT(a->cli_closed, 1);
  /* an access line each, naming the handler: the cancelled one 503, the
   * one the close gave up on 499 */
  REQUIRE(a->naccess == 2);
  CHECK_EQ_STR(a->access_path[0], "/held1");
  CHECK_EQ_INT(a->access_status[0], 503);
  CHECK_EQ_STR(a->access_backend[0], "handler");
  CHECK_EQ_STR(a->access_path[1], "/held2");
  CHECK_EQ_INT(a->access_status[1], 499);
  CHECK_EQ_STR(a->access_backend[1], "handler");
  CHECK(strncmp(a->access_text[0],
                "access method=GET path=/held1 status=503 bytes=32 ", 50) == 0);
  CHECK(strstr(a->access_text[0], " token=held-req... id=") != NULL);
  CHECK(strstr(a->access_text[0], " remote=127.0.0.1 ") != NULL);
  CHECK_EQ_INT(uv_loop_close(&a->loop), 0);
  free(a);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(configuration_errors),
      T(zeros_mean_defaults),
      T(a_bad_proxy_from_the_environment_is_ignored),
      T(start_fails_cleanly_at_every_allocation),
      T(xhost_is_matched_parsed_and_whole),
      T(held_requests_are_cancelled_or_awaited_by_close)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
