/* The server's path router, wstun__route_target (wstun_router.c): base path
 * stripped, "/_token/<token>[/path][?query]" split into the token and the
 * target forwarded down the tunnel. Checked against a reference reading of
 * the rules, and for the properties that matter to security: the target is
 * exactly base + "/_token/" + token + rest, the token never holds a '/' or
 * a '?', never reaches into the query, and the forwarded target always
 * starts with '/'.
 *
 * Input: byte 0 the size of the output buffer (0: 4096, as the server
 * uses; else 1..255), then "base\0target" (no NUL: no base path). */
#include "fuzz_util.h"
#include "wstun_router.h"

static int under_base(const char *base, size_t blen, const char *t,
                      size_t tlen) {
  if (blen == 0)
    return 1;
  if (tlen < blen || memcmp(t, base, blen) != 0)
    return 0;
  return tlen == blen || t[blen] == '/' || t[blen] == '?';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fz_in in = {data, size};
  uint8_t c = fz_byte(&in);
  size_t cap = c ? c : 4096;
  const char *raw = (const char *)in.d;
  const char *nul = memchr(raw, '\0', in.n);
  const char *base = "";
  size_t blen = 0;
  const char *tsrc = raw;
  size_t tlen = in.n;
  if (nul != NULL) {
    base = raw;
    blen = (size_t)(nul - raw);
    tsrc = nul + 1;
    tlen = in.n - blen - 1;
  }
  /* exact-size copies, so that ASan sees any read past either end */
  char *b = malloc(blen ? blen : 1);
  char *t = malloc(tlen ? tlen : 1);
  char *buf = malloc(cap);
  if (b == NULL || t == NULL || buf == NULL)
    abort();
  memcpy(b, base, blen);
  memcpy(t, tsrc, tlen);

  wstun__route r;
  int rc = wstun__route_target(b, blen, t, tlen, buf, cap, &r);
  int in_base = under_base(b, blen, t, tlen);
  FZ_CHECK(rc == (in_base ? 0 : -1), "rc %d, under the base: %d", rc, in_base);
  if (rc == 0) {
    FZ_CHECK(r.path == t + blen && r.len == tlen - blen, "path not stripped");
    const char *q = memchr(r.path, '?', r.len);
    size_t plen = q ? (size_t)(q - r.path) : r.len;
    FZ_CHECK(r.plen == plen, "plen %zu, expected %zu", r.plen, plen);
    int is_tok = plen >= 8 && memcmp(r.path, "/_token/", 8) == 0;
    FZ_CHECK((r.tok != NULL) == is_tok, "token form %d, expected %d",
             r.tok != NULL, is_tok);
    if (is_tok) {
      FZ_CHECK(r.tok == r.path + 8, "token not after /_token/");
      FZ_CHECK(8 + r.toklen <= plen, "token reaches into the query");
      FZ_CHECK(memchr(r.tok, '/', r.toklen) == NULL &&
                   memchr(r.tok, '?', r.toklen) == NULL,
               "token holds a separator");
      const char *rest = r.tok + r.toklen;
      size_t rlen = r.len - 8 - r.toklen;
      FZ_CHECK(rlen == 0 || rest[0] == '/' || rest[0] == '?',
               "token stopped early");
      if (rlen > 0 && rest[0] == '/') {
        FZ_CHECK(r.fwd == rest && r.fwdlen == rlen, "rest not forwarded");
      } else if (rlen + 1 < cap) {
        FZ_CHECK(r.fwd == buf && r.fwdlen == rlen + 1 && buf[0] == '/' &&
                     memcmp(buf + 1, rest, rlen) == 0 && buf[rlen + 1] == '\0',
                 "bad synthesized target");
      } else {
        FZ_CHECK(r.fwd == NULL, "a target that does not fit was written");
      }
      if (r.fwd != NULL)
        FZ_CHECK(r.fwdlen > 0 && r.fwd[0] == '/', "target not a path");
    } else {
      FZ_CHECK(r.fwd == NULL && r.toklen == 0, "forwarded without a token");
    }
  }
  free(buf);
  free(t);
  free(b);
  return 0;
}
