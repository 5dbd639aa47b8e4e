/* The growable FIFO byte buffer: append at the end, consume from the
 * front, compact only when growing. */
#include "wstun_buf.h"

#include "test.h"
#include "wstun/wstun.h"

TEST(init_is_empty) {
  wstun__buf b = WSTUN__BUF_INIT;
  CHECK(b.base == NULL);
  CHECK_EQ_INT(wstun__buf_size(&b), 0);
  wstun__buf c;
  memset(&c, 0x77, sizeof(c));
  wstun__buf_init(&c);
  CHECK(c.base == NULL);
  CHECK_EQ_INT(c.off, 0);
  CHECK_EQ_INT(c.len, 0);
  CHECK_EQ_INT(c.cap, 0);
  /* empty appends allocate nothing */
  CHECK_EQ_INT(wstun__buf_append(&c, "", 0), 0);
  CHECK_EQ_INT(wstun__buf_append_str(&c, ""), 0);
  CHECK(c.base == NULL);
  wstun__buf_free(&c);
  wstun__buf_free(&c); /* twice is fine */
  CHECK(c.base == NULL);
}

TEST(append_and_consume) {
  wstun__buf b;
  wstun__buf_init(&b);
  CHECK_EQ_INT(wstun__buf_append(&b, "hello", 5), 0);
  CHECK_EQ_INT(wstun__buf_append_str(&b, " world"), 0);
  CHECK_BYTES_STR(wstun__buf_data(&b), wstun__buf_size(&b), "hello world");
  CHECK_EQ_INT(b.cap, 256); /* first allocation */
  wstun__buf_consume(&b, 6);
  CHECK_BYTES_STR(wstun__buf_data(&b), wstun__buf_size(&b), "world");
  CHECK_EQ_INT(b.off, 6);
  wstun__buf_consume(&b, 0);
  CHECK_EQ_INT(wstun__buf_size(&b), 5);
  CHECK_EQ_INT(wstun__buf_append(&b, "!", 1), 0);
  CHECK_BYTES_STR(wstun__buf_data(&b), wstun__buf_size(&b), "world!");
  /* consuming everything rewinds to the start, keeping the memory */
  uint8_t *base = b.base;
  wstun__buf_consume(&b, 6);
  CHECK_EQ_INT(wstun__buf_size(&b), 0);
  CHECK_EQ_INT(b.off, 0);
  CHECK_EQ_INT(b.len, 0);
  CHECK(b.base == base);
  CHECK_EQ_INT(b.cap, 256);
  CHECK_EQ_INT(wstun__buf_append(&b, "x", 1), 0);
  CHECK(wstun__buf_data(&b) == base);
  wstun__buf_reset(&b);
  CHECK_EQ_INT(wstun__buf_size(&b), 0);
  CHECK(b.base == base);
  wstun__buf_free(&b);
  CHECK(b.base == NULL);
  CHECK_EQ_INT(b.cap, 0);
}

TEST(reserve_compacts_before_growing) {
  wstun__buf b;
  wstun__buf_init(&b);
  uint8_t data[256];
  for (size_t i = 0; i < sizeof(data); i++)
    data[i] = (uint8_t)i;
  CHECK_EQ_INT(wstun__buf_append(&b, data, 200), 0);
  uint8_t *base = b.base;
  wstun__buf_consume(&b, 150);
  /* 56 bytes free at the end, 150 dead at the front: room for 100 is made
   * by moving the 50 live bytes down, without a new allocation */
  CHECK_EQ_INT(wstun__buf_reserve(&b, 100), 0);
  CHECK(b.base == base);
  CHECK_EQ_INT(b.cap, 256);
  CHECK_EQ_INT(b.off, 0);
  CHECK_EQ_INT(b.len, 50);
  CHECK_MEM(wstun__buf_data(&b), data + 150, 50);
  /* no compaction when the tail has room */
  wstun__buf_consume(&b, 10);
  CHECK_EQ_INT(wstun__buf_reserve(&b, 206), 0);
  CHECK_EQ_INT(b.off, 10);
  CHECK(b.base == base);
  CHECK_MEM(wstun__buf_data(&b), data + 160, 40);
  /* growing doubles until the live bytes plus n fit, and drops the dead
   * front */
  CHECK_EQ_INT(wstun__buf_reserve(&b, 1000), 0);
  CHECK_EQ_INT(b.cap, 2048); /* 1024 - 40 live < 1000 */
  CHECK_EQ_INT(b.off, 0);
  CHECK_EQ_INT(b.len, 40);
  CHECK_MEM(wstun__buf_data(&b), data + 160, 40);
  CHECK(b.cap - b.len >= 1000);
  /* reserve does not change the contents or the size */
  CHECK_EQ_INT(wstun__buf_size(&b), 40);
  wstun__buf_free(&b);
}

TEST(reserve_growth_sizes) {
  wstun__buf b;
  wstun__buf_init(&b);
  CHECK_EQ_INT(wstun__buf_reserve(&b, 0), 0);
  CHECK(b.base == NULL); /* nothing needed, nothing allocated */
  CHECK_EQ_INT(wstun__buf_reserve(&b, 1), 0);
  CHECK_EQ_INT(b.cap, 256);
  CHECK_EQ_INT(wstun__buf_reserve(&b, 256), 0);
  CHECK_EQ_INT(b.cap, 256);
  CHECK_EQ_INT(wstun__buf_reserve(&b, 257), 0);
  CHECK_EQ_INT(b.cap, 512);
  wstun__buf_free(&b);
  wstun__buf_init(&b);
  CHECK_EQ_INT(wstun__buf_reserve(&b, 1024), 0);
  CHECK_EQ_INT(b.cap, 1024);
  wstun__buf_free(&b);
  /* absurd sizes fail cleanly rather than wrapping */
  wstun__buf_init(&b);
  CHECK_EQ_INT(wstun__buf_append(&b, "abc", 3), 0);
  CHECK_EQ_INT(wstun__buf_reserve(&b, SIZE_MAX - 2), WSTUN_ENOMEM);
  CHECK_EQ_INT(wstun__buf_reserve(&b, SIZE_MAX), WSTUN_ENOMEM);
  CHECK_BYTES_STR(wstun__buf_data(&b), wstun__buf_size(&b), "abc");
  wstun__buf_free(&b);
}

TEST(many_appends_keep_order) {
  /* FIFO use: append 7 bytes, consume 5, many times; the contents stay
   * exact across compactions and growths */
  wstun__buf b;
  wstun__buf_init(&b);
  uint32_t next_in = 0, next_out = 0;
  int bad = 0;
  for (int round = 0; round < 20000; round++) {
    uint8_t chunk[7];
    for (size_t i = 0; i < sizeof(chunk); i++)
      chunk[i] = (uint8_t)(next_in++ * 31u);
    if (wstun__buf_append(&b, chunk, sizeof(chunk)) != 0)
      bad++;
    size_t take = wstun__buf_size(&b) < 5 ? wstun__buf_size(&b) : 5;
    for (size_t i = 0; i < take; i++)
      if (wstun__buf_data(&b)[i] != (uint8_t)(next_out++ * 31u))
        bad++;
    wstun__buf_consume(&b, take);
  }
  CHECK_EQ_INT(bad, 0);
  CHECK_EQ_INT(wstun__buf_size(&b), 20000 * 2);
  /* live data is 40000 bytes: the buffer is not much bigger than that */
  CHECK(b.cap <= 65536);
  wstun__buf_free(&b);
}

TEST(appendf) {
  wstun__buf b;
  wstun__buf_init(&b);
  CHECK_EQ_INT(wstun__buf_appendf(&b, "%d-%s-%04x", 42, "x", 0xab), 0);
  CHECK_BYTES_STR(wstun__buf_data(&b), wstun__buf_size(&b), "42-x-00ab");
  /* the NUL vsnprintf writes is not part of the data */
  CHECK_EQ_INT(wstun__buf_size(&b), 9);
  CHECK_EQ_INT(wstun__buf_appendf(&b, "%s", ""), 0);
  CHECK_EQ_INT(wstun__buf_size(&b), 9);
  CHECK_EQ_INT(wstun__buf_appendf(&b, "|%zu|", (size_t)123456789), 0);
  CHECK_BYTES_STR(wstun__buf_data(&b), wstun__buf_size(&b),
                  "42-x-00ab|123456789|");
  /* after consumed bytes and across a growth */
  wstun__buf_consume(&b, 5);
  char big[1000];
  memset(big, 'q', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  CHECK_EQ_INT(wstun__buf_appendf(&b, "<%s>", big), 0);
  CHECK_EQ_INT(wstun__buf_size(&b), 15 + 1001);
  CHECK_MEM(wstun__buf_data(&b), "00ab|123456789|<qqq", 19);
  CHECK_EQ_INT(wstun__buf_data(&b)[wstun__buf_size(&b) - 1], '>');
  CHECK_EQ_INT(wstun__buf_data(&b)[wstun__buf_size(&b) - 2], 'q');
  /* exactly filling the capacity: the NUL needs room too */
  wstun__buf_free(&b);
  wstun__buf_init(&b);
  char s255[256];
  memset(s255, 'a', 255);
  s255[255] = '\0';
  CHECK_EQ_INT(wstun__buf_appendf(&b, "%s", s255), 0);
  CHECK_EQ_INT(wstun__buf_size(&b), 255);
  CHECK_EQ_INT(b.cap, 256);
  CHECK_EQ_INT(wstun__buf_appendf(&b, "%c", 'b'), 0);
  CHECK_EQ_INT(wstun__buf_size(&b), 256);
  CHECK_EQ_INT(wstun__buf_data(&b)[255], 'b');
  CHECK_EQ_INT(wstun__buf_data(&b)[254], 'a');
  wstun__buf_free(&b);
}

int main(int argc, char **argv) {
  static const test_case tests[] = {
      T(init_is_empty),
      T(append_and_consume),
      T(reserve_compacts_before_growing),
      T(reserve_growth_sizes),
      T(many_appends_keep_order),
      T(appendf),
  };
  return test_main(tests, TEST_COUNT(tests), argc, argv);
}
