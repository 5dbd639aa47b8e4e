/* A keyed hash for the tables whose keys strangers choose: tokens (any
 * request or tunnel names one) and peer addresses (an IPv6 /64 is 2^64 of
 * them). With a public hash such as FNV anyone can compute, offline, many
 * keys that fall into one bucket and turn each lookup into a walk over all
 * of them. Here the hash is AES-128-CMAC (mbedTLS, AES-NI where the CPU
 * has it) under a key drawn from the RNG when the table's owner is made:
 * a pseudo-random function, so without the key bucket collisions cannot be
 * chosen. */
#ifndef WSTUN_KEYHASH_H
#define WSTUN_KEYHASH_H

#include <mbedtls/cipher.h>
#include <stddef.h>
#include <stdint.h>

#include "wstun_rng.h"

typedef struct wstun__keyhash {
  mbedtls_cipher_context_t cmac;
} wstun__keyhash;

/* Draws a new key from `rng`. 0, WSTUN_ERNG, or WSTUN_ENOMEM; on failure
 * nothing is left to free. */
int wstun__keyhash_init(wstun__keyhash *k, wstun__rng *rng);
void wstun__keyhash_free(wstun__keyhash *k);

/* The hash of the n bytes at s (n may be 0). Deterministic for one key. */
uint64_t wstun__keyhash_of(wstun__keyhash *k, const void *s, size_t n);

#endif
