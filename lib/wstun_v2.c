/* Protocol v2 frames (see wstun_v2.h): the encoder, the incremental
 * decoder of a frame's start and the window arithmetic. The checks are
 * written once, field by field, and run by the decoder as each field
 * completes and by the encoder all at once, so both agree on what a valid
 * frame is. */
#include "wstun_v2.h"

static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         (uint32_t)p[3];
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

int wstun__v2_fixed_len(int type) {
  switch (type) {
  case WSTUN__V2_RESET:
  case WSTUN__V2_WINDOW:
    return 4;
  case WSTUN__V2_GOAWAY:
    return 8;
  default:
    return -1;
  }
}

/* ---- the checks, one per field, in wire order ---------------------------- */

static int check_type(uint8_t type) {
  return type >= WSTUN__V2_HEAD && type <= WSTUN__V2_GOAWAY ? 0
                                                            : WSTUN__V2_ETYPE;
}

static int check_flags(uint8_t type, uint8_t flags) {
  uint8_t allowed =
      type == WSTUN__V2_HEAD || type == WSTUN__V2_DATA ? WSTUN__V2_FLAG_END : 0;
  return (flags & ~allowed) ? WSTUN__V2_EFLAGS : 0;
}

static int check_len(uint8_t type, uint8_t flags, uint32_t len) {
  switch (type) {
  case WSTUN__V2_HEAD:
    /* a head is at least its request or status line */
    return len >= 1 && len <= WSTUN__V2_MAX_HEAD ? 0 : WSTUN__V2_ELENGTH;
  case WSTUN__V2_DATA:
    /* an empty DATA frame only carries END */
    if (len == 0 && !(flags & WSTUN__V2_FLAG_END))
      return WSTUN__V2_ELENGTH;
    return len <= WSTUN__V2_MAX_DATA ? 0 : WSTUN__V2_ELENGTH;
  default:
    return (int)len == wstun__v2_fixed_len(type) ? 0 : WSTUN__V2_ELENGTH;
  }
}

static int check_stream(uint8_t type, uint32_t stream) {
  if (stream > WSTUN__V2_ID_MAX)
    return WSTUN__V2_ERESERVED;
  switch (type) {
  case WSTUN__V2_WINDOW:
    return 0; /* 0 is the tunnel */
  case WSTUN__V2_GOAWAY:
    return stream == 0 ? 0 : WSTUN__V2_ESTREAM;
  default:
    return stream != 0 ? 0 : WSTUN__V2_ESTREAM;
  }
}

/* The first u32 of a fixed payload. */
static int check_field1(uint8_t type, uint32_t v) {
  switch (type) {
  case WSTUN__V2_WINDOW:
    return v >= 1 && v <= WSTUN__V2_WINDOW_MAX ? 0 : WSTUN__V2_EINCREMENT;
  case WSTUN__V2_GOAWAY:
    return v <= WSTUN__V2_ID_MAX ? 0 : WSTUN__V2_ERESERVED;
  default:
    return 0; /* RESET: any code */
  }
}

int wstun__v2_check(const wstun__v2_frame *f) {
  int r;
  if ((r = check_type(f->type)) != 0 ||
      (r = check_flags(f->type, f->flags)) != 0 ||
      (r = check_len(f->type, f->flags, f->len)) != 0 ||
      (r = check_stream(f->type, f->stream)) != 0)
    return r;
  switch (f->type) {
  case WSTUN__V2_WINDOW:
    return check_field1(f->type, f->increment);
  case WSTUN__V2_GOAWAY:
    return check_field1(f->type, f->last);
  default:
    return 0;
  }
}

/* ---- encoder ------------------------------------------------------------- */

int wstun__v2_encode(const wstun__v2_frame *f,
                     uint8_t out[WSTUN__V2_FRAME_HEAD_MAX]) {
  int r = wstun__v2_check(f);
  if (r != 0)
    return r;
  out[0] = f->type;
  out[1] = f->flags;
  out[2] = (uint8_t)(f->len >> 16);
  out[3] = (uint8_t)(f->len >> 8);
  out[4] = (uint8_t)f->len;
  put32(out + 5, f->stream);
  switch (f->type) {
  case WSTUN__V2_RESET:
    put32(out + 9, f->code);
    return WSTUN__V2_HDR_LEN + 4;
  case WSTUN__V2_WINDOW:
    put32(out + 9, f->increment);
    return WSTUN__V2_HDR_LEN + 4;
  case WSTUN__V2_GOAWAY:
    put32(out + 9, f->last);
    put32(out + 13, f->code);
    return WSTUN__V2_HDR_LEN + 8;
  default:
    return WSTUN__V2_HDR_LEN;
  }
}

int wstun__v2_encode_reset(uint32_t stream, uint32_t code,
                           uint8_t out[WSTUN__V2_FRAME_HEAD_MAX]) {
  wstun__v2_frame f = {WSTUN__V2_RESET, 0, 4, stream, code, 0, 0};
  return wstun__v2_encode(&f, out);
}

int wstun__v2_encode_window(uint32_t stream, uint32_t increment,
                            uint8_t out[WSTUN__V2_FRAME_HEAD_MAX]) {
  wstun__v2_frame f = {WSTUN__V2_WINDOW, 0, 4, stream, 0, increment, 0};
  return wstun__v2_encode(&f, out);
}

int wstun__v2_encode_goaway(uint32_t last, uint32_t code,
                            uint8_t out[WSTUN__V2_FRAME_HEAD_MAX]) {
  wstun__v2_frame f = {WSTUN__V2_GOAWAY, 0, 8, 0, code, 0, last};
  return wstun__v2_encode(&f, out);
}

/* ---- decoder ------------------------------------------------------------- */

void wstun__v2_rx_init(wstun__v2_rx *rx) {
  rx->got = 0;
  rx->need = WSTUN__V2_HDR_LEN;
  rx->err = 0;
  rx->done = 0;
  rx->frame = (wstun__v2_frame){0, 0, 0, 0, 0, 0, 0};
}

/* buf[got - 1] just arrived: check the field it completes, if any. */
static int rx_step(wstun__v2_rx *rx) {
  wstun__v2_frame *f = &rx->frame;
  const uint8_t *b = rx->buf;
  int r;
  switch (rx->got) {
  case 1:
    f->type = b[0];
    if ((r = check_type(f->type)) != 0)
      return r;
    if (wstun__v2_fixed_len(f->type) > 0)
      rx->need = (uint8_t)(WSTUN__V2_HDR_LEN + wstun__v2_fixed_len(f->type));
    return 0;
  case 2:
    f->flags = b[1];
    return check_flags(f->type, f->flags);
  case 5:
    f->len = (uint32_t)b[2] << 16 | (uint32_t)b[3] << 8 | (uint32_t)b[4];
    return check_len(f->type, f->flags, f->len);
  case 9:
    f->stream = get32(b + 5);
    return check_stream(f->type, f->stream);
  case 13:
    if (f->type == WSTUN__V2_WINDOW)
      f->increment = get32(b + 9);
    else if (f->type == WSTUN__V2_GOAWAY)
      f->last = get32(b + 9);
    else
      f->code = get32(b + 9);
    return check_field1(f->type, get32(b + 9));
  case 17:
    f->code = get32(b + 13); /* GOAWAY: any code */
    return 0;
  default:
    return 0;
  }
}

int wstun__v2_rx_feed(wstun__v2_rx *rx, const uint8_t *data, size_t len) {
  if (rx->err)
    return rx->err;
  size_t i = 0;
  while (i < len && rx->got < rx->need) {
    rx->buf[rx->got++] = data[i++];
    int r = rx_step(rx);
    if (r != 0) {
      rx->err = (int8_t)r;
      return r;
    }
  }
  if (rx->got == rx->need)
    rx->done = 1;
  return (int)i;
}

/* ---- flow control -------------------------------------------------------- */

int wstun__v2_credit_take(wstun__v2_credit *c, uint32_t n) {
  if (n > c->avail)
    return WSTUN__V2_EINVAL;
  c->avail -= n;
  return 0;
}

int wstun__v2_credit_update(wstun__v2_credit *c, uint32_t increment) {
  if (increment == 0 || increment > WSTUN__V2_WINDOW_MAX)
    return WSTUN__V2_EINCREMENT;
  if (increment > WSTUN__V2_WINDOW_MAX - c->avail)
    return WSTUN__V2_EFLOW;
  c->avail += increment;
  return 0;
}

int wstun__v2_window_init(wstun__v2_window *w, uint32_t size) {
  if (size == 0 || size > WSTUN__V2_WINDOW_MAX)
    return WSTUN__V2_EINVAL;
  w->size = size;
  w->granted = size;
  w->held = 0;
  w->released = 0;
  return 0;
}

int wstun__v2_window_recv(wstun__v2_window *w, uint32_t n) {
  if (n > w->granted)
    return WSTUN__V2_EFLOW;
  w->granted -= n;
  w->held += n;
  return 0;
}

int wstun__v2_window_release(wstun__v2_window *w, uint32_t n) {
  if (n > w->held)
    return WSTUN__V2_EINVAL;
  w->held -= n;
  w->released += n;
  return 0;
}

uint32_t wstun__v2_window_update_due(const wstun__v2_window *w) {
  return w->released > 0 && w->released >= w->size / 2 ? w->released : 0;
}

int wstun__v2_window_sent(wstun__v2_window *w, uint32_t increment) {
  if (increment == 0 || increment > w->released)
    return WSTUN__V2_EINVAL;
  w->released -= increment;
  w->granted += increment;
  return 0;
}

int wstun__v2_window_grow(wstun__v2_window *w, uint32_t size) {
  if (size < w->size || size > WSTUN__V2_WINDOW_MAX)
    return WSTUN__V2_EINVAL;
  w->released += size - w->size;
  w->size = size;
  return 0;
}

/* ---- names for logs ------------------------------------------------------ */

const char *wstun__v2_errname(int err) {
  switch (err) {
  case 0:
    return "OK";
  case WSTUN__V2_ETYPE:
    return "ETYPE";
  case WSTUN__V2_EFLAGS:
    return "EFLAGS";
  case WSTUN__V2_ELENGTH:
    return "ELENGTH";
  case WSTUN__V2_ERESERVED:
    return "ERESERVED";
  case WSTUN__V2_ESTREAM:
    return "ESTREAM";
  case WSTUN__V2_EINCREMENT:
    return "EINCREMENT";
  case WSTUN__V2_EFLOW:
    return "EFLOW";
  case WSTUN__V2_EINVAL:
    return "EINVAL";
  default:
    return "?";
  }
}

const char *wstun__v2_codename(uint32_t code) {
  static const char *const names[] = {
      "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
      "REFUSED",  "CANCEL",         "TIMEOUT"};
  return code < sizeof(names) / sizeof(names[0]) ? names[code] : "?";
}

const char *wstun__v2_typename(int type) {
  static const char *const names[] = {"?",     "HEAD",   "DATA",
                                      "RESET", "WINDOW", "GOAWAY"};
  return type >= 0 && type < (int)(sizeof(names) / sizeof(names[0]))
             ? names[type]
             : "?";
}
