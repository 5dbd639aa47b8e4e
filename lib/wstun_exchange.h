/* One requester's request in flight on the server: its token, id and
 * tries, its deadline, the tunnel message carrying the request (with a
 * copy for a replay), the parser of the response coming back, and the
 * state machine between them (wstun__ex_state).
 *
 * The exchange does no I/O of its own on the requester's side: it talks
 * to its requester (the front connection) through wstun__exchange_cbs,
 * and to tokens and tunnels through the registry (wstun_registry.h),
 * which calls it back through its reg_entry. It is embedded in its front
 * connection and serves that connection's requests one after the other:
 * wstun__exchange_reset at each request head, wstun__exchange_start for
 * the ones that go down a tunnel. */
#ifndef WSTUN_EXCHANGE_H
#define WSTUN_EXCHANGE_H

#include "wstun_closer.h"
#include "wstun_server_int.h"

typedef struct wstun__exchange wstun__exchange;

typedef enum {
  WSTUN__EX_NONE = 0,   /* no request in flight */
  WSTUN__EX_READING,    /* request body still arriving, not dispatched */
  WSTUN__EX_QUEUED,     /* waiting in its token's queue for a tunnel */
  WSTUN__EX_SENDING,    /* handed to a tunnel, not fully written */
  WSTUN__EX_WAITING,    /* written; waiting for the response */
  WSTUN__EX_RESPONDING, /* response head relayed, body streaming */
  WSTUN__EX_DONE
} wstun__ex_state;

/* How an exchange ended, for its requester. */
typedef enum {
  WSTUN__EX_ANSWERED = 0, /* the response was relayed whole */
  WSTUN__EX_FAILED,       /* answer status/text (status 0: nothing to add) */
  WSTUN__EX_FAILED_CLOSE, /* the same, and the connection ends after it */
  WSTUN__EX_ABORTED       /* the head is out: only a cut can tell */
} wstun__ex_end;

typedef struct wstun__exchange_cbs {
  /* The final response head: frame it for the requester and write it.
   * A 101 (ex->piping set) ends HTTP on the connection: the requester's
   * bytes go to wstun__exchange_body raw from now on, and on_body
   * brings the backend's, raw as well, until on_done.
   * no_body: the response has none (HEAD, 204, 304); close_delimited:
   * its body ends with the connection (an HTTP/1.0 requester and no
   * Content-Length). 0, or nonzero when it cannot be written. */
  int (*on_head)(wstun__exchange *ex, wstun__http_head *h, int no_body,
                 int close_delimited);
  /* Response body bytes: 0, 1 when the requester's output is congested
   * (the exchange then holds its tunnel), negative on error. */
  int (*on_body)(wstun__exchange *ex, const uint8_t *d, size_t n);
  /* The response is complete: write what ends it. */
  void (*on_end)(wstun__exchange *ex);
  /* The exchange is over (see wstun__ex_end); it holds nothing now. */
  void (*on_done)(wstun__exchange *ex, wstun__ex_end how, int status,
                  const char *text);
  /* The request message has room again: read the requester on. */
  void (*on_drain)(wstun__exchange *ex);
  /* How many bytes the requester took so far (its output's progress). */
  uint64_t (*progress)(wstun__exchange *ex);
} wstun__exchange_cbs;

struct wstun__exchange {
  wstun_server *srv;
  const wstun__exchange_cbs *cbs;
  wstun__reg_entry reg; /* token, tunnel, id: in the registry's lists */
  wstun__ex_state state;
  uv_timer_t timer; /* the deadline, or a stall watch */
  int cancelled;    /* its requester is gone: nothing more happens */
  int tries;
  int method;
  /* the request head (the front's parser's; its target is the forwarded
   * one once started), valid while the request is being answered */
  const wstun__http_head *head;
  int req_chunked;         /* re-encoding the request body as chunked */
  wstun__outmsg *req;      /* the tunnel message being produced */
  wstun__http_parser resp; /* the response from the tunnel */
  int resp_init, resp_done;
  int resp_close;      /* response delimited by closing the connection */
  uint64_t resp_extra; /* message bytes after its response (dropped) */
  /* A copy of the request message, kept only for small requests with a
   * safe method (GET, HEAD, OPTIONS, TRACE): if their tunnel dies before a
   * byte of the response came back, they are sent again (as reverse
   * proxies retry idempotent requests) instead of answered 502. */
  wstun__buf replay;
  /* while the exchange holds its tunnel (reg.paused) or streams its
   * request: the progress when last seen growing */
  uint64_t stall_mark, stall_since;
  uint64_t start_ms;
  int has_id; /* reg.id was given (the request went onto a tunnel) */
  /* a node of a cluster (srv->tunnel_wait_ms): until this uv_now ms the
   * request may wait for its token's tunnel, then 404; 0 = no such wait */
  uint64_t tunnel_wait_end;
  /* an upgrade request (set by the front before exchange_start): its
   * head goes at once and its message stays open; after a 101 (piping)
   * the stream is a two-way byte pipe (PROTOCOL.md 7.6) */
  int upgrade, piping;
  /* v2 */
  uint32_t req_head_len; /* the request head's bytes in its message */
  uint32_t end_code;     /* the RESET code for our end (0: by outcome) */
  uint32_t reset_code;   /* the client's RESET, while reset_pending */
  int reset_pending;     /* ... waiting for the message to come back */
  int resp_hold;         /* the requester's output is congested */
  /* while resp_hold: the requester's progress when last seen growing */
  uint64_t hold_mark, hold_since;
  uint64_t unconsumed; /* response bytes not yet given back */
  uint64_t moved;      /* bytes either way: the idle-stream watch */
  char token_prefix[12];
  char peer[64]; /* the requester's address, for /admin and accounting */
};

/* What /admin/auditing shows of an exchange in flight. */
typedef struct wstun__exchange_info {
  uint32_t id;
  const char *method, *uri, *remote_addr;
  uint64_t start_ms;
} wstun__exchange_info;

/* Once per front connection. */
void wstun__exchange_init(wstun__exchange *ex, wstun_server *srv,
                          const wstun__exchange_cbs *cbs);
/* A request head arrived: the record is reset for it (its clock starts). */
void wstun__exchange_reset(wstun__exchange *ex, const wstun__http_head *h);
/* The request goes down the tunnel of token tok: builds its message from
 * h (target rewritten, hop-by-hop headers dropped, X-Forwarded-For
 * extended with peer_ip) and starts the deadline. 0 when under way (and
 * *expect says whether the requester waits for a 100 Continue), else the
 * status of an answer to give instead, with *text (404: unknown token,
 * 503: out of memory). With srv->tunnel_wait_ms, a token with no tunnel
 * here (an unknown one is added) gets that long for one to arrive before
 * the request is answered 404. */
int wstun__exchange_start(wstun__exchange *ex, wstun__http_head *h,
                          const char *tok, size_t toklen, const char *target,
                          size_t tlen, const char *peer_ip, const char *peer,
                          int *expect, const char **text);
/* Request body bytes (while piping: the requester's raw bytes): 0, 1
 * when the requester should pause (the message is full), negative when
 * out of memory. */
int wstun__exchange_body(wstun__exchange *ex, const uint8_t *d, size_t n);
/* The whole request was read. 0, or negative when out of memory. For an
 * upgrade this is its head: it is dispatched, and its message stays open
 * for the pipe. */
int wstun__exchange_body_end(wstun__exchange *ex);
/* While piping: the requester closed its side (EOF); its direction ends
 * (END) after the bytes it sent. */
void wstun__exchange_pipe_end(wstun__exchange *ex);
/* 1 while a request is in flight (started, not over). */
int wstun__exchange_active(const wstun__exchange *ex);
/* Ends the exchange now with status/text (an ABORTED end once the
 * response head is out). */
void wstun__exchange_fail(wstun__exchange *ex, int status, const char *text);
/* The tunnel carrying it died after writing the request: replayed when
 * it may be, else 502. */
void wstun__exchange_tunnel_lost(wstun__exchange *ex);
/* The requester's output drained: let go of a held tunnel. */
void wstun__exchange_drained(wstun__exchange *ex);
/* Counts and logs an answer given for this request (metrics, log). */
void wstun__exchange_log_ret(wstun__exchange *ex, int status);
/* The requester is going away: drops everything, no callback after. */
void wstun__exchange_cancel(wstun__exchange *ex);
/* Closes the timer as part of the owner's teardown. */
void wstun__exchange_close(wstun__exchange *ex, wstun__closer *closer);
/* The exchange of a registry entry, and what admin shows of it. */
wstun__exchange *wstun__exchange_of(wstun__reg_entry *e);
void wstun__exchange_info_get(const wstun__exchange *ex,
                              wstun__exchange_info *out);

#endif
