/* wstuncli: flags and the -config file → one wstun_client_config per
 * tunnel (app_config.c), every tunnel a client on the one loop; signals →
 * graceful stop, SIGUSR1/SIGHUP → log file reopened, state changes →
 * -statusfile (single tunnel). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "app_common.h"
#include "app_config.h"

#define GRACE_MS 10000

typedef struct cli_app {
  wstun_client **clis; /* one per tunnel */
  size_t nclis, open;  /* started, not yet closed */
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
  if (cli && app->open > 0 && --app->open > 0)
    return; /* the others are still finishing */
  uv_close((uv_handle_t *)&app->sigint, NULL);
  uv_close((uv_handle_t *)&app->sigterm, NULL);
  app_reopen_close(&app->reopen);
}

static void close_all(cli_app *app, int grace_ms) {
  size_t n = app->nclis;
  for (size_t i = 0; i < n; i++)
    if (app->clis[i])
      wstun_client_close(app->clis[i], grace_ms, on_client_closed, app);
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
  close_all(app, GRACE_MS);
}

static const char *start_error_flag(int rc, const wstun_client_config *cfg) {
  return rc == WSTUN_EREGEX   ? "regexp"
         : rc == WSTUN_EPORTS ? "client-ports"
         : rc == WSTUN_ETLS   ? "certfile"
         : rc == WSTUN_EURL   ? (cfg->proxy_url    ? "tunnel, -server or -proxy"
                                 : cfg->server_url ? "tunnel or -server (or the "
                                                     "proxy environment variable)"
                                                   : "tunnel")
                              : "token";
}

int wstuncli_main(const char *prog, int argc, char **argv, int first) {
  wstun_client_config cfg;
  wstun_client_config_init(&cfg);
  const char *token = NULL, *log_level = "info", *statusfile = NULL;
  const char *config_path = NULL, *password_file = NULL;
  const char *file_password = NULL; /* `password`: the file only */
  int log_pretty = 0, check_config = 0;
  const char *protocol = "v2";
  app_ops ops = {0};
  app_flag flags[] = {
      {"config", FLAG_STR, &config_path, "FILE",
       "read flags (and [tunnel NAME] sections) from an INI file; flags given "
       "here win",
       0, -1},
      {"check-config", FLAG_BOOL, &check_config, NULL,
       "check the -config file, print FILE:LINE: reason per problem, exit 0 "
       "or 2",
       0, 1},
      {"tunnel", FLAG_STR, &cfg.tunnel_url, "URL",
       "server to dial: ws[s]://[user:pass@]host[:port][/base]", 0, -1},
      {"server", FLAG_STR, &cfg.server_url, "URL",
       "backend for requests without X-Host: http[s]://host[:port][/prefix]", 0,
       -1},
      {"token", FLAG_STR, &token, "TOKEN[:PASSWORD]",
       "rendez-vous token (>= 16 chars); password also from $WSTUNNEL_PASSWORD",
       0, -1},
      {"password-file", FLAG_STR, &password_file, "FILE",
       "the token's password from FILE (mode 600); after TOKEN:PASSWORD, "
       "before $WSTUNNEL_PASSWORD",
       0, -1},
      {"regexp", FLAG_STR, &cfg.regexp, "RE",
       "X-Host values allowed (full match on scheme://host[:port][/prefix])", 0,
       -1},
      {"timeout", FLAG_INT, &cfg.timeout_sec, "S",
       "ping every S/3 s, reconnect after S s without answer (default 30; "
       "3..86400, others are clamped)",
       0, -1},
      {"protocol", FLAG_STR, &protocol, "v1|v2",
       "v2 (default): offer wstun.v2 (many requests at once per tunnel), "
       "v1 if the server does not take it; v1: never offer it",
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

  /* the file: its top-level keys are the flags (the command line wins),
   * plus `password`, which has no flag (it would show in ps) */
  enum { NFLAGS = sizeof(flags) / sizeof(flags[0]) - 1 };
  app_flag top[NFLAGS + 2];
  memcpy(top, flags, sizeof(flags[0]) * NFLAGS);
  top[NFLAGS] =
      (app_flag){"password", FLAG_STR, &file_password, NULL, NULL, 0, -1};
  top[NFLAGS + 1] = flags[NFLAGS];
  app_config conf;
  app_config_init(&conf);
  if (check_config && config_path == NULL) {
    fprintf(stderr, "%s: flag -check-config: needs -config FILE\n", prog);
    return APP_EXIT_USAGE;
  }
  if (config_path) {
    app_config_parse(&conf, config_path, NULL, top, app_cli_kinds);
    if (conf.nerrors > 0 && conf.errors[0].line == 0) { /* unreadable */
      app_config_print_errors(&conf, prog, stderr);
      app_config_free(&conf);
      return APP_EXIT_USAGE;
    }
    app_config_apply(&conf, top);
    /* the command line again, over the file's values */
    app_parse_flags(prog, "", flags, argc, argv, first);
  }
  app_config_check_log_level(&conf, log_level);
  if (config_path == NULL) {
    cfg.protocol = app_protocol(prog, protocol); /* exits when bad */
  } else {
    app_config_check_protocol(&conf, protocol); /* FILE:LINE, below */
    cfg.protocol = strcmp(protocol, "v1") == 0 ? 1 : 2;
  }
  app_cli_tunnel defaults = {0};
  defaults.cfg = cfg;
  defaults.token = token;
  defaults.password = file_password;
  defaults.password_file = password_file;
  app_cli_tunnel *tunnels = NULL;
  size_t ntunnels =
      app_cli_tunnels(&conf, &defaults, getenv("WSTUNNEL_PASSWORD"), &tunnels);
  if (ntunnels > 1 && statusfile)
    app_config_errorf(&conf, 0,
                      "flag -statusfile: describes one tunnel; not with "
                      "several [tunnel NAME] sections");
  if (statusfile && *statusfile == '\0')
    app_config_errorf(&conf, 0, "flag -statusfile: must not be empty");
  if (ntunnels == 0 && conf.nerrors == 0)
    app_config_errorf(&conf, 0, "out of memory");
  if (check_config || conf.nerrors > 0) {
    int bad = conf.nerrors > 0;
    if (bad && config_path == NULL)
      conf.nerrors = 1; /* flags alone: the first problem, one line */
    app_config_print_errors(&conf, prog, stderr);
    if (!bad)
      printf("%s: ok (%zu tunnel%s)\n", config_path, ntunnels,
             ntunnels == 1 ? "" : "s");
    app_cli_tunnels_free(tunnels, ntunnels);
    app_config_free(&conf);
    return bad ? APP_EXIT_USAGE : 0;
  }
  cfg.log_level = app_log_level(prog, log_level);
  if (log_pretty)
    ops.log_format = "text";
  app_log_setup(prog, "wstuncli", &ops);

  signal(SIGPIPE, SIG_IGN);
  app_tune_malloc();
  app_raise_nofile(); /* a backend connection per request in flight */
  cli_app app = {0};
  app.state = -1;
  app.last_error = "";
  app.since = time(NULL);
  app.clis = calloc(ntunnels, sizeof(*app.clis));
  if (app.clis == NULL) {
    app_cli_tunnels_free(tunnels, ntunnels);
    app_config_free(&conf);
    app_log_shutdown();
    return 1;
  }
  app.nclis = ntunnels;
  for (size_t i = 0; i < ntunnels; i++) {
    wstun_client_config *tc = &tunnels[i].cfg;
    tc->log_level = cfg.log_level;
    tc->log_cb = app_log;
    tc->log_user_data = tunnels[i].name; /* "[NAME] " before its lines */
    tc->proxy_from_env = 1;
    /* the Go client clamps -timeout (to 3..600) rather than refusing it */
    int asked = tc->timeout_sec;
    tc->timeout_sec = asked < 3 ? 3 : asked > 86400 ? 86400 : asked;
    if (tc->timeout_sec != asked)
      app_logf(WSTUN_LOG_WARN, "%s%s%s-timeout %d is out of range: using %d",
               tunnels[i].name ? "[" : "",
               tunnels[i].name ? tunnels[i].name : "",
               tunnels[i].name ? "] " : "", asked, tc->timeout_sec);
  }
  if (statusfile) {
    app.statusfile = statusfile;
    app.server = url_without_userinfo(tunnels[0].cfg.tunnel_url);
    if (app.server == NULL) {
      free(app.clis);
      app_cli_tunnels_free(tunnels, ntunnels);
      app_config_free(&conf);
      app_log_shutdown();
      return 1;
    }
    tunnels[0].cfg.state_cb = on_state;
    tunnels[0].cfg.pong_cb = on_pong;
    tunnels[0].cfg.state_user_data = &app;
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
  /* every tunnel a client on this one loop */
  for (size_t i = 0; i < ntunnels && exit_code == 0; i++) {
    int rc = wstun_client_start(loop, &tunnels[i].cfg, &app.clis[i]);
    if (rc == 0) {
      app.open++;
      continue;
    }
    const char *flag = start_error_flag(rc, &tunnels[i].cfg);
    if (tunnels[i].name)
      fprintf(stderr, "%s:%d: [tunnel %s]: %s: %s\n", config_path,
              tunnels[i].line, tunnels[i].name, flag, wstun_strerror(rc));
    else
      fprintf(stderr, "%s: flag -%s: %s\n", prog, flag, wstun_strerror(rc));
    exit_code = APP_EXIT_USAGE;
  }
  if (exit_code == 0 && statusfile) {
    if (app.state < 0) { /* no callback yet: the client starts by dialing */
      app.state = (int)wstun_client_get_state(app.clis[0]);
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
  if (exit_code != 0) {
    app.stopping = 1;
    if (app.open > 0)
      close_all(&app, 0);
    else
      on_client_closed(NULL, &app); /* closes the signal handles */
  }
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  remove_files(&app);
  free(app.server);
  free(app.clis);
  app_cli_tunnels_free(tunnels, ntunnels);
  app_config_free(&conf);
  app_log_shutdown();
  return exit_code;
}
