/* Executes the trap instruction (ud2 on x86_64): SIGILL, ILL_ILLOPN. */
void crash_trap(void)
{
    __builtin_trap(); // CRASH-LINE
}

void check_invariant(int holds)
{
    if (!holds)
        crash_trap();
}

int main(void)
{
    check_invariant(0);
    return 0;
}
