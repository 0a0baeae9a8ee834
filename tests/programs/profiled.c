/* Runs with a 100 Hz profiling timer (setitimer ITIMER_PROF, as a CPU
 * profiler does), spinning for the CPU seconds given as argv[1], prints
 * how many SIGPROFs it took, then exits, or with "crash" as argv[2]
 * dereferences NULL. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t ticks;

static void on_prof(int sig)
{
    (void)sig;
    ticks++;
}

int main(int argc, char **argv)
{
    double seconds = argc > 1 ? atof(argv[1]) : 2.0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_prof;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGPROF, &sa, NULL);
    struct itimerval every_10ms = {{0, 10000}, {0, 10000}};
    setitimer(ITIMER_PROF, &every_10ms, NULL);
    printf("pid: %d\n", (int)getpid());
    fflush(stdout);
    volatile unsigned long spin = 0;
    while ((double)clock() / CLOCKS_PER_SEC < seconds)
        spin++;
    printf("sigprof: %d\n", (int)ticks);
    fflush(stdout);
    if (argc > 2 && strcmp(argv[2], "crash") == 0) {
        volatile int *nothing = NULL;
        return *nothing; // CRASH-LINE
    }
    return 0;
}
