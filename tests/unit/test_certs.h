/* Certificates made at test time with mbedTLS's x509write, for the unit
 * tests that run TLS (wstun_tls_test.c without sockets, wstun_conn_test.c
 * on loopback): nothing secret is kept in the tree. */
#ifndef WSTUN_TEST_CERTS_H
#define WSTUN_TEST_CERTS_H

#include <mbedtls/ecp.h>
#include <mbedtls/oid.h>
#include <mbedtls/x509_crt.h>
#include <stdio.h>
#include <sys/stat.h>

#include "wstun_rng.h"

static int write_file(const char *path, const unsigned char *data, int mode) {
  FILE *f = fopen(path, "w");
  if (f == NULL)
    return -1;
  fputs((const char *)data, f);
  fclose(f);
  return chmod(path, (mode_t)mode);
}

/* A self-signed certificate for `cn` (trusted directly by the client),
 * with subjectAltName iPAddress 127.0.0.1 when `with_ip`. */
static int make_cert(const char *cn, int with_ip, const char *cert_file,
                     const char *key_file) {
  /* GeneralNames ::= SEQUENCE { [7] 127.0.0.1 } */
  static const unsigned char san_ip[] = {0x30, 0x06, 0x87, 0x04, 127, 0, 0, 1};
  wstun__rng rng;
  if (wstun__rng_init(&rng) != 0)
    return -1;
  mbedtls_pk_context key;
  mbedtls_pk_init(&key);
  mbedtls_x509write_cert crt;
  mbedtls_x509write_crt_init(&crt);
  mbedtls_mpi serial;
  mbedtls_mpi_init(&serial);
  static unsigned char pem[8192];
  char subject[128];
  snprintf(subject, sizeof(subject), "CN=%s", cn);
  int rc =
      mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) ||
      mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key),
                          mbedtls_ctr_drbg_random, &rng.drbg) ||
      mbedtls_mpi_lset(&serial, 7);
  if (rc == 0) {
    mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&crt, &key);
    mbedtls_x509write_crt_set_issuer_key(&crt, &key);
    rc = mbedtls_x509write_crt_set_subject_name(&crt, subject) ||
         mbedtls_x509write_crt_set_issuer_name(&crt, subject) ||
         mbedtls_x509write_crt_set_serial(&crt, &serial) ||
         mbedtls_x509write_crt_set_validity(&crt, "20200101000000",
                                            "20991231235959") ||
         mbedtls_x509write_crt_set_basic_constraints(&crt, 1, -1) ||
         (with_ip && mbedtls_x509write_crt_set_extension(
                         &crt, MBEDTLS_OID_SUBJECT_ALT_NAME,
                         MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0,
                         san_ip, sizeof(san_ip))) ||
         mbedtls_x509write_crt_pem(&crt, pem, sizeof(pem),
                                   mbedtls_ctr_drbg_random, &rng.drbg) ||
         write_file(cert_file, pem, 0644) ||
         mbedtls_pk_write_key_pem(&key, pem, sizeof(pem)) ||
         write_file(key_file, pem, 0600);
  }
  mbedtls_mpi_free(&serial);
  mbedtls_x509write_crt_free(&crt);
  mbedtls_pk_free(&key);
  wstun__rng_free(&rng);
  return rc ? -1 : 0;
}

#endif
