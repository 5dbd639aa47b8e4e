/* The tunnel client's dialer: from a tunnel URL to a connected, upgraded
 * WebSocket connection. It resolves the server's (or the proxy's) name,
 * connects (from a -client-ports source port if asked), opens an HTTP
 * CONNECT tunnel through the proxy, starts TLS for wss://, sends the
 * WebSocket handshake with the token, and checks the answer, all within
 * one dial timeout; a failed attempt is logged and redialed after an
 * exponential backoff with jitter. The connection is handed to its owner
 * through the callback table; the dialer knows nothing of requests.
 *
 * The answer parsing (wstun__dialer_expect / wstun__dialer_feed) and the
 * backoff schedule (wstun__dialer_backoff) are pure: a test drives them
 * without sockets. */
#ifndef WSTUN_DIALER_H
#define WSTUN_DIALER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "wstun/wstun.h"
#include "wstun_closer.h"
#include "wstun_conn.h"
#include "wstun_http.h"
#include "wstun_log.h"
#include "wstun_rng.h"
#include "wstun_tls.h"
#include "wstun_url.h"

/* The first retry comes after 100..200 ms; each later one doubles the
 * range up to reconnect_max_ms. */
#define WSTUN__DIAL_FIRST_RETRY_MS 200
/* A tunnel that lived this long earns a quick reconnect. */
#define WSTUN__DIAL_STABLE_MS 10000

typedef enum {
  WSTUN__DIAL_IDLE = 0,   /* not dialing: before the first dial, or stopped */
  WSTUN__DIAL_BACKOFF,    /* waiting to redial */
  WSTUN__DIAL_RESOLVING,  /* the server's (or proxy's) name */
  WSTUN__DIAL_CONNECTING, /* TCP */
  WSTUN__DIAL_PROXY,      /* CONNECT sent; reading the proxy's answer */
  WSTUN__DIAL_TLS,        /* the TLS handshake (wss://) */
  WSTUN__DIAL_HANDSHAKE,  /* upgrade request sent; reading the answer */
  WSTUN__DIAL_CONNECTED   /* handed to the owner, until it reports a drop */
} wstun__dial_state;

/* What to dial with; owned by the dialer (wstun__dialer_config_free). */
/* Bytes of a refusal's body kept for the log ("Invalid token or
 * password"): a short text, not a page. */
#define WSTUN__DIAL_WHY_BODY 160

typedef struct wstun__dialer_config {
  wstun__url tunnel_url;
  char *handshake_path; /* base path + "/_tunnel" */
  char *token;
  char *password;           /* the token's, or NULL (zeroed when freed) */
  char *auth_header;        /* "Basic ..." or NULL */
  char *tunnel_auth_header; /* X-Tunnel-Authorization, or NULL */
  char *client_version;
  uint16_t (*ports)[2]; /* -client-ports ranges, inclusive */
  size_t nports;
  wstun__tls_config *tls; /* wss:// (NULL for ws://) */
  wstun__url proxy_url;
  int has_proxy;
  char *proxy_auth;          /* "Basic ..." or NULL */
  uint64_t timeout_ms;       /* one whole attempt */
  uint64_t reconnect_max_ms; /* backoff cap */
  int offer_v2;              /* offer wstun.v2 (PROTOCOL.md 7.1) */
} wstun__dialer_config;

typedef struct wstun__dialer_cbs {
  /* CONNECTING when an attempt starts, DISCONNECTED (err) when it failed,
   * CONNECTED once the owner took the connection. */
  void (*on_state)(void *owner, wstun_client_state s, int err);
  /* The handshake succeeded: take conn (upgraded; `leftover` are bytes
   * after the handshake) and return 0, or an error and leave it. */
  int (*on_upgraded)(void *owner, wstun__conn *conn, const uint8_t *leftover,
                     size_t n);
  /* After wstun__dialer_close: every handle is closed. */
  void (*on_closed)(void *owner);
} wstun__dialer_cbs;

typedef struct wstun__dialer {
  wstun__dialer_config cfg;
  uv_loop_t *loop;
  wstun__conn_shared *shared;
  wstun__rng *rng;
  const wstun__logger *log;
  const wstun__dialer_cbs *cbs;
  void *owner;
  wstun__dial_state state;
  uv_timer_t timer; /* backoff, then the attempt's deadline */
  uv_getaddrinfo_t gai;
  int resolving;
  wstun__conn *conn;     /* the attempt's connection */
  size_t conns;          /* connections of ours not yet closed (on_close) */
  wstun__http_parser hs; /* the proxy's answer, then the server's */
  int hs_init, hs_done;
  /* a server's refusal (401 …): the start of its body says why */
  int hs_body_wait, hs_body_done;
  size_t hs_body_len;
  char hs_body[WSTUN__DIAL_WHY_BODY];
  char ws_key[32];
  int v2; /* the last handshake's server chose wstun.v2 (read it in
             on_upgraded) */
  unsigned attempt;
  uint64_t connected_at; /* ms, last successful handshake */
  int stopped;           /* no more attempts */
  int closing;
  wstun__closer closer;
} wstun__dialer;

/* Filling the configuration, in this order (wstun_client_start checks
 * the rest of its own config between them, so the first error it reports
 * stays the same): */
/* The ws[s]:// tunnel URL; its path is the server's base path. 0,
 * WSTUN_EURL or WSTUN_ENOMEM. */
int wstun__dialer_config_url(wstun__dialer_config *dc, const char *tunnel_url);
/* TLS for wss:// (the system store plus ca_file, which may be NULL), and
 * the CONNECT proxy: `proxy` ("http://[user:pass@]host:port" or
 * "host:port"), else, with from_env, the environment's as curl takes it (a
 * bad one is logged and ignored). Logs what it decided. 0, WSTUN_ETLS,
 * WSTUN_EURL or WSTUN_ENOMEM. */
int wstun__dialer_config_transport(wstun__dialer_config *dc,
                                   const char *ca_file, const char *proxy,
                                   int from_env, const wstun__logger *log);
/* The handshake's credentials: Origin: token; Authorization: Basic of
 * token:password, or of the URL's user:password without a password (which
 * then goes in X-Tunnel-Authorization); X-Client-Version. 0 or
 * WSTUN_ENOMEM. */
int wstun__dialer_config_auth(wstun__dialer_config *dc, const char *token,
                              const char *password, const char *client_version);
void wstun__dialer_config_free(wstun__dialer_config *cfg);
/* Initialises the handles (the config is filled before). */
void wstun__dialer_init(wstun__dialer *d, uv_loop_t *loop,
                        wstun__conn_shared *shared, wstun__rng *rng,
                        const wstun__logger *log, const wstun__dialer_cbs *cbs,
                        void *owner);
/* Dials now. */
void wstun__dialer_start(wstun__dialer *d);
/* The owner's tunnel dropped: redial (at once-ish if it lived long). */
void wstun__dialer_lost(wstun__dialer *d);
/* No more attempts (an attempt in flight goes on). */
void wstun__dialer_stop(wstun__dialer *d);
/* Aborts everything and closes the handles; cbs->on_closed follows. The
 * config stays until wstun__dialer_config_free. */
void wstun__dialer_close(wstun__dialer *d);

/* ---- pure pieces -------------------------------------------------------- */

/* The delay before attempt number `attempt` (0 = the first retry): full
 * jitter over the upper half of min(200 ms * 2^attempt, max_ms); `r` is a
 * random number. */
uint64_t wstun__dialer_backoff(unsigned attempt, uint64_t max_ms, uint32_t r);

/* Begins reading the answer of a phase (WSTUN__DIAL_PROXY or
 * WSTUN__DIAL_HANDSHAKE). 0 or WSTUN_ENOMEM. */
int wstun__dialer_expect(wstun__dialer *d, wstun__dial_state phase);
/* Feeds the answer's bytes. 0: more are needed (all consumed); 1: the
 * answer is good (*used bytes were the answer's; for the handshake the
 * rest belongs to the tunnel); a WSTUN_E* code: the attempt fails, `why`
 * says why. Bytes after a proxy's answer are an error (the server speaks
 * only after us). */
int wstun__dialer_feed(wstun__dialer *d, const uint8_t *data, size_t len,
                       size_t *used, char *why, size_t whyn);
/* Drops the answer parser (after a good answer, or a failure). */
void wstun__dialer_answer_done(wstun__dialer *d);

/* "8000..8100,8300" → inclusive ranges (*out owned by the caller). 0,
 * WSTUN_EPORTS or WSTUN_ENOMEM. */
int wstun__parse_ports(const char *s, uint16_t (**out)[2], size_t *n);

#endif
