/* Levelled log lines through the embedder's callback, plain or with
 * fields (wstun_log_record_cb), and the access log's line: its text, built
 * here from the request's fields, and its JSON form (wstun_log_format_json,
 * with jansson). Never prints by itself. */
#ifndef WSTUN_LOG_H
#define WSTUN_LOG_H

#include <stddef.h>

#include "wstun/wstun.h"

typedef struct wstun__logger {
  wstun_log_level level;
  wstun_log_cb cb;
  void *user_data;
  wstun_log_record_cb record_cb; /* called instead of cb when set */
  int access; /* 1: access-log lines (wstun__log_access) are written */
} wstun__logger;

/* The logger of a config's log fields. */
void wstun__logger_init(wstun__logger *lg, wstun_log_level level,
                        wstun_log_cb cb, wstun_log_record_cb record_cb,
                        void *user_data, int access);

void wstun__log(const wstun__logger *lg, wstun_log_level level, const char *fmt,
                ...) __attribute__((format(printf, 3, 4)));

#define WSTUN__LOG_ON(lg, lvl)                                                 \
  (((lg)->cb != NULL || (lg)->record_cb != NULL) &&                            \
   (int)(lvl) <= (int)(lg)->level)

/* 1 when an access-log line would be written: worth gathering its
 * fields. */
#define WSTUN__ACCESS_ON(lg) ((lg)->access && WSTUN__LOG_ON(lg, WSTUN_LOG_INFO))

/* Writes the access-log line of request `r` (at WSTUN_LOG_INFO, if
 * WSTUN__ACCESS_ON). */
void wstun__log_access(const wstun__logger *lg, const wstun_log_request *r);

/* The access line's text for r into buf (always NUL-terminated; a value
 * too long for it is cut, marked "..."). Returns buf. */
const char *wstun__log_access_text(const wstun_log_request *r, char *buf,
                                   size_t size);

#endif
