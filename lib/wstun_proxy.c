/* HTTP CONNECT proxies: the proxy the environment names for a tunnel URL
 * (https_proxy, http_proxy, all_proxy and no_proxy, read as curl reads
 * them) and the CONNECT request. Pure apart from getenv(): no I/O. */
#include "wstun_proxy.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "wstun_util.h"

static const char *env(const char *lower, const char *upper) {
  const char *v = getenv(lower);
  if (v == NULL || *v == '\0')
    v = getenv(upper);
  return v && *v ? v : NULL;
}

int wstun__no_proxy_match(const char *list, const char *host) {
  if (list == NULL || host == NULL)
    return 0;
  size_t hlen = strlen(host);
  const char *cursor = list, *p;
  size_t len;
  while (wstun__list_next(&cursor, &p, &len)) {
    if (len == 1 && p[0] == '*')
      return 1;
    if (p[0] == '.') {
      p++;
      len--;
    }
    if (len == 0 || len > hlen)
      continue;
    /* the host itself, or a subdomain: "example.com" covers
     * "www.example.com" but not "badexample.com" */
    if (strncasecmp(host + hlen - len, p, len) == 0 &&
        (len == hlen || host[hlen - len - 1] == '.'))
      return 1;
  }
  return 0;
}

const char *wstun__proxy_from_env(const char *scheme, const char *host) {
  const char *proxy = strcmp(scheme, "wss") == 0
                          ? env("https_proxy", "HTTPS_PROXY")
                          : env("http_proxy", "HTTP_PROXY");
  if (proxy == NULL)
    proxy = env("all_proxy", "ALL_PROXY");
  if (proxy == NULL || wstun__no_proxy_match(env("no_proxy", "NO_PROXY"), host))
    return NULL;
  return proxy;
}

int wstun__proxy_connect_request(wstun__buf *out, const char *host, int port,
                                 const char *auth) {
  int v6 = strchr(host, ':') != NULL;
  int rc = wstun__buf_appendf(out,
                              "CONNECT %s%s%s:%d HTTP/1.1\r\n"
                              "Host: %s%s%s:%d\r\n",
                              v6 ? "[" : "", host, v6 ? "]" : "", port,
                              v6 ? "[" : "", host, v6 ? "]" : "", port);
  if (auth)
    rc |= wstun__buf_appendf(out, "Proxy-Authorization: %s\r\n", auth);
  rc |= wstun__buf_append_str(out, "\r\n");
  return rc;
}
