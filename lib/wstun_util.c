/* Small helpers with no state: constant-time comparison of secrets, their
 * redaction for logs, ASCII case-insensitive comparison, and the walk over
 * comma-separated lists that every list option shares. */
#include "wstun_util.h"

#include <string.h>

int wstun__ct_equal(const void *a, size_t alen, const void *b, size_t blen) {
  const unsigned char *x = a, *y = b;
  /* Compare over the longer length so a length mismatch costs the same as
   * a content mismatch; index modulo keeps reads in bounds. */
  size_t n = alen > blen ? alen : blen;
  unsigned diff = (unsigned)(alen ^ blen);
  for (size_t i = 0; i < n; i++) {
    unsigned char cx = alen ? x[i % alen] : 0;
    unsigned char cy = blen ? y[i % blen] : 0;
    diff |= (unsigned)(cx ^ cy);
  }
  return diff == 0;
}

const char *wstun__redact(const char *secret, char out[12]) {
  size_t n = secret ? strlen(secret) : 0;
  if (n > 8)
    n = 8;
  memcpy(out, secret ? secret : "", n);
  memcpy(out + n, "...", 4);
  return out;
}

static int lower(int c) {
  return (c >= 'A' && c <= 'Z') ? c + 32 : c;
}

int wstun__ascii_casecmp_n(const char *a, size_t alen, const char *b) {
  size_t blen = strlen(b);
  if (alen != blen)
    return 1;
  for (size_t i = 0; i < alen; i++)
    if (lower((unsigned char)a[i]) != lower((unsigned char)b[i]))
      return 1;
  return 0;
}

int wstun__list_next(const char **cursor, const char **item, size_t *len) {
  const char *p = *cursor;
  for (;;) {
    while (*p == ' ' || *p == ',')
      p++;
    if (*p == '\0') {
      *cursor = p;
      return 0;
    }
    size_t n = strcspn(p, ",");
    size_t end = n;
    while (end > 0 && p[end - 1] == ' ')
      end--;
    *cursor = p + n;
    if (end > 0) {
      *item = p;
      *len = end;
      return 1;
    }
    p += n;
  }
}

size_t wstun__list_bound(const char *s) {
  size_t n = 1;
  for (; s && *s; s++)
    n += *s == ',';
  return n;
}
