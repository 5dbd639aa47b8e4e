/* The -config file of wstunsrv and wstuncli: INI read by libinih, checked
 * against the programs' own flag tables (a top-level key is a long flag
 * name without dashes), and the client's [tunnel NAME] sections turned into
 * wstun_client_config structs. Every problem is kept, not only the first,
 * as "FILE:LINE: reason", so -check-config can list them all. Never prints
 * and never exits: the programs decide. Kept out of libwstun, which takes
 * no files. */
#ifndef WSTUN_APP_CONFIG_H
#define WSTUN_APP_CONFIG_H

#include <stddef.h>
#include <stdio.h>

#include "app_common.h"

typedef struct app_config_entry {
  char *key, *value; /* owned */
  int line;
} app_config_entry;

typedef struct app_config_section {
  char *kind; /* "tunnel" for [tunnel NAME]; NULL for the top level */
  char *name; /* NAME; NULL for the top level */
  int line;   /* of the [header]; 0 for the top level */
  app_config_entry *entries;
  size_t n, cap;
} app_config_section;

typedef struct app_config_error {
  int line;     /* 0: not from the file (a flag); the text names the flag */
  char *reason; /* owned */
} app_config_error;

typedef struct app_config {
  char *path; /* NULL without -config */
  int lines;  /* lines in the file */
  app_config_section top;
  app_config_section *sections;
  size_t nsections, capsections;
  app_config_error *errors;
  size_t nerrors, caperrors;
} app_config;

/* A kind of section: [NAME-OF-KIND NAME] takes the keys of `keys` (types
 * and ranges used; dst ignored). */
typedef struct app_config_kind {
  const char *name;
  const app_flag *keys;
} app_config_kind;

void app_config_init(app_config *c);
void app_config_free(app_config *c);

/* Reads `path` (or, when text is not NULL, the string text, with `path`
 * naming it in errors). `top` is the flag table (the keys allowed at the
 * top level); `kinds` the sections allowed (NULL-name terminated; NULL for
 * none). Values are checked as the flags check them. Returns the number of
 * errors so far (0: good); an unreadable file is one error at line 0. */
size_t app_config_parse(app_config *c, const char *path, const char *text,
                        const app_flag *top, const app_config_kind *kinds);

/* Where app_config_parse_stream takes the file's bytes from: up to n of
 * them into buf; the count, 0 at the end (it is not called again). Any
 * piece size works, one byte included. */
typedef size_t (*app_config_read_cb)(void *user_data, char *buf, size_t n);

/* app_config_parse over bytes from `read` (`path` names them in errors):
 * the file may come in pieces cut anywhere. A NUL byte makes its line an
 * error. */
size_t app_config_parse_stream(app_config *c, const char *path,
                               app_config_read_cb read, void *user_data,
                               const app_flag *top,
                               const app_config_kind *kinds);

/* Adds an error at `line` of the file (0: not about a line). */
void app_config_errorf(app_config *c, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes the errors to `out`, one a line, in line order (sorting c's
 * list): "FILE:LINE: reason" for the file, "PROG: reason" for the others
 * (which come first). */
void app_config_print_errors(app_config *c, const char *prog, FILE *out);
/* The same lines (without their newline) given to fn one by one. */
void app_config_each_error(app_config *c, const char *prog,
                           void (*fn)(void *ud, const char *line), void *ud);

/* The value of `key` in s (the last one), or NULL; *line set when found. */
const char *app_config_get(const app_config_section *s, const char *key,
                           int *line);

/* Applies the top-level entries to `flags`. The programs parse their
 * command line again afterwards, so that it wins. The values were checked
 * by app_config_parse; strings point into c (keep c until the end). */
void app_config_apply(const app_config *c, app_flag *flags);

/* The log level (a choice of words the flag table cannot check): a bad
 * value is reported at its line when it came from the file, else as the
 * flag. NULL is fine. */
void app_config_check_log_level(app_config *c, const char *value);
/* The same for -protocol; returns the protocol it names (1 or 2; NULL,
 * and a bad value after its error, give the default, 2). */
int app_config_check_protocol(app_config *c, const char *value);

/* ---- the client's tunnels -------------------------------------------- */

/* One tunnel of wstuncli: the flags and top-level keys, then its section's
 * keys. */
typedef struct app_cli_tunnel {
  char *name; /* the section's NAME, or NULL without sections (owned) */
  int line;   /* of its [tunnel NAME] header; 0 without sections */
  wstun_client_config cfg;
  const char *token;         /* as given: "tok" or "tok:password" */
  const char *password;      /* `password` key */
  const char *password_file; /* `password-file` key or -password-file */
  char *token_only;          /* owned: cfg.token points here */
  char *password_buf;        /* owned: cfg.password may point here */
  char *ca_path;             /* owned: cfg.ca_file may point here */
  /* "TOKEN:" with nothing after the colon, and no other password source:
   * the program asks on the terminal (cfg.password is NULL) */
  int password_prompt;
} app_cli_tunnel;

/* The keys of a [tunnel NAME] section, for app_config_parse. */
extern const app_config_kind app_cli_kinds[];

/* Builds the tunnels: one per [tunnel NAME] section of c, each starting
 * from *defaults (the flags and top-level keys already applied) and taking
 * its section's keys; without sections, *defaults alone. Checks what a
 * tunnel needs (tunnel URL, a token of 16 characters or more, a server or
 * a regexp, one password source) and resolves its password: the
 * "tok:password" form first, then `password`, then `password-file`
 * (refused when group or others may read it; cred:NAME reads a systemd
 * credential), then $WSTUNNEL_PASSWORD (`env`, may be NULL); with none of
 * them, a "tok:" token sets password_prompt. A cred:NAME `certfile`
 * becomes the credential's path. Problems go to c's errors. Returns the
 * number of tunnels in *out (free with app_cli_tunnels_free), 0 on
 * allocation failure. */
size_t app_cli_tunnels(app_config *c, const app_cli_tunnel *defaults,
                       const char *env_password, app_cli_tunnel **out);
void app_cli_tunnels_free(app_cli_tunnel *t, size_t n);

/* What a running tunnel was made from, as one string: two tunnels with
 * equal keys would behave alike (a reload leaves such a one alone). Every
 * field of t->cfg that the program sets from flags, the file and the
 * environment (the password included), and the identity (device, inode,
 * size, time) of its certfile, so that a renewed file counts as a change.
 * The log level is not in it: it changes without a restart. NULL when out
 * of memory. Free with app_cli_tunnel_key_free, which wipes it. */
char *app_cli_tunnel_key(const app_cli_tunnel *t);
void app_cli_tunnel_key_free(char *key);

#endif
