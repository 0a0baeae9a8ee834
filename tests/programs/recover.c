/* Faults 200 times and recovers every time: a SIGSEGV handler jumps back
 * with siglongjmp. Handled signals kill nothing, so there is no crash to
 * report; prints "recovered: 200" and exits 0. */
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#define ATTEMPTS 200

static sigjmp_buf recovery_point;

static void on_segv(int signo)
{
    (void)signo;
    siglongjmp(recovery_point, 1);
}

int install_segv_handler(void)
{
    struct sigaction action = { 0 };

    action.sa_handler = on_segv;
    sigemptyset(&action.sa_mask);
    return sigaction(SIGSEGV, &action, NULL);
}

int fault_and_recover(int attempts)
{
    volatile int recovered = 0;

    for (volatile int i = 0; i < attempts; i++) {
        /* savemask=1: the jump also unblocks SIGSEGV again. */
        if (sigsetjmp(recovery_point, 1) == 0) {
            volatile int *target = NULL;
            *target = i; // CRASH-LINE
        } else {
            recovered++;
        }
    }
    return recovered;
}

int main(void)
{
    if (install_segv_handler() != 0) {
        perror("sigaction");
        return 1;
    }
    int recovered = fault_and_recover(ATTEMPTS);
    printf("recovered: %d\n", recovered);
    return recovered == ATTEMPTS ? 0 : 1;
}
