/* The wstunsrv program: everything is in srv_main.c, shared with
 * `wstunnel srv`. */
#include "app_common.h"

int main(int argc, char **argv) {
  return wstunsrv_main("wstunsrv", argc, argv, 1);
}
