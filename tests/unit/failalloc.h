/* A counting allocator for wstun_set_allocator that fails the Nth call:
 * unit tests walk fail_at from 1 up to check that every allocation failure
 * is reported and leaves nothing allocated (mem.live back to 0). Header
 * only: each test program that needs it includes it once. */
#ifndef WSTUN_TEST_FAILALLOC_H
#define WSTUN_TEST_FAILALLOC_H

#include <stdlib.h>

#include "wstun/wstun.h"

static struct {
  long live, count, fail_at; /* fail_at 0: never fail */
} mem;

static int fail_now(void) {
  return ++mem.count == mem.fail_at;
}
static void *t_malloc(size_t n, void *ud) {
  (void)ud;
  if (fail_now())
    return NULL;
  void *p = malloc(n);
  mem.live += p != NULL;
  return p;
}
static void *t_calloc(size_t c, size_t n, void *ud) {
  (void)ud;
  if (fail_now())
    return NULL;
  void *p = calloc(c, n);
  mem.live += p != NULL;
  return p;
}
static void *t_realloc(void *p, size_t n, void *ud) {
  if (p == NULL)
    return t_malloc(n, ud);
  return fail_now() ? NULL : realloc(p, n);
}
static void t_free(void *p, void *ud) {
  (void)ud;
  mem.live -= p != NULL;
  free(p);
}
static const wstun_allocator counting = {t_malloc, t_calloc, t_realloc, t_free,
                                         NULL};

#endif
