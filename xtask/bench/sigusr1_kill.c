/*
 * The cheapest handled-SIGUSR1 loop: 300,000 kill(getpid(), SIGUSR1) with
 * an empty handler. SA_NODEFER spares the kernel blocking SIGUSR1 for the
 * handler's duration; what remains per signal is the kill() system call,
 * the delivery and rt_sigreturn.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define ITERATIONS 300000

static void on_usr1(int sig)
{
	(void)sig;
}

int main(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
	sa.sa_flags = SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGUSR1, &sa, NULL) != 0) {
		perror("sigaction");
		return 2;
	}

	pid_t self = getpid();
	for (long i = 0; i < ITERATIONS; i++) {
		if (kill(self, SIGUSR1) != 0) {
			perror("kill");
			return 2;
		}
	}
	return 0;
}
