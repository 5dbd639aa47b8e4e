/* Error codes: wstun's own and libuv's share one int namespace (callbacks
 * and logs carry either), so they must never collide and wstun_strerror()
 * must name both. */
#include "test.h"
#include "wstun/wstun.h"
#include "wstun_conn.h"

static const struct {
  int code;
  const char *name;
} wstun_codes[] = {
#define XX(name, val, msg) {WSTUN_##name, #name},
    WSTUN_ERRNO_MAP(XX)
#undef XX
};

static const int uv_codes[] = {
#define XX(name, msg) UV_##name,
    UV_ERRNO_MAP(XX)
#undef XX
};

TEST(wstun_codes_are_not_libuv_codes) {
  for (size_t i = 0; i < TEST_COUNT(wstun_codes); i++) {
    test_context("WSTUN_%s", wstun_codes[i].name);
    CHECK(wstun_codes[i].code < 0);
    for (size_t j = 0; j < TEST_COUNT(uv_codes); j++)
      CHECK(wstun_codes[i].code != uv_codes[j]);
  }
  test_context(NULL);
}

TEST(strerror_names_libuv_codes_as_libuv_does) {
  /* UV_ENOENT used to read "out of memory" (it is -2, as was ENOMEM) */
  CHECK_EQ_STR(wstun_strerror(UV_ENOENT), uv_strerror(UV_ENOENT));
  for (size_t j = 0; j < TEST_COUNT(uv_codes); j++) {
    test_context("uv code %d", uv_codes[j]);
    CHECK_EQ_STR(wstun_strerror(uv_codes[j]), uv_strerror(uv_codes[j]));
    for (size_t i = 0; i < TEST_COUNT(wstun_codes); i++) {
      /* the same words only where the meaning is the same */
      int c = wstun_codes[i].code, u = uv_codes[j];
      if ((c == WSTUN_EINVAL && u == UV_EINVAL) ||
          (c == WSTUN_ENOMEM && u == UV_EAI_MEMORY))
        continue;
      CHECK(strcmp(wstun_strerror(u), wstun_strerror(c)) != 0);
    }
  }
  test_context(NULL);
}

TEST(strerror_texts_are_distinct) {
  for (size_t i = 0; i < TEST_COUNT(wstun_codes); i++) {
    test_context("WSTUN_%s", wstun_codes[i].name);
    CHECK(strcmp(wstun_strerror(wstun_codes[i].code), "unknown error") != 0);
    for (size_t k = i + 1; k < TEST_COUNT(wstun_codes); k++)
      CHECK(strcmp(wstun_strerror(wstun_codes[i].code),
                   wstun_strerror(wstun_codes[k].code)) != 0);
  }
  test_context(NULL);
  CHECK_EQ_STR(wstun_strerror(WSTUN_ENOMEM), "out of memory");
  CHECK_EQ_STR(wstun_strerror(WSTUN_ETIMEDOUT), "timed out");
  CHECK_EQ_STR(wstun_strerror(0), "success");
  CHECK_EQ_STR(wstun_strerror(12345), "unknown error");
}

TEST(conn_strerror_tells_them_apart) {
  wstun__conn c;
  memset(&c, 0, sizeof(c)); /* plain TCP */
  CHECK_EQ_STR(wstun__conn_strerror(&c, UV_ENOENT), uv_strerror(UV_ENOENT));
  CHECK_EQ_STR(wstun__conn_strerror(&c, UV_ECONNRESET),
               uv_strerror(UV_ECONNRESET));
  CHECK_EQ_STR(wstun__conn_strerror(&c, UV_EOF), uv_strerror(UV_EOF));
  for (size_t i = 0; i < TEST_COUNT(wstun_codes); i++) {
    test_context("WSTUN_%s", wstun_codes[i].name);
    CHECK_EQ_STR(wstun__conn_strerror(&c, wstun_codes[i].code),
                 wstun_strerror(wstun_codes[i].code));
  }
  test_context(NULL);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(wstun_codes_are_not_libuv_codes),
      T(strerror_names_libuv_codes_as_libuv_does),
      T(strerror_texts_are_distinct),
      T(conn_strerror_tells_them_apart),
  };
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
