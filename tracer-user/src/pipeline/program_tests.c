/* Test program for the unwinder's tests (program_tests.rs): crashes in
 * the way argv[1] names, and records from a SA_SIGINFO handler what the
 * kernel side would capture: registers in pt_regs order, the stack from
 * the page holding the interrupted SP to the end of its mapping, and
 * /proc/self/maps, into the directory argv[2]. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

static const char *out;
static char maps[1 << 20];
int *volatile null_pointer;
volatile int sink;

static void save(const char *name, const void *data, size_t len) {
    char path[4096];
    strcpy(path, out);
    strcat(path, "/");
    strcat(path, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n <= 0) _exit(3);
        p += n;
        len -= n;
    }
    close(fd);
}

static void capture(int sig, siginfo_t *info, void *context) {
    (void)sig; (void)info;
    greg_t *g = ((ucontext_t *)context)->uc_mcontext.gregs;
    unsigned long regs[21] = {
        g[REG_R15], g[REG_R14], g[REG_R13], g[REG_R12], g[REG_RBP], g[REG_RBX],
        g[REG_R11], g[REG_R10], g[REG_R9], g[REG_R8], g[REG_RAX], g[REG_RCX],
        g[REG_RDX], g[REG_RSI], g[REG_RDI], (unsigned long)-1, g[REG_RIP], 0x33,
        g[REG_EFL], g[REG_RSP], 0x2b,
    };
    save("regs", regs, sizeof regs);
    int fd = open("/proc/self/maps", O_RDONLY);
    size_t len = 0;
    ssize_t n;
    while ((n = read(fd, maps + len, sizeof maps - 1 - len)) > 0) len += n;
    close(fd);
    save("maps", maps, len);
    unsigned long sp = g[REG_RSP], base = sp & ~4095UL, end = 0;
    for (char *line = maps; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : 0) {
        char *rest;
        unsigned long lo = strtoul(line, &rest, 16), hi = strtoul(rest + 1, 0, 16);
        if (sp >= lo && sp < hi) end = hi;
    }
    save("stack_base", &base, sizeof base);
    save("stack", (void *)base, end - base);
    _exit(0);
}

__attribute__((noinline)) int crash_leaf(int x) {
    *null_pointer = x;
    return x + 1;
}

__attribute__((noinline)) int middle_b(int x) {
    volatile char buffer[64];
    int kept = x * 7;
    buffer[x & 63] = (char)x;
    int r = crash_leaf(x + buffer[1]);
    return r + kept;
}

__attribute__((noinline)) int outer_a(int x) {
    int kept = x * 3;
    int r = middle_b(x + 1);
    return r + kept;
}

__attribute__((noinline)) void abort_b(int x) {
    sink = x;
    abort();
}

__attribute__((noinline)) int abort_a(int x) {
    int kept = x * 5;
    abort_b(x + 1);
    return kept + sink;
}

__attribute__((noinline)) int handler_leaf(int x) {
    *null_pointer = x;
    return 0;
}

static void on_usr1(int sig) {
    sink = handler_leaf(sig) + 1;
}

int main(int argc, char **argv) {
    out = argv[2];
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = capture;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, 0);
    sigaction(SIGABRT, &sa, 0);
    signal(SIGUSR1, on_usr1);
    int r = 0;
    if (!strcmp(argv[1], "segv")) r = outer_a(argc);
    else if (!strcmp(argv[1], "abort")) r = abort_a(argc);
    else if (!strcmp(argv[1], "handler")) r = raise(SIGUSR1);
    return r + sink;
}
