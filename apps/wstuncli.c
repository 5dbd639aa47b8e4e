/* The wstuncli program: everything is in cli_main.c, shared with
 * `wstunnel cli`. */
#include "app_common.h"

int main(int argc, char **argv) {
  return wstuncli_main("wstuncli", argc, argv, 1);
}
