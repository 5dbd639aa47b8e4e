/* The lifetime of a tunneled request on the client (see wstun_request.h):
 * its reference count, the end of its exchange, the short answers it can
 * be given, and the callbacks of the response message it sends. */
#include <string.h>

#include "wstun_alloc.h"
#include "wstun_request.h"
#include "wstun_util.h"
#include "wstun_v2.h"

wstun_request *wstun__request_new(wstun__tunnel *t, uint32_t id,
                                  const wstun__logger *log,
                                  const wstun__request_cbs *cbs, void *owner) {
  wstun_request *req = wstun__calloc(1, sizeof(*req));
  if (req == NULL)
    return NULL;
  req->owner = owner;
  req->cbs = cbs;
  req->log = log;
  req->t = t;
  req->id = id;
  req->refs = 2;
  req->rx_ref = req->tx_ref = 1;
  return req;
}

/* The request's access line, as it goes: it is answered, or given up
 * (499: the tunnel, or the client, went before an answer was made). */
static void log_access(wstun_request *req) {
  if (!req->head_noted || !WSTUN__ACCESS_ON(req->log))
    return;
  wstun_log_request r = {0};
  r.method = llhttp_method_name((llhttp_method_t)req->method);
  r.path = req->log_target ? req->log_target : "";
  r.status = req->resp_status ? req->resp_status : 499;
  r.bytes = req->resp_bytes;
  r.duration_ms = (uv_hrtime() - req->start_ns) / 1000000;
  r.remote = req->log_remote;
  r.token = req->token_prefix;
  r.id = req->id;
  r.backend = req->handler_called ? "handler" : req->backend_key;
  r.bytes_in = req->pipe_out;
  wstun__log_access(req->log, &r);
}

static void request_free(wstun_request *req) {
  /* the release holds it: a ref/unref pair inside (resuming the tunnel
   * while its backend is let go) must not free it a second time */
  req->refs = 1;
  log_access(req);
  req->cbs->on_release(req);
  if (req->resp) {
    wstun__outmsg *m = req->resp;
    req->resp = NULL;
    wstun__outmsg_abandon(m);
  }
  if (req->t) {
    wstun__tunnel_forget_sink(req->t, req);
    if (req->paused_tunnel)
      wstun__tunnel_resume_rx(req->t);
  }
  wstun__http_parser_free(&req->parser);
  wstun__buf_free(&req->to_backend);
  wstun__buf_free(&req->replay);
  wstun__buf_free(&req->body);
  wstun__free(req->backend_key);
  wstun__free(req->backend_host);
  wstun__free(req->method_str);
  wstun__free(req->log_target);
  wstun__free(req->log_remote);
  wstun__free(req);
}

void wstun__request_ref(wstun_request *req) {
  req->refs++;
}

void wstun__request_unref(wstun_request *req) {
  if (--req->refs == 0)
    request_free(req);
}

void wstun__request_msg_ended(wstun_request *req) {
  req->msg_ended = 1;
  if (req->rx_ref) {
    req->rx_ref = 0;
    wstun__request_unref(req);
  }
}

void wstun__request_resp_done(wstun_request *req) {
  if (req->tx_ref) {
    req->tx_ref = 0;
    wstun__request_unref(req);
  }
}

void wstun__request_end_exchange(wstun_request *req) {
  req->t = NULL;
  wstun__request_ref(req);
  if (req->rx_ref) {
    req->rx_ref = 0;
    wstun__request_unref(req);
  }
  wstun__request_resp_done(req);
  wstun__request_unref(req);
}

void wstun__request_resp_sent(void *owner, wstun__outmsg *m) {
  wstun_request *req = owner;
  (void)m;
  req->resp = NULL;
  wstun__request_resp_done(req);
}

void wstun__request_resp_failed(void *owner, wstun__outmsg *m,
                                int restartable) {
  wstun_request *req = owner;
  (void)restartable;
  wstun__outmsg_free(m);
  req->resp = NULL;
  wstun__request_end_exchange(req);
}

const wstun__outmsg_cbs wstun__request_resp_cbs = {
    .on_sent = wstun__request_resp_sent,
    .on_failed = wstun__request_resp_failed,
};

void wstun__request_consume(wstun_request *req) {
  uint64_t n = req->unconsumed;
  req->unconsumed = 0;
  if (req->t != NULL && n > 0)
    wstun__tunnel_consumed(req->t, req->id, (size_t)n);
}

void wstun__request_mark_head(wstun__outmsg *m, size_t n) {
  if (n == 0) {
    const uint8_t *d = wstun__buf_data(&m->buf);
    const uint8_t *end = memmem(d, wstun__buf_size(&m->buf), "\r\n\r\n", 4);
    n = end ? (size_t)(end - d) + 4 : 0;
  }
  if (n > 0 && n <= UINT32_MAX)
    wstun__outmsg_set_head_len(m, (uint32_t)n);
}

void wstun__request_reset(wstun_request *req) {
  wstun__request_ref(req);
  req->state = WSTUN__CR_ANSWERED;
  /* a response the tunnel holds comes back through its callbacks (which
   * drop the response's reference); one it never had is given up here */
  int with_tunnel = req->resp != NULL && req->resp_handed;
  req->t = NULL;
  if (!with_tunnel)
    wstun__request_resp_done(req);
  wstun__request_unref(req);
}

void wstun__request_answer(wstun_request *req, int status, const char *text) {
  if (req->resp_started || req->t == NULL)
    return;
  req->resp_started = 1;
  wstun__request_note_answer(req, status, strlen(text));
  wstun__log(req->log, WSTUN_LOG_DEBUG, "HTTP RET id=%04x status=%d %s",
             req->id, status, text);
  req->resp = wstun__outmsg_new(&wstun__request_resp_cbs, req);
  if (req->resp == NULL)
    return;
  if (wstun__http_write_simple(&req->resp->buf, status, text, NULL,
                               req->method == HTTP_HEAD ? WSTUN__HTTP_NO_BODY
                                                        : 0) != 0) {
    wstun__outmsg_free(req->resp);
    req->resp = NULL;
    return;
  }
  wstun__request_mark_head(req->resp, 0);
  req->resp->finished = 1;
  req->resp_handed = 1;
  if (req->state != WSTUN__CR_HANDLER)
    req->state = WSTUN__CR_ANSWERED;
  wstun__tunnel_send(req->t, req->id, req->resp);
}

void wstun__request_note_head(wstun_request *req, const wstun__http_head *h,
                              const char *token) {
  req->method = h->method;
  if (req->head_noted || !WSTUN__ACCESS_ON(req->log))
    return;
  req->head_noted = 1;
  req->start_ns = uv_hrtime();
  wstun__redact(token, req->token_prefix);
  req->log_target = wstun__strdup(wstun__http_head_target(h));
  /* the server appends the requester last (a missing copy for want of
   * memory only leaves the field out) */
  const char *xff = wstun__http_head_get_last(h, "X-Forwarded-For");
  if (xff) {
    const char *last = strrchr(xff, ',');
    last = last ? last + 1 : xff;
    while (*last == ' ' || *last == '\t')
      last++;
    if (*last)
      req->log_remote = wstun__strdup(last);
  }
}

void wstun__request_note_answer(wstun_request *req, int status,
                                uint64_t bytes) {
  req->resp_status = status;
  req->resp_bytes = req->method == HTTP_HEAD ? 0 : bytes;
}
