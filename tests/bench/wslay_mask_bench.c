/* How fast wslay masks and unmasks: one 256 MiB masked frame sent with
 * wslay_frame_send into a memory sink, then parsed with wslay_frame_recv,
 * with whichever libwslay.so.1 the loader finds (the system's, or a
 * patched one by LD_LIBRARY_PATH). Prints MB/s for each direction.
 *
 *   cc -O2 wslay_mask_bench.c -lwslay -o mask_bench && ./mask_bench
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wslay/wslay.h>

#define CHUNK (64 * 1024)
#define TOTAL (256ull * 1024 * 1024)

static uint8_t *wire; /* the frame as sent: header and masked payload */
static size_t wire_len, wire_off;

static ssize_t on_send(const uint8_t *data, size_t len, int flags, void *ud) {
  (void)flags;
  (void)ud;
  memcpy(wire + wire_len, data, len);
  wire_len += len;
  return (ssize_t)len;
}

static ssize_t on_recv(uint8_t *buf, size_t len, int flags, void *ud) {
  (void)flags;
  (void)ud;
  size_t n = wire_len - wire_off < len ? wire_len - wire_off : len;
  memcpy(buf, wire + wire_off, n);
  wire_off += n;
  return n ? (ssize_t)n : WSLAY_ERR_WOULDBLOCK;
}

static int on_genmask(uint8_t *buf, size_t len, void *ud) {
  (void)ud;
  for (size_t i = 0; i < len; i++)
    buf[i] = (uint8_t)(0x5a + 17 * i);
  return 0;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(void) {
  static uint8_t chunk[CHUNK];
  for (size_t i = 0; i < CHUNK; i++)
    chunk[i] = (uint8_t)(i * 31 + 7);
  wire = malloc(TOTAL + 64);
  if (wire == NULL)
    return 1;
  memset(wire, 0, TOTAL + 64); /* fault its pages in before the clock runs */
  struct wslay_frame_callbacks cbs = {on_send, on_recv, on_genmask};
  wslay_frame_context_ptr ctx;
  if (wslay_frame_context_init(&ctx, &cbs, NULL) != 0)
    return 1;

  double t0 = now_s();
  struct wslay_frame_iocb io = {.fin = 1,
                                .opcode = WSLAY_BINARY_FRAME,
                                .mask = 1,
                                .payload_length = TOTAL};
  for (uint64_t sent = 0; sent < TOTAL;) {
    io.data = chunk;
    io.data_length = CHUNK;
    ssize_t r = wslay_frame_send(ctx, &io);
    if (r < 0)
      return 2;
    sent += (uint64_t)r;
  }
  double t1 = now_s();

  uint64_t got = 0, bad = 0;
  while (got < TOTAL) {
    struct wslay_frame_iocb in;
    ssize_t r = wslay_frame_recv(ctx, &in);
    if (r < 0)
      return 3;
    for (size_t i = 0; i < in.data_length; i += 4093) /* spot checks */
      bad += in.data[i] != chunk[(got + i) % CHUNK];
    got += in.data_length;
  }
  double t2 = now_s();
  wslay_frame_context_free(ctx);
  printf("mask (send) %.0f MB/s, unmask (recv) %.0f MB/s, %s\n",
         TOTAL / 1e6 / (t1 - t0), TOTAL / 1e6 / (t2 - t1),
         bad ? "PAYLOAD WRONG" : "payload intact");
  free(wire);
  return bad ? 4 : 0;
}
