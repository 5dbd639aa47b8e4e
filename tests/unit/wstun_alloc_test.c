/* The allocator hook, and what the library does when memory runs out:
 * a full exchange (server, client with an in-process handler, one HTTP
 * request through the tunnel) runs with a counting allocator that fails
 * the Nth allocation, for every N the exchange makes. Whatever fails, the
 * run must end (bounded by a deadline), close cleanly and give back every
 * byte: the live-allocation count is zero once the loop is closed. ASan
 * watches for use-after-free on the error paths. */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "test.h"
#include "wstun/wstun.h"

#define TOKEN "alloc-test-token-0123456789abcdef"

static struct {
  long live;    /* allocations not yet freed */
  long count;   /* allocations made */
  long fail_at; /* fail this allocation (1-based); 0 = never */
  long failed;
  int fail_all; /* fail every allocation while set */
} mem;

static void *t_malloc(size_t n, void *ud) {
  (void)ud;
  if (mem.fail_all || (mem.fail_at && ++mem.count == mem.fail_at)) {
    mem.failed++;
    return NULL;
  }
  if (!mem.fail_at)
    mem.count++;
  void *p = malloc(n);
  if (p)
    mem.live++;
  return p;
}
static void *t_calloc(size_t c, size_t n, void *ud) {
  void *p = t_malloc(c * n, ud);
  if (p)
    memset(p, 0, c * n);
  return p;
}
static void *t_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  if (p == NULL)
    return t_malloc(n, ud);
  if (mem.fail_all || (mem.fail_at && ++mem.count == mem.fail_at)) {
    mem.failed++;
    return NULL;
  }
  if (!mem.fail_at)
    mem.count++;
  return realloc(p, n);
}
static void t_free(void *p, void *ud) {
  (void)ud;
  if (p) {
    mem.live--;
    free(p);
  }
}

typedef struct run {
  uv_loop_t loop;
  wstun_server *srv;
  wstun_client *cli;
  uv_tcp_t http;
  uv_connect_t connect_req;
  uv_write_t write_req;
  uv_timer_t deadline;
  char request[256];
  char response[2048];
  size_t got;
  int answered, stopping, srv_closed, cli_closed;
} run;

static void answer(wstun_request *req, void *ud) {
  (void)ud;
  wstun_request_respond(req, 200, "text/plain", "ok", 2);
}

static void srv_closed(wstun_server *s, void *ud) {
  (void)s;
  ((run *)ud)->srv_closed = 1;
}
static void cli_closed(wstun_client *c, void *ud) {
  (void)c;
  ((run *)ud)->cli_closed = 1;
}

static void stop(run *r) {
  if (r->stopping)
    return;
  r->stopping = 1;
  uv_close((uv_handle_t *)&r->http, NULL);
  uv_close((uv_handle_t *)&r->deadline, NULL);
  if (r->cli)
    wstun_client_close(r->cli, 0, cli_closed, r);
  if (r->srv)
    wstun_server_close(r->srv, 0, srv_closed, r);
}

static void on_alloc(uv_handle_t *h, size_t n, uv_buf_t *b) {
  run *r = h->data;
  (void)n;
  b->base = r->response + r->got;
  b->len = sizeof(r->response) - 1 - r->got;
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  run *r = s->data;
  (void)b;
  if (n > 0) {
    r->got += (size_t)n;
    r->response[r->got] = '\0';
    if (strstr(r->response, "\r\n\r\nok")) {
      r->answered = 1;
      stop(r);
    }
  } else if (n < 0) {
    stop(r); /* an error answer or a cut connection: both fine here */
  }
}

static void on_written(uv_write_t *w, int status) {
  run *r = w->data;
  if (status == 0)
    uv_read_start((uv_stream_t *)&r->http, on_alloc, on_read);
}

static void on_connected(uv_connect_t *c, int status) {
  run *r = c->data;
  if (status != 0 || r->stopping)
    return;
  uv_buf_t b = uv_buf_init(r->request, (unsigned)strlen(r->request));
  r->write_req.data = r;
  uv_write(&r->write_req, (uv_stream_t *)&r->http, &b, 1, on_written);
}

static void on_state(wstun_client *c, wstun_client_state st, int err,
                     void *ud) {
  run *r = ud;
  (void)c;
  (void)err;
  if (st != WSTUN_CLIENT_CONNECTED || r->stopping || r->connect_req.data)
    return;
  snprintf(r->request, sizeof(r->request),
           "GET /_token/%s/x HTTP/1.1\r\nHost: h\r\n\r\n", TOKEN);
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", wstun_server_port(r->srv), &a);
  r->connect_req.data = r;
  uv_tcp_connect(&r->connect_req, &r->http, (struct sockaddr *)&a,
                 on_connected);
}

static void on_deadline(uv_timer_t *t) {
  stop(t->data);
}

/* One exchange; returns 1 when the request was answered. */
static int exchange(long fail_at) {
  run r;
  memset(&r, 0, sizeof(r));
  mem.count = 0;
  mem.fail_at = fail_at;
  uv_loop_init(&r.loop);
  uv_tcp_init(&r.loop, &r.http);
  r.http.data = &r;
  uv_timer_init(&r.loop, &r.deadline);
  r.deadline.data = &r;
  uv_timer_start(&r.deadline, on_deadline, 300, 0);

  wstun_server_config sc;
  wstun_server_config_init(&sc);
  sc.host = "127.0.0.1";
  sc.port = 0;
  if (wstun_server_start(&r.loop, &sc, &r.srv) != 0)
    r.srv = NULL;
  if (r.srv) {
    char url[64];
    snprintf(url, sizeof(url), "ws://127.0.0.1:%d", wstun_server_port(r.srv));
    wstun_client_config cc;
    wstun_client_config_init(&cc);
    cc.tunnel_url = url;
    cc.token = TOKEN;
    cc.handler = answer;
    cc.state_cb = on_state;
    cc.state_user_data = &r;
    if (wstun_client_start(&r.loop, &cc, &r.cli) != 0)
      r.cli = NULL;
  }
  if (!r.srv || !r.cli)
    stop(&r);
  uv_run(&r.loop, UV_RUN_DEFAULT);
  CHECK(!r.srv || r.srv_closed);
  CHECK(!r.cli || r.cli_closed);
  CHECK_EQ_INT(uv_loop_close(&r.loop), 0);
  mem.fail_at = 0;
  return r.answered;
}

static const wstun_allocator counting = {t_malloc, t_calloc, t_realloc, t_free,
                                         NULL};

TEST(hook_sees_every_allocation_and_every_free) {
  CHECK_EQ_INT(wstun_set_allocator(&counting), 0);
  memset(&mem, 0, sizeof(mem));
  CHECK_EQ_INT(exchange(0), 1);
  CHECK(mem.count > 20);
  CHECK_EQ_INT(mem.live, 0);
  CHECK_EQ_INT(wstun_set_allocator(NULL), 0);
}

/* The default allocator counts what the library holds: a whole exchange
 * gives every byte back, and a custom allocator turns the count off. */
TEST(default_allocator_counts_live_memory) {
  CHECK_EQ_INT(wstun_set_allocator(NULL), 0);
  uint64_t b0 = 1, n0 = 1, b1, n1, b2, n2;
  CHECK_EQ_INT(wstun_memory_in_use(&b0, &n0), 0);
  CHECK_EQ_INT(exchange(0), 1);
  CHECK_EQ_INT(wstun_memory_in_use(&b1, &n1), 0);
  CHECK_EQ_INT((long)(b1 - b0), 0);
  CHECK_EQ_INT((long)(n1 - n0), 0);
  /* and a live client is seen while it exists */
  wstun_client_config cc;
  wstun_client_config_init(&cc);
  cc.tunnel_url = "ws://127.0.0.1:1";
  cc.token = TOKEN;
  cc.server_url = "http://127.0.0.1:1/prefix";
  uv_loop_t loop;
  CHECK_EQ_INT(uv_loop_init(&loop), 0);
  wstun_client *cli = NULL;
  CHECK_EQ_INT(wstun_client_start(&loop, &cc, &cli), 0);
  CHECK_EQ_INT(wstun_memory_in_use(&b2, &n2), 0);
  CHECK(b2 > b1 + 100);
  CHECK(n2 > n1);
  wstun_client_close(cli, 0, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  CHECK_EQ_INT(wstun_memory_in_use(&b2, &n2), 0);
  CHECK_EQ_INT((long)(b2 - b0), 0);
  CHECK_EQ_INT((long)(n2 - n0), 0);
  CHECK_EQ_INT(wstun_set_allocator(&counting), 0);
  CHECK_EQ_INT(wstun_memory_in_use(&b2, &n2), WSTUN_EINVAL);
  CHECK_EQ_INT((long)b2, 0);
  CHECK_EQ_INT(wstun_set_allocator(NULL), 0);
}

TEST(incomplete_allocator_refused) {
  wstun_allocator a = counting;
  a.free = NULL;
  CHECK_EQ_INT(wstun_set_allocator(&a), WSTUN_EINVAL);
}

TEST(every_failed_allocation_ends_cleanly) {
  CHECK_EQ_INT(wstun_set_allocator(&counting), 0);
  memset(&mem, 0, sizeof(mem));
  exchange(0);
  long total = mem.count;
  int answered = 0;
  for (long n = 1; n <= total; n++) {
    test_context("failing allocation %ld of %ld", n, total);
    mem.live = 0;
    answered += exchange(n);
    CHECK_EQ_INT(mem.live, 0);
    if (test__state.test_failures)
      break;
  }
  test_context(NULL);
  printf("  %ld allocations failed one at a time; %d runs still answered\n",
         total, answered);
  CHECK_EQ_INT(wstun_set_allocator(NULL), 0);
}

/* ---- the listener after a connection it had no memory for ------------- */

typedef struct lrun {
  uv_loop_t loop;
  wstun_server *srv;
  uv_tcp_t a[2], b; /* the a's arrive while memory is out, b after */
  uv_connect_t ca[2], cb;
  uv_write_t w;
  uv_timer_t step, deadline;
  char resp[1024];
  size_t got;
  int a_ended, answered, stopping, srv_closed, need_a_ended; /* a's */
  char log[2048]; /* warnings, one per line */
} lrun;

static void l_log(void *ud, wstun_log_level level, const char *msg) {
  lrun *r = ud;
  size_t n = strlen(r->log);
  (void)level;
  snprintf(r->log + n, sizeof(r->log) - n, "%s\n", msg);
}

static void l_srv_closed(wstun_server *s, void *ud) {
  (void)s;
  ((lrun *)ud)->srv_closed = 1;
}

static void l_stop(lrun *r) {
  if (r->stopping)
    return;
  r->stopping = 1;
  mem.fail_all = 0;
  uv_close((uv_handle_t *)&r->a[0], NULL);
  uv_close((uv_handle_t *)&r->a[1], NULL);
  uv_close((uv_handle_t *)&r->b, NULL);
  uv_close((uv_handle_t *)&r->step, NULL);
  uv_close((uv_handle_t *)&r->deadline, NULL);
  wstun_server_close(r->srv, 0, l_srv_closed, r);
}

static void l_alloc(uv_handle_t *h, size_t n, uv_buf_t *b) {
  lrun *r = h->data;
  (void)n;
  b->base = r->resp + r->got;
  b->len = sizeof(r->resp) - 1 - r->got;
}

static void a_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  lrun *r = s->data;
  (void)b;
  if (n < 0) {
    r->a_ended++; /* closed by the server: not left in the backlog */
    uv_read_stop(s);
    if (r->answered && r->a_ended >= r->need_a_ended)
      l_stop(r);
  }
}

static void b_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  lrun *r = s->data;
  (void)b;
  if (n > 0) {
    r->got += (size_t)n;
    r->resp[r->got] = '\0';
    if (strstr(r->resp, "WSTUNSRV RUNNING")) {
      r->answered = 1;
      if (r->a_ended >= r->need_a_ended)
        l_stop(r);
    }
  } else if (n < 0) {
    uv_read_stop(s);
  }
}

static void b_written(uv_write_t *w, int status) {
  lrun *r = w->data;
  if (status == 0)
    uv_read_start((uv_stream_t *)&r->b, l_alloc, b_read);
}

static void b_connected(uv_connect_t *c, int status) {
  lrun *r = c->data;
  static char req[] = "GET /_health_check HTTP/1.1\r\nHost: h\r\n\r\n";
  if (status != 0 || r->stopping)
    return;
  uv_buf_t buf = uv_buf_init(req, sizeof(req) - 1);
  r->w.data = r;
  uv_write(&r->w, (uv_stream_t *)&r->b, &buf, 1, b_written);
}

static void a_connected(uv_connect_t *c, int status) {
  lrun *r = c->data;
  if (status == 0 && !r->stopping)
    uv_read_start((uv_stream_t *)c->handle, l_alloc, a_read);
}

/* a has reached the listener while every allocation failed: memory is
 * back, b comes */
static void l_step(uv_timer_t *t) {
  lrun *r = t->data;
  mem.fail_all = 0;
  mem.fail_at = 0;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", wstun_server_port(r->srv), &addr);
  r->cb.data = r;
  uv_tcp_connect(&r->cb, &r->b, (struct sockaddr *)&addr, b_connected);
}

static void l_deadline(uv_timer_t *t) {
  l_stop(t->data);
}

/* Connects a while allocations fail (all of them, or the fail_at-th from
 * now), then b once memory is back; returns with the run's record. */
static void listener_run(lrun *r, int fail_all, long fail_at) {
  memset(&mem, 0, sizeof(mem));
  memset(r, 0, sizeof(*r));
  r->need_a_ended = fail_all ? 2 : 0;
  uv_loop_init(&r->loop);
  uv_tcp_init(&r->loop, &r->a[0]);
  uv_tcp_init(&r->loop, &r->a[1]);
  uv_tcp_init(&r->loop, &r->b);
  r->a[0].data = r->a[1].data = r->b.data = r;
  uv_timer_init(&r->loop, &r->step);
  uv_timer_init(&r->loop, &r->deadline);
  r->step.data = r->deadline.data = r;
  wstun_server_config sc;
  wstun_server_config_init(&sc);
  sc.host = "127.0.0.1";
  sc.port = 0;
  sc.log_level = WSTUN_LOG_WARN;
  sc.log_cb = l_log;
  sc.log_user_data = r;
  CHECK_EQ_INT(wstun_server_start(&r->loop, &sc, &r->srv), 0);
  if (r->srv == NULL)
    return;
  mem.fail_all = fail_all;
  mem.fail_at = fail_at;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", wstun_server_port(r->srv), &addr);
  /* two at once: the second may find the spare handle still closing */
  for (int i = 0; i < 2; i++) {
    r->ca[i].data = r;
    uv_tcp_connect(&r->ca[i], &r->a[i], (struct sockaddr *)&addr,
                   a_connected);
  }
  uv_timer_start(&r->step, l_step, 100, 0);
  uv_timer_start(&r->deadline, l_deadline, 2000, 0);
  uv_run(&r->loop, UV_RUN_DEFAULT);
  CHECK(r->answered); /* the listener still accepts */
  CHECK(r->srv_closed);
  CHECK_EQ_INT(uv_loop_close(&r->loop), 0);
  CHECK_EQ_INT(mem.live, 0);
  /* no cap is configured: whatever failed, it was not "too many" */
  CHECK(strstr(r->log, "too many") == NULL);
  if (test__state.test_failures)
    printf("  log: %s\n", r->log);
}

TEST(listener_survives_a_connection_without_memory) {
  CHECK_EQ_INT(wstun_set_allocator(&counting), 0);
  lrun r;
  listener_run(&r, 1, 0);
  /* the connection it could not serve was closed, and the log says why */
  CHECK_EQ_INT(r.a_ended, 2);
  CHECK(strstr(r.log, "dropped: out of memory") != NULL);
  CHECK_EQ_INT(wstun_set_allocator(NULL), 0);
}

TEST(each_failed_allocation_of_an_accept) {
  CHECK_EQ_INT(wstun_set_allocator(&counting), 0);
  int refused = 0;
  for (long n = 1; n <= 6; n++) {
    test_context("failing allocation %ld of the accept", n);
    lrun r;
    listener_run(&r, 0, n);
    refused += strstr(r.log, "refused: out of memory") != NULL;
    printf("  %ld: %s", n, r.log[0] ? r.log : "(nothing logged)\n");
    if (test__state.test_failures)
      break;
  }
  test_context(NULL);
  CHECK(refused > 0); /* counting the connection's address failed once */
  CHECK_EQ_INT(wstun_set_allocator(NULL), 0);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(hook_sees_every_allocation_and_every_free),
      T(default_allocator_counts_live_memory),
      T(incomplete_allocator_refused),
      T(every_failed_allocation_ends_cleanly),
      T(listener_survives_a_connection_without_memory),
      T(each_failed_allocation_of_an_accept),
  };
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
