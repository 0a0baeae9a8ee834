// giving_up explains itself on stderr, then calls abort(): glibc leaves no
// message, so the report's message must come from what it wrote. With
// "quiet", stderr goes to /dev/null first (the words must still be kept);
// with "chatty", more writes come first than the kernel keeps: thirty
// lines of 64 bytes (two fill one of the kernel's 128-byte slots), then a
// line longer than a slot.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

__attribute__((noinline)) static void load_config(const char *path) {
    fprintf(stderr, "loading %s\n", path);
    fprintf(stderr, "giving up: config missing\n");
    abort(); // CRASH-LINE
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "quiet") == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 2);
    }
    if (strcmp(mode, "chatty") == 0) {
        for (int i = 1; i <= 30; i++)
            fprintf(stderr, "line %02d %-55s\n", i, "of start-up chatter");
        char long_line[301];
        memset(long_line, 'x', 299);
        long_line[299] = '\n';
        long_line[300] = 0;
        fputs(long_line, stderr);
    }
    load_config("/etc/app.conf");
    return 0;
}
