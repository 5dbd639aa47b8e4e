/* The tunnel client's dialer reading an answer (wstun__dialer_expect /
 * wstun__dialer_feed, no sockets): the proxy's to CONNECT or the server's
 * to the WebSocket upgrade (RFC 6455 sample key), fed in data-derived
 * chunks and once whole. Checks: the result is 0 (more needed), 1 or the
 * phase's error with a reason; a good proxy answer is 2xx with nothing
 * after it, a good upgrade is 101 with the right accept; whole and
 * chunked agree on the result, the reason and where the head ended
 * (except that bytes behind a proxy's answer, chunked, may come in a later
 * chunk: they would be the next phase's); while more is needed every byte
 * is consumed; no memory errors.
 *
 * Input: byte 0 flags (bit 0: the proxy's answer), byte 1 split seed,
 * then the answer. */
#include "fuzz_util.h"
#include "wstun_dialer.h"

#define RFC_KEY "dGhlIHNhbXBsZSBub25jZQ=="

typedef struct result {
  int rc;
  size_t used; /* of the whole input, when rc == 1 */
  int status;
  char why[256];
} result;

static void run(int proxy, const uint8_t *d, size_t n, uint8_t seed,
                result *r) {
  wstun__dialer dl;
  memset(&dl, 0, sizeof(dl));
  memcpy(dl.ws_key, RFC_KEY, sizeof(RFC_KEY));
  wstun__dialer_expect(&dl, proxy ? WSTUN__DIAL_PROXY : WSTUN__DIAL_HANDSHAKE);
  fz_split sp;
  fz_split_init(&sp, seed);
  size_t off = 0;
  memset(r, 0, sizeof(*r));
  while (off < n && r->rc == 0) {
    size_t c = fz_split_next(&sp, n - off), used = 0;
    r->rc = wstun__dialer_feed(&dl, d + off, c, &used, r->why, sizeof(r->why));
    FZ_CHECK(used <= c, "used %zu of %zu", used, c);
    if (r->rc == 0)
      FZ_CHECK(used == c, "more needed but %zu of %zu used", used, c);
    r->used = off + used;
    off += c;
  }
  if (r->rc == 1)
    r->status = dl.hs.head.status;
  wstun__dialer_answer_done(&dl);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  uint8_t flags = fz_byte(&in);
  uint8_t seed = fz_byte(&in);
  int proxy = flags & 1;
  result whole, split;
  run(proxy, in.d, in.n, 0, &whole);
  run(proxy, in.d, in.n, seed, &split);
  int err = proxy ? WSTUN_ECONNECT : WSTUN_EHANDSHAKE;
  const result *rs[2] = {&whole, &split};
  for (int i = 0; i < 2; i++) {
    const result *r = rs[i];
    FZ_CHECK(r->rc == 0 || r->rc == 1 || r->rc == err, "rc %d", r->rc);
    if (r->rc < 0)
      FZ_CHECK(r->why[0] != '\0', "error %d without a reason", r->rc);
    if (r->rc == 1 && proxy)
      FZ_CHECK(r->status >= 200 && r->status <= 299, "proxy status %d",
               r->status);
    if (r->rc == 1 && !proxy)
      FZ_CHECK(r->status == 101, "upgrade status %d", r->status);
    /* where the head ends is llhttp's business (bare LF, a lone CR …);
     * whole and chunked must only agree on it */
    if (r->rc == 1)
      FZ_CHECK(r->used > 0 && r->used <= in.n, "used %zu of %zu", r->used,
               in.n);
  }
  if (whole.rc == 1 && proxy)
    FZ_CHECK(whole.used == in.n, "a good proxy answer with bytes after it");
  if (proxy && whole.rc == err &&
      strcmp(whole.why, "proxy sent data after its answer") == 0) {
    /* chunked, the answer may have ended a chunk before the extra bytes */
    FZ_CHECK(split.rc == 1 || split.rc == err, "split rc %d", split.rc);
  } else {
    FZ_CHECK(whole.rc == split.rc, "whole %d, split %d", whole.rc, split.rc);
    FZ_CHECK(strcmp(whole.why, split.why) == 0, "whole \"%s\", split \"%s\"",
             whole.why, split.why);
    if (whole.rc == 1)
      FZ_CHECK(whole.used == split.used, "used: whole %zu, split %zu",
               whole.used, split.used);
  }
  return 0;
}
