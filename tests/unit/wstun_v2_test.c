/* Tests for wstun_v2: the golden frames of docs/PROTOCOL.md section 7.10
 * (built by the encoder, compared with the page as written, decoded back
 * whole, split anywhere and byte by byte), every decoder error at the byte
 * where it must show, the encoder refusing what the decoder refuses, and
 * the window arithmetic at its edges. */
#include <stdlib.h>

#include "test.h"
#include "wstun_v2.h"

/* ---- the golden frames --------------------------------------------------- */

typedef struct golden {
  const char *name; /* the marker in PROTOCOL.md */
  wstun__v2_frame f;
  const char *payload; /* HEAD/DATA payload, NULL for none */
  const char *hex;     /* the whole message */
} golden;

static const golden goldens[] = {
    {"v2_request_head",
     {WSTUN__V2_HEAD, WSTUN__V2_FLAG_END, 27, 1, 0, 0, 0},
     "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
     "01 01 00 00 1b 00 00 00 01 47 45 54 20 2f 20 48 54 54 50 2f 31 2e 31 0d "
     "0a 48 6f 73 74 3a 20 61 0d 0a 0d 0a"},
    {"v2_response_head",
     {WSTUN__V2_HEAD, 0, 38, 1, 0, 0, 0},
     "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
     "01 00 00 00 26 00 00 00 01 48 54 54 50 2f 31 2e 31 20 32 30 30 20 4f 4b "
     "0d 0a 43 6f 6e 74 65 6e 74 2d 4c 65 6e 67 74 68 3a 20 32 0d 0a 0d 0a"},
    {"v2_data",
     {WSTUN__V2_DATA, 0, 2, 1, 0, 0, 0},
     "hi",
     "02 00 00 00 02 00 00 00 01 68 69"},
    {"v2_end",
     {WSTUN__V2_DATA, WSTUN__V2_FLAG_END, 0, 1, 0, 0, 0},
     "",
     "02 01 00 00 00 00 00 00 01"},
    {"v2_window",
     {WSTUN__V2_WINDOW, 0, 4, 1, 0, 0x80000, 0},
     NULL,
     "04 00 00 00 04 00 00 00 01 00 08 00 00"},
    {"v2_window_tunnel",
     {WSTUN__V2_WINDOW, 0, 4, 0, 0, 0x800000, 0},
     NULL,
     "04 00 00 00 04 00 00 00 00 00 80 00 00"},
    {"v2_reset",
     {WSTUN__V2_RESET, 0, 4, 3, WSTUN__V2_CANCEL, 0, 0},
     NULL,
     "03 00 00 00 04 00 00 00 03 00 00 00 05"},
    {"v2_goaway",
     {WSTUN__V2_GOAWAY, 0, 8, 0, WSTUN__V2_NO_ERROR, 0, 3},
     NULL,
     "05 00 00 00 08 00 00 00 00 00 00 00 03 00 00 00 00"},
};

/* Space-separated hex pairs into out; the byte count or -1. */
static int parse_hex(const char *s, uint8_t *out, size_t cap) {
  int n = 0;
  for (const char *p = s; *p;) {
    unsigned v;
    int used;
    while (*p == ' ' || *p == '\n' || *p == '\r')
      p++;
    if (!*p)
      break;
    if (sscanf(p, "%2x%n", &v, &used) != 1 || used != 2 || (size_t)n == cap)
      return -1;
    out[n++] = (uint8_t)v;
    p += used;
  }
  return n;
}

/* The hex block under "<!-- golden: tests/unit/wstun_v2_test.c <name> -->"
 * in docs/PROTOCOL.md (every line up to the closing fence), as bytes; the
 * count, or -1 if the file or the block is missing or malformed. The same
 * convention as wstun_proto_test's message_golden_bytes, with a name per
 * block and blocks of several lines. */
static int doc_golden(const char *name, uint8_t *out, size_t cap) {
#ifdef WSTUN_SOURCE_DIR
  FILE *f = fopen(WSTUN_SOURCE_DIR "/docs/PROTOCOL.md", "r");
  if (f == NULL)
    return -1;
  char marker[128], line[512];
  snprintf(marker, sizeof(marker),
           "<!-- golden: tests/unit/wstun_v2_test.c %s -->", name);
  int state = 0, n = 0; /* 0: before the marker, 1: before ```, 2: in */
  while (fgets(line, sizeof(line), f)) {
    if (state == 0 && strstr(line, marker))
      state = 1;
    else if (state == 1 && strncmp(line, "```", 3) == 0)
      state = 2;
    else if (state == 2 && strncmp(line, "```", 3) == 0) {
      state = 3;
      break;
    } else if (state == 2) {
      int k = parse_hex(line, out + n, cap - (size_t)n);
      if (k < 0) {
        n = -1;
        break;
      }
      n += k;
    }
  }
  fclose(f);
  return state == 3 ? n : -1;
#else
  (void)name;
  (void)out;
  (void)cap;
  return -1;
#endif
}

static void check_frame(const wstun__v2_frame *got, const wstun__v2_frame *w) {
  CHECK_EQ_INT(got->type, w->type);
  CHECK_EQ_INT(got->flags, w->flags);
  CHECK_EQ_INT(got->len, w->len);
  CHECK_EQ_INT(got->stream, w->stream);
  CHECK_EQ_INT(got->code, w->code);
  CHECK_EQ_INT(got->increment, w->increment);
  CHECK_EQ_INT(got->last, w->last);
}

TEST(golden_frames_encode_as_the_page_shows) {
  for (size_t i = 0; i < TEST_COUNT(goldens); i++) {
    const golden *g = &goldens[i];
    test_context("%s", g->name);
    uint8_t want[128], doc[128], msg[128];
    int wn = parse_hex(g->hex, want, sizeof(want));
    REQUIRE(wn > 0);
    int hn = wstun__v2_encode(&g->f, msg);
    REQUIRE(hn > 0);
    size_t pl = g->payload ? strlen(g->payload) : 0;
    CHECK_EQ_INT(pl, g->payload ? g->f.len : 0);
    memcpy(msg + hn, g->payload ? g->payload : "", pl);
    CHECK_EQ_INT((size_t)hn + pl, (size_t)wn);
    CHECK_MEM(msg, want, (size_t)wn);
    /* the page shows exactly these bytes */
    int dn = doc_golden(g->name, doc, sizeof(doc));
    CHECK_EQ_INT(dn, wn);
    if (dn == wn)
      CHECK_MEM(doc, want, (size_t)wn);
  }
}

/* 7.2 and 7.10: a 300000-byte head in two HEAD frames; the page shows the
 * two headers only (the payloads are the head's bytes). Each encodes as
 * shown and decodes back one byte at a time, stopping at its payload. */
TEST(golden_continued_head_headers) {
  static const wstun__v2_frame parts[2] = {
      {WSTUN__V2_HEAD, 0, WSTUN__V2_MAX_HEAD, 3, 0, 0, 0},
      {WSTUN__V2_HEAD, WSTUN__V2_FLAG_END, 300000 - WSTUN__V2_MAX_HEAD, 3, 0, 0,
       0}};
  uint8_t doc[64], enc[2 * WSTUN__V2_HDR_LEN];
  for (int i = 0; i < 2; i++) {
    uint8_t h[WSTUN__V2_FRAME_HEAD_MAX];
    CHECK_EQ_INT(wstun__v2_encode(&parts[i], h), WSTUN__V2_HDR_LEN);
    memcpy(enc + i * WSTUN__V2_HDR_LEN, h, WSTUN__V2_HDR_LEN);
    wstun__v2_rx rx;
    wstun__v2_rx_init(&rx);
    for (size_t k = 0; k < WSTUN__V2_HDR_LEN; k++) {
      CHECK(!rx.done);
      CHECK_EQ_INT(wstun__v2_rx_feed(&rx, h + k, 1), 1);
    }
    CHECK(rx.done);
    CHECK_EQ_INT(wstun__v2_rx_feed(&rx, (const uint8_t *)"GET", 3), 0);
    check_frame(&rx.frame, &parts[i]);
  }
  static const uint8_t want[] = {0x01, 0x00, 0x04, 0x00, 0x00, 0x00,
                                 0x00, 0x00, 0x03, 0x01, 0x01, 0x00,
                                 0x93, 0xe0, 0x00, 0x00, 0x00, 0x03};
  CHECK_MEM(enc, want, sizeof(want));
  CHECK_EQ_INT(doc_golden("v2_head_continued", doc, sizeof(doc)),
               (int)sizeof(want));
  CHECK_MEM(doc, want, sizeof(want));
  /* one byte more than a frame may carry is still refused */
  wstun__v2_frame over = parts[0];
  over.len = WSTUN__V2_MAX_HEAD + 1;
  uint8_t h[WSTUN__V2_FRAME_HEAD_MAX];
  CHECK_EQ_INT(wstun__v2_encode(&over, h), WSTUN__V2_ELENGTH);
}

/* Decodes msg in pieces cut at the given offsets; the frame, the bytes
 * consumed (which must stop at the payload) and done. */
static int decode_cuts(const uint8_t *msg, size_t n, const size_t *cuts,
                       size_t ncuts, wstun__v2_rx *rx, size_t *consumed) {
  wstun__v2_rx_init(rx);
  *consumed = 0;
  size_t off = 0;
  for (size_t k = 0; k <= ncuts && !rx->done; k++) {
    size_t end = k < ncuts ? cuts[k] : n;
    int r = wstun__v2_rx_feed(rx, msg + off, end - off);
    if (r < 0)
      return r;
    *consumed += (size_t)r;
    if (!rx->done && (size_t)r != end - off)
      return -100; /* stopped early without being done */
    off = end;
  }
  return 0;
}

TEST(golden_frames_decode_whole_split_and_bytewise) {
  for (size_t i = 0; i < TEST_COUNT(goldens); i++) {
    const golden *g = &goldens[i];
    uint8_t msg[128];
    int n = parse_hex(g->hex, msg, sizeof(msg));
    REQUIRE(n > 0);
    int fixed = wstun__v2_fixed_len(g->f.type);
    size_t head = WSTUN__V2_HDR_LEN + (size_t)(fixed > 0 ? fixed : 0);
    wstun__v2_rx rx;
    size_t consumed;
    /* whole, and every split in two */
    for (size_t cut = 0; cut <= (size_t)n; cut++) {
      test_context("%s split at %zu", g->name, cut);
      CHECK_EQ_INT(decode_cuts(msg, (size_t)n, &cut, 1, &rx, &consumed), 0);
      CHECK(rx.done);
      CHECK_EQ_INT(consumed, head);
      check_frame(&rx.frame, &g->f);
    }
    /* byte by byte */
    test_context("%s byte by byte", g->name);
    size_t cuts[128];
    for (size_t k = 0; k < (size_t)n; k++)
      cuts[k] = k + 1;
    CHECK_EQ_INT(decode_cuts(msg, (size_t)n, cuts, (size_t)n, &rx, &consumed),
                 0);
    CHECK(rx.done);
    CHECK_EQ_INT(consumed, head);
    check_frame(&rx.frame, &g->f);
    /* what is left is the payload, for HEAD and DATA */
    CHECK_EQ_INT((size_t)n - consumed, fixed > 0 ? 0 : g->f.len);
    if (g->payload)
      CHECK_MEM(msg + consumed, g->payload, g->f.len);
    /* once done, it takes nothing more */
    CHECK_EQ_INT(wstun__v2_rx_feed(&rx, msg, (size_t)n), 0);
  }
}

TEST(empty_feed_and_partial_header) {
  wstun__v2_rx rx;
  wstun__v2_rx_init(&rx);
  CHECK_EQ_INT(wstun__v2_rx_feed(&rx, NULL, 0), 0);
  CHECK(!rx.done);
  static const uint8_t part[] = {0x02, 0x00, 0x00, 0x00};
  CHECK_EQ_INT(wstun__v2_rx_feed(&rx, part, sizeof(part)), 4);
  CHECK(!rx.done);
  CHECK_EQ_INT(rx.got, 4);
}

/* ---- every error, at its byte --------------------------------------------
 */

typedef struct bad {
  const char *what;
  const char *hex;
  int err;
  size_t at; /* 0-based index of the byte that shows the error */
} bad;

static const bad bads[] = {
    {"type 0", "00 00 00 00 00 00 00 00 01", WSTUN__V2_ETYPE, 0},
    {"type 6", "06", WSTUN__V2_ETYPE, 0},
    {"type ff", "ff", WSTUN__V2_ETYPE, 0},
    {"ascii hex (a v1 message)", "30 30 30 31 47", WSTUN__V2_ETYPE, 0},
    {"HEAD flag 02", "01 02", WSTUN__V2_EFLAGS, 1},
    {"DATA flag 80", "02 81", WSTUN__V2_EFLAGS, 1},
    {"RESET flag END", "03 01", WSTUN__V2_EFLAGS, 1},
    {"WINDOW flag", "04 10", WSTUN__V2_EFLAGS, 1},
    {"GOAWAY flag END", "05 01", WSTUN__V2_EFLAGS, 1},
    {"HEAD empty", "01 01 00 00 00 00 00 00 01", WSTUN__V2_ELENGTH, 4},
    {"HEAD over 256 KiB", "01 00 04 00 01", WSTUN__V2_ELENGTH, 4},
    {"DATA over 64 KiB", "02 00 01 00 01", WSTUN__V2_ELENGTH, 4},
    {"DATA max length", "02 00 ff ff ff", WSTUN__V2_ELENGTH, 4},
    {"DATA empty without END", "02 00 00 00 00", WSTUN__V2_ELENGTH, 4},
    {"RESET length 3", "03 00 00 00 03", WSTUN__V2_ELENGTH, 4},
    {"RESET length 5", "03 00 00 00 05", WSTUN__V2_ELENGTH, 4},
    {"WINDOW length 8", "04 00 00 00 08", WSTUN__V2_ELENGTH, 4},
    {"WINDOW length 2^16+4", "04 00 01 00 04", WSTUN__V2_ELENGTH, 4},
    {"GOAWAY length 4", "05 00 00 00 04", WSTUN__V2_ELENGTH, 4},
    {"GOAWAY length 0", "05 00 00 00 00", WSTUN__V2_ELENGTH, 4},
    {"HEAD reserved bit", "01 00 00 00 01 80 00 00 01", WSTUN__V2_ERESERVED, 8},
    {"DATA reserved bit, id 0", "02 01 00 00 00 80 00 00 00",
     WSTUN__V2_ERESERVED, 8},
    {"WINDOW reserved bit", "04 00 00 00 04 ff ff ff ff", WSTUN__V2_ERESERVED,
     8},
    {"GOAWAY reserved bit", "05 00 00 00 08 80 00 00 00", WSTUN__V2_ERESERVED,
     8},
    {"HEAD stream 0", "01 00 00 00 01 00 00 00 00", WSTUN__V2_ESTREAM, 8},
    {"DATA stream 0", "02 01 00 00 00 00 00 00 00", WSTUN__V2_ESTREAM, 8},
    {"RESET stream 0", "03 00 00 00 04 00 00 00 00", WSTUN__V2_ESTREAM, 8},
    {"GOAWAY stream 1", "05 00 00 00 08 00 00 00 01", WSTUN__V2_ESTREAM, 8},
    {"WINDOW increment 0", "04 00 00 00 04 00 00 00 01 00 00 00 00",
     WSTUN__V2_EINCREMENT, 12},
    {"WINDOW increment 2^31", "04 00 00 00 04 00 00 00 00 80 00 00 00",
     WSTUN__V2_EINCREMENT, 12},
    {"WINDOW increment ffffffff", "04 00 00 00 04 00 00 00 00 ff ff ff ff",
     WSTUN__V2_EINCREMENT, 12},
    {"GOAWAY last id reserved bit", "05 00 00 00 08 00 00 00 00 80 00 00 01",
     WSTUN__V2_ERESERVED, 12},
};

TEST(every_error_at_its_byte_whole_and_bytewise) {
  for (size_t i = 0; i < TEST_COUNT(bads); i++) {
    const bad *b = &bads[i];
    uint8_t msg[64];
    int n = parse_hex(b->hex, msg, sizeof(msg));
    REQUIRE(n > 0);
    test_context("%s", b->what);
    wstun__v2_rx rx;
    /* whole */
    wstun__v2_rx_init(&rx);
    CHECK_EQ_INT(wstun__v2_rx_feed(&rx, msg, (size_t)n), b->err);
    CHECK(!rx.done);
    /* sticky */
    CHECK_EQ_INT(wstun__v2_rx_feed(&rx, msg, 1), b->err);
    CHECK_EQ_INT(wstun__v2_rx_feed(&rx, NULL, 0), b->err);
    /* byte by byte: fine up to `at`, the error exactly there */
    wstun__v2_rx_init(&rx);
    for (size_t k = 0; k < (size_t)n; k++) {
      int r = wstun__v2_rx_feed(&rx, msg + k, 1);
      if (k < b->at)
        CHECK_EQ_INT(r, 1);
      else if (k == b->at)
        CHECK_EQ_INT(r, b->err);
    }
    /* and fed only the bytes before it: no error yet */
    wstun__v2_rx_init(&rx);
    CHECK_EQ_INT(wstun__v2_rx_feed(&rx, msg, b->at), (int)b->at);
    CHECK(!rx.done);
    CHECK(strcmp(wstun__v2_errname(b->err), "?") != 0);
  }
}

/* ---- the encoder refuses what the decoder refuses ------------------------
 */

static void check_encode(wstun__v2_frame f, int want) {
  uint8_t out[WSTUN__V2_FRAME_HEAD_MAX + 1];
  out[WSTUN__V2_FRAME_HEAD_MAX] = 0xaa; /* never written */
  int r = wstun__v2_encode(&f, out);
  CHECK_EQ_INT(wstun__v2_check(&f), want < 0 ? want : 0);
  CHECK_EQ_INT(out[WSTUN__V2_FRAME_HEAD_MAX], 0xaa);
  if (want < 0) {
    CHECK_EQ_INT(r, want);
    return;
  }
  CHECK_EQ_INT(r, want);
  /* and it decodes back to the same frame */
  wstun__v2_rx rx;
  wstun__v2_rx_init(&rx);
  CHECK_EQ_INT(wstun__v2_rx_feed(&rx, out, (size_t)r), r);
  CHECK(rx.done);
  check_frame(&rx.frame, &f);
}

TEST(encode_edges) {
  const uint8_t H = WSTUN__V2_HEAD, D = WSTUN__V2_DATA, R = WSTUN__V2_RESET,
                W = WSTUN__V2_WINDOW, G = WSTUN__V2_GOAWAY,
                E = WSTUN__V2_FLAG_END;
  test_context("limits met");
  check_encode((wstun__v2_frame){H, 0, WSTUN__V2_MAX_HEAD, 1, 0, 0, 0}, 9);
  check_encode((wstun__v2_frame){H, E, 1, WSTUN__V2_ID_MAX, 0, 0, 0}, 9);
  check_encode((wstun__v2_frame){D, 0, WSTUN__V2_MAX_DATA, 2, 0, 0, 0}, 9);
  check_encode((wstun__v2_frame){D, E, 0, 1, 0, 0, 0}, 9);
  check_encode((wstun__v2_frame){D, 0, 1, 1, 0, 0, 0}, 9);
  check_encode((wstun__v2_frame){R, 0, 4, 1, 0xffffffffu, 0, 0}, 13);
  check_encode((wstun__v2_frame){W, 0, 4, 0, 0, WSTUN__V2_WINDOW_MAX, 0}, 13);
  check_encode((wstun__v2_frame){W, 0, 4, WSTUN__V2_ID_MAX, 0, 1, 0}, 13);
  check_encode((wstun__v2_frame){G, 0, 8, 0, 0xffffffffu, 0, 0}, 17);
  check_encode((wstun__v2_frame){G, 0, 8, 0, 0, 0, WSTUN__V2_ID_MAX}, 17);
  test_context("limits passed");
  check_encode((wstun__v2_frame){0, 0, 1, 1, 0, 0, 0}, WSTUN__V2_ETYPE);
  check_encode((wstun__v2_frame){6, 0, 1, 1, 0, 0, 0}, WSTUN__V2_ETYPE);
  check_encode((wstun__v2_frame){H, 2, 1, 1, 0, 0, 0}, WSTUN__V2_EFLAGS);
  check_encode((wstun__v2_frame){R, E, 4, 1, 0, 0, 0}, WSTUN__V2_EFLAGS);
  check_encode((wstun__v2_frame){H, 0, WSTUN__V2_MAX_HEAD + 1, 1, 0, 0, 0},
               WSTUN__V2_ELENGTH);
  check_encode((wstun__v2_frame){H, 0, 0, 1, 0, 0, 0}, WSTUN__V2_ELENGTH);
  check_encode((wstun__v2_frame){D, E, WSTUN__V2_MAX_DATA + 1, 1, 0, 0, 0},
               WSTUN__V2_ELENGTH);
  /* a length that would not fit the 24-bit field */
  check_encode((wstun__v2_frame){D, 0, 1u << 24, 1, 0, 0, 0},
               WSTUN__V2_ELENGTH);
  check_encode((wstun__v2_frame){D, 0, 0, 1, 0, 0, 0}, WSTUN__V2_ELENGTH);
  check_encode((wstun__v2_frame){R, 0, 0, 1, 0, 0, 0}, WSTUN__V2_ELENGTH);
  check_encode((wstun__v2_frame){G, 0, 4, 0, 0, 0, 0}, WSTUN__V2_ELENGTH);
  check_encode((wstun__v2_frame){D, 0, 1, 0x80000000u, 0, 0, 0},
               WSTUN__V2_ERESERVED);
  check_encode((wstun__v2_frame){D, 0, 1, 0, 0, 0, 0}, WSTUN__V2_ESTREAM);
  check_encode((wstun__v2_frame){G, 0, 8, 5, 0, 0, 0}, WSTUN__V2_ESTREAM);
  check_encode((wstun__v2_frame){W, 0, 4, 1, 0, 0, 0}, WSTUN__V2_EINCREMENT);
  check_encode((wstun__v2_frame){W, 0, 4, 1, 0, 0x80000000u, 0},
               WSTUN__V2_EINCREMENT);
  check_encode((wstun__v2_frame){G, 0, 8, 0, 0, 0, 0x80000000u},
               WSTUN__V2_ERESERVED);
}

TEST(encode_shorthands) {
  uint8_t out[WSTUN__V2_FRAME_HEAD_MAX], want[WSTUN__V2_FRAME_HEAD_MAX];
  CHECK_EQ_INT(wstun__v2_encode_reset(3, WSTUN__V2_CANCEL, out), 13);
  CHECK_EQ_INT(parse_hex(goldens[6].hex, want, sizeof(want)), 13);
  CHECK_MEM(out, want, 13);
  CHECK_EQ_INT(wstun__v2_encode_window(1, 0x80000, out), 13);
  CHECK_EQ_INT(parse_hex(goldens[4].hex, want, sizeof(want)), 13);
  CHECK_MEM(out, want, 13);
  CHECK_EQ_INT(wstun__v2_encode_goaway(3, WSTUN__V2_NO_ERROR, out), 17);
  CHECK_EQ_INT(parse_hex(goldens[7].hex, want, sizeof(want)), 17);
  CHECK_MEM(out, want, 17);
  CHECK_EQ_INT(wstun__v2_encode_reset(0, 0, out), WSTUN__V2_ESTREAM);
  CHECK_EQ_INT(wstun__v2_encode_window(1, 0, out), WSTUN__V2_EINCREMENT);
  CHECK_EQ_INT(wstun__v2_encode_goaway(0x80000000u, 0, out),
               WSTUN__V2_ERESERVED);
}

/* ---- flow control -------------------------------------------------------- */

TEST(credit_edges) {
  wstun__v2_credit c;
  wstun__v2_credit_init(&c, WSTUN__V2_STREAM_WINDOW);
  CHECK_EQ_INT(wstun__v2_credit_take(&c, 0), 0);
  CHECK_EQ_INT(wstun__v2_credit_take(&c, WSTUN__V2_STREAM_WINDOW + 1),
               WSTUN__V2_EINVAL);
  CHECK_EQ_INT(c.avail, WSTUN__V2_STREAM_WINDOW);
  CHECK_EQ_INT(wstun__v2_credit_take(&c, WSTUN__V2_STREAM_WINDOW), 0);
  CHECK_EQ_INT(c.avail, 0);
  CHECK_EQ_INT(wstun__v2_credit_take(&c, 1), WSTUN__V2_EINVAL);
  CHECK_EQ_INT(wstun__v2_credit_update(&c, 0), WSTUN__V2_EINCREMENT);
  CHECK_EQ_INT(wstun__v2_credit_update(&c, 0x80000000u), WSTUN__V2_EINCREMENT);
  CHECK_EQ_INT(wstun__v2_credit_update(&c, WSTUN__V2_WINDOW_MAX), 0);
  CHECK_EQ_INT(c.avail, WSTUN__V2_WINDOW_MAX);
  /* one more byte would overflow the 31-bit window */
  CHECK_EQ_INT(wstun__v2_credit_update(&c, 1), WSTUN__V2_EFLOW);
  CHECK_EQ_INT(c.avail, WSTUN__V2_WINDOW_MAX);
  CHECK_EQ_INT(wstun__v2_credit_take(&c, 10), 0);
  CHECK_EQ_INT(wstun__v2_credit_update(&c, 11), WSTUN__V2_EFLOW);
  CHECK_EQ_INT(wstun__v2_credit_update(&c, 10), 0);
  CHECK_EQ_INT(c.avail, WSTUN__V2_WINDOW_MAX);
}

static void check_sum(const wstun__v2_window *w) {
  CHECK_EQ_INT((uint64_t)w->granted + w->held + w->released, w->size);
}

TEST(window_edges) {
  wstun__v2_window w;
  CHECK_EQ_INT(wstun__v2_window_init(&w, 0), WSTUN__V2_EINVAL);
  CHECK_EQ_INT(wstun__v2_window_init(&w, 0x80000000u), WSTUN__V2_EINVAL);
  CHECK_EQ_INT(wstun__v2_window_init(&w, 100), 0);
  check_sum(&w);
  CHECK_EQ_INT(wstun__v2_window_update_due(&w), 0);
  /* the peer may send exactly its credit, not a byte more */
  CHECK_EQ_INT(wstun__v2_window_recv(&w, 101), WSTUN__V2_EFLOW);
  CHECK_EQ_INT(w.granted, 100);
  CHECK_EQ_INT(wstun__v2_window_recv(&w, 0), 0);
  CHECK_EQ_INT(wstun__v2_window_recv(&w, 60), 0);
  CHECK_EQ_INT(wstun__v2_window_recv(&w, 41), WSTUN__V2_EFLOW);
  CHECK_EQ_INT(wstun__v2_window_recv(&w, 40), 0);
  CHECK_EQ_INT(w.granted, 0);
  CHECK_EQ_INT(wstun__v2_window_recv(&w, 1), WSTUN__V2_EFLOW);
  check_sum(&w);
  /* releasing more than is held is a bug of the caller */
  CHECK_EQ_INT(wstun__v2_window_release(&w, 101), WSTUN__V2_EINVAL);
  CHECK_EQ_INT(wstun__v2_window_release(&w, 49), 0);
  check_sum(&w);
  /* under half: nothing due yet; at half exactly: all of it */
  CHECK_EQ_INT(wstun__v2_window_update_due(&w), 0);
  CHECK_EQ_INT(wstun__v2_window_release(&w, 1), 0);
  CHECK_EQ_INT(wstun__v2_window_update_due(&w), 50);
  CHECK_EQ_INT(wstun__v2_window_sent(&w, 0), WSTUN__V2_EINVAL);
  CHECK_EQ_INT(wstun__v2_window_sent(&w, 51), WSTUN__V2_EINVAL);
  CHECK_EQ_INT(wstun__v2_window_sent(&w, 50), 0);
  CHECK_EQ_INT(w.granted, 50);
  CHECK_EQ_INT(w.held, 50);
  CHECK_EQ_INT(wstun__v2_window_update_due(&w), 0);
  check_sum(&w);
  /* growing: the difference is due at once if it reaches half */
  CHECK_EQ_INT(wstun__v2_window_grow(&w, 99), WSTUN__V2_EINVAL);
  CHECK_EQ_INT(wstun__v2_window_grow(&w, 0x80000000u), WSTUN__V2_EINVAL);
  CHECK_EQ_INT(wstun__v2_window_grow(&w, 400), 0);
  check_sum(&w);
  CHECK_EQ_INT(wstun__v2_window_update_due(&w), 300);
  CHECK_EQ_INT(wstun__v2_window_sent(&w, 300), 0);
  CHECK_EQ_INT(w.granted, 350);
  check_sum(&w);
  /* the largest window works to the last byte */
  CHECK_EQ_INT(wstun__v2_window_init(&w, WSTUN__V2_WINDOW_MAX), 0);
  CHECK_EQ_INT(wstun__v2_window_recv(&w, WSTUN__V2_WINDOW_MAX), 0);
  CHECK_EQ_INT(wstun__v2_window_release(&w, WSTUN__V2_WINDOW_MAX), 0);
  CHECK_EQ_INT(wstun__v2_window_update_due(&w), WSTUN__V2_WINDOW_MAX);
  CHECK_EQ_INT(wstun__v2_window_sent(&w, WSTUN__V2_WINDOW_MAX), 0);
  CHECK_EQ_INT(wstun__v2_window_grow(&w, WSTUN__V2_WINDOW_MAX), 0);
  check_sum(&w);
  /* a window of 1 byte gives it back at once */
  CHECK_EQ_INT(wstun__v2_window_init(&w, 1), 0);
  CHECK_EQ_INT(wstun__v2_window_recv(&w, 1), 0);
  CHECK_EQ_INT(wstun__v2_window_update_due(&w), 0);
  CHECK_EQ_INT(wstun__v2_window_release(&w, 1), 0);
  CHECK_EQ_INT(wstun__v2_window_update_due(&w), 1);
}

/* The two sides of one stream in lockstep, a stream of odd reads: the
 * sender never exceeds its credit, the receiver never sees a violation,
 * and a consumer that keeps reading never leaves the sender stuck. */
TEST(window_both_sides_never_stall) {
  wstun__v2_credit c;
  wstun__v2_window w;
  wstun__v2_credit_init(&c, WSTUN__V2_STREAM_WINDOW);
  REQUIRE(wstun__v2_window_init(&w, WSTUN__V2_STREAM_WINDOW) == 0);
  uint64_t sent = 0, updates = 0;
  uint32_t seed = 12345;
  while (sent < 64u * WSTUN__V2_STREAM_WINDOW) {
    uint32_t n =
        c.avail < WSTUN__V2_DATA_CHUNK ? c.avail : WSTUN__V2_DATA_CHUNK;
    REQUIRE(n > 0); /* stuck: no credit although everything was read */
    REQUIRE(wstun__v2_credit_take(&c, n) == 0);
    REQUIRE(wstun__v2_window_recv(&w, n) == 0);
    sent += n;
    while (w.held > 0) {
      seed = seed * 1103515245u + 12345u;
      uint32_t r = 1 + (seed >> 8) % 20000;
      REQUIRE(wstun__v2_window_release(&w, r < w.held ? r : w.held) == 0);
      uint32_t due = wstun__v2_window_update_due(&w);
      if (due) {
        REQUIRE(wstun__v2_window_sent(&w, due) == 0);
        REQUIRE(wstun__v2_credit_update(&c, due) == 0);
        updates++;
      }
    }
    CHECK_EQ_INT(c.avail, w.granted);
  }
  /* about one update per half window */
  CHECK(updates >= 64 * 2 - 2 && updates <= 64 * 2 + 2);
}

TEST(names) {
  CHECK_EQ_STR(wstun__v2_typename(WSTUN__V2_HEAD), "HEAD");
  CHECK_EQ_STR(wstun__v2_typename(WSTUN__V2_GOAWAY), "GOAWAY");
  CHECK_EQ_STR(wstun__v2_typename(0), "?");
  CHECK_EQ_STR(wstun__v2_typename(6), "?");
  CHECK_EQ_STR(wstun__v2_typename(-1), "?");
  CHECK_EQ_STR(wstun__v2_codename(WSTUN__V2_CANCEL), "CANCEL");
  CHECK_EQ_STR(wstun__v2_codename(WSTUN__V2_TIMEOUT), "TIMEOUT");
  CHECK_EQ_STR(wstun__v2_codename(7), "?");
  CHECK_EQ_STR(wstun__v2_errname(WSTUN__V2_EFLOW), "EFLOW");
  CHECK_EQ_STR(wstun__v2_errname(-99), "?");
  CHECK_EQ_STR(WSTUN__V2_SUBPROTOCOL, "wstun.v2");
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(golden_frames_encode_as_the_page_shows),
      T(golden_continued_head_headers),
      T(golden_frames_decode_whole_split_and_bytewise),
      T(empty_feed_and_partial_header),
      T(every_error_at_its_byte_whole_and_bytewise),
      T(encode_edges),
      T(encode_shorthands),
      T(credit_edges),
      T(window_edges),
      T(window_both_sides_never_stall),
      T(names),
  };
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
