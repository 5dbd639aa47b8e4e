/* Front connections: the HTTP connections of requesters (wstun_front.c).
 * Each one carries its exchange (wstun_exchange.h) for the request it is
 * answering. */
#ifndef WSTUN_FRONT_H
#define WSTUN_FRONT_H

#include "wstun_closer.h"
#include "wstun_exchange.h"
#include "wstun_server_int.h"

/* Re-entrancy. A front's callbacks call into code that may call back
 * (an answer ends the request, which parses the next one; a failed write
 * closes the connection; the exchange fails inside its registry's call).
 * What guards that, in one place:
 *  - f->closing: the teardown began (wstun__front_close). Everything after
 *    is a no-op; the memory goes once the closer counts the timers and the
 *    connection closed (front_freed), never inside a callback.
 *  - f->phase: whose turn it is. Input is parsed only while IDLE or inside
 *    the request being read; ANSWERED means front_next() is owed, which
 *    the parser loop (front_on_data) or the answer's writer calls once.
 *  - ex->cancelled (wstun_exchange.h): the exchange's requester is gone;
 *    late calls from the registry, the tunnel or a timer do nothing.
 *  - f->upgrade, f->discarding: what the parser's pause at the end of this
 *    head or body means (hand the socket to a tunnel / parse the next
 *    request), read in front_on_data and req_on_complete.
 *  - f->piping: an upgrade's 101 went out (PROTOCOL.md 7.6): the parser is
 *    done with this connection; its bytes go raw to the exchange, its EOF
 *    ends one direction, and the end of the exchange closes it.
 * The registry holds no pointer to a front: it calls the exchange through
 * its reg_entry table, which the exchange's release unlinks first. */

/* Where a front connection is between requests. */
typedef enum {
  WSTUN__FRONT_IDLE = 0, /* reading (or waiting for) a request head */
  WSTUN__FRONT_BUSY,     /* its exchange is in flight */
  WSTUN__FRONT_ANSWERED  /* answered: the next request waits for front_next */
} wstun__front_phase;

struct wstun__front {
  wstun_server *srv;
  wstun__ipcount *ip; /* this connection's entry, while it counts */
  wstun__conn *conn;
  wstun__list link;          /* in srv->fronts */
  uv_timer_t timer;          /* TLS handshake, request head, idle */
  wstun__http_parser parser; /* requests */
  wstun__closer closer;      /* the timers and the conn, once closing */
  int closing;
  wstun__front_phase phase;
  int close_after;  /* close once the current response is written */
  int upgrade;      /* the request is a /_tunnel upgrade */
  int discarding;   /* reading and dropping the body of an answered request */
  int head_req;     /* the request being answered is a HEAD: answers bodiless */
  int resp_chunked; /* re-encoding the response body as chunked */
  int piping;       /* after an upgrade's 101: bytes pass raw both ways */
  /* the access log: a request head was read and its line is owed; it
   * named a token (ex.token_prefix: a tunneled request, a tunnel's
   * handshake); what was answered so far; who asked */
  int req_open, req_token;
  int resp_status;
  uint64_t resp_bytes;
  uint64_t pipe_in; /* a pipe's bytes from the requester */
  char req_peer[64];
  wstun__exchange ex;
};

void wstun__front_accept(wstun_server *srv);
/* A front connection on a connection handle not accepted yet (what
 * wstun__front_accept does first; the fuzz targets feed it bytes by
 * calling its conn's on_data, without a socket). */
wstun__front *wstun__front_new(wstun_server *srv);
void wstun__front_close(wstun__front *f);
/* Answers the request with a short text and finishes it (through its
 * exchange when one is in flight). */
void wstun__front_fail(wstun__front *f, int status, const char *text);
/* 1 while a request is being read or answered. */
int wstun__front_busy(const wstun__front *f);

#endif
