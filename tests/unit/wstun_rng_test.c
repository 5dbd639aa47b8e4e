/* The DRBG wrapper: masking keys come from a pool, each byte once, and
 * the pool is refilled when it runs out. */
#include "wstun_rng.h"

#include "test.h"
#include "wstun/wstun.h"

TEST(masks_take_the_pool_from_the_end_down) {
  wstun__rng rng;
  REQUIRE(wstun__rng_init(&rng) == 0);
  CHECK_EQ_INT(rng.mask_left, 0);
  uint8_t key[4];
  CHECK_EQ_INT(wstun__rng_mask(&rng, key, sizeof(key)), 0);
  CHECK_EQ_INT(rng.mask_left, WSTUN__RNG_MASK_POOL - 4);
  CHECK(memcmp(key, rng.mask_pool + WSTUN__RNG_MASK_POOL - 4, 4) == 0);
  CHECK_EQ_INT(wstun__rng_mask(&rng, key, sizeof(key)), 0);
  CHECK(memcmp(key, rng.mask_pool + WSTUN__RNG_MASK_POOL - 8, 4) == 0);
  wstun__rng_free(&rng);
}

TEST(a_pool_too_short_for_a_mask_is_refilled) {
  wstun__rng rng;
  REQUIRE(wstun__rng_init(&rng) == 0);
  uint8_t key[4], first[WSTUN__RNG_MASK_POOL];
  CHECK_EQ_INT(wstun__rng_mask(&rng, key, 1), 0);
  memcpy(first, rng.mask_pool, sizeof(first));
  /* 255 bytes are left: 63 masks, then 3 bytes too few for the 64th */
  for (int i = 0; i < 63; i++)
    CHECK_EQ_INT(wstun__rng_mask(&rng, key, sizeof(key)), 0);
  CHECK_EQ_INT(rng.mask_left, 3);
  CHECK(memcmp(key, first + 3, 4) == 0);
  CHECK_EQ_INT(wstun__rng_mask(&rng, key, sizeof(key)), 0);
  CHECK_EQ_INT(rng.mask_left, WSTUN__RNG_MASK_POOL - 4);
  CHECK(memcmp(rng.mask_pool, first, sizeof(first)) != 0);
  CHECK(memcmp(key, rng.mask_pool + WSTUN__RNG_MASK_POOL - 4, 4) == 0);
  wstun__rng_free(&rng);
}

TEST(more_than_the_pool_comes_from_the_drbg) {
  wstun__rng rng;
  REQUIRE(wstun__rng_init(&rng) == 0);
  uint8_t big[WSTUN__RNG_MASK_POOL + 1], zero[sizeof(big)];
  memset(big, 0, sizeof(big));
  memset(zero, 0, sizeof(zero));
  CHECK_EQ_INT(wstun__rng_mask(&rng, big, sizeof(big)), 0);
  CHECK(memcmp(big, zero, sizeof(big)) != 0);
  CHECK_EQ_INT(rng.mask_left, 0); /* the pool was not touched */
  wstun__rng_free(&rng);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {T(masks_take_the_pool_from_the_end_down),
                                    T(a_pool_too_short_for_a_mask_is_refilled),
                                    T(more_than_the_pool_comes_from_the_drbg)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
