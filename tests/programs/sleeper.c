/* Prints its pid and sleeps for a minute: a victim for an external kill. */
#include <stdio.h>
#include <unistd.h>

int main(void)
{
    printf("pid: %d\n", (int)getpid());
    fflush(stdout);
    sleep(60);
    return 0;
}
