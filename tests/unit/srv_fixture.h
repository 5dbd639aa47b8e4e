/* A wstun_server made by hand for the server's module tests (exchange,
 * registry, front, admin), as tests/fuzz/fuzz_server_common.h does: the
 * fields wstun_server_start would set, no listener, tokens and tunnel
 * records put into the registry directly. sf_end() frees it all and
 * checks the loop is empty. */
#ifndef WSTUN_SRV_FIXTURE_H
#define WSTUN_SRV_FIXTURE_H

#include <stdlib.h>
#include <uv.h>

#include "test.h"
#include "wstun_alloc.h"
#include "wstun_registry.h"

static uv_loop_t sf_loop;

static inline void sf_log(void *ud, wstun_log_level level, const char *line) {
  (void)ud;
  (void)level;
  if (getenv("SF_LOG"))
    fprintf(stderr, "[log] %s\n", line);
}

static inline wstun_server *sf_begin(void) {
  CHECK_EQ_INT(uv_loop_init(&sf_loop), 0);
  wstun_server *srv = wstun__calloc(1, sizeof(*srv));
  srv->loop = &sf_loop;
  wstun__list_init(&srv->fronts);
  srv->log.level = WSTUN_LOG_DEBUG;
  srv->log.cb = sf_log;
  wstun__conn_shared_init(&srv->shared, &sf_loop);
  srv->base_path = wstun__strdup("");
  srv->max_queue = 20;
  srv->ws_timeout_ms = 30000;
  srv->http_timeout_ms = 1200000;
  srv->forget_ms = 3600000;
  srv->header_timeout_ms = 30000;
  srv->idle_timeout_ms = 60000;
  srv->stall_ms = 10000;
  srv->max_header = 64 * 1024;
  CHECK_EQ_INT(wstun__rng_init(&srv->rng), 0);
  CHECK_EQ_INT(wstun__keyhash_init(&srv->bucket_hash, &srv->rng), 0);
  srv->buckets = wstun__calloc(1, sizeof(*srv->buckets));
  srv->nbuckets = 1; /* hash % 1: tokens go in by hand */
  return srv;
}

static inline wstun__token *sf_add_token(wstun_server *srv, const char *name) {
  wstun__token *t = wstun__calloc(1, sizeof(*t));
  t->name = wstun__strdup(name);
  t->hash = wstun__keyhash_of(&srv->bucket_hash, name, strlen(name));
  wstun__list_init(&t->tunnels);
  wstun__list_init(&t->queue);
  t->hnext = srv->buckets[0];
  srv->buckets[0] = t;
  srv->ntokens++;
  t->last_seen = uv_now(srv->loop);
  t->had_tunnel = 1; /* a token as tunnels make them */
  return t;
}

/* A tunnel record with no tunnel behind it (t == NULL: never picked). */
static inline wstun__srv_tunnel *sf_add_tunnel(wstun__token *tok,
                                               const char *addr) {
  wstun__srv_tunnel *st = wstun__calloc(1, sizeof(*st));
  st->tok = tok;
  wstun__list_init(&st->inflight);
  snprintf(st->addr, sizeof(st->addr), "%s", addr);
  wstun__list_push_front(&tok->tunnels, &st->link);
  tok->ntunnels++;
  return st;
}

static inline void sf_flusher_closed(uv_handle_t *h) {
  (void)h;
}

static inline void sf_end(wstun_server *srv) {
  for (size_t i = 0; i < srv->nbuckets; i++)
    for (wstun__token *t = srv->buckets[i]; t; t = t->hnext) {
      wstun__list *l;
      while ((l = wstun__list_front(&t->tunnels)) != NULL) {
        wstun__list_remove(l);
        wstun__free(wstun__list_entry(l, wstun__srv_tunnel, link));
      }
    }
  wstun__registry_free(srv);
  wstun__conn_shared_close(&srv->shared, sf_flusher_closed, NULL);
  uv_run(&sf_loop, UV_RUN_DEFAULT);
  CHECK(!uv_loop_alive(&sf_loop));
  CHECK_EQ_INT(uv_loop_close(&sf_loop), 0);
  wstun__free(srv->base_path);
  wstun__keyhash_free(&srv->bucket_hash);
  wstun__rng_free(&srv->rng);
  wstun__free(srv);
}

#endif
