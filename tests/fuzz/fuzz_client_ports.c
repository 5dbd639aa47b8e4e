/* The -client-ports parser, wstun__parse_ports (wstun_client.c):
 * "8000..8100,8300" into inclusive ranges. Checked against a reference
 * reading of the syntax (entries separated by ',', spaces around entries
 * ignored; each entry PORT or PORT..PORT, decimal, 1..65535, low <= high;
 * at least one entry), range by range, and for leaks under allocation
 * failure.
 *
 * Input: byte 0 flags (bit 0: fail the N+1-th allocation, N = byte 1),
 * then the list (up to the first NUL). */
#include "fuzz_util.h"
#include "wstun_alloc.h"
#include "wstun_client_int.h"

/* A port: 1..65535 decimal digits, no sign, no spaces. Returns the number
 * of bytes used, 0 if there is no valid port at s. */
static size_t ref_port(const char *s, size_t n, unsigned long *v) {
  size_t i = 0;
  *v = 0;
  while (i < n && s[i] >= '0' && s[i] <= '9') {
    *v = *v * 10 + (unsigned long)(s[i] - '0');
    if (*v > 65535)
      return 0;
    i++;
  }
  return (i > 0 && *v > 0) ? i : 0;
}

/* Returns the number of ranges, or -1 when the list is invalid. */
static long reference(const char *s, uint16_t (*out)[2], size_t max) {
  long n = 0;
  const char *p = s;
  for (;;) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    size_t a = 0, e = len;
    while (a < e && p[a] == ' ')
      a++;
    while (e > a && p[e - 1] == ' ')
      e--;
    if (e > a) {
      unsigned long lo, hi;
      size_t k = ref_port(p + a, e - a, &lo);
      if (k == 0)
        return -1;
      if (a + k == e) {
        hi = lo;
      } else {
        if (e - a - k < 3 || p[a + k] != '.' || p[a + k + 1] != '.')
          return -1;
        size_t k2 = ref_port(p + a + k + 2, e - a - k - 2, &hi);
        if (k2 == 0 || a + k + 2 + k2 != e || hi < lo)
          return -1;
      }
      if ((size_t)n >= max)
        return -1;
      out[n][0] = (uint16_t)lo;
      out[n][1] = (uint16_t)hi;
      n++;
    }
    if (comma == NULL)
      break;
    p = comma + 1;
  }
  return n > 0 ? n : -1;
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
  char *s = malloc(in.n + 1);
  if (s == NULL)
    abort();
  memcpy(s, in.d, in.n);
  s[in.n] = '\0';

  uint16_t(*got)[2] = (uint16_t(*)[2])1; /* must be reset */
  size_t n = 12345;
  fz_alloc_failed = 0;
  if (fail_after >= 0)
    fz_alloc_fail_after(fail_after);
  int rc = wstun__parse_ports(s, &got, &n);
  fz_alloc_reset();

  size_t max = strlen(s) / 2 + 2;
  uint16_t(*want)[2] = calloc(max, sizeof(*want));
  if (want == NULL)
    abort();
  long ref = reference(s, want, max);
  if (fz_alloc_failed) {
    FZ_CHECK(rc == WSTUN_ENOMEM && got == NULL && n == 0,
             "rc %d after an allocation failure", rc);
  } else if (ref < 0) {
    FZ_CHECK(rc == WSTUN_EPORTS && got == NULL && n == 0,
             "\"%s\" accepted (rc %d, %zu ranges)", s, rc, n);
  } else {
    FZ_CHECK(rc == 0 && got != NULL && n == (size_t)ref,
             "\"%s\": rc %d, %zu ranges, reference %ld", s, rc, n, ref);
    for (size_t i = 0; i < n; i++) {
      FZ_CHECK(got[i][0] == want[i][0] && got[i][1] == want[i][1],
               "\"%s\" range %zu: %u..%u, reference %u..%u", s, i, got[i][0],
               got[i][1], want[i][0], want[i][1]);
      FZ_CHECK(got[i][0] >= 1 && got[i][0] <= got[i][1], "bad range");
    }
  }
  if (rc == 0)
    wstun__free(got);
  free(want);
  free(s);
  return 0;
}
