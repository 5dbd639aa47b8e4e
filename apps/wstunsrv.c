#include "app_common.h"

int main(int argc, char **argv) {
  return wstunsrv_main("wstunsrv", argc, argv, 1);
}
