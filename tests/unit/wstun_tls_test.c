/* The TLS record layer glue, without sockets: a client and a server
 * wstun__tls pass their ciphertext to each other by hand, whole or one
 * byte at a time, with certificates made here (mbedTLS's x509write). */
#include "wstun_tls.h"

#include <mbedtls/x509_crt.h>
#include <stdlib.h>
#include <unistd.h>

#include "failalloc.h"
#include "test.h"
#include "test_certs.h"
#include "wstun/wstun.h"

static char dir[] = "/tmp/wstun-tls-test.XXXXXX";
static char cert_path[128], key_path[128], other_cert[128], other_key[128];
static char ip_cert[128], ip_key[128];

/* Moves what `from` wrote to `to`'s input, `step` bytes at a time, running
 * the handshake (or reading into `got`) after each piece. Returns the last
 * result of the receiving side. */
static int pass(wstun__tls *from, wstun__tls *to, size_t step,
                wstun__buf *got) {
  int rc = WSTUN__TLS_AGAIN;
  while (wstun__buf_size(&from->cout) > 0) {
    size_t n = wstun__buf_size(&from->cout);
    if (n > step)
      n = step;
    wstun__buf_append(&to->cin, wstun__buf_data(&from->cout), n);
    wstun__buf_consume(&from->cout, n);
    for (;;) {
      if (!to->handshake_done) {
        rc = wstun__tls_handshake(to);
        if (rc != WSTUN__TLS_DONE)
          break;
        continue;
      }
      uint8_t buf[16384];
      rc = wstun__tls_read(to, buf, sizeof(buf));
      if (rc <= 0)
        break;
      if (got)
        wstun__buf_append(got, buf, (size_t)rc);
    }
    if (rc < 0)
      return rc;
  }
  return rc;
}

/* Runs a handshake to its end; 0 when both sides finished. */
static int handshake(wstun__tls *cli, wstun__tls *srv, size_t step) {
  int first = wstun__tls_handshake(cli); /* the ClientHello */
  if (first != WSTUN__TLS_AGAIN)
    return first < 0 ? first : -101;
  for (int round = 0; round < 10; round++) {
    int rc = pass(cli, srv, step, NULL);
    if (rc < 0)
      return rc;
    rc = pass(srv, cli, step, NULL);
    if (rc < 0)
      return rc;
    if (cli->handshake_done && srv->handshake_done &&
        wstun__buf_size(&cli->cout) == 0 && wstun__buf_size(&srv->cout) == 0)
      return 0;
  }
  return -100;
}

static void exchange_with(const char *crt, const char *key, const char *host,
                          size_t step) {
  test_context("%s, step %zu", host, step);
  wstun__tls_config *ccfg = NULL, *scfg = NULL;
  char why[400] = "";
  CHECK_EQ_INT(wstun__tls_client_config(&ccfg, crt, 1, why, sizeof(why)), 0);
  CHECK_EQ_INT(wstun__tls_server_config(&scfg, crt, key, why, sizeof(why)), 0);
  if (ccfg == NULL || scfg == NULL)
    return;
  wstun__tls *cli = wstun__tls_new(ccfg, host);
  wstun__tls *srv = wstun__tls_new(scfg, NULL);
  /* the connections hold their own references */
  wstun__tls_config_unref(ccfg);
  wstun__tls_config_unref(scfg);
  CHECK_EQ_INT(handshake(cli, srv, step), 0);
  CHECK_EQ_STR(mbedtls_ssl_get_alpn_protocol(&srv->ssl), "http/1.1");
  CHECK_EQ_STR(mbedtls_ssl_get_version(&cli->ssl), "TLSv1.2");
  /* 100 KB each way: several records, split anywhere */
  static uint8_t data[100000];
  for (size_t i = 0; i < sizeof(data); i++)
    data[i] = (uint8_t)(i * 7 + i / 251);
  wstun__buf got;
  wstun__buf_init(&got);
  CHECK_EQ_INT(wstun__tls_write(cli, data, sizeof(data)), 0);
  CHECK(wstun__buf_size(&cli->cout) > sizeof(data));
  pass(cli, srv, step, &got);
  CHECK_EQ_INT((int)wstun__buf_size(&got), (int)sizeof(data));
  CHECK_MEM(wstun__buf_data(&got), data, sizeof(data));
  wstun__buf_reset(&got);
  CHECK_EQ_INT(wstun__tls_write(srv, data, 5000), 0);
  pass(srv, cli, step, &got);
  CHECK_EQ_INT((int)wstun__buf_size(&got), 5000);
  CHECK_MEM(wstun__buf_data(&got), data, 5000);
  /* close_notify ends the stream cleanly, once */
  wstun__tls_close_notify(cli);
  wstun__tls_close_notify(cli);
  CHECK_EQ_INT(pass(cli, srv, step, NULL), WSTUN_ECLOSED);
  wstun__buf_free(&got);
  wstun__tls_free(cli);
  wstun__tls_free(srv);
  test_context(NULL);
}

static void exchange(size_t step) {
  exchange_with(cert_path, key_path, "localhost", step);
}

TEST(handshake_and_data_whole_and_byte_by_byte) {
  exchange(1 << 20);
  exchange(1);
  exchange(7);
  exchange(1000);
}

/* A client that fails verification names the reason. */
static void expect_refusal_by(const char *crt, const char *key,
                              const char *extra_ca, const char *host,
                              const char *reason) {
  test_context("%s / %s", extra_ca ? extra_ca : "system store", host);
  wstun__tls_config *ccfg = NULL, *scfg = NULL;
  char why[400] = "";
  CHECK_EQ_INT(wstun__tls_client_config(&ccfg, extra_ca, 1, why, sizeof(why)),
               0);
  CHECK_EQ_INT(wstun__tls_server_config(&scfg, crt, key, why, sizeof(why)), 0);
  if (ccfg == NULL || scfg == NULL)
    return;
  wstun__tls *cli = wstun__tls_new(ccfg, host);
  wstun__tls *srv = wstun__tls_new(scfg, NULL);
  CHECK_EQ_INT(handshake(cli, srv, 1 << 20), WSTUN_ETLS);
  CHECK(cli->failed);
  CHECK(strstr(cli->why, reason) != NULL);
  if (strstr(cli->why, reason) == NULL)
    fprintf(stderr, "  why: %s\n", cli->why);
  CHECK(!cli->handshake_done);
  wstun__tls_free(cli);
  wstun__tls_free(srv);
  wstun__tls_config_unref(ccfg);
  wstun__tls_config_unref(scfg);
  test_context(NULL);
}

static void expect_refusal(const char *extra_ca, const char *host,
                           const char *reason) {
  expect_refusal_by(cert_path, key_path, extra_ca, host, reason);
}

/* Hosts given as addresses are matched against iPAddress entries. */
TEST(ip_address_hosts) {
  exchange_with(ip_cert, ip_key, "127.0.0.1", 1 << 20);
  exchange_with(ip_cert, ip_key, "127.0.0.1", 5);
  expect_refusal_by(ip_cert, ip_key, ip_cert, "127.0.0.2", "Common Name");
  expect_refusal_by(ip_cert, ip_key, ip_cert, "::1", "Common Name");
  /* with a subjectAltName present the common name no longer counts */
  expect_refusal_by(ip_cert, ip_key, ip_cert, "localhost", "Common Name");
  /* a certificate without addresses names none */
  expect_refusal_by(cert_path, key_path, cert_path, "127.0.0.1", "Common Name");
}

TEST(verification_failures_name_the_reason) {
  expect_refusal(cert_path, "other.example", "Common Name");
  expect_refusal(NULL, "localhost", "not correctly signed");
  expect_refusal(other_cert, "localhost", "not correctly signed");
}

/* Records without data (OpenSSL sends empty ones to randomize CBC IVs)
 * are "again", never an end of stream: mbedTLS answers 0 for a second
 * empty record in a row, which once read as a close. */
TEST(empty_records_are_not_an_end) {
  wstun__tls_config *ccfg = NULL, *scfg = NULL;
  char why[400];
  CHECK_EQ_INT(wstun__tls_client_config(&ccfg, cert_path, 1, why, sizeof(why)),
               0);
  CHECK_EQ_INT(
      wstun__tls_server_config(&scfg, cert_path, key_path, why, sizeof(why)),
      0);
  wstun__tls *cli = wstun__tls_new(ccfg, "localhost");
  wstun__tls *srv = wstun__tls_new(scfg, NULL);
  CHECK_EQ_INT(handshake(cli, srv, 1 << 20), 0);
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(mbedtls_ssl_write(&cli->ssl, (const unsigned char *)"", 0), 0);
  size_t empties = wstun__buf_size(&cli->cout);
  CHECK(empties > 0); /* three records went out */
  CHECK_EQ_INT(wstun__tls_write(cli, (const uint8_t *)"abc", 3), 0);
  wstun__buf_append(&srv->cin, wstun__buf_data(&cli->cout),
                    wstun__buf_size(&cli->cout));
  wstun__buf_reset(&cli->cout);
  uint8_t buf[64];
  int n, reads = 0;
  while ((n = wstun__tls_read(srv, buf, sizeof(buf))) == WSTUN__TLS_AGAIN &&
         wstun__buf_size(&srv->cin) > 0 && reads < 10)
    reads++;
  CHECK_EQ_INT(n, 3);
  CHECK_MEM(buf, "abc", 3);
  wstun__tls_free(cli);
  wstun__tls_free(srv);
  wstun__tls_config_unref(ccfg);
  wstun__tls_config_unref(scfg);
}

TEST(verify_off_accepts_anything) {
  wstun__tls_config *ccfg = NULL, *scfg = NULL;
  char why[400];
  CHECK_EQ_INT(wstun__tls_client_config(&ccfg, NULL, 0, why, sizeof(why)), 0);
  CHECK_EQ_INT(
      wstun__tls_server_config(&scfg, cert_path, key_path, why, sizeof(why)),
      0);
  wstun__tls *cli = wstun__tls_new(ccfg, "wrong.example");
  wstun__tls *srv = wstun__tls_new(scfg, NULL);
  CHECK_EQ_INT(handshake(cli, srv, 3), 0);
  wstun__tls_free(cli);
  wstun__tls_free(srv);
  wstun__tls_config_unref(ccfg);
  wstun__tls_config_unref(scfg);
}

TEST(server_rejects_garbage) {
  wstun__tls_config *scfg = NULL;
  char why[400];
  CHECK_EQ_INT(
      wstun__tls_server_config(&scfg, cert_path, key_path, why, sizeof(why)),
      0);
  wstun__tls *srv = wstun__tls_new(scfg, NULL);
  static const char junk[] = "\x16\x03\x01\x00\x05hello-not-a-client-hello";
  wstun__buf_append(&srv->cin, junk, sizeof(junk) - 1);
  CHECK_EQ_INT(wstun__tls_handshake(srv), WSTUN_ETLS);
  CHECK(srv->failed && srv->why[0] != '\0');
  wstun__tls_free(srv);
  wstun__tls_config_unref(scfg);
}

TEST(config_errors) {
  wstun__tls_config *cfg = (wstun__tls_config *)1;
  char why[400] = "";
  char path[160];
  snprintf(path, sizeof(path), "%s/missing.pem", dir);
  CHECK_EQ_INT(wstun__tls_client_config(&cfg, path, 1, why, sizeof(why)),
               WSTUN_ETLS);
  CHECK(cfg == NULL);
  CHECK(strstr(why, "missing.pem") != NULL);
  /* a world-readable key is refused before it is even parsed */
  chmod(key_path, 0644);
  CHECK_EQ_INT(
      wstun__tls_server_config(&cfg, cert_path, key_path, why, sizeof(why)),
      WSTUN_ETLS);
  CHECK(strstr(why, "world-readable") != NULL);
  chmod(key_path, 0640); /* group-readable is fine (ssl-cert group) */
  CHECK_EQ_INT(
      wstun__tls_server_config(&cfg, cert_path, key_path, why, sizeof(why)), 0);
  wstun__tls_config_unref(cfg);
  chmod(key_path, 0600);
  /* a key that does not belong to the certificate */
  CHECK_EQ_INT(
      wstun__tls_server_config(&cfg, cert_path, other_key, why, sizeof(why)),
      WSTUN_ETLS);
  CHECK(strstr(why, "do not fit") != NULL);
  /* a certificate file that is not one */
  CHECK_EQ_INT(
      wstun__tls_server_config(&cfg, key_path, key_path, why, sizeof(why)),
      WSTUN_ETLS);
  CHECK(strstr(why, "cannot load certificate") != NULL);
  /* a FIFO is refused before it is opened: fopen would wait for a writer,
   * and a reload loads on the event loop */
  char fifo[160];
  snprintf(fifo, sizeof(fifo), "%s/fifo.pem", dir);
  CHECK_EQ_INT(mkfifo(fifo, 0600), 0);
  CHECK_EQ_INT(wstun__tls_server_config(&cfg, fifo, key_path, why, sizeof(why)),
               WSTUN_ETLS);
  CHECK(strstr(why, "not a regular file") != NULL);
  CHECK_EQ_INT(
      wstun__tls_server_config(&cfg, cert_path, fifo, why, sizeof(why)),
      WSTUN_ETLS);
  CHECK(strstr(why, "not a regular file") != NULL);
  CHECK_EQ_INT(wstun__tls_client_config(&cfg, fifo, 1, why, sizeof(why)),
               WSTUN_ETLS);
  CHECK(strstr(why, "not a regular file") != NULL);
  unlink(fifo);
}

/* One connection with the resumption key `key` against `scfg`; returns
 * the handshake's result and whether it resumed. */
static int dial_once(wstun__tls_config *ccfg, wstun__tls_config *scfg,
                     const char *host, const char *key, size_t step,
                     int *resumed) {
  wstun__tls *cli = wstun__tls_new(ccfg, host);
  wstun__tls *srv = wstun__tls_new(scfg, NULL);
  CHECK_EQ_INT(wstun__tls_resume_as(cli, key), 0);
  CHECK_EQ_INT(wstun__tls_resume_as(cli, key), WSTUN_EINVAL); /* once */
  int rc = handshake(cli, srv, step);
  *resumed = cli->resumed;
  if (rc == 0) { /* data flows after a resumed handshake too */
    wstun__buf got;
    wstun__buf_init(&got);
    CHECK_EQ_INT(wstun__tls_write(cli, (const uint8_t *)"ping", 4), 0);
    pass(cli, srv, step, &got);
    CHECK_EQ_INT((int)wstun__buf_size(&got), 4);
    wstun__buf_reset(&got);
    CHECK_EQ_INT(wstun__tls_write(srv, (const uint8_t *)"pong!", 5), 0);
    pass(srv, cli, step, &got);
    CHECK_EQ_INT((int)wstun__buf_size(&got), 5);
    wstun__buf_free(&got);
  }
  wstun__tls_free(cli);
  wstun__tls_free(srv);
  return rc;
}

/* A redial resumes the saved session from the server's ticket, whole and
 * byte by byte; a session is offered only under the key it was made with,
 * so another name still gets its certificate checked; a server that
 * cannot open the ticket (new ticket key) gets a full handshake. */
TEST(session_resumption) {
  wstun__tls_config *ccfg = NULL, *scfg = NULL, *scfg2 = NULL;
  char why[400] = "";
  CHECK_EQ_INT(wstun__tls_client_config(&ccfg, cert_path, 1, why, sizeof(why)),
               0);
  CHECK_EQ_INT(
      wstun__tls_server_config(&scfg, cert_path, key_path, why, sizeof(why)),
      0);
  CHECK_EQ_INT(
      wstun__tls_server_config(&scfg2, cert_path, key_path, why, sizeof(why)),
      0);
  if (ccfg == NULL || scfg == NULL || scfg2 == NULL)
    return;
  int resumed = -1;
  CHECK_EQ_INT(
      dial_once(ccfg, scfg, "localhost", "localhost:443", 1 << 20, &resumed),
      0);
  CHECK_EQ_INT(resumed, 0);
  CHECK_EQ_INT(
      dial_once(ccfg, scfg, "localhost", "localhost:443", 1 << 20, &resumed),
      0);
  CHECK_EQ_INT(resumed, 1);
  CHECK_EQ_INT(dial_once(ccfg, scfg, "localhost", "localhost:443", 1, &resumed),
               0);
  CHECK_EQ_INT(resumed, 1);
  CHECK_EQ_INT((int)scfg->handshakes, 3);
  CHECK_EQ_INT((int)scfg->resumed, 2);
  CHECK_EQ_INT((int)ccfg->handshakes, 3);
  CHECK_EQ_INT((int)ccfg->resumed, 2);

  /* another name: nothing offered, the certificate is checked and fails */
  CHECK_EQ_INT(dial_once(ccfg, scfg, "other.example", "other.example:443",
                         1 << 20, &resumed),
               WSTUN_ETLS);
  CHECK_EQ_INT(resumed, 0);
  CHECK_EQ_INT((int)scfg->resumed, 2);

  /* a restarted server (new ticket key): full handshake, then resumed */
  CHECK_EQ_INT(
      dial_once(ccfg, scfg2, "localhost", "localhost:443", 1 << 20, &resumed),
      0);
  CHECK_EQ_INT(resumed, 0);
  CHECK_EQ_INT((int)scfg2->resumed, 0);
  CHECK_EQ_INT(
      dial_once(ccfg, scfg2, "localhost", "localhost:443", 7, &resumed), 0);
  CHECK_EQ_INT(resumed, 1);

  /* more servers than slots: the least recently used goes */
  for (int i = 0; i < WSTUN__TLS_SESSIONS; i++) {
    char key[32];
    snprintf(key, sizeof(key), "localhost:%d", 1000 + i);
    CHECK_EQ_INT(dial_once(ccfg, scfg, "localhost", key, 1 << 20, &resumed), 0);
    CHECK_EQ_INT(resumed, 0);
  }
  CHECK_EQ_INT(
      dial_once(ccfg, scfg, "localhost", "localhost:443", 1 << 20, &resumed),
      0);
  CHECK_EQ_INT(resumed, 0);

  /* only a client, only before its handshake */
  wstun__tls *srv = wstun__tls_new(scfg, NULL);
  CHECK_EQ_INT(wstun__tls_resume_as(srv, "x:1"), WSTUN_EINVAL);
  wstun__tls_free(srv);
  wstun__tls *cli = wstun__tls_new(ccfg, "localhost");
  CHECK_EQ_INT(wstun__tls_handshake(cli), WSTUN__TLS_AGAIN);
  CHECK_EQ_INT(wstun__tls_resume_as(cli, "localhost:443"), WSTUN_EINVAL);
  wstun__tls_free(cli);
  wstun__tls_config_unref(ccfg);
  wstun__tls_config_unref(scfg);
  wstun__tls_config_unref(scfg2);
}

/* Every allocation of a resumed dial failing in turn: reported (no crash)
 * and nothing left allocated; a session is saved again afterwards. */
TEST(resumption_allocation_failures) {
  wstun__tls_config *ccfg = NULL, *scfg = NULL;
  char why[400] = "";
  mem.fail_at = 0;
  CHECK_EQ_INT(wstun__tls_client_config(&ccfg, cert_path, 1, why, sizeof(why)),
               0);
  CHECK_EQ_INT(
      wstun__tls_server_config(&scfg, cert_path, key_path, why, sizeof(why)),
      0);
  if (ccfg == NULL || scfg == NULL)
    return;
  int resumed = -1;
  CHECK_EQ_INT(
      dial_once(ccfg, scfg, "localhost", "localhost:443", 1 << 20, &resumed),
      0);
  int complete = 0;
  long n;
  for (n = 1; n < 500 && !complete; n++) {
    test_context("failing allocation %ld", n);
    long live = mem.live;
    mem.count = 0;
    mem.fail_at = n;
    int rc = WSTUN_ENOMEM;
    wstun__tls *cli = wstun__tls_new(ccfg, "localhost");
    wstun__tls *srv = wstun__tls_new(scfg, NULL);
    if (cli && srv) {
      rc = wstun__tls_resume_as(cli, "localhost:443");
      if (rc == 0)
        rc = handshake(cli, srv, 1 << 20);
    }
    complete = mem.count < n; /* nothing failed */
    if (complete)
      CHECK_EQ_INT(rc, 0);
    else /* or the test's own copying failed: no progress (-100) */
      CHECK(rc == WSTUN_ENOMEM || rc == WSTUN_ETLS || rc == -100);
    mem.fail_at = 0;
    wstun__tls_free(cli);
    wstun__tls_free(srv);
    CHECK_EQ_INT((int)mem.live, (int)live);
    test_context(NULL);
  }
  CHECK(complete);
  CHECK(n > 3);
  /* the last (complete) dial saved its session */
  CHECK_EQ_INT(
      dial_once(ccfg, scfg, "localhost", "localhost:443", 1 << 20, &resumed),
      0);
  CHECK_EQ_INT(resumed, 1);
  wstun__tls_config_unref(ccfg);
  wstun__tls_config_unref(scfg);
}

int main(int argc, char **argv) {
  if (mkdtemp(dir) == NULL || wstun_set_allocator(&counting) != 0)
    return 1;
  snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", dir);
  snprintf(key_path, sizeof(key_path), "%s/key.pem", dir);
  snprintf(other_cert, sizeof(other_cert), "%s/other.pem", dir);
  snprintf(other_key, sizeof(other_key), "%s/other.key", dir);
  snprintf(ip_cert, sizeof(ip_cert), "%s/ip.pem", dir);
  snprintf(ip_key, sizeof(ip_key), "%s/ip.key", dir);
  if (make_cert("localhost", 0, cert_path, key_path) != 0 ||
      make_cert("localhost", 0, other_cert, other_key) != 0 ||
      make_cert("localhost", 1, ip_cert, ip_key) != 0) {
    fprintf(stderr, "cannot make test certificates\n");
    return 1;
  }
  static const test_case tests[] = {
      T(handshake_and_data_whole_and_byte_by_byte),
      T(ip_address_hosts),
      T(verification_failures_name_the_reason),
      T(empty_records_are_not_an_end),
      T(verify_off_accepts_anything),
      T(server_rejects_garbage),
      T(config_errors),
      T(session_resumption),
      T(resumption_allocation_failures)};
  int rc = test_main(tests, TEST_COUNT(tests), argc, argv);
  unlink(cert_path);
  unlink(key_path);
  unlink(other_cert);
  unlink(other_key);
  unlink(ip_cert);
  unlink(ip_key);
  rmdir(dir);
  return rc;
}
