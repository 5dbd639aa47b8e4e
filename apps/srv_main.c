/* wstunsrv: flags and the -config file → wstun_server_config;
 * SIGINT/SIGTERM → graceful stop; SIGUSR1 → log file reopened; SIGHUP →
 * log file reopened and the -config file read again and applied with
 * wstun_server_reload() (without -config: the TLS certificate read
 * again). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "app_common.h"
#include "app_config.h"
#include "app_secret.h"

#define GRACE_MS 10000
/* -drain-wait's default: HAProxy's checks in examples/cluster/haproxy.cfg
 * (inter 500, fall 2) take a node out within 1.5 s of its first 503 */
#define DRAIN_WAIT_MS 2000

/* What the flags and the -config file say: read at start, and again on
 * each SIGHUP with -config into a new one (the command line still wins).
 * The one read at start lives until exit: the log file and pid file names
 * point into it. */
typedef struct srv_settings {
  wstun_server_config cfg;
  const char *log_level, *admin_token_file, *passwords_file, *config_path;
  const char *robowhois; /* Go-only flags, accepted and ignored */
  int log_pretty, check_config;
  app_ops ops;
  uint64_t max_header, max_body;
  int drain_wait_ms, unknown_token_wait_ms;
  const char *protocol; /* -protocol v1|v2 */
  app_config conf;
  /* secrets from files: kept out of the process list */
  char passwords[65536];
  char admin_token[512];
  /* -tls-cert/-tls-key given as cred:NAME: the files systemd put there */
  char tls_cert[PATH_MAX], tls_key[PATH_MAX];
  const char *tls_cert_given; /* -tls-cert as given (flag or file) */
} srv_settings;

typedef struct srv_app {
  const char *prog;
  int argc, first;
  char **argv;
  srv_settings *boot;       /* the settings the process started with */
  char *tls_cert, *tls_key; /* the TLS files in use (owned) */
  uv_loop_t *loop;
  wstun_server *srv;
  uv_signal_t sigint, sigterm;
  app_reopen reopen;
  int stopping;
  int drain_wait_ms;
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
  if (signum == SIGINT) {
    wstun_server_close(app->srv, GRACE_MS, on_server_closed, app);
    return;
  }
  /* behind a balancer: out of its rotation first (skipped by the library
   * when nothing checks /_health_check), within the same 10 s or so */
  unsigned wait = (unsigned)app->drain_wait_ms;
  wstun_server_drain(app->srv, wait, wait < GRACE_MS ? GRACE_MS - wait : 1000,
                     on_server_closed, app);
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
  /* opened, not only looked at: a key root keeps 0600 is out of reach of
   * a service's dynamic user, and this says so by name */
  struct stat st;
  const char *flags[] = {"tls-cert", "tls-key"}, *paths[] = {cert, key};
  for (int i = 0; i < 2; i++) {
    char err[PATH_MAX + 64];
    FILE *f = app_open_regular(paths[i], &st, err, sizeof(err));
    if (f == NULL) {
      fprintf(stderr, "%s: flag -%s: %s\n", prog, flags[i], err);
      exit(APP_EXIT_USAGE);
    }
    fclose(f);
  }
  if (st.st_mode & S_IROTH) {
    fprintf(stderr,
            "%s: flag -tls-key: %s is world-readable (mode %03o); "
            "run chmod o-r on it\n",
            prog, key, (unsigned)(st.st_mode & 0777));
    exit(APP_EXIT_USAGE);
  }
}

/* room for the flag table (the static assertion below says when to grow
 * it) */
#define SRV_MAXFLAGS 64
static void srv_flags(srv_settings *s, app_flag flags[SRV_MAXFLAGS]) {
  app_flag t[] = {
      {"config", FLAG_STR, &s->config_path, "FILE",
       "read flags from an INI file (key = value, the names without dashes); "
       "flags given here win; SIGHUP reads it again",
       0, -1},
      {"check-config", FLAG_BOOL, &s->check_config, NULL,
       "check the -config file, print FILE:LINE: reason per problem, exit 0 "
       "or 2",
       0, 1},
      {"port", FLAG_INT, &s->cfg.port, "N",
       "TCP port to listen on (0 = any free port)", 0, 65535},
      {"host", FLAG_STR, &s->cfg.host, "ADDR",
       "address or host name to listen on (default 0.0.0.0)", 0, -1},
      {"base-path", FLAG_STR, &s->cfg.base_path, "PATH",
       "prefix of every endpoint, e.g. /wstunnel", 0, -1},
      {"passwords", FLAG_STR, &s->cfg.passwords, "TOK:PW,...",
       "tokens that require a password", 0, -1},
      {"passwords-file", FLAG_STR, &s->passwords_file, "FILE",
       "the same list from a mode-600 file, one tok:pw per line", 0, -1},
      {"max-requests-per-tunnel", FLAG_INT, &s->cfg.max_requests_per_tunnel,
       "N", "requests waiting per token before 504 (default 20, max 1000)", 0,
       1000000},
      {"max-clients-per-token", FLAG_INT, &s->cfg.max_clients_per_token, "N",
       "tunnel clients per token (0 = unlimited)", 0, 1000000},
      {"wstimeout", FLAG_INT, &s->cfg.ws_timeout_sec, "S",
       "close a tunnel silent this long (default 30, clamped 3..600)", 0,
       1000000},
      {"httptimeout", FLAG_INT, &s->cfg.http_timeout_sec, "S",
       "answer 504 without a response after (default 1200)", 1, 100000000},
      {"protocol", FLAG_STR, &s->protocol, "v1|v2",
       "v2 (default): answer wstun.v2 offers (many requests at once per "
       "tunnel); v1: every tunnel is v1",
       0, -1},
      {"stream-idle-timeout", FLAG_INT, &s->cfg.stream_idle_timeout_sec, "S",
       "v2: reset a response on which nothing moved for S s, once its head "
       "is in (default 300)",
       1, 100000000},
      {"stall-timeout", FLAG_INT, &s->cfg.stall_timeout_sec, "S",
       "cut a requester that reads nothing (or sends none of its body) for "
       "S s while it holds the tunnel (default 10)",
       1, 86400},
      {"forget-after", FLAG_INT, &s->cfg.token_forget_sec, "S",
       "forget a token without clients after (default 3600)", 1, 100000000},
      {"max-header-bytes", FLAG_U64, &s->max_header, "N",
       "request head limit, else 431 (default 65536)", 1024, 1 << 24},
      {"max-body", FLAG_U64, &s->max_body, "N",
       "request body limit in bytes, else 413 (0 = unlimited)", 0, INT64_MAX},
      {"header-timeout", FLAG_INT, &s->cfg.header_timeout_sec, "S",
       "request head (and TLS handshake) must arrive within S s, else 408 (30)",
       1, 86400},
      {"idle-timeout", FLAG_INT, &s->cfg.idle_timeout_sec, "S",
       "close a connection with no request under way after S s (default 60)", 1,
       86400},
      {"max-connections", FLAG_INT, &s->cfg.max_connections, "N",
       "open connections at most, more get 503 (10000, at most the fd limit "
       "- 64; 0 = no limit)",
       0, 10000000},
      {"max-connections-per-ip", FLAG_INT, &s->cfg.max_connections_per_ip, "N",
       "open connections per peer address, -trusted-proxies exempt (1000; 0 = "
       "no limit)",
       0, 10000000},
      {"trusted-proxies", FLAG_STR, &s->cfg.trusted_proxies, "CIDR,...",
       "proxies whose X-Forwarded-For is believed (default: none)", 0, -1},
      {"admin-allow", FLAG_STR, &s->cfg.admin_allow, "CIDR,...",
       "who else may read /admin/... and /metrics (default: this host only)", 0,
       -1},
      {"admin-token", FLAG_STR, &s->cfg.admin_token, "TOKEN",
       "require Authorization: Bearer TOKEN for /admin/... and /metrics", 0,
       -1},
      {"admin-token-file", FLAG_STR, &s->admin_token_file, "FILE",
       "the same, read from FILE (mode 0600: kept out of the process list)", 0,
       -1},
      {"tls-cert", FLAG_STR, &s->cfg.tls_cert_file, "FILE",
       "serve HTTPS and wss:// with this PEM certificate chain", 0, -1},
      {"tls-key", FLAG_STR, &s->cfg.tls_key_file, "FILE",
       "the certificate's PEM key (not world-readable; SIGHUP reloads both)", 0,
       -1},
      {"drain-wait", FLAG_INT, &s->drain_wait_ms, "MS",
       "on SIGTERM, answer /_health_check 503 for MS ms while serving, so a "
       "balancer takes the node out first (default 2000; only when "
       "something checked /_health_check in the last 10 s; 0 = never)",
       0, 60000},
      {"unknown-token-wait", FLAG_INT, &s->unknown_token_wait_ms, "MS",
       "for a node of a cluster: a request for a token with no tunnel here "
       "waits up to MS ms for one, then 404 (default 0: 404 at once)",
       0, 60000},
      {"log-level", FLAG_STR, &s->log_level, "LEVEL",
       "error, warn, info or debug", 0, -1},
      {"log-pretty", FLAG_BOOL, &s->log_pretty, "",
       "accepted for the Go tool's command lines; the text log is for humans",
       0, -1},
      {"robowhois", FLAG_STR, &s->robowhois, "TOKEN",
       "accepted for the Go tool's command lines and ignored (no whois)", 0,
       -1},
      APP_OPS_FLAGS(s->ops),
      {NULL, FLAG_STR, NULL, NULL, NULL, 0, 0}};
  _Static_assert(sizeof(t) <= sizeof(app_flag) * SRV_MAXFLAGS,
                 "SRV_MAXFLAGS is too small");
  memcpy(flags, t, sizeof(t));
}

static const char srv_summary[] =
    "wstun tunnel server: serves HTTP requests through WebSocket tunnels "
    "opened by wstuncli.";

/* The line of `key` in the file, or 0 when it came from a flag. */
static int key_line(const srv_settings *s, const char *key, const char *value) {
  int line = 0;
  return value && value == app_config_get(&s->conf.top, key, &line) ? line : 0;
}

/* An error about `key`: at its line when the file set it, else as the
 * flag. */
static void key_error(srv_settings *s, const char *key, const char *value,
                      const char *what) {
  int line = key_line(s, key, value);
  if (line > 0)
    app_config_errorf(&s->conf, line, "%s: %s", key, what);
  else
    app_config_errorf(&s->conf, 0, "flag -%s: %s", key, what);
}

/* Reads the command line and the -config file into s (zeroed by the
 * caller): the flags, then the file, then the flags again over it. On a
 * bad flag it exits (only at start: the command line does not change).
 * With -config, the file's problems and those of the files and lists it
 * names go to s->conf's errors; returns their number. */
static size_t srv_settings_read(srv_settings *s, const char *prog, int argc,
                                char **argv, int first) {
  wstun_server_config_init(&s->cfg);
  s->ops = (app_ops)APP_OPS_INIT;
  s->log_level = "info";
  s->drain_wait_ms = DRAIN_WAIT_MS;
  s->protocol = "v2";
  s->max_header = s->cfg.max_header_bytes;
  app_config_init(&s->conf);
  app_flag flags[SRV_MAXFLAGS];
  srv_flags(s, flags);
  app_parse_flags(prog, srv_summary, flags, argc, argv, first);
  if (s->config_path == NULL) {
    s->cfg.protocol = app_protocol(prog, s->protocol); /* exits when bad */
    return 0;
  }
  app_config_parse(&s->conf, s->config_path, NULL, flags, NULL);
  if (s->conf.nerrors == 0 || s->conf.errors[0].line > 0) {
    app_config_apply(&s->conf, flags);
    /* the command line again, over the file's values */
    app_parse_flags(prog, "", flags, argc, argv, first);
  }
  app_config_check_log_level(&s->conf, s->log_level);
  /* a bad value is a FILE:LINE error */
  s->cfg.protocol = app_config_check_protocol(&s->conf, s->protocol);
  /* secret files are checked too: a mode 644 one would stop the start */
  char err[512];
  const char *files[] = {s->passwords_file, s->admin_token_file};
  const char *keys[] = {"passwords-file", "admin-token-file"};
  /* into the buffers srv_settings_secrets() reads them into: the same
   * size limit; wiped until then */
  char *bufs[] = {s->passwords, s->admin_token};
  size_t sizes[] = {sizeof(s->passwords), sizeof(s->admin_token)};
  for (size_t i = 0; i < 2; i++) {
    if (files[i] &&
        app_secret_read(files[i], bufs[i], sizes[i], err, sizeof(err)) != 0)
      key_error(s, keys[i], files[i], err);
    memset(bufs[i], 0, sizes[i]);
  }
  const char *lists[] = {s->cfg.admin_allow, s->cfg.trusted_proxies};
  const char *lkeys[] = {"admin-allow", "trusted-proxies"};
  for (size_t i = 0; i < 2; i++)
    if (wstun_address_list_check(lists[i]) == WSTUN_ECIDR)
      key_error(s, lkeys[i], lists[i],
                "malformed address list (want addresses or CIDR blocks, "
                "comma-separated)");
  return s->conf.nerrors;
}

/* -tls-cert and -tls-key as files: cred:NAME is the file systemd's
 * LoadCredential= put there. 0, or -1 with "flag -NAME: reason" in err. */
static int srv_settings_tls_paths(srv_settings *s, char *err, size_t n) {
  const char **values[] = {&s->cfg.tls_cert_file, &s->cfg.tls_key_file};
  char *bufs[] = {s->tls_cert, s->tls_key};
  const char *names[] = {"tls-cert", "tls-key"};
  s->tls_cert_given = s->cfg.tls_cert_file;
  for (int i = 0; i < 2; i++) {
    char why[PATH_MAX + 256];
    if (*values[i] == NULL)
      continue;
    if (app_file_path(*values[i], bufs[i], PATH_MAX, why, sizeof(why)) != 0) {
      snprintf(err, n, "flag -%s: %s", names[i], why);
      return -1;
    }
    *values[i] = bufs[i];
  }
  return 0;
}

/* The secrets of -passwords-file and -admin-token-file into s->cfg. 0, or
 * -1 with "flag -NAME: reason" in err. */
static int srv_settings_secrets(srv_settings *s, char *err, size_t n) {
  char why[512];
  if (s->passwords_file) {
    if (app_secret_read(s->passwords_file, s->passwords, sizeof(s->passwords),
                        why, sizeof(why)) != 0) {
      snprintf(err, n, "flag -passwords-file: %s", why);
      return -1;
    }
    for (char *p = s->passwords; *p; p++)
      if (*p == '\n' || *p == '\r')
        *p = ',';
    s->cfg.passwords = s->passwords;
  }
  if (s->admin_token_file) {
    if (app_secret_read(s->admin_token_file, s->admin_token,
                        sizeof(s->admin_token), why, sizeof(why)) != 0) {
      snprintf(err, n, "flag -admin-token-file: %s", why);
      return -1;
    }
    s->cfg.admin_token = s->admin_token;
  }
  s->cfg.max_header_bytes = (size_t)s->max_header;
  s->cfg.max_body_bytes = s->max_body;
  s->cfg.unknown_token_wait_ms = (unsigned)s->unknown_token_wait_ms;
  s->cfg.log_record_cb = app_log_record;
  s->cfg.access_log = s->ops.access_log;
  return 0;
}

/* The Go server clamps these rather than refusing them: so do we, and say
 * so, naming the flag (once logging is set up). */
static void srv_settings_clamp(srv_settings *s) {
  int wst = s->cfg.ws_timeout_sec < 3     ? 3
            : s->cfg.ws_timeout_sec > 600 ? 600
                                          : s->cfg.ws_timeout_sec;
  if (wst != s->cfg.ws_timeout_sec)
    app_logf(WSTUN_LOG_WARN, "-wstimeout %d is outside 3..600: using %d",
             s->cfg.ws_timeout_sec, wst);
  s->cfg.ws_timeout_sec = wst;
  if (s->cfg.max_requests_per_tunnel > 1000) {
    app_logf(WSTUN_LOG_WARN,
             "-max-requests-per-tunnel %d is over 1000: using 1000",
             s->cfg.max_requests_per_tunnel);
    s->cfg.max_requests_per_tunnel = 1000;
  }
}

static void srv_settings_free(srv_settings *s) {
  if (s == NULL)
    return;
  app_config_free(&s->conf);
  memset(s->passwords, 0, sizeof(s->passwords));
  memset(s->admin_token, 0, sizeof(s->admin_token));
  free(s);
}

static int same_str(const char *a, const char *b) {
  return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

static const char *log_format_of(const srv_settings *s) {
  return s->ops.log_format == NULL ? "text" : s->ops.log_format;
}

/* Settings only a restart changes: each one that differs is logged, and
 * the running value stays (for TLS: the files in use, read again). */
static void keep_restart_only(const srv_app *app, srv_settings *now) {
  const srv_settings *was = app->boot;
  char wp[16], np[16];
  snprintf(wp, sizeof(wp), "%d", was->cfg.port);
  snprintf(np, sizeof(np), "%d", now->cfg.port);
  const struct {
    const char *key, *a, *b;
  } keys[] = {
      {"host", was->cfg.host, now->cfg.host},
      {"port", wp, np},
      {"base-path", was->cfg.base_path, now->cfg.base_path},
      {"logfile", was->ops.logfile, now->ops.logfile},
      {"syslog", was->ops.syslog, now->ops.syslog},
      {"log-format", log_format_of(was), log_format_of(now)},
      {"pidfile", was->ops.pidfile, now->ops.pidfile},
  };
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
    if (!same_str(keys[i].a, keys[i].b))
      app_logf(WSTUN_LOG_WARN,
               "SIGHUP: %s changed; it takes effect at the next start",
               keys[i].key);
  int had_tls = app->tls_cert != NULL;
  int has_tls = now->cfg.tls_cert_file != NULL || now->cfg.tls_key_file;
  if (had_tls != has_tls) {
    app_logf(WSTUN_LOG_WARN,
             "SIGHUP: TLS %s; that takes effect at the next start%s",
             has_tls ? "added" : "removed",
             had_tls ? " (the certificate files in use are read again)" : "");
    now->cfg.tls_cert_file = app->tls_cert;
    now->cfg.tls_key_file = app->tls_key;
  }
}

/* Remembers the TLS files the server uses (for a reload that drops them). */
static void set_tls_files(srv_app *app, const char *cert, const char *key) {
  char *c = cert ? strdup(cert) : NULL, *k = key ? strdup(key) : NULL;
  if ((cert && c == NULL) || (key && k == NULL)) {
    free(c);
    free(k);
    return; /* out of memory: the old names, still a usable pair */
  }
  free(app->tls_cert);
  free(app->tls_key);
  app->tls_cert = c;
  app->tls_key = k;
}

static void log_error_line(void *ud, const char *line) {
  (void)ud;
  app_log(NULL, WSTUN_LOG_ERROR, line);
}

/* The flag (or FILE:LINE) a wstun_server_reload error is about. */
static void reload_error(srv_settings *s, int rc) {
  if (rc == WSTUN_EPASSWORDS)
    key_error(s, s->passwords_file ? "passwords-file" : "passwords",
              s->passwords_file ? s->passwords_file : s->cfg.passwords,
              "malformed password list (want token:password,...)");
  else if (rc == WSTUN_ETLS)
    key_error(s, "tls-cert", s->tls_cert_given,
              "cannot use it with -tls-key (reason logged above)");
  else
    app_config_errorf(&s->conf, 0, "%s", wstun_strerror(rc));
}

/* SIGHUP with -config: the file read again and given to the server
 * (wstun_server_reload: passwords, limits, admin access, TLS files); a
 * file with errors, or a configuration the server refuses, leaves the
 * running one in place. */
static void reload(srv_app *app) {
  const char *path = app->boot->config_path;
  app_logf(WSTUN_LOG_INFO, "SIGHUP: reading %s", path);
  srv_settings *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    app_logf(WSTUN_LOG_ERROR, "SIGHUP: out of memory; nothing changed");
    return;
  }
  char err[PATH_MAX + 1100];
  if (srv_settings_read(s, app->prog, app->argc, app->argv, app->first) == 0 &&
      (srv_settings_tls_paths(s, err, sizeof(err)) != 0 ||
       srv_settings_secrets(s, err, sizeof(err)) != 0))
    app_config_errorf(&s->conf, 0, "%s", err);
  if (s->conf.nerrors == 0) {
    keep_restart_only(app, s);
    srv_settings_clamp(s);
    s->cfg.log_level = (wstun_log_level)wstun_log_level_parse(s->log_level);
    int rc = wstun_server_reload(app->srv, &s->cfg);
    if (rc != 0)
      reload_error(s, rc);
    else {
      set_tls_files(app, s->cfg.tls_cert_file, s->cfg.tls_key_file);
      app->drain_wait_ms = s->drain_wait_ms;
    }
  }
  if (s->conf.nerrors > 0) {
    app_config_each_error(&s->conf, app->prog, log_error_line, NULL);
    app_logf(WSTUN_LOG_ERROR,
             "SIGHUP: %s not loaded (%zu problem%s above); the running "
             "configuration stays",
             path, s->conf.nerrors, s->conf.nerrors == 1 ? "" : "s");
  } else {
    app_logf(WSTUN_LOG_INFO, "SIGHUP: %s loaded", path);
  }
  srv_settings_free(s);
}

static void on_hup(void *ud) {
  srv_app *app = ud;
  if (app->srv == NULL || app->stopping)
    app_log(NULL, WSTUN_LOG_INFO, "SIGHUP: stopping; not reloaded");
  else if (app->boot->config_path)
    reload(app);
  else if (app->tls_cert)
    wstun_server_reload_tls(app->srv); /* logs how it went */
  else
    app_log(NULL, WSTUN_LOG_INFO,
            "SIGHUP: no -config file or TLS certificate to read again; "
            "nothing reloaded");
}

int wstunsrv_main(const char *prog, int argc, char **argv, int first) {
  srv_settings *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    fprintf(stderr, "%s: out of memory\n", prog);
    return 1;
  }
  srv_settings_read(s, prog, argc, argv, first);
  if (s->check_config && s->config_path == NULL) {
    fprintf(stderr, "%s: flag -check-config: needs -config FILE\n", prog);
    srv_settings_free(s);
    return APP_EXIT_USAGE;
  }
  if (s->config_path && (s->conf.nerrors > 0 || s->check_config)) {
    int bad = s->conf.nerrors > 0;
    app_config_print_errors(&s->conf, prog, stderr);
    if (!bad)
      printf("%s: ok\n", s->conf.path ? s->conf.path : s->config_path);
    srv_settings_free(s);
    return bad ? APP_EXIT_USAGE : 0;
  }
  wstun_server_config *cfg = &s->cfg;
  cfg->log_level = app_log_level(prog, s->log_level);
  char err[PATH_MAX + 1100];
  if (srv_settings_tls_paths(s, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s: %s\n", prog, err);
    srv_settings_free(s);
    return APP_EXIT_USAGE;
  }
  check_tls_flags(prog, cfg->tls_cert_file, cfg->tls_key_file);
  if (srv_settings_secrets(s, err, sizeof(err)) != 0) {
    fprintf(stderr, "%s: %s\n", prog, err);
    srv_settings_free(s);
    return APP_EXIT_USAGE;
  }
  app_log_setup(prog, "wstunsrv", &s->ops);
  srv_settings_clamp(s);
  if (s->robowhois && *s->robowhois)
    app_log(NULL, WSTUN_LOG_INFO,
            "-robowhois ignored: wstunsrv does no whois lookups");

  signal(SIGPIPE, SIG_IGN);
  app_tune_malloc();
  app_raise_nofile();
  srv_app app = {0};
  app.prog = prog;
  app.argc = argc;
  app.argv = argv;
  app.first = first;
  app.boot = s;
  app.drain_wait_ms = s->drain_wait_ms;
  app.loop = uv_default_loop();
  set_tls_files(&app, cfg->tls_cert_file, cfg->tls_key_file);
  /* handlers first: a signal sent as soon as "listening on" shows waits in
   * the loop instead of killing the process */
  uv_signal_init(app.loop, &app.sigint);
  uv_signal_init(app.loop, &app.sigterm);
  app.sigint.data = app.sigterm.data = &app;
  uv_signal_start(&app.sigint, on_signal, SIGINT);
  uv_signal_start(&app.sigterm, on_signal, SIGTERM);
  app_reopen_start(app.loop, &app.reopen, on_hup, &app);
  int rc = wstun_server_start(app.loop, cfg, &app.srv);
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
        wstun_address_list_check(cfg->admin_allow) != 0 ? "admin-allow"
                                                        : "trusted-proxies",
        wstun_strerror(rc));
    exit_code = APP_EXIT_USAGE;
  } else if (rc == WSTUN_EINVAL) {
    fprintf(stderr, "%s: flag -host: not an IP address or a known host: %s\n",
            prog, cfg->host);
    exit_code = APP_EXIT_USAGE;
  } else if (rc == WSTUN_ETLS) {
    app_errorf("%s: flag -tls-cert/-tls-key: cannot use %s with %s: %s", prog,
               cfg->tls_cert_file, cfg->tls_key_file, app_last_error());
    exit_code = APP_EXIT_USAGE;
  } else if (rc == WSTUN_ELISTEN) {
    /* the library's line says where and why ("address already in use") */
    app_errorf("%s: flag -host/-port: %s", prog, app_last_error());
    exit_code = 1;
  } else if (rc != 0) {
    app_errorf("%s: cannot start: %s", prog, wstun_strerror(rc));
    exit_code = 1;
  }
  if (exit_code != 0) {
    app.srv = NULL;
    on_server_closed(NULL, &app); /* closes the signal handles */
  } else if (s->ops.pidfile && app_pidfile_write(prog, s->ops.pidfile) != 0) {
    exit_code = 1;
    app.stopping = 1;
    wstun_server_close(app.srv, 0, on_server_closed, &app);
  }
  uv_run(app.loop, UV_RUN_DEFAULT);
  uv_loop_close(app.loop);
  app_pidfile_remove();
  app_log_shutdown();
  srv_settings_free(s);
  free(app.tls_cert);
  free(app.tls_key);
  return exit_code;
}
