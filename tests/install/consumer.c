/* An out-of-tree program built against an installed libwstun by
 * install_test.sh, through pkg-config and through find_package(wstun).
 *
 * It prints "wstun <version>" from wstun_version(), fails unless that is
 * the version of the headers it was compiled with (WSTUN_VERSION_STRING),
 * then opens a real tunnel on 127.0.0.1 (a server on a free port, a client
 * with an in-process handler) and closes both: linked statically, that
 * needs every private dependency the .pc file and the CMake package list.
 * Exits 0 when all went well and the loop ended empty. */
#include <stdio.h>
#include <string.h>
#include <wstun/wstun.h>

#define TOKEN "install-test-token-0123456789"

typedef struct run {
  wstun_server *srv;
  wstun_client *cli;
  uv_timer_t timer; /* deadline, then the deferred close */
  int connected;
  int closing;
  int closed;
} run;

static void answer(wstun_request *req, void *ud) {
  (void)ud;
  wstun_request_respond(req, 200, "text/plain", "ok\n", 3);
}

static void on_server_closed(wstun_server *srv, void *ud) {
  run *r = ud;
  (void)srv;
  r->closed = 1;
  uv_close((uv_handle_t *)&r->timer, NULL);
}

static void on_client_closed(wstun_client *cli, void *ud) {
  run *r = ud;
  (void)cli;
  wstun_server_close(r->srv, 0, on_server_closed, r);
}

/* Close outside of the library's callbacks. */
static void on_timer(uv_timer_t *t) {
  run *r = t->data;
  if (r->closing)
    return;
  r->closing = 1;
  if (!r->connected)
    fprintf(stderr, "consumer: the tunnel did not come up within 10 s\n");
  wstun_client_close(r->cli, 0, on_client_closed, r);
}

static void on_state(wstun_client *cli, wstun_client_state state, int err,
                     void *ud) {
  run *r = ud;
  (void)cli;
  (void)err;
  if (state == WSTUN_CLIENT_CONNECTED && !r->connected && !r->closing) {
    r->connected = 1;
    uv_timer_start(&r->timer, on_timer, 0, 0);
  }
}

int main(void) {
  printf("wstun %s\n", wstun_version());
  if (strcmp(wstun_version(), WSTUN_VERSION_STRING) != 0) {
    fprintf(stderr, "consumer: library %s, headers %s\n", wstun_version(),
            WSTUN_VERSION_STRING);
    return 1;
  }

  uv_loop_t loop;
  run r;
  memset(&r, 0, sizeof(r));
  if (uv_loop_init(&loop) != 0)
    return 1;
  wstun_server_config scfg;
  wstun_server_config_init(&scfg);
  scfg.host = "127.0.0.1";
  scfg.port = 0;
  int err = wstun_server_start(&loop, &scfg, &r.srv);
  if (err < 0) {
    fprintf(stderr, "consumer: server: %s\n", wstun_strerror(err));
    return 1;
  }
  char url[64];
  snprintf(url, sizeof(url), "ws://127.0.0.1:%d", wstun_server_port(r.srv));
  wstun_client_config ccfg;
  wstun_client_config_init(&ccfg);
  ccfg.tunnel_url = url;
  ccfg.token = TOKEN;
  ccfg.handler = answer;
  ccfg.state_cb = on_state;
  ccfg.state_user_data = &r;
  err = wstun_client_start(&loop, &ccfg, &r.cli);
  if (err < 0) {
    fprintf(stderr, "consumer: client: %s\n", wstun_strerror(err));
    return 1;
  }
  uv_timer_init(&loop, &r.timer);
  r.timer.data = &r;
  uv_timer_start(&r.timer, on_timer, 10000, 0);

  uv_run(&loop, UV_RUN_DEFAULT);
  int rc = uv_loop_close(&loop);
  if (rc != 0)
    fprintf(stderr, "consumer: loop not empty at exit: %s\n", uv_strerror(rc));
  if (!r.connected || !r.closed || rc != 0)
    return 1;
  printf("tunnel up and closed\n");
  return 0;
}
