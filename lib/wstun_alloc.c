/* The allocation hook. Plain libc today; a single place to change. */
#include "wstun_alloc.h"

#include <stdlib.h>
#include <string.h>

void *wstun__malloc(size_t n) { return malloc(n ? n : 1); }
void *wstun__calloc(size_t count, size_t n) { return calloc(count, n ? n : 1); }
void *wstun__realloc(void *p, size_t n) { return realloc(p, n ? n : 1); }
void wstun__free(void *p) { free(p); }

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
