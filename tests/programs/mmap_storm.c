/* Two threads flip the protection of a populated region without pause, so
 * the process's mmap lock is held for writing, or awaited, most of the
 * time, while the main thread is killed with SIGKILL. No core dump gathers
 * the threads first: the capture of the dying thread's mappings meets the
 * writers and must wait them out rather than lose the mappings. */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#define REGION (512 << 10)

static volatile unsigned long rounds[2];

static void *churn(void *arg)
{
    volatile unsigned long *count = arg;
    char *p = mmap(NULL, REGION, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    memset(p, 1, REGION);
    for (;;) {
        mprotect(p, REGION, PROT_READ);
        mprotect(p, REGION, PROT_READ | PROT_WRITE);
        for (volatile int i = 0; i < 3000; i++)
            ;
        (*count)++;
    }
    return NULL;
}

void kill_self_during_mmap_storm(void)
{
    syscall(SYS_tgkill, getpid(), syscall(SYS_gettid), SIGKILL); // CRASH-LINE
}

int main(void)
{
    pthread_t threads[2];
    for (int i = 0; i < 2; i++) {
        if (pthread_create(&threads[i], NULL, churn, (void *)&rounds[i]) != 0) {
            fprintf(stderr, "pthread_create failed\n");
            return 1;
        }
    }
    /* Both writers are in full swing before the kill. */
    while (rounds[0] < 1000 || rounds[1] < 1000)
        ;
    kill_self_during_mmap_storm();
    return 0;
}
