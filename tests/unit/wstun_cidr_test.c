/* Address lists for -trusted-proxies and -admin-allow. */
#include "test.h"
#include "wstun/wstun.h"
#include "wstun_cidr.h"

TEST(parses_and_matches_v4) {
  wstun__cidr_list l;
  CHECK_EQ_INT(
      wstun__cidr_list_parse("10.0.0.0/8, 192.168.1.7 ,172.16.0.0/12", &l), 0);
  CHECK_EQ_INT((int)l.n, 3);
  CHECK(wstun__cidr_list_match(&l, "10.255.1.2"));
  CHECK(wstun__cidr_list_match(&l, "192.168.1.7"));
  CHECK(!wstun__cidr_list_match(&l, "192.168.1.8"));
  CHECK(wstun__cidr_list_match(&l, "172.31.255.255"));
  CHECK(!wstun__cidr_list_match(&l, "172.32.0.0"));
  CHECK(!wstun__cidr_list_match(&l, "11.0.0.1"));
  CHECK(!wstun__cidr_list_match(&l, "not-an-ip"));
  CHECK(!wstun__cidr_list_match(&l, NULL));
  /* a v4-mapped v6 peer is the v4 address */
  CHECK(wstun__cidr_list_match(&l, "::ffff:10.1.2.3"));
  wstun__cidr_list_free(&l);
}

TEST(parses_and_matches_v6) {
  wstun__cidr_list l;
  CHECK_EQ_INT(wstun__cidr_list_parse("2001:db8::/32,::1", &l), 0);
  CHECK(wstun__cidr_list_match(&l, "2001:db8:1::5"));
  CHECK(!wstun__cidr_list_match(&l, "2001:db9::1"));
  CHECK(wstun__cidr_list_match(&l, "::1"));
  CHECK(!wstun__cidr_list_match(&l, "127.0.0.1"));
  wstun__cidr_list_free(&l);
}

TEST(odd_prefix_lengths) {
  wstun__cidr_list l;
  CHECK_EQ_INT(wstun__cidr_list_parse("192.168.1.128/25,0.0.0.0/0", &l), 0);
  CHECK(wstun__cidr_list_match(&l, "8.8.8.8")); /* /0 matches every v4 */
  wstun__cidr_list_free(&l);
  CHECK_EQ_INT(wstun__cidr_list_parse("192.168.1.128/25", &l), 0);
  CHECK(wstun__cidr_list_match(&l, "192.168.1.200"));
  CHECK(!wstun__cidr_list_match(&l, "192.168.1.127"));
  wstun__cidr_list_free(&l);
}

TEST(empty_and_bad_lists) {
  wstun__cidr_list l;
  CHECK_EQ_INT(wstun__cidr_list_parse(NULL, &l), 0);
  CHECK_EQ_INT((int)l.n, 0);
  CHECK(!wstun__cidr_list_match(&l, "127.0.0.1"));
  CHECK_EQ_INT(wstun__cidr_list_parse("", &l), 0);
  static const char *const bad[] = {
      "10.0.0.0/33",  "10.0.0.0/",   "10.0.0/8",   "::1/129",
      "host.example", "10.0.0.1/8x", "1.2.3.4/-1", "/8"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    test_context("%s", bad[i]);
    CHECK_EQ_INT(wstun__cidr_list_parse(bad[i], &l), WSTUN_EINVAL);
    CHECK(l.items == NULL);
  }
  test_context(NULL);
}

TEST(loopback_and_validity) {
  CHECK(wstun__ip_is_loopback("127.0.0.1"));
  CHECK(wstun__ip_is_loopback("127.8.9.10"));
  CHECK(wstun__ip_is_loopback("::1"));
  CHECK(wstun__ip_is_loopback("::ffff:127.0.0.1"));
  CHECK(!wstun__ip_is_loopback("128.0.0.1"));
  CHECK(!wstun__ip_is_loopback("::2"));
  CHECK(!wstun__ip_is_loopback("localhost"));
  CHECK(wstun__ip_valid("203.0.113.9"));
  CHECK(wstun__ip_valid("2001:db8::1"));
  CHECK(!wstun__ip_valid("203.0.113"));
  CHECK(!wstun__ip_valid(""));
}

/* Issue 13: the per-address cap counts an IPv6 peer by its /64. */
TEST(count_key) {
  char k[48];
  wstun__ip_count_key("203.0.113.9", k, sizeof(k));
  CHECK_EQ_STR(k, "203.0.113.9");
  wstun__ip_count_key("::ffff:203.0.113.9", k, sizeof(k));
  CHECK_EQ_STR(k, "203.0.113.9");
  wstun__ip_count_key("::ffff:127.0.0.1", k, sizeof(k));
  CHECK_EQ_STR(k, "127.0.0.1");
  wstun__ip_count_key("::1", k, sizeof(k));
  CHECK_EQ_STR(k, "::1");
  wstun__ip_count_key("2001:db8:1:2:3:4:5:6", k, sizeof(k));
  CHECK_EQ_STR(k, "2001:db8:1:2::/64");
  char k2[48];
  wstun__ip_count_key("2001:db8:1:2:ffff:eeee:dddd:cccc", k2, sizeof(k2));
  CHECK_EQ_STR(k2, k);
  wstun__ip_count_key("2001:db8:1:3::1", k2, sizeof(k2));
  CHECK_EQ_STR(k2, "2001:db8:1:3::/64");
  wstun__ip_count_key("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", k, sizeof(k));
  CHECK_EQ_STR(k, "ffff:ffff:ffff:ffff::/64");
  CHECK(strlen(k) < 46);
  wstun__ip_count_key("not an ip", k, sizeof(k));
  CHECK_EQ_STR(k, "not an ip");
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(parses_and_matches_v4), T(parses_and_matches_v6), T(odd_prefix_lengths),
      T(empty_and_bad_lists),   T(loopback_and_validity), T(count_key),
  };
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
