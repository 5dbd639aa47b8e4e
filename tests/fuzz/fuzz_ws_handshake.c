/* The WebSocket opening handshake: the input parsed as an upgrade request
 * goes through wstun__ws_check_upgrade and, when accepted,
 * wstun__ws_write_accept, whose answer must satisfy our own client side
 * (wstun__ws_check_accept with the request's key); the input parsed as a
 * response goes through wstun__ws_check_accept against the RFC 6455 sample
 * key; the input as a string goes through the base64 helpers and
 * wstun__ws_accept_key. */
#include "fuzz_util.h"
#include "wstun_buf.h"
#include "wstun_http.h"
#include "wstun_ws.h"

#include "wstun_alloc.h"

static const char sample_key[] = "dGhlIHNhbXBsZSBub25jZQ==";
static const char sample_accept[] = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

static int on_head(void *ud, wstun__http_head *h) {
  (void)h;
  ++*(int *)ud;
  return 1; /* the server reads no body on /_tunnel */
}
static const wstun__http_parser_cbs cbs = {on_head, NULL, NULL};

/* 1 and a parsed head in *p (to free) if the bytes hold a complete head. */
static int parse_head(llhttp_type_t type, const uint8_t *d, size_t n,
                      wstun__http_parser *p) {
  int heads = 0;
  size_t used = 0;
  wstun__http_parser_init(p, type, 64 * 1024, 0, &cbs, &heads);
  int rc = wstun__http_parser_feed(p, d, n, &used);
  if (rc == WSTUN__HTTP_ERROR || heads != 1) {
    wstun__http_parser_free(p);
    return 0;
  }
  return 1;
}

static void server_side(const uint8_t *d, size_t n) {
  wstun__http_parser req;
  if (!parse_head(HTTP_REQUEST, d, n, &req))
    return;
  const char *why = NULL;
  int st = wstun__ws_check_upgrade(&req.head, &why);
  if (st != 0) {
    FZ_CHECK(st == 400 || st == 426, "check_upgrade answered %d", st);
    FZ_CHECK(why != NULL && *why, "no reason for %d", st);
    wstun__http_parser_free(&req);
    return;
  }
  const char *key = wstun__http_head_get(&req.head, "Sec-WebSocket-Key");
  FZ_CHECK(key != NULL, "accepted without Sec-WebSocket-Key");
  unsigned char *raw = NULL;
  size_t rawn = 0;
  FZ_CHECK(wstun__base64_decode(key, &raw, &rawn) == 0 && rawn == 16,
           "accepted key \"%s\" is not base64 of 16 bytes", key);
  wstun__free(raw);

  wstun__buf out;
  wstun__buf_init(&out);
  FZ_CHECK(wstun__ws_write_accept(&req.head, &out) == 0, "write_accept failed");
  wstun__http_parser resp;
  FZ_CHECK(parse_head(HTTP_RESPONSE, wstun__buf_data(&out),
                      wstun__buf_size(&out), &resp),
           "our 101 answer does not parse");
  int rc = wstun__ws_check_accept(&resp.head, key);
  FZ_CHECK(rc == 0, "our 101 answer fails our own check_accept (key \"%s\")",
           key);
  wstun__http_parser_free(&resp);
  wstun__buf_free(&out);

  /* PROTOCOL.md 7.1: the echo names wstun.v2 only when offered, and our
   * client side takes exactly that echo */
  int offered = wstun__ws_offers(&req.head, "wstun.v2");
  FZ_CHECK(offered == 0 || offered == 1, "ws_offers gave %d", offered);
  wstun__buf_init(&out);
  FZ_CHECK(wstun__ws_write_accept_proto(&req.head, offered ? "wstun.v2" : NULL,
                                        &out) == 0,
           "write_accept_proto failed");
  FZ_CHECK(parse_head(HTTP_RESPONSE, wstun__buf_data(&out),
                      wstun__buf_size(&out), &resp),
           "our 101 answer with a protocol does not parse");
  int chosen = -1;
  FZ_CHECK(wstun__ws_check_accept(&resp.head, key) == 0 &&
               wstun__ws_check_protocol(&resp.head, "wstun.v2", &chosen) == 0 &&
               chosen == offered,
           "our answer (offered %d) fails our client (chosen %d)", offered,
           chosen);
  if (offered) { /* never taken by a client that did not offer it */
    FZ_CHECK(wstun__ws_check_protocol(&resp.head, NULL, &chosen) ==
                 WSTUN_EHANDSHAKE,
             "an echo nobody offered was taken");
  }
  wstun__http_parser_free(&resp);
  wstun__buf_free(&out);
  wstun__http_parser_free(&req);
}

static void client_side(const uint8_t *d, size_t n) {
  wstun__http_parser resp;
  if (!parse_head(HTTP_RESPONSE, d, n, &resp))
    return;
  if (wstun__ws_check_accept(&resp.head, sample_key) == 0) {
    FZ_CHECK(resp.head.status == 101, "accepted status %d", resp.head.status);
    const char *acc = wstun__http_head_get(&resp.head, "Sec-WebSocket-Accept");
    FZ_CHECK(acc && strcmp(acc, sample_accept) == 0, "accepted a wrong accept");
  }
  /* a subprotocol is taken only when it is exactly the one offered */
  int chosen = -1;
  int prc = wstun__ws_check_protocol(&resp.head, "wstun.v2", &chosen);
  const char *sp = wstun__http_head_get(&resp.head, "Sec-WebSocket-Protocol");
  if (prc == 0 && chosen)
    FZ_CHECK(sp && strcmp(sp, "wstun.v2") == 0, "took subprotocol \"%s\"",
             sp ? sp : "(none)");
  FZ_CHECK(prc == 0 || chosen == 0, "chosen %d on a failure", chosen);
  wstun__http_parser_free(&resp);
}

static void strings(const uint8_t *d, size_t n) {
  char *s = malloc(n + 1);
  if (s == NULL)
    abort();
  memcpy(s, d, n);
  s[n] = '\0';

  char acc[WSTUN__WS_ACCEPT_LEN + 1];
  memset(acc, 'x', sizeof(acc));
  FZ_CHECK(wstun__ws_accept_key(s, acc) == 0, "accept_key failed");
  FZ_CHECK(strlen(acc) == WSTUN__WS_ACCEPT_LEN, "accept key of %zu chars",
           strlen(acc));

  unsigned char *raw = NULL;
  size_t rawn = 0;
  if (wstun__base64_decode(s, &raw, &rawn) == 0) {
    FZ_CHECK(raw != NULL, "decode ok but no output");
    FZ_CHECK(raw[rawn] == '\0', "decoded output not NUL-terminated");
    FZ_CHECK(rawn <= strlen(s), "decoded %zu bytes from %zu chars", rawn,
             strlen(s));
    char *enc = NULL;
    FZ_CHECK(wstun__base64_encode(raw, rawn, &enc) == 0, "encode failed");
    FZ_CHECK(strlen(enc) == (rawn + 2) / 3 * 4, "encoded length %zu for %zu",
             strlen(enc), rawn);
    unsigned char *raw2 = NULL;
    size_t rawn2 = 0;
    FZ_CHECK(wstun__base64_decode(enc, &raw2, &rawn2) == 0, "re-decode failed");
    FZ_CHECK(rawn2 == rawn && memcmp(raw, raw2, rawn) == 0,
             "base64 does not round-trip");
    wstun__free(raw2);
    wstun__free(enc);
  } else {
    FZ_CHECK(raw == NULL && rawn == 0, "failed decode left output");
  }
  wstun__free(raw);
  free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  server_side(data, size);
  client_side(data, size);
  strings(data, size);
  return 0;
}
