/* Drop-in entry point for scripts written for the Go tool:
 * `wstunnel srv ...` and `wstunnel cli ...` with the same flags, and
 * `wstunnel version`. */
#include <stdio.h>
#include <string.h>

#include "app_common.h"

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "srv") == 0)
    return wstunsrv_main("wstunnel srv", argc, argv, 2);
  if (argc >= 2 && strcmp(argv[1], "cli") == 0)
    return wstuncli_main("wstunnel cli", argc, argv, 2);
  if (argc >= 2 &&
      (strcmp(argv[1], "version") == 0 || strcmp(argv[1], "--version") == 0 ||
       strcmp(argv[1], "-version") == 0)) {
    printf("wstunnel (wstun) %s\n", wstun_version());
    return 0;
  }
  int help = argc >= 2 &&
             (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0);
  fprintf(
      help ? stdout : stderr,
      "Usage: wstunnel srv [flags]   run a tunnel server (see wstunsrv -h)\n"
      "       wstunnel cli [flags]   run a tunnel client (see wstuncli -h)\n"
      "       wstunnel version       print the version\n");
  return help ? 0 : APP_EXIT_USAGE;
}
