/* HTTP CONNECT proxies for the tunnel connection: which proxy the
 * environment names (as curl reads it) and the CONNECT request. */
#ifndef WSTUN_PROXY_H
#define WSTUN_PROXY_H

#include "wstun_buf.h"

/* The proxy for a connection to `host` over `scheme` ("ws"/"wss"), from
 * https_proxy/HTTPS_PROXY (wss) or http_proxy/HTTP_PROXY (ws), else
 * all_proxy/ALL_PROXY; NULL when none is set or no_proxy/NO_PROXY
 * exempts `host`. Lower case wins, as in curl. */
const char *wstun__proxy_from_env(const char *scheme, const char *host);

/* 1 when a no_proxy list ("localhost,.example.com,10.1.2.3", "*" for
 * everything) exempts `host`: an entry matches the host itself and, for
 * names, every subdomain. Case-insensitive; spaces around entries and a
 * leading dot are ignored. */
int wstun__no_proxy_match(const char *list, const char *host);

/* "CONNECT host:port HTTP/1.1" with Host and, if `auth` is set
 * ("Basic ..."), Proxy-Authorization. 0 or WSTUN_ENOMEM. */
int wstun__proxy_connect_request(wstun__buf *out, const char *host, int port,
                                 const char *auth);

#endif
