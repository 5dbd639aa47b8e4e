/* URL parser: strict about the parts wstun relies on (scheme, host, port),
 * since X-Host values come from the network and decide where the client
 * connects; and the Host header a URL gives (tunnel handshake, backend
 * requests). */
#include "wstun_url.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "wstun/wstun.h"
#include "wstun_alloc.h"

static int default_port(const char *scheme) {
  if (strcmp(scheme, "http") == 0 || strcmp(scheme, "ws") == 0)
    return 80;
  if (strcmp(scheme, "https") == 0 || strcmp(scheme, "wss") == 0)
    return 443;
  return -1;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  c = tolower(c);
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1;
}

/* Percent-decodes in place; -1 on a bad escape. */
static int pct_decode(char *s) {
  char *w = s;
  for (char *r = s; *r; r++) {
    if (*r == '%') {
      int h = hexval((unsigned char)r[1]),
          l = h < 0 ? -1 : hexval((unsigned char)r[2]);
      if (h < 0 || l < 0)
        return -1;
      *w++ = (char)(h * 16 + l);
      r += 2;
    } else {
      *w++ = *r;
    }
  }
  *w = '\0';
  return 0;
}

void wstun__url_free(wstun__url *url) {
  wstun__free(url->scheme);
  wstun__free(url->userinfo);
  wstun__free(url->host);
  wstun__free(url->path);
  memset(url, 0, sizeof(*url));
}

int wstun__url_is_tls(const wstun__url *url) {
  return strcmp(url->scheme, "https") == 0 || strcmp(url->scheme, "wss") == 0;
}

static int valid_host_char(int c) {
  return isalnum(c) || c == '-' || c == '.' || c == '_';
}

int wstun__url_parse(const char *s, wstun__url *url) {
  memset(url, 0, sizeof(*url));
  if (s == NULL)
    return WSTUN_EURL;
  const char *colon = strstr(s, "://");
  if (colon == NULL || colon == s)
    return WSTUN_EURL;
  url->scheme = wstun__strndup(s, (size_t)(colon - s));
  if (url->scheme == NULL)
    goto nomem;
  for (char *p = url->scheme; *p; p++)
    *p = (char)tolower((unsigned char)*p);
  int dport = default_port(url->scheme);
  if (dport < 0)
    goto bad;

  const char *auth = colon + 3;
  size_t auth_len = strcspn(auth, "/?#");
  const char *rest = auth + auth_len;
  /* userinfo ends at the LAST '@' of the authority, as browsers do */
  const char *at = NULL;
  for (const char *p = auth; p < rest; p++)
    if (*p == '@')
      at = p;
  const char *hp = auth;
  if (at != NULL) {
    url->userinfo = wstun__strndup(auth, (size_t)(at - auth));
    if (url->userinfo == NULL)
      goto nomem;
    if (pct_decode(url->userinfo) != 0)
      goto bad;
    hp = at + 1;
  }
  const char *host_end;
  const char *port_str = NULL;
  if (*hp == '[') {
    const char *rb = memchr(hp, ']', (size_t)(rest - hp));
    if (rb == NULL)
      goto bad;
    url->host = wstun__strndup(hp + 1, (size_t)(rb - hp - 1));
    host_end = rb + 1;
    if (host_end < rest) {
      if (*host_end != ':')
        goto bad;
      port_str = host_end + 1;
    }
    for (const char *p = url->host ? url->host : ""; *p; p++)
      if (!isxdigit((unsigned char)*p) && *p != ':' && *p != '.')
        goto bad;
  } else {
    const char *pc = memchr(hp, ':', (size_t)(rest - hp));
    host_end = pc ? pc : rest;
    url->host = wstun__strndup(hp, (size_t)(host_end - hp));
    if (pc)
      port_str = pc + 1;
    for (const char *p = url->host ? url->host : ""; *p; p++)
      if (!valid_host_char((unsigned char)*p))
        goto bad;
  }
  if (url->host == NULL)
    goto nomem;
  if (url->host[0] == '\0')
    goto bad;
  url->port = dport;
  if (port_str != NULL) {
    long port = 0;
    if (port_str == rest)
      goto bad;
    for (const char *p = port_str; p < rest; p++) {
      if (!isdigit((unsigned char)*p))
        goto bad;
      port = port * 10 + (*p - '0');
      if (port > 65535)
        goto bad;
    }
    if (port == 0)
      goto bad;
    url->port = (int)port;
    url->port_given = 1;
  }
  if (*rest == '#')
    rest += strlen(rest);
  url->path = wstun__strndup(rest, strcspn(rest, "#"));
  if (url->path == NULL)
    goto nomem;
  return 0;
nomem:
  wstun__url_free(url);
  return WSTUN_ENOMEM;
bad:
  wstun__url_free(url);
  return WSTUN_EURL;
}

void wstun__url_host_header(const wstun__url *u, char *out, size_t n) {
  int v6 = strchr(u->host, ':') != NULL;
  if (u->port_given && u->port != (wstun__url_is_tls(u) ? 443 : 80))
    snprintf(out, n, "%s%s%s:%d", v6 ? "[" : "", u->host, v6 ? "]" : "",
             u->port);
  else
    snprintf(out, n, "%s%s%s", v6 ? "[" : "", u->host, v6 ? "]" : "");
}
