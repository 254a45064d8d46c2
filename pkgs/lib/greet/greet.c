#include <stdio.h>
#include "greet.h"
#ifdef GREET_SHOUT
#include "shout.h"
#endif

int greet(const char *greeting, const char *who) {
#ifdef GREET_SHOUT
    char loud[256];
    shout(greeting, loud, sizeof loud);
    greeting = loud;
#endif
    return printf("%s, %s!\n", greeting, who) < 0;
}
