/* The v2 frame decoder (wstun__v2_rx_feed) fed the whole message at once,
 * in data-derived chunks and byte by byte: all three must agree with each
 * other and with a reference decoder written from PROTOCOL.md 7.2 (result,
 * error, bytes consumed, fields). An accepted frame must encode back to
 * the bytes it came from. The bytes after it then drive a sender's credit
 * and a receiver's window through random operations, checking that the
 * window's counts always add up and that no operation that fails changes
 * anything.
 *
 * Input: split seed (0: no extra split), then the message. */
#include "fuzz_util.h"
#include "wstun_v2.h"

typedef struct outcome {
  int r;           /* 1 done, 0 needs more, < 0 the error */
  size_t consumed; /* bytes used until done (when done) */
  wstun__v2_frame f;
} outcome;

static uint32_t be(const uint8_t *p, size_t n) {
  uint32_t v = 0;
  for (size_t i = 0; i < n; i++)
    v = v << 8 | p[i];
  return v;
}

/* Straight from the table of PROTOCOL.md 7.2 and the order of 7.9. */
static outcome reference(const uint8_t *d, size_t n) {
  outcome o;
  memset(&o, 0, sizeof(o));
  if (n < 1)
    return o;
  uint8_t t = d[0];
  if (t < 1 || t > 5) {
    o.r = WSTUN__V2_ETYPE;
    return o;
  }
  o.f.type = t;
  if (n < 2)
    return o;
  uint8_t fl = d[1];
  int hd = t == WSTUN__V2_HEAD || t == WSTUN__V2_DATA;
  if (fl & ~(hd ? WSTUN__V2_FLAG_END : 0)) {
    o.r = WSTUN__V2_EFLAGS;
    return o;
  }
  o.f.flags = fl;
  if (n < 5)
    return o;
  uint32_t len = be(d + 2, 3);
  int lok;
  if (t == WSTUN__V2_HEAD)
    lok = len >= 1 && len <= 262144;
  else if (t == WSTUN__V2_DATA)
    lok = len <= 65536 && (len > 0 || (fl & 1));
  else
    lok = len == (t == WSTUN__V2_GOAWAY ? 8u : 4u);
  if (!lok) {
    o.r = WSTUN__V2_ELENGTH;
    return o;
  }
  o.f.len = len;
  if (n < 9)
    return o;
  uint32_t s = be(d + 5, 4);
  if (s & 0x80000000u) {
    o.r = WSTUN__V2_ERESERVED;
    return o;
  }
  if ((t == WSTUN__V2_GOAWAY) != (s == 0) && t != WSTUN__V2_WINDOW) {
    o.r = WSTUN__V2_ESTREAM;
    return o;
  }
  o.f.stream = s;
  size_t need = hd ? 9 : 9 + len;
  if (n < 9 + (need > 9 ? 4 : 0))
    return o;
  if (need > 9) {
    uint32_t v = be(d + 9, 4);
    if (t == WSTUN__V2_WINDOW) {
      if (v == 0 || v > 0x7fffffffu) {
        o.r = WSTUN__V2_EINCREMENT;
        return o;
      }
      o.f.increment = v;
    } else if (t == WSTUN__V2_GOAWAY) {
      if (v & 0x80000000u) {
        o.r = WSTUN__V2_ERESERVED;
        return o;
      }
      o.f.last = v;
    } else {
      o.f.code = v;
    }
  }
  if (n < need)
    return o;
  if (t == WSTUN__V2_GOAWAY)
    o.f.code = be(d + 13, 4);
  o.r = 1;
  o.consumed = need;
  return o;
}

/* Feeds chunks from `s` until done, an error or the end. */
static outcome run(const uint8_t *d, size_t n, fz_split *s, int bytewise) {
  wstun__v2_rx rx;
  wstun__v2_rx_init(&rx);
  outcome o;
  memset(&o, 0, sizeof(o));
  size_t off = 0;
  while (off < n && !rx.done) {
    size_t c = bytewise ? 1 : s ? fz_split_next(s, n - off) : n - off;
    int r = wstun__v2_rx_feed(&rx, d + off, c);
    if (r < 0) {
      o.r = r;
      FZ_CHECK(rx.err == r, "error %d not sticky (%d)", r, rx.err);
      FZ_CHECK(wstun__v2_rx_feed(&rx, d, n) == r, "error not sticky");
      return o;
    }
    FZ_CHECK((size_t)r <= c, "consumed %d of %zu", r, c);
    FZ_CHECK(rx.done || (size_t)r == c, "stopped at %d of %zu, not done", r, c);
    off += (size_t)r;
  }
  FZ_CHECK(rx.got <= WSTUN__V2_FRAME_HEAD_MAX, "got %u", rx.got);
  if (rx.done) {
    o.r = 1;
    o.consumed = off;
    o.f = rx.frame;
    FZ_CHECK(wstun__v2_rx_feed(&rx, d, n) == 0, "took bytes once done");
  }
  return o;
}

static void same(const outcome *a, const outcome *b, const char *what) {
  FZ_CHECK(a->r == b->r, "%s: result %d vs %d", what, a->r, b->r);
  if (a->r != 1)
    return;
  FZ_CHECK(a->consumed == b->consumed, "%s: consumed %zu vs %zu", what,
           a->consumed, b->consumed);
  FZ_CHECK(memcmp(&a->f, &b->f, sizeof(a->f)) == 0, "%s: frames differ", what);
}

/* Random credit/window operations; every failure leaves things as they
 * were, and the window's counts always add up to its size. */
static void windows(const uint8_t *d, size_t n) {
  wstun__v2_credit c;
  wstun__v2_window w;
  wstun__v2_credit_init(&c, WSTUN__V2_STREAM_WINDOW);
  FZ_CHECK(wstun__v2_window_init(&w, WSTUN__V2_STREAM_WINDOW) == 0, "init");
  for (size_t i = 0; i + 5 <= n; i += 5) {
    uint32_t v = be(d + i + 1, 4);
    wstun__v2_credit c0 = c;
    wstun__v2_window w0 = w;
    int r = 0;
    switch (d[i] % 7) {
    case 0:
      r = wstun__v2_credit_take(&c, v);
      FZ_CHECK((r == 0) == (v <= c0.avail), "take %u of %u: %d", v, c0.avail,
               r);
      break;
    case 1:
      r = wstun__v2_credit_update(&c, v);
      FZ_CHECK((r == 0) == (v >= 1 && v <= WSTUN__V2_WINDOW_MAX &&
                            (uint64_t)c0.avail + v <= WSTUN__V2_WINDOW_MAX),
               "update %u on %u: %d", v, c0.avail, r);
      break;
    case 2:
      r = wstun__v2_window_recv(&w, v);
      FZ_CHECK((r == 0) == (v <= w0.granted), "recv %u: %d", v, r);
      break;
    case 3:
      r = wstun__v2_window_release(&w, v);
      FZ_CHECK((r == 0) == (v <= w0.held), "release %u: %d", v, r);
      break;
    case 4: {
      uint32_t due = wstun__v2_window_update_due(&w);
      FZ_CHECK(due == 0 || (due == w.released && due >= w.size / 2), "due %u",
               due);
      if (due)
        FZ_CHECK(wstun__v2_window_sent(&w, due) == 0, "sent due");
      break;
    }
    case 5:
      r = wstun__v2_window_sent(&w, v);
      FZ_CHECK((r == 0) == (v >= 1 && v <= w0.released), "sent %u: %d", v, r);
      break;
    default:
      r = wstun__v2_window_grow(&w, v);
      FZ_CHECK((r == 0) == (v >= w0.size && v <= WSTUN__V2_WINDOW_MAX),
               "grow %u: %d", v, r);
      break;
    }
    if (r != 0)
      FZ_CHECK(memcmp(&c, &c0, sizeof(c)) == 0 &&
                   memcmp(&w, &w0, sizeof(w)) == 0,
               "a failed operation changed state");
    FZ_CHECK(c.avail <= WSTUN__V2_WINDOW_MAX, "credit %u", c.avail);
    FZ_CHECK((uint64_t)w.granted + w.held + w.released == w.size,
             "window counts %u+%u+%u != %u", w.granted, w.held, w.released,
             w.size);
    FZ_CHECK(w.size <= WSTUN__V2_WINDOW_MAX, "size %u", w.size);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  fz_in in = {data, size};
  uint8_t seed = fz_byte(&in);
  const uint8_t *d = in.d;
  size_t n = in.n;

  outcome ref = reference(d, n);
  outcome whole = run(d, n, NULL, 0);
  same(&ref, &whole, "whole");
  fz_split s;
  fz_split_init(&s, seed);
  outcome split = run(d, n, &s, 0);
  same(&ref, &split, "split");
  outcome bytes = run(d, n, NULL, 1);
  same(&ref, &bytes, "byte by byte");

  if (whole.r == 1) {
    FZ_CHECK(wstun__v2_check(&whole.f) == 0, "decoded frame fails check");
    uint8_t out[WSTUN__V2_FRAME_HEAD_MAX];
    int r = wstun__v2_encode(&whole.f, out);
    FZ_CHECK(r > 0 && (size_t)r == whole.consumed, "encode gave %d, not %zu", r,
             whole.consumed);
    FZ_CHECK(memcmp(out, d, whole.consumed) == 0, "frame does not round-trip");
    windows(d + whole.consumed, n - whole.consumed);
  } else if (whole.r < 0) {
    FZ_CHECK(strcmp(wstun__v2_errname(whole.r), "?") != 0, "unnamed error %d",
             whole.r);
  }
  return 0;
}
