/* wstun__http_parser on responses, as the tunnel server reads them from
 * the client: data-derived chunks, wstun__http_parser_finish at the end of
 * the input (bodies delimited by the end of the message), and a flag bit
 * that makes on_head return 1 (the answer to a HEAD request). After each
 * message the head helpers run and every head we serialize must parse
 * back (see fuzz_http_common.h). */
#include "fuzz_http_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fz_http_run(HTTP_RESPONSE, data, size);
}
