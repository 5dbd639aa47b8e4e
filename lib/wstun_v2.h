/* Protocol v2 frames (docs/PROTOCOL.md, section 7): the codec and the
 * flow-control arithmetic, with no I/O. Nothing here knows about sockets,
 * WebSockets or streams' owners: the tunnel feeds the decoder the bytes of
 * each WebSocket message and asks the window helpers whether a frame may
 * be sent or was allowed.
 *
 * A v2 frame is one binary WebSocket message: a 9-byte header, then a
 * payload.
 *
 *   offset  size  field
 *   0       1     type      (HEAD 1, DATA 2, RESET 3, WINDOW 4, GOAWAY 5)
 *   1       1     flags     (END 0x01 on HEAD and DATA; nothing else)
 *   2       3     length    payload bytes, big-endian
 *   5       4     stream    big-endian; bit 31 reserved (0)
 *   9       ...   payload
 *
 * HEAD and DATA payloads are HTTP/1.1 bytes, left to the caller; RESET,
 * WINDOW and GOAWAY payloads are fixed fields that the decoder reads too.
 * Every rule the decoder enforces is one the encoder refuses to break, so
 * encode(decode(x)) == x for every accepted x. */
#ifndef WSTUN_V2_H
#define WSTUN_V2_H

#include <stddef.h>
#include <stdint.h>

/* The subprotocol the client offers and the server echoes. */
#define WSTUN__V2_SUBPROTOCOL "wstun.v2"

/* ---- the frame ----------------------------------------------------------- */

#define WSTUN__V2_HDR_LEN 9
/* The header plus the longest fixed payload (GOAWAY): what the decoder
 * reads before it reports a frame, and what wstun__v2_encode writes. */
#define WSTUN__V2_FRAME_HEAD_MAX (WSTUN__V2_HDR_LEN + 8)

enum wstun__v2_type {
  WSTUN__V2_HEAD = 1,   /* an HTTP/1.1 head (request or response) */
  WSTUN__V2_DATA = 2,   /* bytes of the stream after its head */
  WSTUN__V2_RESET = 3,  /* abort one stream: u32 code */
  WSTUN__V2_WINDOW = 4, /* credit: u32 increment (stream 0: the tunnel) */
  WSTUN__V2_GOAWAY = 5  /* u32 last stream id, u32 code; stream 0 */
};

#define WSTUN__V2_FLAG_END 0x01 /* the sender's direction ends here */

/* Limits on a frame's payload (the receiver rejects more). */
#define WSTUN__V2_MAX_DATA 65536
#define WSTUN__V2_MAX_HEAD 262144
/* What a sender puts in one DATA frame at most, so that streams
 * interleave: a small response waits behind one such frame per busy
 * stream, not behind a whole body. */
#define WSTUN__V2_DATA_CHUNK 16384

/* Stream ids and windows are 31-bit. */
#define WSTUN__V2_ID_MAX 0x7fffffffu
#define WSTUN__V2_WINDOW_MAX 0x7fffffffu

/* Initial credit, fixed by the protocol (a receiver grants more with
 * WINDOW frames; none can take credit back). 1 MiB per stream carries
 * 20 MiB/s at 50 ms round trip; the tunnel's 16 MiB bounds what a peer
 * may make the receiver buffer over all streams. */
#define WSTUN__V2_STREAM_WINDOW (1u << 20)
#define WSTUN__V2_TUNNEL_WINDOW (16u << 20)
/* Streams the server may have open at once on one tunnel; the client
 * refuses more with RESET(REFUSED). */
#define WSTUN__V2_MAX_STREAMS 1024

/* Codes carried by RESET and GOAWAY. The decoder passes any value on;
 * receivers treat an unknown one as INTERNAL. */
enum wstun__v2_code {
  WSTUN__V2_NO_ERROR = 0,
  WSTUN__V2_PROTOCOL_ERROR = 1,
  WSTUN__V2_INTERNAL_ERROR = 2,
  WSTUN__V2_FLOW_CONTROL_ERROR = 3,
  WSTUN__V2_REFUSED = 4, /* not processed at all: may be retried */
  WSTUN__V2_CANCEL = 5,  /* the requester or the backend went away */
  WSTUN__V2_TIMEOUT = 6  /* a head or idle-stream timeout */
};

/* Errors of the codec and of the window helpers (negative). Every decoder
 * error is a tunnel error (GOAWAY PROTOCOL_ERROR, then close 1002). */
enum wstun__v2_err {
  WSTUN__V2_ETYPE = -1,      /* unknown frame type */
  WSTUN__V2_EFLAGS = -2,     /* a flag bit the type does not define */
  WSTUN__V2_ELENGTH = -3,    /* length not allowed for the type */
  WSTUN__V2_ERESERVED = -4,  /* bit 31 of a stream id set */
  WSTUN__V2_ESTREAM = -5,    /* stream 0 where a stream is needed, or a
                                stream where 0 is needed (GOAWAY) */
  WSTUN__V2_EINCREMENT = -6, /* WINDOW increment 0 or above 2^31-1 */
  WSTUN__V2_EFLOW = -7,      /* the peer broke a window (flow control) */
  WSTUN__V2_EINVAL = -8      /* the caller broke a rule (a bug here) */
};

/* A short name for an error or a code, for logs ("ETYPE", "CANCEL"...);
 * "?" for anything else. */
const char *wstun__v2_errname(int err);
const char *wstun__v2_codename(uint32_t code);
const char *wstun__v2_typename(int type);

typedef struct wstun__v2_frame {
  uint8_t type;
  uint8_t flags;
  uint32_t len;    /* payload bytes (for control frames: 4 or 8) */
  uint32_t stream; /* 0 for the tunnel */
  /* the fixed payload fields, zero for types without them */
  uint32_t code;      /* RESET, GOAWAY */
  uint32_t increment; /* WINDOW */
  uint32_t last;      /* GOAWAY: last stream id */
} wstun__v2_frame;

/* The length a frame of this type must have, for the fixed-size types (4
 * for RESET and WINDOW, 8 for GOAWAY), else -1. */
int wstun__v2_fixed_len(int type);

/* 0 if f may go on the wire, else the error the decoder would report for
 * it (the same checks, in the same order). For HEAD and DATA only the
 * header fields are checked, not the payload. */
int wstun__v2_check(const wstun__v2_frame *f);

/* Writes f's header and, for RESET, WINDOW and GOAWAY, its fixed payload
 * into out. Returns the bytes written (9, 13 or 17) or an error of
 * wstun__v2_check (nothing meaningful written). For HEAD and DATA the
 * caller sends f->len payload bytes right after, in the same WebSocket
 * message. */
int wstun__v2_encode(const wstun__v2_frame *f,
                     uint8_t out[WSTUN__V2_FRAME_HEAD_MAX]);

/* Shorthands over wstun__v2_encode for the frames the tunnel makes whole. */
int wstun__v2_encode_reset(uint32_t stream, uint32_t code,
                           uint8_t out[WSTUN__V2_FRAME_HEAD_MAX]);
int wstun__v2_encode_window(uint32_t stream, uint32_t increment,
                            uint8_t out[WSTUN__V2_FRAME_HEAD_MAX]);
int wstun__v2_encode_goaway(uint32_t last, uint32_t code,
                            uint8_t out[WSTUN__V2_FRAME_HEAD_MAX]);

/* ---- the incremental decoder -------------------------------------------- */

/* Decodes the start of one WebSocket message: the header, plus the fixed
 * payload of RESET, WINDOW and GOAWAY. Each field is checked as soon as
 * its last byte arrives, so any split of the input, one byte at a time
 * included, gives the same outcome at the same byte. */
typedef struct wstun__v2_rx {
  uint8_t buf[WSTUN__V2_FRAME_HEAD_MAX];
  uint8_t got;  /* bytes of buf filled */
  uint8_t need; /* bytes to read in all (9 until the type is known) */
  int8_t err;   /* sticky: once set, every feed returns it */
  uint8_t done;
  wstun__v2_frame frame; /* valid once done */
} wstun__v2_rx;

/* A message begins. */
void wstun__v2_rx_init(wstun__v2_rx *rx);

/* Consumes bytes of the frame's start from data. Returns how many (>= 0;
 * rx->done once the header, and the fixed payload if any, are whole) or a
 * negative wstun__v2_err when they are malformed; after an error every
 * later call returns it again. Never consumes past what it needs, so the
 * bytes after it (a HEAD or DATA payload) stay with the caller, who then
 * expects exactly rx->frame.len of them (the payload of control frames
 * was consumed here) before the WebSocket message ends. */
int wstun__v2_rx_feed(wstun__v2_rx *rx, const uint8_t *data, size_t len);

/* ---- flow control -------------------------------------------------------- */

/* The sender's side of one window (per stream, and one for the tunnel):
 * how many DATA payload bytes it may still send. */
typedef struct wstun__v2_credit {
  uint32_t avail;
} wstun__v2_credit;

static inline void wstun__v2_credit_init(wstun__v2_credit *c,
                                         uint32_t initial) {
  c->avail = initial;
}
/* Sending n bytes: 0, or WSTUN__V2_EINVAL (nothing changed) if n is more
 * than the credit. A DATA frame needs credit on its stream and on the
 * tunnel: check both before taking either. */
int wstun__v2_credit_take(wstun__v2_credit *c, uint32_t n);
/* A WINDOW frame came: 0, or WSTUN__V2_EFLOW (nothing changed) if the
 * credit would pass WSTUN__V2_WINDOW_MAX, or WSTUN__V2_EINCREMENT for 0
 * or above WSTUN__V2_WINDOW_MAX (the decoder rejects those already). */
int wstun__v2_credit_update(wstun__v2_credit *c, uint32_t increment);

/* The receiver's side of one window. Its three counts always add up to
 * `size`: what the peer may still send, what arrived and is still held
 * here, and what was handed on but not yet given back with WINDOW. */
typedef struct wstun__v2_window {
  uint32_t size;     /* the credit granted in all */
  uint32_t granted;  /* the peer may still send this much */
  uint32_t held;     /* received, not yet released by its consumer */
  uint32_t released; /* released, not yet given back by a WINDOW frame */
} wstun__v2_window;

/* size in 1..WSTUN__V2_WINDOW_MAX; 0 or WSTUN__V2_EINVAL. */
int wstun__v2_window_init(wstun__v2_window *w, uint32_t size);
/* n payload bytes of DATA arrived: 0, or WSTUN__V2_EFLOW (nothing
 * changed) when the peer sent more than its credit. */
int wstun__v2_window_recv(wstun__v2_window *w, uint32_t n);
/* The consumer took n bytes (or they were dropped): 0, or
 * WSTUN__V2_EINVAL (nothing changed) if fewer are held. */
int wstun__v2_window_release(wstun__v2_window *w, uint32_t n);
/* The increment to send in a WINDOW frame now, or 0: once half the window
 * waits to be given back, all of it goes in one frame (fewer frames than
 * one per read, and the peer never runs dry while bytes are moving). */
uint32_t wstun__v2_window_update_due(const wstun__v2_window *w);
/* A WINDOW frame of this increment was sent: 0, or WSTUN__V2_EINVAL
 * (nothing changed) for 0 or more than was released. */
int wstun__v2_window_sent(wstun__v2_window *w, uint32_t increment);
/* Raises the window to size (which may not shrink it): the difference is
 * added to `released`, so the next update_due sends it. 0, or
 * WSTUN__V2_EINVAL (nothing changed). */
int wstun__v2_window_grow(wstun__v2_window *w, uint32_t size);

#endif
