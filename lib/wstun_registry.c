/* The server's registry (see wstun_registry.h): tokens and their tunnel
 * connections, the queue of each token and the exchanges in flight on each
 * tunnel, request ids and the choice of a tunnel, the connection caps per
 * peer address, and the tokens' passwords. Exchanges are reg_entries with
 * a callback table: this file never sees a front connection. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "wstun_alloc.h"
#include "wstun_proto.h"
#include "wstun_registry.h"
#include "wstun_router.h"
#include "wstun_util.h"
#include "wstun_v2.h"
#include "wstun_ws.h"

static void drain_queue(wstun_server *srv, wstun__token *tok);

/* ---- passwords ---------------------------------------------------------- */

static void free_password_list(wstun__password *list, size_t n) {
  for (size_t i = 0; i < n; i++) {
    wstun__free(list[i].token);
    if (list[i].password) {
      memset(list[i].password, 0, strlen(list[i].password));
      wstun__free(list[i].password);
    }
  }
  wstun__free(list);
}

static void free_passwords(wstun_server *srv) {
  free_password_list(srv->passwords, srv->npasswords);
  srv->passwords = NULL;
  srv->npasswords = 0;
}

/* "tok:pw,tok2:pw2" (spaces around entries ignored), all or nothing: the
 * list in use is replaced only once the new one is whole. */
int wstun__registry_parse_passwords(wstun_server *srv, const char *s) {
  wstun__password *list = NULL;
  size_t n = 0;
  if (s != NULL && *s != '\0') {
    list = wstun__calloc(wstun__list_bound(s), sizeof(*list));
    if (list == NULL)
      return WSTUN_ENOMEM;
    const char *cursor = s, *p;
    size_t len;
    while (wstun__list_next(&cursor, &p, &len)) {
      const char *colon = memchr(p, ':', len);
      if (colon == NULL || colon == p || colon == p + len - 1) {
        free_password_list(list, n);
        return WSTUN_EPASSWORDS;
      }
      wstun__password *pw = &list[n++];
      pw->token = wstun__strndup(p, (size_t)(colon - p));
      pw->password = wstun__strndup(colon + 1, (size_t)(p + len - colon - 1));
      if (pw->token == NULL || pw->password == NULL) {
        free_password_list(list, n);
        return WSTUN_ENOMEM;
      }
    }
  }
  free_passwords(srv);
  srv->passwords = list;
  srv->npasswords = n;
  return 0;
}

static const wstun__password *find_password(wstun_server *srv,
                                            const char *token) {
  for (size_t i = 0; i < srv->npasswords; i++)
    if (strcmp(srv->passwords[i].token, token) == 0)
      return &srv->passwords[i];
  return NULL;
}

/* ---- token registry ----------------------------------------------------- */

/* keyed: tokens and addresses are chosen by strangers (wstun_keyhash.h);
 * each token keeps its hash, so only a lookup by name computes one */
static uint64_t hash_token(wstun_server *srv, const char *s, size_t n) {
  return wstun__keyhash_of(&srv->bucket_hash, s, n);
}

static wstun__token *find_hashed(wstun_server *srv, uint64_t hash,
                                 const char *name, size_t len) {
  if (srv->nbuckets == 0)
    return NULL;
  wstun__token *t = srv->buckets[hash % srv->nbuckets];
  for (; t; t = t->hnext)
    if (t->hash == hash && strlen(t->name) == len &&
        memcmp(t->name, name, len) == 0)
      return t;
  return NULL;
}

wstun__token *wstun__registry_find_token(wstun_server *srv, const char *name,
                                         size_t len) {
  if (srv->nbuckets == 0)
    return NULL;
  return find_hashed(srv, hash_token(srv, name, len), name, len);
}

static int grow_buckets(wstun_server *srv) {
  size_t n = srv->nbuckets ? srv->nbuckets * 2 : 64;
  wstun__token **b = wstun__calloc(n, sizeof(*b));
  if (b == NULL)
    return WSTUN_ENOMEM;
  for (size_t i = 0; i < srv->nbuckets; i++) {
    wstun__token *t = srv->buckets[i];
    while (t) {
      wstun__token *next = t->hnext;
      size_t h = t->hash % n;
      t->hnext = b[h];
      b[h] = t;
      t = next;
    }
  }
  wstun__free(srv->buckets);
  srv->buckets = b;
  srv->nbuckets = n;
  return 0;
}

static wstun__token *get_or_add_token(wstun_server *srv, const char *name) {
  size_t len = strlen(name);
  uint64_t hash = hash_token(srv, name, len);
  wstun__token *t = find_hashed(srv, hash, name, len);
  if (t)
    return t;
  if (srv->ntokens >= srv->nbuckets && grow_buckets(srv) != 0)
    return NULL;
  t = wstun__calloc(1, sizeof(*t));
  if (t == NULL)
    return NULL;
  wstun__list_init(&t->tunnels);
  wstun__list_init(&t->queue);
  t->name = wstun__strdup(name);
  if (t->name == NULL) {
    wstun__free(t);
    return NULL;
  }
  t->hash = hash;
  size_t h = hash % srv->nbuckets;
  t->hnext = srv->buckets[h];
  srv->buckets[h] = t;
  srv->ntokens++;
  t->last_seen = uv_now(srv->loop);
  return t;
}

wstun__token *wstun__registry_expect_token(wstun_server *srv, const char *name,
                                           size_t len) {
  char *z = wstun__strndup(name, len);
  wstun__token *t = z ? get_or_add_token(srv, z) : NULL;
  wstun__free(z);
  return t;
}

void wstun__registry_token_hold(wstun__token *t) {
  t->users++;
}

void wstun__registry_token_drop(wstun__token *t) {
  if (t->users > 0)
    t->users--;
}

static void remove_token(wstun_server *srv, wstun__token *t) {
  wstun__token **pp = &srv->buckets[t->hash % srv->nbuckets];
  while (*pp && *pp != t)
    pp = &(*pp)->hnext;
  if (*pp)
    *pp = t->hnext;
  srv->ntokens--;
  wstun__free(t->name);
  wstun__free(t);
}

size_t wstun_server_tunnel_count(const wstun_server *srv) {
  size_t n = 0;
  for (size_t i = 0; i < srv->nbuckets; i++)
    for (wstun__token *t = srv->buckets[i]; t; t = t->hnext)
      n += t->ntunnels > 0;
  return n;
}

#define FOREACH_TUNNEL(st, tok)                                                \
  for (wstun__list *l_ = (tok)->tunnels.next;                                  \
       l_ != &(tok)->tunnels &&                                                \
       ((st) = wstun__list_entry(l_, wstun__srv_tunnel, link), 1);             \
       l_ = l_->next)

size_t wstun__token_pending(const wstun__token *t) {
  size_t n = t->nqueued;
  const wstun__srv_tunnel *st;
  FOREACH_TUNNEL(st, t) {
    n += st->ninflight;
  }
  return n;
}

wstun__srv_tunnel *wstun__token_first_tunnel(const wstun__token *t) {
  wstun__list *l = wstun__list_front(&t->tunnels);
  return l ? wstun__list_entry(l, wstun__srv_tunnel, link) : NULL;
}

void wstun_server_get_stats(const wstun_server *srv, wstun_server_stats *out) {
  memset(out, 0, sizeof(*out));
  for (size_t i = 0; i < srv->nbuckets; i++)
    for (const wstun__token *t = srv->buckets[i]; t; t = t->hnext) {
      out->tokens++;
      out->tunnels += t->ntunnels > 0;
      out->tunnel_connections += t->ntunnels;
      out->pending_requests += wstun__token_pending(t);
    }
  out->front_connections = srv->nfronts;
  out->completed_requests = srv->completed;
  out->errored_requests = srv->errored;
}

void wstun_server_foreach_tunnel(const wstun_server *srv,
                                 wstun_tunnel_info_cb cb, void *user_data) {
  uint64_t now = uv_now(srv->loop);
  for (size_t i = 0; i < srv->nbuckets; i++)
    for (const wstun__token *t = srv->buckets[i]; t; t = t->hnext) {
      const wstun__srv_tunnel *st = wstun__token_first_tunnel(t);
      uint64_t last =
          t->last_activity > t->last_seen ? t->last_activity : t->last_seen;
      wstun_tunnel_info info = {
          .token = t->name,
          .connections = t->ntunnels,
          .pending_requests = wstun__token_pending(t),
          .remote_addr = st ? st->addr : "",
          .client_version = st && st->client_version ? st->client_version : "",
          .remote_name = st && st->remote_name ? st->remote_name : "",
          .idle_ms = now - last,
          .protocol = st ? (st->v2 ? "v2" : "v1") : "",
      };
      cb(&info, user_data);
    }
}

/* ---- connection caps ---------------------------------------------------- */

wstun__ipcount *wstun__registry_conn_admit(wstun_server *srv, const char *peer,
                                           const char **why) {
  *why = "too many connections";
  if (srv->max_conns && srv->nconns >= srv->max_conns)
    return NULL;
  char ip[sizeof(((wstun__ipcount *)0)->ip)];
  wstun__ip_count_key(peer, ip, sizeof(ip));
  size_t b = hash_token(srv, ip, strlen(ip)) % WSTUN__IP_BUCKETS;
  wstun__ipcount *c = srv->ips[b];
  while (c && strcmp(c->ip, ip) != 0)
    c = c->next;
  *why = "too many connections from this address";
  /* a reverse proxy brings everybody from its one address: the proxies
   * named in trusted_proxies count in the total only */
  if (c && srv->max_conns_per_ip && c->n >= srv->max_conns_per_ip &&
      !wstun__cidr_list_match(&srv->trusted_proxies, peer))
    return NULL;
  if (c == NULL) {
    *why = "out of memory";
    c = wstun__calloc(1, sizeof(*c));
    if (c == NULL)
      return NULL;
    snprintf(c->ip, sizeof(c->ip), "%s", ip);
    c->next = srv->ips[b];
    srv->ips[b] = c;
  }
  c->n++;
  srv->nconns++;
  return c;
}

void wstun__registry_conn_release(wstun_server *srv, wstun__ipcount *slot) {
  if (slot == NULL)
    return;
  srv->nconns--;
  if (--slot->n > 0)
    return;
  wstun__ipcount **pp = &srv->ips[hash_token(srv, slot->ip, strlen(slot->ip)) %
                                  WSTUN__IP_BUCKETS];
  while (*pp && *pp != slot)
    pp = &(*pp)->next;
  if (*pp)
    *pp = slot->next;
  wstun__free(slot);
}

/* ---- dispatch ----------------------------------------------------------- */

static size_t waiting_count(const wstun__token *tok) {
  size_t n = tok->nqueued;
  const wstun__srv_tunnel *st;
  FOREACH_TUNNEL(st, tok) {
    n += wstun__tunnel_queued(st->t);
  }
  return n;
}

/* Whether st takes one more exchange now. A v2 tunnel carries at most
 * WSTUN__REG_V2_STREAMS streams at once: far below the client's limit of
 * 1024 (PROTOCOL.md 7.8, beyond which it refuses streams), and each one is
 * a backend connection on the client and up to a window (1 MiB) of
 * buffered bytes on each side; more wait in the token's queue (bounded by
 * max_requests_per_tunnel) and go out as streams end. A v2 tunnel after a
 * GOAWAY, either way, takes none. A v1 tunnel takes any number (they wait
 * their turn on it, as with the Go server). */
static int takes_more(const wstun__srv_tunnel *st) {
  /* one that is closing (its owner not told yet: a message it was
   * delivering ends first) would hand the exchange straight back */
  if (st->t == NULL || st->t->closing)
    return 0;
  return !st->v2 || (!st->goaway && st->ninflight < WSTUN__REG_V2_STREAMS &&
                     st->last_stream < WSTUN__V2_ID_MAX - 1);
}

static wstun__srv_tunnel *pick_tunnel(wstun__token *tok, int v2_only) {
  /* fewest exchanges in flight; ties broken round-robin */
  wstun__srv_tunnel *best = NULL, *st;
  unsigned i = 0, start = tok->rr++;
  size_t n = tok->ntunnels ? tok->ntunnels : 1;
  FOREACH_TUNNEL(st, tok) {
    unsigned at = i++;
    if (!takes_more(st) || (v2_only && !st->v2))
      continue;
    if (best == NULL || st->ninflight < best->ninflight ||
        (st->ninflight == best->ninflight && at == start % n))
      best = st;
  }
  return best;
}

static int id_in_use(const wstun__srv_tunnel *st, uint32_t id) {
  const wstun__list *l;
  wstun__list_foreach(l, &st->inflight) {
    if (wstun__list_entry(l, wstun__reg_entry, link)->id == id)
      return 1;
  }
  return 0;
}

static uint32_t next_id(wstun__token *tok, wstun__srv_tunnel *st) {
  if (st->v2) /* odd, increasing, never reused (takes_more bounds it) */
    return st->last_stream = st->last_stream == 0 ? 1 : st->last_stream + 2;
  for (;;) {
    uint16_t id = tok->next_id = wstun__proto_next_id(tok->next_id);
    if (st->ninflight >= WSTUN__PROTO_ID_WRAP || !id_in_use(st, id))
      return id;
  }
}

static void send_on(wstun__srv_tunnel *st, wstun__reg_entry *e) {
  e->id = next_id(st->tok, st);
  e->tun = st;
  wstun__list_push_front(&st->inflight, &e->link);
  st->ninflight++;
  wstun__outmsg *m = e->cbs->on_send(e);
  wstun__tunnel_send(st->t, e->id, m);
  /* v2 ids ran out (PROTOCOL.md 7.3): GOAWAY, the client dials another */
  if (st->v2 && st->t && !st->goaway &&
      st->last_stream >= WSTUN__V2_ID_MAX - 1) {
    st->goaway = 1;
    wstun__tunnel_goaway(st->t, WSTUN__V2_NO_ERROR);
  }
}

/* A live v2 tunnel that takes no new stream only for now: its streams end
 * and free slots, so an exchange queued for it is waiting its turn, not
 * stuck behind a broken tunnel. */
static int v2_slots_later(const wstun__token *tok) {
  const wstun__srv_tunnel *st;
  FOREACH_TUNNEL(st, tok) {
    if (st->v2 && st->t && !st->t->closing && !st->goaway)
      return 1;
  }
  return 0;
}

/* An upgrade (v2_only) that no tunnel of the token will ever carry: it
 * has live tunnels, all v1 (the Go client, or -protocol v1). With none
 * at all it waits, as any request, for one to come. */
static int only_v1_tunnels(const wstun__token *tok) {
  const wstun__srv_tunnel *st;
  int live = 0;
  FOREACH_TUNNEL(st, tok) {
    if (st->t == NULL || st->t->closing)
      continue;
    if (st->v2)
      return 0;
    live = 1;
  }
  return live;
}

int wstun__registry_dispatch(wstun_server *srv, wstun__reg_entry *e) {
  wstun__token *tok = e->tok;
  if (e->v2_only && only_v1_tunnels(tok)) {
    e->cbs->on_fail(e, 501, WSTUN__UPGRADE_REFUSED);
    return 0;
  }
  /* max_queue bounds what waits for a tunnel that may never come (or one
   * that does not move); exchanges waiting for a stream of a live v2
   * tunnel are bounded by the connection caps instead (each is a
   * requester's connection), as requests queued on a v1 tunnel are */
  if (!v2_slots_later(tok) && waiting_count(tok) >= srv->max_queue) {
    char red[12];
    wstun__log(&srv->log, WSTUN_LOG_WARN,
               "HTTP RET token=%s status=504 queue full (%zu waiting)",
               wstun__redact(tok->name, red), waiting_count(tok));
    e->cbs->on_fail(e, 504, "too many requests in-flight, tunnel broken?");
    return 0;
  }
  wstun__srv_tunnel *st = pick_tunnel(tok, e->v2_only);
  if (st != NULL && tok->nqueued == 0) { /* first come, first served */
    send_on(st, e);
    return 0;
  }
  /* momentarily down: wait for a client to (re)connect */
  e->queued = 1;
  wstun__list_push_back(&tok->queue, &e->link);
  tok->nqueued++;
  return 1;
}

void wstun__registry_unlink(wstun__reg_entry *e, uint32_t code) {
  wstun__srv_tunnel *freed = NULL;
  if (e->queued) {
    wstun__list_remove(&e->link);
    e->queued = 0;
    e->tok->nqueued--;
  } else if (e->tun) {
    wstun__srv_tunnel *st = e->tun;
    if (wstun__list_linked(&e->link)) {
      wstun__list_remove(&e->link);
      st->ninflight--;
      freed = st->v2 ? st : NULL;
    }
    if (st->t && st->v2) {
      /* the stream ends here: RESET unless it is over, its message (if
       * the tunnel still holds it) freed, its sink forgotten */
      wstun__tunnel_reset(st->t, e->id, code);
    } else if (st->t) {
      wstun__tunnel_forget_sink(st->t, e);
      if (e->paused)
        wstun__tunnel_resume_rx(st->t);
    }
    e->paused = 0;
  }
  wstun__list_remove(&e->link);
  e->tun = NULL;
  /* a v2 stream slot is free: the first exchange waiting may have it */
  if (freed && freed->tok && freed->tok->nqueued > 0)
    drain_queue(freed->srv, freed->tok);
}

void wstun__registry_consumed(wstun__reg_entry *e, size_t n) {
  if (e->tun && e->tun->t && e->tun->v2 && n > 0)
    wstun__tunnel_consumed(e->tun->t, e->id, n);
}

int wstun__registry_is_v2(const wstun__reg_entry *e) {
  return e->tun != NULL && e->tun->v2;
}

int wstun__registry_pause_rx(wstun__reg_entry *e) {
  if (e->tun == NULL || e->tun->t == NULL)
    return 0;
  /* paused even when e paused it before: another requester's drain may
   * have resumed the tunnel meanwhile */
  wstun__tunnel_pause_rx(e->tun->t);
  if (e->paused)
    return 0;
  e->paused = 1;
  return 1;
}

int wstun__registry_resume_rx(wstun__reg_entry *e) {
  if (!e->paused || e->tun == NULL || e->tun->t == NULL)
    return 0;
  e->paused = 0;
  wstun__tunnel_resume_rx(e->tun->t);
  return 1;
}

void wstun__registry_kick(wstun__reg_entry *e) {
  if (e->tun && e->tun->t)
    wstun__tunnel_kick(e->tun->t);
}

void wstun__registry_foreach_inflight(const wstun__token *t,
                                      void (*cb)(wstun__reg_entry *e, void *ud),
                                      void *ud) {
  const wstun__srv_tunnel *st;
  FOREACH_TUNNEL(st, t) {
    const wstun__list *l;
    wstun__list_foreach(l, &st->inflight) {
      cb(wstun__list_entry(l, wstun__reg_entry, link), ud);
    }
  }
}

/* A token got a live tunnel, or a v2 tunnel a free stream: move its
 * waiting exchanges onto tunnels, in order, while one takes them. Not
 * re-entered: sending may end exchanges, which frees slots again. */
static void drain_queue(wstun_server *srv, wstun__token *tok) {
  (void)srv;
  if (tok->draining)
    return;
  tok->draining = 1;
  wstun__list *l;
  wstun__srv_tunnel *st;
  while ((l = wstun__list_front(&tok->queue)) != NULL) {
    wstun__reg_entry *e = wstun__list_entry(l, wstun__reg_entry, link);
    st = pick_tunnel(tok, e->v2_only);
    int refuse = st == NULL && e->v2_only && only_v1_tunnels(tok);
    if (st == NULL && !refuse)
      break;
    wstun__list_remove(l);
    e->queued = 0;
    tok->nqueued--;
    if (refuse) /* an upgrade that waited, and only v1 tunnels came */
      e->cbs->on_fail(e, 501, WSTUN__UPGRADE_REFUSED);
    else
      send_on(st, e);
  }
  tok->draining = 0;
}

/* ---- tunnel connections ------------------------------------------------- */

static wstun__reg_entry *find_inflight(wstun__srv_tunnel *st, uint32_t id) {
  wstun__list *l;
  wstun__list_foreach(l, &st->inflight) {
    wstun__reg_entry *e = wstun__list_entry(l, wstun__reg_entry, link);
    if (e->id == id)
      return e;
  }
  return NULL;
}

static void *st_msg_begin(wstun__tunnel *t, uint32_t wire_id) {
  wstun__srv_tunnel *st = t->owner;
  uint32_t id = wire_id; /* v1: four hex digits; v2: the stream */
  wstun__reg_entry *e = find_inflight(st, id);
  if (e == NULL || !e->cbs->on_msg_begin(e)) {
    wstun__log(&st->srv->log, WSTUN_LOG_INFO,
               "WS   RCV id=%04x: no such request in flight (late?): dropped",
               (unsigned)id);
    return NULL;
  }
  return e;
}

static int st_msg_data(wstun__tunnel *t, void *sink, const uint8_t *d,
                       size_t n) {
  wstun__reg_entry *e = sink;
  (void)t;
  return e->cbs->on_msg_data(e, d, n);
}

static void st_msg_end(wstun__tunnel *t, void *sink, int complete) {
  wstun__reg_entry *e = sink;
  (void)t;
  e->cbs->on_msg_end(e, complete);
}

static void st_closed(wstun__tunnel *t, int err) {
  wstun__srv_tunnel *st = t->owner;
  wstun_server *srv = st->srv;
  wstun__token *tok = st->tok;
  st->t = NULL;
  if (tok) {
    wstun__list_remove(&st->link);
    tok->ntunnels--;
    tok->last_seen = uv_now(srv->loop);
    srv->metrics.tunnel_disconnects++;
    st->tok = NULL;
    char red[12];
    wstun__log(&srv->log, WSTUN_LOG_INFO,
               "WS   closed token=%s addr=%s (%s); %zu left for token",
               wstun__redact(tok->name, red), st->addr, wstun_strerror(err),
               tok->ntunnels);
  }
  /* Every exchange lets go of this tunnel now. Those already written
   * cannot be replayed: they are answered at once. Those still being sent
   * come back through their message's on_failed (never sent: retried) or
   * on_sent (sent just before the end: answered then); each exchange
   * tells which (on_tunnel_lost). */
  wstun__list lost;
  wstun__list_init(&lost);
  wstun__list *l, *tmp;
  wstun__list_foreach_safe(l, tmp, &st->inflight) {
    wstun__reg_entry *e = wstun__list_entry(l, wstun__reg_entry, link);
    wstun__list_remove(l);
    wstun__list_push_back(&lost, l);
    e->tun = NULL;
    e->paused = 0;
  }
  st->ninflight = 0;
  while ((l = wstun__list_front(&lost)) != NULL) {
    wstun__reg_entry *e = wstun__list_entry(l, wstun__reg_entry, link);
    wstun__list_remove(l);
    e->cbs->on_tunnel_lost(e);
  }
}

/* Reverse DNS of a tunnel's peer, for /_stats and /admin/auditing: through
 * libuv's thread pool, so a slow resolver never blocks the loop. At most
 * WSTUN__DNS_LOOKUPS run for a server's live tunnels at once (the pool has
 * four threads); a tunnel that comes while they are busy is shown by its
 * address alone. Otherwise thousands of tunnels arriving at once behind a
 * resolver that does not answer queued a lookup each, holding memory and,
 * at stop, keeping the loop (and the process) alive until every one had
 * timed out. A tunnel that goes cancels its lookup when it is still
 * queued; one already running outlives it and then just frees itself. */
#define WSTUN__DNS_LOOKUPS 4

typedef struct wstun__dns_lookup {
  uv_getnameinfo_t req;
  wstun__srv_tunnel *st; /* NULL once the tunnel is gone */
} wstun__dns_lookup;

static void on_name(uv_getnameinfo_t *req, int status, const char *host,
                    const char *service) {
  wstun__dns_lookup *l = req->data;
  (void)service;
  if (l->st) {
    l->st->dns = NULL;
    l->st->srv->dns_lookups--;
    if (status == 0 && host)
      l->st->remote_name = wstun__strdup(host);
  }
  wstun__free(l);
}

static void lookup_name(wstun__srv_tunnel *st, const struct sockaddr *peer) {
  if (st->srv->dns_lookups >= WSTUN__DNS_LOOKUPS)
    return;
  wstun__dns_lookup *l = wstun__calloc(1, sizeof(*l));
  if (l == NULL)
    return;
  l->st = st;
  l->req.data = l;
  if (uv_getnameinfo(st->srv->loop, &l->req, on_name, peer, NI_NAMEREQD) != 0) {
    wstun__free(l);
    return;
  }
  st->dns = l;
  st->srv->dns_lookups++;
}

/* The tunnel is going: its lookup no longer counts, and is cancelled if
 * it has not started (on_name then runs with UV_ECANCELED and frees it). */
static void lookup_forget(wstun__srv_tunnel *st) {
  if (st->dns == NULL)
    return;
  st->dns->st = NULL;
  st->srv->dns_lookups--;
  uv_cancel((uv_req_t *)&st->dns->req);
  st->dns = NULL;
}

static void st_freed(void *owner) {
  wstun__srv_tunnel *st = owner;
  wstun_server *srv = st->srv;
  lookup_forget(st);
  wstun__registry_conn_release(srv, st->ip);
  wstun__free(st->remote_name);
  wstun__free(st->client_version);
  if (st->auth) {
    memset(st->auth, 0, strlen(st->auth));
    wstun__free(st->auth);
  }
  wstun__free(st);
  srv->live_tunnels--;
  if (srv->on_gone)
    srv->on_gone(srv);
}

/* v2: the client reset one stream (REFUSED: not processed, it may go
 * again; CANCEL: its backend failed). Off the tunnel first, then told. */
static void st_reset(wstun__tunnel *t, uint32_t id, uint32_t code) {
  wstun__srv_tunnel *st = t->owner;
  wstun__reg_entry *e = find_inflight(st, id);
  if (e == NULL)
    return;
  wstun__list_remove(&e->link);
  st->ninflight--;
  e->tun = NULL;
  e->paused = 0;
  e->cbs->on_reset(e, code);
  if (st->tok && st->tok->nqueued > 0)
    drain_queue(st->srv, st->tok);
}

/* v2: the client drains (it is stopping): no new streams go to it; its
 * streams above `last` come back through st_reset (REFUSED). */
static void st_goaway(wstun__tunnel *t, uint32_t last, uint32_t code) {
  wstun__srv_tunnel *st = t->owner;
  char red[12];
  st->goaway = 1;
  wstun__log(&st->srv->log, WSTUN_LOG_INFO,
             "WS   GOAWAY from token=%s addr=%s last=%u code=%u",
             st->tok ? wstun__redact(st->tok->name, red) : "-", st->addr,
             (unsigned)last, (unsigned)code);
}

static const wstun__tunnel_cbs srv_tunnel_cbs = {
    .on_msg_begin = st_msg_begin,
    .on_msg_data = st_msg_data,
    .on_msg_end = st_msg_end,
    .on_closed = st_closed,
    .on_freed = st_freed,
    .on_reset = st_reset,
    .on_goaway = st_goaway,
};

/* Basic credentials must name the token and its password. */
/* NULL when the credentials are right, else the Go server's 401 text. */
static const char *check_auth(const char *header, const char *token,
                              const char *password) {
  if (header == NULL)
    return "Authorization required for this token";
  if (strncasecmp(header, "Basic ", 6) != 0)
    return "Invalid authorization type (must be Basic)";
  unsigned char *raw = NULL;
  size_t n = 0;
  const char *b64 = header + 6;
  while (*b64 == ' ')
    b64++;
  if (wstun__base64_decode(b64, &raw, &n) != 0)
    return "Invalid authorization encoding";
  const unsigned char *colon = memchr(raw, ':', n);
  const char *why = "Invalid authorization format";
  if (colon != NULL) {
    size_t ulen = (size_t)(colon - raw);
    int user_ok = wstun__ct_equal(raw, ulen, token, strlen(token));
    int pw_ok =
        wstun__ct_equal(colon + 1, n - ulen - 1, password, strlen(password));
    why = user_ok & pw_ok ? NULL : "Invalid token or password";
  }
  wstun__free(raw);
  return why;
}

const char *wstun__registry_check_auth(wstun_server *srv, const char *token,
                                       const char *header) {
  const wstun__password *pw = find_password(srv, token);
  return pw ? check_auth(header, token, pw->password) : NULL;
}

int wstun__registry_add_tunnel(wstun_server *srv, const char *token,
                               const char *peer, wstun__http_head *h,
                               wstun__conn *conn, wstun__ipcount *ip,
                               const uint8_t *rest, size_t n) {
  wstun__token *tok = get_or_add_token(srv, token);
  wstun__srv_tunnel *st = tok ? wstun__calloc(1, sizeof(*st)) : NULL;
  if (st == NULL)
    return WSTUN_ENOMEM;
  st->srv = srv;
  wstun__list_init(&st->inflight);
  snprintf(st->addr, sizeof(st->addr), "%s", peer);
  st->client_version =
      wstun__strdup(wstun__http_head_get(h, "X-Client-Version"));
  const char *auth = wstun__http_head_get(h, "Authorization");
  st->auth = auth ? wstun__strdup(auth) : NULL;
  /* PROTOCOL.md 7.1: v2 when offered and not disabled, else v1 */
  st->v2 = srv->v2 && wstun__ws_offers(h, WSTUN__V2_SUBPROTOCOL);
  if ((auth && st->auth == NULL) ||
      wstun__ws_write_accept_proto(h, st->v2 ? WSTUN__V2_SUBPROTOCOL : NULL,
                                   wstun__conn_outbuf(conn)) != 0 ||
      wstun__tunnel_start(&st->t, srv->loop, conn, 1, &srv->rng, &srv->log, 0,
                          srv->ws_timeout_ms, &srv_tunnel_cbs, st, rest,
                          n) != 0) {
    wstun__free(st->client_version);
    if (st->auth) {
      memset(st->auth, 0, strlen(st->auth));
      wstun__free(st->auth);
    }
    wstun__free(st);
    return WSTUN_ENOMEM;
  }
  srv->live_tunnels++;
  srv->metrics.tunnel_connects++;
  lookup_name(st, (const struct sockaddr *)&conn->peer);
  /* the connection now belongs to the tunnel, and counts as its */
  st->ip = ip;
  wstun__conn_flush(conn);
  if (st->v2 && wstun__tunnel_set_proto(st->t, &wstun__proto_v2) != 0) {
    /* the 101 is written, so the client speaks v2 from now on: close
     * (the tunnel frees st through st_freed) */
    wstun__tunnel_close(st->t, WSTUN_ENOMEM);
    return 0;
  }
  st->tok = tok;
  tok->had_tunnel = 1;
  wstun__list_push_front(&tok->tunnels, &st->link);
  tok->ntunnels++;
  tok->last_seen = uv_now(srv->loop);
  char red[12];
  wstun__log(&srv->log, WSTUN_LOG_INFO,
             "WS   new tunnel token=%s addr=%s version=%s protocol=%s (%zu "
             "for token)",
             wstun__redact(token, red), peer,
             st->client_version ? st->client_version : "-",
             st->v2 ? "v2" : "v1", tok->ntunnels);
  drain_queue(srv, tok);
  return 0;
}

size_t wstun__registry_recheck_auth(wstun_server *srv) {
  size_t closed = 0;
  for (size_t i = 0; i < srv->nbuckets; i++)
    for (wstun__token *t = srv->buckets[i]; t; t = t->hnext) {
      const wstun__password *pw = find_password(srv, t->name);
      if (pw == NULL)
        continue; /* no password (any more): everybody is let in */
      /* closing one takes only its own link off the list */
      wstun__list *l, *tmp;
      wstun__list_foreach_safe(l, tmp, &t->tunnels) {
        wstun__srv_tunnel *st = wstun__list_entry(l, wstun__srv_tunnel, link);
        if (st->t == NULL ||
            check_auth(st->auth, t->name, pw->password) == NULL)
          continue;
        char red[12];
        wstun__log(&srv->log, WSTUN_LOG_WARN,
                   "WS   closing tunnel token=%s addr=%s: its credentials no "
                   "longer match the token's password",
                   wstun__redact(t->name, red), st->addr);
        wstun__tunnel_close(st->t, WSTUN_ECLOSED);
        closed++;
      }
    }
  return closed;
}

/* ---- lifecycle ---------------------------------------------------------- */

/* Answers every exchange waiting in the token's queue. */
static void fail_queue(wstun__token *t, int status, const char *text) {
  wstun__list *l;
  while ((l = wstun__list_front(&t->queue)) != NULL) {
    wstun__reg_entry *e = wstun__list_entry(l, wstun__reg_entry, link);
    wstun__list_remove(l);
    e->queued = 0;
    t->nqueued--;
    e->cbs->on_fail(e, status, text);
  }
}

void wstun__registry_sweep(wstun_server *srv) {
  uint64_t now = uv_now(srv->loop);
  for (size_t i = 0; i < srv->nbuckets; i++) {
    wstun__token *t = srv->buckets[i];
    while (t) {
      wstun__token *next = t->hnext;
      /* made for a request that waited in vain: gone once nothing waits */
      int unused = !t->had_tunnel && t->users == 0 && t->nqueued == 0;
      if (t->ntunnels == 0 &&
          (unused || now - t->last_seen >= srv->forget_ms)) {
        char red[12];
        wstun__log(&srv->log, unused ? WSTUN_LOG_DEBUG : WSTUN_LOG_INFO,
                   "token=%s forgotten after %llu s without a client",
                   wstun__redact(t->name, red),
                   (unsigned long long)((now - t->last_seen) / 1000));
        fail_queue(t, 404, "Tunnel not found (or not seen in a long time)");
        /* a request still uploading its body holds it: next sweep */
        if (t->users == 0)
          remove_token(srv, t);
      }
      t = next;
    }
  }
}

void wstun__registry_goaway(wstun_server *srv) {
  for (size_t i = 0; i < srv->nbuckets; i++)
    for (wstun__token *t = srv->buckets[i]; t; t = t->hnext) {
      wstun__srv_tunnel *st;
      FOREACH_TUNNEL(st, t) {
        if (st->v2 && st->t && !st->goaway) {
          st->goaway = 1;
          wstun__tunnel_goaway(st->t, WSTUN__V2_NO_ERROR);
        }
      }
    }
}

void wstun__registry_shutdown(wstun_server *srv) {
  for (size_t i = 0; i < srv->nbuckets; i++)
    for (wstun__token *t = srv->buckets[i]; t; t = t->hnext) {
      fail_queue(t, 503, "Server shutting down");
      wstun__srv_tunnel *st;
      while ((st = wstun__token_first_tunnel(t)) != NULL)
        wstun__tunnel_close(st->t, WSTUN_ECLOSED);
    }
}

void wstun__registry_free(wstun_server *srv) {
  for (size_t i = 0; i < srv->nbuckets; i++) {
    wstun__token *t = srv->buckets[i];
    while (t) {
      wstun__token *next = t->hnext;
      wstun__free(t->name);
      wstun__free(t);
      t = next;
    }
  }
  wstun__free(srv->buckets);
  srv->buckets = NULL;
  srv->nbuckets = srv->ntokens = 0;
  free_passwords(srv);
}
