/* wstunsrv: flags and the -config file → wstun_server_config, signals →
 * graceful stop, SIGUSR1/SIGHUP → log file reopened, SIGHUP → TLS certificate
 * reloaded. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "app_common.h"
#include "app_config.h"

#define GRACE_MS 10000

typedef struct srv_app {
  uv_loop_t *loop;
  wstun_server *srv;
  uv_signal_t sigint, sigterm;
  app_reopen reopen;
  int stopping;
} srv_app;

static void on_server_closed(wstun_server *srv, void *ud) {
  srv_app *app = ud;
  (void)srv;
  uv_close((uv_handle_t *)&app->sigint, NULL);
  uv_close((uv_handle_t *)&app->sigterm, NULL);
  app_reopen_close(&app->reopen);
}

static void on_signal(uv_signal_t *h, int signum) {
  srv_app *app = h->data;
  if (app->stopping) {
    app_errorf("second signal: exiting now");
    app_pidfile_remove();
    exit(1);
  }
  app->stopping = 1;
  app_log(NULL, WSTUN_LOG_INFO,
          signum == SIGINT ? "SIGINT: stopping (in-flight requests finish)"
                           : "SIGTERM: stopping (in-flight requests finish)");
  wstun_server_close(app->srv, GRACE_MS, on_server_closed, app);
}

static void on_hup(void *ud) {
  srv_app *app = ud;
  if (app->srv && !app->stopping)
    wstun_server_reload_tls(app->srv); /* logs how it went */
}

/* -tls-cert/-tls-key: both or neither, readable, and the key kept from
 * other users. The library checks again; this names the flag. */
static void check_tls_flags(const char *prog, const char *cert,
                            const char *key) {
  if ((cert == NULL) != (key == NULL)) {
    fprintf(stderr, "%s: flag -%s: needed with -%s\n", prog,
            cert ? "tls-key" : "tls-cert", cert ? "tls-cert" : "tls-key");
    exit(APP_EXIT_USAGE);
  }
  if (cert == NULL)
    return;
  struct stat st;
  const char *flag = "tls-cert", *path = cert;
  if (stat(cert, &st) == 0) {
    flag = "tls-key";
    path = key;
  }
  if (stat(path, &st) != 0) {
    fprintf(stderr, "%s: flag -%s: cannot read %s: %s\n", prog, flag, path,
            strerror(errno));
    exit(APP_EXIT_USAGE);
  }
  if (st.st_mode & S_IROTH) {
    fprintf(stderr,
            "%s: flag -tls-key: %s is world-readable (mode %03o); "
            "run chmod o-r on it\n",
            prog, key, (unsigned)(st.st_mode & 0777));
    exit(APP_EXIT_USAGE);
  }
}

int wstunsrv_main(const char *prog, int argc, char **argv, int first) {
  wstun_server_config cfg;
  wstun_server_config_init(&cfg);
  const char *log_level = "info";
  const char *protocol = "v2";
  const char *admin_token_file = NULL;
  const char *passwords_file = NULL;
  const char *robowhois = NULL; /* Go-only flags, accepted and ignored */
  int log_pretty = 0;
  app_ops ops = {0};
  uint64_t max_header = cfg.max_header_bytes, max_body = 0;
  const char *config_path = NULL;
  int check_config = 0;
  app_flag flags[] = {
      {"config", FLAG_STR, &config_path, "FILE",
       "read flags from an INI file (key = value, the names without dashes); "
       "flags given here win",
       0, -1},
      {"check-config", FLAG_BOOL, &check_config, NULL,
       "check the -config file, print FILE:LINE: reason per problem, exit 0 "
       "or 2",
       0, 1},
      {"port", FLAG_INT, &cfg.port, "N",
       "TCP port to listen on (0 = any free port)", 0, 65535},
      {"host", FLAG_STR, &cfg.host, "ADDR",
       "address or host name to listen on (default 0.0.0.0)", 0, -1},
      {"base-path", FLAG_STR, &cfg.base_path, "PATH",
       "prefix of every endpoint, e.g. /wstunnel", 0, -1},
      {"passwords", FLAG_STR, &cfg.passwords, "TOK:PW,...",
       "tokens that require a password", 0, -1},
      {"passwords-file", FLAG_STR, &passwords_file, "FILE",
       "the same list from a mode-600 file, one tok:pw per line", 0, -1},
      {"max-requests-per-tunnel", FLAG_INT, &cfg.max_requests_per_tunnel, "N",
       "requests waiting per token before 504 (default 20, max 1000)", 0,
       1000000},
      {"max-clients-per-token", FLAG_INT, &cfg.max_clients_per_token, "N",
       "tunnel clients per token (0 = unlimited)", 0, 1000000},
      {"wstimeout", FLAG_INT, &cfg.ws_timeout_sec, "S",
       "close a tunnel silent this long (default 30, clamped 3..600)", 0,
       1000000},
      {"httptimeout", FLAG_INT, &cfg.http_timeout_sec, "S",
       "answer 504 without a response after (default 1200)", 1, 100000000},
      {"protocol", FLAG_STR, &protocol, "v1|v2",
       "v2 (default): answer wstun.v2 offers (many requests at once per "
       "tunnel); v1: every tunnel is v1",
       0, -1},
      {"stream-idle-timeout", FLAG_INT, &cfg.stream_idle_timeout_sec, "S",
       "v2: reset a response on which nothing moved for S s, once its head "
       "is in (default 300)",
       1, 100000000},
      {"stall-timeout", FLAG_INT, &cfg.stall_timeout_sec, "S",
       "cut a requester that reads nothing (or sends none of its body) for "
       "S s while it holds the tunnel (default 10)",
       1, 86400},
      {"forget-after", FLAG_INT, &cfg.token_forget_sec, "S",
       "forget a token without clients after (default 3600)", 1, 100000000},
      {"max-header-bytes", FLAG_U64, &max_header, "N",
       "request head limit, else 431 (default 65536)", 1024, 1 << 24},
      {"max-body", FLAG_U64, &max_body, "N",
       "request body limit in bytes, else 413 (0 = unlimited)", 0, INT64_MAX},
      {"header-timeout", FLAG_INT, &cfg.header_timeout_sec, "S",
       "request head (and TLS handshake) must arrive within S s, else 408 (30)",
       1, 86400},
      {"idle-timeout", FLAG_INT, &cfg.idle_timeout_sec, "S",
       "close a connection with no request under way after S s (default 60)", 1,
       86400},
      {"max-connections", FLAG_INT, &cfg.max_connections, "N",
       "open connections at most, more get 503 (10000, at most the fd limit "
       "- 64; 0 = no limit)",
       0, 10000000},
      {"max-connections-per-ip", FLAG_INT, &cfg.max_connections_per_ip, "N",
       "open connections per peer address, -trusted-proxies exempt (1000; 0 = "
       "no limit)",
       0, 10000000},
      {"trusted-proxies", FLAG_STR, &cfg.trusted_proxies, "CIDR,...",
       "proxies whose X-Forwarded-For is believed (default: none)", 0, -1},
      {"admin-allow", FLAG_STR, &cfg.admin_allow, "CIDR,...",
       "who else may read /admin/... and /metrics (default: this host only)", 0,
       -1},
      {"admin-token", FLAG_STR, &cfg.admin_token, "TOKEN",
       "require Authorization: Bearer TOKEN for /admin/... and /metrics", 0,
       -1},
      {"admin-token-file", FLAG_STR, &admin_token_file, "FILE",
       "the same, read from FILE (mode 0600: kept out of the process list)", 0,
       -1},
      {"tls-cert", FLAG_STR, &cfg.tls_cert_file, "FILE",
       "serve HTTPS and wss:// with this PEM certificate chain", 0, -1},
      {"tls-key", FLAG_STR, &cfg.tls_key_file, "FILE",
       "the certificate's PEM key (not world-readable; SIGHUP reloads both)", 0,
       -1},
      {"log-level", FLAG_STR, &log_level, "LEVEL", "error, warn, info or debug",
       0, -1},
      {"log-pretty", FLAG_BOOL, &log_pretty, "",
       "accepted for the Go tool's command lines; the text log is for humans",
       0, -1},
      {"robowhois", FLAG_STR, &robowhois, "TOKEN",
       "accepted for the Go tool's command lines and ignored (no whois)", 0,
       -1},
      APP_OPS_FLAGS(ops),
      {NULL, FLAG_STR, NULL, NULL, NULL, 0, 0}};
  app_parse_flags(prog,
                  "wstun tunnel server: serves HTTP requests through "
                  "WebSocket tunnels opened by wstuncli.",
                  flags, argc, argv, first);
  static app_config conf; /* the file's strings live until exit */
  app_config_init(&conf);
  if (check_config && config_path == NULL) {
    fprintf(stderr, "%s: flag -check-config: needs -config FILE\n", prog);
    return APP_EXIT_USAGE;
  }
  if (config_path) {
    app_config_parse(&conf, config_path, NULL, flags, NULL);
    if (conf.nerrors == 0 || conf.errors[0].line > 0) {
      app_config_apply(&conf, flags);
      /* the command line again, over the file's values */
      app_parse_flags(prog, "", flags, argc, argv, first);
    }
    app_config_check_log_level(&conf, log_level);
    app_config_check_protocol(&conf, protocol);
    int line = 0;
    /* secret files are checked too: a mode 644 one would stop the start */
    char buf[512], err[512];
    const char *keys[] = {"passwords-file", "admin-token-file"};
    for (size_t i = 0; i < 2; i++) {
      const char *v = app_config_get(&conf.top, keys[i], &line);
      if (v && app_secret_read(v, buf, sizeof(buf), err, sizeof(err)) != 0)
        app_config_errorf(&conf, line, "%s: %s", keys[i], err);
    }
    if (conf.nerrors > 0 || check_config) {
      int bad = conf.nerrors > 0;
      app_config_print_errors(&conf, prog, stderr);
      if (!bad)
        printf("%s: ok\n", config_path);
      app_config_free(&conf);
      return bad ? APP_EXIT_USAGE : 0;
    }
  }
  cfg.log_level = app_log_level(prog, log_level);
  cfg.protocol = app_protocol(prog, protocol);
  check_tls_flags(prog, cfg.tls_cert_file, cfg.tls_key_file);
  /* secrets from files stay out of the process list */
  static char passwords[65536];
  if (passwords_file) {
    app_read_secret_file(prog, "passwords-file", passwords_file, passwords,
                         sizeof(passwords));
    for (char *p = passwords; *p; p++)
      if (*p == '\n' || *p == '\r')
        *p = ',';
    cfg.passwords = passwords;
  }
  char admin_token[512];
  if (admin_token_file) {
    app_read_secret_file(prog, "admin-token-file", admin_token_file,
                         admin_token, sizeof(admin_token));
    cfg.admin_token = admin_token;
  }
  app_log_setup(prog, "wstunsrv", &ops);
  if (robowhois && *robowhois)
    app_log(NULL, WSTUN_LOG_INFO,
            "-robowhois ignored: wstunsrv does no whois lookups");
  cfg.max_header_bytes = (size_t)max_header;
  cfg.max_body_bytes = max_body;
  cfg.log_cb = app_log;

  signal(SIGPIPE, SIG_IGN);
  app_tune_malloc();
  app_raise_nofile();
  srv_app app = {0};
  app.loop = uv_default_loop();
  /* handlers first: a signal sent as soon as "listening on" shows waits in
   * the loop instead of killing the process */
  uv_signal_init(app.loop, &app.sigint);
  uv_signal_init(app.loop, &app.sigterm);
  app.sigint.data = app.sigterm.data = &app;
  uv_signal_start(&app.sigint, on_signal, SIGINT);
  uv_signal_start(&app.sigterm, on_signal, SIGTERM);
  app_reopen_start(app.loop, &app.reopen, cfg.tls_cert_file ? on_hup : NULL,
                   &app);
  int rc = wstun_server_start(app.loop, &cfg, &app.srv);
  int exit_code = 0;
  if (rc == WSTUN_EPASSWORDS) {
    fprintf(stderr, "%s: flag -passwords: %s (want token:password,...)\n", prog,
            wstun_strerror(rc));
    exit_code = APP_EXIT_USAGE;
  } else if (rc == WSTUN_ECIDR) {
    fprintf(
        stderr,
        "%s: flag -%s: %s (want addresses or CIDR blocks, comma-separated)\n",
        prog,
        wstun_address_list_check(cfg.admin_allow) != 0 ? "admin-allow"
                                                       : "trusted-proxies",
        wstun_strerror(rc));
    exit_code = APP_EXIT_USAGE;
  } else if (rc == WSTUN_EINVAL) {
    fprintf(stderr, "%s: flag -host: not an IP address or a known host: %s\n",
            prog, cfg.host);
    exit_code = APP_EXIT_USAGE;
  } else if (rc == WSTUN_ETLS) {
    app_errorf("%s: flag -tls-cert/-tls-key: cannot use %s with %s (reason "
               "logged above)",
               prog, cfg.tls_cert_file, cfg.tls_key_file);
    exit_code = APP_EXIT_USAGE;
  } else if (rc != 0) {
    app_errorf("%s: cannot start: %s", prog, wstun_strerror(rc));
    exit_code = 1;
  }
  if (exit_code != 0) {
    on_server_closed(NULL, &app); /* closes the signal handles */
  } else if (ops.pidfile && app_pidfile_write(prog, ops.pidfile) != 0) {
    exit_code = 1;
    app.stopping = 1;
    wstun_server_close(app.srv, 0, on_server_closed, &app);
  }
  uv_run(app.loop, UV_RUN_DEFAULT);
  uv_loop_close(app.loop);
  app_pidfile_remove();
  app_log_shutdown();
  app_config_free(&conf);
  return exit_code;
}
