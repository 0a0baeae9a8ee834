/* A stack buffer overflow caught by the stack protector on return. */
#include <string.h>

static void copy_name(const char *name) {
    char buf[8];
    strcpy(buf, name);
} // CRASH-LINE

int main(void) {
    copy_name("a name far longer than eight bytes");
    return 0;
}
