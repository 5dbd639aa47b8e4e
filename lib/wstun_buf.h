/* A growable byte buffer with a read offset: producers append at the end,
 * consumers take from the front. The one buffer type inside libwstun. */
#ifndef WSTUN_BUF_H
#define WSTUN_BUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct wstun__buf {
  uint8_t *base; /* owned; NULL while empty and never grown */
  size_t off;    /* bytes already consumed from the front */
  size_t len;    /* end of valid data (valid bytes: base[off..len)) */
  size_t cap;
} wstun__buf;

#define WSTUN__BUF_INIT                                                        \
  { NULL, 0, 0, 0 }

void wstun__buf_init(wstun__buf *b);
void wstun__buf_free(wstun__buf *b);
/* Number of unconsumed bytes. */
static inline size_t wstun__buf_size(const wstun__buf *b) {
  return b->len - b->off;
}
static inline uint8_t *wstun__buf_data(const wstun__buf *b) {
  return b->base + b->off;
}
/* Make room for `n` more bytes at the end; 0 or WSTUN_ENOMEM. */
int wstun__buf_reserve(wstun__buf *b, size_t n);
int wstun__buf_append(wstun__buf *b, const void *data, size_t n);
int wstun__buf_append_str(wstun__buf *b, const char *s);
/* printf-style append; 0 or WSTUN_ENOMEM. */
int wstun__buf_appendf(wstun__buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Drop `n` bytes from the front (n <= size). */
void wstun__buf_consume(wstun__buf *b, size_t n);
void wstun__buf_reset(wstun__buf *b);

#endif
