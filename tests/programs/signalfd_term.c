/* A well-behaved service: SIGTERM is blocked and read from a signalfd,
 * then the program shuts down cleanly. The SIGTERM it receives is no crash. */
#include <signal.h>
#include <stdio.h>
#include <sys/signalfd.h>
#include <unistd.h>

static int wait_for_term(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int fd = signalfd(-1, &set, 0);
    if (fd < 0)
        return 1;
    kill(getpid(), SIGTERM);
    struct signalfd_siginfo info;
    if (read(fd, &info, sizeof info) != sizeof info)
        return 1;
    printf("received: %s\n", info.ssi_signo == SIGTERM ? "SIGTERM" : "other");
    return 0;
}

int main(void) {
    return wait_for_term();
}
