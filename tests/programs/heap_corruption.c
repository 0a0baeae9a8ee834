/* Writing past a heap block tramples the top chunk's size: the next large
 * allocation notices and aborts. */
#include <stdlib.h>
#include <string.h>

static void overrun(char *block, size_t n) {
    memset(block, 0xff, n);
}

static void *allocate_more(void) {
    return malloc(4096); // CRASH-LINE
}

int main(void) {
    char *block = malloc(24);
    size_t n = 64;
    overrun(block, n);
    free(allocate_more());
    return 0;
}
