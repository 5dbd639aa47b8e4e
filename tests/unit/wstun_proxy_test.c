/* Proxy choice from the environment (as curl makes it), no_proxy matching,
 * and the CONNECT request's bytes. */
#include "wstun_proxy.h"

#include <stdlib.h>

#include "test.h"

static void clear_env(void) {
  static const char *names[] = {"https_proxy", "HTTPS_PROXY", "http_proxy",
                                "HTTP_PROXY",  "all_proxy",   "ALL_PROXY",
                                "no_proxy",    "NO_PROXY"};
  for (size_t i = 0; i < TEST_COUNT(names); i++)
    unsetenv(names[i]);
}

TEST(no_proxy_matches_hosts_and_subdomains) {
  CHECK_EQ_INT(wstun__no_proxy_match("example.com", "example.com"), 1);
  CHECK_EQ_INT(wstun__no_proxy_match("example.com", "www.example.com"), 1);
  CHECK_EQ_INT(wstun__no_proxy_match(".example.com", "www.example.com"), 1);
  CHECK_EQ_INT(wstun__no_proxy_match(".example.com", "example.com"), 1);
  CHECK_EQ_INT(wstun__no_proxy_match("EXAMPLE.com", "www.Example.COM"), 1);
  /* a suffix that is not a whole label does not count */
  CHECK_EQ_INT(wstun__no_proxy_match("example.com", "badexample.com"), 0);
  CHECK_EQ_INT(wstun__no_proxy_match("example.com", "example.com.evil"), 0);
  CHECK_EQ_INT(wstun__no_proxy_match("www.example.com", "example.com"), 0);
  CHECK_EQ_INT(wstun__no_proxy_match("other, localhost ,x", "localhost"), 1);
  CHECK_EQ_INT(wstun__no_proxy_match("127.0.0.1", "127.0.0.1"), 1);
  CHECK_EQ_INT(wstun__no_proxy_match("127.0.0.1", "127.0.0.10"), 0);
  CHECK_EQ_INT(wstun__no_proxy_match("*", "anything.example"), 1);
  CHECK_EQ_INT(wstun__no_proxy_match("", "localhost"), 0);
  CHECK_EQ_INT(wstun__no_proxy_match(",,. ,", "localhost"), 0);
  CHECK_EQ_INT(wstun__no_proxy_match(NULL, "localhost"), 0);
}

TEST(env_picks_the_proxy_for_the_scheme) {
  clear_env();
  CHECK(wstun__proxy_from_env("wss", "h.example") == NULL);
  setenv("HTTPS_PROXY", "http://upper:1", 1);
  CHECK_EQ_STR(wstun__proxy_from_env("wss", "h.example"), "http://upper:1");
  /* lower case wins */
  setenv("https_proxy", "http://lower:2", 1);
  CHECK_EQ_STR(wstun__proxy_from_env("wss", "h.example"), "http://lower:2");
  /* ws:// looks at http_proxy only, then all_proxy */
  CHECK(wstun__proxy_from_env("ws", "h.example") == NULL);
  setenv("ALL_PROXY", "http://all:3", 1);
  CHECK_EQ_STR(wstun__proxy_from_env("ws", "h.example"), "http://all:3");
  setenv("HTTP_PROXY", "http://plain:4", 1);
  CHECK_EQ_STR(wstun__proxy_from_env("ws", "h.example"), "http://plain:4");
  /* an empty lower-case value falls back to the upper-case one */
  setenv("http_proxy", "", 1);
  CHECK_EQ_STR(wstun__proxy_from_env("ws", "h.example"), "http://plain:4");
  /* no_proxy exempts */
  setenv("NO_PROXY", "other.example", 1);
  CHECK_EQ_STR(wstun__proxy_from_env("wss", "h.example"), "http://lower:2");
  setenv("no_proxy", "h.example", 1);
  CHECK(wstun__proxy_from_env("wss", "h.example") == NULL);
  CHECK(wstun__proxy_from_env("ws", "sub.h.example") == NULL);
  CHECK_EQ_STR(wstun__proxy_from_env("ws", "other.example"), "http://plain:4");
  clear_env();
}

TEST(connect_request_bytes) {
  wstun__buf b;
  wstun__buf_init(&b);
  CHECK_EQ_INT(wstun__proxy_connect_request(&b, "srv.example", 443, NULL), 0);
  CHECK_BYTES_STR(wstun__buf_data(&b), wstun__buf_size(&b),
                  "CONNECT srv.example:443 HTTP/1.1\r\n"
                  "Host: srv.example:443\r\n\r\n");
  wstun__buf_reset(&b);
  CHECK_EQ_INT(
      wstun__proxy_connect_request(&b, "::1", 8080, "Basic dXNlcjpwYXNz"), 0);
  CHECK_BYTES_STR(wstun__buf_data(&b), wstun__buf_size(&b),
                  "CONNECT [::1]:8080 HTTP/1.1\r\n"
                  "Host: [::1]:8080\r\n"
                  "Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\r\n");
  wstun__buf_free(&b);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {T(no_proxy_matches_hosts_and_subdomains),
                                    T(env_picks_the_proxy_for_the_scheme),
                                    T(connect_request_bytes)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
