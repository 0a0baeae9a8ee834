/* Calls abort(): SIGABRT sent by the process to itself with tgkill,
 * so the signal code is SI_TKILL. */
#include <stdlib.h>

void crash_abort(void)
{
    abort(); // CRASH-LINE
}

void give_up(void)
{
    crash_abort();
}

int main(void)
{
    give_up();
    return 0;
}
