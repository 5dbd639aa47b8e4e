/* Private structures of the tunnel client, shared by wstun_client.c (dial,
 * handshake, reconnect, routing of tunneled requests, in-process handler)
 * and wstun_upstream.c (keep-alive connections to HTTP backends). */
#ifndef WSTUN_CLIENT_INT_H
#define WSTUN_CLIENT_INT_H

#include <regex.h>
#include <uv.h>

#include "wstun/wstun.h"
#include "wstun_conn.h"
#include "wstun_http.h"
#include "wstun_log.h"
#include "wstun_rng.h"
#include "wstun_tunnel.h"
#include "wstun_url.h"

typedef struct wstun__upstream wstun__upstream;

typedef enum {
  WSTUN__CR_HEAD = 0, /* request head not complete yet */
  WSTUN__CR_FORWARD,  /* going to a backend */
  WSTUN__CR_HANDLER,  /* collected for the in-process handler */
  WSTUN__CR_ANSWERED  /* answered locally (403, 400 …); rest discarded */
} wstun__cr_state;

/* One tunneled request on the client. Also the public wstun_request. */
struct wstun_request {
  wstun_client *cli;
  wstun__tunnel *t; /* NULL once the tunnel died */
  struct wstun_request *prev, *next;
  uint16_t id;
  wstun__cr_state state;
  wstun__http_parser parser;
  int method;
  int req_chunked, req_complete, msg_ended;
  uint64_t msg_extra; /* message bytes after its request (dropped) */
  int paused_tunnel;
  /* backend side */
  char *backend_key; /* "http://host:port" */
  char *backend_host;
  int backend_port;
  wstun__upstream *up;
  wstun__buf to_backend; /* bytes waiting for the backend connection */
  wstun__buf replay;     /* copy of what was sent, for one retry on a stale
                            keep-alive connection (dropped when large) */
  int replay_ok, retried;
  /* response side */
  wstun__outmsg *resp;
  int resp_handed; /* resp given to the tunnel */
  int resp_chunked;
  int resp_started;
  /* in-process handler */
  wstun__buf body;
  char *method_str;
  int handler_called;
  int handler_holds; /* handed to the handler, not yet answered */
  int busy;          /* callers up the stack still use it: do not free */
};

struct wstun_client {
  uv_loop_t *loop;
  wstun__logger log;
  wstun__rng rng;
  wstun__conn_shared shared;
  wstun__url tunnel_url;
  char *handshake_path;
  char *token, *password;
  char *auth_header, *tunnel_auth_header;
  char *client_version;
  uint16_t (*ports)[2]; /* -client-ports ranges, inclusive */
  size_t nports;
  wstun__url server_url;
  int has_server;
  /* TLS and proxy */
  wstun__tls_config *tunnel_tls;  /* wss:// (NULL for ws://) */
  wstun__tls_config *backend_tls; /* https:// backends, made on first use */
  char *ca_file;
  int insecure_backends;
  wstun__url proxy_url;
  int has_proxy;
  char *proxy_auth; /* "Basic ..." or NULL */
  regex_t re;
  int has_re;
  uint64_t timeout_ms, backend_timeout_ms, reconnect_max_ms;
  uint64_t stall_ms; /* give up a backend that holds the tunnel this long */
  uint64_t backend_idle_ms; /* idle keep-alive backend connections */
  size_t max_idle, max_handler_body;
  wstun_handler_cb handler;
  void *handler_ud;
  wstun_client_state_cb state_cb;
  wstun_client_pong_cb pong_cb;
  void *state_ud;
  wstun_client_state state;
  /* dialing */
  uv_timer_t timer; /* reconnect backoff and handshake deadline */
  uv_getaddrinfo_t gai;
  int resolving;
  wstun__conn *dial;
  enum { DIAL_TCP, DIAL_PROXY, DIAL_TLS, DIAL_WS } dial_phase;
  wstun__http_parser hs; /* the proxy's answer, then the handshake's */
  int hs_init, hs_done;
  char ws_key[32];
  unsigned attempt;
  uint64_t connected_at;   /* ms, last successful handshake */
  uint64_t grace_deadline; /* ms, graceful close */
  int last_err;
  /* connected */
  wstun__tunnel *t;
  wstun_request *reqs;
  /* backends */
  wstun__upstream *idle; /* keep-alive pool */
  size_t nidle;
  wstun__upstream *ups; /* every upstream connection */
  /* closing */
  int closing, closed_now, released;
  size_t live; /* handles and objects the close waits for */
  wstun_client_close_cb close_cb;
  void *close_ud;
};

/* wstun_upstream.c */
/* Starts forwarding req (head already in req->to_backend) to its backend. */
void wstun__upstream_start(wstun_request *req);
/* More request bytes were appended to req->to_backend (or it completed). */
void wstun__upstream_push(wstun_request *req);
/* The request goes away (tunnel died, request aborted): close its backend
 * connection if any. */
void wstun__upstream_detach(wstun_request *req);
/* Closes every backend connection (client stopping). */
void wstun__upstream_close_all(wstun_client *cli);

/* wstun_client.c */
/* Parses a -client-ports list into inclusive ranges (*out owned by the
 * caller). 0, WSTUN_EPORTS or WSTUN_ENOMEM. */
int wstun__parse_ports(const char *s, uint16_t (**out)[2], size_t *n);
/* The TLS configuration for https:// backends (made on first use), or
 * NULL with the reason in `why`. */
wstun__tls_config *wstun__client_backend_tls(wstun_client *cli, char *why,
                                             size_t n);
/* Answers a tunneled request with a short text (403, 502 …). */
void wstun__client_answer(wstun_request *req, int status, const char *text);
/* The response for req is complete or failed: forget the request. */
void wstun__client_req_done(wstun_request *req);
void wstun__client_release(wstun_client *cli);

extern const wstun__outmsg_cbs wstun__resp_msg_cbs;

#endif
