/* A second thread, named "worker-crash", writes through NULL while the
 * main thread waits for it: SIGSEGV, SEGV_MAPERR in a thread whose tid
 * differs from the pid. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>

void crash_thread_null_deref(int *target)
{
    *target = 1; // CRASH-LINE
}

void *worker_main(void *arg)
{
    (void)arg;
    pthread_setname_np(pthread_self(), "worker-crash");
    crash_thread_null_deref(NULL);
    return NULL;
}

int run_worker(void)
{
    pthread_t worker;

    if (pthread_create(&worker, NULL, worker_main, NULL) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        return 1;
    }
    pthread_join(worker, NULL);
    return 0;
}

int main(void)
{
    return run_worker();
}
