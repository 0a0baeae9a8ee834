/* Dies of SIGSEGV at once, writing to NULL; no core file is written. */
#include <stddef.h>
#include <sys/resource.h>

int main(void)
{
	struct rlimit no_core = {0, 0};
	setrlimit(RLIMIT_CORE, &no_core);

	volatile int *volatile null_ptr = NULL;
	*null_ptr = 1;
	return 0;
}
