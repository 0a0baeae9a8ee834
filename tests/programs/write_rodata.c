/* Writes into a string literal, which lives in a read-only mapping:
 * SIGSEGV, SEGV_ACCERR. Prints the literal's address first so the fault
 * address can be checked. */
#include <stdio.h>

void crash_write_rodata(char *text)
{
    text[0] = 'J'; // CRASH-LINE
}

void capitalize_greeting(void)
{
    char *greeting = "hello";

    printf("fault-address: %p\n", (void *)greeting);
    fflush(stdout);
    crash_write_rodata(greeting);
}

int main(void)
{
    capitalize_greeting();
    return 0;
}
