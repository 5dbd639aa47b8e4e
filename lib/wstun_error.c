/* Error strings and the run-time version. */
#include "wstun/wstun.h"

const char *wstun_strerror(int err) {
  switch (err) {
#define WSTUN__STR(name, val, msg)                                             \
  case val:                                                                    \
    return msg;
    WSTUN_ERRNO_MAP(WSTUN__STR)
#undef WSTUN__STR
    /* libuv's, with libuv's words (uv_strerror() would allocate for a code
     * it does not know) */
#define WSTUN__UV_STR(name, msg)                                               \
  case UV_##name:                                                              \
    return msg;
    UV_ERRNO_MAP(WSTUN__UV_STR)
#undef WSTUN__UV_STR
  case 0:
    return "success";
  default:
    return "unknown error";
  }
}

const char *wstun_version(void) {
  return WSTUN_VERSION_STRING;
}
