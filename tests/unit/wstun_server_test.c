/* wstun_server as an embedder drives it: a server and tunnel clients on
 * one loop (own loop, loopback, ports chosen by the OS), checking what
 * wstun_server_tunnel_count() and wstun_server_get_stats() report as
 * clients come and go. The loop must be empty at the end. */
#include <stdio.h>
#include <string.h>
#include <wstun/wstun.h>

#include "test.h"

#define TOKEN_A "server-test-token-aaaaaaaaaaaa"
#define TOKEN_B "server-test-token-bbbbbbbbbbbb"

typedef struct fixture {
  uv_loop_t loop;
  wstun_server *srv;
  wstun_client *cli[3];
  uv_timer_t poll, deadline;
  char url[64];
  int phase;
  int timed_out;
  size_t seen[6]; /* tunnel_count when each phase was reached */
} fixture;

static void handler(wstun_request *req, void *ud) {
  (void)ud;
  wstun_request_respond(req, 200, "text/plain", "ok", 2);
}

static void start_client(fixture *f, int i, const char *token) {
  wstun_client_config c;
  wstun_client_config_init(&c);
  c.tunnel_url = f->url;
  c.token = token;
  c.handler = handler;
  CHECK_EQ_INT(wstun_client_start(&f->loop, &c, &f->cli[i]), 0);
}

static void close_client(fixture *f, int i) {
  wstun_client_close(f->cli[i], 0, NULL, NULL);
  f->cli[i] = NULL;
}

static void finish(fixture *f) {
  for (int i = 0; i < 3; i++)
    if (f->cli[i])
      close_client(f, i);
  wstun_server_close(f->srv, 0, NULL, NULL);
  uv_close((uv_handle_t *)&f->poll, NULL);
  uv_close((uv_handle_t *)&f->deadline, NULL);
}

static size_t connections(const fixture *f) {
  wstun_server_stats st;
  wstun_server_get_stats(f->srv, &st);
  CHECK_EQ_INT((long long)st.tunnels,
               (long long)wstun_server_tunnel_count(f->srv));
  return st.tunnel_connections;
}

/* Each phase waits for the server to see a change, then makes the next
 * one: A(token a) → +B(token a) → +C(token b) → -A → -C → -B. */
static void on_poll(uv_timer_t *t) {
  fixture *f = t->data;
  size_t n = wstun_server_tunnel_count(f->srv);
  size_t conns = connections(f);
  switch (f->phase) {
  case 0: /* A is connected */
    if (n != 1)
      return;
    start_client(f, 1, TOKEN_A);
    break;
  case 1: /* B too, on the same token: still one */
    if (conns != 2)
      return;
    start_client(f, 2, TOKEN_B);
    break;
  case 2: /* C on its own token: two */
    if (conns != 3)
      return;
    close_client(f, 0);
    break;
  case 3: /* A gone, B keeps token a alive */
    if (conns != 2)
      return;
    close_client(f, 2);
    break;
  case 4: /* C gone: token b has no tunnel */
    if (conns != 1)
      return;
    close_client(f, 1);
    break;
  case 5: /* B gone: none */
    if (conns != 0)
      return;
    f->seen[f->phase++] = n;
    finish(f);
    return;
  }
  f->seen[f->phase++] = n;
}

static void on_deadline(uv_timer_t *t) {
  fixture *f = t->data;
  f->timed_out = 1;
  finish(f);
}

TEST(tunnel_count_follows_clients_by_token) {
  fixture f;
  memset(&f, 0, sizeof(f));
  CHECK_EQ_INT(uv_loop_init(&f.loop), 0);
  wstun_server_config s;
  wstun_server_config_init(&s);
  s.host = "127.0.0.1";
  s.port = 0;
  CHECK_EQ_INT(wstun_server_start(&f.loop, &s, &f.srv), 0);
  if (f.srv == NULL)
    return;
  CHECK_EQ_INT((long long)wstun_server_tunnel_count(f.srv), 0);
  snprintf(f.url, sizeof(f.url), "ws://127.0.0.1:%d", wstun_server_port(f.srv));
  start_client(&f, 0, TOKEN_A);
  CHECK_EQ_INT((long long)wstun_server_tunnel_count(f.srv), 0);
  uv_timer_init(&f.loop, &f.poll);
  uv_timer_init(&f.loop, &f.deadline);
  f.poll.data = f.deadline.data = &f;
  uv_timer_start(&f.poll, on_poll, 5, 5);
  uv_timer_start(&f.deadline, on_deadline, 10000, 0);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(f.timed_out, 0);
  CHECK_EQ_INT(f.phase, 6);
  static const size_t want[6] = {1, 1, 2, 2, 1, 0};
  for (int i = 0; i < 6; i++) {
    test_context("phase %d", i);
    CHECK_EQ_INT((long long)f.seen[i], (long long)want[i]);
  }
  test_context(NULL);
  CHECK_EQ_INT(uv_loop_close(&f.loop), 0);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {T(tunnel_count_follows_clients_by_token)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
