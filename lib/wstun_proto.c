/* The tunnel message formats (see wstun_proto.h): v1's id prefix, its
 * encoder and incremental decoder, and v1 as a wstun__proto. */
#include "wstun_proto.h"

#include "wstun_v2.h"

void wstun__proto_write_prefix(uint16_t id,
                               uint8_t out[WSTUN__PROTO_PREFIX_LEN]) {
  static const char hex[] = "0123456789abcdef";
  out[0] = (uint8_t)hex[(id >> 12) & 15];
  out[1] = (uint8_t)hex[(id >> 8) & 15];
  out[2] = (uint8_t)hex[(id >> 4) & 15];
  out[3] = (uint8_t)hex[id & 15];
}

void wstun__proto_prefix_init(wstun__proto_prefix *p) {
  p->got = 0;
  p->id = 0;
}

int wstun__proto_prefix_feed(wstun__proto_prefix *p, const uint8_t *data,
                             size_t len) {
  size_t i = 0;
  while (i < len && p->got < WSTUN__PROTO_PREFIX_LEN) {
    uint8_t c = data[i++];
    int v;
    if (c >= '0' && c <= '9')
      v = c - '0';
    else if (c >= 'a' && c <= 'f')
      v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      v = c - 'A' + 10;
    else
      return -1;
    p->id = (uint16_t)((p->id << 4) | v);
    p->got++;
  }
  return (int)i;
}

/* ---- v1 as a wstun__proto ------------------------------------------------ */

static size_t v1_write_head(uint16_t id, uint8_t *out) {
  wstun__proto_write_prefix(id, out);
  return WSTUN__PROTO_PREFIX_LEN;
}

static void v1_rx_begin(wstun__proto_rx *rx) {
  rx->got = 0;
  rx->done = 0;
  rx->id = 0;
}

static int v1_rx_feed(wstun__proto_rx *rx, const uint8_t *data, size_t len) {
  wstun__proto_prefix p = {rx->got, rx->id};
  int used = wstun__proto_prefix_feed(&p, data, len);
  rx->got = p.got;
  rx->id = p.id;
  rx->done = wstun__proto_prefix_done(&p) ? 1u : 0u;
  return used;
}

const wstun__proto wstun__proto_v1 = {
    .name = "v1",
    .multiplexed = 0,
    .write_head = v1_write_head,
    .rx_begin = v1_rx_begin,
    .rx_feed = v1_rx_feed,
};

const wstun__proto wstun__proto_v2 = {
    .name = "v2",
    .multiplexed = 1,
    .max_chunk = WSTUN__V2_DATA_CHUNK,
};
