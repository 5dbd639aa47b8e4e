/* apps/app_config.c: -config files fed as strings (and a few real files for
 * password-file): what lands in the flags, every error with its line, the
 * client's [tunnel NAME] sections as wstun_client_config, the password
 * sources in their order, and every prefix of a file parsed without harm. */
#include <stdlib.h>
#include <sys/stat.h>
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
      T(every_prefix)};
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
