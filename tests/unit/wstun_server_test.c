/* wstun_server as an embedder drives it: a server and tunnel clients on
 * one loop (own loop, loopback, ports chosen by the OS), checking what
 * wstun_server_tunnel_count() and wstun_server_get_stats() report as
 * clients come and go; the configuration errors of wstun_server_start(),
 * and a start with every option set failing at each allocation in turn
 * without losing memory. wstun_server_reload(): all or nothing (a bad
 * value or a failed allocation changes nothing), limits taken, and the
 * tunnels whose password changed closed while the others stay. The loop
 * must be empty at the end. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <wstun/wstun.h>

#include "test.h"
#include "wstun_server_int.h"

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

/* ---- a blocking request next to a loop run step by step ------------- */

/* GET `path` from 127.0.0.1:port while running `loop`; returns the status
 * code, or -1 when no answer came within 5 s. */
static int http_status(uv_loop_t *loop, int port, const char *path) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in a;
  memset(&a, 0, sizeof(a));
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  char req[256], resp[512];
  int n =
      snprintf(req, sizeof(req),
               "GET %s HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", path);
  int status = -1;
  size_t got = 0;
  /* the listener's backlog takes the connection without the loop */
  if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0 ||
      send(fd, req, (size_t)n, 0) != n)
    goto out;
  uv_update_time(loop);
  uint64_t end = uv_now(loop) + 5000;
  while (uv_now(loop) < end && got < sizeof(resp) - 1) {
    uv_run(loop, UV_RUN_NOWAIT);
    ssize_t r = recv(fd, resp + got, sizeof(resp) - 1 - got, MSG_DONTWAIT);
    if (r > 0)
      got += (size_t)r;
    else if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK))
      break;
    else
      usleep(1000);
    uv_update_time(loop);
  }
  resp[got] = '\0';
  if (strncmp(resp, "HTTP/1.1 ", 9) == 0)
    status = atoi(resp + 9);
out:
  close(fd);
  return status;
}

static void close_server(uv_loop_t *loop, wstun_server *srv) {
  wstun_server_close(srv, 0, NULL, NULL);
  uv_run(loop, UV_RUN_DEFAULT);
}

static int start_with(uv_loop_t *loop, const wstun_server_config *c) {
  wstun_server *srv = NULL;
  int rc = wstun_server_start(loop, c, &srv);
  if (rc == 0)
    close_server(loop, srv);
  else
    CHECK(srv == NULL);
  return rc;
}

TEST(configuration_errors) {
  uv_loop_t loop;
  CHECK_EQ_INT(uv_loop_init(&loop), 0);
  wstun_server_config c;
  wstun_server_config_init(&c);
  c.host = "127.0.0.1";
  c.port = 0;
  wstun_server *srv = NULL;
  CHECK_EQ_INT(wstun_server_start(NULL, &c, &srv), WSTUN_EINVAL);
  CHECK_EQ_INT(wstun_server_start(&loop, NULL, &srv), WSTUN_EINVAL);
  CHECK_EQ_INT(wstun_server_start(&loop, &c, NULL), WSTUN_EINVAL);
  c.port = -1;
  CHECK_EQ_INT(start_with(&loop, &c), WSTUN_EINVAL);
  c.port = 65536;
  CHECK_EQ_INT(start_with(&loop, &c), WSTUN_EINVAL);
  c.port = 0;
  static const char *const bad_passwords[] = {"tok", ":pw", "tok:", "a:b,tok"};
  for (size_t i = 0; i < TEST_COUNT(bad_passwords); i++) {
    test_context("passwords %s", bad_passwords[i]);
    c.passwords = bad_passwords[i];
    CHECK_EQ_INT(start_with(&loop, &c), WSTUN_EPASSWORDS);
  }
  test_context(NULL);
  c.passwords = NULL;
  c.trusted_proxies = "10.0.0.0/33";
  CHECK_EQ_INT(start_with(&loop, &c), WSTUN_ECIDR);
  c.trusted_proxies = NULL;
  c.admin_allow = "not-an-address";
  CHECK_EQ_INT(start_with(&loop, &c), WSTUN_ECIDR);
  c.admin_allow = NULL;
  c.tls_cert_file = "cert.pem"; /* without a key: refused before reading */
  CHECK_EQ_INT(start_with(&loop, &c), WSTUN_EINVAL);
  c.tls_cert_file = NULL;
  c.tls_key_file = "key.pem";
  CHECK_EQ_INT(start_with(&loop, &c), WSTUN_EINVAL);
  c.tls_key_file = NULL;
  /* zeros everywhere mean the defaults */
  c.max_requests_per_tunnel = 0;
  c.ws_timeout_sec = 0;
  c.http_timeout_sec = 0;
  c.token_forget_sec = 0;
  c.max_header_bytes = 0;
  c.header_timeout_sec = 0;
  c.idle_timeout_sec = 0;
  CHECK_EQ_INT(start_with(&loop, &c), 0);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(base_path_without_its_slashes) {
  /* "wst/" serves /wst/..., as "/wst" does */
  uv_loop_t loop;
  CHECK_EQ_INT(uv_loop_init(&loop), 0);
  wstun_server_config c;
  wstun_server_config_init(&c);
  c.host = "127.0.0.1";
  c.port = 0;
  c.base_path = "wst/";
  wstun_server *srv = NULL;
  CHECK_EQ_INT(wstun_server_start(&loop, &c, &srv), 0);
  if (srv == NULL)
    return;
  int port = wstun_server_port(srv);
  CHECK_EQ_INT(http_status(&loop, port, "/wst/_health_check"), 200);
  CHECK_EQ_INT(http_status(&loop, port, "/_health_check"), 404);
  close_server(&loop, srv);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

static void count_closed(wstun_server *srv, void *ud) {
  (void)srv;
  (*(int *)ud)++;
}

static wstun_server *start_local(uv_loop_t *loop) {
  wstun_server_config c;
  wstun_server_config_init(&c);
  c.host = "127.0.0.1";
  c.port = 0;
  wstun_server *srv = NULL;
  CHECK_EQ_INT(wstun_server_start(loop, &c, &srv), 0);
  return srv;
}

TEST(drain_answers_503_then_stops) {
  uv_loop_t loop;
  CHECK_EQ_INT(uv_loop_init(&loop), 0);
  wstun_server *srv = start_local(&loop);
  if (srv == NULL)
    return;
  int port = wstun_server_port(srv), closed = 0;
  CHECK_EQ_INT(http_status(&loop, port, "/_health_check"), 200);
  wstun_server_drain(srv, 300, 1000, count_closed, &closed);
  wstun_server_drain(srv, 300, 1000, count_closed, &closed); /* ignored */
  /* draining: the health check fails, everything else is as before */
  CHECK_EQ_INT(http_status(&loop, port, "/_health_check"), 503);
  CHECK_EQ_INT(http_status(&loop, port, "/_stats"), 200);
  CHECK_EQ_INT(closed, 0);
  uv_run(&loop, UV_RUN_DEFAULT); /* the wait, then the stop */
  CHECK_EQ_INT(closed, 1);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(drain_without_a_watcher_stops_at_once) {
  uv_loop_t loop;
  CHECK_EQ_INT(uv_loop_init(&loop), 0);
  wstun_server *srv = start_local(&loop);
  if (srv == NULL)
    return;
  int closed = 0;
  uv_update_time(&loop);
  uint64_t t0 = uv_now(&loop);
  /* nothing ever asked /_health_check: no balancer to wait for */
  wstun_server_drain(srv, 60000, 1000, count_closed, &closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(closed, 1);
  CHECK(uv_now(&loop) - t0 < 30000);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(close_during_a_drain_cancels_it) {
  uv_loop_t loop;
  CHECK_EQ_INT(uv_loop_init(&loop), 0);
  wstun_server *srv = start_local(&loop);
  if (srv == NULL)
    return;
  int drained = 0, closed = 0;
  CHECK_EQ_INT(http_status(&loop, wstun_server_port(srv), "/_health_check"),
               200);
  wstun_server_drain(srv, 60000, 1000, count_closed, &drained);
  wstun_server_close(srv, 0, count_closed, &closed);
  uv_run(&loop, UV_RUN_DEFAULT); /* returns well before the minute */
  CHECK_EQ_INT(closed, 1);
  CHECK_EQ_INT(drained, 0);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

TEST(listen_host_forms) {
  uv_loop_t loop;
  CHECK_EQ_INT(uv_loop_init(&loop), 0);
  wstun_server_config c;
  wstun_server_config_init(&c);
  c.port = 0;
  /* a name from /etc/hosts: IPv4 first, so 127.0.0.1 answers */
  c.host = "localhost";
  wstun_server *srv = NULL;
  CHECK_EQ_INT(wstun_server_start(&loop, &c, &srv), 0);
  if (srv) {
    CHECK_EQ_INT(http_status(&loop, wstun_server_port(srv), "/_health_check"),
                 200);
    close_server(&loop, srv);
  }
  c.host = "::1";
  int fd6 = socket(AF_INET6, SOCK_STREAM, 0);
  struct sockaddr_in6 a6;
  memset(&a6, 0, sizeof(a6));
  a6.sin6_family = AF_INET6;
  a6.sin6_addr = in6addr_loopback;
  if (fd6 >= 0 && bind(fd6, (struct sockaddr *)&a6, sizeof(a6)) == 0)
    CHECK_EQ_INT(start_with(&loop, &c), 0);
  else
    printf("  (no IPv6 loopback here: ::1 not tried)\n");
  if (fd6 >= 0)
    close(fd6);
  /* no host name: refused before any resolver is asked. A 64-byte label
   * passes that check, and the C library refuses it after /etc/hosts
   * without building a DNS query. */
  static const char long_label[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                                   "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.localhost";
  static const char *const bad[] = {"0.0.0.0:80", "host name", long_label};
  for (size_t i = 0; i < TEST_COUNT(bad); i++) {
    test_context("host '%s'", bad[i]);
    c.host = bad[i];
    CHECK_EQ_INT(start_with(&loop, &c), WSTUN_EINVAL);
  }
  test_context(NULL);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

/* ---- wstun_server_reload ------------------------------------------------ */

static void reload_config(wstun_server_config *c) {
  wstun_server_config_init(c);
  c->host = "127.0.0.1";
  c->port = 0;
  c->passwords = TOKEN_A ":pw1";
  c->admin_allow = "10.0.0.0/8";
  c->max_requests_per_tunnel = 7;
}

TEST(reload_is_all_or_nothing) {
  uv_loop_t loop;
  CHECK_EQ_INT(uv_loop_init(&loop), 0);
  wstun_server_config c;
  reload_config(&c);
  wstun_server *srv = NULL;
  CHECK_EQ_INT(wstun_server_start(&loop, &c, &srv), 0);
  if (srv == NULL)
    return;
  CHECK_EQ_INT(wstun_server_reload(NULL, &c), WSTUN_EINVAL);
  CHECK_EQ_INT(wstun_server_reload(srv, NULL), WSTUN_EINVAL);
  /* each bad field alone, with good new values around it that must not
   * be taken either */
  for (int bad = 0; bad < 6; bad++) {
    test_context("bad field %d", bad);
    wstun_server_config n;
    reload_config(&n);
    n.passwords = TOKEN_B ":pw2";
    n.max_requests_per_tunnel = 3;
    n.admin_token = "new-admin-token";
    n.log_level = WSTUN_LOG_DEBUG;
    int want = WSTUN_EINVAL;
    switch (bad) {
    case 0:
      n.passwords = TOKEN_B ":";
      want = WSTUN_EPASSWORDS;
      break;
    case 1:
      n.admin_allow = "10.0.0.0/33";
      want = WSTUN_ECIDR;
      break;
    case 2:
      n.trusted_proxies = "nowhere";
      want = WSTUN_ECIDR;
      break;
    case 3:
      n.tls_cert_file = "cert.pem"; /* no key */
      break;
    case 4: /* a server without TLS cannot be given TLS */
      n.tls_cert_file = "/nonexistent/cert.pem";
      n.tls_key_file = "/nonexistent/key.pem";
      break;
    case 5:
      n.tls_key_file = "key.pem";
      break;
    }
    CHECK_EQ_INT(wstun_server_reload(srv, &n), want);
    CHECK_EQ_INT((long long)srv->npasswords, 1);
    CHECK_EQ_STR(srv->passwords[0].token, TOKEN_A);
    CHECK_EQ_STR(srv->passwords[0].password, "pw1");
    CHECK_EQ_INT((long long)srv->max_queue, 7);
    CHECK(srv->admin_token == NULL);
    CHECK_EQ_INT((int)srv->log.level, (int)WSTUN_LOG_INFO);
    CHECK_EQ_INT((long long)srv->admin_allow.n, 1);
  }
  test_context(NULL);
  /* a good one is taken whole */
  wstun_server_config n;
  reload_config(&n);
  n.passwords = TOKEN_B ":pw2, " TOKEN_A ":pw3";
  n.admin_allow = "192.168.0.0/16,::1,10.1.2.3";
  n.trusted_proxies = "127.0.0.1";
  n.admin_token = "new-admin-token";
  n.max_requests_per_tunnel = 3;
  n.max_clients_per_token = 2;
  n.http_timeout_sec = 9;
  n.token_forget_sec = 5;
  n.max_body_bytes = 1234;
  n.max_connections_per_ip = 4;
  n.log_level = WSTUN_LOG_DEBUG;
  n.port = 1;                 /* ignored: fixed at start */
  n.base_path = "/elsewhere"; /* ignored too */
  int port = wstun_server_port(srv);
  CHECK_EQ_INT(wstun_server_reload(srv, &n), 0);
  CHECK_EQ_INT((long long)srv->npasswords, 2);
  CHECK_EQ_STR(srv->passwords[1].password, "pw3");
  CHECK_EQ_INT((long long)srv->admin_allow.n, 3);
  CHECK_EQ_INT((long long)srv->trusted_proxies.n, 1);
  CHECK_EQ_STR(srv->admin_token, "new-admin-token");
  CHECK_EQ_INT((long long)srv->max_queue, 3);
  CHECK_EQ_INT((long long)srv->max_clients, 2);
  CHECK_EQ_INT((long long)srv->http_timeout_ms, 9000);
  CHECK_EQ_INT((long long)srv->forget_ms, 5000);
  CHECK_EQ_INT((long long)srv->max_body, 1234);
  CHECK_EQ_INT((long long)srv->max_conns_per_ip, 4);
  CHECK_EQ_INT((int)srv->log.level, (int)WSTUN_LOG_DEBUG);
  CHECK_EQ_INT(wstun_server_port(srv), port);
  CHECK_EQ_STR(srv->base_path, "");
  CHECK_EQ_INT(http_status(&loop, port, "/_health_check"), 200);
  /* and back to nothing at all: no passwords, no lists, no token */
  wstun_server_config_init(&n);
  CHECK_EQ_INT(wstun_server_reload(srv, &n), 0);
  CHECK_EQ_INT((long long)srv->npasswords, 0);
  CHECK_EQ_INT((long long)srv->admin_allow.n, 0);
  CHECK(srv->admin_token == NULL);
  /* closing: refused */
  wstun_server_close(srv, 0, NULL, NULL);
  CHECK_EQ_INT(wstun_server_reload(srv, &n), WSTUN_ESTATE);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

/* Tunnels of token A (one with password pw1, one with pw2) and of token
 * B (none), on a server without passwords: each reload closes, at once,
 * exactly the tunnels whose credentials the new list refuses. */
typedef struct pw_fixture {
  uv_loop_t loop;
  wstun_server *srv;
  wstun_client *cli[3];
  uv_timer_t poll, deadline;
  char url[64];
  int done, timed_out;
} pw_fixture;

static void pw_client(pw_fixture *f, int i, const char *token,
                      const char *password) {
  wstun_client_config c;
  wstun_client_config_init(&c);
  c.tunnel_url = f->url;
  c.token = token;
  c.password = password;
  c.handler = handler;
  c.reconnect_max_ms = 60000; /* a refused one does not come back soon */
  CHECK_EQ_INT(wstun_client_start(&f->loop, &c, &f->cli[i]), 0);
}

/* Reloads with `passwords`; the tunnel connections left right after. */
static long long pw_reload(pw_fixture *f, const char *passwords) {
  wstun_server_config c;
  wstun_server_config_init(&c);
  c.passwords = passwords;
  CHECK_EQ_INT(wstun_server_reload(f->srv, &c), 0);
  wstun_server_stats st;
  wstun_server_get_stats(f->srv, &st);
  return (long long)st.tunnel_connections;
}

static void pw_finish(pw_fixture *f) {
  for (int i = 0; i < 3; i++)
    wstun_client_close(f->cli[i], 0, NULL, NULL);
  wstun_server_close(f->srv, 0, NULL, NULL);
  uv_close((uv_handle_t *)&f->poll, NULL);
  uv_close((uv_handle_t *)&f->deadline, NULL);
}

static void pw_on_poll(uv_timer_t *t) {
  pw_fixture *f = t->data;
  wstun_server_stats st;
  wstun_server_get_stats(f->srv, &st);
  if (st.tunnel_connections != 3)
    return;
  test_context("no passwords, as before");
  CHECK_EQ_INT(pw_reload(f, NULL), 3);
  test_context("A gets pw1: the pw2 tunnel goes");
  CHECK_EQ_INT(pw_reload(f, TOKEN_A ":pw1"), 2);
  test_context("the same list again");
  CHECK_EQ_INT(pw_reload(f, TOKEN_A ":pw1"), 2);
  test_context("B gets one");
  CHECK_EQ_INT(pw_reload(f, " " TOKEN_B ":b , " TOKEN_A ":pw1"), 1);
  test_context("every password removed");
  CHECK_EQ_INT(pw_reload(f, ""), 1);
  test_context(NULL);
  f->done = 1;
  pw_finish(f);
}

static void pw_on_deadline(uv_timer_t *t) {
  pw_fixture *f = t->data;
  f->timed_out = 1;
  pw_finish(f);
}

TEST(reload_closes_tunnels_whose_password_changed) {
  pw_fixture f;
  memset(&f, 0, sizeof(f));
  CHECK_EQ_INT(uv_loop_init(&f.loop), 0);
  wstun_server_config s;
  wstun_server_config_init(&s);
  s.host = "127.0.0.1";
  s.port = 0;
  CHECK_EQ_INT(wstun_server_start(&f.loop, &s, &f.srv), 0);
  if (f.srv == NULL)
    return;
  snprintf(f.url, sizeof(f.url), "ws://127.0.0.1:%d", wstun_server_port(f.srv));
  pw_client(&f, 0, TOKEN_A, "pw1");
  pw_client(&f, 1, TOKEN_A, "pw2");
  pw_client(&f, 2, TOKEN_B, NULL);
  uv_timer_init(&f.loop, &f.poll);
  uv_timer_init(&f.loop, &f.deadline);
  f.poll.data = f.deadline.data = &f;
  uv_timer_start(&f.poll, pw_on_poll, 5, 5);
  uv_timer_start(&f.deadline, pw_on_deadline, 10000, 0);
  uv_run(&f.loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(f.timed_out, 0);
  CHECK_EQ_INT(f.done, 1);
  CHECK_EQ_INT(uv_loop_close(&f.loop), 0);
}

/* ---- out of memory during wstun_server_start ---------------------------- */

#include "failalloc.h"

TEST(start_fails_cleanly_at_every_allocation) {
  CHECK_EQ_INT(wstun_set_allocator(&counting), 0);
  uv_loop_t loop;
  CHECK_EQ_INT(uv_loop_init(&loop), 0);
  wstun_server_config c;
  wstun_server_config_init(&c);
  c.host = "127.0.0.1";
  c.port = 0;
  c.base_path = "wst";
  c.passwords = "tok-aaaaaaaaaaaaaaaa:pw1,tok-bbbbbbbbbbbbbbbb:pw2";
  c.trusted_proxies = "10.0.0.0/8,::1";
  c.admin_allow = "192.168.0.0/16";
  c.admin_token = "admin-secret";
  int ok = 0;
  for (long n = 1; n < 1000 && !ok; n++) {
    test_context("failing allocation %ld", n);
    mem.live = mem.count = 0;
    mem.fail_at = n;
    int rc = start_with(&loop, &c);
    if (rc == 0)
      ok = mem.count < n; /* nothing failed: all allocations seen */
    else
      CHECK_EQ_INT(rc, WSTUN_ENOMEM);
    CHECK_EQ_INT(mem.live, 0);
  }
  test_context(NULL);
  CHECK(ok);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  CHECK_EQ_INT(wstun_set_allocator(NULL), 0);
}

TEST(reload_fails_cleanly_at_every_allocation) {
  CHECK_EQ_INT(wstun_set_allocator(&counting), 0);
  uv_loop_t loop;
  CHECK_EQ_INT(uv_loop_init(&loop), 0);
  wstun_server_config c;
  reload_config(&c);
  wstun_server *srv = NULL;
  mem.fail_at = 0;
  CHECK_EQ_INT(wstun_server_start(&loop, &c, &srv), 0);
  if (srv == NULL)
    return;
  wstun_server_config n;
  reload_config(&n);
  n.passwords = "tok-aaaaaaaaaaaaaaaa:pw1,tok-bbbbbbbbbbbbbbbb:pw2";
  n.trusted_proxies = "10.0.0.0/8,::1";
  n.admin_allow = "192.168.0.0/16";
  n.admin_token = "admin-secret";
  int ok = 0;
  for (long k = 1; k < 1000 && !ok; k++) {
    test_context("failing allocation %ld", k);
    long live = mem.live;
    mem.count = 0;
    mem.fail_at = k;
    int rc = wstun_server_reload(srv, &n);
    mem.fail_at = 0;
    if (rc == 0) {
      ok = mem.count < k; /* nothing failed: all allocations seen */
      CHECK_EQ_INT((long long)srv->npasswords, 2);
    } else {
      CHECK_EQ_INT(rc, WSTUN_ENOMEM);
      CHECK_EQ_INT(mem.live, live);
      CHECK_EQ_INT((long long)srv->npasswords, 1);
      CHECK(srv->admin_token == NULL);
    }
  }
  test_context(NULL);
  CHECK(ok);
  wstun_server_close(srv, 0, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(mem.live, 0);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  CHECK_EQ_INT(wstun_set_allocator(NULL), 0);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(tunnel_count_follows_clients_by_token),
      T(configuration_errors),
      T(base_path_without_its_slashes),
      T(listen_host_forms),
      T(drain_answers_503_then_stops),
      T(drain_without_a_watcher_stops_at_once),
      T(close_during_a_drain_cancels_it),
      T(start_fails_cleanly_at_every_allocation),
      T(reload_is_all_or_nothing),
      T(reload_closes_tunnels_whose_password_changed),
      T(reload_fails_cleanly_at_every_allocation)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
