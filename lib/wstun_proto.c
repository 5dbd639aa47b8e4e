#include "wstun_proto.h"

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
