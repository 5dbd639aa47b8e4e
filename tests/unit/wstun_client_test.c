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

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(configuration_errors), T(zeros_mean_defaults),
      T(a_bad_proxy_from_the_environment_is_ignored),
      T(start_fails_cleanly_at_every_allocation)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
