/* A crash handler that crashes: the first fault (a wild write) runs the
 * SIGSEGV handler, which faults again on a NULL pointer while SIGSEGV is
 * blocked, so the kernel kills the process with the default action. One
 * death, one report. */
#include <signal.h>
#include <string.h>

static int *volatile null_pointer;

static void on_segv(int sig)
{
    (void)sig;
    *null_pointer = 1; // CRASH-LINE
}

static void write_wild(void)
{
    *(volatile int *)0xdead000 = 1;
}

int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    sigaction(SIGSEGV, &sa, 0);
    write_wild();
    return 0;
}
