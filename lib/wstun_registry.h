/* The server's registry: tokens and the tunnel connections serving them,
 * the exchanges waiting for a tunnel (per token) or in flight on one (per
 * tunnel), request ids, the connection caps per peer address, and the
 * tokens' passwords.
 *
 * An exchange is known here only as a wstun__reg_entry embedded in it,
 * with a table of callbacks: the registry calls up through that table
 * (a response arrives, its tunnel died, it must be answered now) and never
 * knows the exchange's type. The data structures are in wstun_server_int.h
 * (they live in wstun_server), so admin can render them. */
#ifndef WSTUN_REGISTRY_H
#define WSTUN_REGISTRY_H

#include "wstun_server_int.h"
#include "wstun_v2.h"

typedef struct wstun__reg_entry_cbs {
  /* Put on a tunnel with id e->id: returns the message to send. */
  wstun__outmsg *(*on_send)(wstun__reg_entry *e);
  /* A response message for e begins: nonzero takes it, 0 drops it. */
  int (*on_msg_begin)(wstun__reg_entry *e);
  /* Its bytes; nonzero drops the rest. */
  int (*on_msg_data)(wstun__reg_entry *e, const uint8_t *d, size_t n);
  /* It ended (complete = 0: the tunnel died mid-message). */
  void (*on_msg_end)(wstun__reg_entry *e, int complete);
  /* Its tunnel died: e is off it already (e->tun is NULL). */
  void (*on_tunnel_lost)(wstun__reg_entry *e);
  /* The registry gives up on e (queue full, token forgotten, shutdown):
   * answer status/text. e is off every list already. */
  void (*on_fail)(wstun__reg_entry *e, int status, const char *text);
  /* v2: the tunnel client reset e's stream with `code` (enum
   * wstun__v2_code; REFUSED: it was not processed and may go again). e is
   * off its tunnel already; the stream's message, if the tunnel still
   * had it, comes back through its on_failed right after this returns,
   * and a response being received ends through on_msg_end(0). */
  void (*on_reset)(wstun__reg_entry *e, uint32_t code);
} wstun__reg_entry_cbs;

/* Streams in flight at once on one v2 tunnel (see takes_more in
 * wstun_registry.c for why this many); more wait in the token's queue. */
#define WSTUN__REG_V2_STREAMS 256

/* ---- tokens ---- */
wstun__token *wstun__registry_find_token(wstun_server *srv, const char *name,
                                         size_t len);
/* The token, added with no tunnel when unknown, so that a request can
 * wait for its tunnel (srv->tunnel_wait_ms: a node of a cluster). NULL
 * when out of memory. Forgotten like any token without a client. */
wstun__token *wstun__registry_expect_token(wstun_server *srv, const char *name,
                                           size_t len);
/* An exchange holds the token it points at, from wstun__exchange_start
 * until it ends: the sweep frees no held token. A token that never had a
 * tunnel (made by _expect_token) is swept as soon as nothing holds it, so
 * requests for made-up tokens cannot pile tokens up. */
void wstun__registry_token_hold(wstun__token *t);
void wstun__registry_token_drop(wstun__token *t);
/* Exchanges queued for the token or in flight on its tunnels. */
size_t wstun__token_pending(const wstun__token *t);
/* The tunnel listed first for the token (the latest), or NULL. */
wstun__srv_tunnel *wstun__token_first_tunnel(const wstun__token *t);

/* ---- exchanges ---- */
/* Routes e (e->tok set, its message ready): onto a live tunnel (through
 * on_send), into the token's queue (returns 1), or fails it (on_fail 504
 * when the queue is full). */
int wstun__registry_dispatch(wstun_server *srv, wstun__reg_entry *e);
/* Takes e off its queue or tunnel (resuming the tunnel if e paused it).
 * On a v2 tunnel its stream ends: RESET with `code` (enum wstun__v2_code)
 * unless the stream is over both ways, and the message the tunnel holds
 * for it is freed (the exchange abandons it first). */
void wstun__registry_unlink(wstun__reg_entry *e, uint32_t code);
/* v2: e's requester took n more bytes of the response (head included):
 * their credit goes back to the tunnel client. No-op on v1. */
void wstun__registry_consumed(wstun__reg_entry *e, size_t n);
/* 1 when e is on a v2 tunnel now. */
int wstun__registry_is_v2(const wstun__reg_entry *e);
/* e's requester cannot keep up: pauses e's tunnel's input. Returns 1 when
 * e newly holds it paused, 0 if it did already or has no live tunnel. */
int wstun__registry_pause_rx(wstun__reg_entry *e);
/* Lets go of the pause; 1 when e held one and its tunnel is live. */
int wstun__registry_resume_rx(wstun__reg_entry *e);
/* The producer of e's message added bytes or finished. */
void wstun__registry_kick(wstun__reg_entry *e);
/* Calls cb for every exchange in flight on the token's tunnels. */
void wstun__registry_foreach_inflight(const wstun__token *t,
                                      void (*cb)(wstun__reg_entry *e, void *ud),
                                      void *ud);

/* ---- tunnels ---- */
/* NULL when the token has no password or the Basic credentials in
 * `header` (may be NULL) are right, else the Go server's 401 text. */
const char *wstun__registry_check_auth(wstun_server *srv, const char *token,
                                       const char *header);
/* The accepted handshake of a tunnel client: writes the 101 on conn and
 * hands conn (with its address count `ip`) over to a new tunnel of the
 * token. 0, or WSTUN_ENOMEM (the caller still owns conn and ip). */
int wstun__registry_add_tunnel(wstun_server *srv, const char *token,
                               const char *peer, wstun__http_head *h,
                               wstun__conn *conn, wstun__ipcount *ip,
                               const uint8_t *rest, size_t n);

/* After the passwords changed: closes every live tunnel whose handshake
 * credentials the token's new password would refuse (its exchanges in
 * flight are answered as for any lost tunnel). Returns how many. */
size_t wstun__registry_recheck_auth(wstun_server *srv);

/* ---- connection caps ---- */
/* Counts a new connection from `ip` (by its /64 for IPv6); NULL when a cap
 * is reached or memory ran out, and then *why says which. */
wstun__ipcount *wstun__registry_conn_admit(wstun_server *srv, const char *ip,
                                           const char **why);
void wstun__registry_conn_release(wstun_server *srv, wstun__ipcount *slot);

/* ---- lifecycle ---- */
/* "tok:pw,tok2:pw2" replaces the passwords in use, all or nothing; 0,
 * WSTUN_EPASSWORDS or WSTUN_ENOMEM (the list in use is kept). */
int wstun__registry_parse_passwords(wstun_server *srv, const char *s);
/* Forgets tokens without a client for forget_ms (their queue gets 404). */
void wstun__registry_sweep(wstun_server *srv);
/* A graceful stop begins: every v2 tunnel gets GOAWAY (PROTOCOL.md 7.7).
 * Its streams go on to their end; its client dials its next tunnel (to
 * another node behind a balancer, or to this server once restarted) and
 * closes this one when its requests are done. No new stream goes to it. */
void wstun__registry_goaway(wstun_server *srv);
/* Shutting down: every queued exchange gets 503, every tunnel closes. */
void wstun__registry_shutdown(wstun_server *srv);
/* Frees tokens and passwords (nothing may be queued or in flight). */
void wstun__registry_free(wstun_server *srv);

#endif
