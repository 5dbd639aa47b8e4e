/* wstun__http_parser on requests (max_head 8 KiB, max_body 64 KiB), input
 * fed in data-derived chunks, pipelined messages paused after each one as
 * the server does; after each message the head helpers run and every head
 * we serialize must parse back (see fuzz_http_common.h). */
#include "fuzz_http_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fz_http_run(HTTP_REQUEST, data, size);
}
