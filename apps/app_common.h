/* What the three programs share: flag parsing in the Go tool's style
 * (-flag value, -flag=value, and the same with two dashes), log lines on
 * stderr, and the exit codes. Kept out of libwstun: the library never
 * prints or exits. */
#ifndef WSTUN_APP_COMMON_H
#define WSTUN_APP_COMMON_H

#include <stdint.h>

#include "wstun/wstun.h"

#define APP_EXIT_USAGE 2

typedef enum { FLAG_STR, FLAG_INT, FLAG_U64, FLAG_BOOL } app_flag_type;

typedef struct app_flag {
  const char *name; /* without dashes */
  app_flag_type type;
  void *dst;        /* const char **, int *, uint64_t *, int * */
  const char *arg;  /* shown in usage, e.g. "N" */
  const char *help;
  int64_t min, max; /* for FLAG_INT / FLAG_U64 (ignored when min > max) */
} app_flag;

/* Parses argv[first..]. On -h/--help prints usage and exits 0; on
 * --version prints the version and exits 0; on any error prints one line
 * naming the flag and exits APP_EXIT_USAGE. */
void app_parse_flags(const char *prog, const char *summary, app_flag *flags,
                     int argc, char **argv, int first);

/* stderr logger: "2026-01-09T15:30:45.123Z INFO  message". */
void app_log(void *user_data, wstun_log_level level, const char *msg);

/* Parses -log-level; exits with a usage error naming the flag if bad. */
int app_log_level(const char *prog, const char *value);

int wstunsrv_main(const char *prog, int argc, char **argv, int first);
int wstuncli_main(const char *prog, int argc, char **argv, int first);

#endif
