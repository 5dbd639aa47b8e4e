/* The WebSocket opening handshake, both sides, on heads parsed from bytes
 * (whole and one byte at a time), and the base64 helpers. */
#include "wstun_ws.h"

#include <stdlib.h>

#include "test.h"
#include "wstun/wstun.h"
#include "wstun_alloc.h"

static const char rfc_key[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const char rfc_accept[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/* ---- parsing heads from bytes ------------------------------------------- */

typedef struct {
  wstun__http_parser p;
  int heads, completes;
} hs_cap;

static int hs_on_head(void *ud, wstun__http_head *h) {
  hs_cap *c = ud;
  (void)h;
  c->heads++;
  return 0;
}
static int hs_on_body(void *ud, const uint8_t *d, size_t n) {
  (void)ud;
  (void)d;
  (void)n;
  return 0;
}
static int hs_on_complete(void *ud) {
  hs_cap *c = ud;
  c->completes++;
  return 0;
}
static const wstun__http_parser_cbs hs_cbs = {hs_on_head, hs_on_body,
                                              hs_on_complete};

/* Parses one head from s, whole (bytewise = 0) or one byte at a time.
 * The head is in c->p.head afterwards. 0 when a whole head was parsed. */
static int parse_head(hs_cap *c, llhttp_type_t type, const char *s,
                      int bytewise) {
  memset(c, 0, sizeof(*c));
  wstun__http_parser_init(&c->p, type, 8192, 0, &hs_cbs, c);
  size_t len = strlen(s), used = 0;
  int rc = WSTUN__HTTP_OK;
  if (!bytewise) {
    rc = wstun__http_parser_feed(&c->p, (const uint8_t *)s, len, &used);
  } else {
    for (size_t i = 0; i < len && rc == WSTUN__HTTP_OK; i++)
      rc = wstun__http_parser_feed(&c->p, (const uint8_t *)s + i, 1, &used);
  }
  if (rc == WSTUN__HTTP_ERROR)
    return -1;
  return c->heads == 1 ? 0 : -1;
}

static const char good_req[] = "GET /wstunnel/_tunnel HTTP/1.1\r\n"
                               "Host: server.example:8080\r\n"
                               "Upgrade: websocket\r\n"
                               "Connection: Upgrade\r\n"
                               "Sec-WebSocket-Version: 13\r\n"
                               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                               "Origin: 0123456789abcdef\r\n"
                               "\r\n";

/* ---- accept key --------------------------------------------------------- */

TEST(accept_key_rfc6455_example) {
  char out[WSTUN__WS_ACCEPT_LEN + 1];
  memset(out, 'x', sizeof(out));
  CHECK_EQ_INT(wstun__ws_accept_key(rfc_key, out), 0);
  CHECK_EQ_STR(out, rfc_accept);
  CHECK_EQ_INT(strlen(out), WSTUN__WS_ACCEPT_LEN);
  /* another known pair (computed independently with Python's hashlib) */
  CHECK_EQ_INT(wstun__ws_accept_key("x3JJHMbDL1EzLkh9GBhXDw==", out), 0);
  CHECK_EQ_STR(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

TEST(new_key_is_random_base64_of_16_bytes) {
  wstun__rng rng;
  REQUIRE(wstun__rng_init(&rng) == 0);
  char k1[WSTUN__WS_KEY_LEN + 1], k2[WSTUN__WS_KEY_LEN + 1];
  CHECK_EQ_INT(wstun__ws_new_key(&rng, k1), 0);
  CHECK_EQ_INT(wstun__ws_new_key(&rng, k2), 0);
  CHECK_EQ_INT(strlen(k1), 24);
  CHECK_EQ_INT(strlen(k2), 24);
  CHECK(strcmp(k1, k2) != 0);
  CHECK_EQ_STR(k1 + 22, "==");
  for (int i = 0; i < 22; i++)
    CHECK(
        strchr(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
            k1[i]) != NULL);
  unsigned char *raw = NULL;
  size_t n = 0;
  CHECK_EQ_INT(wstun__base64_decode(k1, &raw, &n), 0);
  CHECK_EQ_INT(n, 16);
  wstun__free(raw);
  /* 100 keys, all different */
  char keys[100][WSTUN__WS_KEY_LEN + 1];
  for (int i = 0; i < 100; i++)
    CHECK_EQ_INT(wstun__ws_new_key(&rng, keys[i]), 0);
  int dup = 0;
  for (int i = 0; i < 100; i++)
    for (int j = i + 1; j < 100; j++)
      if (strcmp(keys[i], keys[j]) == 0)
        dup++;
  CHECK_EQ_INT(dup, 0);
  wstun__rng_free(&rng);
}

/* ---- server side: checking the upgrade request -------------------------- */

TEST(check_upgrade_valid) {
  static const char *const reqs[] = {
      good_req,
      /* tokens are case-insensitive and may sit in lists */
      "GET /_tunnel HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\n"
      "Connection: keep-alive, upgrade\r\nSec-WebSocket-Version: 13\r\n"
      "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n\r\n",
      "GET /_tunnel HTTP/1.1\r\nhost: h\r\nupgrade: websocket\r\n"
      "connection: UPGRADE\r\nsec-websocket-version: 13\r\n"
      "sec-websocket-key: x3JJHMbDL1EzLkh9GBhXDw==\r\n\r\n",
  };
  for (size_t i = 0; i < TEST_COUNT(reqs); i++) {
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      test_context("request %zu, %s", i, bytewise ? "bytewise" : "whole");
      hs_cap c;
      CHECK_EQ_INT(parse_head(&c, HTTP_REQUEST, reqs[i], bytewise), 0);
      const char *why = "untouched";
      CHECK_EQ_INT(wstun__ws_check_upgrade(&c.p.head, &why), 0);
      wstun__http_parser_free(&c.p);
    }
  }
}

TEST(check_upgrade_refusals) {
  static const struct {
    const char *req;
    int status;
  } cases[] = {
      /* no Upgrade */
      {"GET /_tunnel HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\n"
       "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
       "dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
       400},
      /* Upgrade to something else */
      {"GET /_tunnel HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
       400},
      /* no Connection */
      {"GET /_tunnel HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
       "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
       "dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
       400},
      /* Connection without upgrade */
      {"GET /_tunnel HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
       "Connection: keep-alive\r\nSec-WebSocket-Version: 13\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
       400},
      /* wrong or missing version */
      {"GET /_tunnel HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Version: 8\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
       426},
      {"GET /_tunnel HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\n"
       "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
       426},
      /* key missing, not base64, or not 16 bytes */
      {"GET /_tunnel HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
       400},
      {"GET /_tunnel HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
       "Sec-WebSocket-Key: !!!!!!!!!!!!!!!!!!!!!!!!\r\n\r\n",
       400},
      {"GET /_tunnel HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
       "Sec-WebSocket-Key: aGVsbG8=\r\n\r\n",
       400},
      {"GET /_tunnel HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
       "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAAAA\r\n\r\n",
       400},
      {"GET /_tunnel HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
       "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
       "Sec-WebSocket-Key: \r\n\r\n",
       400},
  };
  for (size_t i = 0; i < TEST_COUNT(cases); i++) {
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      test_context("case %zu, %s", i, bytewise ? "bytewise" : "whole");
      hs_cap c;
      CHECK_EQ_INT(parse_head(&c, HTTP_REQUEST, cases[i].req, bytewise), 0);
      const char *why = NULL;
      CHECK_EQ_INT(wstun__ws_check_upgrade(&c.p.head, &why), cases[i].status);
      CHECK(why != NULL && why[0] != '\0');
      wstun__http_parser_free(&c.p);
    }
  }
}

TEST(write_accept_golden) {
  hs_cap c;
  REQUIRE(parse_head(&c, HTTP_REQUEST, good_req, 0) == 0);
  wstun__buf out;
  wstun__buf_init(&out);
  CHECK_EQ_INT(wstun__ws_write_accept(&c.p.head, &out), 0);
  CHECK_BYTES_STR(wstun__buf_data(&out), wstun__buf_size(&out),
                  "HTTP/1.1 101 Switching Protocols\r\n"
                  "Upgrade: websocket\r\n"
                  "Connection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                  "\r\n");
  wstun__buf_free(&out);
  wstun__http_parser_free(&c.p);
  /* no key: nothing written */
  REQUIRE(parse_head(&c, HTTP_REQUEST,
                     "GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 0) == 0);
  wstun__buf_init(&out);
  CHECK_EQ_INT(wstun__ws_write_accept(&c.p.head, &out), WSTUN_EINVAL);
  CHECK_EQ_INT(wstun__buf_size(&out), 0);
  wstun__buf_free(&out);
  wstun__http_parser_free(&c.p);
}

/* ---- client side: checking the answer ----------------------------------- */

TEST(check_accept_round_trip) {
  /* the server's own answer satisfies the client, parsed both ways */
  hs_cap rq;
  REQUIRE(parse_head(&rq, HTTP_REQUEST, good_req, 0) == 0);
  wstun__buf out;
  wstun__buf_init(&out);
  REQUIRE(wstun__ws_write_accept(&rq.p.head, &out) == 0);
  wstun__buf_append(&out, "", 1);
  for (int bytewise = 0; bytewise < 2; bytewise++) {
    test_context("%s", bytewise ? "bytewise" : "whole");
    hs_cap rs;
    CHECK_EQ_INT(parse_head(&rs, HTTP_RESPONSE,
                            (const char *)wstun__buf_data(&out), bytewise),
                 0);
    CHECK_EQ_INT(rs.p.head.status, 101);
    CHECK_EQ_INT(wstun__ws_check_accept(&rs.p.head, rfc_key), 0);
    CHECK_EQ_INT(wstun__ws_check_accept(&rs.p.head, "x3JJHMbDL1EzLkh9GBhXDw=="),
                 WSTUN_EHANDSHAKE);
    wstun__http_parser_free(&rs.p);
  }
  wstun__buf_free(&out);
  wstun__http_parser_free(&rq.p);
}

TEST(check_accept_refusals) {
  static const char *const bad[] = {
      /* wrong accept value */
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOO=\r\n\r\n",
      /* no accept */
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\n\r\n",
      /* not 101 */
      "HTTP/1.1 200 OK\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
      "Content-Length: 0\r\n\r\n",
      "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
      /* missing Upgrade */
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
      /* missing Connection */
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
      /* accept value with a suffix */
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=x\r\n\r\n",
  };
  for (size_t i = 0; i < TEST_COUNT(bad); i++) {
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      test_context("case %zu, %s", i, bytewise ? "bytewise" : "whole");
      hs_cap rs;
      CHECK_EQ_INT(parse_head(&rs, HTTP_RESPONSE, bad[i], bytewise), 0);
      CHECK_EQ_INT(wstun__ws_check_accept(&rs.p.head, rfc_key),
                   WSTUN_EHANDSHAKE);
      wstun__http_parser_free(&rs.p);
    }
  }
  /* and the good one, as a control */
  hs_cap rs;
  CHECK_EQ_INT(
      parse_head(&rs, HTTP_RESPONSE,
                 "HTTP/1.1 101 Switching Protocols\r\n"
                 "upgrade: WebSocket\r\nconnection: upgrade\r\n"
                 "sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                 1),
      0);
  CHECK_EQ_INT(wstun__ws_check_accept(&rs.p.head, rfc_key), 0);
  wstun__http_parser_free(&rs.p);
}

/* ---- base64 -------------------------------------------------------------- */

TEST(base64_golden_and_round_trip) {
  static const struct {
    const char *raw, *b64;
  } golden[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
      {"tok0123456789abc:pass", "dG9rMDEyMzQ1Njc4OWFiYzpwYXNz"},
  };
  for (size_t i = 0; i < TEST_COUNT(golden); i++) {
    test_context("\"%s\"", golden[i].raw);
    char *enc = NULL;
    CHECK_EQ_INT(
        wstun__base64_encode(golden[i].raw, strlen(golden[i].raw), &enc), 0);
    CHECK_EQ_STR(enc, golden[i].b64);
    wstun__free(enc);
    unsigned char *dec = NULL;
    size_t n = 99;
    CHECK_EQ_INT(wstun__base64_decode(golden[i].b64, &dec, &n), 0);
    CHECK_EQ_INT(n, strlen(golden[i].raw));
    if (dec != NULL) {
      CHECK_MEM(dec, golden[i].raw, n);
      CHECK_EQ_INT(dec[n], 0); /* NUL-terminated */
    }
    wstun__free(dec);
  }
  test_context(NULL);
  /* every byte value, every length up to 64 */
  unsigned char raw[64];
  for (size_t i = 0; i < sizeof(raw); i++)
    raw[i] = (unsigned char)(255 - i * 5);
  int bad = 0;
  for (size_t len = 0; len <= sizeof(raw); len++) {
    char *enc = NULL;
    unsigned char *dec = NULL;
    size_t n = 0;
    if (wstun__base64_encode(raw, len, &enc) != 0 ||
        strlen(enc) != (len + 2) / 3 * 4)
      bad++;
    else if (wstun__base64_decode(enc, &dec, &n) != 0 || n != len ||
             (len && memcmp(dec, raw, len) != 0))
      bad++;
    wstun__free(enc);
    wstun__free(dec);
  }
  CHECK_EQ_INT(bad, 0);
}

TEST(base64_rejects_garbage) {
  static const char *const bad[] = {
      "!!!!", "aGV$bG8=",     "aGVs bG8=", "Zm9v\x80", "=Zm9", "Zg=a",
      "Z===", "Zm9vYmFy====", "Zm9v\x01",  "Zm-v",     "Zm_v",
  };
  for (size_t i = 0; i < TEST_COUNT(bad); i++) {
    test_context("\"%s\"", bad[i]);
    unsigned char *dec = (unsigned char *)"not touched";
    size_t n = 99;
    CHECK_EQ_INT(wstun__base64_decode(bad[i], &dec, &n), WSTUN_EINVAL);
    CHECK(dec == NULL);
    CHECK_EQ_INT(n, 0);
  }
}

/* ---- subprotocol negotiation (PROTOCOL.md 7.1) ----------------------------
 */

#define V2_REQ(lines)                                                          \
  "GET /_tunnel HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"                 \
  "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"                       \
  "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" lines "\r\n"

TEST(offers_matches_the_exact_token) {
  static const struct {
    const char *req;
    int offered;
  } cases[] = {
      {V2_REQ("Sec-WebSocket-Protocol: wstun.v2\r\n"), 1},
      {V2_REQ("Sec-WebSocket-Protocol: chat, wstun.v2\r\n"), 1},
      {V2_REQ("Sec-WebSocket-Protocol: chat\r\n"
              "Sec-WebSocket-Protocol:  wstun.v2 ,x\r\n"),
       1},
      {V2_REQ(""), 0},
      {V2_REQ("Sec-WebSocket-Protocol: WSTUN.V2\r\n"), 0}, /* case-sensitive */
      {V2_REQ("Sec-WebSocket-Protocol: wstun.v2x, xwstun.v2\r\n"), 0},
      {V2_REQ("Sec-WebSocket-Protocol: wstun.v\r\n"), 0},
      {V2_REQ("Sec-WebSocket-Protocol:\r\n"), 0},
      {V2_REQ("Sec-WebSocket-Protocol: chat;wstun.v2\r\n"), 0},
  };
  for (size_t i = 0; i < TEST_COUNT(cases); i++) {
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      test_context("case %zu, %s", i, bytewise ? "bytewise" : "whole");
      hs_cap c;
      REQUIRE(parse_head(&c, HTTP_REQUEST, cases[i].req, bytewise) == 0);
      CHECK_EQ_INT(wstun__ws_offers(&c.p.head, "wstun.v2"), cases[i].offered);
      wstun__http_parser_free(&c.p);
    }
  }
}

TEST(write_accept_names_the_protocol) {
  hs_cap c;
  REQUIRE(parse_head(&c, HTTP_REQUEST, good_req, 0) == 0);
  wstun__buf out;
  wstun__buf_init(&out);
  CHECK_EQ_INT(wstun__ws_write_accept_proto(&c.p.head, "wstun.v2", &out), 0);
  CHECK_BYTES_STR(wstun__buf_data(&out), wstun__buf_size(&out),
                  "HTTP/1.1 101 Switching Protocols\r\n"
                  "Upgrade: websocket\r\n"
                  "Connection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                  "Sec-WebSocket-Protocol: wstun.v2\r\n"
                  "\r\n");
  /* and it satisfies the client that offered it */
  wstun__buf_append(&out, "", 1);
  hs_cap rs;
  REQUIRE(parse_head(&rs, HTTP_RESPONSE, (const char *)wstun__buf_data(&out),
                     1) == 0);
  int chosen = -1;
  CHECK_EQ_INT(wstun__ws_check_accept(&rs.p.head, rfc_key), 0);
  CHECK_EQ_INT(wstun__ws_check_protocol(&rs.p.head, "wstun.v2", &chosen), 0);
  CHECK_EQ_INT(chosen, 1);
  /* one we did not offer: a failed handshake, never a fallback */
  chosen = -1;
  CHECK_EQ_INT(wstun__ws_check_protocol(&rs.p.head, NULL, &chosen),
               WSTUN_EHANDSHAKE);
  CHECK_EQ_INT(chosen, 0);
  wstun__http_parser_free(&rs.p);
  wstun__buf_free(&out);
  wstun__http_parser_free(&c.p);
}

TEST(check_protocol_answers) {
  static const struct {
    const char *lines;
    int rc, chosen;
  } cases[] = {
      {"", 0, 0}, /* a v1 server (Go): v1 on the same connection */
      {"Sec-WebSocket-Protocol: wstun.v2\r\n", 0, 1},
      {"Sec-WebSocket-Protocol: chat\r\n", WSTUN_EHANDSHAKE, 0},
      {"Sec-WebSocket-Protocol: wstun.v2, chat\r\n", WSTUN_EHANDSHAKE, 0},
      {"Sec-WebSocket-Protocol: wstun.v2\r\n"
       "Sec-WebSocket-Protocol: wstun.v2\r\n",
       WSTUN_EHANDSHAKE, 0},
      {"Sec-WebSocket-Protocol: WSTUN.V2\r\n", WSTUN_EHANDSHAKE, 0},
  };
  for (size_t i = 0; i < TEST_COUNT(cases); i++) {
    for (int bytewise = 0; bytewise < 2; bytewise++) {
      test_context("case %zu, %s", i, bytewise ? "bytewise" : "whole");
      char resp[512];
      snprintf(resp, sizeof(resp),
               "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\n"
               "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n%s\r\n",
               cases[i].lines);
      hs_cap rs;
      REQUIRE(parse_head(&rs, HTTP_RESPONSE, resp, bytewise) == 0);
      int chosen = -1;
      CHECK_EQ_INT(wstun__ws_check_protocol(&rs.p.head, "wstun.v2", &chosen),
                   cases[i].rc);
      CHECK_EQ_INT(chosen, cases[i].chosen);
      wstun__http_parser_free(&rs.p);
    }
  }
}

int main(int argc, char **argv) {
  static const test_case tests[] = {T(accept_key_rfc6455_example),
                                    T(new_key_is_random_base64_of_16_bytes),
                                    T(check_upgrade_valid),
                                    T(check_upgrade_refusals),
                                    T(write_accept_golden),
                                    T(check_accept_round_trip),
                                    T(check_accept_refusals),
                                    T(base64_golden_and_round_trip),
                                    T(base64_rejects_garbage),
                                    T(offers_matches_the_exact_token),
                                    T(write_accept_names_the_protocol),
                                    T(check_protocol_answers)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
