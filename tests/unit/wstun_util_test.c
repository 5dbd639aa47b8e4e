/* Constant-time comparison, secret redaction, ASCII case folding. */
#include "wstun_util.h"

#include "test.h"

TEST(ct_equal) {
  CHECK_EQ_INT(wstun__ct_equal("secret", 6, "secret", 6), 1);
  CHECK_EQ_INT(wstun__ct_equal("secret", 6, "secreT", 6), 0);
  CHECK_EQ_INT(wstun__ct_equal("secret", 6, "Secret", 6), 0);
  CHECK_EQ_INT(wstun__ct_equal("secret", 6, "secre", 5), 0);
  CHECK_EQ_INT(wstun__ct_equal("secre", 5, "secret", 6), 0);
  /* a prefix repeated to the other length must not compare equal */
  CHECK_EQ_INT(wstun__ct_equal("abc", 3, "abcabc", 6), 0);
  CHECK_EQ_INT(wstun__ct_equal("abcabc", 6, "abc", 3), 0);
  CHECK_EQ_INT(wstun__ct_equal("aa", 2, "aaaa", 4), 0);
  CHECK_EQ_INT(wstun__ct_equal("a", 1, "aaaaaaaaa", 9), 0);
  CHECK_EQ_INT(wstun__ct_equal("", 0, "", 0), 1);
  CHECK_EQ_INT(wstun__ct_equal(NULL, 0, NULL, 0), 1);
  CHECK_EQ_INT(wstun__ct_equal("", 0, "x", 1), 0);
  CHECK_EQ_INT(wstun__ct_equal("x", 1, "", 0), 0);
  CHECK_EQ_INT(wstun__ct_equal("", 0, "\0", 1), 0);
  /* only the given lengths count, not NUL terminators */
  CHECK_EQ_INT(wstun__ct_equal("abcX", 3, "abcY", 3), 1);
  CHECK_EQ_INT(wstun__ct_equal("a\0b", 3, "a\0c", 3), 0);
  CHECK_EQ_INT(wstun__ct_equal("a\0b", 3, "a\0b", 3), 1);
  /* every single-byte difference in a long secret is seen */
  char a[300], b[300];
  for (size_t i = 0; i < sizeof(a); i++)
    a[i] = b[i] = (char)('a' + i % 26);
  CHECK_EQ_INT(wstun__ct_equal(a, sizeof(a), b, sizeof(b)), 1);
  int missed = 0;
  for (size_t i = 0; i < sizeof(a); i++) {
    b[i] ^= 1;
    if (wstun__ct_equal(a, sizeof(a), b, sizeof(b)) != 0)
      missed++;
    b[i] ^= 1;
  }
  CHECK_EQ_INT(missed, 0);
  /* lengths that differ by a multiple of 256 */
  CHECK_EQ_INT(wstun__ct_equal(a, 44, a, 300), 0);
  CHECK_EQ_INT(wstun__ct_equal(a, 1, a, 257), 0);
}

TEST(redact) {
  char out[12];
  memset(out, 'Z', sizeof(out));
  CHECK_EQ_STR(wstun__redact("abcdefghijklmnop", out), "abcdefgh...");
  CHECK_EQ_STR(out, "abcdefgh...");
  CHECK_EQ_STR(wstun__redact("abcdefghi", out), "abcdefgh...");
  CHECK_EQ_STR(wstun__redact("abcdefgh", out), "abcdefgh...");
  CHECK_EQ_STR(wstun__redact("abcdefg", out), "abcdefg...");
  CHECK_EQ_STR(wstun__redact("abc", out), "abc...");
  CHECK_EQ_STR(wstun__redact("", out), "...");
  CHECK_EQ_STR(wstun__redact(NULL, out), "...");
  /* returns its out argument */
  CHECK(wstun__redact("x", out) == out);
  /* never writes past out[11] */
  char big[16];
  memset(big, 'Z', sizeof(big));
  wstun__redact("0123456789012345678901234567890", big);
  CHECK_EQ_INT(big[11], '\0');
  CHECK_EQ_INT(big[12], 'Z');
}

TEST(ascii_casecmp_n) {
  CHECK_EQ_INT(wstun__ascii_casecmp_n("Content-Length", 14, "content-length"),
               0);
  CHECK_EQ_INT(wstun__ascii_casecmp_n("CONTENT-LENGTH", 14, "Content-Length"),
               0);
  CHECK_EQ_INT(wstun__ascii_casecmp_n("Content-Lengthx", 14, "content-length"),
               0); /* only alen bytes of a count */
  CHECK_EQ_INT(wstun__ascii_casecmp_n("Content-Length", 13, "content-length"),
               1);
  CHECK_EQ_INT(wstun__ascii_casecmp_n("Host", 4, "Hostname"), 1);
  CHECK_EQ_INT(wstun__ascii_casecmp_n("Hostname", 8, "Host"), 1);
  CHECK_EQ_INT(wstun__ascii_casecmp_n("", 0, ""), 0);
  CHECK_EQ_INT(wstun__ascii_casecmp_n("a", 1, ""), 1);
  CHECK_EQ_INT(wstun__ascii_casecmp_n("", 0, "a"), 1);
  CHECK_EQ_INT(wstun__ascii_casecmp_n("abc", 3, "abd"), 1);
  /* only A-Z fold: '@'/'`', '['/'{', '^'/'~' differ by 32 but are not
   * letters */
  CHECK_EQ_INT(wstun__ascii_casecmp_n("@", 1, "`"), 1);
  CHECK_EQ_INT(wstun__ascii_casecmp_n("[", 1, "{"), 1);
  CHECK_EQ_INT(wstun__ascii_casecmp_n("^", 1, "~"), 1);
  CHECK_EQ_INT(wstun__ascii_casecmp_n("Z", 1, "z"), 0);
  CHECK_EQ_INT(wstun__ascii_casecmp_n("A", 1, "a"), 0);
  /* bytes above 0x7f compare as they are */
  CHECK_EQ_INT(wstun__ascii_casecmp_n("\xc3\x89", 2, "\xc3\xa9"), 1);
  CHECK_EQ_INT(wstun__ascii_casecmp_n("\xc3\xa9", 2, "\xc3\xa9"), 0);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {T(ct_equal), T(redact), T(ascii_casecmp_n)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
