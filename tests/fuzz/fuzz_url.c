/* wstun__url_parse on the input as a C string. A URL that parses must have
 * a known scheme, a non-empty host made of host characters, a port in
 * 1..65535 (the scheme's default unless given), a path that is "" or
 * starts with '/' or '?' and has no fragment; and scheme://host:port path
 * rebuilt from the parts must parse to the same parts (the X-Host check
 * and the connection decide on these, so the parser must not be
 * ambiguous). */
#include <ctype.h>

#include "fuzz_util.h"
#include "wstun_url.h"

static int default_port(const char *scheme) {
  if (strcmp(scheme, "http") == 0 || strcmp(scheme, "ws") == 0)
    return 80;
  if (strcmp(scheme, "https") == 0 || strcmp(scheme, "wss") == 0)
    return 443;
  return -1;
}

static void check(const wstun__url *u, const char *s) {
  FZ_CHECK(u->scheme && u->host && u->path, "missing part in \"%s\"", s);
  int dp = default_port(u->scheme);
  FZ_CHECK(dp > 0, "scheme \"%s\" from \"%s\"", u->scheme, s);
  FZ_CHECK(u->port >= 1 && u->port <= 65535, "port %d from \"%s\"", u->port, s);
  FZ_CHECK(u->port_given || u->port == dp, "port %d without one given",
           u->port);
  FZ_CHECK(u->host[0] != '\0', "empty host from \"%s\"", s);
  int v6 = strchr(u->host, ':') != NULL;
  for (const char *p = u->host; *p; p++)
    FZ_CHECK(v6 ? (isxdigit((unsigned char)*p) || *p == ':' || *p == '.')
                : (isalnum((unsigned char)*p) || *p == '-' || *p == '.' ||
                   *p == '_'),
             "host \"%s\" from \"%s\"", u->host, s);
  FZ_CHECK(u->path[0] == '\0' || u->path[0] == '/' || u->path[0] == '?',
           "path \"%s\" from \"%s\"", u->path, s);
  FZ_CHECK(strchr(u->path, '#') == NULL, "fragment in path \"%s\"", u->path);
  FZ_CHECK(wstun__url_is_tls(u) == (dp == 443), "is_tls for %s", u->scheme);
  /* the host must be what the authority names after the last '@' */
  const char *auth = strstr(s, "://") + 3;
  size_t alen = strcspn(auth, "/?#");
  const char *at = NULL;
  for (const char *p = auth; p < auth + alen; p++)
    if (*p == '@')
      at = p;
  FZ_CHECK((at != NULL) == (u->userinfo != NULL), "userinfo from \"%s\"", s);
  const char *hp = at ? at + 1 : auth;
  size_t hl = strlen(u->host);
  FZ_CHECK(strncmp(hp + (*hp == '['), u->host, hl) == 0,
           "host \"%s\" is not in the authority of \"%s\"", u->host, s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  if (s == NULL)
    abort();
  memcpy(s, data, size);
  s[size] = '\0';
  wstun__url u;
  memset(&u, 0x5a, sizeof(u));
  int rc = wstun__url_parse(s, &u);
  if (rc != 0) {
    FZ_CHECK(rc == WSTUN_EURL || rc == WSTUN_ENOMEM, "rc %d", rc);
    FZ_CHECK(u.scheme == NULL && u.userinfo == NULL && u.host == NULL &&
                 u.path == NULL,
             "url not zeroed on error");
    free(s);
    return 0;
  }
  check(&u, s);

  /* rebuild without userinfo and parse again */
  size_t n = strlen(u.scheme) + strlen(u.host) + strlen(u.path) + 32;
  char *r = malloc(n);
  if (r == NULL)
    abort();
  int v6 = strchr(u.host, ':') != NULL;
  snprintf(r, n, "%s://%s%s%s:%d%s", u.scheme, v6 ? "[" : "", u.host,
           v6 ? "]" : "", u.port, u.path);
  wstun__url u2;
  rc = wstun__url_parse(r, &u2);
  FZ_CHECK(rc == 0, "rebuilt \"%s\" (from \"%s\") does not parse", r, s);
  check(&u2, r);
  FZ_CHECK(strcmp(u.scheme, u2.scheme) == 0 && strcmp(u.host, u2.host) == 0 &&
               u.port == u2.port && strcmp(u.path, u2.path) == 0,
           "rebuilt \"%s\" parses differently (from \"%s\")", r, s);
  wstun__url_free(&u2);
  wstun__url_free(&u);
  free(r);
  free(s);
  return 0;
}
