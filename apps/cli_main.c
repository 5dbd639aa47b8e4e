/* wstuncli: flags and the -config file → one wstun_client_config per
 * tunnel (app_config.c), every tunnel a client on the one loop (cli_run.c);
 * SIGINT/SIGTERM → graceful stop, SIGUSR1 → log file reopened, SIGHUP →
 * log file reopened and the -config file read again (reload), state
 * changes → -statusfile (single tunnel). */
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
#include "app_secret.h"
#include "cli_run.h"

#define GRACE_MS 10000

/* What the flags and the -config file say: read at start, and again on
 * each SIGHUP into a new one (the command line still wins). The one read
 * at start lives until exit: the log file and pid file names point into
 * it. */
typedef struct cli_settings {
  wstun_client_config cfg;
  const char *token, *log_level, *statusfile, *config_path, *password_file;
  const char *file_password; /* `password`: the file only */
  int log_pretty, check_config;
  const char *protocol; /* -protocol v1|v2 */
  app_ops ops;
  app_config conf;
  app_cli_tunnel *tunnels;
  size_t ntunnels;
} cli_settings;

typedef struct cli_app {
  const char *prog;
  int argc, first;
  char **argv;
  cli_settings *boot; /* the settings the process started with */
  cli_run run;
  uv_signal_t sigint, sigterm;
  app_reopen reopen;
  int stopping;
  /* -statusfile (one tunnel): its state */
  const char *statusfile;
  char *server;           /* the tunnel URL without its userinfo */
  int state;              /* wstun_client_state, -1 before the first */
  time_t since;           /* when it entered that state */
  const char *last_error; /* wstun_strerror() of the last error, or "" */
  int started;            /* the client runs: write on changes */
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
  cli_run_slot *slot = ud;
  cli_app *app = slot->run->user_data;
  (void)cli;
  if (slot->closing)
    return; /* replaced by a reload: the new client is the tunnel now */
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
  cli_run_slot *slot = ud;
  cli_app *app = slot->run->user_data;
  (void)cli;
  if (slot->closing)
    return;
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

static void close_handles(cli_app *app) {
  uv_close((uv_handle_t *)&app->sigint, NULL);
  uv_close((uv_handle_t *)&app->sigterm, NULL);
  app_reopen_close(&app->reopen);
}

/* Every client is gone: when stopping, the loop may end. */
static void on_run_empty(cli_run *run, void *ud) {
  cli_app *app = ud;
  (void)run;
  if (app->stopping)
    close_handles(app);
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
  cli_run_close(&app->run, GRACE_MS);
}

/* The flag behind a failed wstun_client_start(), and *why, what to say:
 * the library's own error line when it names the problem (a bad URL is
 * logged as "tunnel_url: ...", a TLS file as "TLS: ..."). */
static const char *start_error_flag(int rc, const char **why) {
  static const struct {
    const char *field, *flag;
  } urls[] = {{"tunnel_url: ", "tunnel"},
              {"server_url: ", "server"},
              {"proxy_url: ", "proxy"}};
  const char *last = app_last_error();
  *why = wstun_strerror(rc);
  if (rc == WSTUN_EURL) {
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++)
      if (strncmp(last, urls[i].field, strlen(urls[i].field)) == 0) {
        *why = last + strlen(urls[i].field);
        return urls[i].flag;
      }
    return "tunnel, -server or -proxy";
  }
  if (rc == WSTUN_ETLS && *last)
    *why = last;
  return rc == WSTUN_EREGEX   ? "regexp"
         : rc == WSTUN_EPORTS ? "client-ports"
         : rc == WSTUN_ETLS   ? "certfile"
                              : "token";
}

/* The passwords of "-token TOKEN:" tunnels (password_prompt), asked on the
 * terminal. 0, or APP_EXIT_USAGE after one line naming the flag or the
 * file's line: stdin is not a terminal, or nothing usable was typed. */
static int ask_passwords(const char *prog, const app_config *conf,
                         app_cli_tunnel *t, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (!t[i].password_prompt)
      continue;
    char where[512], prompt[256], pw[1024], err[256];
    int line = 0;
    if (t[i].name)
      snprintf(where, sizeof(where), "%s:%d: [tunnel %s]: token", conf->path,
               t[i].line, t[i].name);
    else if (t[i].token == app_config_get(&conf->top, "token", &line))
      snprintf(where, sizeof(where), "%s:%d: token", conf->path, line);
    else
      snprintf(where, sizeof(where), "%s: flag -token", prog);
    if (!isatty(STDIN_FILENO)) {
      fprintf(stderr,
              "%s: %.8s...: nothing after ':' and standard input is not a "
              "terminal to ask for the password (give it with "
              "-password-file, $WSTUNNEL_PASSWORD or TOKEN:PASSWORD)\n",
              where, t[i].cfg.token);
      return APP_EXIT_USAGE;
    }
    snprintf(prompt, sizeof(prompt),
             "Password for %s%s%stoken %.8s...: ", t[i].name ? "[tunnel " : "",
             t[i].name ? t[i].name : "", t[i].name ? "] " : "", t[i].cfg.token);
    if (app_secret_prompt(prompt, pw, sizeof(pw), err, sizeof(err)) != 0) {
      fprintf(stderr, "%s: %.8s...: %s\n", where, t[i].cfg.token, err);
      return APP_EXIT_USAGE;
    }
    t[i].password_buf = strdup(pw);
    memset(pw, 0, sizeof(pw));
    if (t[i].password_buf == NULL)
      return 1;
    t[i].cfg.password = t[i].password_buf;
  }
  return 0;
}

/* The flag table over s's fields; `top` gets the keys the file takes at
 * its top level: the flags plus `password`, which has no flag (it would
 * show in ps). */
#define CLI_MAXFLAGS 64 /* room (the static assertion says when to grow) */
static void cli_flags(cli_settings *s, app_flag flags[CLI_MAXFLAGS],
                      app_flag top[CLI_MAXFLAGS + 1]) {
  app_flag t[] = {
      {"config", FLAG_STR, &s->config_path, "FILE",
       "read flags (and [tunnel NAME] sections) from an INI file; flags given "
       "here win; SIGHUP reads it again",
       0, -1},
      {"check-config", FLAG_BOOL, &s->check_config, NULL,
       "check the -config file, print FILE:LINE: reason per problem, exit 0 "
       "or 2",
       0, 1},
      {"tunnel", FLAG_STR, &s->cfg.tunnel_url, "URL",
       "server to dial: ws[s]://[user:pass@]host[:port][/base]", 0, -1},
      {"server", FLAG_STR, &s->cfg.server_url, "URL",
       "backend for requests without X-Host: http[s]://host[:port][/prefix]", 0,
       -1},
      {"token", FLAG_STR, &s->token, "TOKEN[:PASSWORD]",
       "rendez-vous token (>= 16 chars); password also from $WSTUNNEL_PASSWORD",
       0, -1},
      {"password-file", FLAG_STR, &s->password_file, "FILE",
       "the token's password from FILE (mode 600); after TOKEN:PASSWORD, "
       "before $WSTUNNEL_PASSWORD",
       0, -1},
      {"regexp", FLAG_STR, &s->cfg.regexp, "RE",
       "X-Host values allowed (full match on scheme://host[:port][/prefix])", 0,
       -1},
      {"timeout", FLAG_INT, &s->cfg.timeout_sec, "S",
       "ping every S/3 s, reconnect after S s without answer (default 30; "
       "3..86400, others are clamped)",
       0, -1},
      {"protocol", FLAG_STR, &s->protocol, "v1|v2",
       "v2 (default): offer wstun.v2 (many requests at once per tunnel), "
       "v1 if the server does not take it; v1: never offer it",
       0, -1},
      {"stall-timeout", FLAG_INT, &s->cfg.stall_timeout_sec, "S",
       "give up a backend that reads nothing of a body (or sends nothing of "
       "a response) for S s while it holds the tunnel (default 10)",
       1, 86400},
      {"backend-timeout", FLAG_INT, &s->cfg.backend_timeout_sec, "S",
       "answer 504 when the backend has not answered after S s (default 1200)",
       1, 100000000},
      {"backend-idle", FLAG_INT, &s->cfg.backend_idle_sec, "S",
       "close a backend keep-alive connection idle for S s (default 30)", 1,
       86400},
      {"client-ports", FLAG_STR, &s->cfg.client_ports, "LIST",
       "local source ports for the tunnel, e.g. 8000..8100,8300 (first free)",
       0, -1},
      {"certfile", FLAG_STR, &s->cfg.ca_file, "FILE",
       "PEM certificates to trust besides the system's (wss://, https://)", 0,
       -1},
      {"insecure", FLAG_BOOL, &s->cfg.insecure_backends, NULL,
       "accept any certificate from https:// backends (never the tunnel)", 0,
       1},
      {"proxy", FLAG_STR, &s->cfg.proxy_url, "URL",
       "HTTP CONNECT proxy http://[user:pass@]host:port (default: "
       "$https_proxy, $http_proxy, $no_proxy)",
       0, -1},
      {"log-level", FLAG_STR, &s->log_level, "LEVEL",
       "error, warn, info or debug", 0, -1},
      {"log-pretty", FLAG_BOOL, &s->log_pretty, NULL,
       "human-readable log lines (Go wstunnel's flag; text is the default, "
       "this overrides -log-format json)",
       0, 1},
      APP_OPS_FLAGS(s->ops),
      {"statusfile", FLAG_STR, &s->statusfile, "FILE",
       "keep state, server, since, last_error, pid in FILE; removed at exit", 0,
       -1},
      {NULL, FLAG_STR, NULL, NULL, NULL, 0, 0}};
  enum { N = sizeof(t) / sizeof(t[0]) - 1 }; /* without the end mark */
  _Static_assert(N + 1 <= CLI_MAXFLAGS, "CLI_MAXFLAGS is too small");
  memcpy(flags, t, sizeof(t));
  memcpy(top, t, sizeof(t[0]) * N);
  top[N] =
      (app_flag){"password", FLAG_STR, &s->file_password, NULL, NULL, 0, -1};
  top[N + 1] = t[N];
}

static const char cli_summary[] =
    "wstun tunnel client: dials wstunsrv and serves the requests it forwards "
    "from a local HTTP backend.";

/* Reads the command line and the -config file into s (zeroed by the
 * caller): the flags, then the file, then the flags again over it, then
 * the tunnels. On a bad flag it exits (only at start: the command line
 * does not change). Problems with the file or the tunnels go to s->conf's
 * errors; returns their number. */
static size_t cli_settings_read(cli_settings *s, const char *prog, int argc,
                                char **argv, int first) {
  wstun_client_config_init(&s->cfg);
  s->ops = (app_ops)APP_OPS_INIT;
  s->log_level = "info";
  s->protocol = "v2";
  app_config_init(&s->conf);
  app_flag flags[CLI_MAXFLAGS], top[CLI_MAXFLAGS + 1];
  cli_flags(s, flags, top);
  app_parse_flags(prog, cli_summary, flags, argc, argv, first);
  if (s->config_path) {
    app_config_parse(&s->conf, s->config_path, NULL, top, app_cli_kinds);
    if (s->conf.nerrors > 0 && s->conf.errors[0].line == 0)
      return s->conf.nerrors; /* unreadable: that alone */
    app_config_apply(&s->conf, top);
    /* the command line again, over the file's values */
    app_parse_flags(prog, "", flags, argc, argv, first);
  }
  app_config_check_log_level(&s->conf, s->log_level);
  if (s->config_path == NULL) {
    s->cfg.protocol = app_protocol(prog, s->protocol); /* exits when bad */
  } else {
    /* a bad value is a FILE:LINE error, printed below */
    s->cfg.protocol = app_config_check_protocol(&s->conf, s->protocol);
  }
  app_cli_tunnel defaults = {0};
  defaults.cfg = s->cfg;
  defaults.token = s->token;
  defaults.password = s->file_password;
  defaults.password_file = s->password_file;
  s->ntunnels = app_cli_tunnels(&s->conf, &defaults,
                                getenv("WSTUNNEL_PASSWORD"), &s->tunnels);
  if (s->ntunnels > 1 && s->statusfile)
    app_config_errorf(&s->conf, 0,
                      "flag -statusfile: describes one tunnel; not with "
                      "several [tunnel NAME] sections");
  if (s->statusfile && *s->statusfile == '\0')
    app_config_errorf(&s->conf, 0, "flag -statusfile: must not be empty");
  if (s->ntunnels == 0 && s->conf.nerrors == 0)
    app_config_errorf(&s->conf, 0, "out of memory");
  return s->conf.nerrors;
}

static void cli_settings_free(cli_settings *s) {
  if (s == NULL)
    return;
  app_cli_tunnels_free(s->tunnels, s->ntunnels);
  app_config_free(&s->conf);
  free(s);
}

/* What the program sets on every tunnel besides the file: the log level,
 * proxies from the environment, and -timeout clamped (with a warning). */
static void cli_settings_finish(cli_settings *s, wstun_log_level level) {
  for (size_t i = 0; i < s->ntunnels; i++) {
    wstun_client_config *tc = &s->tunnels[i].cfg;
    const char *name = s->tunnels[i].name;
    tc->log_level = level;
    tc->access_log = s->ops.access_log;
    tc->proxy_from_env = 1;
    /* the Go client clamps -timeout (to 3..600) rather than refusing it */
    int asked = tc->timeout_sec;
    tc->timeout_sec = asked < 3 ? 3 : asked > 86400 ? 86400 : asked;
    if (tc->timeout_sec != asked)
      app_logf(WSTUN_LOG_WARN, "%s%s%s-timeout %d is out of range: using %d",
               name ? "[" : "", name ? name : "", name ? "] " : "", asked,
               tc->timeout_sec);
  }
}

/* "FILE:LINE: [tunnel NAME]: flag: reason" for a tunnel that would not
 * start, or "PROG: flag -FLAG: reason" without sections. */
static void start_error(const cli_settings *s, const char *prog, size_t i,
                        int rc, char *buf, size_t n) {
  const app_cli_tunnel *t = &s->tunnels[i];
  const char *why;
  const char *flag = start_error_flag(rc, &why);
  if (t->name)
    snprintf(buf, n, "%s:%d: [tunnel %s]: %s: %s", s->config_path, t->line,
             t->name, flag, why);
  else
    snprintf(buf, n, "%s: flag -%s: %s", prog, flag, why);
}

static int same_str(const char *a, const char *b) {
  return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

static const char *log_format_of(const cli_settings *s) {
  return s->log_pretty || s->ops.log_format == NULL ? "text"
                                                    : s->ops.log_format;
}

/* Settings only a restart changes: each one that differs is logged. */
static void warn_restart_only(const cli_settings *was,
                              const cli_settings *now) {
  const struct {
    const char *key, *a, *b;
  } keys[] = {
      {"logfile", was->ops.logfile, now->ops.logfile},
      {"syslog", was->ops.syslog, now->ops.syslog},
      {"log-format", log_format_of(was), log_format_of(now)},
      {"pidfile", was->ops.pidfile, now->ops.pidfile},
      {"statusfile", was->statusfile, now->statusfile},
  };
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
    if (!same_str(keys[i].a, keys[i].b))
      app_logf(WSTUN_LOG_WARN,
               "SIGHUP: %s changed; it takes effect at the next start",
               keys[i].key);
}

static void log_error_line(void *ud, const char *line) {
  (void)ud;
  app_log(NULL, WSTUN_LOG_ERROR, line);
}

/* -statusfile: the one tunnel's URL, and the file written again. */
static void status_follow(cli_app *app) {
  cli_run_slot *only = cli_run_only(&app->run);
  if (app->statusfile == NULL || only == NULL)
    return;
  app->state = (int)wstun_client_get_state(only->cli);
  int werr = status_write(app);
  if (werr)
    app_logf(WSTUN_LOG_WARN, "cannot write status file %s: %s", app->statusfile,
             strerror(werr));
}

/* "TOKEN:" tunnels: a reload cannot ask on the terminal; the password
 * typed at start for the same section and token is used again. 0, or -1
 * after logging which tunnel has none. */
static int reuse_prompted(cli_app *app, cli_settings *s) {
  for (size_t i = 0; i < s->ntunnels; i++) {
    app_cli_tunnel *t = &s->tunnels[i];
    if (!t->password_prompt || t->cfg.password)
      continue;
    const char *pw = cli_run_prompted(&app->run, t->name, t->cfg.token);
    if (pw == NULL) {
      if (t->name)
        app_logf(WSTUN_LOG_ERROR,
                 "%s:%d: [tunnel %s]: token: nothing after ':' and a reload "
                 "cannot ask for the password (give it with password-file "
                 "or TOKEN:PASSWORD)",
                 s->conf.path, t->line, t->name);
      else
        app_logf(WSTUN_LOG_ERROR,
                 "%s: token: nothing after ':' and a reload cannot ask for "
                 "the password",
                 app->prog);
      app_logf(WSTUN_LOG_ERROR,
               "SIGHUP: %s not loaded; the running configuration stays",
               s->conf.path);
      return -1;
    }
    t->password_buf = strdup(pw);
    if (t->password_buf == NULL) {
      app_logf(WSTUN_LOG_ERROR, "SIGHUP: out of memory; nothing changed");
      return -1;
    }
    t->cfg.password = t->password_buf;
  }
  return 0;
}

/* SIGHUP with -config: the file read again and the tunnels made to match
 * it (cli_run.h); a file with errors, or tunnels that cannot start, leave
 * everything running as it was. */
static void reload(cli_app *app) {
  const char *path = app->boot->config_path;
  app_logf(WSTUN_LOG_INFO, "SIGHUP: reading %s", path);
  cli_settings *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    app_logf(WSTUN_LOG_ERROR, "SIGHUP: out of memory; nothing changed");
    return;
  }
  if (cli_settings_read(s, app->prog, app->argc, app->argv, app->first) > 0) {
    app_config_each_error(&s->conf, app->prog, log_error_line, NULL);
    app_logf(WSTUN_LOG_ERROR,
             "SIGHUP: %s not loaded (%zu problem%s above); the running "
             "configuration stays",
             path, s->conf.nerrors, s->conf.nerrors == 1 ? "" : "s");
    cli_settings_free(s);
    return;
  }
  if (reuse_prompted(app, s) != 0) {
    cli_settings_free(s);
    return;
  }
  wstun_log_level level = (wstun_log_level)wstun_log_level_parse(s->log_level);
  cli_settings_finish(s, level);
  if (app->statusfile && s->ntunnels > 1) {
    app_logf(WSTUN_LOG_ERROR,
             "SIGHUP: %s not loaded: -statusfile describes one tunnel, not "
             "%zu; the running configuration stays",
             path, s->ntunnels);
    cli_settings_free(s);
    return;
  }
  cli_run_changes ch;
  int rc = cli_run_apply(&app->run, s->tunnels, s->ntunnels, GRACE_MS, level, 1,
                         &ch);
  if (rc != 0) {
    char msg[1400];
    start_error(s, app->prog, ch.failed, rc, msg, sizeof(msg));
    app_log(NULL, WSTUN_LOG_ERROR, msg);
    app_logf(WSTUN_LOG_ERROR,
             "SIGHUP: %s not loaded; the running configuration stays", path);
    cli_settings_free(s);
    return;
  }
  warn_restart_only(app->boot, s);
  if (app->statusfile) {
    char *server = url_without_userinfo(s->tunnels[0].cfg.tunnel_url);
    if (server) {
      free(app->server);
      app->server = server;
    }
    status_follow(app);
  }
  app_logf(WSTUN_LOG_INFO,
           "SIGHUP: %s loaded: %zu added, %zu removed, %zu changed, %zu "
           "unchanged",
           path, ch.added, ch.removed, ch.changed, ch.unchanged);
  cli_settings_free(s);
}

static void on_hup(void *ud) {
  cli_app *app = ud;
  if (app->stopping)
    app_log(NULL, WSTUN_LOG_INFO, "SIGHUP: stopping; not reloaded");
  else if (app->boot->config_path == NULL)
    app_log(NULL, WSTUN_LOG_INFO,
            "SIGHUP: no -config file to read again; nothing reloaded");
  else
    reload(app);
}

int wstuncli_main(const char *prog, int argc, char **argv, int first) {
  cli_settings *s = calloc(1, sizeof(*s));
  if (s == NULL) {
    fprintf(stderr, "%s: out of memory\n", prog);
    return 1;
  }
  size_t nerrors = cli_settings_read(s, prog, argc, argv, first);
  if (s->check_config && s->config_path == NULL) {
    fprintf(stderr, "%s: flag -check-config: needs -config FILE\n", prog);
    cli_settings_free(s);
    return APP_EXIT_USAGE;
  }
  if (s->check_config || nerrors > 0) {
    int bad = nerrors > 0;
    if (bad && s->config_path == NULL)
      s->conf.nerrors = 1; /* flags alone: the first problem, one line */
    app_config_print_errors(&s->conf, prog, stderr);
    if (!bad)
      printf("%s: ok (%zu tunnel%s)\n",
             s->conf.path ? s->conf.path : s->config_path, s->ntunnels,
             s->ntunnels == 1 ? "" : "s");
    cli_settings_free(s);
    return bad ? APP_EXIT_USAGE : 0;
  }
  wstun_log_level level = app_log_level(prog, s->log_level);
  if (s->log_pretty)
    s->ops.log_format = "text";
  int prompt_rc = ask_passwords(prog, &s->conf, s->tunnels, s->ntunnels);
  if (prompt_rc != 0) {
    cli_settings_free(s);
    return prompt_rc;
  }
  app_log_setup(prog, "wstuncli", &s->ops);

  signal(SIGPIPE, SIG_IGN);
  app_tune_malloc();
  app_raise_nofile(); /* a backend connection per request in flight */
  cli_settings_finish(s, level);
  cli_app app = {0};
  app.prog = prog;
  app.argc = argc;
  app.argv = argv;
  app.first = first;
  app.boot = s;
  app.state = -1;
  app.last_error = "";
  app.since = time(NULL);
  uv_loop_t *loop = uv_default_loop();
  app.run.loop = loop;
  app.run.log_record_cb = app_log_record;
  app.run.on_empty = on_run_empty;
  app.run.user_data = &app;
  if (s->statusfile) {
    app.statusfile = s->statusfile;
    app.server = url_without_userinfo(s->tunnels[0].cfg.tunnel_url);
    if (app.server == NULL) {
      cli_settings_free(s);
      app_log_shutdown();
      return 1;
    }
    app.run.state_cb = on_state;
    app.run.pong_cb = on_pong;
  }
  /* handlers first: a signal sent as soon as the client runs waits in the
   * loop instead of killing the process */
  uv_signal_init(loop, &app.sigint);
  uv_signal_init(loop, &app.sigterm);
  app.sigint.data = app.sigterm.data = &app;
  uv_signal_start(&app.sigint, on_signal, SIGINT);
  uv_signal_start(&app.sigterm, on_signal, SIGTERM);
  app_reopen_start(loop, &app.reopen, on_hup, &app);
  int exit_code = 0;
  /* every tunnel a client on this one loop */
  cli_run_changes ch;
  int rc =
      cli_run_apply(&app.run, s->tunnels, s->ntunnels, GRACE_MS, level, 0, &ch);
  if (rc != 0) {
    char msg[1400];
    start_error(s, prog, ch.failed, rc, msg, sizeof(msg));
    fprintf(stderr, "%s\n", msg);
    exit_code = APP_EXIT_USAGE;
  }
  if (exit_code == 0 && app.statusfile) {
    if (app.state < 0) { /* no callback yet: the client starts by dialing */
      app.state = (int)wstun_client_get_state(cli_run_only(&app.run)->cli);
      app.since = time(NULL);
    }
    app.started = 1;
    int werr = status_write(&app);
    if (werr) {
      app_errorf("%s: flag -statusfile: cannot write %s: %s", prog,
                 app.statusfile, strerror(werr));
      app.started = 0;
      exit_code = 1;
    }
  }
  if (exit_code == 0 && s->ops.pidfile &&
      app_pidfile_write(prog, s->ops.pidfile) != 0)
    exit_code = 1;
  if (exit_code != 0) {
    app.stopping = 1;
    cli_run_close(&app.run, 0); /* on_run_empty closes the handles */
  }
  uv_run(loop, UV_RUN_DEFAULT);
  uv_loop_close(loop);
  remove_files(&app);
  free(app.server);
  cli_settings_free(s);
  app_log_shutdown();
  return exit_code;
}
