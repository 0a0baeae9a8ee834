/* Loads the library named by argv[1] with dlopen and calls its
 * crashy_fault(), which writes through NULL inside the library. */
#include <dlfcn.h>
#include <stdio.h>

int load_and_call_crashy(const char *path)
{
    void *library = dlopen(path, RTLD_NOW);
    if (library == NULL) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 1;
    }
    void (*crashy_fault)(void) = (void (*)(void))dlsym(library, "crashy_fault");
    if (crashy_fault == NULL) {
        fprintf(stderr, "dlsym: %s\n", dlerror());
        return 1;
    }
    crashy_fault();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s /path/to/libcrashy.so\n", argv[0]);
        return 2;
    }
    return load_and_call_crashy(argv[1]);
}
