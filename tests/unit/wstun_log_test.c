/* The logger: levels, the plain and the record callback, the access line's
 * text (one line of key=value pairs whatever the request holds) and its
 * JSON form (parsed back with jansson), hostile strings included. */
#include "wstun_log.h"

#include <jansson.h>
#include <stdlib.h>

#include "test.h"

/* ---- what the callbacks saw --------------------------------------------- */

static struct {
  int plain, records;
  wstun_log_level level;
  char msg[4096];
  int had_request;
  wstun_log_request req;
  char path[4096];
} seen;

static void plain_cb(void *ud, wstun_log_level level, const char *msg) {
  CHECK(ud == &seen);
  seen.plain++;
  seen.level = level;
  snprintf(seen.msg, sizeof(seen.msg), "%s", msg);
}

static void record_cb(void *ud, const wstun_log_record *rec) {
  CHECK(ud == &seen);
  seen.records++;
  seen.level = rec->level;
  snprintf(seen.msg, sizeof(seen.msg), "%s", rec->msg);
  seen.had_request = rec->request != NULL;
  if (rec->request) {
    seen.req = *rec->request;
    snprintf(seen.path, sizeof(seen.path), "%s",
             rec->request->path ? rec->request->path : "");
  }
}

static int starts_with(const char *s, const char *prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

static wstun_log_request sample(void) {
  wstun_log_request r = {0};
  r.method = "GET";
  r.path = "/echo?x=1";
  r.status = 200;
  r.bytes = 12;
  r.duration_ms = 3;
  r.remote = "127.0.0.1:37294";
  r.token = "abcdefgh...";
  r.id = 10;
  return r;
}

TEST(levels_and_callbacks) {
  wstun__logger lg;
  memset(&seen, 0, sizeof(seen));
  wstun__logger_init(&lg, WSTUN_LOG_INFO, plain_cb, NULL, &seen, 1);
  wstun__log(&lg, WSTUN_LOG_DEBUG, "hidden %d", 1);
  CHECK_EQ_INT(seen.plain, 0);
  wstun__log(&lg, WSTUN_LOG_WARN, "shown %d", 2);
  CHECK_EQ_INT(seen.plain, 1);
  CHECK_EQ_INT(seen.level, WSTUN_LOG_WARN);
  CHECK_EQ_STR(seen.msg, "shown 2");
  /* the record callback wins over the plain one, and gets the same text */
  wstun__logger_init(&lg, WSTUN_LOG_DEBUG, plain_cb, record_cb, &seen, 1);
  wstun__log(&lg, WSTUN_LOG_DEBUG, "with %s", "fields");
  CHECK_EQ_INT(seen.plain, 1);
  CHECK_EQ_INT(seen.records, 1);
  CHECK_EQ_STR(seen.msg, "with fields");
  CHECK_EQ_INT(seen.had_request, 0);
  /* no callback: silent, nothing to gather */
  wstun__logger_init(&lg, WSTUN_LOG_DEBUG, NULL, NULL, &seen, 1);
  CHECK(!WSTUN__LOG_ON(&lg, WSTUN_LOG_ERROR));
  CHECK(!WSTUN__ACCESS_ON(&lg));
  wstun__log(&lg, WSTUN_LOG_ERROR, "nobody");
  CHECK_EQ_INT(seen.records, 1);
  /* a very long line is cut, not overrun */
  char big[3000];
  memset(big, 'z', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  wstun__logger_init(&lg, WSTUN_LOG_DEBUG, plain_cb, NULL, &seen, 1);
  wstun__log(&lg, WSTUN_LOG_INFO, "%s", big);
  CHECK(strlen(seen.msg) == 1023);
}

TEST(level_names) {
  CHECK_EQ_INT(wstun_log_level_parse("error"), WSTUN_LOG_ERROR);
  CHECK_EQ_INT(wstun_log_level_parse("WARN"), WSTUN_LOG_WARN);
  CHECK_EQ_INT(wstun_log_level_parse("warning"), WSTUN_LOG_WARN);
  CHECK_EQ_INT(wstun_log_level_parse("Info"), WSTUN_LOG_INFO);
  CHECK_EQ_INT(wstun_log_level_parse("debug"), WSTUN_LOG_DEBUG);
  CHECK_EQ_INT(wstun_log_level_parse("trace"), -1);
  CHECK_EQ_INT(wstun_log_level_parse(NULL), -1);
}

TEST(access_line_text) {
  char line[2048];
  wstun_log_request r = sample();
  CHECK_EQ_STR(wstun__log_access_text(&r, line, sizeof(line)),
               "access method=GET path=/echo?x=1 status=200 bytes=12 "
               "duration_ms=3 remote=127.0.0.1:37294 token=abcdefgh... "
               "id=000a");
  /* fields not set are left out; the client's backend is added */
  r.remote = NULL;
  r.token = NULL;
  r.id = -1;
  r.backend = "http://127.0.0.1:8080";
  CHECK_EQ_STR(wstun__log_access_text(&r, line, sizeof(line)),
               "access method=GET path=/echo?x=1 status=200 bytes=12 "
               "duration_ms=3 backend=http://127.0.0.1:8080");
  /* a pipe's line has the bytes that went the other way */
  r = sample();
  r.status = 101;
  r.bytes_in = 7;
  CHECK_EQ_STR(wstun__log_access_text(&r, line, sizeof(line)),
               "access method=GET path=/echo?x=1 status=101 bytes=12 "
               "bytes_in=7 duration_ms=3 remote=127.0.0.1:37294 "
               "token=abcdefgh... id=000a");
  /* id 0 is an id */
  r = sample();
  r.id = 0;
  CHECK(strstr(wstun__log_access_text(&r, line, sizeof(line)), " id=0000"));
  /* empty or missing method and path: a dash, never a gap */
  r.method = NULL;
  r.path = "";
  CHECK(starts_with(wstun__log_access_text(&r, line, sizeof(line)),
                    "access method=- path=- status=200 "));
}

TEST(access_line_escapes_hostile_values) {
  char line[2048];
  wstun_log_request r = sample();
  /* a forged second line, spaces, quotes, '=', bytes that are not ASCII
   * (invalid UTF-8 among them): one line of key=value pairs still */
  r.path = "/a b\"c\r\nINFO  access method=GET\x01\x7f\xff\xc3\xa9";
  r.remote = "x y";
  r.token = "to\tk...";
  r.backend = "http://h\n";
  const char *t = wstun__log_access_text(&r, line, sizeof(line));
  CHECK_EQ_STR(t, "access method=GET "
                  "path=/a%20b%22c%0D%0AINFO%20%20access%20method=GET%01%7F%"
                  "FF%C3%A9 status=200 bytes=12 duration_ms=3 remote=x%20y "
                  "token=to%09k... id=000a backend=http://h%0A");
  for (const char *p = t; *p; p++)
    CHECK((unsigned char)*p > 0x1f && (unsigned char)*p < 0x7f);
}

TEST(access_line_cut_to_the_buffer) {
  wstun_log_request r = sample();
  char path[5000];
  memset(path, 'p', sizeof(path) - 1);
  path[0] = '/';
  path[sizeof(path) - 1] = '\0';
  r.path = path;
  char line[100];
  for (size_t size = 0; size <= sizeof(line); size++) {
    test_context("size %zu", size);
    memset(line, 'X', sizeof(line));
    wstun__log_access_text(&r, line, size);
    if (size == 0) {
      CHECK(line[0] == 'X'); /* nothing written */
      continue;
    }
    size_t n = strnlen(line, size);
    CHECK(n < size); /* NUL-terminated within the buffer */
    if (size >= 10)
      CHECK(n >= 3 && strcmp(line + n - 3, "...") == 0);
  }
  test_context(NULL);
  /* escapes are never split: a cut lands between them */
  r.path = "%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%%\x01\x01\x01\x01\x01\x01";
  for (size_t size = 30; size < 70; size++) {
    wstun__log_access_text(&r, line, size);
    const char *p = strstr(line, "path=");
    if (p == NULL)
      continue;
    const char *q = strstr(p, "%01");
    size_t tail = strlen(line) - 3; /* before the "..." */
    if (q && (size_t)(q - line) + 3 > tail)
      CHECK(0);
  }
}

TEST(access_lines_go_out_at_info_when_on) {
  wstun__logger lg;
  wstun_log_request r = sample();
  memset(&seen, 0, sizeof(seen));
  wstun__logger_init(&lg, WSTUN_LOG_INFO, NULL, record_cb, &seen, 1);
  CHECK(WSTUN__ACCESS_ON(&lg));
  wstun__log_access(&lg, &r);
  CHECK_EQ_INT(seen.records, 1);
  CHECK_EQ_INT(seen.level, WSTUN_LOG_INFO);
  CHECK_EQ_INT(seen.had_request, 1);
  CHECK_EQ_INT(seen.req.status, 200);
  CHECK_EQ_STR(seen.path, "/echo?x=1");
  CHECK(starts_with(seen.msg, "access method=GET path=/echo?x=1 "));
  /* the plain callback gets the text alone */
  wstun__logger_init(&lg, WSTUN_LOG_INFO, plain_cb, NULL, &seen, 1);
  wstun__log_access(&lg, &r);
  CHECK_EQ_INT(seen.plain, 1);
  CHECK(starts_with(seen.msg, "access method=GET "));
  /* off, or a level below info: nothing */
  wstun__logger_init(&lg, WSTUN_LOG_DEBUG, plain_cb, record_cb, &seen, 0);
  CHECK(!WSTUN__ACCESS_ON(&lg));
  wstun__log_access(&lg, &r);
  wstun__logger_init(&lg, WSTUN_LOG_WARN, plain_cb, record_cb, &seen, 1);
  CHECK(!WSTUN__ACCESS_ON(&lg));
  wstun__log_access(&lg, &r);
  CHECK_EQ_INT(seen.plain, 1);
  CHECK_EQ_INT(seen.records, 1);
}

/* ---- JSON ---------------------------------------------------------------- */

/* Formats rec, checks the return value against the text, parses it. */
static json_t *format_parse(const wstun_log_record *rec, const char *time,
                            const wstun_log_field *extra, size_t nextra,
                            char *out, size_t outn) {
  char buf[8192];
  int n = wstun_log_format_json(rec, time, extra, nextra, buf, sizeof(buf));
  CHECK(n > 0 && (size_t)n < sizeof(buf));
  if (n <= 0 || (size_t)n >= sizeof(buf))
    return NULL;
  CHECK(strlen(buf) == (size_t)n);
  CHECK(strchr(buf, '\n') == NULL); /* one line */
  if (out)
    snprintf(out, outn, "%s", buf);
  json_error_t err;
  json_t *j = json_loads(buf, 0, &err);
  CHECK(j != NULL && json_is_object(j));
  if (j == NULL)
    fprintf(stdout, "  not JSON (%s): %s\n", err.text, buf);
  return j;
}

static const char *jstr(json_t *o, const char *key) {
  return json_string_value(json_object_get(o, key));
}

TEST(json_plain_line) {
  const wstun_log_record rec = {WSTUN_LOG_WARN, "listening on 127.0.0.1:80",
                                NULL};
  const wstun_log_field extra[] = {
      {"app", "wstunsrv"}, {"tunnel", NULL}, {NULL, "skipped"}};
  char text[8192];
  json_t *j = format_parse(&rec, "2026-01-09T15:30:45.123Z", extra, 3, text,
                           sizeof(text));
  REQUIRE(j != NULL);
  /* the order a reader expects: time, level, the extras, msg */
  CHECK_EQ_STR(text, "{\"time\":\"2026-01-09T15:30:45.123Z\",\"level\":"
                     "\"warn\",\"app\":\"wstunsrv\",\"msg\":\"listening on "
                     "127.0.0.1:80\"}");
  CHECK_EQ_INT((int)json_object_size(j), 4);
  json_decref(j);
  /* without time and extras */
  j = format_parse(&rec, NULL, NULL, 0, NULL, 0);
  REQUIRE(j != NULL);
  CHECK_EQ_INT((int)json_object_size(j), 2);
  CHECK_EQ_STR(jstr(j, "level"), "warn");
  json_decref(j);
  static const char *const names[] = {"error", "warn", "info", "debug"};
  for (int l = 0; l < 4; l++) {
    const wstun_log_record r = {(wstun_log_level)l, "x", NULL};
    j = format_parse(&r, NULL, NULL, 0, NULL, 0);
    REQUIRE(j != NULL);
    CHECK_EQ_STR(jstr(j, "level"), names[l]);
    json_decref(j);
  }
}

TEST(json_access_line_fields) {
  wstun_log_request r = sample();
  r.backend = "handler";
  const wstun_log_record rec = {WSTUN_LOG_INFO, "access ...", &r};
  json_t *j = format_parse(&rec, "t", NULL, 0, NULL, 0);
  REQUIRE(j != NULL);
  CHECK_EQ_STR(jstr(j, "msg"), "access ...");
  CHECK_EQ_STR(jstr(j, "method"), "GET");
  CHECK_EQ_STR(jstr(j, "path"), "/echo?x=1");
  CHECK(json_is_integer(json_object_get(j, "status")));
  CHECK(json_integer_value(json_object_get(j, "status")) == 200);
  CHECK(json_integer_value(json_object_get(j, "bytes")) == 12);
  CHECK(json_integer_value(json_object_get(j, "duration_ms")) == 3);
  CHECK_EQ_STR(jstr(j, "remote"), "127.0.0.1:37294");
  CHECK_EQ_STR(jstr(j, "token"), "abcdefgh...");
  CHECK_EQ_STR(jstr(j, "id"), "000a");
  CHECK_EQ_STR(jstr(j, "backend"), "handler");
  CHECK(json_object_get(j, "bytes_in") == NULL); /* pipes only */
  json_decref(j);
  r.bytes_in = 5;
  j = format_parse(&rec, NULL, NULL, 0, NULL, 0);
  REQUIRE(j != NULL);
  CHECK(json_integer_value(json_object_get(j, "bytes_in")) == 5);
  json_decref(j);
  r.bytes_in = 0;
  /* fields not set are left out */
  r.remote = r.token = r.backend = NULL;
  r.id = -1;
  j = format_parse(&rec, NULL, NULL, 0, NULL, 0);
  REQUIRE(j != NULL);
  CHECK(json_object_get(j, "remote") == NULL);
  CHECK(json_object_get(j, "token") == NULL);
  CHECK(json_object_get(j, "id") == NULL);
  CHECK(json_object_get(j, "backend") == NULL);
  CHECK(json_object_get(j, "status") != NULL);
  json_decref(j);
}

TEST(json_hostile_strings) {
  static const struct {
    const char *in, *out; /* out: what a JSON reader gets back */
  } cases[] = {
      {"plain", "plain"},
      {"q\"uo\\te", "q\"uo\\te"},
      {"tab\tnl\ncr\r\x01\x1f\x7f", "tab\tnl\ncr\r\x01\x1f\x7f"},
      {"\"},\"level\":\"error", "\"},\"level\":\"error"},
      /* valid UTF-8 stays */
      {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
       "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
      /* invalid bytes become U+FFFD, one each */
      {"a\xff"
       "b",
       "a\xef\xbf\xbd"
       "b"},
      {"\xe2\x82", "\xef\xbf\xbd\xef\xbf\xbd"}, /* cut short */
      {"\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd"}, /* overlong '/' */
      {"\xed\xa0\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"}, /* surrogate */
      {"\xf4\x90\x80\x80", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
      {"\x80x\xc3\xa9\xc3", "\xef\xbf\xbdx\xc3\xa9\xef\xbf\xbd"},
  };
  for (size_t i = 0; i < TEST_COUNT(cases); i++) {
    test_context("case %zu", i);
    wstun_log_request r = sample();
    r.path = cases[i].in;
    r.method = cases[i].in;
    const wstun_log_field extra[] = {{"tunnel", cases[i].in}};
    const wstun_log_record rec = {WSTUN_LOG_INFO, cases[i].in, &r};
    json_t *j = format_parse(&rec, cases[i].in, extra, 1, NULL, 0);
    if (j == NULL)
      continue;
    CHECK_EQ_STR(jstr(j, "path"), cases[i].out);
    CHECK_EQ_STR(jstr(j, "method"), cases[i].out);
    CHECK_EQ_STR(jstr(j, "msg"), cases[i].out);
    CHECK_EQ_STR(jstr(j, "tunnel"), cases[i].out);
    CHECK_EQ_STR(jstr(j, "time"), cases[i].out);
    /* nothing injected: the fields are the ones put in */
    CHECK_EQ_INT((int)json_object_size(j), 12);
    CHECK_EQ_STR(jstr(j, "level"), "info");
    json_decref(j);
  }
  test_context(NULL);
}

TEST(json_buffer_as_snprintf) {
  const wstun_log_record rec = {WSTUN_LOG_INFO, "hello", NULL};
  char full[256];
  int n = wstun_log_format_json(&rec, "t", NULL, 0, full, sizeof(full));
  REQUIRE(n > 0);
  CHECK_EQ_STR(full, "{\"time\":\"t\",\"level\":\"info\",\"msg\":\"hello\"}");
  /* too small: the length needed, and no partial line */
  char small[256];
  for (int size = 0; size <= n; size++) {
    test_context("size %d", size);
    memset(small, 'X', sizeof(small));
    CHECK_EQ_INT(wstun_log_format_json(&rec, "t", NULL, 0, small, (size_t)size),
                 n);
    if (size > 0)
      CHECK(small[0] == '\0');
  }
  test_context(NULL);
  CHECK_EQ_INT(wstun_log_format_json(&rec, "t", NULL, 0, NULL, 0), n);
  CHECK_EQ_INT(wstun_log_format_json(&rec, "t", NULL, 0, small, (size_t)n + 1),
               n);
  CHECK_EQ_STR(small, full);
  /* a long path is never cut in JSON */
  char path[20000];
  memset(path, 'p', sizeof(path) - 1);
  path[sizeof(path) - 1] = '\0';
  wstun_log_request r = sample();
  r.path = path;
  const wstun_log_record big = {WSTUN_LOG_INFO, "access", &r};
  n = wstun_log_format_json(&big, NULL, NULL, 0, NULL, 0);
  CHECK(n > 20000);
  char *heap = malloc((size_t)n + 1);
  REQUIRE(heap != NULL);
  CHECK_EQ_INT(wstun_log_format_json(&big, NULL, NULL, 0, heap, (size_t)n + 1),
               n);
  json_t *j = json_loads(heap, 0, NULL);
  CHECK(j != NULL && strlen(jstr(j, "path")) == sizeof(path) - 1);
  json_decref(j);
  free(heap);
  /* bad arguments */
  const wstun_log_record nomsg = {WSTUN_LOG_INFO, NULL, NULL};
  CHECK_EQ_INT(wstun_log_format_json(NULL, NULL, NULL, 0, full, sizeof(full)),
               WSTUN_EINVAL);
  CHECK_EQ_INT(wstun_log_format_json(&nomsg, NULL, NULL, 0, full, sizeof(full)),
               WSTUN_EINVAL);
  CHECK_EQ_INT(wstun_log_format_json(&rec, NULL, NULL, 0, NULL, 5),
               WSTUN_EINVAL);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(levels_and_callbacks),
      T(level_names),
      T(access_line_text),
      T(access_line_escapes_hostile_values),
      T(access_line_cut_to_the_buffer),
      T(access_lines_go_out_at_info_when_on),
      T(json_plain_line),
      T(json_access_line_fields),
      T(json_hostile_strings),
      T(json_buffer_as_snprintf),
  };
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
