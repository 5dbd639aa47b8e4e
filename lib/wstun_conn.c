/* The one place that does socket I/O: a uv_tcp_t per wstun__conn, read
 * into the buffer its server or client shares and handed to the owner's
 * on_data, with what the owner leaves kept aside (pending) until resume;
 * output gathered in `out` and written from the shared check handle, at
 * once when the kernel takes it (uv_try_write), else by one uv_write at a
 * time, with the high-water/on_drain back-pressure; the
 * TLS records (wstun_tls) in between once started; connect, orderly end,
 * close and reset, and address resolution. wstun_conn.h says which calls
 * may fire which callbacks. */
#include "wstun_conn.h"

#include <stdio.h>
#include <string.h>

#include "wstun/wstun.h"
#include "wstun_alloc.h"

#define CONN(h) ((wstun__conn *)(h)->data)

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  wstun__conn *c = CONN(h);
  (void)suggested;
  /* The shared buffer is free here: every read is consumed (or copied
   * aside) before its callback returns. */
  buf->base = (char *)c->shared->buf;
  buf->len = sizeof(c->shared->buf);
}

static void stop_reading(wstun__conn *c) {
  if (c->reading) {
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
  }
}

/* No more input will be delivered: the peer ended (UV_EOF) or the stream
 * broke, either way. Every on_end goes through here, so that "reading has
 * stopped" holds for all of them: a conn that kept reading after on_end
 * would, once bytes it could not keep were dropped, hand the owner a
 * stream with a hole in it. */
static void input_ended(wstun__conn *c, int err) {
  stop_reading(c);
  c->ended = 1;
  c->cbs->on_end(c, err);
}

/* Hands bytes to the owner; keeps what it leaves. */
static void deliver(wstun__conn *c, const uint8_t *data, size_t len,
                    int from_pending) {
  c->in_data = 1;
  c->keep_tail = 0;
  size_t used = c->cbs->on_data(c, data, len);
  c->in_data = 0;
  if (c->keep_tail) {
    /* the owner handed the tail back (see wstun__conn_keep_tail) */
    used = len - c->keep_tail;
    c->keep_tail = 0;
  }
  if (c->closing)
    return;
  if (used < len) {
    if (from_pending) {
      wstun__buf_consume(&c->pending, used);
    } else if (wstun__buf_append(&c->pending, data + used, len - used) != 0) {
      input_ended(c, UV_ENOMEM);
      return;
    }
    wstun__conn_pause(c);
  } else if (from_pending) {
    wstun__buf_reset(&c->pending);
  }
}

static void tls_input(wstun__conn *c, const uint8_t *data, size_t len);

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  wstun__conn *c = CONN(s);
  (void)buf;
  if (nread == 0 || c->closing)
    return;
  if (nread < 0) {
    int err = (int)nread;
    if (err == UV_EOF && c->tls && c->tls->handshake_done) {
      /* a TLS stream ends with close_notify (seen in tls_pump); a bare
       * FIN could be an attacker cutting a body that ends with the
       * connection */
      c->tls->failed = 1;
      snprintf(c->tls->why, sizeof(c->tls->why),
               "connection closed without close_notify (possibly truncated)");
      err = WSTUN_ETLS;
    }
    input_ended(c, err);
    return;
  }
  c->shared->bytes_in += (uint64_t)nread;
  if (c->tls)
    tls_input(c, c->shared->buf, (size_t)nread);
  else
    deliver(c, c->shared->buf, (size_t)nread, 0);
}

wstun__conn *wstun__conn_new(uv_loop_t *loop, wstun__conn_shared *sh,
                             const wstun__conn_cbs *cbs, void *owner) {
  wstun__conn *c = wstun__calloc(1, sizeof(*c));
  if (c == NULL)
    return NULL;
  if (uv_tcp_init(loop, &c->tcp) != 0) {
    wstun__free(c);
    return NULL;
  }
  c->tcp.data = c;
  c->shared = sh;
  c->cbs = cbs;
  c->owner = owner;
  c->high_water = 256 * 1024;
  c->open = 1;
  return c;
}

void wstun__conn_set_owner(wstun__conn *c, const wstun__conn_cbs *cbs,
                           void *owner) {
  c->cbs = cbs;
  c->owner = owner;
}

int wstun__conn_start_read(wstun__conn *c) {
  if (c->closing || c->reading || c->ended)
    return 0;
  int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  if (rc == 0)
    c->reading = 1;
  return rc;
}

int wstun__conn_accept(wstun__conn *c, uv_stream_t *server) {
  int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
  if (rc != 0)
    return rc;
  int len = sizeof(c->peer);
  uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &len);
  uv_tcp_nodelay(&c->tcp, 1);
  return wstun__conn_start_read(c);
}

static void on_connected(uv_connect_t *req, int status) {
  wstun__conn *c = CONN(req);
  c->connecting = 0;
  if (c->closing)
    return;
  if (status == 0)
    uv_tcp_nodelay(&c->tcp, 1);
  c->cbs->on_connect(c, status);
  /* write_more skipped the connecting conn and the flusher forgot it:
   * what was written (or ended) meanwhile goes out now, not at the next
   * write. After on_connect, so that a TLS it starts covers those bytes
   * and no on_end can come before it. */
  if (status == 0)
    wstun__conn_flush(c);
}

int wstun__conn_connect(wstun__conn *c, const struct sockaddr *addr) {
  size_t alen = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                            : sizeof(struct sockaddr_in);
  memcpy(&c->peer, addr, alen);
  c->connect_req.data = c;
  int rc = uv_tcp_connect(&c->connect_req, &c->tcp, addr, on_connected);
  if (rc == 0)
    c->connecting = 1;
  return rc;
}

void wstun__conn_pause(wstun__conn *c) {
  c->paused = 1;
  stop_reading(c);
}

static void tls_pump(wstun__conn *c);

void wstun__conn_resume(wstun__conn *c) {
  if (c->closing || !c->paused || c->in_data)
    return;
  c->paused = 0;
  if (wstun__buf_size(&c->pending) > 0) {
    deliver(c, wstun__buf_data(&c->pending), wstun__buf_size(&c->pending), 1);
    if (c->paused || c->closing)
      return;
  }
  if (c->tls) {
    tls_pump(c); /* records that arrived while paused */
    if (c->paused || c->closing || c->ended)
      return;
  }
  if (c->ended) {
    c->cbs->on_end(c, UV_EOF);
    return;
  }
  wstun__conn_start_read(c);
}

static void on_closed(uv_handle_t *h) {
  wstun__conn *c = CONN(h);
  wstun__buf_free(&c->out);
  wstun__buf_free(&c->inflight);
  wstun__buf_free(&c->pending);
  c->open = 0;
  if (c->cbs->on_close)
    c->cbs->on_close(c); /* may still read c->tls (why it failed) */
  wstun__tls_free(c->tls);
  wstun__free(c);
}

static void undirty(wstun__conn *c) {
  if (!c->dirty)
    return;
  wstun__conn **pp = &c->shared->dirty;
  while (*pp && *pp != c)
    pp = &(*pp)->dirty_next;
  if (*pp)
    *pp = c->dirty_next;
  c->dirty = 0;
  c->dirty_next = NULL;
}

void wstun__conn_close(wstun__conn *c) {
  if (c->closing)
    return;
  undirty(c);
  c->closing = 1;
  c->reading = 0;
  uv_close((uv_handle_t *)&c->tcp, on_closed);
}

void wstun__conn_abort(wstun__conn *c) {
  if (c->closing)
    return;
  undirty(c);
  c->closing = 1;
  c->reading = 0;
  if (uv_tcp_close_reset(&c->tcp, on_closed) != 0)
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  wstun__conn_close(CONN(req));
}

static void write_more(wstun__conn *c);

static void on_written(uv_write_t *req, int status) {
  wstun__conn *c = CONN(req);
  c->writing = 0;
  if (status == 0)
    c->written += wstun__buf_size(&c->inflight);
  wstun__buf_reset(&c->inflight);
  if (c->closing)
    return;
  if (status < 0) {
    input_ended(c, status);
    return;
  }
  write_more(c);
  if (c->closing)
    return;
  if (c->above_high && wstun__conn_queued(c) < c->high_water / 2) {
    c->above_high = 0;
    if (c->cbs->on_drain)
      c->cbs->on_drain(c);
  }
}

/* With TLS, what goes on the wire is the ciphertext buffer: `out` is
 * encrypted into it once the handshake is done. */
static wstun__buf *wire_buffer(wstun__conn *c) {
  wstun__tls *t = c->tls;
  if (t == NULL)
    return &c->out;
  if (t->handshake_done && wstun__buf_size(&c->out) > 0) {
    if (wstun__tls_write(t, wstun__buf_data(&c->out),
                         wstun__buf_size(&c->out)) != 0)
      return NULL;
    wstun__buf_reset(&c->out);
  }
  if (c->close_after_write && wstun__buf_size(&c->out) == 0)
    wstun__tls_close_notify(t);
  return &t->cout;
}

static void write_more(wstun__conn *c) {
  if (c->writing || c->closing || c->connecting)
    return;
again:;
  wstun__buf *src = wire_buffer(c);
  if (src == NULL) {
    input_ended(c, WSTUN_ETLS);
    return;
  }
  if (wstun__buf_size(src) == 0) {
    if (c->close_after_write) {
      if (c->tls && !c->tls->handshake_done) {
        wstun__conn_close(c); /* nothing can be said before the handshake */
        return;
      }
      c->shutdown_req.data = c;
      if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) !=
          0)
        wstun__conn_close(c);
    }
    return;
  }
  /* swap: `src` keeps collecting while `inflight` is written */
  wstun__buf tmp = c->inflight;
  c->inflight = *src;
  *src = tmp;
  uv_buf_t b = uv_buf_init((char *)wstun__buf_data(&c->inflight),
                           (unsigned)wstun__buf_size(&c->inflight));
  c->write_req.data = c;
  c->shared->bytes_out += b.len;
  /* Try the write at once: when the kernel takes it all (the usual case
   * for request-sized writes) nothing is queued, and libuv does not re-arm
   * the socket's epoll registration, one syscall in four on a small
   * request's hop. Not while above the high-water mark: on_drain must
   * come from the loop, after a queued write completes. */
  if (!c->above_high) {
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)b.len) {
      c->written += b.len;
      wstun__buf_reset(&c->inflight);
      goto again; /* more to end with: close_after_write */
    }
    if (n < 0 && n != UV_EAGAIN) {
      wstun__buf_reset(&c->inflight);
      input_ended(c, n);
      return;
    }
    if (n > 0) { /* the rest is queued; on_written counts the whole */
      b.base += n;
      b.len -= (unsigned)n;
    }
  }
  int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
  if (rc != 0) {
    wstun__buf_reset(&c->inflight);
    input_ended(c, rc);
    return;
  }
  c->writing = 1;
}

int wstun__conn_write(wstun__conn *c, const void *data, size_t n) {
  if (c->closing)
    return WSTUN_ECLOSED;
  if (wstun__buf_append(&c->out, data, n) != 0)
    return WSTUN_ENOMEM;
  wstun__conn_flush(c);
  return 0;
}

static void on_flush(uv_check_t *check) {
  wstun__conn_shared *sh = check->data;
  while (sh->dirty) {
    wstun__conn *c = sh->dirty;
    sh->dirty = c->dirty_next;
    c->dirty = 0;
    c->dirty_next = NULL;
    write_more(c);
  }
  uv_check_stop(check);
  uv_idle_stop(&sh->nudge);
}

static void on_nudge(uv_idle_t *idle) {
  /* nothing to do: being active makes the loop poll without blocking, so
   * a flush requested from a timer (or any non-I/O callback) runs in this
   * iteration's check phase instead of after the next event */
  (void)idle;
}

void wstun__conn_flush(wstun__conn *c) {
  if (c->dirty || c->closing)
    return;
  if (c->shared->closed) {
    write_more(c);
    return;
  }
  c->dirty = 1;
  c->dirty_next = c->shared->dirty;
  c->shared->dirty = c;
  uv_check_start(&c->shared->flusher, on_flush);
  uv_idle_start(&c->shared->nudge, on_nudge);
}

void wstun__conn_flush_now(wstun__conn *c) {
  undirty(c);
  write_more(c);
}

void wstun__conn_shared_init(wstun__conn_shared *sh, uv_loop_t *loop) {
  uv_check_init(loop, &sh->flusher);
  sh->flusher.data = sh;
  uv_idle_init(loop, &sh->nudge);
  sh->nudge.data = sh;
  sh->dirty = NULL;
  sh->closed = 0;
}

void wstun__conn_shared_close(wstun__conn_shared *sh, uv_close_cb cb,
                              void *data) {
  uv_check_stop(&sh->flusher);
  uv_idle_stop(&sh->nudge);
  sh->closed = 1;
  sh->flusher.data = data;
  /* libuv finishes closes in reverse order of uv_close(): closing the
   * check handle first makes its `cb` (which may free *sh) run last */
  uv_close((uv_handle_t *)&sh->flusher, cb);
  uv_close((uv_handle_t *)&sh->nudge, NULL);
}

uint64_t wstun__conn_progress(const wstun__conn *c) {
  uint64_t p = c->written;
  if (c->writing) {
    size_t left = uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
    size_t n = wstun__buf_size(&c->inflight);
    p += left < n ? n - left : 0;
  }
  return p;
}

int wstun__conn_congested(wstun__conn *c) {
  if (wstun__conn_queued(c) > c->high_water) {
    c->above_high = 1;
    return 1;
  }
  return 0;
}

void wstun__conn_end(wstun__conn *c) {
  if (c->closing)
    return;
  c->close_after_write = 1;
  stop_reading(c);
  c->paused = 1;
  wstun__conn_flush(c);
}

const char *wstun__conn_peer_ip(const wstun__conn *c, char *out, size_t n) {
  out[0] = '\0';
  if (c->peer.ss_family == AF_INET)
    uv_ip4_name((const struct sockaddr_in *)&c->peer, out, n);
  else if (c->peer.ss_family == AF_INET6)
    uv_ip6_name((const struct sockaddr_in6 *)&c->peer, out, n);
  return out;
}

const char *wstun__conn_peer(const wstun__conn *c, char *out, size_t n) {
  char ip[64];
  int port = 0;
  wstun__conn_peer_ip(c, ip, sizeof(ip));
  if (c->peer.ss_family == AF_INET)
    port = ntohs(((const struct sockaddr_in *)&c->peer)->sin_port);
  else if (c->peer.ss_family == AF_INET6)
    port = ntohs(((const struct sockaddr_in6 *)&c->peer)->sin6_port);
  snprintf(out, n, c->peer.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", ip,
           port);
  return out;
}

int wstun__resolve(uv_loop_t *loop, const char *host, int port,
                   struct sockaddr_storage *ss, uv_getaddrinfo_t *req,
                   uv_getaddrinfo_cb cb) {
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0 ||
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0)
    return 1;
  char service[16];
  snprintf(service, sizeof(service), "%d", port);
  struct addrinfo hints;
  memset(&hints, 0, sizeof(hints));
  hints.ai_socktype = SOCK_STREAM;
  return uv_getaddrinfo(loop, req, cb, host, service, &hints);
}

/* ---- TLS ---------------------------------------------------------------- */

/* Most plaintext one TLS record carries (mbedTLS's default maximum). */
#define TLS_RECORD_MAX 16384

static void tls_failed(wstun__conn *c, int err) {
  if (c->tls->handshake_done || c->cbs->on_secure == NULL) {
    input_ended(c, err);
    return;
  }
  stop_reading(c);
  c->ended = 1;
  c->cbs->on_secure(c, err);
}

/* Runs the handshake, then decrypts and delivers records until the owner
 * pauses or the ciphertext runs out. Plaintext goes through a buffer on
 * the stack: a shared one could be overwritten by a nested pump of
 * another connection resumed from inside on_data. */
static void tls_pump(wstun__conn *c) {
  wstun__tls *t = c->tls;
  if (!t->handshake_done) {
    int rc = wstun__tls_handshake(t);
    /* handshake messages; once done, also writes queued meanwhile */
    if (rc == WSTUN__TLS_DONE || wstun__buf_size(&t->cout) > 0)
      wstun__conn_flush(c);
    /* after wstun__conn_shared_close() a flush writes at once, and a
     * failed write may have ended the conn (on_end) or closed it: the
     * owner has its answer, and on_secure must not contradict it */
    if (c->closing || c->ended)
      return;
    if (rc == WSTUN__TLS_AGAIN)
      return;
    if (rc < 0) {
      tls_failed(c, rc);
      return;
    }
    if (c->cbs->on_secure) {
      c->cbs->on_secure(c, 0);
      if (c->closing)
        return;
    }
  }
  uint8_t plain[TLS_RECORD_MAX];
  while (!c->paused && !c->closing) {
    size_t before = wstun__buf_size(&t->cin) + t->rx_len;
    int n = wstun__tls_read(t, plain, sizeof(plain));
    if (n > 0) {
      deliver(c, plain, (size_t)n, 0);
      continue;
    }
    if (wstun__buf_size(&t->cout) > 0)
      wstun__conn_flush(c); /* an alert, say */
    if (c->closing)
      return; /* as above */
    if (n == WSTUN__TLS_AGAIN) {
      /* mbedTLS also says "again" after a record that carried no data
       * (an empty record, a warning alert, a refused renegotiation):
       * go on while it is still taking ciphertext */
      size_t left = wstun__buf_size(&t->cin) + t->rx_len;
      if (left > 0 && left < before)
        continue;
      return;
    }
    if (n == WSTUN_ECLOSED)
      input_ended(c, UV_EOF);
    else
      tls_failed(c, n);
    return;
  }
}

/* A server port that speaks TLS got something else, most likely plain
 * HTTP: say so in plain text rather than with a TLS alert nobody reads. */
static int plain_http_on_tls_port(wstun__conn *c, const uint8_t *data) {
  static const char answer[] = "HTTP/1.1 400 Bad Request\r\n"
                               "Content-Type: text/plain; charset=utf-8\r\n"
                               "Content-Length: 45\r\nConnection: close\r\n\r\n"
                               "This port speaks TLS: use https:// or wss://\n";
  wstun__tls *t = c->tls;
  /* a TLS connection opens with a handshake record (content type 22) */
  if (!t->cfg->is_server || t->started || data[0] == 22)
    return 0;
  t->failed = 1;
  snprintf(t->why, sizeof(t->why), "plain text on a TLS port");
  wstun__buf_append(&t->cout, answer, sizeof(answer) - 1);
  wstun__conn_pause(c);
  c->close_after_write = 1;
  wstun__conn_flush(c);
  return 1;
}

static void tls_input(wstun__conn *c, const uint8_t *data, size_t len) {
  wstun__tls *t = c->tls;
  if (plain_http_on_tls_port(c, data))
    return;
  t->started = 1;
  t->rx = data;
  t->rx_len = len;
  tls_pump(c);
  /* what the owner did not let us decrypt yet waits in `cin` */
  int nomem = t->rx_len > 0 && !c->closing &&
              wstun__buf_append(&t->cin, t->rx, t->rx_len) != 0;
  t->rx = NULL;
  t->rx_len = 0;
  if (nomem)
    input_ended(c, UV_ENOMEM);
}

static int start_tls(wstun__conn *c, wstun__tls_config *cfg, const char *host,
                     const char *session_key) {
  c->tls = wstun__tls_new(cfg, host);
  if (c->tls == NULL)
    return WSTUN_ENOMEM;
  int rc = session_key ? wstun__tls_resume_as(c->tls, session_key) : 0;
  if (rc != 0) {
    wstun__tls_free(c->tls);
    c->tls = NULL;
    return rc;
  }
  if (!cfg->is_server) {
    c->tls->started = 1;
    tls_pump(c); /* the ClientHello */
    if (!c->closing)
      wstun__conn_start_read(c);
  }
  return 0;
}

int wstun__conn_start_tls(wstun__conn *c, wstun__tls_config *cfg,
                          const char *host) {
  return start_tls(c, cfg, host, NULL);
}

int wstun__conn_start_tls_resume(wstun__conn *c, wstun__tls_config *cfg,
                                 const char *host, const char *session_key) {
  if (cfg->is_server)
    return WSTUN_EINVAL;
  return start_tls(c, cfg, host, session_key);
}

const char *wstun__conn_strerror(const wstun__conn *c, int err) {
  if (err == WSTUN_ETLS && c->tls && c->tls->failed)
    return c->tls->why;
  return wstun_strerror(err); /* wstun's and libuv's codes never overlap */
}
