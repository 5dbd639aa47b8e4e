/* A server and a client on one loop, and a request the program sends to
 * itself through the tunnel: HTTP client → wstun_server → WebSocket →
 * wstun_client → in-process handler, and back. Prints the response and
 * exits 0 when it is the expected one.
 *
 *   loopback            (everything on 127.0.0.1, ports chosen by the OS)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wstun/wstun.h>

#define TOKEN "loopback-example-token-0123456789"

typedef struct app {
  uv_loop_t *loop;
  wstun_server *srv;
  wstun_client *cli;
  uv_tcp_t http; /* our own HTTP client connection */
  uv_connect_t connect_req;
  uv_write_t write_req;
  uv_timer_t deadline;
  char request[256];
  char response[4096];
  size_t got;
  int ok;
} app;

static void answer(wstun_request *req, void *ud) {
  (void)ud;
  char body[128];
  int n =
      snprintf(body, sizeof(body), "pong for %s\n", wstun_request_target(req));
  wstun_request_respond(req, 200, "text/plain", body, (size_t)n);
}

static void on_alloc(uv_handle_t *h, size_t n, uv_buf_t *buf) {
  app *a = h->data;
  (void)n;
  buf->base = a->response + a->got;
  buf->len = sizeof(a->response) - 1 - a->got;
}

static void stop_all(app *a) {
  uv_close((uv_handle_t *)&a->http, NULL);
  uv_close((uv_handle_t *)&a->deadline, NULL);
  wstun_client_close(a->cli, 0, NULL, NULL);
  wstun_server_close(a->srv, 0, NULL, NULL);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  app *a = s->data;
  (void)buf;
  if (n > 0) {
    a->got += (size_t)n;
    a->response[a->got] = '\0';
  }
  /* the request asked for Connection: close: the end is the response's */
  if (n < 0) {
    uv_read_stop(s);
    a->ok = strstr(a->response, "HTTP/1.1 200") == a->response &&
            strstr(a->response, "\r\n\r\npong for /ping\n") != NULL;
    printf("%s", a->response);
    stop_all(a);
  }
}

static void on_written(uv_write_t *w, int status) {
  app *a = w->data;
  if (status == 0)
    uv_read_start((uv_stream_t *)&a->http, on_alloc, on_read);
}

static void on_connected(uv_connect_t *c, int status) {
  app *a = c->data;
  if (status != 0) {
    fprintf(stderr, "connect: %s\n", uv_strerror(status));
    stop_all(a);
    return;
  }
  uv_buf_t b = uv_buf_init(a->request, (unsigned)strlen(a->request));
  a->write_req.data = a;
  uv_write(&a->write_req, (uv_stream_t *)&a->http, &b, 1, on_written);
}

/* Once the tunnel is up, send ourselves a request through the server. */
static void on_state(wstun_client *cli, wstun_client_state state, int err,
                     void *ud) {
  app *a = ud;
  (void)cli;
  (void)err;
  if (state != WSTUN_CLIENT_CONNECTED)
    return;
  snprintf(a->request, sizeof(a->request),
           "GET /_token/%s/ping HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           "Connection: close\r\n\r\n",
           TOKEN);
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", wstun_server_port(a->srv), &addr);
  a->connect_req.data = a;
  uv_tcp_connect(&a->connect_req, &a->http, (struct sockaddr *)&addr,
                 on_connected);
}

static void on_deadline(uv_timer_t *t) {
  fprintf(stderr, "no answer within 10 s\n");
  stop_all(t->data);
}

int main(void) {
  app a;
  memset(&a, 0, sizeof(a));
  a.loop = uv_default_loop();

  wstun_server_config scfg;
  wstun_server_config_init(&scfg);
  scfg.host = "127.0.0.1";
  scfg.port = 0;
  int err = wstun_server_start(a.loop, &scfg, &a.srv);
  if (err < 0) {
    fprintf(stderr, "server: %s\n", wstun_strerror(err));
    return 1;
  }

  char url[64];
  snprintf(url, sizeof(url), "ws://127.0.0.1:%d", wstun_server_port(a.srv));
  wstun_client_config ccfg;
  wstun_client_config_init(&ccfg);
  ccfg.tunnel_url = url;
  ccfg.token = TOKEN;
  ccfg.handler = answer;
  ccfg.state_cb = on_state;
  ccfg.state_user_data = &a;
  err = wstun_client_start(a.loop, &ccfg, &a.cli);
  if (err < 0) {
    fprintf(stderr, "client: %s\n", wstun_strerror(err));
    return 1;
  }
  uv_tcp_init(a.loop, &a.http);
  a.http.data = &a;
  uv_timer_init(a.loop, &a.deadline);
  a.deadline.data = &a;
  uv_timer_start(&a.deadline, on_deadline, 10000, 0);

  uv_run(a.loop, UV_RUN_DEFAULT);
  int closed = uv_loop_close(a.loop);
  if (closed != 0)
    fprintf(stderr, "loop not empty at exit: %s\n", uv_strerror(closed));
  return a.ok && closed == 0 ? 0 : 1;
}
