/* Recurses without bound until the stack runs out: SIGSEGV, SEGV_MAPERR,
 * fault address just below the stack. The volatile array keeps every frame
 * big and alive, so the recursion can be neither flattened nor turned into
 * a loop. */
#include <limits.h>
#include <sys/resource.h>

/* With an unlimited stack rlimit the recursion would eat all memory
 * before faulting; cap it at the usual 8 MiB. */
static void limit_stack(void)
{
    struct rlimit limit;

    if (getrlimit(RLIMIT_STACK, &limit) == 0 &&
        (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur > (8UL << 20))) {
        limit.rlim_cur = 8UL << 20;
        setrlimit(RLIMIT_STACK, &limit);
    }
}

unsigned long crash_stack_overflow(unsigned long depth)
{
    volatile char frame[512];

    if (depth == ULONG_MAX) /* never true: the stack runs out long before */
        return 0;
    frame[0] = (char)depth;
    frame[sizeof(frame) - 1] = (char)depth;
    return crash_stack_overflow(depth + 1) + frame[0]; // CRASH-LINE
}

unsigned long start_recursion(void)
{
    return crash_stack_overflow(0);
}

int main(void)
{
    limit_stack();
    return (int)start_recursion();
}
