/* Built with -O2: load_value is a leaf that sets up no frame at all (no
 * push, no stack adjustment), so at the fault the return address is at
 * the stack pointer and the frame pointer register still belongs to
 * some caller. It is reached through two functions that are neither
 * inlined nor tail-called. */
#include <stdio.h>

#if defined(__clang__)
#define KEEP __attribute__((noinline))
#else
#define KEEP __attribute__((noipa))
#endif

KEEP int load_value(const int *source)
{
    return *source; // CRASH-LINE
}

KEEP int scale_value(const int *source, int factor)
{
    return load_value(source) * factor + factor;
}

KEEP int sum_values(const int *source, int count)
{
    int total = 0;
    for (int i = 0; i < count; i++)
        total += scale_value(source, i + 2);
    return total + count;
}

int main(int argc, char **argv)
{
    (void)argv;
    /* NULL at run time (argc is 1), which the compiler cannot see. */
    const int *source = (const int *)(__SIZE_TYPE__)(argc - 1);
    printf("%d\n", sum_values(source, argc + 1));
    return 0;
}
