/* The backend side of the client: a pool forwards a request to a real
 * backend socket on loopback and re-frames its response for the tunnel.
 * Each response is sent whole and one byte per write (a timer between
 * bytes, so the parser sees them one at a time): Content-Length, chunked,
 * close-delimited, HEAD, 204, 304, an interim 100, hop-by-hop headers. The
 * seam is the request's response message: with no tunnel attached it is
 * kept, not sent, and read here once finished. */
#include "wstun_upstream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test.h"

/* REQUIRE for functions that return a value */
#define MUST(cond)                                                             \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond);               \
      abort();                                                                 \
    }                                                                          \
  } while (0)

typedef struct backend {
  uv_tcp_t listener;
  uv_tcp_t peer;
  uv_timer_t drip;
  int port;
  const char *script; /* the response to send */
  size_t off;
  int bytewise, close_after;
  char in[4096];
  size_t in_len;
  int answered, peer_open;
  uv_write_t w;
} backend;

static void drip_next(uv_timer_t *t);

static void on_peer_closed(uv_handle_t *h) {
  backend *b = h->data;
  b->peer_open = 0;
}

static void written(uv_write_t *w, int status) {
  backend *b = w->data;
  (void)status;
  if (b->off < strlen(b->script)) {
    uv_timer_start(&b->drip, drip_next, 1, 0);
    return;
  }
  if (b->close_after && b->peer_open)
    uv_close((uv_handle_t *)&b->peer, on_peer_closed);
}

static void drip_next(uv_timer_t *t) {
  backend *b = t->data;
  size_t len = strlen(b->script);
  size_t n = b->bytewise ? 1 : len - b->off;
  uv_buf_t buf = uv_buf_init((char *)b->script + b->off, (unsigned)n);
  b->off += n;
  b->w.data = b;
  uv_write(&b->w, (uv_stream_t *)&b->peer, &buf, 1, written);
}

static void b_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf) {
  backend *b = h->data;
  (void)n;
  buf->base = b->in + b->in_len;
  buf->len = sizeof(b->in) - 1 - b->in_len;
}

static void b_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  backend *b = s->data;
  (void)buf;
  if (n < 0) {
    if (b->peer_open)
      uv_close((uv_handle_t *)&b->peer, on_peer_closed);
    return;
  }
  b->in_len += (size_t)n;
  b->in[b->in_len] = '\0';
  if (!b->answered && strstr(b->in, "\r\n\r\n")) {
    b->answered = 1;
    uv_timer_start(&b->drip, drip_next, 0, 0);
  }
}

static void on_conn(uv_stream_t *l, int status) {
  backend *b = l->data;
  REQUIRE(status == 0 && !b->peer_open);
  uv_tcp_init(l->loop, &b->peer);
  b->peer.data = b;
  REQUIRE(uv_accept(l, (uv_stream_t *)&b->peer) == 0);
  b->peer_open = 1;
  uv_read_start((uv_stream_t *)&b->peer, b_alloc, b_read);
}

/* ---- the pool and one request ------------------------------------------- */

static int released, pool_closed;

static void on_release(wstun_request *req) {
  (void)req;
  released++;
}

static const wstun__request_cbs req_cbs = {.on_release = on_release};

static wstun__tls_config *no_tls(void *ud, char *why, size_t n) {
  (void)ud;
  snprintf(why, n, "no TLS here");
  return NULL;
}

static void on_pool_closed(void *ud) {
  (void)ud;
  pool_closed++;
}

static const wstun__upstream_pool_cbs pool_cbs = {no_tls, on_pool_closed};

static wstun_request *watched;
/* the next exchange() is an upgrade (req->upgrade, as the client sets it
 * on a v2 tunnel); how many idle connections its pool kept after it */
static int upgrade_next;
static size_t idle_after;

static void poll_done(uv_timer_t *t) {
  if (watched->resp && watched->resp->finished)
    uv_stop(t->loop);
}

/* Undoes chunked coding; returns the body's length, or -1 if malformed. */
static long dechunk(const char *s, char *out) {
  long n = 0;
  for (;;) {
    char *end;
    unsigned long len = strtoul(s, &end, 16);
    if (end == s || strncmp(end, "\r\n", 2) != 0)
      return -1;
    s = end + 2;
    if (len == 0)
      return strcmp(s, "\r\n") == 0 ? n : -1;
    memcpy(out + n, s, len);
    n += (long)len;
    s += len;
    if (strncmp(s, "\r\n", 2) != 0)
      return -1;
    s += 2;
  }
}

/* Sends one request through a pool to a backend answering `script`;
 * returns the re-framed response (malloc'd). */
static char *exchange(int method, const char *script, int bytewise,
                      int close_after, char **backend_saw) {
  uv_loop_t loop;
  MUST(uv_loop_init(&loop) == 0);
  backend b;
  memset(&b, 0, sizeof(b));
  b.script = script;
  b.bytewise = bytewise;
  b.close_after = close_after;
  uv_tcp_init(&loop, &b.listener);
  b.listener.data = &b;
  uv_timer_init(&loop, &b.drip);
  b.drip.data = &b;
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", 0, &addr);
  MUST(uv_tcp_bind(&b.listener, (struct sockaddr *)&addr, 0) == 0);
  MUST(uv_listen((uv_stream_t *)&b.listener, 8, on_conn) == 0);
  struct sockaddr_storage ss;
  int sl = sizeof(ss);
  uv_tcp_getsockname(&b.listener, (struct sockaddr *)&ss, &sl);
  b.port = ntohs(((struct sockaddr_in *)&ss)->sin_port);

  wstun__conn_shared shared;
  wstun__conn_shared_init(&shared, &loop);
  wstun__logger log = {.level = WSTUN_LOG_ERROR};
  wstun__upstream_pool pool;
  wstun__upstream_pool_init(&pool, &loop, &shared, &log, &pool_cbs, NULL);
  pool.backend_timeout_ms = 5000;
  pool.stall_ms = 10000;
  pool.idle_ms = 1000;
  pool.max_idle = 4;

  wstun_request *req = wstun__request_new(NULL, 7, &log, &req_cbs, NULL);
  MUST(req != NULL);
  char key[64];
  snprintf(key, sizeof(key), "http://127.0.0.1:%d", b.port);
  req->backend_key = strdup(key);
  req->backend_host = strdup("127.0.0.1");
  req->backend_port = b.port;
  req->method = method;
  req->state = WSTUN__CR_FORWARD;
  req->req_complete = 1;
  req->upgrade = upgrade_next;
  wstun__buf_append_str(&req->to_backend,
                        method == HTTP_HEAD
                            ? "HEAD /x HTTP/1.1\r\nHost: b\r\n\r\n"
                            : "GET /x HTTP/1.1\r\nHost: b\r\n\r\n");
  watched = req;
  uv_timer_t poll;
  uv_timer_init(&loop, &poll);
  uv_timer_start(&poll, poll_done, 1, 1);
  released = pool_closed = 0;
  wstun__upstream_start(&pool, req);
  uv_run(&loop, UV_RUN_DEFAULT);

  MUST(req->resp != NULL && req->resp->finished);
  CHECK(req->up == NULL); /* the exchange is over for the connection */
  size_t n = wstun__buf_size(&req->resp->buf);
  char *out = malloc(n + 1);
  memcpy(out, wstun__buf_data(&req->resp->buf), n);
  out[n] = '\0';
  if (backend_saw)
    *backend_saw = strdup(b.in);

  idle_after = pool.nidle;
  wstun__request_end_exchange(req); /* the last references */
  CHECK_EQ_INT(released, 1);
  wstun__upstream_pool_close(&pool);
  uv_close((uv_handle_t *)&poll, NULL);
  uv_close((uv_handle_t *)&b.drip, NULL);
  uv_close((uv_handle_t *)&b.listener, NULL);
  if (b.peer_open)
    uv_close((uv_handle_t *)&b.peer, on_peer_closed);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(pool_closed, 1);
  wstun__conn_shared_close(&shared, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  return out;
}

TEST(responses_are_reframed) {
  static const struct {
    int method;
    const char *script;
    int close_after;
    const char *head; /* the re-framed head */
    const char *body; /* de-chunked when the head says chunked */
  } cases[] = {
      {HTTP_GET, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0,
       "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "hello"},
      {HTTP_GET,
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
       "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
       0, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
       "hello world"},
      /* close-delimited becomes chunked: the tunnel message needs framing */
      {HTTP_GET, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end", 1,
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
       "until the end"},
      {HTTP_GET, "HTTP/1.0 200 OK\r\n\r\nold style", 1,
       "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "old style"},
      /* no body whatever the headers say */
      {HTTP_HEAD, "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", 0,
       "HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", ""},
      {HTTP_GET, "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", 0,
       "HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", ""},
      {HTTP_GET, "HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n", 0,
       "HTTP/1.1 304 Not Modified\r\nETag: \"e\"\r\n\r\n", ""},
      /* an interim answer is skipped; hop-by-hop headers go */
      {HTTP_GET,
       "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nKeep-Alive: "
       "timeout=5\r\nConnection: keep-alive, X-Hop\r\nX-Hop: h\r\nX-End: e\r\n"
       "Content-Length: 2\r\n\r\nok",
       0, "HTTP/1.1 200 OK\r\nX-End: e\r\nContent-Length: 2\r\n\r\n", "ok"},
  };
  for (size_t i = 0; i < TEST_COUNT(cases); i++)
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      test_context("case %zu bytewise %d", i, bytewise);
      char *saw = NULL;
      char *out = exchange(cases[i].method, cases[i].script, bytewise,
                           cases[i].close_after, &saw);
      CHECK(strncmp(saw, cases[i].method == HTTP_HEAD ? "HEAD /x " : "GET /x ",
                    7) == 0);
      size_t hl = strlen(cases[i].head);
      CHECK(strncmp(out, cases[i].head, hl) == 0);
      if (strncmp(out, cases[i].head, hl) != 0)
        fprintf(stderr, "got: %s\n", out);
      if (strstr(cases[i].head, "chunked")) {
        char body[256];
        long n = dechunk(out + hl, body);
        CHECK(n == (long)strlen(cases[i].body));
        if (n >= 0)
          CHECK(memcmp(body, cases[i].body, (size_t)n) == 0);
      } else {
        CHECK_EQ_STR(out + hl, cases[i].body);
      }
      free(out);
      free(saw);
    }
  test_context(NULL);
}

/* An upgrade: a 101 keeps what makes it one, then the backend's bytes go
 * into the response as they are (no framing), until the backend closes,
 * which ends the response (END); the connection is never kept. Refused,
 * it is an ordinary response, and the connection is not kept either. */
TEST(upgrade_pipes_raw_bytes) {
  static const struct {
    const char *script;
    const char *out;
  } cases[] = {
      {"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-echo\r\n"
       "Connection: Upgrade\r\nX-A: 1\r\n\r\nraw\r\n0\r\n\r\nHTTP/1.1 200 OK",
       "HTTP/1.1 101 Switching Protocols\r\nX-A: 1\r\nConnection: Upgrade\r\n"
       "Upgrade: x-echo\r\n\r\nraw\r\n0\r\n\r\nHTTP/1.1 200 OK"},
      {"HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nno",
       "HTTP/1.1 400 Bad Request\r\nContent-Length: 2\r\n\r\nno"},
  };
  for (size_t i = 0; i < TEST_COUNT(cases); i++)
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      test_context("case %zu bytewise %d", i, bytewise);
      upgrade_next = 1;
      char *out = exchange(HTTP_GET, cases[i].script, bytewise, 1, NULL);
      upgrade_next = 0;
      CHECK_EQ_STR(out, cases[i].out);
      CHECK_EQ_INT(idle_after, 0);
      free(out);
    }
  test_context(NULL);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {T(responses_are_reframed),
                                    T(upgrade_pipes_raw_bytes)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
