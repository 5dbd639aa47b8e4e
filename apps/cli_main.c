/* wstuncli: flags → wstun_client_config, signals → graceful stop,
 * SIGUSR1/SIGHUP → log file reopened, state changes → -statusfile. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app_common.h"

#define GRACE_MS 10000

typedef struct cli_app {
  wstun_client *cli;
  uv_signal_t sigint, sigterm;
  app_reopen reopen;
  int stopping;
  /* -statusfile */
  const char *statusfile;
  char *server;           /* the tunnel URL without its userinfo */
  int state;              /* wstun_client_state, -1 before the first */
  time_t since;           /* when it entered that state */
  const char *last_error; /* wstun_strerror() of the last error, or "" */
  int started;            /* wstun_client_start() returned: write on changes */
  time_t last_pong;       /* 0 before the first */
} cli_app;

/* The tunnel URL as the status file shows it: without "user:pass@", and
 * with control characters replaced (one line per key). */
static char *url_without_userinfo(const char *url) {
  char *out = strdup(url);
  if (out == NULL)
    return NULL;
  char *auth = strstr(out, "://");
  auth = auth ? auth + 3 : out;
  size_t alen = strcspn(auth, "/?#");
  char *at = NULL;
  for (size_t i = 0; i < alen; i++)
    if (auth[i] == '@')
      at = auth + i;
  if (at)
    memmove(auth, at + 1, strlen(at + 1) + 1);
  for (char *p = out; *p; p++)
    if ((unsigned char)*p < 0x20 || *p == 0x7f)
      *p = '?';
  return out;
}

static const char *state_name(int s) {
  switch (s) {
  case WSTUN_CLIENT_CONNECTED:
    return "connected";
  case WSTUN_CLIENT_DISCONNECTED:
    return "disconnected";
  default:
    return "connecting";
  }
}

/* Rewrites the status file atomically (temp file + rename). Returns 0 or
 * an errno value. The first two lines are the Go client's, written once a
 * pong came (its file is empty before): "Unix: <epoch>" and "Time: <RFC
 * 3339>" of the last pong, so monitoring made for it keeps working. */
static int status_write(const cli_app *app) {
  char since[40], pong[80] = "";
  app_rfc3339(app->since, since, sizeof(since));
  if (app->last_pong) {
    char t[40];
    app_rfc3339(app->last_pong, t, sizeof(t));
    snprintf(pong, sizeof(pong), "Unix: %lld\nTime: %s\n",
             (long long)app->last_pong, t);
  }
  char mem[80] = "";
  uint64_t bytes, blocks;
  if (wstun_memory_in_use(&bytes, &blocks) == 0)
    snprintf(mem, sizeof(mem), "memory_bytes=%llu\nmemory_blocks=%llu\n",
             (unsigned long long)bytes, (unsigned long long)blocks);
  size_t need = strlen(app->server) + strlen(app->last_error) + 400;
  char *text = malloc(need);
  if (text == NULL)
    return ENOMEM;
  int n = snprintf(
      text, need, "%sstate=%s\nserver=%s\nsince=%s\nlast_error=%s\npid=%ld\n%s",
      pong, state_name(app->state), app->server, since, app->last_error,
      (long)getpid(), mem);
  int err = app_write_file_atomic(app->statusfile, text, (size_t)n);
  free(text);
  return err;
}

static void on_state(wstun_client *cli, wstun_client_state state, int err,
                     void *ud) {
  cli_app *app = ud;
  (void)cli;
  if ((int)state != app->state) {
    app->state = (int)state;
    app->since = time(NULL);
  }
  if (err != 0)
    app->last_error = wstun_strerror(err);
  if (!app->started)
    return; /* written once wstun_client_start() returns */
  int werr = status_write(app);
  if (werr)
    app_logf(WSTUN_LOG_WARN, "cannot write status file %s: %s", app->statusfile,
             strerror(werr));
}

static void on_pong(wstun_client *cli, void *ud) {
  cli_app *app = ud;
  (void)cli;
  app->last_pong = time(NULL);
  if (!app->started)
    return;
  int werr = status_write(app);
  if (werr)
    app_logf(WSTUN_LOG_WARN, "cannot write status file %s: %s", app->statusfile,
             strerror(werr));
}

static void remove_files(cli_app *app) {
  if (app->statusfile && app->started) {
    unlink(app->statusfile);
    app->started = 0;
  }
  app_pidfile_remove();
}

static void on_client_closed(wstun_client *cli, void *ud) {
  cli_app *app = ud;
  (void)cli;
  uv_close((uv_handle_t *)&app->sigint, NULL);
  uv_close((uv_handle_t *)&app->sigterm, NULL);
  app_reopen_close(&app->reopen);
}

static void on_signal(uv_signal_t *h, int signum) {
  cli_app *app = h->data;
  if (app->stopping) {
    app_errorf("second signal: exiting now");
    remove_files(app);
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
  const char *token = NULL, *log_level = "info", *statusfile = NULL;
  int log_pretty = 0;
  app_ops ops = {0};
  app_flag flags[] = {
      {"tunnel", FLAG_STR, &cfg.tunnel_url, "URL",
       "server to dial: ws[s]://[user:pass@]host[:port][/base]", 0, -1},
      {"server", FLAG_STR, &cfg.server_url, "URL",
       "backend for requests without X-Host: http[s]://host[:port][/prefix]", 0,
       -1},
      {"token", FLAG_STR, &token, "TOKEN[:PASSWORD]",
       "rendez-vous token (>= 16 chars); password also from $WSTUNNEL_PASSWORD",
       0, -1},
      {"regexp", FLAG_STR, &cfg.regexp, "RE",
       "X-Host values allowed (full match on scheme://host[:port][/prefix])", 0,
       -1},
      {"timeout", FLAG_INT, &cfg.timeout_sec, "S",
       "ping every S/3 s, reconnect after S s without answer (default 30; "
       "3..86400, others are clamped)",
       0, -1},
      {"stall-timeout", FLAG_INT, &cfg.stall_timeout_sec, "S",
       "give up a backend that reads nothing of a body (or sends nothing of "
       "a response) for S s while it holds the tunnel (default 10)",
       1, 86400},
      {"backend-timeout", FLAG_INT, &cfg.backend_timeout_sec, "S",
       "answer 504 when the backend has not answered after S s (default 1200)",
       1, 100000000},
      {"backend-idle", FLAG_INT, &cfg.backend_idle_sec, "S",
       "close a backend keep-alive connection idle for S s (default 30)", 1,
       86400},
      {"client-ports", FLAG_STR, &cfg.client_ports, "LIST",
       "local source ports for the tunnel, e.g. 8000..8100,8300 (first free)",
       0, -1},
      {"certfile", FLAG_STR, &cfg.ca_file, "FILE",
       "PEM certificates to trust besides the system's (wss://, https://)", 0,
       -1},
      {"insecure", FLAG_BOOL, &cfg.insecure_backends, NULL,
       "accept any certificate from https:// backends (never the tunnel)", 0,
       1},
      {"proxy", FLAG_STR, &cfg.proxy_url, "URL",
       "HTTP CONNECT proxy http://[user:pass@]host:port (default: "
       "$https_proxy, $http_proxy, $no_proxy)",
       0, -1},
      {"log-level", FLAG_STR, &log_level, "LEVEL", "error, warn, info or debug",
       0, -1},
      {"log-pretty", FLAG_BOOL, &log_pretty, NULL,
       "human-readable log lines (Go wstunnel's flag; text is the default, "
       "this overrides -log-format json)",
       0, 1},
      APP_OPS_FLAGS(ops),
      {"statusfile", FLAG_STR, &statusfile, "FILE",
       "keep state, server, since, last_error, pid in FILE; removed at exit", 0,
       -1},
      {NULL, FLAG_STR, NULL, NULL, NULL, 0, 0}};
  app_parse_flags(prog,
                  "wstun tunnel client: dials wstunsrv and serves the "
                  "requests it forwards from a local HTTP backend.",
                  flags, argc, argv, first);
  cfg.log_level = app_log_level(prog, log_level);
  if (statusfile && *statusfile == '\0') {
    fprintf(stderr, "%s: flag -statusfile: must not be empty\n", prog);
    return APP_EXIT_USAGE;
  }
  if (log_pretty)
    ops.log_format = "text";
  app_log_setup(prog, "wstuncli", &ops);
  cfg.log_cb = app_log;
  /* the Go client clamps -timeout (to 3..600) rather than refusing it */
  int asked = cfg.timeout_sec;
  cfg.timeout_sec = asked < 3 ? 3 : asked > 86400 ? 86400 : asked;
  if (cfg.timeout_sec != asked)
    app_logf(WSTUN_LOG_WARN, "-timeout %d is out of range: using %d", asked,
             cfg.timeout_sec);
  if (cfg.tunnel_url == NULL) {
    fprintf(stderr, "%s: flag -tunnel: required (ws://host:port)\n", prog);
    app_log_shutdown();
    return APP_EXIT_USAGE;
  }
  if (token == NULL) {
    fprintf(stderr, "%s: flag -token: required\n", prog);
    app_log_shutdown();
    return APP_EXIT_USAGE;
  }
  /* as the Go client's Start(): a client that may send requests nowhere
   * would answer 403 to every one of them */
  if ((cfg.server_url == NULL || *cfg.server_url == '\0') &&
      (cfg.regexp == NULL || *cfg.regexp == '\0')) {
    fprintf(stderr,
            "%s: flag -server or -regexp: required (the backend "
            "http[s]://host:port, or the X-Host values allowed)\n",
            prog);
    app_log_shutdown();
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
  cfg.proxy_from_env = 1;
  if (cfg.proxy_url && strstr(cfg.proxy_url, "://") &&
      strncmp(cfg.proxy_url, "http://", 7) != 0) {
    fprintf(stderr, "%s: flag -proxy: only http:// proxies are supported\n",
            prog);
    free(tok);
    app_log_shutdown();
    return APP_EXIT_USAGE;
  }
  if (strlen(tok) < 16) {
    fprintf(
        stderr,
        "%s: flag -token: rendez-vous token is too short (must be 16 chars)\n",
        prog);
    free(tok);
    app_log_shutdown();
    return APP_EXIT_USAGE;
  }

  signal(SIGPIPE, SIG_IGN);
  app_tune_malloc();
  app_raise_nofile(); /* a backend connection per request in flight */
  cli_app app = {0};
  app.state = -1;
  app.last_error = "";
  app.since = time(NULL);
  if (statusfile) {
    app.statusfile = statusfile;
    app.server = url_without_userinfo(cfg.tunnel_url);
    if (app.server == NULL) {
      free(tok);
      app_log_shutdown();
      return 1;
    }
    cfg.state_cb = on_state;
    cfg.pong_cb = on_pong;
    cfg.state_user_data = &app;
  }
  uv_loop_t *loop = uv_default_loop();
  /* handlers first: a signal sent as soon as the client runs waits in the
   * loop instead of killing the process */
  uv_signal_init(loop, &app.sigint);
  uv_signal_init(loop, &app.sigterm);
  app.sigint.data = app.sigterm.data = &app;
  uv_signal_start(&app.sigint, on_signal, SIGINT);
  uv_signal_start(&app.sigterm, on_signal, SIGTERM);
  app_reopen_start(loop, &app.reopen, NULL, NULL);
  int exit_code = 0;
  int rc = wstun_client_start(loop, &cfg, &app.cli);
  if (rc != 0) {
    const char *flag = rc == WSTUN_EREGEX   ? "regexp"
                       : rc == WSTUN_EPORTS ? "client-ports"
                       : rc == WSTUN_ETLS   ? "certfile"
                       : rc == WSTUN_EURL
                           ? (cfg.proxy_url    ? "tunnel, -server or -proxy"
                              : cfg.server_url ? "tunnel or -server (or the "
                                                 "proxy environment variable)"
                                               : "tunnel")
                           : "token";
    fprintf(stderr, "%s: flag -%s: %s\n", prog, flag, wstun_strerror(rc));
    exit_code = APP_EXIT_USAGE;
    on_client_closed(NULL, &app); /* closes the signal handles */
  }
  if (exit_code == 0 && statusfile) {
    if (app.state < 0) { /* no callback yet: the client starts by dialing */
      app.state = (int)wstun_client_get_state(app.cli);
      app.since = time(NULL);
    }
    app.started = 1;
    int werr = status_write(&app);
    if (werr) {
      app_errorf("%s: flag -statusfile: cannot write %s: %s", prog, statusfile,
                 strerror(werr));
      app.started = 0;
      exit_code = 1;
    }
  }
  if (exit_code == 0 && ops.pidfile &&
      app_pidfile_write(prog, ops.pidfile) != 0)
    exit_code = 1;
  if (exit_code == 1) {
    app.stopping = 1;
    wstun_client_close(app.cli, 0, on_client_closed, &app);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  remove_files(&app);
  free(tok);
  free(app.server);
  app_log_shutdown();
  return exit_code;
}
