/* Stripped after linking: its symbols and DWARF live only in a separate
 * debug file found by build-id, so every name in its frames must come
 * from there. */
#include <stddef.h>

void stripped_fault(int *target)
{
    *target = 99; // CRASH-LINE
}

void stripped_caller(int *target)
{
    stripped_fault(target);
}

int main(void)
{
    stripped_caller(NULL);
    return 0;
}
