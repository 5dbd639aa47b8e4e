/* TLS on mbedTLS: shared, reference-counted configurations (a client's
 * trust store and verification, a server's certificate and key, refused
 * when the key file is readable by others) and the per-connection record
 * layer, whose BIO callbacks only move ciphertext to and from buffers the
 * connection owns. */
#include "wstun_tls.h"

#include <arpa/inet.h>
#include <mbedtls/asn1.h>
#include <mbedtls/error.h>
#include <mbedtls/oid.h>
#include <mbedtls/platform_util.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "wstun/wstun.h"
#include "wstun_alloc.h"

/* TLS 1.2 with forward secrecy and AEAD only, as current browsers, Go,
 * nginx and curl offer. ChaCha20-Poly1305 first: mbedTLS 2.28 runs it
 * faster than its AES-GCM, which handles 16 bytes per step even with
 * AES-NI (tests/bench/README.md, "TLS": tls_cipher_bench), and
 * the server's order decides. */
static const int modern_suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    0};

void wstun__tls_config_modern(wstun__tls_config *cfg) {
  mbedtls_ssl_conf_ciphersuites(&cfg->conf, modern_suites);
}

/* The tunnel and its requests are HTTP/1.1, whatever else a peer offers. */
static const char *alpn[] = {"http/1.1", NULL};

static void describe(int rc, const char *what, char *err, size_t errlen) {
  char detail[128];
  mbedtls_strerror(rc, detail, sizeof(detail));
  snprintf(err, errlen, "%s: %s", what, detail);
}

/* Adds the PEM certificates of `path` to `crt`; 0, or -1 with "<what>
 * <path>: <reason>" in err. */
static int load_certs(mbedtls_x509_crt *crt, const char *path, const char *what,
                      char *err, size_t errlen) {
  /* a FIFO would block the loop in fopen (a reload runs on it) */
  struct stat st;
  if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s %s: not a regular file", what, path);
    return -1;
  }
  /* > 0: that many certificates of the file could not be parsed */
  int rc = mbedtls_x509_crt_parse_file(crt, path);
  if (rc == 0)
    return 0;
  char label[300];
  snprintf(label, sizeof(label), "%s %s", what, path);
  describe(rc < 0 ? rc : MBEDTLS_ERR_X509_INVALID_FORMAT, label, err, errlen);
  return -1;
}

static int config_new(wstun__tls_config **out, int endpoint) {
  wstun__tls_config *cfg = wstun__calloc(1, sizeof(*cfg));
  if (cfg == NULL)
    return WSTUN_ENOMEM;
  mbedtls_ssl_config_init(&cfg->conf);
  mbedtls_x509_crt_init(&cfg->ca);
  mbedtls_x509_crt_init(&cfg->cert);
  mbedtls_pk_init(&cfg->key);
  mbedtls_ssl_ticket_init(&cfg->ticket);
  for (size_t i = 0; i < WSTUN__TLS_SESSIONS; i++)
    mbedtls_ssl_session_init(&cfg->saved[i].session);
  cfg->refs = 1;
  cfg->is_server = endpoint == MBEDTLS_SSL_IS_SERVER;
  int rc = wstun__rng_init(&cfg->rng);
  if (rc == 0 && mbedtls_ssl_config_defaults(&cfg->conf, endpoint,
                                             MBEDTLS_SSL_TRANSPORT_STREAM,
                                             MBEDTLS_SSL_PRESET_DEFAULT) != 0)
    rc = WSTUN_ENOMEM;
  if (rc != 0) {
    wstun__tls_config_unref(cfg);
    return rc;
  }
  mbedtls_ssl_conf_rng(&cfg->conf, mbedtls_ctr_drbg_random, &cfg->rng.drbg);
  mbedtls_ssl_conf_min_version(&cfg->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                               MBEDTLS_SSL_MINOR_VERSION_3);
  mbedtls_ssl_conf_alpn_protocols(&cfg->conf, alpn);
  *out = cfg;
  return 0;
}

int wstun__tls_client_config(wstun__tls_config **out, const char *extra_ca,
                             int verify, char *err, size_t errlen) {
  wstun__tls_config *cfg;
  *out = NULL;
  int rc = config_new(&cfg, MBEDTLS_SSL_IS_CLIENT);
  if (rc != 0)
    return rc;
  /* a missing system store is not fatal by itself: -certfile may name
   * everything the user trusts */
  (void)mbedtls_x509_crt_parse_file(&cfg->ca, WSTUN__TLS_SYSTEM_CA);
  if (extra_ca && *extra_ca &&
      load_certs(&cfg->ca, extra_ca, "cannot load certificates from", err,
                 errlen) != 0) {
    wstun__tls_config_unref(cfg);
    return WSTUN_ETLS;
  }
  if (verify && cfg->ca.version == 0) {
    snprintf(err, errlen, "no trusted certificates (%s is missing)",
             WSTUN__TLS_SYSTEM_CA);
    wstun__tls_config_unref(cfg);
    return WSTUN_ETLS;
  }
  mbedtls_ssl_conf_ca_chain(&cfg->conf, &cfg->ca, NULL);
  mbedtls_ssl_conf_authmode(&cfg->conf, verify ? MBEDTLS_SSL_VERIFY_REQUIRED
                                               : MBEDTLS_SSL_VERIFY_NONE);
  *out = cfg;
  return 0;
}

/* mbedTLS's ticket writer and parser on the configuration's ticket
 * context; the parser counts the tickets it accepts: each one is a resumed
 * handshake. */
static int ticket_write(void *p, const mbedtls_ssl_session *session,
                        unsigned char *start, const unsigned char *end,
                        size_t *tlen, uint32_t *lifetime) {
  wstun__tls_config *cfg = p;
  return mbedtls_ssl_ticket_write(&cfg->ticket, session, start, end, tlen,
                                  lifetime);
}

static int ticket_parse(void *p, mbedtls_ssl_session *session,
                        unsigned char *buf, size_t len) {
  wstun__tls_config *cfg = p;
  int rc = mbedtls_ssl_ticket_parse(&cfg->ticket, session, buf, len);
  if (rc == 0)
    cfg->resumed++;
  return rc;
}

int wstun__tls_server_config(wstun__tls_config **out, const char *cert_file,
                             const char *key_file, char *err, size_t errlen) {
  *out = NULL;
  struct stat st;
  if (stat(key_file, &st) != 0) {
    snprintf(err, errlen, "cannot read key file %s", key_file);
    return WSTUN_ETLS;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "key file %s is not a regular file", key_file);
    return WSTUN_ETLS;
  }
  if (st.st_mode & S_IROTH) {
    snprintf(err, errlen,
             "key file %s is world-readable (mode %03o); chmod o-r it",
             key_file, (unsigned)(st.st_mode & 0777));
    return WSTUN_ETLS;
  }
  wstun__tls_config *cfg;
  int rc = config_new(&cfg, MBEDTLS_SSL_IS_SERVER);
  if (rc != 0)
    return rc;
  if (load_certs(&cfg->cert, cert_file, "cannot load certificate", err,
                 errlen) != 0)
    goto fail;
  rc = mbedtls_pk_parse_keyfile(&cfg->key, key_file, NULL);
  if (rc != 0) {
    char what[300];
    snprintf(what, sizeof(what), "cannot load key %s", key_file);
    describe(rc, what, err, errlen);
    goto fail;
  }
  rc = mbedtls_pk_check_pair(&cfg->cert.pk, &cfg->key);
  if (rc == 0)
    rc = mbedtls_ssl_conf_own_cert(&cfg->conf, &cfg->cert, &cfg->key);
  if (rc != 0) {
    describe(rc, "certificate and key do not fit", err, errlen);
    goto fail;
  }
  wstun__tls_config_modern(cfg);
  mbedtls_ssl_conf_authmode(&cfg->conf, MBEDTLS_SSL_VERIFY_NONE);
  /* Session tickets (RFC 5077): a client redialing after a dropped tunnel
   * resumes with one round trip and no signature or key exchange; the
   * server keeps no per-client state for it. */
  rc = mbedtls_ssl_ticket_setup(&cfg->ticket, mbedtls_ctr_drbg_random,
                                &cfg->rng.drbg, MBEDTLS_CIPHER_AES_256_GCM,
                                WSTUN__TLS_TICKET_LIFETIME);
  if (rc != 0) {
    describe(rc, "session tickets", err, errlen);
    goto fail;
  }
  mbedtls_ssl_conf_session_tickets_cb(&cfg->conf, ticket_write, ticket_parse,
                                      cfg);
  *out = cfg;
  return 0;
fail:
  wstun__tls_config_unref(cfg);
  return WSTUN_ETLS;
}

wstun__tls_config *wstun__tls_config_ref(wstun__tls_config *cfg) {
  cfg->refs++;
  return cfg;
}

void wstun__tls_config_unref(wstun__tls_config *cfg) {
  if (cfg == NULL || --cfg->refs > 0)
    return;
  mbedtls_ssl_config_free(&cfg->conf);
  mbedtls_x509_crt_free(&cfg->ca);
  mbedtls_x509_crt_free(&cfg->cert);
  mbedtls_pk_free(&cfg->key);
  mbedtls_ssl_ticket_free(&cfg->ticket); /* before the rng it draws from */
  for (size_t i = 0; i < WSTUN__TLS_SESSIONS; i++)
    mbedtls_ssl_session_free(&cfg->saved[i].session);
  wstun__rng_free(&cfg->rng);
  wstun__free(cfg);
}

/* ---- the record layer's "network" --------------------------------------- */

static int bio_send(void *ctx, const unsigned char *buf, size_t len) {
  wstun__tls *t = ctx;
  if (wstun__buf_append(&t->cout, buf, len) != 0)
    return MBEDTLS_ERR_SSL_ALLOC_FAILED;
  return (int)len;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len) {
  wstun__tls *t = ctx;
  size_t have = wstun__buf_size(&t->cin);
  if (have > 0) {
    size_t n = have < len ? have : len;
    memcpy(buf, wstun__buf_data(&t->cin), n);
    wstun__buf_consume(&t->cin, n);
    return (int)n;
  }
  if (t->rx_len > 0) {
    size_t n = t->rx_len < len ? t->rx_len : len;
    memcpy(buf, t->rx, n);
    t->rx += n;
    t->rx_len -= n;
    return (int)n;
  }
  return MBEDTLS_ERR_SSL_WANT_READ;
}

/* ---- IP address hosts ---------------------------------------------------- */

/* 1 when the certificate's subjectAltName lists the address `ip` (an
 * iPAddress entry, [7]). mbedTLS 2.28 keeps only DNS names of that
 * extension, so its raw bytes are walked here. */
int wstun__tls_crt_names_ip(const mbedtls_x509_crt *crt, const uint8_t *ip,
                            size_t iplen) {
  unsigned char *p = crt->v3_ext.p, *end;
  size_t len;
  if (p == NULL)
    return 0;
  end = p + crt->v3_ext.len;
  if (mbedtls_asn1_get_tag(&p, end, &len,
                           MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE))
    return 0;
  end = p + len;
  while (p < end) {
    /* Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE,
     *                          extnValue OCTET STRING } */
    if (mbedtls_asn1_get_tag(&p, end, &len,
                             MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE))
      return 0;
    unsigned char *ext_end = p + len;
    mbedtls_asn1_buf oid = {.tag = MBEDTLS_ASN1_OID};
    if (mbedtls_asn1_get_tag(&p, ext_end, &oid.len, MBEDTLS_ASN1_OID))
      return 0;
    oid.p = p;
    p += oid.len;
    int critical;
    (void)mbedtls_asn1_get_bool(&p, ext_end, &critical); /* optional */
    if (mbedtls_asn1_get_tag(&p, ext_end, &len, MBEDTLS_ASN1_OCTET_STRING))
      return 0;
    if (MBEDTLS_OID_CMP(MBEDTLS_OID_SUBJECT_ALT_NAME, &oid) == 0) {
      unsigned char *q = p, *qend = p + len;
      size_t names;
      if (mbedtls_asn1_get_tag(&q, qend, &names,
                               MBEDTLS_ASN1_CONSTRUCTED |
                                   MBEDTLS_ASN1_SEQUENCE))
        return 0;
      qend = q + names;
      while (q < qend) {
        unsigned char tag = *q++;
        size_t n;
        if (mbedtls_asn1_get_len(&q, qend, &n))
          return 0;
        if (tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) && n == iplen &&
            memcmp(q, ip, n) == 0)
          return 1;
        q += n;
      }
    }
    p = ext_end;
  }
  return 0;
}

/* Verification step for a host given as an IP address: the leaf must
 * name that address; mismatches are reported like a wrong host name. */
static int verify_ip(void *ctx, mbedtls_x509_crt *crt, int depth,
                     uint32_t *flags) {
  wstun__tls *t = ctx;
  if (depth == 0 && !wstun__tls_crt_names_ip(crt, t->ip, t->iplen))
    *flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
  return 0;
}

wstun__tls *wstun__tls_new(wstun__tls_config *cfg, const char *host) {
  wstun__tls *t = wstun__calloc(1, sizeof(*t));
  if (t == NULL)
    return NULL;
  mbedtls_ssl_init(&t->ssl);
  /* an address is neither sent as SNI (RFC 6066) nor matched as a name */
  if (host && inet_pton(AF_INET, host, t->ip) == 1)
    t->iplen = 4;
  else if (host && inet_pton(AF_INET6, host, t->ip) == 1)
    t->iplen = 16;
  if (mbedtls_ssl_setup(&t->ssl, &cfg->conf) != 0 ||
      (host && !t->iplen && mbedtls_ssl_set_hostname(&t->ssl, host) != 0)) {
    mbedtls_ssl_free(&t->ssl);
    wstun__free(t);
    return NULL;
  }
  if (t->iplen)
    mbedtls_ssl_set_verify(&t->ssl, verify_ip, t);
  t->cfg = wstun__tls_config_ref(cfg);
  mbedtls_ssl_set_bio(&t->ssl, t, bio_send, bio_recv, NULL);
  return t;
}

void wstun__tls_free(wstun__tls *t) {
  if (t == NULL)
    return;
  mbedtls_ssl_free(&t->ssl);
  mbedtls_platform_zeroize(t->offered, sizeof(t->offered));
  wstun__free(t->saved_key);
  wstun__tls_config_unref(t->cfg);
  wstun__buf_free(&t->cin);
  wstun__buf_free(&t->cout);
  wstun__free(t);
}

/* ---- session resumption (client side) ----------------------------------- */

static void forget(wstun__tls_saved *slot) {
  mbedtls_ssl_session_free(&slot->session);
  mbedtls_ssl_session_init(&slot->session);
  slot->key[0] = '\0';
  slot->used = 0;
}

int wstun__tls_resume_as(wstun__tls *t, const char *key) {
  wstun__tls_config *cfg = t->cfg;
  if (cfg->is_server || t->started || t->saved ||
      t->ssl.state != MBEDTLS_SSL_HELLO_REQUEST ||
      strlen(key) >= sizeof(cfg->saved[0].key))
    return WSTUN_EINVAL;
  t->saved_key = wstun__strdup(key);
  if (t->saved_key == NULL)
    return WSTUN_ENOMEM;
  wstun__tls_saved *slot = NULL;
  for (size_t i = 0; i < WSTUN__TLS_SESSIONS && slot == NULL; i++)
    if (strcmp(cfg->saved[i].key, key) == 0)
      slot = &cfg->saved[i];
  /* (a slot whose first handshake is still under way has no session) */
  if (slot != NULL &&
      (slot->session.id_len > 0 || slot->session.ticket_len > 0)) {
    /* a copy: mbedTLS keeps its own; the master secret tells afterwards
     * whether the server took it (a full handshake makes a new one) */
    if (mbedtls_ssl_set_session(&t->ssl, &slot->session) == 0) {
      memcpy(t->offered, slot->session.master, sizeof(t->offered));
      t->did_offer = 1;
    }
  } else if (slot == NULL) {
    /* the least recently used slot (free ones have used == 0) */
    slot = &cfg->saved[0];
    for (size_t i = 1; i < WSTUN__TLS_SESSIONS; i++)
      if (cfg->saved[i].used < slot->used)
        slot = &cfg->saved[i];
    forget(slot);
    snprintf(slot->key, sizeof(slot->key), "%s", key);
  }
  slot->used = ++cfg->clock;
  t->saved = slot;
  return 0;
}

/* The slot this connection's session goes to, unless another server's
 * session took it over meanwhile. */
static wstun__tls_saved *kept_slot(const wstun__tls *t) {
  if (t->saved == NULL || strcmp(t->saved->key, t->saved_key) != 0)
    return NULL;
  return t->saved;
}

static int fail(wstun__tls *t, int rc) {
  t->failed = 1;
  /* a session that led to a failed handshake is not offered again (unless
   * it was only our memory that ran out) */
  if (!t->handshake_done && t->did_offer &&
      rc != MBEDTLS_ERR_SSL_ALLOC_FAILED && kept_slot(t))
    forget(t->saved);
  uint32_t flags = mbedtls_ssl_get_verify_result(&t->ssl);
  if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && flags != 0 &&
      flags != (uint32_t)-1) {
    /* "The certificate validity has expired\n..." → one line */
    char info[400];
    mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
    size_t n = strlen(info);
    while (n > 0 && info[n - 1] == '\n')
      info[--n] = '\0';
    for (char *p = info; *p; p++)
      if (*p == '\n')
        *p = ';';
    snprintf(t->why, sizeof(t->why), "certificate rejected: %s", info);
  } else {
    describe(rc, "handshake failed", t->why, sizeof(t->why));
  }
  return WSTUN_ETLS;
}

/* The handshake is done: count it, tell whether it resumed, and keep the
 * session (with the new ticket the server may have sent) for next time. */
static void handshake_finished(wstun__tls *t) {
  t->handshake_done = 1;
  t->cfg->handshakes++;
  if (t->cfg->is_server)
    return; /* resumptions counted as the tickets are parsed */
  t->resumed =
      t->did_offer && t->ssl.session != NULL &&
      memcmp(t->ssl.session->master, t->offered, sizeof(t->offered)) == 0;
  if (t->resumed)
    t->cfg->resumed++;
  wstun__tls_saved *slot = kept_slot(t);
  if (slot && mbedtls_ssl_get_session(&t->ssl, &slot->session) != 0)
    forget(slot); /* half copied: not to be offered */
}

int wstun__tls_handshake(wstun__tls *t) {
  int rc = mbedtls_ssl_handshake(&t->ssl);
  if (rc == 0) {
    handshake_finished(t);
    return WSTUN__TLS_DONE;
  }
  if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
    return WSTUN__TLS_AGAIN;
  return fail(t, rc);
}

int wstun__tls_read(wstun__tls *t, uint8_t *out, size_t cap) {
  int rc = mbedtls_ssl_read(&t->ssl, out, cap);
  if (rc > 0)
    return rc;
  /* 0: a second empty record in a row (the bio never reports an end of
   * input, which is the other meaning of 0) */
  if (rc == 0 || rc == MBEDTLS_ERR_SSL_WANT_READ ||
      rc == MBEDTLS_ERR_SSL_WANT_WRITE)
    return WSTUN__TLS_AGAIN;
  if (rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
    return WSTUN_ECLOSED;
  return fail(t, rc);
}

int wstun__tls_write(wstun__tls *t, const uint8_t *data, size_t len) {
  while (len > 0) {
    int rc = mbedtls_ssl_write(&t->ssl, data, len);
    if (rc == MBEDTLS_ERR_SSL_ALLOC_FAILED)
      return WSTUN_ENOMEM;
    if (rc <= 0)
      return fail(t, rc);
    data += rc;
    len -= (size_t)rc;
  }
  return 0;
}

void wstun__tls_close_notify(wstun__tls *t) {
  if (t->notify_sent || !t->handshake_done)
    return;
  t->notify_sent = 1;
  mbedtls_ssl_close_notify(&t->ssl);
}
