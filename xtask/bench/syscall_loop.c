/* 2,000,000 getppid() system calls: the cost a tracer adds to every system call. */
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ITERATIONS 2000000

int main(void)
{
	long sum = 0;
	for (long i = 0; i < ITERATIONS; i++)
		sum += syscall(SYS_getppid);
	return sum == 0;
}
