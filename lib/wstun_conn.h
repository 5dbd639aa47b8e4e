/* A connected byte stream over a uv_tcp_t: the one place that does socket
 * I/O. Reads land in a buffer shared by every connection of a server or
 * client (a read is consumed before the next one starts, so one buffer
 * serves them all); only bytes the consumer could not take yet are copied
 * aside. Writes are appended to an output buffer and sent once per loop
 * iteration (at once when the kernel takes them all, else by at most one
 * uv_write at a time), so many small writes coalesce into few syscalls. */
#ifndef WSTUN_CONN_H
#define WSTUN_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "wstun_buf.h"
#include "wstun_tls.h"

#define WSTUN__READ_BUF_SIZE (64 * 1024)

typedef struct wstun__conn wstun__conn;

/* Re-entrancy. `c` stays valid until its on_close returns, whatever a
 * callback calls. Besides the loop, the calls that may fire a callback of
 * the same conn before they return are: wstun__conn_resume (on_data, and
 * on_end or on_secure), wstun__conn_start_tls (on_secure or on_end: the
 * handshake failed at once), wstun__conn_flush_now (on_end: the write
 * failed) and, once wstun__conn_shared_close() ran, every call that
 * flushes (write, flush, end, start_tls), as it then writes at once
 * (on_end). No other call does; on_drain, on_connect and on_close come
 * only from the loop. After wstun__conn_close/_abort, nothing but
 * on_close fires. Every callback but on_close may write, pause, end,
 * close or abort `c`, hand it to a new owner, and work on other conns; an
 * owner that frees itself in one must first close `c` (its on_close then
 * must not touch the owner) or hand it over. */
typedef struct wstun__conn_cbs {
  /* Bytes arrived: from the loop, or bytes kept while paused from inside
   * wstun__conn_resume(). Return how many were consumed; fewer than `len`
   * pauses reading until wstun__conn_resume(). `data` lives for the call
   * only. Never nested: resuming this conn in here does nothing (return
   * less, or keep the tail, and resume from outside). Closing in here
   * drops what was not consumed. */
  size_t (*on_data)(wstun__conn *c, const uint8_t *data, size_t len);
  /* The peer closed (UV_EOF) or the stream failed (negative uv error,
   * WSTUN_ETLS, UV_ENOMEM when unconsumed bytes could not be kept).
   * Reading has stopped: only bytes kept already can still reach on_data,
   * through resume. The owner normally closes; one that does not may see
   * on_end again (resume reports an ended input anew, a write can fail
   * later). Writing and wstun__conn_end() are fine here (half close). */
  void (*on_end)(wstun__conn *c, int err);
  /* Queued output fell below half the high-water mark after
   * wstun__conn_congested() reported it above: once per such episode,
   * from the loop (a write completed), never from inside a write. */
  void (*on_drain)(wstun__conn *c);
  /* Outbound connect finished (status 0 or negative uv error): once,
   * from the loop; not when wstun__conn_connect() failed, nor after a
   * close. What was written or ended meanwhile goes out after it. */
  void (*on_connect)(wstun__conn *c, int status);
  /* The handle is closed; `c` is freed right after this returns. From the
   * loop, once, last: after close/abort, after the shutdown that
   * wstun__conn_end() leads to, or after the 400 sent for plain HTTP on
   * a TLS port. Reading `c` (wstun__conn_strerror, the peer) is all that
   * is left to do with it; the owner may free itself here. */
  void (*on_close)(wstun__conn *c);
  /* TLS handshake finished (either side): 0, or WSTUN_ETLS (the reason
   * from wstun__conn_strerror) or another WSTUN_E* code. Without it, a
   * failed handshake goes to on_end. */
  void (*on_secure)(wstun__conn *c, int status);
} wstun__conn_cbs;

/* What the connections of one server or client share: the read buffer,
 * and a check handle that writes out everything the connections queued
 * during one loop iteration, so that many small writes (one per tunnel
 * message, per response) become one syscall per connection. */
typedef struct wstun__conn_shared {
  uint8_t buf[WSTUN__READ_BUF_SIZE];
  uv_check_t flusher;
  uv_idle_t nudge;    /* keeps poll from blocking while a flush is due */
  wstun__conn *dirty; /* connections with output to write */
  int closed;
  uint64_t bytes_in, bytes_out; /* all connections, for metrics */
} wstun__conn_shared;

void wstun__conn_shared_init(wstun__conn_shared *sh, uv_loop_t *loop);
/* Closes the flusher handle; `cb` gets it (its data is `data`). */
void wstun__conn_shared_close(wstun__conn_shared *sh, uv_close_cb cb,
                              void *data);

struct wstun__conn {
  uv_tcp_t tcp;
  uv_write_t write_req;
  uv_connect_t connect_req;
  uv_shutdown_t shutdown_req;
  wstun__conn_shared *shared;
  const wstun__conn_cbs *cbs;
  void *owner;
  wstun__buf out;      /* waiting to be written */
  wstun__buf inflight; /* being written by write_req */
  wstun__buf pending;  /* read but not yet consumed */
  size_t high_water;
  uint64_t written; /* bytes of completed writes (wstun__conn_progress) */
  unsigned reading : 1, paused : 1, writing : 1, closing : 1, ended : 1,
      above_high : 1, close_after_write : 1, open : 1, connecting : 1,
      in_data : 1, dirty : 1;
  wstun__conn *dirty_next;
  size_t keep_tail; /* see wstun__conn_keep_tail */
  wstun__tls *tls;  /* NULL for plain TCP */
  struct sockaddr_storage peer;
};

/* A new connection handle on `loop`, freed after its on_close. NULL when
 * out of memory or when the handle cannot be made. */
wstun__conn *wstun__conn_new(uv_loop_t *loop, wstun__conn_shared *sh,
                             const wstun__conn_cbs *cbs, void *owner);
/* Hands the connection to another owner (a front connection becoming a
 * tunnel). */
void wstun__conn_set_owner(wstun__conn *c, const wstun__conn_cbs *cbs,
                           void *owner);
/* Accepts a pending connection of `server` into c and starts reading. */
int wstun__conn_accept(wstun__conn *c, uv_stream_t *server);
/* Connects to addr; cbs->on_connect fires (unless this fails at once).
 * Writes may be queued before it does. */
int wstun__conn_connect(wstun__conn *c, const struct sockaddr *addr);
int wstun__conn_start_read(wstun__conn *c);
/* From now on the connection speaks TLS with `cfg` (referenced for the
 * connection's life). Server side (`host` NULL), right after accept: the
 * handshake runs as bytes arrive; data reaches on_data only once it is
 * done, and a failure ends in on_end(WSTUN_ETLS); plain HTTP is answered
 * with a short 400 and the connection closed (on_close only). Client side, once
 * connected (directly or through a proxy): `host` is sent as SNI and checked
 * against the certificate; the handshake starts now and on_secure reports how
 * it ended. Queued writes wait for the handshake. 0 or WSTUN_ENOMEM. */
int wstun__conn_start_tls(wstun__conn *c, wstun__tls_config *cfg,
                          const char *host);
/* The client side of wstun__conn_start_tls, offering the session last made
 * under `session_key` with cfg and keeping the new one under it
 * (wstun__tls_resume_as: the key names the server dialed and the name
 * checked). c->tls->resumed tells in on_secure whether it resumed.
 * 0, WSTUN_ENOMEM or WSTUN_EINVAL (nothing started). */
int wstun__conn_start_tls_resume(wstun__conn *c, wstun__tls_config *cfg,
                                 const char *host, const char *session_key);
/* Words for an error passed to on_end/on_connect/on_secure: the TLS
 * reason for WSTUN_ETLS, else libuv's or wstun's text. */
const char *wstun__conn_strerror(const wstun__conn *c, int err);

/* Where to connect to host:port. An IP literal is filled into *ss at once
 * (returns 1); a name starts uv_getaddrinfo on `req` with `cb` (returns 0);
 * a negative uv error when the lookup cannot start. */
int wstun__resolve(uv_loop_t *loop, const char *host, int port,
                   struct sockaddr_storage *ss, uv_getaddrinfo_t *req,
                   uv_getaddrinfo_cb cb);
/* From inside on_data only: the last `n` bytes of what this on_data was
 * given are not consumed after all, whatever on_data returns; they are
 * delivered again after wstun__conn_resume(), possibly to a new owner (a
 * connection upgraded to a tunnel hands over what followed the
 * handshake). */
static inline void wstun__conn_keep_tail(wstun__conn *c, size_t n) {
  c->keep_tail = n;
}
/* Stops delivering data (pending bytes are kept). */
void wstun__conn_pause(wstun__conn *c);
/* Delivers kept bytes, then reads again. */
void wstun__conn_resume(wstun__conn *c);

/* Queues bytes, written at the end of this loop iteration (or once
 * connected). Errors only for memory (WSTUN_ENOMEM) or a closing conn. */
int wstun__conn_write(wstun__conn *c, const void *data, size_t n);
/* The output buffer, for serializers that append directly; call
 * wstun__conn_flush() after. */
static inline wstun__buf *wstun__conn_outbuf(wstun__conn *c) {
  return &c->out;
}
void wstun__conn_flush(wstun__conn *c);
/* Starts writing now (before a close, say). */
void wstun__conn_flush_now(wstun__conn *c);
/* Bytes queued but not yet handed to the kernel. */
static inline size_t wstun__conn_queued(const wstun__conn *c) {
  return wstun__buf_size(&c->out) + wstun__buf_size(&c->inflight) +
         (c->tls ? wstun__buf_size(&c->tls->cout) : 0);
}
/* Bytes the kernel took so far, counting the written part of a write in
 * progress: a stalled peer is one for which this stops growing. */
uint64_t wstun__conn_progress(const wstun__conn *c);
/* 1 when queued output is above the high-water mark: the producer should
 * wait for on_drain. */
int wstun__conn_congested(wstun__conn *c);
/* Close once everything queued has been written. */
void wstun__conn_end(wstun__conn *c);
/* Close now with a TCP reset, so the peer sees an error rather than an
 * orderly end. on_close fires later. */
void wstun__conn_abort(wstun__conn *c);
/* Close now; on_close fires later. Safe to call twice. */
void wstun__conn_close(wstun__conn *c);
/* "ip:port" of the peer (as accepted or connected) into out. */
const char *wstun__conn_peer(const wstun__conn *c, char *out, size_t n);
/* Only the IP part of the peer into out. */
const char *wstun__conn_peer_ip(const wstun__conn *c, char *out, size_t n);

#endif
