/* A tiny header-only test harness for the unit tests.
 *
 * Checks record a failure (file:line plus the values involved) and let the
 * test go on, so one run shows every broken expectation. A test is a
 * `static void name(void)` listed in the table given to test_main():
 *
 *   TEST(parses_prefix) { CHECK_EQ_INT(f(1), 2); }
 *   int main(int argc, char **argv) {
 *     static const test_case tests[] = {T(parses_prefix)};
 *     return test_main(tests, TEST_COUNT(tests), argc, argv);
 *   }
 *
 * Arguments on the command line select tests by name (substring match).
 * The last line printed is "N passed, N failed" (tests, not checks); the
 * exit status is nonzero when any test failed. test_context() sets a
 * short label (say "split at 17") printed with every failure until it is
 * cleared, for checks run in loops. */
#ifndef WSTUN_UNIT_TEST_H
#define WSTUN_UNIT_TEST_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef struct test_case {
  const char *name;
  void (*fn)(void);
} test_case;

#define TEST(name) static void name(void)
#define T(name)                                                                \
  { #name, name }
#define TEST_COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Harness state. Static in a header that each test program includes
 * once. */
static struct {
  int test_failures; /* failed checks in the current test */
  long checks;
  char context[160];
} test__state;

static inline void test_context(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));
static inline void test_context(const char *fmt, ...) {
  if (fmt == NULL) {
    test__state.context[0] = '\0';
    return;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(test__state.context, sizeof(test__state.context), fmt, ap);
  va_end(ap);
}

static inline void test__fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline void test__fail(const char *file, int line, const char *fmt,
                              ...) {
  va_list ap;
  test__state.test_failures++;
  fprintf(stdout, "  %s:%d: ", file, line);
  va_start(ap, fmt);
  vfprintf(stdout, fmt, ap);
  va_end(ap);
  if (test__state.context[0]) {
    /* escaped: contexts often quote protocol bytes */
    fputs(" [", stdout);
    for (const char *c = test__state.context; *c; c++) {
      unsigned char u = (unsigned char)*c;
      if (u == '\r')
        fputs("\\r", stdout);
      else if (u == '\n')
        fputs("\\n", stdout);
      else if (u < 0x20 || u >= 0x7f)
        fprintf(stdout, "\\x%02x", u);
      else
        fputc(u, stdout);
    }
    fputc(']', stdout);
  }
  fputc('\n', stdout);
  fflush(stdout);
}

/* Prints up to `max` bytes of s as a C string literal (escapes). */
static inline void test__print_escaped(const void *s, size_t n, size_t max) {
  const unsigned char *p = s;
  fputc('"', stdout);
  for (size_t i = 0; i < n && i < max; i++) {
    unsigned char c = p[i];
    if (c == '\r')
      fputs("\\r", stdout);
    else if (c == '\n')
      fputs("\\n", stdout);
    else if (c == '"' || c == '\\')
      fprintf(stdout, "\\%c", c);
    else if (c < 0x20 || c >= 0x7f)
      fprintf(stdout, "\\x%02x", c);
    else
      fputc(c, stdout);
  }
  fputc('"', stdout);
  if (n > max)
    fprintf(stdout, "... (%zu bytes)", n);
}

#define CHECK(cond)                                                            \
  do {                                                                         \
    test__state.checks++;                                                      \
    if (!(cond))                                                               \
      test__fail(__FILE__, __LINE__, "CHECK(%s) failed", #cond);               \
  } while (0)

/* Like CHECK but returns from the (void) test function on failure, for
 * preconditions whose failure would make the rest crash. */
#define REQUIRE(cond)                                                          \
  do {                                                                         \
    test__state.checks++;                                                      \
    if (!(cond)) {                                                             \
      test__fail(__FILE__, __LINE__, "REQUIRE(%s) failed", #cond);             \
      return;                                                                  \
    }                                                                          \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                     \
  do {                                                                         \
    long long test__a = (long long)(a), test__b = (long long)(b);              \
    test__state.checks++;                                                      \
    if (test__a != test__b)                                                    \
      test__fail(__FILE__, __LINE__, "CHECK_EQ_INT(%s, %s): %lld != %lld", #a, \
                 #b, test__a, test__b);                                        \
  } while (0)

#define CHECK_EQ_STR(a, b)                                                     \
  do {                                                                         \
    const char *test__a = (a), *test__b = (b);                                 \
    test__state.checks++;                                                      \
    if (test__a == NULL || test__b == NULL ? test__a != test__b                \
                                           : strcmp(test__a, test__b) != 0) {  \
      test__fail(__FILE__, __LINE__, "CHECK_EQ_STR(%s, %s):", #a, #b);         \
      fputs("    got:  ", stdout);                                             \
      if (test__a)                                                             \
        test__print_escaped(test__a, strlen(test__a), 400);                    \
      else                                                                     \
        fputs("NULL", stdout);                                                 \
      fputs("\n    want: ", stdout);                                           \
      if (test__b)                                                             \
        test__print_escaped(test__b, strlen(test__b), 400);                    \
      else                                                                     \
        fputs("NULL", stdout);                                                 \
      fputc('\n', stdout);                                                     \
    }                                                                          \
  } while (0)

/* n bytes at a equal n bytes at b; on failure shows the first difference. */
#define CHECK_MEM(a, b, n)                                                     \
  do {                                                                         \
    const unsigned char *test__a = (const unsigned char *)(a);                 \
    const unsigned char *test__b = (const unsigned char *)(b);                 \
    size_t test__n = (size_t)(n);                                              \
    test__state.checks++;                                                      \
    if (test__n > 0 && (test__a == NULL || test__b == NULL)) {                 \
      test__fail(__FILE__, __LINE__, "CHECK_MEM(%s, %s, %s): NULL pointer",    \
                 #a, #b, #n);                                                  \
    } else if (test__n > 0 && memcmp(test__a, test__b, test__n) != 0) {        \
      size_t test__i = 0;                                                      \
      while (test__a[test__i] == test__b[test__i])                             \
        test__i++;                                                             \
      size_t test__from = test__i > 16 ? test__i - 16 : 0;                     \
      size_t test__len = test__n - test__from;                                 \
      test__fail(__FILE__, __LINE__,                                           \
                 "CHECK_MEM(%s, %s, %s): first difference at byte %zu of "     \
                 "%zu",                                                        \
                 #a, #b, #n, test__i, test__n);                                \
      fprintf(stdout, "    got  [%zu..]: ", test__from);                       \
      test__print_escaped(test__a + test__from, test__len, 48);                \
      fprintf(stdout, "\n    want [%zu..]: ", test__from);                     \
      test__print_escaped(test__b + test__from, test__len, 48);                \
      fputc('\n', stdout);                                                     \
    }                                                                          \
  } while (0)

/* A buffer of known length equals a NUL-terminated golden string. */
#define CHECK_BYTES_STR(data, len, str)                                        \
  do {                                                                         \
    size_t test__gl = (size_t)(len), test__wl = strlen(str);                   \
    CHECK_EQ_INT(test__gl, test__wl);                                          \
    CHECK_MEM((data), (str), test__gl < test__wl ? test__gl : test__wl);       \
    if (test__gl != test__wl) {                                                \
      fputs("    got:  ", stdout);                                             \
      test__print_escaped((data), test__gl, 400);                              \
      fputs("\n    want: ", stdout);                                           \
      test__print_escaped((str), test__wl, 400);                               \
      fputc('\n', stdout);                                                     \
    }                                                                          \
  } while (0)

static inline int test__selected(const char *name, int argc, char **argv) {
  if (argc <= 1)
    return 1;
  for (int i = 1; i < argc; i++)
    if (strstr(name, argv[i]) != NULL)
      return 1;
  return 0;
}

static inline int test_main(const test_case *tests, size_t n, int argc,
                            char **argv) {
  int passed = 0, failed = 0;
  setvbuf(stdout, NULL, _IONBF, 0);
  for (size_t i = 0; i < n; i++) {
    if (!test__selected(tests[i].name, argc, argv))
      continue;
    fprintf(stdout, "[ RUN  ] %s\n", tests[i].name);
    test__state.test_failures = 0;
    test__state.context[0] = '\0';
    tests[i].fn();
    test__state.context[0] = '\0';
    if (test__state.test_failures == 0) {
      passed++;
      fprintf(stdout, "[  OK  ] %s\n", tests[i].name);
    } else {
      failed++;
      fprintf(stdout, "[ FAIL ] %s (%d failed checks)\n", tests[i].name,
              test__state.test_failures);
    }
  }
  fprintf(stdout, "(%ld checks)\n", test__state.checks);
  fprintf(stdout, "%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}

#endif
