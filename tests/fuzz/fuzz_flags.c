/* The apps' flag parser, app_parse_flags (apps/app_common.c), over a table
 * with every flag type (ranges as the apps use them). app_common.c is
 * compiled into this target with exit() renamed to fuzz_app_exit (see the
 * CMake block), which longjmps back here, so usage errors, -h and --version
 * can be driven like a pure function; their output goes to /dev/null.
 *
 * Checked against a reference reading of the rules: the exit code (none,
 * 0 for -h/--help/--version, 2 for a usage error), and on success every
 * value: strings point at their argument, integers are the decimal value
 * of it and within range, booleans 0 or 1.
 *
 * Input: argv[1..] separated by NUL bytes (at most 24 arguments). */
#include <errno.h>
#include <setjmp.h>

#include "app_common.h"
#include "fuzz_util.h"

static jmp_buf fz_jb;
static int fz_code;

__attribute__((noreturn)) void fuzz_app_exit(int code);
void fuzz_app_exit(int code) {
  fz_code = code;
  longjmp(fz_jb, 1);
}

typedef struct vals {
  const char *name;
  const char *host;
  int port, timeout, neg, verbose, on;
  uint64_t big, bounded;
} vals;

#define NFLAGS 9
static void table(app_flag *f, vals *v) {
  app_flag t[NFLAGS + 1] = {
      {"port", FLAG_INT, &v->port, "N", "", 0, 65535},
      {"timeout", FLAG_INT, &v->timeout, "S", "", 3, 86400},
      {"neg", FLAG_INT, &v->neg, "N", "", -100, 100},
      {"name", FLAG_STR, &v->name, "S", "", 0, -1},
      {"host", FLAG_STR, &v->host, "S", "", 0, -1},
      {"big", FLAG_U64, &v->big, "N", "", 0, INT64_MAX},
      {"bounded", FLAG_U64, &v->bounded, "N", "", 1024, 1 << 24},
      {"verbose", FLAG_BOOL, &v->verbose, NULL, "", 0, -1},
      {"on", FLAG_BOOL, &v->on, NULL, "", 0, -1},
      {NULL, FLAG_STR, NULL, NULL, NULL, 0, 0},
  };
  memcpy(f, t, sizeof(t));
}

static void vals_init(vals *v) {
  memset(v, 0, sizeof(*v));
  v->port = -7;
  v->timeout = -7;
  v->neg = -7;
  v->verbose = -7;
  v->on = -7;
  v->big = 7777;
  v->bounded = 7777;
}

/* Reference: returns -1 when parsing completes, else the exit code; fills
 * r with the values. */
static int reference(app_flag *flags, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-' || a[1] == '\0')
      return 2;
    const char *name = a[1] == '-' ? a + 2 : a + 1;
    if (!strcmp(name, "h") || !strcmp(name, "help") || !strcmp(name, "version"))
      return 0;
    size_t nlen = strcspn(name, "=");
    app_flag *f = NULL;
    for (app_flag *g = flags; g->name; g++)
      if (strlen(g->name) == nlen && !memcmp(g->name, name, nlen))
        f = g;
    if (f == NULL)
      return 2;
    const char *v;
    if (name[nlen] == '=')
      v = name + nlen + 1;
    else if (f->type == FLAG_BOOL)
      v = "true";
    else if (i + 1 < argc)
      v = argv[++i];
    else
      return 2;
    if (f->type == FLAG_STR) {
      *(const char **)f->dst = v;
    } else if (f->type == FLAG_BOOL) {
      /* Go's strconv.ParseBool spellings, as the Go programs take them */
      static const char *const yes[] = {"1", "t", "T", "true", "TRUE", "True"};
      static const char *const no[] = {"0", "f", "F", "false", "FALSE", "False"};
      int b = -1;
      for (size_t k = 0; k < 6; k++) {
        if (!strcmp(v, yes[k]))
          b = 1;
        if (!strcmp(v, no[k]))
          b = 0;
      }
      if (b < 0)
        return 2;
      *(int *)f->dst = b;
    } else {
      /* optional space and sign, then decimal digits only */
      const char *p = v;
      while (*p == ' ' || (*p >= '\t' && *p <= '\r'))
        p++;
      int negative = *p == '-';
      if (*p == '-' || *p == '+')
        p++;
      if (*p == '\0')
        return 2;
      __int128 n = 0;
      for (; *p; p++) {
        if (*p < '0' || *p > '9')
          return 2;
        n = n * 10 + (*p - '0');
        if (n > ((__int128)1 << 64))
          return 2;
      }
      if (negative)
        n = -n;
      if (n > INT64_MAX || n < INT64_MIN)
        return 2;
      if (n < f->min || n > f->max)
        return 2;
      if (f->type == FLAG_INT)
        *(int *)f->dst = (int)n;
      else
        *(uint64_t *)f->dst = (uint64_t)n;
    }
  }
  return -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static FILE *devnull;
  if (devnull == NULL) {
    devnull = fopen("/dev/null", "w");
    if (devnull == NULL)
      abort();
  }
  char *buf = malloc(size + 1);
  if (buf == NULL)
    abort();
  memcpy(buf, data, size);
  buf[size] = '\0';
  char *argv[26];
  int argc = 0;
  static char prog[] = "prog";
  argv[argc++] = prog;
  for (size_t off = 0; off <= size && argc < 25;) {
    argv[argc++] = buf + off;
    off += strlen(buf + off) + 1;
  }
  argv[argc] = NULL;

  app_flag flags[NFLAGS + 1], rflags[NFLAGS + 1];
  vals got, want;
  vals_init(&got);
  vals_init(&want);
  table(flags, &got);
  table(rflags, &want);
  int ref = reference(rflags, argc, argv);

  FILE *so = stdout, *se = stderr;
  stdout = devnull;
  stderr = devnull;
  volatile int code = -1;
  fz_code = -1;
  if (setjmp(fz_jb) == 0)
    app_parse_flags("prog", "summary", flags, argc, argv, 1);
  else
    code = fz_code;
  stdout = so;
  stderr = se;

  FZ_CHECK(code == ref, "exit code %d, reference %d", code, ref);
  if (code == -1) {
    FZ_CHECK(got.port == want.port && got.timeout == want.timeout &&
                 got.neg == want.neg && got.big == want.big &&
                 got.bounded == want.bounded && got.verbose == want.verbose &&
                 got.on == want.on && got.name == want.name &&
                 got.host == want.host,
             "values differ from the reference");
    FZ_CHECK(got.port == -7 || (got.port >= 0 && got.port <= 65535), "port");
    FZ_CHECK(got.timeout == -7 || (got.timeout >= 3 && got.timeout <= 86400),
             "timeout");
    FZ_CHECK(got.big == 7777 || got.big <= (uint64_t)INT64_MAX, "big");
    FZ_CHECK(got.bounded == 7777 ||
                 (got.bounded >= 1024 && got.bounded <= (1 << 24)),
             "bounded");
    FZ_CHECK(got.verbose == -7 || got.verbose == 0 || got.verbose == 1,
             "verbose");
  }
  free(buf);
  return 0;
}
