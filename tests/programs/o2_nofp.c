/* Built with -O2 -fomit-frame-pointer: main -> outer -> middle -> inner,
 * none inlined, cloned or tail-called, and inner writes through NULL.
 * Without frame pointers only the call frame information says where
 * each caller's return address is. */
#include <stdio.h>

#if defined(__clang__)
#define KEEP __attribute__((noinline))
#else
#define KEEP __attribute__((noipa))
#endif

KEEP int inner(int *target, int value)
{
    *target = value; // CRASH-LINE
    return value + 1;
}

/* Each caller uses a value it kept across the call, so it saves a
 * register and its call is not a tail call. */
KEEP int middle(int *target, int value)
{
    int result = inner(target, value * 3);
    return result + value;
}

KEEP int outer(int *target, int value)
{
    int result = middle(target, value + 5);
    return result * value;
}

int main(int argc, char **argv)
{
    (void)argv;
    /* NULL at run time (argc is 1), which the compiler cannot see. */
    int *target = (int *)(__SIZE_TYPE__)(argc - 1);
    int result = outer(target, argc);
    printf("%d\n", result);
    return 0;
}
