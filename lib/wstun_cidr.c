/* Address lists and the IP helpers around them: parsing "10.0.0.0/8, ::1"
 * into prefixes (v4-mapped v6 addresses count as v4), matching a peer
 * against them, and the key a peer's connections are counted under (the
 * address, or its /64 for IPv6). Also wstun_address_list_check(). */
#include "wstun_cidr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "wstun/wstun.h"
#include "wstun_alloc.h"
#include "wstun_util.h"

/* Text → 4 or 16 bytes; v4-mapped v6 addresses become plain v4. */
static int parse_ip(const char *s, size_t len, int *family, uint8_t out[16]) {
  char buf[64];
  if (len == 0 || len >= sizeof(buf))
    return -1;
  memcpy(buf, s, len);
  buf[len] = '\0';
  if (uv_inet_pton(AF_INET, buf, out) == 0) {
    *family = 4;
    return 0;
  }
  if (uv_inet_pton(AF_INET6, buf, out) == 0) {
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0,    0,
                                       0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(out, mapped, 12) == 0) {
      memmove(out, out + 12, 4);
      *family = 4;
    } else {
      *family = 6;
    }
    return 0;
  }
  return -1;
}

int wstun__cidr_list_parse(const char *s, wstun__cidr_list *out) {
  memset(out, 0, sizeof(*out));
  if (s == NULL || *s == '\0')
    return 0;
  out->items = wstun__calloc(wstun__list_bound(s), sizeof(*out->items));
  if (out->items == NULL)
    return WSTUN_ENOMEM;
  const char *cursor = s, *p;
  size_t len;
  while (wstun__list_next(&cursor, &p, &len)) {
    const char *slash = memchr(p, '/', len);
    wstun__cidr *c = &out->items[out->n];
    if (parse_ip(p, slash ? (size_t)(slash - p) : len, &c->family, c->addr) !=
        0)
      goto bad;
    int max = c->family == 4 ? 32 : 128;
    c->bits = max;
    if (slash) {
      char *end = NULL;
      long bits = strtol(slash + 1, &end, 10);
      if (end != p + len || end == slash + 1 || bits < 0 || bits > max)
        goto bad;
      c->bits = (int)bits;
    }
    out->n++;
  }
  return 0;
bad:
  wstun__cidr_list_free(out);
  return WSTUN_EINVAL;
}

void wstun__cidr_list_free(wstun__cidr_list *l) {
  wstun__free(l->items);
  memset(l, 0, sizeof(*l));
}

static int in_cidr(const wstun__cidr *c, int family, const uint8_t *a) {
  if (c->family != family)
    return 0;
  int full = c->bits / 8, rest = c->bits % 8;
  if (memcmp(c->addr, a, (size_t)full) != 0)
    return 0;
  if (rest == 0)
    return 1;
  uint8_t mask = (uint8_t)(0xff << (8 - rest));
  return (c->addr[full] & mask) == (a[full] & mask);
}

int wstun__cidr_list_match(const wstun__cidr_list *l, const char *ip) {
  int family;
  uint8_t a[16];
  if (ip == NULL || parse_ip(ip, strlen(ip), &family, a) != 0)
    return 0;
  for (size_t i = 0; i < l->n; i++)
    if (in_cidr(&l->items[i], family, a))
      return 1;
  return 0;
}

int wstun__ip_is_loopback(const char *ip) {
  int family;
  uint8_t a[16];
  if (ip == NULL || parse_ip(ip, strlen(ip), &family, a) != 0)
    return 0;
  if (family == 4)
    return a[0] == 127;
  static const uint8_t one[16] = {0, 0, 0, 0, 0, 0, 0, 0,
                                  0, 0, 0, 0, 0, 0, 0, 1};
  return memcmp(a, one, 16) == 0;
}

void wstun__ip_count_key(const char *ip, char *out, size_t n) {
  int family;
  uint8_t a[16];
  if (n == 0)
    return;
  out[0] = '\0';
  if (ip == NULL)
    return;
  if (parse_ip(ip, strlen(ip), &family, a) != 0) {
    snprintf(out, n, "%s", ip);
    return;
  }
  if (family == 4) {
    if (uv_inet_ntop(AF_INET, a, out, n) != 0)
      snprintf(out, n, "%s", ip);
    return;
  }
  if (wstun__ip_is_loopback(ip)) {
    snprintf(out, n, "::1");
    return;
  }
  memset(a + 8, 0, 8);
  char text[64];
  if (uv_inet_ntop(AF_INET6, a, text, sizeof(text)) != 0)
    snprintf(text, sizeof(text), "%s", ip);
  snprintf(out, n, "%s/64", text);
}

int wstun__ip_valid(const char *ip) {
  int family;
  uint8_t a[16];
  return ip != NULL && parse_ip(ip, strlen(ip), &family, a) == 0;
}

int wstun_address_list_check(const char *list) {
  wstun__cidr_list l;
  int rc = wstun__cidr_list_parse(list, &l);
  wstun__cidr_list_free(&l);
  return rc == WSTUN_EINVAL ? WSTUN_ECIDR : rc;
}
