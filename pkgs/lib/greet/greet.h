#ifndef GREET_H
#define GREET_H
/* Prints "<greeting>, <who>!" on stdout; returns 0 on success. */
int greet(const char *greeting, const char *who);
#endif
