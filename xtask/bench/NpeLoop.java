// Catches NullPointerExceptions in a loop, about one second's worth.
// HotSpot raises each of them from a SIGSEGV on the null access, which it
// handles itself. After roughly 100,000 such traps in one method the JIT
// switches to explicit null checks and the SIGSEGVs stop, so the count
// stays below that.
public class NpeLoop {
    static final int ITERATIONS = 60_000;

    static final class Box {
        int value;
    }

    static Box nothing;

    static int read(Box box) {
        return box.value;
    }

    public static void main(String[] args) {
        int iterations = args.length > 0 ? Integer.parseInt(args[0]) : ITERATIONS;
        long caught = 0;
        for (int i = 0; i < iterations; i++) {
            try {
                read(nothing);
            } catch (NullPointerException e) {
                caught++;
            }
        }
        if (caught != iterations) {
            System.err.println("NpeLoop: caught " + caught + " of " + iterations);
            System.exit(1);
        }
    }
}
