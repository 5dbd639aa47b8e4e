/* Growable byte buffer. Consumption moves an offset; the data is compacted
 * only when the buffer needs to grow, so a FIFO use costs no memmove per
 * read. */
#include "wstun_buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wstun/wstun.h"
#include "wstun_alloc.h"

void wstun__buf_init(wstun__buf *b) {
  memset(b, 0, sizeof(*b));
}

void wstun__buf_free(wstun__buf *b) {
  wstun__free(b->base);
  memset(b, 0, sizeof(*b));
}

void wstun__buf_reset(wstun__buf *b) {
  b->off = b->len = 0;
}

int wstun__buf_reserve(wstun__buf *b, size_t n) {
  if (b->cap - b->len >= n)
    return 0;
  size_t size = b->len - b->off;
  /* compact only when what moves is no more than what was consumed, so
   * every byte is moved at most about once; otherwise grow */
  if (b->off > 0 && size <= b->off && b->cap - size >= n) {
    memmove(b->base, b->base + b->off, size);
    b->off = 0;
    b->len = size;
    return 0;
  }
  size_t cap = b->cap ? b->cap : 256;
  while (cap - size < n) {
    if (cap > SIZE_MAX / 2)
      return WSTUN_ENOMEM;
    cap *= 2;
  }
  uint8_t *nb = wstun__malloc(cap);
  if (nb == NULL)
    return WSTUN_ENOMEM;
  if (size)
    memcpy(nb, b->base + b->off, size);
  wstun__free(b->base);
  b->base = nb;
  b->cap = cap;
  b->off = 0;
  b->len = size;
  return 0;
}

int wstun__buf_append(wstun__buf *b, const void *data, size_t n) {
  if (n == 0)
    return 0;
  if (wstun__buf_reserve(b, n) != 0)
    return WSTUN_ENOMEM;
  memcpy(b->base + b->len, data, n);
  b->len += n;
  return 0;
}

int wstun__buf_append_str(wstun__buf *b, const char *s) {
  return wstun__buf_append(b, s, strlen(s));
}

int wstun__buf_appendf(wstun__buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    return WSTUN_EINVAL;
  if (wstun__buf_reserve(b, (size_t)n + 1) != 0)
    return WSTUN_ENOMEM;
  va_start(ap, fmt);
  vsnprintf((char *)b->base + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

void wstun__buf_consume(wstun__buf *b, size_t n) {
  b->off += n;
  if (b->off >= b->len)
    b->off = b->len = 0;
}
