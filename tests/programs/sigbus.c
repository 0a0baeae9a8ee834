/* Touches a file mapping past the end of its (truncated) file:
 * SIGBUS, BUS_ADRERR. Prints the mapping's address first so the fault
 * address can be checked. */
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAP_SIZE 4096

int crash_sigbus(volatile char *mapping)
{
    return mapping[0]; // CRASH-LINE
}

int read_truncated_mapping(void)
{
    FILE *file = tmpfile();
    if (file == NULL) {
        perror("tmpfile");
        return 1;
    }
    int fd = fileno(file);
    if (ftruncate(fd, MAP_SIZE) != 0) {
        perror("ftruncate");
        return 1;
    }
    char *mapping = mmap(NULL, MAP_SIZE, PROT_READ, MAP_SHARED, fd, 0);
    if (mapping == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    /* The mapping stays, but the file no longer has a page behind it. */
    if (ftruncate(fd, 0) != 0) {
        perror("ftruncate");
        return 1;
    }
    printf("fault-address: %p\n", (void *)mapping);
    fflush(stdout);
    return crash_sigbus(mapping);
}

int main(void)
{
    return read_truncated_mapping();
}
