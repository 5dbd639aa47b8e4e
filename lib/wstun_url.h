/* URL parsing for the few URL shapes wstun meets: the tunnel URL
 * (ws[s]://[user:pass@]host[:port][/base]) and backend URLs
 * (http[s]://host[:port][/...]). */
#ifndef WSTUN_URL_H
#define WSTUN_URL_H

#include <stddef.h>

typedef struct wstun__url {
  char *scheme;   /* lower case: "ws", "wss", "http", "https" */
  char *userinfo; /* "user:pass" percent-decoded, or NULL */
  char *host;     /* without brackets for IPv6 literals */
  int port;       /* explicit or the scheme's default */
  int port_given; /* 1 when the URL named a port */
  char *path;     /* "" or "/..." (query included), as written */
} wstun__url;

/* 0, or WSTUN_EURL for anything else than scheme://authority[/path] with a
 * known scheme and a valid port; WSTUN_ENOMEM. On error *url is zeroed. */
int wstun__url_parse(const char *s, wstun__url *url);
void wstun__url_free(wstun__url *url);
/* 1 for wss/https. */
int wstun__url_is_tls(const wstun__url *url);
/* The Host header for url: "host", "[v6]", with ":port" only when the URL
 * named a port other than its scheme's default. */
void wstun__url_host_header(const wstun__url *u, char *out, size_t n);

#endif
