/* Cryptographic randomness (mbedTLS CTR-DRBG seeded from the OS) for
 * WebSocket keys and frame masks. One per server or client: no globals. */
#ifndef WSTUN_RNG_H
#define WSTUN_RNG_H

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes for frame masks drawn from the DRBG at once (64 masks). */
#define WSTUN__RNG_MASK_POOL 256

typedef struct wstun__rng {
  mbedtls_entropy_context entropy;
  mbedtls_ctr_drbg_context drbg;
  uint8_t mask_pool[WSTUN__RNG_MASK_POOL];
  size_t mask_left; /* unused bytes at the end of mask_pool */
} wstun__rng;

/* 0 or WSTUN_ERNG when the OS gives no entropy. */
int wstun__rng_init(wstun__rng *r);
void wstun__rng_free(wstun__rng *r);
/* 0 or WSTUN_ERNG. */
int wstun__rng_bytes(wstun__rng *r, void *out, size_t n);
/* Bytes for WebSocket masking keys (4 per frame the client sends): the
 * same DRBG's output, taken from a pool refilled 256 bytes at a time,
 * since each CTR-DRBG call costs about as much as 1,000 instructions
 * whatever its length (it re-keys AES), which v2's one frame per 16 KiB
 * made 1% of the client's CPU. A masking key is sent in the clear in its
 * frame: it only has to be unpredictable before, which pooled bytes are.
 * n > WSTUN__RNG_MASK_POOL goes to the DRBG directly. 0 or WSTUN_ERNG. */
int wstun__rng_mask(wstun__rng *r, uint8_t *out, size_t n);

#endif
