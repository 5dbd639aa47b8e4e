/* What the three programs share: flag parsing in the Go tool's style
 * (-flag value, -flag=value, and the same with two dashes), logging (stderr,
 * a log file reopened on SIGUSR1/SIGHUP, or syslog; text or JSON lines),
 * the pid file, and the exit codes. Kept out of libwstun: the library never
 * prints or exits. */
#ifndef WSTUN_APP_COMMON_H
#define WSTUN_APP_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "wstun/wstun.h"

#define APP_EXIT_USAGE 2

/* FLAG_BOOL is Go's: "-flag" alone means true. FLAG_ONOFF takes a value
 * (on/off, true/false, yes/no, 1/0) into an int, for settings that are on
 * by default ("-access-log off"). */
typedef enum {
  FLAG_STR,
  FLAG_INT,
  FLAG_U64,
  FLAG_BOOL,
  FLAG_ONOFF
} app_flag_type;

typedef struct app_flag {
  const char *name; /* without dashes */
  app_flag_type type;
  void *dst;       /* const char **, int *, uint64_t *, int *, int * */
  const char *arg; /* shown in usage, e.g. "N" */
  const char *help;
  int64_t min, max; /* for FLAG_INT / FLAG_U64 (ignored when min > max) */
} app_flag;

/* Converts `v` as flag `f` takes it into `dst` (a const char **, int * or
 * uint64_t * as f->type says). 0, or -1 with the reason in err. */
int app_flag_value(const app_flag *f, const char *v, void *dst, char *err,
                   size_t errlen);

/* Parses argv[first..]. On -h/--help prints usage and exits 0; on
 * --version prints the version and exits 0; on any error prints one line
 * naming the flag and exits APP_EXIT_USAGE. */
void app_parse_flags(const char *prog, const char *summary, app_flag *flags,
                     int argc, char **argv, int first);

/* The operational flags both programs take. */
typedef struct app_ops {
  const char *logfile;    /* -logfile FILE */
  const char *syslog;     /* -syslog FACILITY */
  const char *log_format; /* -log-format text|json */
  const char *pidfile;    /* -pidfile FILE */
  int access_log;         /* -access-log on|off: set it to 1 first */
} app_ops;

#define APP_OPS_INIT                                                           \
  { .access_log = 1 }

#define APP_OPS_FLAGS(o)                                                       \
  {"logfile",                                                                  \
   FLAG_STR,                                                                   \
   &(o).logfile,                                                               \
   "FILE",                                                                     \
   "append logs to FILE, not stderr (reopened on SIGUSR1, SIGHUP)",            \
   0,                                                                          \
   -1},                                                                        \
      {"syslog",                                                               \
       FLAG_STR,                                                               \
       &(o).syslog,                                                            \
       "FACILITY",                                                             \
       "log to syslog instead: daemon, user, local0..local7, ...",             \
       0,                                                                      \
       -1},                                                                    \
      {"log-format",                                                           \
       FLAG_STR,                                                               \
       &(o).log_format,                                                        \
       "FORMAT",                                                               \
       "text (default) or json (one object per line, with fields)",            \
       0,                                                                      \
       -1},                                                                    \
      {"access-log",                                                           \
       FLAG_ONOFF,                                                             \
       &(o).access_log,                                                        \
       "on|off",                                                               \
       "one info line per request answered (default on)",                      \
       0,                                                                      \
       1},                                                                     \
  {                                                                            \
    "pidfile", FLAG_STR, &(o).pidfile, "FILE",                                 \
        "write the process id to FILE once started; removed at exit", 0, -1    \
  }

/* Checks -logfile, -syslog and -log-format and opens the log destination;
 * `app` ("wstunsrv" or "wstuncli") is the syslog ident and the JSON "app"
 * field. On a bad value prints one line naming the flag and exits
 * APP_EXIT_USAGE. */
void app_log_setup(const char *prog, const char *app, const app_ops *ops);

/* Process-wide allocator settings for a long-running tunnel program (the
 * library leaves the process's malloc alone). */
void app_tune_malloc(void);
/* Raises the soft RLIMIT_NOFILE to the hard limit (best effort). */
void app_raise_nofile(void);

/* Closes the log file / syslog connection (at exit). */
void app_log_shutdown(void);

/* The log callback (the library's log_record_cb): one line per record to
 * the configured destination; a non-NULL user_data is a tunnel name.
 * Text: "2026-01-09T15:30:45.123Z INFO  [NAME] message"; JSON, built by
 * wstun_log_format_json():
 * {"time":"...","level":"info","app":"wstunsrv","tunnel":"NAME","msg":"..."}
 * and, for access-log lines, the request's fields after msg. */
void app_log_record(void *user_data, const wstun_log_record *rec);

/* app_log_record for a line without fields. */
void app_log(void *user_data, wstun_log_level level, const char *msg);

/* The text of the last error-level line logged (the library's reason for
 * a failed start), or "". */
const char *app_last_error(void);

/* app_log with a printf format. */
void app_logf(wstun_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A fatal message: printed as is on stderr and, when logs go elsewhere,
 * logged there as an error too. */
void app_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* SIGUSR1 and SIGHUP reopen the log file (for logrotate); SIGHUP also calls
 * `on_hup` (a reload). Without -logfile and `on_hup` they are logged and
 * ignored: neither signal ever ends the process, not even once the handles
 * are closed (they are ignored from then on). */
typedef struct app_reopen {
  uv_signal_t usr1, hup;
  int active;
  void (*on_hup)(void *user_data);
  void *user_data;
} app_reopen;

void app_reopen_start(uv_loop_t *loop, app_reopen *r,
                      void (*on_hup)(void *user_data), void *user_data);
/* Closes the handles (in the close callback, so the loop can end). */
void app_reopen_close(app_reopen *r);

/* Writes "<pid>\n" to path (remembered for app_pidfile_remove). Returns 0,
 * or -1 after printing an error. */
/* Writes `text` to `path` through a temp file and rename, so readers never
 * see a partial file. 0 or an errno value. */
int app_write_file_atomic(const char *path, const char *text, size_t n);

int app_pidfile_write(const char *prog, const char *path);

/* Removes the pid file if it still holds our pid. */
void app_pidfile_remove(void);

/* "2026-01-09T15:30:45Z" (RFC 3339, UTC) for `t`. */
void app_rfc3339(time_t t, char *buf, size_t size);

/* Parses -log-level; exits with a usage error naming the flag if bad. */
wstun_log_level app_log_level(const char *prog, const char *value);
/* -protocol: "v1" → 1, "v2" → 2 (the config's protocol field); anything
 * else exits with a one-line error naming the flag. */
int app_protocol(const char *prog, const char *value);

int wstunsrv_main(const char *prog, int argc, char **argv, int first);
int wstuncli_main(const char *prog, int argc, char **argv, int first);

#endif
