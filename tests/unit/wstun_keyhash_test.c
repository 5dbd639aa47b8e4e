/* The keyed bucket hash: stable for one key, different under another key,
 * defined for any length (empty, under, at and over the 16-byte block),
 * and spreading a family of keys that FNV-1a puts into one bucket. */
#include "wstun_keyhash.h"

#include <stdio.h>
#include <string.h>

#include "test.h"

/* FNV-1a, as the registry hashed before: what an attacker could compute */
static uint64_t fnv1a(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) {
    h ^= (unsigned char)s[i];
    h *= 1099511628211ULL;
  }
  return h;
}

TEST(stable_for_one_key_and_keyed) {
  wstun__rng rng;
  wstun__keyhash a, b;
  CHECK_EQ_INT(wstun__rng_init(&rng), 0);
  CHECK_EQ_INT(wstun__keyhash_init(&a, &rng), 0);
  CHECK_EQ_INT(wstun__keyhash_init(&b, &rng), 0);
  static const char text[] = "0123456789abcdef0123456789abcdef0";
  int differ = 0;
  for (size_t n = 0; n < sizeof(text); n++) {
    uint64_t h = wstun__keyhash_of(&a, text, n);
    CHECK(h == wstun__keyhash_of(&a, text, n));
    if (n > 0)
      CHECK(h != wstun__keyhash_of(&a, text, n - 1));
    differ += h != wstun__keyhash_of(&b, text, n);
  }
  CHECK_EQ_INT(differ, (int)sizeof(text)); /* 2^-64 each to be equal */
  wstun__keyhash_free(&a);
  wstun__keyhash_free(&b);
  wstun__rng_free(&rng);
}

/* Tokens chosen so that FNV-1a sends them all to bucket 0 of 64: keyed,
 * they spread over the buckets as random keys would. */
TEST(chosen_collisions_spread) {
  wstun__rng rng;
  wstun__keyhash k;
  CHECK_EQ_INT(wstun__rng_init(&rng), 0);
  CHECK_EQ_INT(wstun__keyhash_init(&k, &rng), 0);
  enum { BUCKETS = 64, WANT = 640 };
  int count[BUCKETS] = {0}, found = 0;
  char tok[32];
  for (unsigned i = 0; found < WANT; i++) {
    int n = snprintf(tok, sizeof(tok), "attack-%08x", i);
    if (fnv1a(tok, (size_t)n) % BUCKETS != 0)
      continue;
    found++;
    count[wstun__keyhash_of(&k, tok, (size_t)n) % BUCKETS]++;
  }
  int worst = 0;
  for (int b = 0; b < BUCKETS; b++)
    worst = count[b] > worst ? count[b] : worst;
  /* 10 per bucket on average; 40 in one is odds of ~1e-12 for a PRF */
  CHECK(worst < 40);
  wstun__keyhash_free(&k);
  wstun__rng_free(&rng);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {T(stable_for_one_key_and_keyed),
                                    T(chosen_collisions_spread)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
