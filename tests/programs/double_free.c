/* Freeing the same block twice: glibc's tcache check aborts. */
#include <stdlib.h>

static void release(char *p) {
    free(p); // CRASH-LINE
}

int main(void) {
    char *volatile block = malloc(32);
    release(block);
    release(block);
    return 0;
}
