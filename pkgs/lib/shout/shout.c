#include "shout.h"

void shout(const char *text, char *buf, unsigned long size) {
    unsigned long i = 0;
    for (; text[i] && i + 1 < size; i++) {
        char c = text[i];
        buf[i] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
    }
    if (size) buf[i] = 0;
}
