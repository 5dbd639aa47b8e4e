/* The -config file parser of wstunsrv and wstuncli: apps/app_config.c,
 * included below so that its password-file reads go to a fake (the input
 * must not name real files for the target to read: /dev/stdin would
 * block), with apps/app_common.c compiled in for the value conversions.
 *
 * The file goes through app_config_parse_stream twice: in pieces of the
 * size byte 0 picks (1..16 bytes), and in pieces as large as the parser
 * takes; both must read exactly alike (entries, lines, errors). Then, on
 * what was read:
 *   - every error's line is within the file (0: not about a line);
 *   - every entry is a key of its table, once per section, its value one
 *     the key's type takes, its line within the file and after the
 *     section's header; no two sections share a kind and name;
 *   - the client's tunnels (app_cli_tunnels, after app_config_apply): one
 *     per [tunnel NAME] section (or one without sections), and when no
 *     error was found, each has a tunnel URL, a token of 16 characters
 *     or more without its ":password", and a server or a regexp;
 *   - app_cli_tunnel_key is the same for the same tunnel read twice.
 * ASan and UBSan watch the rest, leaks included.
 *
 * Input: one byte (the piece size of the first reading), then the file. */
#include <ctype.h>

#include "fuzz_util.h"

#define app_secret_read fuzz_secret_read
#include "../../apps/app_config.c"
#undef app_secret_read

/* password-file: names starting with "ok" hold a password, the others
 * cannot be read. */
int fuzz_secret_read(const char *path, char *out, size_t n, char *err,
                     size_t errlen) {
  if (strncmp(path, "ok", 2) != 0) {
    snprintf(err, errlen, "cannot read %s: fake", path);
    return -1;
  }
  snprintf(out, n, "pw-%s", path);
  return 0;
}

/* The keys the client takes at its top level, with its types and ranges
 * (cli_main.c's table, less the help texts). */
typedef struct vals {
  const char *config, *tunnel, *server, *token, *password_file, *regexp;
  const char *client_ports, *certfile, *proxy, *log_level, *logfile, *syslog;
  const char *log_format, *pidfile, *statusfile, *password;
  int check_config, timeout, stall, backend_timeout, backend_idle, insecure;
  int log_pretty;
} vals;

#define NKEYS 23
static void table(app_flag *f, vals *v) {
  app_flag t[NKEYS + 1] = {
      {"config", FLAG_STR, &v->config, "", "", 0, -1},
      {"check-config", FLAG_BOOL, &v->check_config, "", "", 0, 1},
      {"tunnel", FLAG_STR, &v->tunnel, "", "", 0, -1},
      {"server", FLAG_STR, &v->server, "", "", 0, -1},
      {"token", FLAG_STR, &v->token, "", "", 0, -1},
      {"password-file", FLAG_STR, &v->password_file, "", "", 0, -1},
      {"regexp", FLAG_STR, &v->regexp, "", "", 0, -1},
      {"timeout", FLAG_INT, &v->timeout, "", "", 0, -1},
      {"stall-timeout", FLAG_INT, &v->stall, "", "", 1, 86400},
      {"backend-timeout", FLAG_INT, &v->backend_timeout, "", "", 1, 100000000},
      {"backend-idle", FLAG_INT, &v->backend_idle, "", "", 1, 86400},
      {"client-ports", FLAG_STR, &v->client_ports, "", "", 0, -1},
      {"certfile", FLAG_STR, &v->certfile, "", "", 0, -1},
      {"insecure", FLAG_BOOL, &v->insecure, "", "", 0, 1},
      {"proxy", FLAG_STR, &v->proxy, "", "", 0, -1},
      {"log-level", FLAG_STR, &v->log_level, "", "", 0, -1},
      {"log-pretty", FLAG_BOOL, &v->log_pretty, "", "", 0, 1},
      {"logfile", FLAG_STR, &v->logfile, "", "", 0, -1},
      {"syslog", FLAG_STR, &v->syslog, "", "", 0, -1},
      {"log-format", FLAG_STR, &v->log_format, "", "", 0, -1},
      {"pidfile", FLAG_STR, &v->pidfile, "", "", 0, -1},
      {"statusfile", FLAG_STR, &v->statusfile, "", "", 0, -1},
      {"password", FLAG_STR, &v->password, "", "", 0, -1},
      {NULL, FLAG_STR, NULL, NULL, NULL, 0, 0},
  };
  memcpy(f, t, sizeof(t));
}

typedef struct source {
  const uint8_t *p;
  size_t left, piece;
  int calls_after_end;
} source;

static size_t read_source(void *ud, char *buf, size_t n) {
  source *s = ud;
  if (s->left == 0) {
    s->calls_after_end++;
    return 0;
  }
  size_t take = s->piece < n ? s->piece : n;
  if (take > s->left)
    take = s->left;
  memcpy(buf, s->p, take);
  s->p += take;
  s->left -= take;
  return take;
}

static void parse_in_pieces(app_config *c, const uint8_t *d, size_t n,
                            size_t piece, const app_flag *top) {
  app_config_init(c);
  source s = {d, n, piece, 0};
  app_config_parse_stream(c, "f.ini", read_source, &s, top, app_cli_kinds);
  FZ_CHECK(s.calls_after_end == 1, "the source was asked %d times at its end",
           s.calls_after_end);
}

/* Everything read, as text (for comparing two readings). */
static char *snapshot(app_config *c) {
  char *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  if (f == NULL)
    abort();
  fprintf(f, "lines %d\n", c->lines);
  for (size_t i = 0; i <= c->nsections; i++) {
    const app_config_section *s = i == 0 ? &c->top : &c->sections[i - 1];
    fprintf(f, "[%s %s] %d\n", s->kind ? s->kind : "-", s->name ? s->name : "-",
            s->line);
    for (size_t e = 0; e < s->n; e++)
      fprintf(f, "%s=%s %d\n", s->entries[e].key, s->entries[e].value,
              s->entries[e].line);
  }
  app_config_print_errors(c, "prog", f);
  fclose(f);
  return out;
}

static void check_section(const app_config *c, const app_config_section *s,
                          const app_flag *keys) {
  for (size_t e = 0; e < s->n; e++) {
    const app_config_entry *en = &s->entries[e];
    const app_flag *k = find_key(keys, en->key);
    FZ_CHECK(k != NULL, "key %s not in its table", en->key);
    FZ_CHECK(en->line >= 1 && en->line <= c->lines && en->line > s->line,
             "entry line %d (section at %d, %d lines)", en->line, s->line,
             c->lines);
    union {
      const char *s;
      int i;
      uint64_t u;
    } scratch;
    char err[256];
    FZ_CHECK(app_flag_value(k, en->value, &scratch, err, sizeof(err)) == 0,
             "%s = %s kept, yet its type refuses it", en->key, en->value);
    for (size_t f = 0; f < e; f++)
      FZ_CHECK(strcmp(s->entries[f].key, en->key) != 0, "key %s twice",
               en->key);
    FZ_CHECK(strcmp(en->key, "config") && strcmp(en->key, "check-config"),
             "%s is a command-line flag only", en->key);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1)
    return 0;
  size_t piece = 1 + (data[0] & 15);
  data++;
  size--;
  vals v1, v2;
  app_flag top1[NKEYS + 1], top2[NKEYS + 1];
  memset(&v1, 0, sizeof(v1));
  memset(&v2, 0, sizeof(v2));
  table(top1, &v1);
  table(top2, &v2);

  app_config a, b;
  parse_in_pieces(&a, data, size, piece, top1);
  parse_in_pieces(&b, data, size, 1 << 20, top2);
  char *sa = snapshot(&a), *sb = snapshot(&b);
  FZ_CHECK(strcmp(sa, sb) == 0, "pieces of %zu read otherwise:\n%s---\n%s",
           piece, sa, sb);
  free(sa);
  free(sb);
  app_config_free(&b);

  for (size_t i = 0; i < a.nerrors; i++)
    FZ_CHECK(a.errors[i].line >= 0 && a.errors[i].line <= a.lines,
             "error at line %d of %d: %s", a.errors[i].line, a.lines,
             a.errors[i].reason);
  check_section(&a, &a.top, top1);
  size_t ntunnel_sections = 0;
  for (size_t i = 0; i < a.nsections; i++) {
    const app_config_section *s = &a.sections[i];
    FZ_CHECK(strcmp(s->kind, "tunnel") == 0, "section kind %s", s->kind);
    FZ_CHECK(*s->name != '\0', "a section without a name");
    FZ_CHECK(s->line >= 1 && s->line <= a.lines, "section line %d", s->line);
    check_section(&a, s, app_cli_kinds[0].keys);
    for (size_t j = 0; j < i; j++)
      FZ_CHECK(strcmp(a.sections[j].name, s->name) != 0, "section %s twice",
               s->name);
    ntunnel_sections++;
  }

  /* the client's tunnels, from the flags the file set */
  app_config_apply(&a, top1);
  app_cli_tunnel d;
  memset(&d, 0, sizeof(d));
  wstun_client_config_init(&d.cfg);
  d.cfg.tunnel_url = v1.tunnel;
  d.cfg.server_url = v1.server;
  d.cfg.regexp = v1.regexp;
  d.cfg.ca_file = v1.certfile;
  d.cfg.proxy_url = v1.proxy;
  d.cfg.client_ports = v1.client_ports;
  d.cfg.timeout_sec = v1.timeout;
  d.cfg.insecure_backends = v1.insecure;
  d.token = v1.token;
  d.password = v1.password;
  d.password_file = v1.password_file;
  size_t before = a.nerrors;
  app_cli_tunnel *t = NULL;
  size_t n = app_cli_tunnels(&a, &d, "env-pw", &t);
  if (t != NULL) {
    size_t want = ntunnel_sections ? ntunnel_sections : 1;
    FZ_CHECK(n == want, "%zu tunnels from %zu sections", n, ntunnel_sections);
    for (size_t i = 0; before == 0 && a.nerrors == 0 && i < n; i++) {
      const wstun_client_config *c = &t[i].cfg;
      FZ_CHECK(c->tunnel_url && *c->tunnel_url, "tunnel %zu: no URL", i);
      FZ_CHECK(c->token && strlen(c->token) >= 16 && !strchr(c->token, ':'),
               "tunnel %zu: token %s", i, c->token ? c->token : "(none)");
      FZ_CHECK((c->server_url && *c->server_url) || (c->regexp && *c->regexp),
               "tunnel %zu: neither server nor regexp", i);
      char *k1 = app_cli_tunnel_key(&t[i]);
      char *k2 = app_cli_tunnel_key(&t[i]);
      FZ_CHECK(k1 && k2 && strcmp(k1, k2) == 0, "tunnel %zu: unstable key", i);
      app_cli_tunnel_key_free(k1);
      app_cli_tunnel_key_free(k2);
    }
  }
  app_cli_tunnels_free(t, n);
  app_config_free(&a);
  return 0;
}
