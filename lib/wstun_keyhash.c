/* AES-128-CMAC as a hash-table hash; see wstun_keyhash.h for why. */
#include "wstun_keyhash.h"

#include <mbedtls/cmac.h>
#include <mbedtls/platform_util.h>
#include <string.h>

#include "wstun/wstun.h"

int wstun__keyhash_init(wstun__keyhash *k, wstun__rng *rng) {
  unsigned char key[16];
  mbedtls_cipher_init(&k->cmac);
  const mbedtls_cipher_info_t *aes =
      mbedtls_cipher_info_from_type(MBEDTLS_CIPHER_AES_128_ECB);
  if (wstun__rng_bytes(rng, key, sizeof(key)) != 0) {
    wstun__keyhash_free(k);
    return WSTUN_ERNG;
  }
  int rc = aes && mbedtls_cipher_setup(&k->cmac, aes) == 0 &&
                   mbedtls_cipher_cmac_starts(&k->cmac, key, 128) == 0
               ? 0
               : WSTUN_ENOMEM;
  mbedtls_platform_zeroize(key, sizeof(key));
  if (rc != 0)
    wstun__keyhash_free(k);
  return rc;
}

void wstun__keyhash_free(wstun__keyhash *k) {
  mbedtls_cipher_free(&k->cmac);
}

uint64_t wstun__keyhash_of(wstun__keyhash *k, const void *s, size_t n) {
  unsigned char mac[16];
  /* reset keeps the key schedule: one CMAC costs a block per 16 bytes */
  if (mbedtls_cipher_cmac_reset(&k->cmac) != 0 ||
      (n > 0 && mbedtls_cipher_cmac_update(&k->cmac, s, n) != 0) ||
      mbedtls_cipher_cmac_finish(&k->cmac, mac) != 0)
    return 0; /* cannot happen with a set-up context; still a valid hash */
  uint64_t h;
  memcpy(&h, mac, sizeof(h));
  return h;
}
