/* The -passwords option ("tok:pw,tok2:pw2") is parsed by a static function
 * of wstun_server.c (parse_passwords); the only way in is
 * wstun_server_start, which parses the passwords and the base path before
 * it touches the network. With a listen address that is neither an IP
 * address nor a host name (a space in it: refused before any resolver is
 * asked, so no DNS query leaves the machine) the start always fails after
 * parsing (nothing is bound), so this target
 * checks the parser for memory errors and leaks (ASan/LSan) and that it
 * accepts exactly what a reference reading of the syntax accepts.
 *
 * Input: byte 0 flags (bit 0: fail the N+1-th allocation, N = byte 1),
 * then "passwords\0base_path". */
#include <uv.h>

#include "fuzz_util.h"

/* Entries separated by ',', spaces around entries ignored; each one must be
 * token:password with both parts non-empty. */
static int reference_ok(const char *s) {
  const char *p = s;
  while (*p) {
    while (*p == ' ' || *p == ',')
      p++;
    if (*p == '\0')
      break;
    size_t len = strcspn(p, ",");
    size_t end = len;
    while (end > 0 && p[end - 1] == ' ')
      end--;
    const char *colon = memchr(p, ':', end);
    if (colon == NULL || colon == p || colon == p + end - 1)
      return 0;
    p += len;
  }
  return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int installed;
  if (!installed) {
    fz_alloc_install();
    installed = 1;
  }
  fz_in in = {data, size};
  uint8_t flags = fz_byte(&in);
  long fail_after = (flags & 1) ? (long)fz_byte(&in) : -1;

  char *buf = malloc(in.n + 2);
  if (buf == NULL)
    abort();
  memcpy(buf, in.d, in.n);
  buf[in.n] = '\0';
  buf[in.n + 1] = '\0';
  const char *passwords = buf;
  const char *base = buf + strlen(buf) + 1;
  if (base > buf + in.n)
    base = "";

  wstun_server_config cfg;
  wstun_server_config_init(&cfg);
  cfg.host = "not a host"; /* never listen, never resolved */
  cfg.port = 0;
  cfg.passwords = passwords;
  cfg.base_path = base;
  uv_loop_t *loop = uv_default_loop();
  wstun_server *srv = NULL;
  fz_alloc_failed = 0;
  if (fail_after >= 0)
    fz_alloc_fail_after(fail_after);
  int rc = wstun_server_start(loop, &cfg, &srv);
  fz_alloc_reset();
  FZ_CHECK(rc != 0 && srv == NULL, "server started on a bogus address");
  if (!fz_alloc_failed) {
    int ok = reference_ok(passwords);
    FZ_CHECK(ok ? rc == WSTUN_EINVAL : rc == WSTUN_EPASSWORDS,
             "passwords \"%s\": rc %d, reference %s", passwords, rc,
             ok ? "valid" : "invalid");
  } else {
    FZ_CHECK(rc == WSTUN_ENOMEM || rc == WSTUN_EPASSWORDS || rc == WSTUN_EINVAL,
             "rc %d after an allocation failure", rc);
  }
  free(buf);
  return 0;
}
