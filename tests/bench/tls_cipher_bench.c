/* Per-core speed of the AEAD ciphers wstun's TLS offers, as mbedTLS (the
 * one linked, 2.28 on Debian 12) runs them here: for each cipher and
 * record size, seals then opens 256 MiB in records of that size (as one
 * TLS hop does: the sender seals, the receiver opens), single-threaded.
 * Prints MB/s (10^6 bytes/s) for sealing and opening, and both together.
 * Built as tests/tls_cipher_bench (not run by ctest); see README.md.
 *
 *   build/tests/tls_cipher_bench [MiB]
 */
#include <mbedtls/cipher.h>
#include <mbedtls/version.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Seals (encrypt = 1) or opens `total` bytes in records of `rec` bytes;
 * returns the seconds taken, or a negative value on a failure. The opening
 * pass opens the record the sealing pass sealed first, over and over (a
 * fixed nonce: this measures speed, it protects nothing). */
static double run(mbedtls_cipher_context_t *ctx, const unsigned char *plain,
                  unsigned char *sealed, size_t rec, size_t total,
                  int encrypt) {
  static const unsigned char iv[12] = {1}, ad[13] = {2}; /* as TLS 1.2 */
  unsigned char *out = malloc(rec + 16);
  if (out == NULL)
    return -1.0;
  double t0 = now_s();
  for (size_t done = 0; done < total; done += rec) {
    size_t olen = 0;
    int rc;
    if (encrypt) {
      rc =
          mbedtls_cipher_auth_encrypt_ext(ctx, iv, sizeof(iv), ad, sizeof(ad),
                                          plain, rec, out, rec + 16, &olen, 16);
      if (done == 0)
        memcpy(sealed, out, rec + 16);
      olen -= 16; /* the tag */
    } else {
      rc = mbedtls_cipher_auth_decrypt_ext(ctx, iv, sizeof(iv), ad, sizeof(ad),
                                           sealed, rec + 16, out, rec, &olen,
                                           16);
    }
    if (rc != 0 || olen != rec) {
      free(out);
      return -1.0;
    }
  }
  free(out);
  return now_s() - t0;
}

int main(int argc, char **argv) {
  size_t mib = argc > 1 ? (size_t)atoi(argv[1]) : 256;
  size_t total = mib << 20;
  static const struct {
    const char *name;
    mbedtls_cipher_type_t type;
    unsigned keybits;
  } ciphers[] = {
      {"CHACHA20-POLY1305", MBEDTLS_CIPHER_CHACHA20_POLY1305, 256},
      {"AES-128-GCM", MBEDTLS_CIPHER_AES_128_GCM, 128},
      {"AES-256-GCM", MBEDTLS_CIPHER_AES_256_GCM, 256},
  };
  static const size_t records[] = {1024, 4096, 16384};
  unsigned char key[32];
  for (size_t i = 0; i < sizeof(key); i++)
    key[i] = (unsigned char)(i * 37 + 1);
  unsigned char *plain = malloc(16384), *sealed = malloc(16384 + 16);
  for (size_t i = 0; i < 16384; i++)
    plain[i] = (unsigned char)(i * 7);
  char ver[32];
  mbedtls_version_get_string(ver);
  printf("mbedTLS %s, %zu MiB per pass, one core\n", ver, mib);
  printf("%-18s %7s %10s %10s %12s\n", "cipher", "record", "seal MB/s",
         "open MB/s", "both MB/s");
  for (size_t c = 0; c < sizeof(ciphers) / sizeof(ciphers[0]); c++) {
    for (size_t r = 0; r < sizeof(records) / sizeof(records[0]); r++) {
      mbedtls_cipher_context_t enc, dec;
      mbedtls_cipher_init(&enc);
      mbedtls_cipher_init(&dec);
      const mbedtls_cipher_info_t *info =
          mbedtls_cipher_info_from_type(ciphers[c].type);
      if (info == NULL || mbedtls_cipher_setup(&enc, info) != 0 ||
          mbedtls_cipher_setup(&dec, info) != 0 ||
          mbedtls_cipher_setkey(&enc, key, (int)ciphers[c].keybits,
                                MBEDTLS_ENCRYPT) != 0 ||
          mbedtls_cipher_setkey(&dec, key, (int)ciphers[c].keybits,
                                MBEDTLS_DECRYPT) != 0) {
        printf("%-18s not available\n", ciphers[c].name);
        continue;
      }
      size_t rec = records[r];
      size_t n = total / rec * rec;
      double ts = run(&enc, plain, sealed, rec, n, 1);
      double to = run(&dec, plain, sealed, rec, n, 0);
      if (ts < 0 || to < 0) {
        printf("%-18s %7zu failed\n", ciphers[c].name, rec);
      } else {
        printf("%-18s %7zu %10.0f %10.0f %12.0f\n", ciphers[c].name, rec,
               (double)n / ts / 1e6, (double)n / to / 1e6,
               (double)n / (ts + to) / 1e6);
      }
      mbedtls_cipher_free(&enc);
      mbedtls_cipher_free(&dec);
    }
  }
  free(plain);
  free(sealed);
  return 0;
}
