/* Inside the tunnel module only: the seam between the tunnel's core
 * (wstun_tunnel.c: wslay, the connection, v1 messages, liveness) and its
 * v2 stream engine (wstun_tunnel_v2.c). The two files are one module and
 * call each other; nothing else includes this header. */
#ifndef WSTUN_TUNNEL_INT_H
#define WSTUN_TUNNEL_INT_H

#include "wstun_tunnel.h"

/* ---- the core, for the engine ------------------------------------------- */

/* Sends what can be sent now (no-op inside a receive or a pump). */
void wstun__tunnel_pump(wstun__tunnel *t);
/* The tunnel dies with err: on_closed, then messages handed back. */
void wstun__tunnel_fail(wstun__tunnel *t, int err);
/* Makes the wslay context if it was dropped. 0 or WSTUN_ENOMEM. */
int wstun__tunnel_ws_ensure(wstun__tunnel *t);
/* Whether data frames may be sent now (not congested, no close sent). */
int wstun__tunnel_data_ok(wstun__tunnel *t);
/* Writes one whole data frame (RFC 6455 5.2, masked on the client side)
 * whose payload is a[0..na) then b[0..nb) into the connection's output.
 * 0, or -1 when the connection took nothing more (the tunnel must fail). */
int wstun__tunnel_send_data_frame(wstun__tunnel *t, int fin, int opcode,
                                  const uint8_t *a, size_t na, const uint8_t *b,
                                  size_t nb);
/* Hands m back to its owner (on_failed), or frees it if it has none. */
void wstun__tunnel_fail_msg(wstun__outmsg *m, int restartable);

/* ---- the engine, for the core (each only while t->v2 is set) ------------ */

/* Sets t->v2 up. 0 or WSTUN_ENOMEM. */
int wstun__tunnel_v2_init(wstun__tunnel *t);
void wstun__tunnel_v2_free(wstun__tunnel *t);
/* sending: whether a frame waits, pump's step, whether to go round again,
 * on_drain for producers below half the high mark */
int wstun__tunnel_v2_has_out(const wstun__tunnel *t);
int wstun__tunnel_v2_start(wstun__tunnel *t);
int wstun__tunnel_v2_more(wstun__tunnel *t);
void wstun__tunnel_v2_drains(wstun__tunnel *t);
void wstun__tunnel_v2_send(wstun__tunnel *t, uint32_t id, wstun__outmsg *m);
void wstun__tunnel_v2_abandon(wstun__tunnel *t, wstun__outmsg *m);
size_t wstun__tunnel_v2_queued(const wstun__tunnel *t);
/* receiving: one WebSocket message is one frame */
void wstun__tunnel_v2_msg_begin(wstun__tunnel *t);
void wstun__tunnel_v2_chunk(wstun__tunnel *t, const uint8_t *d, size_t n);
void wstun__tunnel_v2_msg_end(wstun__tunnel *t);
/* whether a stream holds the tunnel open (quiescence) */
int wstun__tunnel_v2_busy(const wstun__tunnel *t);
/* the end: sinks told, messages handed back, a sink forgotten */
void wstun__tunnel_v2_fail_sinks(wstun__tunnel *t);
void wstun__tunnel_v2_fail_msgs(wstun__tunnel *t);
void wstun__tunnel_v2_forget(wstun__tunnel *t, void *sink);

#endif
