/* The tunnel message id prefix decoder ("%04x", no separator), fed the whole input at
 * once, split at a data-derived point, and byte by byte; all three must
 * agree with each other and with a reference decoder, and a decoded id must
 * survive wstun__proto_write_prefix. */
#include "fuzz_util.h"
#include "wstun_proto.h"

typedef struct outcome {
  int ok;          /* 1 done, 0 needs more, -1 invalid */
  size_t consumed; /* bytes used until done or until the bad byte */
  uint16_t id;
} outcome;

static int hexv(uint8_t c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

static outcome reference(const uint8_t *d, size_t n) {
  outcome o = {0, 0, 0};
  for (size_t i = 0; i < WSTUN__PROTO_PREFIX_LEN; i++) {
    if (i >= n)
      return o;
    int v = hexv(d[i]);
    if (v < 0) {
      o.ok = -1;
      return o;
    }
    o.id = (uint16_t)((o.id << 4) | v);
    o.consumed = i + 1;
  }
  o.ok = 1;
  return o;
}

/* Feeds the pieces in turn, stopping at done or at an error. */
static outcome run(const uint8_t *d, size_t n, const size_t *cuts,
                   size_t ncuts) {
  wstun__proto_prefix p;
  wstun__proto_prefix_init(&p);
  outcome o = {0, 0, 0};
  size_t off = 0;
  for (size_t k = 0; k <= ncuts; k++) {
    size_t end = k < ncuts ? cuts[k] : n;
    if (end < off)
      end = off;
    int r = wstun__proto_prefix_feed(&p, d + off, end - off);
    if (r < 0) {
      o.ok = -1;
      return o;
    }
    FZ_CHECK((size_t)r <= end - off, "consumed %d of %zu", r, end - off);
    FZ_CHECK(p.got <= WSTUN__PROTO_PREFIX_LEN, "got %u", p.got);
    o.consumed += (size_t)r;
    if (wstun__proto_prefix_done(&p)) {
      o.ok = 1;
      o.id = p.id;
      return o;
    }
    FZ_CHECK((size_t)r == end - off, "stopped early (%d of %zu) but not done",
             r, end - off);
    off = end;
  }
  return o;
}

static void same(outcome a, outcome b, const char *what) {
  FZ_CHECK(a.ok == b.ok, "%s: ok %d vs %d", what, a.ok, b.ok);
  if (a.ok == 1) {
    FZ_CHECK(a.id == b.id, "%s: id %04x vs %04x", what, a.id, b.id);
    FZ_CHECK(a.consumed == b.consumed, "%s: consumed %zu vs %zu", what,
             a.consumed, b.consumed);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  /* the first byte picks the split point; the rest is the message */
  size_t cut = data[0];
  const uint8_t *d = data + 1;
  size_t n = size - 1;
  if (cut > n)
    cut = n ? cut % (n + 1) : 0;

  outcome ref = reference(d, n);
  outcome whole = run(d, n, NULL, 0);
  same(ref, whole, "whole");
  outcome split = run(d, n, &cut, 1);
  same(ref, split, "split");
  size_t cuts[WSTUN__PROTO_PREFIX_LEN];
  for (size_t i = 0; i < WSTUN__PROTO_PREFIX_LEN; i++)
    cuts[i] = i + 1 < n ? i + 1 : n;
  outcome bytes = run(d, n, cuts, WSTUN__PROTO_PREFIX_LEN);
  same(ref, bytes, "byte by byte");

  if (whole.ok == 1) {
    uint8_t out[WSTUN__PROTO_PREFIX_LEN];
    wstun__proto_write_prefix(whole.id, out);
    outcome again = run(out, sizeof(out), NULL, 0);
    FZ_CHECK(again.ok == 1 && again.id == whole.id,
             "write_prefix(%04x) does not decode back", whole.id);
    for (int i = 0; i < 4; i++)
      FZ_CHECK((out[i] >= '0' && out[i] <= '9') ||
                   (out[i] >= 'a' && out[i] <= 'f'),
               "write_prefix is not lower-case hex");
    /* lower-case input must be written back byte for byte */
    int lower = 1;
    for (int i = 0; i < 4; i++)
      lower &= !(d[i] >= 'A' && d[i] <= 'F');
    if (lower)
      FZ_CHECK(memcmp(out, d, sizeof(out)) == 0, "prefix does not round-trip");
  }
  return 0;
}
