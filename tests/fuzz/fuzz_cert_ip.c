/* The subjectAltName walk that matches a host given as an IP address
 * (wstun__tls_crt_names_ip in wstun_tls.c). It reads raw ASN.1 that
 * mbedTLS 2.28 does not interpret, so it is fuzzed on its own: over
 * arbitrary bytes as the extensions block (no prior validation at all),
 * and over whole DER certificates that mbedTLS accepts. Every read must
 * stay inside the block (ASan), and a match must really be an iPAddress
 * entry holding the address (checked by searching the block).
 *
 * Input: byte 0 bit 0 picks IPv4 (4 bytes) or IPv6 (16); the address
 * follows; byte after it bit 0: 1 = the rest is a DER certificate, 0 =
 * the rest is the extensions block itself. */
#include <mbedtls/x509_crt.h>

#include "fuzz_util.h"
#include "wstun_tls.h"

/* The [7] tag, a length equal to the address size (short form, or the
 * long form BER allows and mbedTLS accepts: 0x81 0x04, 0x82 0x00 0x04),
 * then the address: what any match must have somewhere in the block. */
static int contains_ip_entry(const uint8_t *p, size_t n, const uint8_t *ip,
                             size_t iplen) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] != 0x87 || i + 1 >= n)
      continue;
    size_t j = i + 1, len = 0, k = 1;
    if (p[j] & 0x80) {
      k = p[j] & 0x7f;
      if (k == 0 || k > 4 || j + k >= n)
        continue;
      for (size_t b = 1; b <= k; b++)
        len = (len << 8) | p[j + b];
      k++;
    } else {
      len = p[j];
    }
    if (len == iplen && j + k + iplen <= n && memcmp(p + j + k, ip, iplen) == 0)
      return 1;
  }
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  size_t iplen = (data[0] & 1) ? 16 : 4;
  if (size < 2 + iplen)
    return 0;
  const uint8_t *ip = data + 1;
  int whole = data[1 + iplen] & 1;
  const uint8_t *rest = data + 2 + iplen;
  size_t n = size - 2 - iplen;
  /* an exact-size copy, so that ASan sees one byte too far */
  uint8_t *copy = malloc(n ? n : 1);
  if (copy == NULL)
    return 0;
  memcpy(copy, rest, n);
  if (whole) {
    mbedtls_x509_crt crt;
    mbedtls_x509_crt_init(&crt);
    if (mbedtls_x509_crt_parse_der(&crt, copy, n) == 0) {
      int m = wstun__tls_crt_names_ip(&crt, ip, iplen);
      FZ_CHECK(!m || contains_ip_entry(crt.v3_ext.p, crt.v3_ext.len, ip, iplen),
               "matched without an iPAddress entry");
    }
    mbedtls_x509_crt_free(&crt);
  } else {
    mbedtls_x509_crt crt;
    memset(&crt, 0, sizeof(crt));
    crt.v3_ext.p = n ? copy : NULL;
    crt.v3_ext.len = n;
    int m = wstun__tls_crt_names_ip(&crt, ip, iplen);
    FZ_CHECK(!m || contains_ip_entry(copy, n, ip, iplen),
             "matched without an iPAddress entry");
  }
  free(copy);
  return 0;
}
