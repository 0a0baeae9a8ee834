/* Reads from an address nothing is mapped at: SIGSEGV, SEGV_MAPERR,
 * fault address 0xdead0000. */
#include <stdint.h>

#define WILD_ADDRESS 0xdead0000UL

int crash_wild_pointer(volatile int *wild)
{
    return *wild; // CRASH-LINE
}

int read_through_wild_pointer(void)
{
    return crash_wild_pointer((volatile int *)(uintptr_t)WILD_ADDRESS);
}

int main(void)
{
    return read_through_wild_pointer();
}
