/* Allocates and touches memory a mebibyte at a time until something stops
 * it: the victim for an OOM kill in a memory-limited cgroup. Exits 3 if
 * malloc ever fails instead. */
#include <stdlib.h>
#include <string.h>

int main(void)
{
    for (;;) {
        char *block = malloc(1 << 20);
        if (!block)
            return 3;
        memset(block, 0x5a, 1 << 20); // CRASH-LINE
    }
}
