/* Faults inside a PLT stub: the pages holding the executable's GOT are
 * made inaccessible, so the stub `getppid@plt` faults on its first
 * instruction, the indirect jump `jmp *GOT(%rip)` that reads its GOT slot:
 * the instruction pointer is in the PLT, and the caller's return address
 * is on top of the stack. Built with `-z lazy`, so the slots live in
 * `.got.plt`, in the writable segment that `.data` and `.bss` follow.
 * Fault: SIGSEGV, SEGV_ACCERR, at the GOT slot. */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

extern char _GLOBAL_OFFSET_TABLE_[];
/* In .bss, after .got.plt and .data in the same segment. */
static char after_got;

__attribute__((noinline)) int ask_parent(void)
{
    return (int)getppid(); // CRASH-LINE
}

__attribute__((noinline)) void lock_got(void)
{
    uintptr_t start = (uintptr_t)_GLOBAL_OFFSET_TABLE_ & ~(uintptr_t)4095;
    uintptr_t end = ((uintptr_t)&after_got + 4096) & ~(uintptr_t)4095;
    fflush(stdout);
    if (mprotect((void *)start, end - start, PROT_NONE) != 0)
        _exit(3);
}

int main(void)
{
    lock_got();
    return ask_parent();
}
