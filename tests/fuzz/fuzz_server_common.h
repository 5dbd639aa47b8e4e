/* The tunnel server without sockets, for the front_request and
 * server_response targets: one wstun_server made by hand (the fields
 * wstun_server_start would set; no listener), front connections made by
 * wstun__front_new on connection handles that were never opened, tokens
 * put into the registry directly, and a tunnel made by the real /_tunnel
 * upgrade (through the front's parser and the registry).
 *
 * Bytes reach a connection's owner the way wstun__conn's deliver() hands
 * them over (pause, pending bytes, keep_tail); the loop never runs while
 * an input is fed, so everything the server writes piles up in each
 * connection's output buffer, where the targets read what a requester or
 * a tunnel client would receive. At the end every front and the tunnel
 * are closed and the loop runs until their memory is gone (the first
 * write attempt on an unopened handle fails: one more error path). */
#ifndef WSTUN_FUZZ_SERVER_COMMON_H
#define WSTUN_FUZZ_SERVER_COMMON_H

#include <uv.h>

#include "fuzz_util.h"
#include "wstun_alloc.h"
#include "wstun_buf.h"
#include "wstun_http.h"
#include "wstun_proto.h"
#include "wstun_front.h"
#include "wstun_registry.h"
#include "wstun_router.h"

static uv_loop_t fzs_loop;
static wstun_server *fzs_srv;

static void fzs_log(void *ud, wstun_log_level level, const char *line) {
  (void)ud;
  (void)level;
  (void)line; /* formatted (every argument read), then dropped */
  if (getenv("FZ_LOG"))
    fprintf(stderr, "[log] %s\n", line);
}

/* The server, once per process: the rng and the connection flusher are
 * kept across inputs; everything an input adds is gone at its end. */
static void fzs_init(void) {
  if (uv_loop_init(&fzs_loop) != 0)
    abort();
  wstun_server *srv = calloc(1, sizeof(*srv));
  if (srv == NULL)
    abort();
  srv->loop = &fzs_loop;
  wstun__list_init(&srv->fronts);
  srv->log.level = WSTUN_LOG_DEBUG;
  srv->log.cb = fzs_log;
  srv->log.access = 1; /* the access line of every request, hostile or not */
  wstun__conn_shared_init(&srv->shared, &fzs_loop);
  if (wstun__rng_init(&srv->rng) != 0)
    abort();
  srv->max_queue = 20;
  srv->ws_timeout_ms = 30000;
  srv->http_timeout_ms = 1200000;
  srv->forget_ms = 3600000;
  srv->header_timeout_ms = 30000;
  srv->idle_timeout_ms = 60000; /* wstun_server_config_init's defaults */
  srv->stall_ms = 10000;
  fzs_srv = srv;
}

/* Per input: base path ("" or "/wst"), limits. */
static void fzs_begin(const char *base, size_t max_header, uint64_t max_body) {
  wstun_server *srv = fzs_srv;
  srv->base_path = wstun__strdup(base);
  if (srv->base_path == NULL)
    abort();
  srv->base_len = strlen(base);
  srv->max_header = max_header;
  srv->max_body = max_body;
  srv->buckets = wstun__calloc(1, sizeof(*srv->buckets));
  if (srv->buckets == NULL)
    abort();
  srv->nbuckets = 1; /* hash % 1: tokens go in by hand */
}

static wstun__token *fzs_add_token(const char *name) {
  wstun_server *srv = fzs_srv;
  wstun__token *t = wstun__calloc(1, sizeof(*t));
  if (t == NULL || (t->name = wstun__strdup(name)) == NULL)
    abort();
  wstun__list_init(&t->tunnels);
  wstun__list_init(&t->queue);
  t->hnext = srv->buckets[0];
  srv->buckets[0] = t;
  srv->ntokens++;
  return t;
}

/* The live tunnel of a token (the latest), or NULL. */
static inline wstun__tunnel *fzs_tunnel(const wstun__token *tok) {
  wstun__srv_tunnel *st = wstun__token_first_tunnel(tok);
  return st ? st->t : NULL;
}

/* A new front whose peer is `ip` (IPv4 or IPv6 literal; NULL: no address,
 * as a handle that never connected). */
static wstun__front *fzs_front(const char *ip) {
  wstun__front *f = wstun__front_new(fzs_srv);
  if (f == NULL)
    abort();
  struct sockaddr_storage *ss = &f->conn->peer;
  memset(ss, 0, sizeof(*ss));
  if (ip != NULL && uv_ip4_addr(ip, 40000, (struct sockaddr_in *)ss) != 0 &&
      uv_ip6_addr(ip, 40000, (struct sockaddr_in6 *)ss) != 0)
    abort();
  return f;
}

/* As wstun__conn's on_read + deliver(): bytes for a connection that is
 * paused wait in its pending buffer (the kernel would hold them); what the
 * owner leaves is kept there and reading pauses. */
static void fzs_input(wstun__conn *c, const uint8_t *d, size_t n) {
  if (c->closing || c->ended || n == 0)
    return;
  if (c->paused) {
    if (wstun__buf_append(&c->pending, d, n) != 0)
      c->cbs->on_end(c, UV_ENOMEM);
    return;
  }
  c->in_data = 1;
  c->keep_tail = 0;
  size_t used = c->cbs->on_data(c, d, n);
  c->in_data = 0;
  if (c->keep_tail) {
    used = n - c->keep_tail;
    c->keep_tail = 0;
  }
  FZ_CHECK(used <= n, "on_data used %zu of %zu", used, n);
  if (c->closing)
    return;
  if (used < n) {
    if (wstun__buf_append(&c->pending, d + used, n - used) != 0) {
      c->cbs->on_end(c, UV_ENOMEM);
      return;
    }
    wstun__conn_pause(c);
  }
}

/* The peer closed its side: what is pending is still delivered first. */
static void fzs_eof(wstun__conn *c) {
  if (c->closing || c->ended)
    return;
  c->ended = 1;
  if (!c->paused)
    c->cbs->on_end(c, UV_EOF);
}

/* The end of an input: close what is open, run the loop until every
 * handle is gone, check nothing is left, free the tokens. */
static void fzs_end(void) {
  wstun_server *srv = fzs_srv;
  for (size_t i = 0; i < srv->nbuckets; i++)
    for (wstun__token *t = srv->buckets[i]; t; t = t->hnext) {
      wstun__srv_tunnel *st;
      while ((st = wstun__token_first_tunnel(t)) != NULL && st->t)
        wstun__tunnel_close(st->t, WSTUN_ECLOSED);
      FZ_CHECK(wstun__list_empty(&t->tunnels),
               "tunnel left on token after its close");
    }
  wstun__list *l;
  wstun__list_foreach(l, &srv->fronts) {
    wstun__front_close(wstun__list_entry(l, wstun__front, link));
  }
  uv_run(&fzs_loop, UV_RUN_DEFAULT);
  FZ_CHECK(wstun__list_empty(&srv->fronts) && srv->nfronts == 0,
           "%zu front connections not freed", srv->nfronts);
  FZ_CHECK(srv->live_tunnels == 0, "%zu tunnels not freed", srv->live_tunnels);
  FZ_CHECK(!uv_loop_alive(&fzs_loop), "handles left on the loop");
  for (size_t i = 0; i < srv->nbuckets; i++) {
    wstun__token *t = srv->buckets[i];
    while (t) {
      wstun__token *next = t->hnext;
      FZ_CHECK(wstun__list_empty(&t->queue) && t->nqueued == 0,
               "exchanges left in a token's queue");
      wstun__free(t->name);
      wstun__free(t);
      t = next;
    }
  }
  wstun__free(srv->buckets);
  srv->buckets = NULL;
  srv->nbuckets = srv->ntokens = 0;
  wstun__free(srv->base_path);
  srv->base_path = NULL;
  srv->nconns = 0;
}

/* ---- small helpers --------------------------------------------------------
 */

static void fzs_dump(const char *what, const uint8_t *d, size_t n) {
  fprintf(stderr, "%s (%zu bytes): \"", what, n);
  for (size_t i = 0; i < n && i < 4096; i++) {
    uint8_t c = d[i];
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
      fputc(c, stderr);
    else if (c == '\r')
      fputs("\\r", stderr);
    else if (c == '\n')
      fputs("\\n", stderr);
    else
      fprintf(stderr, "\\x%02x", c);
  }
  fprintf(stderr, "\"\n");
}

/* Tags of reported bugs to tolerate, from WSTUN_FUZZ_KNOWN (as
 * fuzz_http_common.h's fz_known): unset, every check is on. */
static inline int fzs_known(const char *tag) {
  const char *k = getenv("WSTUN_FUZZ_KNOWN");
  return k != NULL && strstr(k, tag) != NULL;
}

static inline int fzs_ieq(const char *a, const char *b) {
  for (; *a && *b; a++, b++) {
    char x = *a, y = *b;
    if (x >= 'A' && x <= 'Z')
      x = (char)(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z')
      y = (char)(y - 'A' + 'a');
    if (x != y)
      return 0;
  }
  return *a == *b;
}

#endif
