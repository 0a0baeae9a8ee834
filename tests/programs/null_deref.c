/* Writes through a NULL pointer: SIGSEGV, SEGV_MAPERR, fault address 0. */
#include <stddef.h>

void crash_null_deref(int *target)
{
    *target = 42; // CRASH-LINE
}

void store_answer(void)
{
    crash_null_deref(NULL);
}

int main(void)
{
    store_answer();
    return 0;
}
