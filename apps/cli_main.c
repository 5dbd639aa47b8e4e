/* wstuncli: flags → wstun_client_config, signals → graceful stop. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app_common.h"

#define GRACE_MS 10000

typedef struct cli_app {
  wstun_client *cli;
  uv_signal_t sigint, sigterm;
  int stopping;
} cli_app;

static void on_client_closed(wstun_client *cli, void *ud) {
  cli_app *app = ud;
  (void)cli;
  uv_close((uv_handle_t *)&app->sigint, NULL);
  uv_close((uv_handle_t *)&app->sigterm, NULL);
}

static void on_signal(uv_signal_t *h, int signum) {
  cli_app *app = h->data;
  if (app->stopping) {
    fprintf(stderr, "second signal: exiting now\n");
    exit(1);
  }
  app->stopping = 1;
  app_log(NULL, WSTUN_LOG_INFO,
          signum == SIGINT ? "SIGINT: stopping" : "SIGTERM: stopping");
  wstun_client_close(app->cli, GRACE_MS, on_client_closed, app);
}

int wstuncli_main(const char *prog, int argc, char **argv, int first) {
  wstun_client_config cfg;
  wstun_client_config_init(&cfg);
  const char *token = NULL, *log_level = "info";
  app_flag flags[] = {
      {"tunnel", FLAG_STR, &cfg.tunnel_url, "URL",
       "server to dial: ws://[user:pass@]host[:port][/base]", 0, -1},
      {"server", FLAG_STR, &cfg.server_url, "URL",
       "backend for requests without X-Host: http://host[:port]", 0, -1},
      {"token", FLAG_STR, &token, "TOKEN[:PASSWORD]",
       "rendez-vous token (>= 16 chars); password also from $WSTUNNEL_PASSWORD", 0, -1},
      {"regexp", FLAG_STR, &cfg.regexp, "RE",
       "X-Host values allowed (full match on scheme://host[:port])", 0, -1},
      {"timeout", FLAG_INT, &cfg.timeout_sec, "S",
       "ping every S/3 s, reconnect after S s without answer (default 30)", 3, 86400},
      {"log-level", FLAG_STR, &log_level, "LEVEL", "error, warn, info or debug", 0, -1},
      {NULL, FLAG_STR, NULL, NULL, NULL, 0, 0}};
  app_parse_flags(prog, "wstun tunnel client: dials wstunsrv and serves the "
                        "requests it forwards from a local HTTP backend.",
                  flags, argc, argv, first);
  cfg.log_level = app_log_level(prog, log_level);
  cfg.log_cb = app_log;
  if (cfg.tunnel_url == NULL) {
    fprintf(stderr, "%s: flag -tunnel: required (ws://host:port)\n", prog);
    return APP_EXIT_USAGE;
  }
  if (token == NULL) {
    fprintf(stderr, "%s: flag -token: required\n", prog);
    return APP_EXIT_USAGE;
  }
  /* -token tok:password; else the password may come from the environment,
   * which keeps it out of the process list */
  char *tok = strdup(token);
  if (tok == NULL)
    return 1;
  char *colon = strchr(tok, ':');
  if (colon) {
    *colon = '\0';
    cfg.password = colon + 1;
  } else if (getenv("WSTUNNEL_PASSWORD") && *getenv("WSTUNNEL_PASSWORD")) {
    cfg.password = getenv("WSTUNNEL_PASSWORD");
  }
  cfg.token = tok;
  if (strlen(tok) < 16) {
    fprintf(stderr, "%s: flag -token: rendez-vous token is too short (must be 16 chars)\n", prog);
    free(tok);
    return APP_EXIT_USAGE;
  }

  signal(SIGPIPE, SIG_IGN);
  cli_app app = {0};
  uv_loop_t *loop = uv_default_loop();
  int rc = wstun_client_start(loop, &cfg, &app.cli);
  if (rc != 0) {
    const char *flag = rc == WSTUN_EREGEX ? "regexp"
                       : rc == WSTUN_EURL  ? (cfg.server_url ? "tunnel or -server" : "tunnel")
                                           : "token";
    fprintf(stderr, "%s: flag -%s: %s\n", prog, flag, wstun_strerror(rc));
    free(tok);
    return APP_EXIT_USAGE;
  }
  uv_signal_init(loop, &app.sigint);
  uv_signal_init(loop, &app.sigterm);
  app.sigint.data = app.sigterm.data = &app;
  uv_signal_start(&app.sigint, on_signal, SIGINT);
  uv_signal_start(&app.sigterm, on_signal, SIGTERM);
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  free(tok);
  return 0;
}
