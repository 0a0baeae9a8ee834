/* An assertion that fails: assert() calls __assert_fail, which aborts. */
#include <assert.h>

static int check_config(int loaded) {
    assert(loaded > 0 && "config loaded"); // CRASH-LINE
    return loaded;
}

int main(int argc, char **argv) {
    (void)argv;
    return check_config(argc - 1);
}
