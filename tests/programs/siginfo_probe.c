/* Test-support preload library, not a crash program: reports the siginfo
 * of the first fatal fault, so the harness can check that each program
 * crashes the way its expectations say without crashtrace.
 *
 * LD_PRELOAD'ed, it installs a one-shot handler that writes
 *   siginfo-probe: signo=11 code=1 addr=0x0 pid=123 tid=124 comm=worker-crash
 * to stderr and returns. SA_RESETHAND restores the default action first,
 * so the program then dies of the same signal exactly as it would without
 * the probe. Programs that install their own handlers replace it. */
#define _GNU_SOURCE
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static char alternate_stack[64 * 1024];

static char *append(char *out, const char *text)
{
    while (*text)
        *out++ = *text++;
    return out;
}

static char *append_number(char *out, unsigned long value, unsigned base, int negative)
{
    char digits[32];
    int len = 0;

    if (negative)
        *out++ = '-';
    do {
        digits[len++] = "0123456789abcdef"[value % base];
        value /= base;
    } while (value != 0);
    while (len > 0)
        *out++ = digits[--len];
    return out;
}

static char *append_int(char *out, long value)
{
    return append_number(out, value < 0 ? -(unsigned long)value : (unsigned long)value, 10,
                         value < 0);
}

static void report(int signo, siginfo_t *info, void *context)
{
    char line[256];
    char comm[17] = { 0 };
    char *out = line;

    (void)context;
    prctl(PR_GET_NAME, comm);
    out = append(out, "siginfo-probe: signo=");
    out = append_int(out, signo);
    out = append(out, " code=");
    out = append_int(out, info->si_code);
    out = append(out, " addr=0x");
    out = append_number(out, (unsigned long)info->si_addr, 16, 0);
    out = append(out, " pid=");
    out = append_int(out, getpid());
    out = append(out, " tid=");
    out = append_int(out, gettid());
    out = append(out, " comm=");
    out = append(out, comm);
    out = append(out, "\n");
    write(STDERR_FILENO, line, (size_t)(out - line));
}

__attribute__((constructor)) static void install_probe(void)
{
    static const int signals[] = { SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT };
    stack_t stack = { .ss_sp = alternate_stack, .ss_size = sizeof(alternate_stack) };
    struct sigaction action;

    sigaltstack(&stack, NULL);
    memset(&action, 0, sizeof(action));
    action.sa_sigaction = report;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
    sigemptyset(&action.sa_mask);
    for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
        sigaction(signals[i], &action, NULL);
}
