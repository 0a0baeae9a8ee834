/* Integer division by zero: SIGFPE, FPE_INTDIV. The operands are volatile
 * so the division happens at run time. */
int crash_div_zero(volatile int numerator, volatile int denominator)
{
    return numerator / denominator; // CRASH-LINE
}

int average(int total, int count)
{
    return crash_div_zero(total, count);
}

int main(void)
{
    volatile int total = 42;
    volatile int count = 0;

    return average(total, count);
}
