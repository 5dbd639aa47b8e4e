/* The allocation hook: every allocation of libwstun goes through here, so
 * an embedder can account memory and tests can fail the Nth allocation.
 * Process-wide on purpose (as jansson's json_set_alloc_funcs): one
 * allocator per process is what embedders ask for, and handles would
 * otherwise have to carry it into every module. */
#include "wstun_alloc.h"

#include <stdlib.h>
#include <string.h>

#include "wstun/wstun.h"

static void *std_malloc(size_t n, void *ud) {
  (void)ud;
  return malloc(n);
}
static void *std_calloc(size_t c, size_t n, void *ud) {
  (void)ud;
  return calloc(c, n);
}
static void *std_realloc(void *p, size_t n, void *ud) {
  (void)ud;
  return realloc(p, n);
}
static void std_free(void *p, void *ud) {
  (void)ud;
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
