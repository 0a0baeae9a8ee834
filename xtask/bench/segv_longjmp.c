/*
 * The cheapest handled-SIGSEGV loop: 200,000 faults, each left with
 * siglongjmp. SA_NODEFER keeps SIGSEGV unblocked inside the handler, so
 * neither sigsetjmp nor siglongjmp has to save or restore the signal mask:
 * one kernel entry (the fault) per signal, no system call.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#define ITERATIONS 200000

static sigjmp_buf recover_point;

static void on_segv(int sig)
{
	(void)sig;
	siglongjmp(recover_point, 1);
}

int main(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_segv;
	sa.sa_flags = SA_NODEFER;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, NULL) != 0) {
		perror("sigaction");
		return 2;
	}

	int *volatile null_ptr = NULL;
	volatile long recovered = 0;
	for (volatile long i = 0; i < ITERATIONS; i++) {
		if (sigsetjmp(recover_point, 0) == 0)
			*null_ptr = 1;
		else
			recovered++;
	}

	if (recovered != ITERATIONS) {
		fprintf(stderr, "segv_longjmp: recovered %ld of %d\n", (long)recovered, ITERATIONS);
		return 1;
	}
	return 0;
}
