/* main.c — the aarmd daemon's entry point (being built: see issue 3). */
#include "config.h"
#include <stdio.h>
int main(void)
{
    fprintf(stderr, "aarmd: the server is not built yet\n");
    return 1;
}
