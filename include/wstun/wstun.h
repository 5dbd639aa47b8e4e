/* wstun — HTTP tunnels through firewalls over WebSockets.
 *
 * The whole public face of libwstun. Two opaque handles live on a libuv
 * loop the caller owns:
 *
 *   wstun_server  accepts HTTP requests and tunnel clients (wstunsrv)
 *   wstun_client  dials a server, registers a token and answers requests
 *                 from an HTTP backend or an in-process callback (wstuncli)
 *
 * Each is created, already running, by its _start() function
 * (wstun_server_start(), wstun_client_start()) and stopped and freed by its
 * _close() function (wstun_server_close(), wstun_client_close()).
 *
 * Threads: a server or a client belongs to the loop it was started on and,
 * like the uv_loop_t itself, is not thread-safe. Call every function of
 * this header only on the loop's thread, the one that runs uv_run() on
 * that loop (from a callback of the loop, or while the loop is not
 * running), unless the function says otherwise; another thread hands work
 * over with a uv_async_t. Every callback the library makes (log, state,
 * pong, handler, foreach, close) runs on that thread. Only these touch no
 * loop and may be called from any thread: wstun_strerror(),
 * wstun_version(), wstun_log_level_parse(), wstun_log_format_json(),
 * wstun_address_list_check(), wstun_server_config_init(),
 * wstun_client_config_init() and
 * wstun_memory_in_use(). wstun_set_allocator() is process-wide: call it
 * only while no thread uses libwstun.
 *
 * Signals: sockets are written with write(2), as libuv does, so a write to
 * a peer that reset the connection raises SIGPIPE, whose default action
 * ends the process. Ignore it (signal(SIGPIPE, SIG_IGN)) before starting a
 * server or a client, as wstunsrv and wstuncli do; the write then fails
 * with EPIPE and only that connection ends. The library installs no
 * signal handler of its own.
 *
 * Conventions (as in libuv):
 *   - Functions that can fail return 0 or a negative WSTUN_E* code;
 *     wstun_strerror() names it (and libuv's UV_E* codes too: the two
 *     never overlap). A call that fails synchronously never fires its
 *     callback.
 *   - Config structs are filled with defaults by their _init() function;
 *     set only what you need, so new fields never break callers.
 *   - The config struct and the strings in it are borrowed for the
 *     duration of the _start() call only: the library copies what it
 *     keeps. Callback pointers and user_data pointers are kept as given;
 *     the library never frees a user_data.
 *   - Handles are the library's: never free them; _close() does.
 *   - The library never prints, exits or aborts: it reports through return
 *     codes and the log callback.
 *   - Nothing is global but the allocator hook: several servers and
 *     clients may share one loop, or run on loops of their own in several
 *     threads.
 */
#ifndef WSTUN_H
#define WSTUN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "wstun/version.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define WSTUN_EXTERN __attribute__((visibility("default")))
#else
#define WSTUN_EXTERN
#endif

/* ---- errors ------------------------------------------------------------ */

/* wstun's codes live from -30001 down, far from errno's range where
 * libuv's UV_E* codes are (-1..-4095 on every platform libuv supports), so
 * a value that reached a log or a callback through either library means
 * one thing only. */
#define WSTUN_ERRNO_MAP(XX)                                                    \
  XX(EINVAL, -30001, "invalid argument")                                       \
  XX(ENOMEM, -30002, "out of memory")                                          \
  XX(EURL, -30003, "malformed URL")                                            \
  XX(EREGEX, -30004, "invalid regular expression")                             \
  XX(ELISTEN, -30005, "cannot listen on the given address")                    \
  XX(ESTATE, -30006, "operation not allowed in the current state")             \
  XX(EPROTO, -30007, "tunnel protocol error")                                  \
  XX(EHANDSHAKE, -30008, "WebSocket handshake failed")                         \
  XX(ECONNECT, -30009, "connection failed")                                    \
  XX(ECLOSED, -30010, "connection closed")                                     \
  XX(ETIMEDOUT, -30011, "timed out")                                           \
  XX(EPASSWORDS, -30012, "malformed password list")                            \
  XX(ECIDR, -30013, "malformed address list")                                  \
  XX(EPORTS, -30014, "malformed port list")                                    \
  XX(ETLS, -30015, "TLS failure")                                              \
  XX(ERNG, -30016, "cannot seed the random number generator")

typedef enum {
#define WSTUN__ERR(name, val, msg) WSTUN_##name = (val),
  WSTUN_ERRNO_MAP(WSTUN__ERR)
#undef WSTUN__ERR
} wstun_errno;

/* A static string (never to be freed) for a WSTUN_E* or a libuv UV_E*
 * code, "success" for 0, "unknown error" for others. Any thread. */
WSTUN_EXTERN const char *wstun_strerror(int err);

/* The library's version as "MAJOR.MINOR.PATCH" (a static string); compare
 * with WSTUN_VERSION_STRING, the headers' version. Any thread. */
WSTUN_EXTERN const char *wstun_version(void);

/* ---- memory ------------------------------------------------------------ */

/* The allocator libwstun uses for its own memory (process-wide). A block
 * is always freed through the allocator that gave it, so change it only
 * while libwstun holds no memory: before the first wstun_*_start(), or
 * once every server and client is closed and its loop has run until
 * uv_run() returned. No other thread may be inside libwstun meanwhile.
 * The dependencies (libuv, wslay, mbedTLS, jansson) keep their own
 * allocators. `realloc` and `calloc` follow the C semantics; `free`
 * accepts NULL. Each function gets the struct's `user_data`. */
typedef struct wstun_allocator {
  void *(*malloc)(size_t size, void *user_data);
  void *(*calloc)(size_t count, size_t size, void *user_data);
  void *(*realloc)(void *ptr, size_t size, void *user_data);
  void (*free)(void *ptr, void *user_data);
  void *user_data;
} wstun_allocator;

/* Copies *a (it may go away after the call); NULL restores malloc/free.
 * Returns 0, or WSTUN_EINVAL (nothing changed) if a function is
 * missing. */
WSTUN_EXTERN int wstun_set_allocator(const wstun_allocator *a);

/* What libwstun holds from the default allocator right now: bytes, as
 * malloc_usable_size() counts them (a little more than was asked for), and
 * blocks. For leak checks: once servers and clients are idle again, both
 * are back near their baseline (RSS is no guide: malloc keeps freed memory).
 * Memory of the dependencies (libuv, wslay, mbedTLS, jansson) is not
 * counted. Returns 0; WSTUN_EINVAL, with both 0, while an allocator set by
 * wstun_set_allocator() is in use (its owner can count) or where the C
 * library cannot tell a block's size. Either pointer may be NULL. Any
 * thread. */
WSTUN_EXTERN int wstun_memory_in_use(uint64_t *bytes, uint64_t *blocks);

/* ---- logging ----------------------------------------------------------- */

typedef enum {
  WSTUN_LOG_ERROR = 0,
  WSTUN_LOG_WARN = 1,
  WSTUN_LOG_INFO = 2,
  WSTUN_LOG_DEBUG = 3
} wstun_log_level;

/* Called, on the loop's thread, for every log line at or below the
 * configured level, also from inside the _start() and _close() calls.
 * `msg` is a NUL-terminated line without a trailing newline, owned by the
 * library and valid only during the call. Secrets never appear beyond an
 * 8-character prefix. */
typedef void (*wstun_log_cb)(void *user_data, wstun_log_level level,
                             const char *msg);

/* "error", "warn" (or "warning"), "info", "debug", case-insensitive → the
 * wstun_log_level; -1 if unknown or NULL. Any thread. */
WSTUN_EXTERN int wstun_log_level_parse(const char *name);

/* The access log: one line per request, at WSTUN_LOG_INFO, once its answer
 * is written (or the request is given up), unless the config's access_log
 * is 0. The server logs every request whose head it read (tunneled or
 * not; a tunnel handshake that succeeds becomes a tunnel instead); the
 * client logs every request that came through its tunnel. Its text (the
 * `msg` every callback gets) is key=value pairs:
 *
 *   access method=GET path=/echo?x=1 status=200 bytes=12 duration_ms=3
 *   remote=127.0.0.1:37294 token=abcdefgh... id=0000
 *
 * with bytes outside printable ASCII, spaces and '"' in values written as
 * %XX, and fields that are not set left out. The same values, as they
 * are, come in the record's `request` (wstun_log_record_cb). */
typedef struct wstun_log_request {
  const char *method; /* "GET" */
  /* The request target, token cut to its prefix (/_token/abcdefgh.../x):
   * on the server as the backend gets it when tunneled (without the base
   * path and /_token/TOKEN), else as received; on the client as it came
   * through the tunnel. Raw bytes: not always UTF-8. */
  const char *path;
  /* The status answered; 499 when the requester (or, on the client, the
   * tunnel) went away before an answer was written. */
  int status;
  uint64_t bytes;       /* response body bytes written (0 for HEAD) */
  uint64_t duration_ms; /* from the request head to the end of the answer */
  /* The requester: "ip:port" on the server; on the client, what the server
   * appended last to X-Forwarded-For; NULL when unknown. */
  const char *remote;
  /* The token's first 8 characters and "...": of a tunneled request on
   * the server, of the client's own token on the client; else NULL. */
  const char *token;
  /* The request's id on its tunnel, or -1 when it never reached one. Text
   * and JSON write it as four hex digits ("000a"), as the debug lines. */
  int64_t id;
  /* Client only: where it went ("http://127.0.0.1:8080", or "handler"
   * for the in-process handler); NULL when answered before that. */
  const char *backend;
  /* A pipe (status 101: an upgrade the backend accepted, passed through
   * both ways until either end closed): the bytes that went the other
   * way, from the requester to the backend (`bytes` counts those from the
   * backend). 0 for every other request. */
  uint64_t bytes_in;
} wstun_log_request;

/* One log line with its fields. Everything is owned by the library and
 * valid only during the callback. */
typedef struct wstun_log_record {
  wstun_log_level level;
  const char *msg; /* the line, exactly as wstun_log_cb gets it */
  const wstun_log_request *request; /* access-log lines only, else NULL */
} wstun_log_record;

/* Like wstun_log_cb, with the fields. When a config sets log_record_cb it
 * is called instead of log_cb, for every line, with log_user_data. */
typedef void (*wstun_log_record_cb)(void *user_data,
                                    const wstun_log_record *rec);

/* An extra string field for wstun_log_format_json (an app's name, say). */
typedef struct wstun_log_field {
  const char *key, *value; /* a NULL value leaves the field out */
} wstun_log_field;

/* Writes `rec` as one JSON object, without a newline, into buf (size
 * bytes; NUL-terminated when it fits): "time" (when `time` is not NULL),
 * "level" ("error", "warn", "info", "debug"), the `nextra` fields of
 * `extra` in order, "msg", then for access-log lines "method", "path",
 * "status", "bytes", "bytes_in" (a pipe's only), "duration_ms", "remote",
 * "token", "id" (a string of
 * hex digits) and "backend", each when set. Strings go through jansson
 * (quotes, backslashes and control characters escaped); bytes that are
 * not valid UTF-8 become U+FFFD. Returns the object's length, as snprintf
 * does: when it is `size` or more, buf was too small (and holds no line):
 * call again with length + 1 bytes. WSTUN_EINVAL (rec or rec->msg NULL) or
 * WSTUN_ENOMEM on error. Any thread. */
WSTUN_EXTERN int wstun_log_format_json(const wstun_log_record *rec,
                                       const char *time,
                                       const wstun_log_field *extra,
                                       size_t nextra, char *buf, size_t size);

/* ---- server ------------------------------------------------------------ */

typedef struct wstun_server wstun_server;

#define WSTUN_DEFAULT_MAX_CONNECTIONS 10000
#define WSTUN_DEFAULT_MAX_CONNECTIONS_PER_IP 1000

typedef struct wstun_server_config {
  const char *host;            /* listen address or host name (resolved at
                                  start, blocking); default "0.0.0.0" */
  int port;                    /* default 80; 0 picks a free port */
  const char *base_path;       /* prefix of every endpoint; default "" */
  const char *passwords;       /* "token:password,token2:pw2"; NULL = none */
  int max_requests_per_tunnel; /* requests waiting to be written to a
                                  tunnel, per token; default 20, 0 = 20,
                                  capped at 1000. With a v2 tunnel up,
                                  those waiting for one of its 256
                                  streams do not count (they are bounded
                                  by max_connections) */
  int max_clients_per_token;   /* 0 = unlimited */
  int ws_timeout_sec;          /* close a silent tunnel; default 30, 3..600 */
  int http_timeout_sec;        /* answer 504 after; default 1200 */
  /* Slow requesters: a response is buffered for its requester up to 2 MiB;
   * beyond that the tunnel stops reading (messages are not interleaved,
   * so every exchange on it waits). A requester that then takes no byte
   * for this many seconds is cut (connection reset) and the tunnel goes
   * on. Default 10 (0 = 10): below wstuncli's default -timeout of 30, as
   * a tunnel that is not read answers no pings and its client would
   * redial, yet far above the pauses of a live but slow reader, whose
   * every byte taken counts as progress. Likewise a request body streamed
   * onto a tunnel (sent alone until it ends) that leaves the tunnel
   * waiting this long is answered 408. */
  int stall_timeout_sec;
  int token_forget_sec; /* forget a token with no client; default 3600 */
  /* The tunnel protocol (docs/PROTOCOL.md): 2 (the default; 0 means 2)
   * answers a client that offers wstun.v2 in v2, many streams per tunnel
   * with flow control, so one slow or large response holds up no other,
   * and a requester that goes away cancels its backend request; clients
   * that do not offer it (the Go wstunnel) get v1. 1: every tunnel is v1.
   * Any other value is WSTUN_EINVAL. */
  int protocol;
  /* v2 tunnels only: http_timeout_sec bounds the wait for the response
   * head; once it is in, a response on which no byte moved either way
   * for this many seconds is reset and its requester cut. Default 300 (0
   * = 300): server-sent events and long downloads that keep moving are
   * never cut. */
  int stream_idle_timeout_sec;
  size_t max_header_bytes; /* request head larger → 431; default 64 KiB */
  uint64_t max_body_bytes; /* request body larger → 413; 0 = unlimited */
  /* Slow clients: the whole request head must arrive within this many
   * seconds of its first byte, else 408 and the connection closes
   * (slowloris). With TLS, the handshake must also be done within this
   * many seconds (at most 60) of the connection, else it closes without
   * an answer. Default 30. */
  int header_timeout_sec;
  /* A connection with no request under way (before its first one, between
   * keep-alive requests) is closed after this many seconds. Default 60. */
  int idle_timeout_sec;
  /* Open connections (requesters and tunnels) at most, in all and per
   * peer address; more are answered 503 and closed. 0 = no limit.
   * max_connections defaults to WSTUN_DEFAULT_MAX_CONNECTIONS and is
   * lowered at start to the open file limit (RLIMIT_NOFILE soft) less a
   * reserve of 64, so that a connection over it still gets its 503 rather
   * than a failed accept(). max_connections_per_ip defaults to
   * WSTUN_DEFAULT_MAX_CONNECTIONS_PER_IP (one host cannot take every slot;
   * room for a NAT's users; an IPv6 peer counts by its /64, since one
   * host may hold all of it) and does not apply to trusted_proxies, which
   * bring everybody from one address. */
  int max_connections;
  int max_connections_per_ip;
  /* Peers whose X-Forwarded-For is believed when deciding who a requester
   * is (for /_stats detail and admin access): "10.0.0.0/8,::1". NULL =
   * nobody's. The TCP peer decides otherwise; the header is never trusted
   * by default, since any client can write it. */
  const char *trusted_proxies;
  /* Requesters allowed /admin/... and /metrics besides this host
   * ("192.168.0.0/16,..."); NULL = this host only. */
  const char *admin_allow;
  /* When set, /admin/... and /metrics also need "Authorization: Bearer
   * <admin_token>" (compared in constant time). */
  const char *admin_token;
  /* Serve HTTPS and wss:// with this certificate chain and key (PEM
   * files; both or neither). The key file must not be readable by others.
   * TLS 1.2+, ECDHE with AES-GCM or ChaCha20-Poly1305, ALPN http/1.1. */
  const char *tls_cert_file;
  const char *tls_key_file;
  wstun_log_level log_level; /* default WSTUN_LOG_INFO */
  wstun_log_cb log_cb;       /* NULL = silent */
  void *log_user_data;
  wstun_log_record_cb log_record_cb; /* if set, called instead of log_cb */
  int access_log; /* 1 (default): the access log (see wstun_log_request) */
  /* For a node of a cluster behind a balancer (README "Several nodes
   * behind HAProxy"): a request for a token with no tunnel here (unknown,
   * or its tunnels gone) waits at most this long for one to arrive, then
   * is answered 404 "Tunnel not found". 0 (the default) keeps a lone
   * server's answers: 404 at once for an unknown token; a known token's
   * requests wait up to http_timeout_sec for its client to come back. */
  unsigned unknown_token_wait_ms;
} wstun_server_config;

/* Fills *cfg with the defaults. Any thread. */
WSTUN_EXTERN void wstun_server_config_init(wstun_server_config *cfg);

/* Creates a server on `loop` and starts listening; call it on the thread
 * that runs (or will run) the loop. Blocks while it resolves a host name
 * and reads the TLS files. On success *out is the server, the library's
 * until wstun_server_close() frees it. On error *out is untouched,
 * nothing is left for the caller to free, and no callback but log_cb
 * fires. Errors:
 *   WSTUN_EINVAL      loop, cfg or out NULL; port outside 0..65535; only
 *                     one of tls_cert_file and tls_key_file; a host that
 *                     is neither an address nor a name that resolves
 *   WSTUN_EPASSWORDS  malformed passwords
 *   WSTUN_ECIDR       malformed trusted_proxies or admin_allow
 *   WSTUN_ETLS        certificate or key unreadable, unusable or not a
 *                     pair, or the key file readable by others (the
 *                     reason is logged)
 *   WSTUN_ELISTEN     cannot bind or listen (address in use, no
 *                     permission); the listener handle is then still
 *                     closing: run the loop once more (uv_run() with
 *                     UV_RUN_NOWAIT will do) before uv_loop_close()
 *   WSTUN_ENOMEM, WSTUN_ERNG (no entropy) */
WSTUN_EXTERN int wstun_server_start(uv_loop_t *loop,
                                    const wstun_server_config *cfg,
                                    wstun_server **out);

/* 0 when `list` is a valid address list for trusted_proxies/admin_allow
 * ("10.0.0.0/8, ::1"; NULL and "" are valid), else WSTUN_ECIDR, or
 * WSTUN_ENOMEM. Any thread. */
WSTUN_EXTERN int wstun_address_list_check(const char *list);

/* Reads the TLS certificate and key files again (after a renewal) and uses
 * them for new connections; open ones, tunnels included, are untouched.
 * Blocks while it reads the files. On error the previous certificate stays
 * in use. Errors: WSTUN_ESTATE (srv NULL, no TLS configured, or the server
 * is closing), WSTUN_ETLS (the reason is logged), WSTUN_ENOMEM. */
WSTUN_EXTERN int wstun_server_reload_tls(wstun_server *srv);

/* Applies a new configuration to a running server (a configuration file
 * read again on SIGHUP, say): all of it, or, on any error, none of it.
 * Blocks while it reads the TLS files. `cfg` and its strings are borrowed
 * for the call only, as with wstun_server_start().
 *
 * Taken from `cfg` at once:
 *   passwords        new tunnels are checked against the new list; a live
 *                    tunnel whose handshake credentials the new list would
 *                    refuse (its token got a password, or another one) is
 *                    closed at once, its requests in flight answered as for
 *                    any lost tunnel (replayed on another tunnel of the
 *                    token when not yet sent, else 502). Closing is the
 *                    safe choice: a password is changed to shut out
 *                    whoever holds the old one, and a tunnel lives for
 *                    days. Tunnels that still match are untouched, and so
 *                    are all of them when a token's password is removed.
 *   admin_allow, admin_token, trusted_proxies   from the next request on
 *   tls_cert_file, tls_key_file   read again even when the names did not
 *                    change (a renewed certificate), for connections
 *                    accepted from now on; open ones keep theirs
 *   max_requests_per_tunnel, max_clients_per_token   for requests and
 *                    tunnels that come next; tunnels over a lowered
 *                    max_clients_per_token are not closed
 *   max_connections, max_connections_per_ip   for connections that come
 *                    next; none is closed
 *   protocol         tunnels that connect from now on (v2 offered or not)
 *   stream_idle_timeout_sec   v2 streams' watches from now on
 *   http_timeout_sec, stall_timeout_sec, unknown_token_wait_ms   requests
 *                    and watches that start next; token_forget_sec at the
 *                    next sweep
 *   max_header_bytes, max_body_bytes, header_timeout_sec,
 *   idle_timeout_sec   connections accepted from now on
 *   ws_timeout_sec   tunnels that connect from now on
 *   log_level, access_log   at once
 * Not taken (fixed at start; a new server is needed): host, port,
 * base_path, log_cb, log_record_cb and log_user_data. TLS cannot be turned on
 * or off.
 *
 * Errors (nothing changed, the reason logged):
 *   WSTUN_EINVAL      srv or cfg NULL; only one of tls_cert_file and
 *                     tls_key_file; TLS turned on or off; protocol not
 *                     0, 1 or 2
 *   WSTUN_ESTATE      the server is closing
 *   WSTUN_EPASSWORDS  malformed passwords
 *   WSTUN_ECIDR       malformed trusted_proxies or admin_allow
 *   WSTUN_ETLS        certificate or key unreadable, unusable, not a pair,
 *                     or the key readable by others
 *   WSTUN_ENOMEM */
WSTUN_EXTERN int wstun_server_reload(wstun_server *srv,
                                     const wstun_server_config *cfg);

/* The TCP port actually bound (useful with port 0). */
WSTUN_EXTERN int wstun_server_port(const wstun_server *srv);

/* Number of tokens that have at least one live tunnel connection. */
WSTUN_EXTERN size_t wstun_server_tunnel_count(const wstun_server *srv);

/* A snapshot of the server's counters: plain data in the caller's memory,
 * filled by wstun_server_get_stats(). */
typedef struct wstun_server_stats {
  size_t tunnels;            /* tokens with at least one live connection */
  size_t tunnel_connections; /* live tunnel connections, all tokens */
  size_t tokens;            /* tokens known (live or waiting to be forgotten) */
  size_t pending_requests;  /* exchanges queued or in flight */
  size_t front_connections; /* open HTTP connections of requesters */
  uint64_t completed_requests; /* answered by a tunnel client */
  uint64_t errored_requests;   /* answered by the server with an error */
} wstun_server_stats;

WSTUN_EXTERN void wstun_server_get_stats(const wstun_server *srv,
                                         wstun_server_stats *out);

/* One token as wstun_server_foreach_tunnel() shows it. Every pointer is
 * valid only during the callback. */
typedef struct wstun_tunnel_info {
  const char *token;          /* the full token: never log it whole */
  size_t connections;         /* live tunnel connections for it */
  size_t pending_requests;    /* queued or in flight */
  const char *remote_addr;    /* "ip:port" of its newest connection, or "" */
  const char *client_version; /* X-Client-Version of that connection, or "" */
  const char *remote_name;    /* its peer's reverse DNS name, or "" */
  uint64_t idle_ms;           /* since its last request or (dis)connection */
  const char *protocol;       /* "v1" or "v2": its newest connection's, or "" */
} wstun_tunnel_info;

typedef void (*wstun_tunnel_info_cb)(const wstun_tunnel_info *info,
                                     void *user_data);

/* Calls `cb` once per known token, before returning. The callback must
 * not call back into the server. */
WSTUN_EXTERN void wstun_server_foreach_tunnel(const wstun_server *srv,
                                              wstun_tunnel_info_cb cb,
                                              void *user_data);

typedef void (*wstun_server_close_cb)(wstun_server *srv, void *user_data);

/* Graceful stop, in two steps.
 *
 * At once: the listener closes (no new requesters, no new tunnels) and so
 * do requesters' connections that are idle between keep-alive requests.
 * Connections with a request under way (being received, waiting for a
 * tunnel, or being answered) keep going, and so do the tunnels: each such
 * connection is closed once its response is out.
 *
 * When the last of them is done, or after `grace_ms` (at once if 0 or if
 * nothing was under way): requests still waiting for a tunnel are answered
 * 503, those still under way are cut (their connections closed), and every
 * tunnel is closed (a WebSocket close frame is written if the socket takes
 * it; the client's answer is not awaited).
 *
 * Then, once libuv has closed every handle, the server is freed and `cb`
 * (may be NULL) is called with `user_data`: always later, from the loop,
 * never from inside this call. Use `srv` no more once `cb` was called (or
 * at all after this call if `cb` is NULL). A reverse DNS lookup of a
 * tunnel's peer still running in libuv's thread pool is not waited for: it
 * finishes on the loop after `cb` and frees itself, so run the loop until
 * uv_run() returns before uv_loop_close() or a memory check. A NULL `srv`
 * or a second call does nothing (the second `cb` never fires). */
WSTUN_EXTERN void wstun_server_close(wstun_server *srv, unsigned grace_ms,
                                     wstun_server_close_cb cb, void *user_data);

/* Graceful stop of a node behind a balancer that health-checks it: from
 * now on /_health_check answers 503 ("WSTUNSRV DRAINING") while every
 * other request and tunnel is served as before, so that the balancer
 * takes the node out while it still answers for its tokens. After
 * `wait_ms` the stop goes on as wstun_server_close(srv, grace_ms, cb,
 * user_data): tunnels close (their clients reconnect, through the
 * balancer, to another node) once the requests under way are answered.
 * The wait is skipped when no /_health_check came in the last 10 s (no
 * balancer is watching) or wait_ms is 0; the busy requests then get its
 * time too (grace wait_ms + grace_ms), so a stop takes as long either way.
 * wstun_server_close() during the
 * wait stops at once instead (its own cb then; this one never fires). A
 * NULL `srv`, or a server already draining or closing, is left alone. */
WSTUN_EXTERN void wstun_server_drain(wstun_server *srv, unsigned wait_ms,
                                     unsigned grace_ms,
                                     wstun_server_close_cb cb, void *user_data);

/* ---- client ------------------------------------------------------------ */

typedef struct wstun_client wstun_client;

/* A request that arrived through the tunnel, handed whole (head and body)
 * to the in-process handler. The library owns it; it stays valid from the
 * handler call until wstun_request_respond() or wstun_request_cancel(),
 * either of which frees it. */
typedef struct wstun_request wstun_request;

/* Gets each request once. Answer it with wstun_request_respond(), exactly
 * once, during this call or later on the loop's thread: until then the
 * request holds its memory, and wstun_client_close() waits for it. Answer
 * even after the tunnel dropped or wstun_client_close() ended its grace
 * (the call then returns WSTUN_ECLOSED and frees the request). */
typedef void (*wstun_handler_cb)(wstun_request *req, void *user_data);

typedef enum {
  WSTUN_CLIENT_CONNECTING = 0,
  WSTUN_CLIENT_CONNECTED = 1,
  WSTUN_CLIENT_DISCONNECTED = 2
} wstun_client_state;

/* State changes of the tunnel; `err` is 0 or the WSTUN_E* code that ended
 * the last connection. The first call (WSTUN_CLIENT_CONNECTING) comes from
 * inside wstun_client_start(), after *out is set; wstun_client_close() may
 * bring a last one (WSTUN_CLIENT_DISCONNECTED, WSTUN_ECLOSED). While a v2
 * tunnel the server drains (GOAWAY) still serves requests, the state stays
 * WSTUN_CLIENT_CONNECTED, even if the next tunnel cannot be dialed yet;
 * the dial's state shows once the drained tunnel closes. */
typedef void (*wstun_client_state_cb)(wstun_client *cli,
                                      wstun_client_state state, int err,
                                      void *user_data);

/* A pong from the server, the answer to the ping the client sends every
 * timeout/3: the tunnel is alive end to end. */
typedef void (*wstun_client_pong_cb)(wstun_client *cli, void *user_data);

typedef struct wstun_client_config {
  const char *tunnel_url; /* ws[s]://[user:pass@]host[:port][/base]; required */
  const char *token;      /* at least 16 characters; required */
  const char *password;   /* the token's password, or NULL */
  const char *server_url; /* default backend http://host[:port]; or NULL */
  const char *regexp;     /* X-Host allowed when it matches entirely */
  int timeout_sec;        /* ping every timeout/3, dead after timeout; 30 */
  int backend_timeout_sec; /* backend must answer within; default 1200 */
  /* Slow backends: a request body is buffered for its backend up to
   * 2 MiB; beyond that the tunnel stops reading (every request and body
   * behind it waits). A backend that then takes no byte for this many
   * seconds is given up (the requester gets 502, or a cut response) and
   * the tunnel goes on. Likewise a response streamed onto the tunnel (sent
   * alone until it ends) of which the backend sends nothing for this long
   * is cut. Default 10 (0 = 10). */
  int stall_timeout_sec;
  /* The tunnel protocol (docs/PROTOCOL.md): 2 (the default; 0 means 2)
   * offers wstun.v2 in the handshake and speaks v2 when the server
   * accepts it (many requests interleaved on the tunnel, flow control,
   * cancellation), else v1 on the same connection (a Go server). 1: v1
   * only, nothing offered. Any other value is WSTUN_EINVAL. */
  int protocol;
  int reconnect_max_ms;       /* backoff cap; default 30000 */
  int max_idle_per_backend;   /* idle keep-alive connections kept per
                                 backend; default 256 */
  int backend_idle_sec;       /* an idle keep-alive backend connection is
                                 closed after; default 30 */
  const char *client_version; /* sent as X-Client-Version; default lib's */
  /* Local source ports the tunnel connection may use, for firewalls that
   * only let chosen ports out: "8000..8100,8300,8505". The first free one
   * is taken. NULL = any. A malformed list is WSTUN_EPORTS. */
  const char *client_ports;
  /* TLS: wss:// tunnels and https:// backends are verified against the
   * system store (/etc/ssl/certs/ca-certificates.crt) plus this PEM file
   * of certificates (a private CA, a self-signed server); may be NULL. An
   * unreadable file is WSTUN_ETLS (the reason is logged). */
  const char *ca_file;
  /* 1: accept any certificate from https:// backends (never the tunnel). */
  int insecure_backends;
  /* Open the tunnel through this HTTP CONNECT proxy:
   * "http://[user:pass@]host:port" ("host:port" alone is fine). NULL: none,
   * unless proxy_from_env is set. */
  const char *proxy_url;
  /* 1: without proxy_url, take the proxy from https_proxy/HTTPS_PROXY (for
   * wss://) or http_proxy/HTTP_PROXY (for ws://), else all_proxy, honouring
   * no_proxy/NO_PROXY, as curl does. */
  int proxy_from_env;
  wstun_handler_cb handler; /* if set, requests go here, not to HTTP */
  void *handler_user_data;
  size_t max_handler_body; /* body limit for the handler; default 8 MiB;
                              a larger body is answered 413 and never
                              reaches the handler */
  wstun_client_state_cb state_cb;
  void *state_user_data;
  wstun_client_pong_cb pong_cb; /* gets state_user_data; may be NULL */
  wstun_log_level log_level;    /* default WSTUN_LOG_INFO */
  wstun_log_cb log_cb;          /* NULL = silent */
  void *log_user_data;
  wstun_log_record_cb log_record_cb; /* if set, called instead of log_cb */
  int access_log; /* 1 (default): the access log (see wstun_log_request) */
} wstun_client_config;

/* Fills *cfg with the defaults. Any thread. */
WSTUN_EXTERN void wstun_client_config_init(wstun_client_config *cfg);

/* Validates the config, then starts dialing (and redialing with backoff
 * after every drop) until wstun_client_close(); call it on the thread that
 * runs (or will run) the loop. Blocks while it reads certificates
 * (ca_file and, for wss://, the system store). On success *out is the
 * client, the library's until wstun_client_close() frees it; state_cb
 * already fires during this call. On error *out is untouched, nothing is
 * left for the caller to free, and no callback but log_cb fires. Errors:
 *   WSTUN_EINVAL  loop, cfg or out NULL; no tunnel_url; token missing,
 *                 shorter than 16 characters, or with spaces or control
 *                 characters
 *   WSTUN_EURL    malformed tunnel_url (or not ws/wss), server_url (or not
 *                 http/https) or proxy_url (or not http)
 *   WSTUN_EREGEX, WSTUN_EPORTS
 *   WSTUN_ETLS    ca_file unreadable, or no trusted certificate at all for
 *                 a wss:// tunnel (the reason is logged)
 *   WSTUN_ENOMEM, WSTUN_ERNG (no entropy)
 * Failures to reach the server later are not errors of this call: they go
 * to state_cb and the log, and the client keeps redialing. */
WSTUN_EXTERN int wstun_client_start(uv_loop_t *loop,
                                    const wstun_client_config *cfg,
                                    wstun_client **out);

/* The state state_cb last reported. */
WSTUN_EXTERN wstun_client_state wstun_client_get_state(const wstun_client *c);

/* Changes the level of the client's log lines from now on (a reloaded
 * configuration); the callback stays the one given at start. */
WSTUN_EXTERN void wstun_client_set_log_level(wstun_client *cli,
                                             wstun_log_level level);

typedef void (*wstun_client_close_cb)(wstun_client *cli, void *user_data);

/* Stops the client, in two steps. Dialing and redialing stop at once.
 *
 * Grace: if the tunnel is up and requests are in progress (received
 * through it and not yet answered in full: at a backend, held by the
 * in-process handler, or being sent back), the tunnel stays open for up to
 * `grace_ms` while they finish; requests that arrive meanwhile are served
 * too. The grace ends early once no request is left or the tunnel drops.
 *
 * Then (at once if `grace_ms` is 0, the tunnel is down or nothing is in
 * progress): the tunnel is closed (a WebSocket close frame is written if
 * the socket takes it; the server's answer is not awaited) and state_cb
 * reports WSTUN_CLIENT_DISCONNECTED with WSTUN_ECLOSED, possibly from
 * inside this call; a dial under way is abandoned; connections to backends
 * are closed, cutting the requests still at them; responses not yet sent
 * are dropped.
 *
 * The client is freed and `cb` (may be NULL) called with `user_data` only
 * when all of this is over:
 *   - libuv has closed every handle (tunnel, dial, backends, timers);
 *   - a name resolution already running in libuv's thread pool (of the
 *     server's or a backend's name) has returned: it cannot be cancelled;
 *   - the in-process handler has given back every request it was given,
 *     with wstun_request_respond() (after the grace that call returns
 *     WSTUN_ECLOSED) or wstun_request_cancel(). A handler that never
 *     answers keeps the client, and the loop, alive.
 * `cb` is always called later, from the loop, never from inside this call.
 * Use `cli` no more once `cb` was called (or at all after this call if
 * `cb` is NULL). A NULL `cli` or a second call does nothing (the second
 * `cb` never fires). */
WSTUN_EXTERN void wstun_client_close(wstun_client *cli, unsigned grace_ms,
                                     wstun_client_close_cb cb, void *user_data);

/* In-process requests. The strings and the body returned are owned by the
 * request: valid until wstun_request_respond(), never to be freed. */
/* The method, e.g. "GET". */
WSTUN_EXTERN const char *wstun_request_method(const wstun_request *req);
/* Origin-form target as received, e.g. "/path?q=1". */
WSTUN_EXTERN const char *wstun_request_target(const wstun_request *req);
/* The value of the first header with that name (case-insensitive), or
 * NULL. */
WSTUN_EXTERN const char *wstun_request_header(const wstun_request *req,
                                              const char *name);
/* The whole body (never NULL: "" with *len 0 when there is none); `len`
 * may be NULL. */
WSTUN_EXTERN const uint8_t *wstun_request_body(const wstun_request *req,
                                               size_t *len);

/* Sends the response (with Content-Length: len) and frees `req`, even on
 * error: `req` is invalid once this returns, so call it exactly once per
 * request. `content_type` (may be NULL: no Content-Type header) and `body`
 * are copied; the caller keeps its memory. Errors:
 *   WSTUN_EINVAL   status outside 100..599 (the requester gets a 500
 *                  instead), or req NULL (nothing happens)
 *   WSTUN_ECLOSED  the tunnel the request came through is gone (it
 *                  dropped, or wstun_client_close() closed it after its
 *                  grace): the response is discarded
 *   WSTUN_ENOMEM   the requester gets a 500 if memory allows */
WSTUN_EXTERN int wstun_request_respond(wstun_request *req, int status,
                                       const char *content_type,
                                       const void *body, size_t len);

/* ---- requests an in-process handler holds, and closing ------------------
 *
 * The handler owns one reference to `req` from its call until it gives it
 * back with wstun_request_respond() or wstun_request_cancel(); it may keep
 * it across loop turns (to answer later), even past a tunnel drop (then
 * respond returns WSTUN_ECLOSED). Either call releases the reference and
 * `req` must not be used afterwards.
 * wstun_client_close() waits for every request a handler holds (see
 * there): after its grace, wstun_request_respond() returns WSTUN_ECLOSED
 * and wstun_request_cancel() returns 0; both release the request. */

/* Gives up a request the handler holds without answering it: the
 * requester gets 503 (while the tunnel is still up), and `req` is freed.
 * 0, or WSTUN_EINVAL (req NULL or not held by the handler: already
 * answered or cancelled). */
WSTUN_EXTERN int wstun_request_cancel(wstun_request *req);

#ifdef __cplusplus
}
#endif
#endif /* WSTUN_H */
