/* The CTR-DRBG of each server, client and TLS configuration, seeded from
 * the OS's entropy. Failures become WSTUN_ERNG. */
#include "wstun_rng.h"

#include <mbedtls/platform_util.h>
#include <string.h>

#include "wstun/wstun.h"

int wstun__rng_init(wstun__rng *r) {
  static const unsigned char pers[] = "wstun";
  mbedtls_entropy_init(&r->entropy);
  mbedtls_ctr_drbg_init(&r->drbg);
  r->mask_left = 0;
  if (mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->entropy, pers,
                            sizeof(pers) - 1) != 0) {
    wstun__rng_free(r);
    return WSTUN_ERNG;
  }
  return 0;
}

void wstun__rng_free(wstun__rng *r) {
  mbedtls_platform_zeroize(r->mask_pool, sizeof(r->mask_pool));
  r->mask_left = 0;
  mbedtls_ctr_drbg_free(&r->drbg);
  mbedtls_entropy_free(&r->entropy);
}

int wstun__rng_bytes(wstun__rng *r, void *out, size_t n) {
  return mbedtls_ctr_drbg_random(&r->drbg, out, n) == 0 ? 0 : WSTUN_ERNG;
}

int wstun__rng_mask(wstun__rng *r, uint8_t *out, size_t n) {
  if (n > WSTUN__RNG_MASK_POOL)
    return wstun__rng_bytes(r, out, n);
  if (n > r->mask_left) {
    if (wstun__rng_bytes(r, r->mask_pool, WSTUN__RNG_MASK_POOL) != 0)
      return WSTUN_ERNG;
    r->mask_left = WSTUN__RNG_MASK_POOL;
  }
  /* from the end down, so that no byte is handed out twice */
  r->mask_left -= n;
  memcpy(out, r->mask_pool + r->mask_left, n);
  return 0;
}
