/* TLS for wstun__conn, on mbedTLS: the configurations (client: what to
 * trust and whether to verify; server: certificate and key) and the
 * per-connection record layer. mbedTLS never touches the socket: its
 * "network" callbacks read ciphertext handed over by the connection and
 * append ciphertext to a buffer the connection writes out, so TLS adds no
 * I/O path of its own and keeps the connection's write coalescing. */
#ifndef WSTUN_TLS_H
#define WSTUN_TLS_H

#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_ticket.h>
#include <mbedtls/x509_crt.h>
#include <stddef.h>
#include <stdint.h>

#include "wstun_buf.h"
#include "wstun_rng.h"

/* The system trust store (Debian's ca-certificates). */
#define WSTUN__TLS_SYSTEM_CA "/etc/ssl/certs/ca-certificates.crt"

/* Client side: how many servers' last sessions a configuration keeps (a
 * client dials one tunnel server; a few more cost nothing). */
#define WSTUN__TLS_SESSIONS 4
/* Server side: how long a session ticket stays valid, in seconds. mbedTLS
 * also makes a new ticket key every this long (the previous key still
 * opens the tickets it sealed, for one more period). */
#define WSTUN__TLS_TICKET_LIFETIME (12 * 3600)

/* The last session made with one server, offered when redialing it. */
typedef struct wstun__tls_saved {
  mbedtls_ssl_session session;
  char key[300]; /* "host:port" of the server; "" = free slot */
  uint64_t used; /* a clock: the least recently used slot goes first */
} wstun__tls_saved;

/* Shared by every connection made with it; reference counted so that a
 * server can swap in a reloaded certificate while connections made with
 * the old one live on. */
typedef struct wstun__tls_config {
  mbedtls_ssl_config conf;
  mbedtls_x509_crt ca;   /* trusted (client) */
  mbedtls_x509_crt cert; /* own chain (server) */
  mbedtls_pk_context key;
  wstun__rng rng;
  int is_server;
  unsigned refs;
  /* server: session tickets, sealed with a key drawn from `rng` */
  mbedtls_ssl_ticket_context ticket;
  /* client: the last session per server, see wstun__tls_resume_as */
  wstun__tls_saved saved[WSTUN__TLS_SESSIONS];
  uint64_t clock;
  /* handshakes completed with this configuration, and how many of them
   * resumed a session (server: tickets accepted) */
  uint64_t handshakes;
  uint64_t resumed;
} wstun__tls_config;

/* A client configuration: TLS 1.2+, the peer verified against the system
 * store plus `extra_ca` (a PEM file, may be NULL), unless `verify` is 0.
 * On error returns WSTUN_ETLS (or WSTUN_ENOMEM, WSTUN_ERNG) and writes the
 * reason into err (WSTUN_ETLS only). */
int wstun__tls_client_config(wstun__tls_config **out, const char *extra_ca,
                             int verify, char *err, size_t errlen);
/* A server configuration from PEM files. The key file must not be
 * readable by others (WSTUN_ETLS, with the reason). */
int wstun__tls_server_config(wstun__tls_config **out, const char *cert_file,
                             const char *key_file, char *err, size_t errlen);
/* Restricts a configuration to ECDHE with an AEAD cipher (servers always;
 * the tunnel's client side, whose peer is ours or a modern proxy; not
 * backends, which may be old). */
void wstun__tls_config_modern(wstun__tls_config *cfg);
wstun__tls_config *wstun__tls_config_ref(wstun__tls_config *cfg);
void wstun__tls_config_unref(wstun__tls_config *cfg);

/* 1 when the certificate's subjectAltName lists the address `ip` (4 or 16
 * bytes). Reads crt->v3_ext only, within its bounds (fuzzed). */
int wstun__tls_crt_names_ip(const mbedtls_x509_crt *crt, const uint8_t *ip,
                            size_t iplen);

/* One connection's TLS state. */
typedef struct wstun__tls {
  mbedtls_ssl_context ssl;
  wstun__tls_config *cfg;
  wstun__buf cin;     /* ciphertext read, not yet taken by mbedTLS */
  const uint8_t *rx;  /* ciphertext of the current read, taken first */
  size_t rx_len;      /* (only set inside the read callback) */
  wstun__buf cout;    /* ciphertext to write */
  int started;        /* ciphertext seen (server) or ClientHello sent */
  int handshake_done; /* application data may flow */
  int failed;         /* the reason is in `why` */
  int notify_sent;    /* close_notify queued */
  int resumed;        /* the handshake resumed a saved session */
  uint8_t ip[16];     /* the host, when it is an IP address */
  size_t iplen;       /* 4, 16, or 0 for a name */
  char why[512];
  wstun__tls_saved *saved;   /* client: where this session is kept, */
  char *saved_key;           /* under this key (the slot may change) */
  unsigned char offered[48]; /* the master secret of the session offered */
  int did_offer;
} wstun__tls;

/* Allocates the per-connection state; `host` (client side) is sent as SNI
 * and checked against the certificate: a name against its DNS names (or
 * common name), an IP address against its IP address entries. NULL when
 * out of memory. */
wstun__tls *wstun__tls_new(wstun__tls_config *cfg, const char *host);
void wstun__tls_free(wstun__tls *t);

/* Client side, before the handshake starts: offers the session last made
 * under `key` with this configuration, and keeps the session this
 * handshake ends with under `key` for the next connection. `key` must name
 * both the address dialed and the name the certificate is checked against
 * ("host:port" when they are one): a resumed handshake skips certificate
 * verification, so a session may only go back to the server that proved
 * itself for it. A server that refuses the session gets a full handshake.
 * t->resumed tells, once the handshake is done, whether it resumed.
 * 0, or WSTUN_EINVAL (a server connection, a key over 299 bytes, or the
 * handshake under way). */
int wstun__tls_resume_as(wstun__tls *t, const char *key);

/* Results of the steps below. */
#define WSTUN__TLS_AGAIN 0 /* needs more ciphertext */
#define WSTUN__TLS_DONE 1  /* handshake complete */

/* Advances the handshake. WSTUN__TLS_AGAIN, WSTUN__TLS_DONE, or WSTUN_ETLS
 * (reason in t->why). */
int wstun__tls_handshake(wstun__tls *t);
/* Decrypts at most `cap` bytes into `out`: the count (> 0),
 * WSTUN__TLS_AGAIN, WSTUN_ECLOSED once the peer sent close_notify, or
 * WSTUN_ETLS. */
int wstun__tls_read(wstun__tls *t, uint8_t *out, size_t cap);
/* Encrypts all of data into t->cout. 0 or WSTUN_ETLS / WSTUN_ENOMEM. */
int wstun__tls_write(wstun__tls *t, const uint8_t *data, size_t len);
/* Queues a close_notify alert (once). */
void wstun__tls_close_notify(wstun__tls *t);

#endif
