/* Forks and execs /bin/true 1,000 times, waiting for each child. */
#include <stdio.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define ITERATIONS 1000

int main(void)
{
	for (int i = 0; i < ITERATIONS; i++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 2;
		}
		if (pid == 0) {
			execl("/bin/true", "true", (char *)NULL);
			_exit(127);
		}
		int status;
		if (waitpid(pid, &status, 0) != pid) {
			perror("waitpid");
			return 2;
		}
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			fprintf(stderr, "spawn_true: child %d failed (status %#x)\n", i, status);
			return 1;
		}
	}
	return 0;
}
