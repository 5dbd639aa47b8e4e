/* apps/app_config.c: -config files fed as strings (and a few real files for
 * password-file): what lands in the flags, every error with its line, the
 * client's [tunnel NAME] sections as wstun_client_config, the password
 * sources in their order, and every prefix of a file parsed without harm.
 * The same files fed through app_config_parse_stream one byte per read,
 * and in two pieces cut at every offset, must read exactly as whole; a NUL
 * byte is an error at its line. app_cli_tunnel_key tells every setting of
 * a tunnel apart (a reload restarts only tunnels whose key changed). */
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "app_config.h"
#include "test.h"

/* a cut-down flag table, as the programs have */
static struct {
  const char *tunnel, *server, *token, *regexp, *log_level, *password;
  const char *password_file;
  int timeout, insecure;
  uint64_t max_body;
} v;

static app_flag flags[] = {
    {"tunnel", FLAG_STR, &v.tunnel, "URL", "", 0, -1},
    {"server", FLAG_STR, &v.server, "URL", "", 0, -1},
    {"token", FLAG_STR, &v.token, "T", "", 0, -1},
    {"regexp", FLAG_STR, &v.regexp, "RE", "", 0, -1},
    {"log-level", FLAG_STR, &v.log_level, "L", "", 0, -1},
    {"password-file", FLAG_STR, &v.password_file, "F", "", 0, -1},
    {"timeout", FLAG_INT, &v.timeout, "S", "", 0, -1},
    {"insecure", FLAG_BOOL, &v.insecure, NULL, "", 0, 1},
    {"max-body", FLAG_U64, &v.max_body, "N", "", 0, 1000},
    {"password", FLAG_STR, &v.password, NULL, "", 0, -1},
    {"config", FLAG_STR, NULL, "F", "", 0, -1},
    {NULL, FLAG_STR, NULL, NULL, NULL, 0, 0}};

#define TOK_A "aaaaaaaaaaaaaaaaaaaa"
#define TOK_B "bbbbbbbbbbbbbbbbbbbb"
#define TOK_C "cccccccccccccccccccc"

/* "FILE:LINE: reason" lines as -check-config prints them */
static char *errors_text(app_config *c) {
  static char buf[8192];
  buf[0] = '\0';
  FILE *f = fmemopen(buf, sizeof(buf), "w");
  app_config_print_errors(c, "prog", f);
  fclose(f);
  return buf;
}

static size_t parse(app_config *c, const char *text,
                    const app_config_kind *kinds) {
  memset(&v, 0, sizeof(v));
  app_config_init(c);
  return app_config_parse(c, "t.ini", text, flags, kinds);
}

TEST(top_level_keys_reach_the_flags) {
  app_config c;
  size_t n = parse(&c,
                   "\xEF\xBB\xBF# a comment\r\n"
                   "; another\n"
                   "\n"
                   "tunnel = wss://example.com/base\r\n"
                   "  server=http://127.0.0.1:8080  \n"
                   "regexp = http://(a|b);x:[0-9]+\n"
                   "timeout = 45\n"
                   "insecure = True\n"
                   "max-body = 1000\n"
                   "log-level: debug\n", /* inih's other separator */
                   NULL);
  CHECK_EQ_INT(n, 0);
  CHECK_EQ_STR(errors_text(&c), "");
  app_config_apply(&c, flags);
  CHECK_EQ_STR(v.tunnel, "wss://example.com/base");
  CHECK_EQ_STR(v.server, "http://127.0.0.1:8080");
  CHECK_EQ_STR(v.regexp, "http://(a|b);x:[0-9]+"); /* ';' is no comment */
  CHECK_EQ_INT(v.timeout, 45);
  CHECK_EQ_INT(v.insecure, 1);
  CHECK_EQ_INT((int)v.max_body, 1000);
  CHECK_EQ_STR(v.log_level, "debug");
  int line = 0;
  CHECK_EQ_STR(app_config_get(&c.top, "timeout", &line), "45");
  CHECK_EQ_INT(line, 7);
  CHECK_EQ_INT(c.lines, 10);
  app_config_free(&c);
}

TEST(every_error_with_its_line) {
  app_config c;
  char longline[5000];
  memset(longline, 'x', sizeof(longline) - 1);
  longline[sizeof(longline) - 1] = '\0';
  char text[8192];
  snprintf(text, sizeof(text),
           "tunnel = ws://h\n"     /* 1 */
           "bogus = 1\n"           /* 2 */
           "timeout = 1x\n"        /* 3 */
           "insecure = yes\n"      /* 4 */
           "max-body = 1001\n"     /* 5 */
           "just words\n"          /* 6 */
           "tunnel = ws://again\n" /* 7 */
           "config = other.ini\n"  /* 8 */
           "= x\n"                 /* 9 */
           "server = %s\n"         /* 10 */
           "[tunnel a]\n"          /* 11 */
           "token = " TOK_A "\n"   /* 12 */
           "server = http://h\n"   /* 13 */
           "color = red\n"         /* 14 */
           "[tunnel a]\n"          /* 15 */
           "[service b]\n"         /* 16 */
           "token = ignored\n"     /* 17 */
           "[tunnel]\n"            /* 18 */
           "[tunnel c\n"           /* 19 */
           "[tunnel d] x\n"        /* 20 */
           "[tunnel e]\n"          /* 21 */
           "token = " TOK_B "\n"   /* 22 */
           "timeout = -\n",        /* 23 */
           longline);
  parse(&c, text, app_cli_kinds);
  CHECK_EQ_STR(
      errors_text(&c),
      "t.ini:2: unknown key \"bogus\"\n"
      "t.ini:3: timeout: invalid value \"1x\": not an integer\n"
      "t.ini:4: insecure: expects true or false\n"
      "t.ini:5: max-body: invalid value 1001: must be between 0 and 1000\n"
      "t.ini:6: expected key = value\n"
      "t.ini:7: duplicate key tunnel (first on line 1)\n"
      "t.ini:8: config is a command-line flag only\n"
      "t.ini:9: expected key = value\n"
      "t.ini:10: line longer than 4095 bytes\n"
      "t.ini:14: unknown key \"color\" in [tunnel a]\n"
      "t.ini:15: duplicate section [tunnel a] (first on line 11)\n"
      "t.ini:16: unknown section kind \"service\" (want [tunnel NAME])\n"
      "t.ini:18: section [tunnel] needs a name: [tunnel NAME]\n"
      "t.ini:19: section header without ']'\n"
      "t.ini:20: text after the section header\n"
      "t.ini:23: timeout: invalid value \"-\": not an integer\n");
  app_config_free(&c);
}

/* A line of up to 4095 bytes (a value of 3000 was cut at 200 once);
 * inih keeps 49 bytes of a section name: longer ones are errors. */
TEST(long_lines) {
  static char text[3 * 4200];
  char *p = text;
  p += sprintf(p, "regexp = ");
  memset(p, 'x', 4095 - 9);
  p += 4095 - 9;
  p += sprintf(p, "\n[tunnel %060d]\ntoken = " TOK_A "\nserver = ", 0);
  memset(p, 'y', 4096 - 9);
  p += 4096 - 9;
  sprintf(p, "\n[tunnel b]\ntoken = " TOK_B "\nserver = http://b\n");
  app_config c;
  parse(&c, text, app_cli_kinds);
  CHECK_EQ_STR(errors_text(&c), "t.ini:2: section header longer than 49 bytes\n"
                                "t.ini:4: line longer than 4095 bytes\n");
  const char *re = app_config_get(&c.top, "regexp", NULL);
  CHECK_EQ_INT(re ? strlen(re) : 0, 4095 - 9);
  CHECK_EQ_INT(c.nsections, 1);
  CHECK_EQ_INT(c.lines, 7);
  app_config_free(&c);
}

TEST(sections_for_a_program_without_them) {
  app_config c;
  parse(&c, "[tunnel x]\nport = 1\n", NULL);
  CHECK_EQ_STR(errors_text(&c),
               "t.ini:1: unknown section [tunnel]: this program takes only "
               "top-level keys\n");
  app_config_free(&c);
}

static size_t tunnels_of(app_config *c, const char *text, app_cli_tunnel **out,
                         const char *env) {
  parse(c, text, app_cli_kinds);
  app_config_apply(c, flags);
  app_cli_tunnel d = {0};
  wstun_client_config_init(&d.cfg);
  d.cfg.tunnel_url = v.tunnel;
  d.cfg.server_url = v.server;
  d.cfg.regexp = v.regexp;
  if (app_config_get(&c->top, "timeout", NULL))
    d.cfg.timeout_sec = v.timeout;
  d.cfg.insecure_backends = v.insecure;
  d.token = v.token;
  d.password = v.password;
  d.password_file = v.password_file;
  return app_cli_tunnels(c, &d, env, out);
}

TEST(three_sections_three_tunnels) {
  app_config c;
  app_cli_tunnel *t = NULL;
  size_t n = tunnels_of(&c,
                        "tunnel = ws://srv:8080\n"
                        "server = http://127.0.0.1:8000\n"
                        "timeout = 60\n"
                        "\n"
                        "[tunnel web]\n"
                        "token = " TOK_A "\n"
                        "\n"
                        "[tunnel api]\n"
                        "token = " TOK_B ":s3cret\n"
                        "server = http://127.0.0.1:9000\n"
                        "timeout = 10\n"
                        "insecure = 1\n"
                        "[tunnel other]\n"
                        "token = " TOK_C "\n"
                        "regexp = http://internal:[0-9]+\n"
                        "tunnel = wss://elsewhere\n"
                        "password = pw3\n",
                        &t, NULL);
  CHECK_EQ_STR(errors_text(&c), "");
  CHECK_EQ_INT(n, 3);
  if (n == 3) {
    CHECK_EQ_STR(t[0].name, "web");
    CHECK_EQ_INT(t[0].line, 5);
    CHECK_EQ_STR(t[0].cfg.token, TOK_A);
    CHECK(t[0].cfg.password == NULL);
    CHECK_EQ_STR(t[0].cfg.tunnel_url, "ws://srv:8080");
    CHECK_EQ_STR(t[0].cfg.server_url, "http://127.0.0.1:8000");
    CHECK_EQ_INT(t[0].cfg.timeout_sec, 60);
    CHECK_EQ_INT(t[0].cfg.insecure_backends, 0);
    CHECK_EQ_STR(t[1].name, "api");
    CHECK_EQ_STR(t[1].cfg.token, TOK_B);
    CHECK_EQ_STR(t[1].cfg.password, "s3cret");
    CHECK_EQ_STR(t[1].cfg.server_url, "http://127.0.0.1:9000");
    CHECK_EQ_INT(t[1].cfg.timeout_sec, 10);
    CHECK_EQ_INT(t[1].cfg.insecure_backends, 1);
    CHECK_EQ_STR(t[2].cfg.tunnel_url, "wss://elsewhere");
    CHECK_EQ_STR(t[2].cfg.regexp, "http://internal:[0-9]+");
    CHECK_EQ_STR(t[2].cfg.password, "pw3");
  }
  app_cli_tunnels_free(t, n);
  app_config_free(&c);
}

TEST(what_a_tunnel_needs) {
  app_config c;
  app_cli_tunnel *t = NULL;
  size_t n = tunnels_of(&c,
                        "token = " TOK_A "\n"   /* 1 */
                        "[tunnel notoken]\n"    /* 2 */
                        "server = http://h\n"   /* 3 */
                        "[tunnel nobackend]\n"  /* 4 */
                        "token = " TOK_B "\n"   /* 5 */
                        "[tunnel short]\n"      /* 6 */
                        "token = abc\n"         /* 7 */
                        "server = http://h\n"   /* 8 */
                        "[tunnel two]\n"        /* 9 */
                        "token = " TOK_C "\n"   /* 10 */
                        "regexp = .*\n"         /* 11 */
                        "password = x\n"        /* 12 */
                        "password-file = /x\n", /* 13 */
                        &t, NULL);
  CHECK_EQ_STR(errors_text(&c),
               "t.ini:1: token belongs in each [tunnel NAME] section, not at "
               "the top level\n"
               "t.ini:2: [tunnel notoken]: missing tunnel (the server URL, "
               "ws://host:port)\n"
               "t.ini:2: [tunnel notoken]: missing token\n"
               "t.ini:4: [tunnel nobackend]: missing tunnel (the server URL, "
               "ws://host:port)\n"
               "t.ini:4: [tunnel nobackend]: needs server or regexp (the "
               "backend http[s]://host:port, or the X-Host values allowed)\n"
               "t.ini:6: [tunnel short]: missing tunnel (the server URL, "
               "ws://host:port)\n"
               "t.ini:7: [tunnel short]: rendez-vous token is too short (must "
               "be 16 chars)\n"
               "t.ini:9: [tunnel two]: password and password-file both set\n"
               "t.ini:9: [tunnel two]: missing tunnel (the server URL, "
               "ws://host:port)\n"
               "t.ini:13: [tunnel two]: cannot read /x: No such file or "
               "directory\n");
  app_cli_tunnels_free(t, n);
  app_config_free(&c);
}

TEST(without_sections_the_top_level_is_the_tunnel) {
  app_config c;
  app_cli_tunnel *t = NULL;
  size_t n = tunnels_of(&c,
                        "tunnel = ws://h\n"
                        "server = http://b\n"
                        "token = " TOK_A "\n",
                        &t, "from-env");
  CHECK_EQ_STR(errors_text(&c), "");
  CHECK_EQ_INT(n, 1);
  CHECK(t[0].name == NULL);
  CHECK_EQ_STR(t[0].cfg.token, TOK_A);
  CHECK_EQ_STR(t[0].cfg.password, "from-env");
  app_cli_tunnels_free(t, n);
  app_config_free(&c);
  /* no token anywhere: reported at the file's last line */
  n = tunnels_of(&c, "tunnel = ws://h\n\nserver = http://b\n", &t, NULL);
  CHECK_EQ_STR(errors_text(&c),
               "t.ini:3: missing token (a token = line, a [tunnel NAME] "
               "section, or -token)\n");
  app_cli_tunnels_free(t, n);
  app_config_free(&c);
}

static void write_file(const char *path, const char *text, mode_t mode) {
  FILE *f = fopen(path, "w");
  fputs(text, f);
  fclose(f);
  chmod(path, mode);
}

TEST(password_sources_in_order) {
  char dir[] = "/tmp/app_config_test.XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char ok[256], open_[256], text[2048];
  snprintf(ok, sizeof(ok), "%s/pw", dir);
  snprintf(open_, sizeof(open_), "%s/pw-open", dir);
  write_file(ok, "from-file\n", 0600);
  write_file(open_, "from-file\n", 0644);
  snprintf(text, sizeof(text),
           "tunnel = ws://h\nserver = http://b\npassword-file = %s\n"
           "[tunnel inline]\ntoken = " TOK_A ":inline\n"
           "[tunnel key]\ntoken = " TOK_B "\npassword = key\n"
           "[tunnel file]\ntoken = " TOK_C "\n"
           "[tunnel open]\ntoken = dddddddddddddddddddd\npassword-file = %s\n",
           ok, open_);
  app_config c;
  app_cli_tunnel *t = NULL;
  size_t n = tunnels_of(&c, text, &t, "env");
  char want[512];
  snprintf(want, sizeof(want),
           "t.ini:13: [tunnel open]: %s is readable by others (mode 644; "
           "chmod 600 it)\n",
           open_);
  CHECK_EQ_STR(errors_text(&c), want);
  CHECK_EQ_INT(n, 4);
  if (n == 4) {
    CHECK_EQ_STR(t[0].cfg.password, "inline");
    CHECK_EQ_STR(t[1].cfg.password, "key");
    CHECK_EQ_STR(t[2].cfg.password, "from-file");
  }
  app_cli_tunnels_free(t, n);
  app_config_free(&c);
  /* nothing else: the environment */
  n = tunnels_of(
      &c, "tunnel = ws://h\n[tunnel e]\ntoken = " TOK_A "\nserver = http://b\n",
      &t, "env");
  CHECK_EQ_INT(n, 1);
  CHECK_EQ_STR(t[0].cfg.password, "env");
  app_cli_tunnels_free(t, n);
  app_config_free(&c);
  unlink(ok);
  unlink(open_);
  rmdir(dir);
}

TEST(a_missing_file_is_one_error) {
  app_config c;
  app_config_init(&c);
  CHECK_EQ_INT(app_config_parse(&c, "/nonexistent/x.ini", NULL, flags, NULL),
               1);
  CHECK_EQ_STR(errors_text(&c), "prog: flag -config: cannot read "
                                "/nonexistent/x.ini: No such file or "
                                "directory\n");
  app_config_free(&c);
}

/* Every prefix of a file (cut anywhere, mid-key, mid-header): no crash,
 * no leak, and errors only on lines that exist. */
TEST(every_prefix) {
  const char *full = "# c\ntunnel = ws://h\n[tunnel web]\ntoken = " TOK_A
                     "\nserver = http://b\n[tunnel x]\ninsecure = t\n";
  size_t len = strlen(full);
  char buf[512];
  for (size_t i = 0; i <= len; i++) {
    test_context("prefix of %zu bytes", i);
    memcpy(buf, full, i);
    buf[i] = '\0';
    app_config c;
    app_cli_tunnel *t = NULL;
    size_t n = tunnels_of(&c, buf, &t, NULL);
    CHECK(n >= 1);
    for (size_t e = 0; e < c.nerrors; e++)
      CHECK(c.errors[e].line >= 0 && c.errors[e].line <= c.lines + 1);
    app_cli_tunnels_free(t, n);
    app_config_free(&c);
  }
  test_context(NULL);
}

/* ---- fed in pieces ------------------------------------------------------- */

/* Everything a parse produced, as text: entries with their lines, the
 * sections, the line count and the errors. */
static char *snapshot(app_config *c) {
  static char buf[65536];
  size_t off = 0;
  const app_config_section *all[64];
  size_t n = 0;
  all[n++] = &c->top;
  for (size_t i = 0; i < c->nsections && n < 64; i++)
    all[n++] = &c->sections[i];
  for (size_t i = 0; i < n; i++) {
    const app_config_section *sec = all[i];
    off += (size_t)snprintf(buf + off, sizeof(buf) - off, "[%s %s]@%d\n",
                            sec->kind ? sec->kind : "-",
                            sec->name ? sec->name : "-", sec->line);
    for (size_t e = 0; e < sec->n && off < sizeof(buf); e++)
      off += (size_t)snprintf(buf + off, sizeof(buf) - off, "%s=%s@%d\n",
                              sec->entries[e].key, sec->entries[e].value,
                              sec->entries[e].line);
  }
  if (off < sizeof(buf))
    off += (size_t)snprintf(buf + off, sizeof(buf) - off, "lines %d\n%s",
                            c->lines, errors_text(c));
  return buf;
}

/* Hands out `text` in pieces: `cuts` is a list of piece sizes repeated
 * (0 ends it), after `first` bytes in a first piece (0: none). */
typedef struct pieces {
  const char *p;
  size_t left, first;
  size_t size; /* every piece after the first */
  int calls_after_end;
} pieces;

static size_t read_pieces(void *ud, char *buf, size_t n) {
  pieces *s = ud;
  if (s->left == 0) {
    s->calls_after_end++;
    return 0;
  }
  size_t want = s->first ? s->first : s->size;
  s->first = 0;
  if (want > n)
    want = n;
  if (want > s->left)
    want = s->left;
  memcpy(buf, s->p, want);
  s->p += want;
  s->left -= want;
  return want;
}

static void parse_pieces(app_config *c, const char *text, size_t len,
                         size_t first, size_t size, const app_config_kind *k) {
  memset(&v, 0, sizeof(v));
  app_config_init(c);
  pieces s = {text, len, first, size, 0};
  app_config_parse_stream(c, "t.ini", read_pieces, &s, flags, k);
  CHECK_EQ_INT(s.calls_after_end, 1);
}

TEST(fed_byte_by_byte_and_split_everywhere) {
  char longline[4200];
  memset(longline, 'y', sizeof(longline) - 1);
  longline[sizeof(longline) - 1] = '\0';
  static char text[8192];
  snprintf(text, sizeof(text),
           "\xEF\xBB\xBF; a file with a bit of everything\r\n"
           "tunnel = ws://h:1\r\n"
           "timeout: 40\n"
           "  server =  http://b:2  \n"
           "bogus = 1\n"
           "\n"
           "regexp = %s\n"
           "[tunnel web]\n"
           "token = " TOK_A "\n"
           "insecure = t\n"
           "[tunnel web]\n"
           "[tunnel  api ]\n"
           "token=" TOK_B ":pw;#x\n"
           "words only\n"
           "[tunnel empty]\n"
           "[tunnel last]\n"
           "token = " TOK_C,
           longline);
  size_t len = strlen(text);
  app_config whole;
  parse(&whole, text, app_cli_kinds);
  CHECK(whole.nerrors >= 4); /* the file has problems: they must match too */
  char *want = strdup(snapshot(&whole));
  app_config c;
  /* one byte per read, then 2, 3 and 7 */
  static const size_t sizes[] = {1, 2, 3, 7, 511};
  for (size_t i = 0; i < TEST_COUNT(sizes); i++) {
    test_context("pieces of %zu", sizes[i]);
    parse_pieces(&c, text, len, 0, sizes[i], app_cli_kinds);
    CHECK_EQ_STR(snapshot(&c), want);
    app_config_free(&c);
  }
  /* two pieces, cut at every offset */
  for (size_t cut = 1; cut < len; cut++) {
    test_context("cut at %zu", cut);
    parse_pieces(&c, text, len, cut, 1 << 20, app_cli_kinds);
    CHECK_EQ_STR(snapshot(&c), want);
    app_config_free(&c);
  }
  test_context(NULL);
  free(want);
  app_config_free(&whole);
}

TEST(a_nul_byte_is_an_error_at_its_line) {
  static const char text[] = "tunnel = ws://h\n"
                             "server = http://a\0b\n"
                             "[tunnel x\0]\n"
                             "timeout = 5";
  app_config c;
  parse_pieces(&c, text, sizeof(text) - 1, 0, 1, NULL);
  CHECK_EQ_STR(errors_text(&c), "t.ini:2: NUL byte in the line\n"
                                "t.ini:3: NUL byte in the line\n");
  CHECK(app_config_get(&c.top, "server", NULL) == NULL);
  CHECK_EQ_STR(app_config_get(&c.top, "timeout", NULL), "5");
  CHECK_EQ_INT(c.lines, 4);
  app_config_free(&c);
}

/* ---- what a reload compares ---------------------------------------------- */

static char *key_of(const char *text) {
  app_config c;
  app_cli_tunnel *t = NULL;
  size_t n = tunnels_of(&c, text, &t, NULL);
  CHECK_EQ_STR(errors_text(&c), "");
  char *k = n == 1 ? app_cli_tunnel_key(&t[0]) : NULL;
  CHECK(k != NULL);
  app_cli_tunnels_free(t, n);
  app_config_free(&c);
  return k ? k : strdup("");
}

TEST(tunnel_key_tells_every_setting_apart) {
  char ca[] = "/tmp/app_config_test_ca.XXXXXX";
  int fd = mkstemp(ca);
  CHECK(fd >= 0);
  if (fd >= 0)
    close(fd);
  char base[512];
  snprintf(base, sizeof(base),
           "tunnel = ws://h\n[tunnel a]\ntoken = " TOK_A "\n"
           "server = http://b\ncertfile = %s\n",
           ca);
  char *k0 = key_of(base);
  char *again = key_of(base);
  CHECK_EQ_STR(again, k0); /* the same file: the same key */
  app_cli_tunnel_key_free(again);
  /* comments, blank lines, order and the section's line do not count */
  char moved[600];
  snprintf(moved, sizeof(moved),
           "# c\n\ntunnel = ws://h\n\n[tunnel a]\nserver = http://b\n"
           "certfile = %s\ntoken = " TOK_A "\n",
           ca);
  again = key_of(moved);
  CHECK_EQ_STR(again, k0);
  app_cli_tunnel_key_free(again);
  static const char *const changes[] = {
      "tunnel = ws://h2\n",  "token = " TOK_B "\n",   "password = p\n",
      "server = http://c\n", "regexp = x\n",          "timeout = 9\n",
      "insecure = 1\n",      "token = " TOK_A ":pw\n"};
  for (size_t i = 0; i < TEST_COUNT(changes); i++) {
    test_context("%s", changes[i]);
    char text[1024];
    /* the section's own value replaces the base's (keys appear once) */
    const char *key_end = strchr(changes[i], ' ');
    char key[32];
    snprintf(key, sizeof(key), "\n%.*s ", (int)(key_end - changes[i]),
             changes[i]);
    char *at = strstr(base, key);
    if (at) {
      char *eol = strchr(at + 1, '\n');
      snprintf(text, sizeof(text), "%.*s\n%s%s", (int)(at - base), base,
               changes[i], eol + 1);
    } else {
      snprintf(text, sizeof(text), "%s%s", base, changes[i]);
    }
    char *k = key_of(text);
    CHECK(strcmp(k, k0) != 0);
    app_cli_tunnel_key_free(k);
  }
  test_context("certfile replaced under its name");
  struct timeval tv[2] = {{1000000000, 0}, {1000000000, 0}};
  CHECK_EQ_INT(utimes(ca, tv), 0);
  char *k = key_of(base);
  CHECK(strcmp(k, k0) != 0);
  app_cli_tunnel_key_free(k);
  test_context(NULL);
  app_cli_tunnel_key_free(k0);
  unlink(ca);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(top_level_keys_reach_the_flags),
      T(every_error_with_its_line),
      T(long_lines),
      T(sections_for_a_program_without_them),
      T(three_sections_three_tunnels),
      T(what_a_tunnel_needs),
      T(without_sections_the_top_level_is_the_tunnel),
      T(password_sources_in_order),
      T(a_missing_file_is_one_error),
      T(every_prefix),
      T(fed_byte_by_byte_and_split_everywhere),
      T(a_nul_byte_is_an_error_at_its_line),
      T(tunnel_key_tells_every_setting_apart)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
