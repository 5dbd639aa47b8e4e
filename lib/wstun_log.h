/* Levelled log lines through the embedder's callback. */
#ifndef WSTUN_LOG_H
#define WSTUN_LOG_H

#include "wstun/wstun.h"

typedef struct wstun__logger {
  wstun_log_level level;
  wstun_log_cb cb;
  void *user_data;
} wstun__logger;

void wstun__log(const wstun__logger *lg, wstun_log_level level, const char *fmt,
                ...) __attribute__((format(printf, 3, 4)));

#define WSTUN__LOG_ON(lg, lvl)                                                 \
  ((lg)->cb != NULL && (int)(lvl) <= (int)(lg)->level)

#endif
