/* Tunnel message id prefix ("%04x", no separator: see docs/PROTOCOL.md):
 * golden bytes out, and the incremental decoder fed whole and one byte at a
 * time. */
#include "wstun_proto.h"

#include <string.h>

#include "test.h"

static void check_prefix(uint16_t id, const char *want) {
  uint8_t out[WSTUN__PROTO_PREFIX_LEN + 1];
  memset(out, 0xee, sizeof(out));
  wstun__proto_write_prefix(id, out);
  CHECK_MEM(out, want, WSTUN__PROTO_PREFIX_LEN);
  CHECK_EQ_INT(out[WSTUN__PROTO_PREFIX_LEN], 0xee); /* wrote exactly 4 */
}

TEST(prefix_golden_bytes) {
  CHECK_EQ_INT(WSTUN__PROTO_PREFIX_LEN, 4);
  check_prefix(0, "0000");
  check_prefix(1, "0001");
  check_prefix(0xabc, "0abc");
  check_prefix(31999, "7cff");
  check_prefix(0x7fff, "7fff");
  check_prefix(0xffff, "ffff");
  check_prefix(0x1234, "1234");
  check_prefix(0xa0f0, "a0f0");
}

/* The golden bytes of docs/PROTOCOL.md: a request message with id 1, as
 * the Go server writes it and the Go client reads it. */
/* The hex block under the "golden:" marker of docs/PROTOCOL.md, parsed
 * into out; returns the byte count, or -1 if the file or block is missing. */
static int doc_golden_bytes(uint8_t *out, size_t cap) {
#ifdef WSTUN_SOURCE_DIR
  FILE *f = fopen(WSTUN_SOURCE_DIR "/docs/PROTOCOL.md", "r");
  if (f == NULL)
    return -1;
  char line[512];
  int state = 0, n = -1; /* 0: before the marker, 1: before ```, 2: in */
  while (n < 0 && fgets(line, sizeof(line), f)) {
    if (state == 0 && strstr(line, "<!-- golden:") &&
        strstr(line, "message_golden_bytes"))
      state = 1;
    else if (state == 1 && strncmp(line, "```", 3) == 0)
      state = 2;
    else if (state == 2) {
      n = 0;
      for (char *p = line; *p && *p != '\n';) {
        unsigned v;
        int used;
        if (sscanf(p, " %2x%n", &v, &used) != 1 || (size_t)n == cap) {
          n = -1;
          break;
        }
        out[n++] = (uint8_t)v;
        p += used;
        while (*p == ' ')
          p++;
      }
      if (n < 0)
        break;
    }
  }
  fclose(f);
  return n;
#else
  (void)out;
  (void)cap;
  return -1;
#endif
}

TEST(message_golden_bytes) {
  static const uint8_t want[] = {0x30, 0x30, 0x30, 0x31, 0x47, 0x45, 0x54,
                                 0x20, 0x2f, 0x20, 0x48, 0x54, 0x54, 0x50,
                                 0x2f, 0x31, 0x2e, 0x31, 0x0d, 0x0a};
  uint8_t msg[sizeof(want)];
  wstun__proto_write_prefix(1, msg);
  memcpy(msg + WSTUN__PROTO_PREFIX_LEN, "GET / HTTP/1.1\r\n", 16);
  CHECK_MEM(msg, want, sizeof(want));
  /* the page shows exactly these bytes */
  uint8_t doc[64];
  int n = doc_golden_bytes(doc, sizeof(doc));
  CHECK_EQ_INT(n, (int)sizeof(want));
  if (n == (int)sizeof(want))
    CHECK_MEM(doc, want, sizeof(want));
  /* and a response message read back: the id, then "HTTP/1.1" at byte 4 */
  static const char resp[] = "002aHTTP/1.1 200 OK\r\n";
  wstun__proto_prefix p;
  wstun__proto_prefix_init(&p);
  CHECK_EQ_INT(
      wstun__proto_prefix_feed(&p, (const uint8_t *)resp, sizeof(resp) - 1), 4);
  CHECK_EQ_INT(p.id, 0x2a);
  CHECK(memcmp(resp + 4, "HTTP/1.1 ", 9) == 0);
}

/* Whole: one feed of the prefix plus trailing bytes takes exactly 4. */
static void decode_whole(const char *s, size_t len, int want_id) {
  wstun__proto_prefix p;
  wstun__proto_prefix_init(&p);
  int n = wstun__proto_prefix_feed(&p, (const uint8_t *)s, len);
  CHECK_EQ_INT(n, 4);
  CHECK(wstun__proto_prefix_done(&p));
  CHECK_EQ_INT(p.id, want_id);
  /* once done it takes nothing more */
  CHECK_EQ_INT(wstun__proto_prefix_feed(&p, (const uint8_t *)s, len), 0);
  CHECK_EQ_INT(p.id, want_id);
}

static void decode_bytes(const char *s, size_t len, int want_id) {
  wstun__proto_prefix p;
  wstun__proto_prefix_init(&p);
  for (size_t i = 0; i < len; i++) {
    int n = wstun__proto_prefix_feed(&p, (const uint8_t *)s + i, 1);
    CHECK_EQ_INT(n, i < 4 ? 1 : 0);
    CHECK_EQ_INT(wstun__proto_prefix_done(&p), i >= 3);
    CHECK_EQ_INT(p.got, i < 4 ? i + 1 : 4);
  }
  CHECK_EQ_INT(p.id, want_id);
}

TEST(decode_whole_and_bytewise) {
  static const struct {
    const char *s;
    int id;
  } cases[] = {
      {"0000GET / HTTP/1.1\r\n", 0},
      {"0001HTTP/1.1 200 OK\r\n", 1},
      {"0abcx", 0xabc},
      {"7cff", 31999},
      {"ffff ", 0xffff}, /* what follows the id is the message's business */
      {"FFFFz", 0xffff}, /* upper case is accepted */
      {"0AbCz", 0xabc},
      {"00001", 0}, /* a fifth hex digit belongs to the message */
      {"Beef\x00", 0xbeef},
  };
  for (size_t i = 0; i < TEST_COUNT(cases); i++) {
    size_t len = strlen(cases[i].s);
    if (i == TEST_COUNT(cases) - 1)
      len = 5; /* with the NUL after the id */
    test_context("case %zu \"%s\"", i, cases[i].s);
    decode_whole(cases[i].s, len, cases[i].id);
    decode_bytes(cases[i].s, len, cases[i].id);
  }
}

TEST(decode_in_two_pieces) {
  const char *s = "c0deHTTP";
  for (size_t k = 0; k <= 4; k++) {
    test_context("split at %zu", k);
    wstun__proto_prefix p;
    wstun__proto_prefix_init(&p);
    CHECK_EQ_INT(wstun__proto_prefix_feed(&p, (const uint8_t *)s, k), k);
    CHECK_EQ_INT(wstun__proto_prefix_done(&p), k == 4);
    int n = wstun__proto_prefix_feed(&p, (const uint8_t *)s + k, 8 - k);
    CHECK_EQ_INT(n, 4 - k);
    CHECK(wstun__proto_prefix_done(&p));
    CHECK_EQ_INT(p.id, 0xc0de);
  }
}

TEST(decode_empty_feed) {
  wstun__proto_prefix p;
  wstun__proto_prefix_init(&p);
  CHECK_EQ_INT(wstun__proto_prefix_feed(&p, (const uint8_t *)"", 0), 0);
  CHECK_EQ_INT(p.got, 0);
  CHECK(!wstun__proto_prefix_done(&p));
}

/* bad: the input, and the index of the byte that must be refused */
TEST(decode_rejects) {
  static const struct {
    const char *s;
    size_t bad_at;
  } cases[] = {
      {"00g0", 2}, {" 000", 0}, {"-001", 0}, {"000 1", 3},
      {"0x01", 1}, {"00G0", 2}, {"0:00", 1}, {"0/00", 1},
      {"0`00", 1}, {"0@00", 1}, {"+001", 0}, {"abc\r", 3},
  };
  for (size_t i = 0; i < TEST_COUNT(cases); i++) {
    const char *s = cases[i].s;
    size_t len = strlen(s);
    test_context("case \"%s\"", s);
    /* whole */
    wstun__proto_prefix p;
    wstun__proto_prefix_init(&p);
    CHECK_EQ_INT(wstun__proto_prefix_feed(&p, (const uint8_t *)s, len), -1);
    CHECK(!wstun__proto_prefix_done(&p));
    /* byte by byte: accepted up to bad_at, refused there */
    wstun__proto_prefix_init(&p);
    for (size_t j = 0; j <= cases[i].bad_at; j++) {
      int n = wstun__proto_prefix_feed(&p, (const uint8_t *)s + j, 1);
      CHECK_EQ_INT(n, j < cases[i].bad_at ? 1 : -1);
    }
    CHECK(!wstun__proto_prefix_done(&p));
  }
  /* a NUL in the digits */
  wstun__proto_prefix p;
  wstun__proto_prefix_init(&p);
  CHECK_EQ_INT(wstun__proto_prefix_feed(&p, (const uint8_t *)"0\0001", 4), -1);
}

/* v1 through the interface the tunnel uses: the head it writes is the
 * golden prefix, and the decoder, fed a head and the message after it in
 * any split, one byte at a time included, stops at the end of the head. */
TEST(v1_interface_head_and_bytewise_decode) {
  const wstun__proto *v1 = &wstun__proto_v1;
  CHECK(strcmp(v1->name, "v1") == 0);
  uint8_t head[WSTUN__PROTO_HEAD_MAX + 1];
  memset(head, 0xee, sizeof(head));
  CHECK_EQ_INT(v1->write_head(0x7a2c, head), 4);
  CHECK(memcmp(head, "7a2c", 4) == 0);
  CHECK_EQ_INT(head[4], 0xee);
  static const char msg[] = "7a2cHTTP/1.1 200 OK\r\n\r\n";
  for (size_t cut = 1; cut <= sizeof(msg) - 1; cut++) {
    wstun__proto_rx rx;
    memset(&rx, 0x55, sizeof(rx));
    v1->rx_begin(&rx);
    CHECK(!rx.done);
    size_t off = 0;
    while (!rx.done && off < sizeof(msg) - 1) {
      size_t n = cut < sizeof(msg) - 1 - off ? cut : sizeof(msg) - 1 - off;
      int used = v1->rx_feed(&rx, (const uint8_t *)msg + off, n);
      CHECK(used >= 0 && (size_t)used <= n);
      off += (size_t)used;
    }
    CHECK(rx.done);
    CHECK_EQ_INT(off, 4);
    CHECK_EQ_INT(rx.id, 0x7a2c);
  }
  /* not a head; and a new message starts clean */
  wstun__proto_rx rx;
  v1->rx_begin(&rx);
  CHECK_EQ_INT(v1->rx_feed(&rx, (const uint8_t *)"00", 2), 2);
  CHECK_EQ_INT(v1->rx_feed(&rx, (const uint8_t *)" 1", 2), -1);
  CHECK(!rx.done);
  v1->rx_begin(&rx);
  CHECK_EQ_INT(v1->rx_feed(&rx, (const uint8_t *)"0001GET", 7), 4);
  CHECK(rx.done);
  CHECK_EQ_INT(rx.id, 1);
}

TEST(every_id_round_trips) {
  int bad_whole = 0, bad_bytes = 0;
  for (uint32_t id = 0; id <= 0xffff; id++) {
    uint8_t out[WSTUN__PROTO_PREFIX_LEN];
    wstun__proto_write_prefix((uint16_t)id, out);
    char want[8];
    snprintf(want, sizeof(want), "%04x", (unsigned)id);
    if (memcmp(out, want, 4) != 0)
      bad_whole++;
    wstun__proto_prefix p;
    wstun__proto_prefix_init(&p);
    if (wstun__proto_prefix_feed(&p, out, 4) != 4 || p.id != id)
      bad_whole++;
    wstun__proto_prefix_init(&p);
    for (size_t j = 0; j < 4; j++)
      if (wstun__proto_prefix_feed(&p, out + j, 1) != 1)
        bad_bytes++;
    if (!wstun__proto_prefix_done(&p) || p.id != id)
      bad_bytes++;
  }
  CHECK_EQ_INT(bad_whole, 0);
  CHECK_EQ_INT(bad_bytes, 0);
}

/* The server's id counter (wstun_server.c next_id) steps with
 * wstun__proto_next_id: from any start, more than two full wraps never
 * yield an id the Go client's int16 cannot hold. */
TEST(ids_wrap_below_0x8000) {
  CHECK_EQ_INT(wstun__proto_next_id(0), 1); /* Go's first id is 0001 */
  CHECK_EQ_INT(wstun__proto_next_id(31998), 31999);
  CHECK_EQ_INT(wstun__proto_next_id(31999), 0);
  static const uint16_t starts[] = {0, 31999, 0x7fff, 0x8000, 0xffff};
  for (size_t s = 0; s < TEST_COUNT(starts); s++) {
    uint16_t id = starts[s];
    int over = 0, wraps = 0;
    for (int i = 0; i < 70000; i++) {
      uint16_t next = wstun__proto_next_id(id);
      over += next > WSTUN__PROTO_ID_MAX;
      wraps += next < id;
      id = next;
    }
    CHECK_EQ_INT(over, 0);
    CHECK(wraps >= 2);
  }
  uint8_t out[WSTUN__PROTO_PREFIX_LEN];
  wstun__proto_write_prefix(31999, out);
  CHECK_MEM(out, "7cff", 4);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(prefix_golden_bytes),
      T(message_golden_bytes),
      T(decode_whole_and_bytewise),
      T(decode_in_two_pieces),
      T(decode_empty_feed),
      T(decode_rejects),
      T(v1_interface_head_and_bytewise_decode),
      T(every_id_round_trips),
      T(ids_wrap_below_0x8000),
  };
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
