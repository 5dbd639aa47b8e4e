/* The registry without tunnels: tokens, passwords and Basic credentials,
 * the connection caps, and the queue of a token as exchanges (played here
 * by bare reg_entries with a recording callback table) go in and come out:
 * queued, failed when full, unlinked, forgotten with their token, failed
 * at shutdown. */
#include <mbedtls/base64.h>

#include "srv_fixture.h"
#include "test.h"

#define TOK "registry-test-token-aaaaaaaa"

typedef struct fake {
  wstun__reg_entry e;
  int fails, status;
  const char *text;
} fake;

static void fk_fail(wstun__reg_entry *e, int status, const char *text) {
  fake *f = (fake *)e;
  f->fails++;
  f->status = status;
  f->text = text;
}

static const wstun__reg_entry_cbs fake_cbs = {.on_fail = fk_fail};

static void fake_init(fake *f, wstun__token *t) {
  memset(f, 0, sizeof(*f));
  f->e.cbs = &fake_cbs;
  f->e.tok = t;
}

TEST(tokens_and_passwords) {
  wstun_server *srv = sf_begin();
  sf_add_token(srv, TOK);
  CHECK(wstun__registry_find_token(srv, TOK, strlen(TOK)) != NULL);
  CHECK(wstun__registry_find_token(srv, TOK, 5) == NULL);
  CHECK(wstun__registry_find_token(srv, "nope", 4) == NULL);
  CHECK_EQ_INT(wstun__registry_parse_passwords(srv, " a:b , tok2:pw2 "), 0);
  CHECK_EQ_INT(srv->npasswords, 2);
  CHECK(wstun__registry_check_auth(srv, "other", NULL) == NULL);
  CHECK_EQ_STR(wstun__registry_check_auth(srv, "tok2", NULL),
               "Authorization required for this token");
  CHECK_EQ_STR(wstun__registry_check_auth(srv, "tok2", "Bearer x"),
               "Invalid authorization type (must be Basic)");
  CHECK_EQ_STR(wstun__registry_check_auth(srv, "tok2", "Basic !!!"),
               "Invalid authorization encoding");
  char hdr[64] = "Basic ";
  size_t n;
  mbedtls_base64_encode((unsigned char *)hdr + 6, sizeof(hdr) - 6, &n,
                        (const unsigned char *)"tok2:pw2", 8);
  CHECK(wstun__registry_check_auth(srv, "tok2", hdr) == NULL);
  mbedtls_base64_encode((unsigned char *)hdr + 6, sizeof(hdr) - 6, &n,
                        (const unsigned char *)"tok2:bad", 8);
  CHECK_EQ_STR(wstun__registry_check_auth(srv, "tok2", hdr),
               "Invalid token or password");
  mbedtls_base64_encode((unsigned char *)hdr + 6, sizeof(hdr) - 6, &n,
                        (const unsigned char *)"nocolon", 7);
  CHECK_EQ_STR(wstun__registry_check_auth(srv, "tok2", hdr),
               "Invalid authorization format");
  sf_end(srv);
  srv = sf_begin();
  CHECK_EQ_INT(wstun__registry_parse_passwords(srv, "a:b,nocolon"),
               WSTUN_EPASSWORDS);
  sf_end(srv);
}

TEST(connection_caps) {
  wstun_server *srv = sf_begin();
  srv->max_conns = 4;
  srv->max_conns_per_ip = 2;
  const char *why;
  wstun__ipcount *a1 = wstun__registry_conn_admit(srv, "192.0.2.1", &why);
  wstun__ipcount *a2 = wstun__registry_conn_admit(srv, "192.0.2.1", &why);
  CHECK(a1 != NULL && a1 == a2);
  CHECK(wstun__registry_conn_admit(srv, "192.0.2.1", &why) == NULL);
  CHECK_EQ_STR(why, "too many connections from this address");
  /* IPv6 addresses count by their /64 */
  wstun__ipcount *b1 = wstun__registry_conn_admit(srv, "2001:db8::1", &why);
  wstun__ipcount *b2 =
      wstun__registry_conn_admit(srv, "2001:db8::ffff:2", &why);
  CHECK(b1 != NULL && b1 == b2);
  CHECK_EQ_INT(srv->nconns, 4);
  CHECK(wstun__registry_conn_admit(srv, "198.51.100.1", &why) == NULL);
  CHECK_EQ_STR(why, "too many connections");
  wstun__registry_conn_release(srv, a1);
  wstun__registry_conn_release(srv, a2);
  wstun__registry_conn_release(srv, b1);
  wstun__registry_conn_release(srv, b2);
  wstun__registry_conn_release(srv, NULL);
  CHECK_EQ_INT(srv->nconns, 0);
  for (size_t i = 0; i < WSTUN__IP_BUCKETS; i++)
    CHECK(srv->ips[i] == NULL);
  sf_end(srv);
}

TEST(queue) {
  wstun_server *srv = sf_begin();
  wstun__token *t = sf_add_token(srv, TOK);
  srv->max_queue = 2;
  fake f[3];
  for (int i = 0; i < 3; i++)
    fake_init(&f[i], t);
  CHECK_EQ_INT(wstun__registry_dispatch(srv, &f[0].e), 1);
  CHECK_EQ_INT(wstun__registry_dispatch(srv, &f[1].e), 1);
  CHECK_EQ_INT(t->nqueued, 2);
  CHECK_EQ_INT(wstun__token_pending(t), 2);
  CHECK_EQ_INT(wstun__registry_dispatch(srv, &f[2].e), 0);
  CHECK_EQ_INT(f[2].fails, 1);
  CHECK_EQ_INT(f[2].status, 504);
  CHECK_EQ_INT(wstun__registry_pause_rx(&f[0].e), 0); /* no tunnel */
  CHECK_EQ_INT(wstun__registry_resume_rx(&f[0].e), 0);
  wstun__registry_unlink(&f[0].e, 0);
  wstun__registry_unlink(&f[0].e, 0); /* twice: harmless */
  CHECK_EQ_INT(t->nqueued, 1);
  CHECK(wstun__list_front(&t->queue) == &f[1].e.link);
  wstun__registry_shutdown(srv);
  CHECK_EQ_INT(f[1].fails, 1);
  CHECK_EQ_INT(f[1].status, 503);
  CHECK_EQ_STR(f[1].text, "Server shutting down");
  CHECK_EQ_INT(t->nqueued, 0);
  CHECK_EQ_INT(f[0].fails, 0);
  sf_end(srv);
}

TEST(sweep_forgets_idle_tokens) {
  wstun_server *srv = sf_begin();
  wstun__token *t = sf_add_token(srv, TOK);
  wstun__token *kept = sf_add_token(srv, "kept-token-with-a-client");
  sf_add_tunnel(kept, "192.0.2.1:1");
  fake f;
  fake_init(&f, t);
  CHECK_EQ_INT(wstun__registry_dispatch(srv, &f.e), 1);
  wstun__registry_sweep(srv); /* not old enough */
  CHECK(wstun__registry_find_token(srv, TOK, strlen(TOK)) != NULL);
  srv->forget_ms = 0;
  wstun__registry_sweep(srv);
  CHECK_EQ_INT(f.fails, 1);
  CHECK_EQ_INT(f.status, 404);
  CHECK(wstun__registry_find_token(srv, TOK, strlen(TOK)) == NULL);
  CHECK(wstun__registry_find_token(srv, "kept-token-with-a-client", 24) ==
        kept);
  CHECK_EQ_INT(srv->ntokens, 1);
  sf_end(srv);
}

/* A request still uploading its body is in no list of its token's, but
 * points at it: the sweep must not free the token under it. */
TEST(sweep_keeps_a_held_token) {
  wstun_server *srv = sf_begin();
  wstun__token *t = sf_add_token(srv, TOK);
  t->had_tunnel = 1;
  wstun__registry_token_hold(t);
  srv->forget_ms = 0;
  wstun__registry_sweep(srv);
  CHECK(wstun__registry_find_token(srv, TOK, strlen(TOK)) == t);
  wstun__registry_token_drop(t);
  wstun__registry_sweep(srv);
  CHECK(wstun__registry_find_token(srv, TOK, strlen(TOK)) == NULL);
  sf_end(srv);
}

/* -unknown-token-wait: a token made for a waiting request goes at the
 * first sweep after nothing holds it, not after forget_ms; one that had a
 * tunnel is kept for forget_ms as before. */
TEST(sweep_drops_made_up_tokens_once_unheld) {
  wstun_server *srv = sf_begin();
  srv->forget_ms = 3600 * 1000;
  wstun__token *t = wstun__registry_expect_token(srv, TOK, strlen(TOK));
  CHECK(t != NULL);
  wstun__token *seen = sf_add_token(srv, "token-that-had-a-tunnel");
  seen->had_tunnel = 1;
  wstun__registry_token_hold(t);
  wstun__registry_sweep(srv);
  CHECK(wstun__registry_find_token(srv, TOK, strlen(TOK)) == t);
  wstun__registry_token_drop(t);
  wstun__registry_sweep(srv);
  CHECK(wstun__registry_find_token(srv, TOK, strlen(TOK)) == NULL);
  CHECK(wstun__registry_find_token(srv, "token-that-had-a-tunnel", 23) == seen);
  sf_end(srv);
}

static void count_one(wstun__reg_entry *e, void *ud) {
  (void)e;
  (*(int *)ud)++;
}

TEST(stats_and_inflight) {
  wstun_server *srv = sf_begin();
  wstun__token *t = sf_add_token(srv, TOK);
  sf_add_token(srv, "another-token-without-client");
  wstun__srv_tunnel *st = sf_add_tunnel(t, "192.0.2.1:1");
  CHECK(wstun__token_first_tunnel(t) == st);
  fake f;
  fake_init(&f, t);
  f.e.tun = st;
  wstun__list_push_back(&st->inflight, &f.e.link);
  st->ninflight = 1;
  int n = 0;
  wstun__registry_foreach_inflight(t, count_one, &n);
  CHECK_EQ_INT(n, 1);
  wstun_server_stats s;
  wstun_server_get_stats(srv, &s);
  CHECK_EQ_INT(s.tokens, 2);
  CHECK_EQ_INT(s.tunnels, 1);
  CHECK_EQ_INT(s.tunnel_connections, 1);
  CHECK_EQ_INT(s.pending_requests, 1);
  CHECK_EQ_INT(wstun_server_tunnel_count(srv), 1);
  wstun__registry_unlink(&f.e, 0);
  CHECK_EQ_INT(st->ninflight, 0);
  CHECK(f.e.tun == NULL);
  sf_end(srv);
}

/* An upgrade (v2_only) goes on no v1 tunnel: with only live v1 tunnels it
 * gets 501 at once, with none it waits like any request, and with a live
 * v2 tunnel that is full for now it waits for a stream. (The tunnels here
 * are records with a blank tunnel: live, but nothing is sent on them.) */
TEST(upgrades_only_on_v2) {
  wstun_server *srv = sf_begin();
  wstun__token *t = sf_add_token(srv, TOK);
  fake f;
  fake_init(&f, t);
  f.e.v2_only = 1;
  CHECK_EQ_INT(wstun__registry_dispatch(srv, &f.e), 1); /* no tunnel yet */
  wstun__registry_unlink(&f.e, 0);
  wstun__tunnel blank;
  memset(&blank, 0, sizeof(blank));
  wstun__list_init(&blank.queue);
  wstun__list_init(&blank.sent);
  wstun__srv_tunnel *v1 = sf_add_tunnel(t, "192.0.2.1:1");
  v1->t = &blank;
  fake_init(&f, t);
  f.e.v2_only = 1;
  CHECK_EQ_INT(wstun__registry_dispatch(srv, &f.e), 0);
  CHECK_EQ_INT(f.fails, 1);
  CHECK_EQ_INT(f.status, 501);
  CHECK_EQ_STR(f.text, "Protocol upgrades are not tunneled");
  CHECK_EQ_INT(t->nqueued, 0);
  /* a closing v1 tunnel is no tunnel: it waits */
  blank.closing = 1;
  fake_init(&f, t);
  f.e.v2_only = 1;
  CHECK_EQ_INT(wstun__registry_dispatch(srv, &f.e), 1);
  wstun__registry_unlink(&f.e, 0);
  blank.closing = 0;
  wstun__srv_tunnel *v2 = sf_add_tunnel(t, "192.0.2.2:2");
  v2->t = &blank;
  v2->v2 = 1;
  v2->ninflight = WSTUN__REG_V2_STREAMS; /* full for now */
  fake_init(&f, t);
  f.e.v2_only = 1;
  CHECK_EQ_INT(wstun__registry_dispatch(srv, &f.e), 1);
  CHECK_EQ_INT(f.fails, 0);
  wstun__registry_unlink(&f.e, 0);
  v1->t = v2->t = NULL;
  sf_end(srv);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {T(tokens_and_passwords),
                                    T(connection_caps),
                                    T(queue),
                                    T(sweep_forgets_idle_tokens),
                                    T(sweep_keeps_a_held_token),
                                    T(sweep_drops_made_up_tokens_once_unheld),
                                    T(stats_and_inflight),
                                    T(upgrades_only_on_v2)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
