/* Prints its pid and sleeps for a minute: a victim for an external kill. */
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

int main(void)
{
    /* A shell without job control starts background commands with SIGINT
     * and SIGQUIT ignored; the victim takes the default actions whoever
     * started it. */
    int sigs[] = {SIGINT, SIGQUIT, SIGHUP, SIGTERM, SIGUSR1, SIGUSR2};
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        signal(sigs[i], SIG_DFL);
    printf("pid: %d\n", (int)getpid());
    fflush(stdout);
    sleep(60);
    return 0;
}
