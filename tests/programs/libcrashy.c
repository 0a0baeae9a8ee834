/* Shared library loaded by dlopen_crash: its one function writes
 * through NULL. */
#include <stddef.h>

void crashy_fault(void)
{
    volatile int *target = NULL;

    *target = 7; // CRASH-LINE
}
