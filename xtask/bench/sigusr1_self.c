/* 300,000 SIGUSR1s sent to itself with kill(getpid()), each handled. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define ITERATIONS 300000

static volatile sig_atomic_t handled;

static void on_usr1(int sig)
{
	(void)sig;
	handled++;
}

int main(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_usr1;
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

	/* A signal sent to oneself and not blocked is delivered before kill() returns. */
	if (handled != ITERATIONS) {
		fprintf(stderr, "sigusr1_self: handled %ld of %d\n", (long)handled, ITERATIONS);
		return 1;
	}
	return 0;
}
