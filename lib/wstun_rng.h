/* Cryptographic randomness (mbedTLS CTR-DRBG seeded from the OS) for
 * WebSocket keys and frame masks. One per server or client: no globals. */
#ifndef WSTUN_RNG_H
#define WSTUN_RNG_H

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <stddef.h>

typedef struct wstun__rng {
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
} wstun__rng;

/* 0 or WSTUN_ERNG when the OS gives no entropy. */
int wstun__rng_init(wstun__rng *r);
void wstun__rng_free(wstun__rng *r);
/* 0 or WSTUN_ERNG. */
int wstun__rng_bytes(wstun__rng *r, void *out, size_t n);

#endif
