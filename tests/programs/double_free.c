/* Freeing the same block twice: glibc's tcache check aborts. An optional
 * argument waits that many milliseconds first. */
#include <stdlib.h>
#include <unistd.h>

static void release(char *p) {
    free(p); // CRASH-LINE
}

int main(int argc, char **argv) {
    if (argc > 1)
        usleep(atoi(argv[1]) * 1000);
    char *volatile block = malloc(32);
    release(block);
    release(block);
    return 0;
}
