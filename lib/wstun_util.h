/* Small helpers shared by several modules: secret comparison, secret
 * redaction for logs, ASCII case folding. */
#ifndef WSTUN_UTIL_H
#define WSTUN_UTIL_H

#include <stddef.h>

/* 1 when equal. Time depends only on the lengths, never on where the bytes
 * differ, so passwords cannot be guessed byte by byte through timing. */
int wstun__ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/* Writes at most the first 8 characters of a secret followed by "..." into
 * out (size >= 12), for log lines. */
const char *wstun__redact(const char *secret, char out[12]);

int wstun__ascii_casecmp_n(const char *a, size_t alen, const char *b);

/* Walks a comma-separated list: sets *item and *len to the next element with
 * surrounding spaces removed and returns 1, or returns 0 at the end. Empty
 * elements are skipped. */
int wstun__list_next(const char **cursor, const char **item, size_t *len);
/* How many elements the list can hold at most (for allocating). */
size_t wstun__list_bound(const char *s);

#endif
