#include "greet.h"

#ifndef GREETING
#define GREETING "Hello"
#endif

int main(int argc, char **argv) {
    return greet(GREETING, argc > 1 ? argv[1] : "world");
}
