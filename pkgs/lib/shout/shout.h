#ifndef SHOUT_H
#define SHOUT_H
/* Copies `text` into `buf` (of `size` bytes), in capitals. */
void shout(const char *text, char *buf, unsigned long size);
#endif
