/* URL parsing: the tunnel URL and X-Host / backend URLs. X-Host values come
 * from the network, so the rejects matter as much as the accepts. */
#include "wstun_url.h"

#include "test.h"
#include "wstun/wstun.h"

typedef struct {
  const char *in;
  const char *scheme;
  const char *userinfo; /* NULL = none */
  const char *host;
  int port;
  int port_given;
  const char *path;
  int tls;
} url_case;

static void check_ok(const url_case *c) {
  wstun__url u;
  test_context("%s", c->in);
  int rc = wstun__url_parse(c->in, &u);
  CHECK_EQ_INT(rc, 0);
  if (rc != 0)
    return;
  CHECK_EQ_STR(u.scheme, c->scheme);
  CHECK_EQ_STR(u.userinfo, c->userinfo);
  CHECK_EQ_STR(u.host, c->host);
  CHECK_EQ_INT(u.port, c->port);
  CHECK_EQ_INT(u.port_given, c->port_given);
  CHECK_EQ_STR(u.path, c->path);
  CHECK_EQ_INT(wstun__url_is_tls(&u), c->tls);
  wstun__url_free(&u);
  CHECK(u.scheme == NULL && u.host == NULL && u.path == NULL);
}

TEST(schemes_and_default_ports) {
  static const url_case cases[] = {
      {"ws://example.com", "ws", NULL, "example.com", 80, 0, "", 0},
      {"wss://example.com", "wss", NULL, "example.com", 443, 0, "", 1},
      {"http://example.com", "http", NULL, "example.com", 80, 0, "", 0},
      {"https://example.com", "https", NULL, "example.com", 443, 0, "", 1},
      {"ws://example.com:8080", "ws", NULL, "example.com", 8080, 1, "", 0},
      {"wss://example.com:8443/", "wss", NULL, "example.com", 8443, 1, "/", 1},
      {"http://h:80/", "http", NULL, "h", 80, 1, "/", 0},
      {"https://h:1", "https", NULL, "h", 1, 1, "", 1},
      {"http://h:65535", "http", NULL, "h", 65535, 1, "", 0},
      {"HTTP://h", "http", NULL, "h", 80, 0, "", 0},
      {"WsS://h", "wss", NULL, "h", 443, 0, "", 1},
      {"http://127.0.0.1:3000", "http", NULL, "127.0.0.1", 3000, 1, "", 0},
      {"http://my_host-1.example", "http", NULL, "my_host-1.example", 80, 0, "",
       0},
      {"http://h:00080", "http", NULL, "h", 80, 1, "", 0},
  };
  for (size_t i = 0; i < TEST_COUNT(cases); i++)
    check_ok(&cases[i]);
}

TEST(paths_queries_fragments) {
  static const url_case cases[] = {
      {"ws://h:8080/wstunnel", "ws", NULL, "h", 8080, 1, "/wstunnel", 0},
      {"http://h/a/b?x=1&y=2", "http", NULL, "h", 80, 0, "/a/b?x=1&y=2", 0},
      {"http://h?x=1", "http", NULL, "h", 80, 0, "?x=1", 0},
      {"http://h:81?x", "http", NULL, "h", 81, 1, "?x", 0},
      {"http://h/p#frag", "http", NULL, "h", 80, 0, "/p", 0},
      {"http://h/p?q=1#frag", "http", NULL, "h", 80, 0, "/p?q=1", 0},
      {"http://h#frag", "http", NULL, "h", 80, 0, "", 0},
      {"http://h:82#frag/x?y", "http", NULL, "h", 82, 1, "", 0},
      {"http://h/%41%2f", "http", NULL, "h", 80, 0, "/%41%2f", 0},
      {"http://h/a@b", "http", NULL, "h", 80, 0, "/a@b", 0},
      {"http://h/a:b", "http", NULL, "h", 80, 0, "/a:b", 0},
  };
  for (size_t i = 0; i < TEST_COUNT(cases); i++)
    check_ok(&cases[i]);
}

TEST(userinfo) {
  static const url_case cases[] = {
      {"ws://user:pass@h/base", "ws", "user:pass", "h", 80, 0, "/base", 0},
      {"wss://us%40er:p%3Ass%25@h:9", "wss", "us@er:p:ss%", "h", 9, 1, "", 1},
      {"http://allowed.example.com@evil.example", "http", "allowed.example.com",
       "evil.example", 80, 0, "", 0},
      {"http://a@b@c.example/x", "http", "a@b", "c.example", 80, 0, "/x", 0},
      {"http://@h", "http", "", "h", 80, 0, "", 0},
      {"http://u@[::1]:8/", "http", "u", "::1", 8, 1, "/", 0},
      /* an '@' after the authority belongs to the path */
      {"http://h/x@evil.example", "http", NULL, "h", 80, 0, "/x@evil.example",
       0},
      {"http://h?x@evil.example", "http", NULL, "h", 80, 0, "?x@evil.example",
       0},
  };
  for (size_t i = 0; i < TEST_COUNT(cases); i++)
    check_ok(&cases[i]);
}

TEST(ipv6_literals) {
  static const url_case cases[] = {
      {"http://[::1]", "http", NULL, "::1", 80, 0, "", 0},
      {"http://[::1]:8080/x", "http", NULL, "::1", 8080, 1, "/x", 0},
      {"wss://[2001:db8::a:B]/", "wss", NULL, "2001:db8::a:B", 443, 0, "/", 1},
      {"http://[::ffff:127.0.0.1]:1", "http", NULL, "::ffff:127.0.0.1", 1, 1,
       "", 0},
  };
  for (size_t i = 0; i < TEST_COUNT(cases); i++)
    check_ok(&cases[i]);
}

TEST(rejects) {
  static const char *const bad[] = {
      "",
      "example.com",
      "example.com:80",
      "//example.com",
      "://example.com",
      "ftp://example.com",
      "file:///etc/passwd",
      "gopher://h",
      "http:/h",
      "http:h",
      "http://",
      "http:///path",
      "http://?x",
      "http://#f",
      "http://:80",
      "http://user@",
      "http://user@:80/",
      "http://h:0",
      "http://h:00",
      "http://h:65536",
      "http://h:99999999999999999999",
      "http://h:-1",
      "http://h:8x",
      "http://h:x8",
      "http://h: 80",
      "http://h:",
      "http://h:/",
      "http://h:80:80",
      "http://ho st",
      "http://ho$t",
      "http://h%2f",
      "http://h\t",
      "http://h\r\n",
      "http://evil.example\\allowed",
      "http://[::1",
      "http://[::1]x",
      "http://[::1]:",
      "http://[::1]:0",
      "http://[]",
      "http://[zz::1]",
      "http://[::1%25eth0]",
      "http://us%zzer@h",
      "http://us%4@h",
      "http://u%@h",
      "ht tp://h",
  };
  for (size_t i = 0; i < TEST_COUNT(bad); i++) {
    wstun__url u;
    memset(&u, 0x5a, sizeof(u));
    test_context("\"%s\"", bad[i]);
    CHECK_EQ_INT(wstun__url_parse(bad[i], &u), WSTUN_EURL);
    /* zeroed on error: nothing to free, nothing dangling */
    CHECK(u.scheme == NULL && u.userinfo == NULL && u.host == NULL &&
          u.path == NULL);
    CHECK_EQ_INT(u.port, 0);
  }
  wstun__url u;
  CHECK_EQ_INT(wstun__url_parse(NULL, &u), WSTUN_EURL);
  CHECK(u.host == NULL);
}

TEST(free_twice_is_safe) {
  wstun__url u;
  CHECK_EQ_INT(wstun__url_parse("wss://a:b@h:1/p?q#f", &u), 0);
  wstun__url_free(&u);
  wstun__url_free(&u);
  CHECK(u.scheme == NULL);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(schemes_and_default_ports),
      T(paths_queries_fragments),
      T(userinfo),
      T(ipv6_literals),
      T(rejects),
      T(free_twice_is_safe),
  };
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
