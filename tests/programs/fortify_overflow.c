/* A memset past the end of a stack array, caught by _FORTIFY_SOURCE. */
#include <string.h>

static int fill(size_t n) {
    char buf[8];
    memset(buf, 'x', n); // CRASH-LINE
    return buf[3];
}

int main(int argc, char **argv) {
    (void)argv;
    return fill(16 + (size_t)argc);
}
