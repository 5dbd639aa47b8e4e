#include "app_common.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

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
}

static void die(const char *prog, const char *flag, const char *what) {
  fprintf(stderr, "%s: flag -%s: %s\n", prog, flag, what);
  exit(APP_EXIT_USAGE);
}

static void set_value(const char *prog, app_flag *f, const char *v) {
  char msg[256];
  switch (f->type) {
  case FLAG_STR:
    *(const char **)f->dst = v;
    return;
  case FLAG_BOOL:
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
      *(int *)f->dst = 1;
    else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
      *(int *)f->dst = 0;
    else
      die(prog, f->name, "expects true or false");
    return;
  case FLAG_INT:
  case FLAG_U64: {
    char *end = NULL;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (*v == '\0' || *end != '\0' || errno != 0) {
      snprintf(msg, sizeof(msg), "invalid value \"%.64s\": not an integer", v);
      die(prog, f->name, msg);
    }
    if (f->min <= f->max && (n < f->min || n > f->max)) {
      snprintf(msg, sizeof(msg),
               "invalid value %lld: must be between %" PRId64 " and %" PRId64,
               n, f->min, f->max);
      die(prog, f->name, msg);
    }
    if (f->type == FLAG_INT)
      *(int *)f->dst = (int)n;
    else
      *(uint64_t *)f->dst = (uint64_t)n;
    return;
  }
  }
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

void app_log(void *user_data, wstun_log_level level, const char *msg) {
  static const char *const names[] = {"ERROR", "WARN ", "INFO ", "DEBUG"};
  (void)user_data;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  struct tm tm;
  gmtime_r(&tv.tv_sec, &tm);
  char ts[32];
  strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
  fprintf(stderr, "%s.%03dZ %s %s\n", ts, (int)(tv.tv_usec / 1000),
          names[level & 3], msg);
}

int app_log_level(const char *prog, const char *value) {
  int l = wstun_log_level_parse(value);
  if (l < 0)
    die(prog, "log-level", "must be one of error, warn, info, debug");
  return l;
}
