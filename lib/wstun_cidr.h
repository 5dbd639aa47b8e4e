/* Address lists ("10.0.0.0/8,::1,192.168.1.7"), for deciding which peers
 * may see the admin endpoints and whose X-Forwarded-For is believed. */
#ifndef WSTUN_CIDR_H
#define WSTUN_CIDR_H

#include <stddef.h>
#include <stdint.h>

typedef struct wstun__cidr {
  int family; /* 4 or 6 */
  uint8_t addr[16];
  int bits;
} wstun__cidr;

typedef struct wstun__cidr_list {
  wstun__cidr *items;
  size_t n;
} wstun__cidr_list;

/* Parses a comma-separated list (spaces allowed). NULL or "" is the empty
 * list. 0, WSTUN_EINVAL (bad entry) or WSTUN_ENOMEM. */
int wstun__cidr_list_parse(const char *s, wstun__cidr_list *out);
void wstun__cidr_list_free(wstun__cidr_list *l);
/* 1 when the textual IP (v4, v6, or v4-mapped v6) is in the list. */
int wstun__cidr_list_match(const wstun__cidr_list *l, const char *ip);
/* 1 when the text is an IPv4 or IPv6 address. */
int wstun__ip_valid(const char *ip);
/* 1 for 127.0.0.0/8, ::1 and their v4-mapped forms. */
int wstun__ip_is_loopback(const char *ip);
/* The key a peer is counted under for per-address caps, in out (n >= 46):
 * an IPv4 address as is (v4-mapped ones too), an IPv6 address as its /64
 * ("2001:db8:1:2::/64"), the smallest block a site gets (RFC 6177), so a
 * host cannot dodge the cap by taking new addresses from its prefix.
 * ::1 stays itself. Text that is no address is copied. */
void wstun__ip_count_key(const char *ip, char *out, size_t n);

#endif
