/* The CTR-DRBG of each server, client and TLS configuration, seeded from
 * the OS's entropy. Failures become WSTUN_ERNG. */
#include "wstun_rng.h"

#include "wstun/wstun.h"

int wstun__rng_init(wstun__rng *r) {
  static const unsigned char pers[] = "wstun";
  mbedtls_entropy_init(&r->entropy);
  mbedtls_ctr_drbg_init(&r->drbg);
  if (mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->entropy, pers,
                            sizeof(pers) - 1) != 0) {
    wstun__rng_free(r);
    return WSTUN_ERNG;
  }
  return 0;
}

void wstun__rng_free(wstun__rng *r) {
  mbedtls_ctr_drbg_free(&r->drbg);
  mbedtls_entropy_free(&r->entropy);
}

int wstun__rng_bytes(wstun__rng *r, void *out, size_t n) {
  return mbedtls_ctr_drbg_random(&r->drbg, out, n) == 0 ? 0 : WSTUN_ERNG;
}
