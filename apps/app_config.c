/* The -config file: libinih parses the INI syntax (comments, [section]
 * and key = value lines, blanks, a BOM, CRLF); this file reads the lines
 * for it (counting them, for FILE:LINE messages), notes what inih does not
 * report (lines too long, sections without keys, header lines it lets
 * pass) and checks the keys against the flag tables. See app_config.h. */
#include "app_config.h"

#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "app_secret.h"

#define LINE_MAX_BYTES 4095 /* a line's bytes, without its '\n' */

void app_config_init(app_config *c) {
  memset(c, 0, sizeof(*c));
}

static void section_free(app_config_section *s) {
  for (size_t i = 0; i < s->n; i++) {
    free(s->entries[i].key);
    free(s->entries[i].value);
  }
  free(s->entries);
  free(s->kind);
  free(s->name);
}

void app_config_free(app_config *c) {
  section_free(&c->top);
  for (size_t i = 0; i < c->nsections; i++)
    section_free(&c->sections[i]);
  free(c->sections);
  for (size_t i = 0; i < c->nerrors; i++)
    free(c->errors[i].reason);
  free(c->errors);
  free(c->path);
  app_config_init(c);
}

void app_config_errorf(app_config *c, int line, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (c->nerrors == c->caperrors) {
    size_t cap = c->caperrors ? c->caperrors * 2 : 8;
    app_config_error *e = realloc(c->errors, cap * sizeof(*e));
    if (e == NULL)
      return; /* the count still says something went wrong, below */
    c->errors = e;
    c->caperrors = cap;
  }
  char *r = strdup(msg);
  if (r == NULL)
    return;
  c->errors[c->nerrors].line = line;
  c->errors[c->nerrors].reason = r;
  c->nerrors++;
}

void app_config_each_error(app_config *c, const char *prog,
                           void (*fn)(void *ud, const char *line), void *ud) {
  /* in the file's order (checks of whole sections come after reading):
   * a stable insertion sort, the lists are short */
  for (size_t i = 1; i < c->nerrors; i++) {
    app_config_error e = c->errors[i];
    size_t j = i;
    for (; j > 0 && c->errors[j - 1].line > e.line; j--)
      c->errors[j] = c->errors[j - 1];
    c->errors[j] = e;
  }
  for (size_t i = 0; i < c->nerrors; i++) {
    char line[1400];
    if (c->errors[i].line > 0 && c->path)
      snprintf(line, sizeof(line), "%s:%d: %s", c->path, c->errors[i].line,
               c->errors[i].reason);
    else
      snprintf(line, sizeof(line), "%s: %s", prog, c->errors[i].reason);
    fn(ud, line);
  }
}

static void print_line(void *ud, const char *line) {
  fprintf(ud, "%s\n", line);
}

void app_config_print_errors(app_config *c, const char *prog, FILE *out) {
  app_config_each_error(c, prog, print_line, out);
}

const char *app_config_get(const app_config_section *s, const char *key,
                           int *line) {
  for (size_t i = s->n; i-- > 0;)
    if (strcmp(s->entries[i].key, key) == 0) {
      if (line)
        *line = s->entries[i].line;
      return s->entries[i].value;
    }
  return NULL;
}

static const app_flag *find_key(const app_flag *keys, const char *key) {
  for (; keys && keys->name; keys++)
    if (strcmp(keys->name, key) == 0)
      return keys;
  return NULL;
}

void app_config_apply(const app_config *c, app_flag *flags) {
  char err[256];
  for (size_t i = 0; i < c->top.n; i++) {
    app_flag *f = (app_flag *)find_key(flags, c->top.entries[i].key);
    if (f && f->dst)
      app_flag_value(f, c->top.entries[i].value, f->dst, err, sizeof(err));
  }
}

int app_config_check_protocol(app_config *c, const char *value) {
  int line = 0;
  if (value == NULL || strcmp(value, "v2") == 0)
    return 2;
  if (strcmp(value, "v1") == 0)
    return 1;
  if (value == app_config_get(&c->top, "protocol", &line))
    app_config_errorf(c, line, "protocol: must be v1 or v2");
  else
    app_config_errorf(c, 0, "flag -protocol: must be v1 or v2");
  return 2;
}

void app_config_check_log_level(app_config *c, const char *value) {
  int line = 0;
  if (value == NULL || wstun_log_level_parse(value) >= 0)
    return;
  if (value == app_config_get(&c->top, "log-level", &line))
    app_config_errorf(c, line,
                      "log-level: must be one of error, warn, info, debug");
  else
    app_config_errorf(c, 0,
                      "flag -log-level: must be one of error, warn, info, "
                      "debug");
}

/* ---- reading ------------------------------------------------------------ */

typedef struct reader {
  app_config *c;
  const app_flag *top;
  const app_config_kind *kinds;
  app_config_read_cb read; /* the bytes, in pieces of any size */
  void *read_ud;
  char buf[512];
  size_t pos, len;
  int eof;
  int line;       /* of the line inih has: the last one read */
  int long_line;  /* a line cut at LINE_MAX_BYTES: its pairs are ignored */
  int in_section; /* a [header] was seen */
  int hdr_line;   /* a [header] line whose section is not open yet */
  char hdr[LINE_MAX_BYTES + 2];    /* its text */
  app_config_section *cur;         /* where keys go; NULL: a bad section's */
  const app_config_kind *cur_kind; /* keys */
} reader;

static char *trim(char *s) {
  while (*s == ' ' || *s == '\t')
    s++;
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' ||
                   s[n - 1] == '\n'))
    s[--n] = '\0';
  return s;
}

static app_config_section *add_section(app_config *c, const char *kind,
                                       const char *name, int line) {
  if (c->nsections == c->capsections) {
    size_t cap = c->capsections ? c->capsections * 2 : 4;
    app_config_section *s = realloc(c->sections, cap * sizeof(*s));
    if (s == NULL)
      return NULL;
    c->sections = s;
    c->capsections = cap;
  }
  app_config_section *s = &c->sections[c->nsections];
  memset(s, 0, sizeof(*s));
  s->kind = strdup(kind);
  s->name = strdup(name);
  s->line = line;
  if (s->kind == NULL || s->name == NULL) {
    section_free(s);
    return NULL;
  }
  c->nsections++;
  return s;
}

/* Opens the section of the [header] line the reader noted. `section` is
 * what inih made of it, at the section's first key; NULL for a section
 * without keys, which inih never shows: its text names it. The header's
 * text also tells what inih lets pass or skips: a missing ']', text after
 * it, a name longer than inih keeps (49 bytes). */
static void open_section(reader *r, const char *section) {
  app_config *c = r->c;
  int line = r->hdr_line;
  r->hdr_line = 0;
  r->in_section = 1;
  r->cur = NULL;
  char *end = strchr(r->hdr, ']');
  if (end == NULL) {
    app_config_errorf(c, line, "section header without ']'");
    return;
  }
  if (end[1] != '\0') {
    app_config_errorf(c, line, "text after the section header");
    return;
  }
  *end = '\0';
  if (section && strcmp(section, r->hdr + 1) != 0) {
    app_config_errorf(c, line, "section header longer than %zu bytes",
                      strlen(section));
    return;
  }
  char *kind = trim(r->hdr + 1); /* "kind name" */
  char *name = kind + strcspn(kind, " \t");
  if (*name) {
    *name++ = '\0';
    name = trim(name);
  }
  const app_config_kind *k = r->kinds;
  for (; k && k->name; k++)
    if (strcmp(k->name, kind) == 0)
      break;
  if (k == NULL || k->name == NULL) {
    if (r->kinds && r->kinds[0].name)
      app_config_errorf(c, line,
                        "unknown section kind \"%.64s\" (want [%s NAME])", kind,
                        r->kinds[0].name);
    else
      app_config_errorf(c, line,
                        "unknown section [%.64s]: this program takes only "
                        "top-level keys",
                        kind);
    return;
  }
  if (*name == '\0') {
    app_config_errorf(c, line, "section [%s] needs a name: [%s NAME]", kind,
                      kind);
    return;
  }
  for (size_t i = 0; i < c->nsections; i++)
    if (strcmp(c->sections[i].kind, kind) == 0 &&
        strcmp(c->sections[i].name, name) == 0) {
      app_config_errorf(c, line,
                        "duplicate section [%s %.64s] (first on line %d)", kind,
                        name, c->sections[i].line);
      return;
    }
  r->cur = add_section(c, kind, name, line);
  r->cur_kind = k;
  if (r->cur == NULL)
    app_config_errorf(c, line, "out of memory");
}

static int next_char(reader *r) {
  if (r->pos == r->len) {
    if (r->eof)
      return EOF;
    r->pos = 0;
    r->len = r->read(r->read_ud, r->buf, sizeof(r->buf));
    if (r->len == 0 || r->len > sizeof(r->buf)) {
      r->len = 0;
      r->eof = 1; /* the source is not asked again */
      return EOF;
    }
  }
  return (unsigned char)r->buf[r->pos++];
}

/* inih's reader, fgets-style: one line per call (inih's buffer holds a
 * whole one), so r->line is the line of the handler calls that follow.
 * It notes what inih does not tell: a line too long, a [header] line. */
static char *read_line(char *str, int num, void *stream) {
  reader *r = stream;
  if (num <= 1) { /* inih asks for more of a full buffer: no more */
    *str = '\0';
    return str;
  }
  int n = 0, ch = 0, nul = 0;
  while (n < num - 1 && ch != '\n' && (ch = next_char(r)) != EOF) {
    nul |= ch == '\0';
    str[n++] = (char)ch;
  }
  if (n == 0)
    return NULL;
  str[n] = '\0';
  r->c->lines = ++r->line;
  if (n > LINE_MAX_BYTES && ch != '\n') {
    app_config_errorf(r->c, r->line, "line longer than %d bytes",
                      LINE_MAX_BYTES);
    r->long_line = r->line;
    while (ch != '\n' && ch != EOF)
      ch = next_char(r);
    return str;
  }
  if (nul) {
    /* inih reads up to the NUL: the line would mean something else than
     * it says. It goes to inih blank. */
    app_config_errorf(r->c, r->line, "NUL byte in the line");
    strcpy(str, "\n");
    return str;
  }
  const char *p = str;
  if (r->line == 1 && strncmp(p, "\xEF\xBB\xBF", 3) == 0)
    p += 3; /* inih skips a UTF-8 byte order mark */
  p += strspn(p, " \t");
  if (*p == '[') {
    if (r->hdr_line)
      open_section(r, NULL); /* the last one had no keys */
    snprintf(r->hdr, sizeof(r->hdr), "%s", p);
    trim(r->hdr);
    r->hdr_line = r->line;
  }
  return str;
}

static int on_pair(void *user, const char *section, const char *key,
                   const char *value) {
  reader *r = user;
  app_config *c = r->c;
  if (r->line == r->long_line)
    return 1; /* reported */
  if (r->hdr_line)
    open_section(r, section);
  if (value == NULL || *key == '\0') { /* no '=', or nothing before it */
    app_config_errorf(c, r->line, "expected key = value");
    return 1;
  }
  app_config_section *s = &c->top;
  const app_flag *keys = r->top;
  if (r->in_section) {
    if (r->cur == NULL)
      return 1; /* a bad section, already reported */
    s = r->cur;
    keys = r->cur_kind->keys;
  }
  if (strcmp(key, "config") == 0 || strcmp(key, "check-config") == 0) {
    app_config_errorf(c, r->line, "%s is a command-line flag only", key);
    return 1;
  }
  const app_flag *f = find_key(keys, key);
  if (f == NULL) {
    if (s == &c->top)
      app_config_errorf(c, r->line, "unknown key \"%.64s\"", key);
    else
      app_config_errorf(c, r->line, "unknown key \"%.64s\" in [%s %s]", key,
                        s->kind, s->name);
    return 1;
  }
  int first;
  if (app_config_get(s, key, &first)) {
    app_config_errorf(c, r->line, "duplicate key %s (first on line %d)", key,
                      first);
    return 1;
  }
  union {
    const char *s;
    int i;
    uint64_t u;
  } scratch;
  char err[256];
  if (app_flag_value(f, value, &scratch, err, sizeof(err)) != 0) {
    app_config_errorf(c, r->line, "%s: %s", key, err);
    return 1;
  }
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 8;
    app_config_entry *e = realloc(s->entries, cap * sizeof(*e));
    if (e == NULL) {
      app_config_errorf(c, r->line, "out of memory");
      return 1;
    }
    s->entries = e;
    s->cap = cap;
  }
  app_config_entry *e = &s->entries[s->n];
  e->key = strdup(key);
  e->value = strdup(value);
  e->line = r->line;
  if (e->key == NULL || e->value == NULL) {
    free(e->key);
    free(e->value);
    app_config_errorf(c, r->line, "out of memory");
    return 1;
  }
  s->n++;
  return 1;
}

/* The sources app_config_parse reads: a string, or a file. */
typedef struct text_source {
  const char *p;
  size_t left;
} text_source;

static size_t read_text(void *ud, char *buf, size_t n) {
  text_source *t = ud;
  if (n > t->left)
    n = t->left;
  memcpy(buf, t->p, n);
  t->p += n;
  t->left -= n;
  return n;
}

static size_t read_file(void *ud, char *buf, size_t n) {
  return fread(buf, 1, n, ud);
}

size_t app_config_parse(app_config *c, const char *path, const char *text,
                        const app_flag *top, const app_config_kind *kinds) {
  if (text) {
    text_source t = {text, strlen(text)};
    return app_config_parse_stream(c, path, read_text, &t, top, kinds);
  }
  /* cred:NAME, a systemd credential, is read where systemd put it */
  char file[PATH_MAX], err[PATH_MAX + 256];
  if (app_file_path(path, file, sizeof(file), err, sizeof(err)) != 0) {
    free(c->path);
    c->path = strdup(path);
    app_config_errorf(c, 0, "flag -config: %s", err);
    return c->nerrors;
  }
  struct stat st;
  FILE *f = app_open_regular(file, &st, err, sizeof(err));
  if (f == NULL) {
    free(c->path);
    c->path = strdup(file);
    app_config_errorf(c, 0, "flag -config: %s", err);
    return c->nerrors;
  }
  app_config_parse_stream(c, file, read_file, f, top, kinds);
  if (ferror(f))
    app_config_errorf(c, 0, "flag -config: cannot read %s: %s", file,
                      strerror(errno));
  fclose(f);
  return c->nerrors;
}

size_t app_config_parse_stream(app_config *c, const char *path,
                               app_config_read_cb read, void *read_ud,
                               const app_flag *top,
                               const app_config_kind *kinds) {
  free(c->path);
  c->path = strdup(path);
  reader *r = calloc(1, sizeof(*r)); /* a line's worth: off the stack */
  if (r == NULL) {
    app_config_errorf(c, 0, "flag -config: out of memory reading %s", path);
    return c->nerrors;
  }
  r->c = c;
  r->top = top;
  r->kinds = kinds;
  r->read = read;
  r->read_ud = read_ud;
  /* a heap buffer holding a whole line; values may hold ';' and leading
   * blanks (passwords, regexps): no inline comments, no continuation
   * lines; a line without '=' or ':' reaches the handler (value NULL) */
  ini_use_stack = 0;
  ini_allow_realloc = 1;
  ini_max_line = LINE_MAX_BYTES + 2; /* the '\n' and the NUL */
  ini_initial_alloc = ini_max_line;
  ini_allow_inline_comments = 0;
  ini_allow_multiline = 0;
  ini_allow_no_value = 1;
  ini_allow_bom = 1;
  int bad = ini_parse_stream(read_line, r, on_pair, r);
  if (r->hdr_line)
    open_section(r, NULL); /* the last section had no keys */
  free(r);
  if (bad == -2)
    app_config_errorf(c, 0, "flag -config: out of memory reading %s", path);
  for (size_t i = 0; bad > 0 && i < c->nerrors; i++)
    if (c->errors[i].line == bad)
      bad = 0; /* inih's first error, reported above */
  if (bad > 0)
    app_config_errorf(c, bad, "syntax error");
  return c->nerrors;
}

/* ---- the client's tunnels ------------------------------------------------ */

static const app_flag tunnel_keys[] = {
    {"token", FLAG_STR, NULL, NULL, NULL, 0, -1},
    {"server", FLAG_STR, NULL, NULL, NULL, 0, -1},
    {"regexp", FLAG_STR, NULL, NULL, NULL, 0, -1},
    {"password", FLAG_STR, NULL, NULL, NULL, 0, -1},
    {"password-file", FLAG_STR, NULL, NULL, NULL, 0, -1},
    {"tunnel", FLAG_STR, NULL, NULL, NULL, 0, -1},
    {"insecure", FLAG_BOOL, NULL, NULL, NULL, 0, 1},
    {"timeout", FLAG_INT, NULL, NULL, NULL, 0, -1},
    {"certfile", FLAG_STR, NULL, NULL, NULL, 0, -1},
    {NULL, FLAG_STR, NULL, NULL, NULL, 0, 0}};

const app_config_kind app_cli_kinds[] = {{"tunnel", tunnel_keys}, {NULL, NULL}};

/* Where to report a problem with `key` of tunnel t (section s, or NULL):
 * its line in the section, else in the top level, else the header. */
static int key_line(const app_config *c, const app_config_section *s,
                    const char *key) {
  int line = 0;
  if (s && app_config_get(s, key, &line))
    return line;
  if (app_config_get(&c->top, key, &line))
    return line;
  return s ? s->line : 0;
}

/* "flag -KEY" without a file line, "KEY" with one. */
static void tunnel_error(app_config *c, const app_config_section *s,
                         const char *key, const char *what) {
  int line = key_line(c, s, key);
  if (line > 0)
    app_config_errorf(c, line, "%s%s%s%s", s ? "[tunnel " : "",
                      s ? s->name : "", s ? "]: " : "", what);
  else
    app_config_errorf(c, 0, "flag -%s: %s", key, what);
}

static void tunnel_apply(app_cli_tunnel *t, const app_config_section *s) {
  char err[256];
  for (size_t i = 0; i < s->n; i++) {
    const char *k = s->entries[i].key;
    void *dst = strcmp(k, "token") == 0           ? (void *)&t->token
                : strcmp(k, "server") == 0        ? (void *)&t->cfg.server_url
                : strcmp(k, "regexp") == 0        ? (void *)&t->cfg.regexp
                : strcmp(k, "password") == 0      ? (void *)&t->password
                : strcmp(k, "password-file") == 0 ? (void *)&t->password_file
                : strcmp(k, "tunnel") == 0        ? (void *)&t->cfg.tunnel_url
                : strcmp(k, "insecure") == 0 ? (void *)&t->cfg.insecure_backends
                : strcmp(k, "timeout") == 0  ? (void *)&t->cfg.timeout_sec
                : strcmp(k, "certfile") == 0 ? (void *)&t->cfg.ca_file
                                             : NULL;
    const app_flag *f = find_key(tunnel_keys, k);
    if (dst == NULL || f == NULL)
      continue;
    /* a section's password source hides the top level's other one */
    if (strcmp(k, "password") == 0)
      t->password_file = NULL;
    else if (strcmp(k, "password-file") == 0)
      t->password = NULL;
    app_flag_value(f, s->entries[i].value, dst, err, sizeof(err));
  }
}

/* Checks t and resolves its token and password (see app_config.h). */
static void tunnel_finish(app_config *c, const app_config_section *s,
                          app_cli_tunnel *t, const char *env_password) {
  if (t->cfg.tunnel_url == NULL || *t->cfg.tunnel_url == '\0')
    tunnel_error(c, s, "tunnel",
                 s || c->path
                     ? "missing tunnel (the server URL, ws://host:port)"
                     : "required (ws://host:port)");
  /* the usual slip (an http:// server URL given as the tunnel, or the
   * other way round) named here; the library names what else is wrong */
  const char *tu = t->cfg.tunnel_url, *su = t->cfg.server_url;
  if (tu && *tu && strncasecmp(tu, "ws://", 5) != 0 &&
      strncasecmp(tu, "wss://", 6) != 0)
    tunnel_error(c, s, "tunnel", "must begin with ws:// or wss://");
  if (su && *su && strncasecmp(su, "http://", 7) != 0 &&
      strncasecmp(su, "https://", 8) != 0)
    tunnel_error(c, s, "server", "must begin with http:// or https://");
  if (t->token == NULL || *t->token == '\0') {
    /* a token at the top level would make every section share it */
    if (s)
      app_config_errorf(c, s->line, "[tunnel %s]: missing token", s->name);
    else if (c->path)
      app_config_errorf(c, c->lines > 0 ? c->lines : 1,
                        "missing token (a token = line, a [tunnel NAME] "
                        "section, or -token)");
    else
      app_config_errorf(c, 0, "flag -token: required");
    return;
  }
  if ((t->cfg.server_url == NULL || *t->cfg.server_url == '\0') &&
      (t->cfg.regexp == NULL || *t->cfg.regexp == '\0')) {
    if (s)
      app_config_errorf(c, s->line,
                        "[tunnel %s]: needs server or regexp (the backend "
                        "http[s]://host:port, or the X-Host values allowed)",
                        s->name);
    else
      tunnel_error(c, NULL, "server",
                   "or -regexp: required (the backend http[s]://host:port, "
                   "or the X-Host values allowed)");
  }
  t->token_only = strdup(t->token);
  if (t->token_only == NULL) {
    app_config_errorf(c, 0, "out of memory");
    return;
  }
  t->cfg.token = t->token_only;
  char *colon = strchr(t->token_only, ':');
  if (colon)
    *colon = '\0';
  if (strlen(t->token_only) < 16)
    tunnel_error(c, s, "token",
                 "rendez-vous token is too short (must be 16 chars)");
  if (colon && colon[1] != '\0')
    t->cfg.password = colon + 1;
  else if (t->password)
    t->cfg.password = t->password;
  else if (t->password_file) {
    char buf[1024], err[512];
    if (app_secret_read(t->password_file, buf, sizeof(buf), err, sizeof(err)) !=
        0) {
      tunnel_error(c, s, "password-file", err);
      return;
    }
    t->password_buf = strdup(buf);
    t->cfg.password = t->password_buf;
  } else if (env_password && *env_password)
    t->cfg.password = env_password;
  else if (colon)
    t->password_prompt = 1; /* "tok:" asks for one */
  if (t->cfg.ca_file &&
      strncmp(t->cfg.ca_file, APP_CRED_PREFIX, strlen(APP_CRED_PREFIX)) == 0) {
    char path[PATH_MAX], err[PATH_MAX + 256];
    if (app_file_path(t->cfg.ca_file, path, sizeof(path), err, sizeof(err)) !=
        0) {
      tunnel_error(c, s, "certfile", err);
      return;
    }
    t->ca_path = strdup(path);
    if (t->ca_path == NULL) {
      app_config_errorf(c, 0, "out of memory");
      return;
    }
    t->cfg.ca_file = t->ca_path;
  }
  if (t->cfg.proxy_url && strstr(t->cfg.proxy_url, "://") &&
      strncmp(t->cfg.proxy_url, "http://", 7) != 0)
    tunnel_error(c, NULL, "proxy", "only http:// proxies are supported");
}

size_t app_cli_tunnels(app_config *c, const app_cli_tunnel *defaults,
                       const char *env_password, app_cli_tunnel **out) {
  size_t n = 0;
  for (size_t i = 0; i < c->nsections; i++)
    if (strcmp(c->sections[i].kind, "tunnel") == 0)
      n++;
  int sections = n > 0;
  if (!sections)
    n = 1;
  app_cli_tunnel *t = calloc(n, sizeof(*t));
  *out = t;
  if (t == NULL)
    return 0;
  if (defaults->password && defaults->password_file) {
    int line = key_line(c, NULL, "password-file");
    if (line)
      app_config_errorf(c, line, "password and password-file both set");
    else
      app_config_errorf(c, 0,
                        "flag -password-file: the file also sets "
                        "password");
  }
  int line = 0;
  if (sections && app_config_get(&c->top, "token", &line))
    app_config_errorf(c, line,
                      "token belongs in each [tunnel NAME] section, not at "
                      "the top level");
  if (!sections) {
    t[0] = *defaults;
    t[0].name = NULL;
    tunnel_finish(c, NULL, &t[0], env_password);
    return 1;
  }
  size_t k = 0;
  for (size_t i = 0; i < c->nsections; i++) {
    const app_config_section *s = &c->sections[i];
    if (strcmp(s->kind, "tunnel") != 0)
      continue;
    t[k] = *defaults;
    t[k].token = NULL; /* each section has its own */
    t[k].name = strdup(s->name);
    t[k].line = s->line;
    if (app_config_get(s, "password", NULL) &&
        app_config_get(s, "password-file", NULL))
      app_config_errorf(c, s->line,
                        "[tunnel %s]: password and password-file both set",
                        s->name);
    tunnel_apply(&t[k], s);
    tunnel_finish(c, s, &t[k], env_password);
    k++;
  }
  return k;
}

void app_cli_tunnels_free(app_cli_tunnel *t, size_t n) {
  if (t == NULL)
    return;
  for (size_t i = 0; i < n; i++) {
    free(t[i].name);
    free(t[i].token_only);
    free(t[i].ca_path);
    if (t[i].password_buf) {
      memset(t[i].password_buf, 0, strlen(t[i].password_buf));
      free(t[i].password_buf);
    }
  }
  free(t);
}

/* One field of a tunnel's key: its name and its value, length first, so
 * that no value can pass for another field. */
static void key_add(FILE *f, const char *name, const char *v) {
  if (v == NULL)
    fprintf(f, "%s-\n", name);
  else
    fprintf(f, "%s=%zu:%s\n", name, strlen(v), v);
}

char *app_cli_tunnel_key(const app_cli_tunnel *t) {
  char *out = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&out, &len);
  if (f == NULL)
    return NULL;
  const wstun_client_config *c = &t->cfg;
  key_add(f, "tunnel", c->tunnel_url);
  key_add(f, "token", c->token);
  key_add(f, "password", c->password);
  key_add(f, "server", c->server_url);
  key_add(f, "regexp", c->regexp);
  key_add(f, "client-ports", c->client_ports);
  key_add(f, "proxy", c->proxy_url);
  key_add(f, "certfile", c->ca_file);
  fprintf(f,
          "timeout=%d stall=%d backend=%d idle=%d insecure=%d env=%d "
          "protocol=%d access=%d\n",
          c->timeout_sec, c->stall_timeout_sec, c->backend_timeout_sec,
          c->backend_idle_sec, c->insecure_backends, c->proxy_from_env,
          c->protocol, c->access_log);
  /* a certificate file replaced under the same name is a change too */
  struct stat st;
  if (c->ca_file && stat(c->ca_file, &st) == 0)
    fprintf(f, "certfile-stat=%llu:%llu:%lld:%lld.%09ld\n",
            (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
            (long long)st.st_size, (long long)st.st_mtim.tv_sec,
            (long)st.st_mtim.tv_nsec);
  if (fclose(f) != 0) {
    app_cli_tunnel_key_free(out);
    return NULL;
  }
  return out;
}

void app_cli_tunnel_key_free(char *key) {
  if (key == NULL)
    return;
  memset(key, 0, strlen(key)); /* it holds the password */
  free(key);
}
