/* Every allocation of libwstun goes through these, so that one hook can
 * account memory or fail the Nth allocation in tests. */
#ifndef WSTUN_ALLOC_H
#define WSTUN_ALLOC_H

#include <stddef.h>

void *wstun__malloc(size_t n);
void *wstun__calloc(size_t count, size_t n);
void *wstun__realloc(void *p, size_t n);
void wstun__free(void *p);
/* strdup through the hook; NULL in → NULL out. */
char *wstun__strdup(const char *s);
char *wstun__strndup(const char *s, size_t n);

#endif
