/* What wstunsrv and wstuncli share, kept out of libwstun because it
 * prints and exits: flag parsing in the Go tool's style, the log sinks
 * (stderr, a file reopened on a signal, syslog; text or JSON lines), the
 * pid file, atomic file writes (-statusfile), and the process tuning
 * (open file limit, malloc thresholds). Secret files: app_secret.c. */
#include "app_common.h"

#include <errno.h>
#include <sys/resource.h>
#include <fcntl.h>
#include <inttypes.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static void usage(const char *prog, const char *summary, const app_flag *f) {
  printf("Usage: %s [flags]\n%s\n\nFlags (one or two dashes; -flag value or "
         "-flag=value):\n",
         prog, summary);
  for (; f->name; f++) {
    char left[64];
    snprintf(left, sizeof(left), "-%s %s", f->name, f->arg ? f->arg : "");
    printf("  %-30s %s\n", left, f->help);
  }
  printf("  %-30s %s\n  %-30s %s\n", "-h, --help", "show this help",
         "--version", "print the version");
  printf("\nA FILE to read may be cred:NAME, the systemd credential NAME "
         "($CREDENTIALS_DIRECTORY/NAME).\n");
}

static void die(const char *prog, const char *flag, const char *what) {
  fprintf(stderr, "%s: flag -%s: %s\n", prog, flag, what);
  exit(APP_EXIT_USAGE);
}

int app_flag_value(const app_flag *f, const char *v, void *dst, char *err,
                   size_t errlen) {
  switch (f->type) {
  case FLAG_STR:
    *(const char **)dst = v;
    return 0;
  case FLAG_BOOL: /* the spellings Go's strconv.ParseBool takes */
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || strcmp(v, "t") == 0 ||
        strcmp(v, "T") == 0 || strcmp(v, "TRUE") == 0 || strcmp(v, "True") == 0)
      *(int *)dst = 1;
    else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0 ||
             strcmp(v, "f") == 0 || strcmp(v, "F") == 0 ||
             strcmp(v, "FALSE") == 0 || strcmp(v, "False") == 0)
      *(int *)dst = 0;
    else {
      snprintf(err, errlen, "expects true or false");
      return -1;
    }
    return 0;
  case FLAG_ONOFF: {
    static const char *const on[] = {"on", "true", "yes", "1"};
    static const char *const off[] = {"off", "false", "no", "0"};
    for (size_t i = 0; i < 4; i++) {
      if (strcasecmp(v, on[i]) == 0 || strcasecmp(v, off[i]) == 0) {
        *(int *)dst = strcasecmp(v, on[i]) == 0;
        return 0;
      }
    }
    snprintf(err, errlen, "invalid value \"%.64s\": want on or off", v);
    return -1;
  }
  case FLAG_INT:
  case FLAG_U64: {
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (*v == '\0' || *end != '\0' || errno != 0) {
      snprintf(err, errlen, "invalid value \"%.64s\": not an integer", v);
      return -1;
    }
    if (f->min <= f->max && (n < f->min || n > f->max)) {
      snprintf(err, errlen,
               "invalid value %lld: must be between %" PRId64 " and %" PRId64,
               n, f->min, f->max);
      return -1;
    }
    if (f->type == FLAG_INT)
      *(int *)dst = (int)n;
    else
      *(uint64_t *)dst = (uint64_t)n;
    return 0;
  }
  }
  snprintf(err, errlen, "unknown flag type");
  return -1;
}

static void set_value(const char *prog, app_flag *f, const char *v) {
  char msg[256];
  if (app_flag_value(f, v, f->dst, msg, sizeof(msg)) != 0)
    die(prog, f->name, msg);
}

void app_parse_flags(const char *prog, const char *summary, app_flag *flags,
                     int argc, char **argv, int first) {
  for (int i = first; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-' || a[1] == '\0') {
      fprintf(stderr, "%s: unexpected argument \"%s\" (flags start with -)\n",
              prog, a);
      exit(APP_EXIT_USAGE);
    }
    const char *name = a + 1 + (a[1] == '-');
    if (strcmp(name, "h") == 0 || strcmp(name, "help") == 0) {
      usage(prog, summary, flags);
      exit(0);
    }
    if (strcmp(name, "version") == 0) {
      printf("%s %s\n", prog, wstun_version());
      exit(0);
    }
    const char *eq = strchr(name, '=');
    size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
    app_flag *f = flags;
    for (; f->name; f++)
      if (strlen(f->name) == nlen && strncmp(f->name, name, nlen) == 0)
        break;
    if (f->name == NULL) {
      fprintf(stderr, "%s: flag provided but not defined: -%.*s\n", prog,
              (int)nlen, name);
      exit(APP_EXIT_USAGE);
    }
    const char *v;
    if (eq)
      v = eq + 1;
    else if (f->type == FLAG_BOOL)
      v = "true";
    else if (i + 1 < argc)
      v = argv[++i];
    else
      die(prog, f->name, "needs a value");
    set_value(prog, f, v);
  }
}

/* ---- logging ------------------------------------------------------------ */

static struct {
  int fd;           /* stderr, or the log file */
  const char *path; /* -logfile (from argv), or NULL */
  int use_syslog;
  int json;
  const char *app;
  char last_error[512]; /* the last error line (app_last_error) */
} g_log = {STDERR_FILENO, NULL, 0, 0, "wstun", ""};

static const struct {
  const char *name;
  int facility;
} facilities[] = {
    {"kern", LOG_KERN},     {"user", LOG_USER},         {"mail", LOG_MAIL},
    {"daemon", LOG_DAEMON}, {"auth", LOG_AUTH},         {"syslog", LOG_SYSLOG},
    {"lpr", LOG_LPR},       {"news", LOG_NEWS},         {"uucp", LOG_UUCP},
    {"cron", LOG_CRON},     {"authpriv", LOG_AUTHPRIV}, {"ftp", LOG_FTP},
    {"local0", LOG_LOCAL0}, {"local1", LOG_LOCAL1},     {"local2", LOG_LOCAL2},
    {"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4},     {"local5", LOG_LOCAL5},
    {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7},
};

static int open_log_file(const char *path) {
  return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

void app_tune_malloc(void) {
#ifdef __GLIBC__
  /* Message bodies pass through buffers of a few hundred KiB that are
   * freed and made again for every large message. By default glibc serves
   * those with mmap and gives them back at once, so each message is copied
   * into freshly faulted pages: 1 MiB responses at 4 connections ran 13%
   * slower and used ~25% more client CPU (tests/bench/README.md). Keeping
   * freed memory up to these sizes costs at most that much RSS. */
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  mallopt(M_TRIM_THRESHOLD, 32 << 20);
#endif
}

void app_raise_nofile(void) {
  /* As Go programs do at start (os, Go 1.19+): the soft limit is often
   * 1024 for compatibility with select(); libuv uses epoll. The server's
   * -max-connections default is bounded by what results. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl); /* best effort */
  }
}

void app_log_setup(const char *prog, const char *app, const app_ops *ops) {
  char msg[512];
  g_log.app = app;
  if (ops->log_format == NULL || strcmp(ops->log_format, "text") == 0)
    g_log.json = 0;
  else if (strcmp(ops->log_format, "json") == 0)
    g_log.json = 1;
  else
    die(prog, "log-format", "must be text or json");
  if (ops->syslog && ops->logfile)
    die(prog, "syslog", "cannot be combined with -logfile");
  if (ops->pidfile && *ops->pidfile == '\0')
    die(prog, "pidfile", "must not be empty");
  if (ops->syslog) {
    int facility = -1;
    for (size_t i = 0; i < sizeof(facilities) / sizeof(facilities[0]); i++)
      if (strcasecmp(ops->syslog, facilities[i].name) == 0)
        facility = facilities[i].facility;
    if (facility < 0) {
      snprintf(
          msg, sizeof(msg),
          "unknown facility \"%.64s\" (want daemon, user, local0..local7, "
          "kern, mail, auth, authpriv, syslog, lpr, news, uucp, cron, ftp)",
          ops->syslog);
      die(prog, "syslog", msg);
    }
    openlog(app, LOG_PID, facility);
    g_log.use_syslog = 1;
  }
  if (ops->logfile) {
    if (*ops->logfile == '\0')
      die(prog, "logfile", "must not be empty");
    int fd = open_log_file(ops->logfile);
    if (fd < 0) {
      snprintf(msg, sizeof(msg), "cannot open %.300s: %s", ops->logfile,
               strerror(errno));
      die(prog, "logfile", msg);
    }
    g_log.fd = fd;
    g_log.path = ops->logfile;
  }
}

void app_log_shutdown(void) {
  if (g_log.path) {
    close(g_log.fd);
    g_log.fd = STDERR_FILENO;
    g_log.path = NULL;
  }
  if (g_log.use_syslog) {
    closelog();
    g_log.use_syslog = 0;
  }
}

/* A growable line: on the stack while short, on the heap beyond; when
 * memory runs out the line is cut rather than lost. */
typedef struct line_buf {
  char *p;
  size_t len, cap;
  int heap;
  char stack[1024];
} line_buf;

static void lb_init(line_buf *b) {
  b->p = b->stack;
  b->len = 0;
  b->cap = sizeof(b->stack);
  b->heap = 0;
}

static void lb_free(line_buf *b) {
  if (b->heap)
    free(b->p);
}

static void lb_add(line_buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap;
    while (b->len + n + 1 > cap)
      cap *= 2;
    char *p = b->heap ? realloc(b->p, cap) : malloc(cap);
    if (p == NULL) {
      n = b->cap - 1 - b->len; /* cut */
    } else {
      if (!b->heap)
        memcpy(p, b->p, b->len);
      b->p = p;
      b->cap = cap;
      b->heap = 1;
    }
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void lb_str(line_buf *b, const char *s) {
  lb_add(b, s, strlen(s));
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return; /* nowhere to report it */
    }
    p += w;
    n -= (size_t)w;
  }
}

/* The record as one JSON object into b (jansson, through libwstun). */
static void json_line(line_buf *b, const char *ts, const char *tunnel,
                      const wstun_log_record *rec) {
  const wstun_log_field extra[] = {{"app", g_log.app}, {"tunnel", tunnel}};
  char stack[2048];
  int n = wstun_log_format_json(rec, ts, extra, 2, stack, sizeof(stack));
  if (n >= 0 && (size_t)n < sizeof(stack)) {
    lb_add(b, stack, (size_t)n);
    return;
  }
  char *heap = n > 0 ? malloc((size_t)n + 1) : NULL;
  if (heap &&
      wstun_log_format_json(rec, ts, extra, 2, heap, (size_t)n + 1) == n) {
    lb_add(b, heap, (size_t)n);
  } else {
    /* no memory for the line: say so, still as JSON */
    const wstun_log_record lost = {WSTUN_LOG_ERROR,
                                   "out of memory formatting a log line", NULL};
    if (wstun_log_format_json(&lost, ts, extra, 2, stack, sizeof(stack)) > 0)
      lb_str(b, stack);
  }
  free(heap);
}

void app_log_record(void *user_data, const wstun_log_record *rec) {
  static const char *const names[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};
  static const int prios[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};
  int l = (int)rec->level & 3;
  if (rec->level == WSTUN_LOG_ERROR)
    snprintf(g_log.last_error, sizeof(g_log.last_error), "%s", rec->msg);
  /* user_data, when set, names the tunnel ([tunnel NAME] of -config) */
  const char *tunnel = user_data;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[48], frac[16];
  strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(frac, sizeof(frac), ".%03dZ", (int)(tv.tv_usec / 1000));
  strcat(ts, frac);

  line_buf b;
  lb_init(&b);
  if (g_log.json) {
    json_line(&b, ts, tunnel, rec);
  } else {
    if (!g_log.use_syslog) { /* syslog stamps time, level and pid itself */
      lb_str(&b, ts);
      lb_str(&b, " ");
      lb_str(&b, names[l]);
      lb_str(&b, " ");
    }
    if (tunnel) {
      lb_str(&b, "[");
      lb_str(&b, tunnel);
      lb_str(&b, "] ");
    }
    lb_str(&b, rec->msg);
  }
  if (g_log.use_syslog) {
    syslog(prios[l], "%s", b.p);
  } else {
    lb_add(&b, "\n", 1);
    if (b.p[b.len - 1] != '\n') /* cut short: still one line */
      b.p[b.len - 1] = '\n';
    write_all(g_log.fd, b.p, b.len);
  }
  lb_free(&b);
}

void app_log(void *user_data, wstun_log_level level, const char *msg) {
  const wstun_log_record rec = {level, msg, NULL};
  app_log_record(user_data, &rec);
}

const char *app_last_error(void) {
  return g_log.last_error;
}

void app_logf(wstun_log_level level, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  app_log(NULL, level, msg);
}

void app_errorf(const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  fprintf(stderr, "%s\n", msg);
  if (g_log.use_syslog || g_log.path)
    app_log(NULL, WSTUN_LOG_ERROR, msg);
}

static void reopen_log(const char *why) {
  if (g_log.path == NULL)
    return;
  int fd = open_log_file(g_log.path);
  if (fd < 0) {
    app_logf(WSTUN_LOG_ERROR,
             "%s: cannot reopen log file %s: %s (still writing "
             "to the old one)",
             why, g_log.path, strerror(errno));
    return;
  }
  close(g_log.fd);
  g_log.fd = fd;
  app_logf(WSTUN_LOG_INFO, "%s: log file reopened", why);
}

static void on_reopen_signal(uv_signal_t *h, int signum) {
  app_reopen *r = h->data;
  const char *name = signum == SIGHUP ? "SIGHUP" : "SIGUSR1";
  reopen_log(name);
  if (signum == SIGHUP && r->on_hup)
    r->on_hup(r->user_data);
  else if (g_log.path == NULL)
    app_logf(WSTUN_LOG_INFO, "%s: ignored (no -logfile to reopen%s)", name,
             signum == SIGHUP ? ", nothing to reload" : "");
}

void app_reopen_start(uv_loop_t *loop, app_reopen *r,
                      void (*on_hup)(void *user_data), void *user_data) {
  r->on_hup = on_hup;
  r->user_data = user_data;
  uv_signal_init(loop, &r->usr1);
  uv_signal_init(loop, &r->hup);
  r->usr1.data = r->hup.data = r;
  uv_signal_start(&r->usr1, on_reopen_signal, SIGUSR1);
  uv_signal_start(&r->hup, on_reopen_signal, SIGHUP);
  r->active = 1;
}

void app_reopen_close(app_reopen *r) {
  if (!r->active)
    return;
  uv_close((uv_handle_t *)&r->usr1, NULL);
  uv_close((uv_handle_t *)&r->hup, NULL);
  r->active = 0;
  /* libuv gave the signals their default action back (which ends the
   * process): until exit they stay harmless */
  signal(SIGUSR1, SIG_IGN);
  signal(SIGHUP, SIG_IGN);
}

/* ---- pid file ----------------------------------------------------------- */

static const char *g_pidfile;

int app_write_file_atomic(const char *path, const char *text, size_t n) {
  /* temp file + rename: a reader never sees it empty or half written */
  char tmp[4096];
  if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
    return ENAMETOOLONG;
  int err = 0;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0)
    return errno;
  ssize_t w = write(fd, text, n);
  if (w < 0 || (size_t)w != n)
    err = w < 0 ? errno : EIO;
  if (close(fd) != 0 && err == 0)
    err = errno;
  if (err == 0 && rename(tmp, path) != 0)
    err = errno;
  if (err)
    unlink(tmp);
  return err;
}

int app_pidfile_write(const char *prog, const char *path) {
  char text[32];
  int n = snprintf(text, sizeof(text), "%ld\n", (long)getpid());
  int err = app_write_file_atomic(path, text, (size_t)n);
  if (err) {
    app_errorf("%s: flag -pidfile: cannot write %s: %s", prog, path,
               strerror(err));
    return -1;
  }
  g_pidfile = path;
  return 0;
}

void app_pidfile_remove(void) {
  if (g_pidfile == NULL)
    return;
  /* only ours: another instance may have taken the file over since */
  char text[32];
  long pid = -1;
  FILE *f = fopen(g_pidfile, "r");
  if (f) {
    if (fgets(text, sizeof(text), f))
      pid = strtol(text, NULL, 10);
    fclose(f);
  }
  if (pid == (long)getpid())
    unlink(g_pidfile);
  g_pidfile = NULL;
}

void app_rfc3339(time_t t, char *buf, size_t size) {
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int app_protocol(const char *prog, const char *value) {
  if (strcmp(value, "v1") == 0)
    return 1;
  if (strcmp(value, "v2") == 0)
    return 2;
  die(prog, "protocol", "must be v1 or v2");
  return 2;
}

wstun_log_level app_log_level(const char *prog, const char *value) {
  int l = wstun_log_level_parse(value);
  if (l < 0)
    die(prog, "log-level", "must be one of error, warn, info, debug");
  return (wstun_log_level)l;
}
