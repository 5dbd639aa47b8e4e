/* The allocation hook: every allocation of libwstun goes through here, so
 * an embedder can account memory and tests can fail the Nth allocation.
 * Process-wide on purpose (as jansson's json_set_alloc_funcs): one
 * allocator per process is what embedders ask for, and handles would
 * otherwise have to carry it into every module. */
#include "wstun_alloc.h"

#include <stdlib.h>
#include <string.h>
#if defined(__GLIBC__) || defined(__linux__)
#include <malloc.h>
#define WSTUN__COUNTED 1
#endif

#include "wstun/wstun.h"

/* The default allocator counts what it hands out (wstun_memory_in_use), by
 * the usable size malloc reports, so no header is needed: freeing gives
 * back exactly what was counted. Relaxed atomics: several loops in several
 * threads may each run a server or a client. */
static uint64_t live_bytes, live_blocks;

#ifdef WSTUN__COUNTED
static void *counted(void *p) {
  if (p) {
    __atomic_fetch_add(&live_bytes, (uint64_t)malloc_usable_size(p),
                       __ATOMIC_RELAXED);
    __atomic_fetch_add(&live_blocks, 1, __ATOMIC_RELAXED);
  }
  return p;
}
static void uncount(void *p) {
  if (p) {
    __atomic_fetch_sub(&live_bytes, (uint64_t)malloc_usable_size(p),
                       __ATOMIC_RELAXED);
    __atomic_fetch_sub(&live_blocks, 1, __ATOMIC_RELAXED);
  }
}
#else
#define counted(p) (p)
#define uncount(p) ((void)(p))
#endif

static void *std_malloc(size_t n, void *ud) {
  (void)ud;
  return counted(malloc(n));
}
static void *std_calloc(size_t c, size_t n, void *ud) {
  (void)ud;
  return counted(calloc(c, n));
}
static void *std_realloc(void *p, size_t n, void *ud) {
  (void)ud;
#ifdef WSTUN__COUNTED
  size_t old = p ? malloc_usable_size(p) : 0;
  void *np = realloc(p, n);
  if (np == NULL)
    return NULL; /* p is untouched */
  __atomic_fetch_add(&live_bytes, (uint64_t)malloc_usable_size(np) - old,
                     __ATOMIC_RELAXED);
  if (p == NULL)
    __atomic_fetch_add(&live_blocks, 1, __ATOMIC_RELAXED);
  return np;
#else
  return realloc(p, n);
#endif
}
static void std_free(void *p, void *ud) {
  (void)ud;
  uncount(p);
  free(p);
}

static wstun_allocator current = {std_malloc, std_calloc, std_realloc, std_free,
                                  NULL};

int wstun_set_allocator(const wstun_allocator *a) {
  if (a == NULL) {
    current =
        (wstun_allocator){std_malloc, std_calloc, std_realloc, std_free, NULL};
    return 0;
  }
  if (!a->malloc || !a->calloc || !a->realloc || !a->free)
    return WSTUN_EINVAL;
  current = *a;
  return 0;
}

int wstun_memory_in_use(uint64_t *bytes, uint64_t *blocks) {
  int ours = current.malloc == std_malloc;
#ifndef WSTUN__COUNTED
  ours = 0;
#endif
  if (bytes)
    *bytes = ours ? __atomic_load_n(&live_bytes, __ATOMIC_RELAXED) : 0;
  if (blocks)
    *blocks = ours ? __atomic_load_n(&live_blocks, __ATOMIC_RELAXED) : 0;
  return ours ? 0 : WSTUN_EINVAL;
}

void *wstun__malloc(size_t n) {
  return current.malloc(n ? n : 1, current.user_data);
}
void *wstun__calloc(size_t count, size_t n) {
  return current.calloc(count, n ? n : 1, current.user_data);
}
void *wstun__realloc(void *p, size_t n) {
  return current.realloc(p, n ? n : 1, current.user_data);
}
void wstun__free(void *p) {
  if (p)
    current.free(p, current.user_data);
}

char *wstun__strndup(const char *s, size_t n) {
  if (s == NULL)
    return NULL;
  char *d = wstun__malloc(n + 1);
  if (d == NULL)
    return NULL;
  memcpy(d, s, n);
  d[n] = '\0';
  return d;
}

char *wstun__strdup(const char *s) {
  return s ? wstun__strndup(s, strlen(s)) : NULL;
}
