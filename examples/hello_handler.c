/* A device that wants to be reachable with no HTTP server at all: every
 * request arriving through the tunnel is answered by a C callback.
 *
 *   hello_handler ws://tunnel.example.com:8080 my-long-secret-token
 *
 * Stops on SIGINT/SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <wstun/wstun.h>

static void hello(wstun_request *req, void *user_data) {
  size_t body_len = 0;
  char msg[512];
  (void)user_data;
  wstun_request_body(req, &body_len);
  const char *agent = wstun_request_header(req, "User-Agent");
  int n = snprintf(msg, sizeof(msg),
                   "hello through the tunnel\nmethod=%s target=%s body=%zu "
                   "user-agent=%s\n",
                   wstun_request_method(req), wstun_request_target(req),
                   body_len, agent ? agent : "-");
  wstun_request_respond(req, 200, "text/plain", msg, (size_t)n);
}

static void on_log(void *ud, wstun_log_level level, const char *line) {
  (void)ud;
  (void)level;
  fprintf(stderr, "%s\n", line);
}

static void on_closed(wstun_client *cli, void *ud) {
  (void)cli;
  uv_close((uv_handle_t *)ud, NULL);
}

static wstun_client *client;

static void on_signal(uv_signal_t *sig, int signum) {
  (void)signum;
  uv_signal_stop(sig);
  wstun_client_close(client, 5000, on_closed, sig);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s ws://host:port TOKEN\n", argv[0]);
    return 2;
  }
  /* a write to a reset peer must fail with EPIPE, not end the process */
  signal(SIGPIPE, SIG_IGN);
  uv_loop_t *loop = uv_default_loop();
  wstun_client_config cfg;
  wstun_client_config_init(&cfg);
  cfg.tunnel_url = argv[1];
  cfg.token = argv[2];
  cfg.handler = hello;
  cfg.log_cb = on_log;
  int err = wstun_client_start(loop, &cfg, &client);
  if (err < 0) {
    fprintf(stderr, "wstun: %s\n", wstun_strerror(err));
    return 1;
  }
  uv_signal_t sigterm;
  uv_signal_init(loop, &sigterm);
  uv_signal_start(&sigterm, on_signal, SIGTERM);
  uv_unref((uv_handle_t *)&sigterm); /* the client keeps the loop alive */
  uv_run(loop, UV_RUN_DEFAULT);
  return uv_loop_close(loop) == 0 ? 0 : 1;
}
