#include "test.h"
int main(int argc, char **argv) { return test_main(NULL, 0, argc, argv); }
