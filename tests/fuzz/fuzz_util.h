/* Helpers shared by the libFuzzer targets of tests/fuzz/: control bytes,
 * data-derived chunking, checks that abort with a message, and an
 * allocator that fails on demand (through wstun_set_allocator). */
#ifndef WSTUN_FUZZ_UTIL_H
#define WSTUN_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wstun/wstun.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A failed check is a bug in lib/ (or in the harness): say which, abort
 * so libFuzzer keeps the input as a crash. */
#define FZ_CHECK(cond, ...)                                                    \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "FUZZ CHECK FAILED %s:%d: %s: ", __FILE__, __LINE__,     \
              #cond);                                                          \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
      abort();                                                                 \
    }                                                                          \
  } while (0)

/* ---- input consumption ----------------------------------------------------
 */

typedef struct fz_in {
  const uint8_t *d;
  size_t n;
} fz_in;

static inline uint8_t fz_byte(fz_in *in) {
  if (in->n == 0)
    return 0;
  uint8_t b = in->d[0];
  in->d++;
  in->n--;
  return b;
}

/* Chunk sizes for feeding a parser: seed 0 means "all at once", otherwise
 * 1..seed bytes, chosen by a small PRNG seeded from the seed byte, so that
 * the same input always splits the same way. */
typedef struct fz_split {
  uint32_t state;
  uint8_t seed;
} fz_split;

static inline void fz_split_init(fz_split *s, uint8_t seed) {
  s->seed = seed;
  s->state = 0x9e3779b9u ^ ((uint32_t)seed * 0x01000193u);
}

static inline uint32_t fz_rand(fz_split *s) {
  uint32_t x = s->state;
  x ^= x << 13;
  x ^= x >> 17;
  x ^= x << 5;
  s->state = x;
  return x;
}

static inline size_t fz_split_next(fz_split *s, size_t left) {
  if (s->seed == 0)
    return left;
  size_t c = 1 + (size_t)(fz_rand(s) % s->seed);
  return c < left ? c : left;
}

/* ---- allocation failures
 * ----------------------------------------------------- */

/* After fz_alloc_fail_after(n), the n+1-th allocation of libwstun and every
 * later one fail (the way a process out of memory behaves) until
 * fz_alloc_reset(). fz_alloc_failed tells whether one did. */
static long fz_alloc_budget = -1;
static int fz_alloc_failed;

static inline int fz_alloc_take(void) {
  if (fz_alloc_budget < 0)
    return 1;
  if (fz_alloc_budget == 0) {
    fz_alloc_failed = 1;
    return 0;
  }
  fz_alloc_budget--;
  return 1;
}
static inline void *fz_malloc(size_t n, void *ud) {
  (void)ud;
  return fz_alloc_take() ? malloc(n) : NULL;
}
static inline void *fz_calloc(size_t c, size_t n, void *ud) {
  (void)ud;
  return fz_alloc_take() ? calloc(c, n) : NULL;
}
static inline void *fz_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  return fz_alloc_take() ? realloc(p, n) : NULL;
}
static inline void fz_free(void *p, void *ud) {
  (void)ud;
  free(p);
}

static inline void fz_alloc_install(void) {
  static const wstun_allocator a = {fz_malloc, fz_calloc, fz_realloc, fz_free,
                                    NULL};
  if (wstun_set_allocator(&a) != 0)
    abort();
}
static inline void fz_alloc_fail_after(long n) {
  fz_alloc_budget = n;
  fz_alloc_failed = 0;
}
static inline void fz_alloc_reset(void) {
  fz_alloc_budget = -1;
}

#endif
