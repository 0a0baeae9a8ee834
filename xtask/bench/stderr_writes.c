/* 1,000,000 small write(2, ...) calls; run with stderr redirected to /dev/null. */
#include <stdio.h>
#include <unistd.h>

#define ITERATIONS 1000000

int main(void)
{
	static const char line[] = "stderr_writes: line\n";
	for (long i = 0; i < ITERATIONS; i++) {
		if (write(2, line, sizeof(line) - 1) != (ssize_t)(sizeof(line) - 1)) {
			perror("write");
			return 1;
		}
	}
	return 0;
}
