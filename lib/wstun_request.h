/* One tunneled request on the client side, from the first byte of its
 * tunnel message to the last byte of its response: the object, its one
 * reference count, and the response message it sends back.
 *
 * Who holds a reference:
 *   - the incoming message, until it ends (wstun__request_msg_ended);
 *   - the response owed, until it is sent or given up
 *     (wstun__request_resp_done);
 *   - an in-process handler, from its call until it answers or cancels;
 *   - any function up the stack that must not see it freed under it
 *     (wstun__request_ref / _unref pairs).
 * When the tunnel goes away (wstun__request_end_exchange) the first two
 * are dropped at once. At zero the owner's on_release unlinks it and lets
 * go of its backend connection; then it is freed here.
 *
 * This module calls nobody above it: routing (client) and backends
 * (upstream) hang their state on the object and are told through the
 * callback table handed to wstun__request_new. */
#ifndef WSTUN_REQUEST_H
#define WSTUN_REQUEST_H

#include <stdint.h>

#include "wstun/wstun.h"
#include "wstun_buf.h"
#include "wstun_http.h"
#include "wstun_list.h"
#include "wstun_log.h"
#include "wstun_tunnel.h"

typedef struct wstun__upstream wstun__upstream;

typedef enum {
  WSTUN__CR_HEAD = 0, /* request head not complete yet */
  WSTUN__CR_FORWARD,  /* going to a backend */
  WSTUN__CR_HANDLER,  /* collected for the in-process handler */
  WSTUN__CR_ANSWERED  /* answered locally (403, 400 …); rest discarded */
} wstun__cr_state;

typedef struct wstun__request_cbs {
  /* The last reference went: unlink req and let go of what hangs on it
   * (its backend connection). req is freed right after this returns. */
  void (*on_release)(wstun_request *req);
} wstun__request_cbs;

/* Also the public wstun_request. */
struct wstun_request {
  void *owner; /* the client that routes it */
  const wstun__request_cbs *cbs;
  const wstun__logger *log;
  wstun__tunnel *t; /* NULL once the tunnel died */
  wstun__list link; /* in the owner's list */
  unsigned refs;
  unsigned rx_ref : 1, tx_ref : 1, handler_ref : 1;
  uint32_t id; /* v1: the message's 16-bit id; v2: the stream */
  wstun__cr_state state;
  /* v2: message bytes given to us and not yet given back (their credit
   * returns once they are written to the backend: a slow backend stalls
   * only its own stream) */
  uint64_t unconsumed;
  wstun__http_parser parser;
  int method;
  int req_chunked, req_complete, msg_ended;
  /* v2: an upgrade request (its Upgrade kept for the backend), and once
   * the backend answered 101, a two-way byte pipe (PROTOCOL.md 7.6) */
  int upgrade, piping;
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
  /* the access line (wstun__request_note_head, _note_answer) */
  int head_noted;
  uint64_t start_ns;     /* uv_hrtime() at the head */
  char *log_target;      /* as it came through the tunnel */
  char *log_remote;      /* X-Forwarded-For's last entry, or NULL */
  char token_prefix[12]; /* the client's token, cut */
  int resp_status;       /* 0 until an answer is made */
  uint64_t resp_bytes;   /* its body bytes */
  uint64_t pipe_out;     /* a pipe's bytes to the backend */
};

/* A request for message `id` on t, holding the message's and the
 * response's references. The owner initialises req->parser. NULL when out
 * of memory. */
wstun_request *wstun__request_new(wstun__tunnel *t, uint32_t id,
                                  const wstun__logger *log,
                                  const wstun__request_cbs *cbs, void *owner);
void wstun__request_ref(wstun_request *req);
/* May free req. */
void wstun__request_unref(wstun_request *req);
/* The incoming message ended: its reference goes. May free req. */
void wstun__request_msg_ended(wstun_request *req);
/* The response is sent or given up: its reference goes. May free req. */
void wstun__request_resp_done(wstun_request *req);
/* The tunnel is gone for req (died, or the message was cut): both
 * exchange references go. May free req. */
void wstun__request_end_exchange(wstun_request *req);
/* Answers with a short text (403, 502 …) unless a response started. */
void wstun__request_answer(wstun_request *req, int status, const char *text);
/* v2: the message bytes held so far are done with (written on, or
 * dropped): their credit goes back to the server. No-op on v1. */
void wstun__request_consume(wstun_request *req);
/* v2: the response head is the first n bytes of m (sent as its HEAD
 * frame); marks it as the first "\r\n\r\n" of m's buffer when n is 0.
 * v1 ignores it. */
void wstun__request_mark_head(wstun__outmsg *m, size_t n);
/* v2: the server reset the stream (the requester went away, or a
 * timeout): nothing more goes to the backend or back on the tunnel. The
 * caller lets go of the backend first. May free req. */
void wstun__request_reset(wstun_request *req);

/* The access log. The head came (call before it is rewritten): the
 * request gets its line when it is freed; `token` is the client's. */
void wstun__request_note_head(wstun_request *req, const wstun__http_head *h,
                              const char *token);
/* An answer is under way: its status and the body bytes so far (more
 * are added to req->resp_bytes as they go). */
void wstun__request_note_answer(wstun_request *req, int status, uint64_t bytes);

/* The response message's callbacks (owner: the request). A producer that
 * streams may use its own table with these two and its own on_drain. */
void wstun__request_resp_sent(void *owner, wstun__outmsg *m);
void wstun__request_resp_failed(void *owner, wstun__outmsg *m, int restartable);
extern const wstun__outmsg_cbs wstun__request_resp_cbs;

#endif
