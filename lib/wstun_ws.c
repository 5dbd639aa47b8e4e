/* The WebSocket opening handshake (RFC 6455 section 4) on both sides:
 * keys, Sec-WebSocket-Accept, checking an upgrade request and the answer
 * to ours; and base64 for the handshake and Basic credentials. Pure
 * functions over parsed heads and buffers; framing is wslay's. */
#include "wstun_ws.h"

#include <mbedtls/base64.h>
#include <mbedtls/sha1.h>
#include <string.h>

#include "wstun/wstun.h"
#include "wstun_alloc.h"
#include "wstun_util.h"

static const char ws_guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

int wstun__ws_accept_key(const char *key, char out[WSTUN__WS_ACCEPT_LEN + 1]) {
  unsigned char digest[20];
  size_t klen = strlen(key);
  mbedtls_sha1_context sha;
  mbedtls_sha1_init(&sha);
  int rc = mbedtls_sha1_starts_ret(&sha);
  rc |= mbedtls_sha1_update_ret(&sha, (const unsigned char *)key, klen);
  rc |= mbedtls_sha1_update_ret(&sha, (const unsigned char *)ws_guid,
                                sizeof(ws_guid) - 1);
  rc |= mbedtls_sha1_finish_ret(&sha, digest);
  mbedtls_sha1_free(&sha);
  if (rc != 0)
    return WSTUN_EINVAL;
  size_t olen = 0;
  if (mbedtls_base64_encode((unsigned char *)out, WSTUN__WS_ACCEPT_LEN + 1,
                            &olen, digest, sizeof(digest)) != 0)
    return WSTUN_EINVAL;
  return 0;
}

int wstun__ws_new_key(wstun__rng *rng, char out[WSTUN__WS_KEY_LEN + 1]) {
  unsigned char raw[16];
  size_t olen = 0;
  if (wstun__rng_bytes(rng, raw, sizeof(raw)) != 0)
    return WSTUN_ERNG;
  if (mbedtls_base64_encode((unsigned char *)out, WSTUN__WS_KEY_LEN + 1, &olen,
                            raw, sizeof(raw)) != 0)
    return WSTUN_EINVAL;
  return 0;
}

int wstun__ws_check_upgrade(const wstun__http_head *req, const char **why) {
  const char *v;
  if (!wstun__http_head_has_token(req, "Upgrade", "websocket")) {
    *why = "WebSocket upgrade required";
    return 400;
  }
  if (!wstun__http_head_has_token(req, "Connection", "upgrade")) {
    *why = "Connection: Upgrade required";
    return 400;
  }
  v = wstun__http_head_get(req, "Sec-WebSocket-Version");
  if (v == NULL || strcmp(v, "13") != 0) {
    *why = "Unsupported WebSocket version";
    return 426;
  }
  v = wstun__http_head_get(req, "Sec-WebSocket-Key");
  unsigned char *raw = NULL;
  size_t n = 0;
  if (v == NULL || wstun__base64_decode(v, &raw, &n) != 0 || n != 16) {
    wstun__free(raw);
    *why = "Bad Sec-WebSocket-Key";
    return 400;
  }
  wstun__free(raw);
  return 0;
}

int wstun__ws_write_accept(const wstun__http_head *req, wstun__buf *out) {
  return wstun__ws_write_accept_proto(req, NULL, out);
}

int wstun__ws_write_accept_proto(const wstun__http_head *req,
                                 const char *protocol, wstun__buf *out) {
  char accept[WSTUN__WS_ACCEPT_LEN + 1];
  const char *key = wstun__http_head_get(req, "Sec-WebSocket-Key");
  if (key == NULL || wstun__ws_accept_key(key, accept) != 0)
    return WSTUN_EINVAL;
  int rc = wstun__buf_appendf(out,
                              "HTTP/1.1 101 Switching Protocols\r\n"
                              "Upgrade: websocket\r\n"
                              "Connection: Upgrade\r\n"
                              "Sec-WebSocket-Accept: %s\r\n",
                              accept);
  if (protocol != NULL)
    rc |= wstun__buf_appendf(out, "Sec-WebSocket-Protocol: %s\r\n", protocol);
  return rc | wstun__buf_append_str(out, "\r\n");
}

int wstun__ws_offers(const wstun__http_head *req, const char *name) {
  /* every line, in order, as one list */
  wstun__buf v = WSTUN__BUF_INIT;
  if (wstun__http_head_join(req, "Sec-WebSocket-Protocol", &v) <= 0 ||
      wstun__buf_append(&v, "", 1) != 0) {
    wstun__buf_free(&v);
    return 0;
  }
  const char *cursor = (const char *)v.base, *item;
  size_t len, nlen = strlen(name);
  int found = 0;
  while (!found && wstun__list_next(&cursor, &item, &len))
    found = len == nlen && memcmp(item, name, len) == 0;
  wstun__buf_free(&v);
  return found;
}

int wstun__ws_check_protocol(const wstun__http_head *resp, const char *offered,
                             int *chosen) {
  *chosen = 0;
  wstun__buf v = WSTUN__BUF_INIT;
  int n = wstun__http_head_join(resp, "Sec-WebSocket-Protocol", &v);
  int rc = 0;
  if (n < 0)
    rc = WSTUN_EHANDSHAKE;
  else if (n > 0) {
    /* one value, exactly the one offered */
    rc = wstun__buf_append(&v, "", 1) == 0 && offered != NULL &&
                 strcmp((const char *)v.base, offered) == 0
             ? 0
             : WSTUN_EHANDSHAKE;
    *chosen = rc == 0;
  }
  wstun__buf_free(&v);
  return rc;
}

int wstun__ws_check_accept(const wstun__http_head *resp, const char *key) {
  char want[WSTUN__WS_ACCEPT_LEN + 1];
  if (resp->status != 101)
    return WSTUN_EHANDSHAKE;
  if (!wstun__http_head_has_token(resp, "Upgrade", "websocket") ||
      !wstun__http_head_has_token(resp, "Connection", "upgrade"))
    return WSTUN_EHANDSHAKE;
  const char *got = wstun__http_head_get(resp, "Sec-WebSocket-Accept");
  if (got == NULL || wstun__ws_accept_key(key, want) != 0 ||
      strcmp(got, want) != 0)
    return WSTUN_EHANDSHAKE;
  return 0;
}

int wstun__base64_encode(const void *in, size_t n, char **out) {
  size_t olen = 0;
  mbedtls_base64_encode(NULL, 0, &olen, in, n);
  char *o = wstun__malloc(olen + 1);
  if (o == NULL)
    return WSTUN_ENOMEM;
  if (mbedtls_base64_encode((unsigned char *)o, olen + 1, &olen, in, n) != 0) {
    wstun__free(o);
    return WSTUN_EINVAL;
  }
  o[olen] = '\0';
  *out = o;
  return 0;
}

int wstun__base64_decode(const char *in, unsigned char **out, size_t *n) {
  size_t olen = 0, ilen = strlen(in);
  *out = NULL;
  *n = 0;
  int rc =
      mbedtls_base64_decode(NULL, 0, &olen, (const unsigned char *)in, ilen);
  if (rc == MBEDTLS_ERR_BASE64_INVALID_CHARACTER)
    return WSTUN_EINVAL;
  unsigned char *o = wstun__malloc(olen + 1);
  if (o == NULL)
    return WSTUN_ENOMEM;
  if (mbedtls_base64_decode(o, olen + 1, &olen, (const unsigned char *)in,
                            ilen) != 0) {
    wstun__free(o);
    return WSTUN_EINVAL;
  }
  o[olen] = '\0';
  *out = o;
  *n = olen;
  return 0;
}
