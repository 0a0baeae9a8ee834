/* A NULL dereference inside a signal handler that interrupted ordinary
 * code: a timer delivers SIGUSR1 while main spins, and the handler
 * crashes. The stack runs from the faulting function through the handler
 * and the kernel's signal frame (the sigreturn trampoline, __restore_rt)
 * into the interrupted loop, and on to main. */
#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int *volatile target;
static volatile unsigned long spins;

void crash_in_handler(int *slot)
{
    *slot = 7; // CRASH-LINE
}

void on_usr1(int sig)
{
    (void)sig;
    crash_in_handler(target);
}

void spin_until_signalled(void)
{
    for (;;)
        spins++;
}

int main(void)
{
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = on_usr1;
    sigemptyset(&action.sa_mask);
    if (sigaction(SIGUSR1, &action, NULL) != 0)
        return 2;

    struct sigevent event;
    memset(&event, 0, sizeof event);
    event.sigev_notify = SIGEV_SIGNAL;
    event.sigev_signo = SIGUSR1;
    timer_t timer;
    if (timer_create(CLOCK_MONOTONIC, &event, &timer) != 0)
        return 3;
    struct itimerspec when = {.it_value = {.tv_nsec = 20 * 1000 * 1000}};
    if (timer_settime(timer, 0, &when, NULL) != 0)
        return 4;
    spin_until_signalled();
    return 0;
}
