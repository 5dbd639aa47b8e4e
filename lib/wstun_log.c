/* Formats a line and hands it to the embedder; never prints by itself. */
#include "wstun_log.h"

#include <stdarg.h>
#include <stdio.h>
#include <strings.h>

void wstun__log(const wstun__logger *lg, wstun_log_level level, const char *fmt,
                ...) {
  if (!WSTUN__LOG_ON(lg, level))
    return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  lg->cb(lg->user_data, level, line);
}

int wstun_log_level_parse(const char *name) {
  static const char *const names[] = {"error", "warn", "info", "debug"};
  if (name == NULL)
    return -1;
  for (int i = 0; i < 4; i++)
    if (strcasecmp(name, names[i]) == 0)
      return i;
  if (strcasecmp(name, "warning") == 0)
    return WSTUN_LOG_WARN;
  return -1;
}
