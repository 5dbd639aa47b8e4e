/* Formats log lines and hands them to the embedder; never prints by
 * itself. The access log's fields become a text line here (key=value,
 * values %XX-escaped so that a hostile path cannot forge a line) and, for
 * embedders that want JSON, an object built with jansson. */
#include "wstun_log.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "wstun_alloc.h"

void wstun__logger_init(wstun__logger *lg, wstun_log_level level,
                        wstun_log_cb cb, wstun_log_record_cb record_cb,
                        void *user_data, int access) {
  lg->level = level;
  lg->cb = cb;
  lg->record_cb = record_cb;
  lg->user_data = user_data;
  lg->access = access;
}

static void emit(const wstun__logger *lg, wstun_log_level level,
                 const char *msg, const wstun_log_request *r) {
  if (lg->record_cb) {
    wstun_log_record rec = {level, msg, r};
    lg->record_cb(lg->user_data, &rec);
  } else {
    lg->cb(lg->user_data, level, msg);
  }
}

void wstun__log(const wstun__logger *lg, wstun_log_level level, const char *fmt,
                ...) {
  if (!WSTUN__LOG_ON(lg, level))
    return;
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  emit(lg, level, line, NULL);
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

/* ---- the access line's text ------------------------------------------- */

/* Appends to a fixed buffer, cutting (and marking the cut) at its end. */
typedef struct text_out {
  char *p;
  size_t len, size;
  int cut;
} text_out;

/* Keeps room for "..." and the NUL: len + 4 <= size always holds. */
static void put(text_out *o, const char *s, size_t n) {
  if (o->cut)
    return;
  if (o->len + n + 4 > o->size) {
    o->cut = 1;
    memcpy(o->p + o->len, "...", 4);
    o->len += 3;
    return;
  }
  memcpy(o->p + o->len, s, n);
  o->len += n;
  o->p[o->len] = '\0';
}

/* A value as a single word: spaces, '"', control bytes and anything not
 * ASCII as %XX, so that a line is always one line of key=value pairs. */
static void put_value(text_out *o, const char *v) {
  if (v == NULL || *v == '\0') {
    put(o, "-", 1);
    return;
  }
  for (const unsigned char *s = (const unsigned char *)v; *s && !o->cut; s++) {
    if (*s > 0x20 && *s < 0x7f && *s != '"') {
      put(o, (const char *)s, 1);
    } else {
      char esc[4];
      snprintf(esc, sizeof(esc), "%%%02X", *s);
      put(o, esc, 3);
    }
  }
}

static void put_field(text_out *o, const char *key, const char *v) {
  if (v == NULL)
    return;
  if (o->len > 0)
    put(o, " ", 1);
  put(o, key, strlen(key));
  put(o, "=", 1);
  put_value(o, v);
}

const char *wstun__log_access_text(const wstun_log_request *r, char *buf,
                                   size_t size) {
  text_out o = {buf, 0, size, 0};
  if (size < 4) {
    if (size > 0)
      buf[0] = '\0';
    return buf;
  }
  buf[0] = '\0';
  char status[16], bytes[24], bytes_in[24], ms[24], id[24];
  snprintf(status, sizeof(status), "%d", r->status);
  snprintf(bytes, sizeof(bytes), "%" PRIu64, r->bytes);
  snprintf(bytes_in, sizeof(bytes_in), "%" PRIu64, r->bytes_in);
  snprintf(ms, sizeof(ms), "%" PRIu64, r->duration_ms);
  snprintf(id, sizeof(id), "%04" PRIx64, (uint64_t)r->id);
  put(&o, "access", 6);
  put_field(&o, "method", r->method ? r->method : "");
  put_field(&o, "path", r->path ? r->path : "");
  put_field(&o, "status", status);
  put_field(&o, "bytes", bytes);
  put_field(&o, "bytes_in", r->bytes_in ? bytes_in : NULL); /* pipes */
  put_field(&o, "duration_ms", ms);
  put_field(&o, "remote", r->remote);
  put_field(&o, "token", r->token);
  put_field(&o, "id", r->id >= 0 ? id : NULL);
  put_field(&o, "backend", r->backend);
  return buf;
}

void wstun__log_access(const wstun__logger *lg, const wstun_log_request *r) {
  if (!WSTUN__ACCESS_ON(lg))
    return;
  char line[2048];
  emit(lg, WSTUN_LOG_INFO, wstun__log_access_text(r, line, sizeof(line)), r);
}

/* ---- JSON --------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when it is not one
 * (overlong forms, surrogates and code points past U+10FFFF included, as
 * jansson refuses them). s is NUL-terminated: a NUL ends any sequence. */
static size_t utf8_len(const unsigned char *s) {
  unsigned char c = s[0], lo = 0x80, hi = 0xBF;
  size_t n;
  if (c < 0x80)
    return 1;
  if (c >= 0xC2 && c <= 0xDF)
    n = 2;
  else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0)
      lo = 0xA0;
    else if (c == 0xED)
      hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0)
      lo = 0x90;
    else if (c == 0xF4)
      hi = 0x8F;
  } else
    return 0;
  if (s[1] < lo || s[1] > hi)
    return 0;
  for (size_t i = 2; i < n; i++)
    if (s[i] < 0x80 || s[i] > 0xBF)
      return 0;
  return n;
}

/* A jansson string of v; jansson takes only valid UTF-8, so a string that
 * is not gets each invalid byte replaced by U+FFFD first. */
static json_t *json_text(const char *v) {
  json_t *j = json_string(v);
  if (j != NULL)
    return j;
  size_t n = strlen(v);
  char *fixed = wstun__malloc(3 * n + 1);
  if (fixed == NULL)
    return NULL;
  size_t o = 0;
  for (const unsigned char *s = (const unsigned char *)v; *s;) {
    size_t k = utf8_len(s);
    if (k == 0) {
      memcpy(fixed + o, "\xEF\xBF\xBD", 3);
      o += 3;
      s++;
    } else {
      memcpy(fixed + o, s, k);
      o += k;
      s += k;
    }
  }
  fixed[o] = '\0';
  j = json_string(fixed);
  wstun__free(fixed);
  return j;
}

static int add_text(json_t *o, const char *key, const char *v) {
  return v == NULL ? 0 : json_object_set_new(o, key, json_text(v));
}

static int add_int(json_t *o, const char *key, json_int_t v) {
  return json_object_set_new(o, key, json_integer(v));
}

int wstun_log_format_json(const wstun_log_record *rec, const char *time,
                          const wstun_log_field *extra, size_t nextra,
                          char *buf, size_t size) {
  static const char *const levels[] = {"error", "warn", "info", "debug"};
  if (rec == NULL || rec->msg == NULL || (buf == NULL && size > 0))
    return WSTUN_EINVAL;
  json_t *o = json_object();
  if (o == NULL)
    return WSTUN_ENOMEM;
  int rc = add_text(o, "time", time);
  rc |= add_text(o, "level", levels[(unsigned)rec->level & 3]);
  for (size_t i = 0; i < nextra; i++)
    if (extra[i].key != NULL)
      rc |= add_text(o, extra[i].key, extra[i].value);
  rc |= add_text(o, "msg", rec->msg);
  const wstun_log_request *r = rec->request;
  if (r != NULL) {
    char id[24];
    snprintf(id, sizeof(id), "%04" PRIx64, (uint64_t)r->id);
    rc |= add_text(o, "method", r->method);
    rc |= add_text(o, "path", r->path);
    rc |= add_int(o, "status", r->status);
    rc |= add_int(o, "bytes", (json_int_t)r->bytes);
    if (r->bytes_in)
      rc |= add_int(o, "bytes_in", (json_int_t)r->bytes_in);
    rc |= add_int(o, "duration_ms", (json_int_t)r->duration_ms);
    rc |= add_text(o, "remote", r->remote);
    rc |= add_text(o, "token", r->token);
    rc |= add_text(o, "id", r->id >= 0 ? id : NULL);
    rc |= add_text(o, "backend", r->backend);
  }
  /* insertion order is kept (jansson >= 2.8): time and level first */
  size_t n = rc == 0 ? json_dumpb(o, buf, size, JSON_COMPACT) : 0;
  json_decref(o);
  if (n == 0)
    return WSTUN_ENOMEM; /* an object is never empty: this is a failure */
  if (n < size)
    buf[n] = '\0';
  else if (size > 0)
    buf[0] = '\0';
  return n > INT32_MAX ? WSTUN_ENOMEM : (int)n;
}
