/* A program that embeds a tunnel server next to its own HTTP routes, on
 * one loop: the tunnel server on one port, and on another a tiny status
 * page built from the stats API (wstun_server_get_stats and
 * wstun_server_foreach_tunnel).
 *
 *   embedded_server [tunnel-port [status-port]]     (default: 0 0 = any)
 *
 * Prints "tunnel server on 127.0.0.1:P" and "status page on 127.0.0.1:Q".
 * Stops on SIGINT/SIGTERM. The status page answers one request per
 * connection (enough for curl). */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wstun/wstun.h>

static wstun_server *server;
static uv_tcp_t status_listener;
static uv_signal_t sigint, sigterm;

typedef struct page_conn {
  uv_tcp_t tcp;
  uv_write_t write_req;
  char in[2048];
  size_t got;
  char *out;
} page_conn;

typedef struct text {
  char *s;
  size_t len, cap;
} text;

static void add(text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void add(text *t, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    va_start(ap, fmt);
    int n = vsnprintf(t->s ? t->s + t->len : NULL, t->s ? t->cap - t->len : 0,
                      fmt, ap);
    va_end(ap);
    if (n < 0)
      return;
    if (t->s && t->len + (size_t)n < t->cap) {
      t->len += (size_t)n;
      return;
    }
    t->cap = (t->cap + (size_t)n + 1) * 2;
    t->s = realloc(t->s, t->cap);
    if (t->s == NULL)
      exit(1);
  }
}

/* Only a prefix of each token: the page may be seen by others. */
static void add_tunnel(const wstun_tunnel_info *ti, void *ud) {
  add(ud,
      "token %.8s...: %zu connection(s), %zu pending, from %s, %s, idle %.1f "
      "s\n",
      ti->token, ti->connections, ti->pending_requests,
      ti->remote_addr[0] ? ti->remote_addr : "-",
      ti->client_version[0] ? ti->client_version : "-",
      (double)ti->idle_ms / 1000.0);
}

static char *status_page(void) {
  wstun_server_stats st;
  wstun_server_get_stats(server, &st);
  text body = {0};
  add(&body,
      "wstun %s embedded\ntunnels=%zu connections=%zu pending=%zu "
      "completed=%llu errored=%llu\n",
      wstun_version(), st.tunnels, st.tunnel_connections, st.pending_requests,
      (unsigned long long)st.completed_requests,
      (unsigned long long)st.errored_requests);
  wstun_server_foreach_tunnel(server, add_tunnel, &body);
  text resp = {0};
  add(&resp,
      "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
      "Connection: close\r\n\r\n%s",
      body.len, body.s);
  free(body.s);
  return resp.s;
}

static void on_page_closed(uv_handle_t *h) {
  page_conn *pc = (page_conn *)h;
  free(pc->out);
  free(pc);
}

static void on_page_written(uv_write_t *w, int status) {
  (void)status;
  uv_close((uv_handle_t *)w->handle, on_page_closed);
}

static void on_page_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf) {
  page_conn *pc = (page_conn *)h;
  (void)n;
  buf->base = pc->in + pc->got;
  buf->len = sizeof(pc->in) - 1 - pc->got;
}

static void on_page_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  page_conn *pc = (page_conn *)s;
  (void)buf;
  if (n < 0 || pc->got + (size_t)n >= sizeof(pc->in) - 1) {
    uv_close((uv_handle_t *)s, on_page_closed);
    return;
  }
  pc->got += (size_t)n;
  pc->in[pc->got] = '\0';
  if (strstr(pc->in, "\r\n\r\n") == NULL)
    return; /* the head is not complete yet */
  uv_read_stop(s);
  pc->out = status_page();
  uv_buf_t b = uv_buf_init(pc->out, (unsigned)strlen(pc->out));
  uv_write(&pc->write_req, s, &b, 1, on_page_written);
}

static void on_page_connection(uv_stream_t *listener, int status) {
  if (status < 0)
    return;
  page_conn *pc = calloc(1, sizeof(*pc));
  if (pc == NULL)
    return;
  uv_tcp_init(listener->loop, &pc->tcp);
  if (uv_accept(listener, (uv_stream_t *)&pc->tcp) != 0) {
    uv_close((uv_handle_t *)&pc->tcp, on_page_closed);
    return;
  }
  uv_read_start((uv_stream_t *)&pc->tcp, on_page_alloc, on_page_read);
}

static void on_signal(uv_signal_t *sig, int signum) {
  (void)sig;
  (void)signum;
  uv_close((uv_handle_t *)&sigint, NULL);
  uv_close((uv_handle_t *)&sigterm, NULL);
  uv_close((uv_handle_t *)&status_listener, NULL);
  wstun_server_close(server, 5000, NULL, NULL);
}

static void on_log(void *ud, wstun_log_level level, const char *line) {
  (void)ud;
  (void)level;
  fprintf(stderr, "wstun: %s\n", line);
}

int main(int argc, char **argv) {
  /* a write to a reset peer must fail with EPIPE, not end the process */
  signal(SIGPIPE, SIG_IGN);
  uv_loop_t *loop = uv_default_loop();
  wstun_server_config cfg;
  wstun_server_config_init(&cfg);
  cfg.host = "127.0.0.1";
  cfg.port = argc > 1 ? atoi(argv[1]) : 0;
  cfg.log_cb = on_log;
  cfg.log_level = WSTUN_LOG_WARN;
  int err = wstun_server_start(loop, &cfg, &server);
  if (err < 0) {
    fprintf(stderr, "wstun_server_start: %s\n", wstun_strerror(err));
    return 1;
  }

  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", argc > 2 ? atoi(argv[2]) : 0, &addr);
  uv_tcp_init(loop, &status_listener);
  if (uv_tcp_bind(&status_listener, (struct sockaddr *)&addr, 0) != 0 ||
      uv_listen((uv_stream_t *)&status_listener, 64, on_page_connection) != 0) {
    fprintf(stderr, "cannot listen for the status page\n");
    return 1;
  }
  struct sockaddr_in bound;
  int blen = sizeof(bound);
  uv_tcp_getsockname(&status_listener, (struct sockaddr *)&bound, &blen);
  fprintf(stderr,
          "tunnel server on 127.0.0.1:%d\nstatus page on 127.0.0.1:%d\n",
          wstun_server_port(server), ntohs(bound.sin_port));

  uv_signal_init(loop, &sigint);
  uv_signal_init(loop, &sigterm);
  uv_signal_start(&sigint, on_signal, SIGINT);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop) == 0 ? 0 : 1;
}
