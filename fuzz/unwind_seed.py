# Run by seed.sh inside gdb: runs a program to its crash and writes an input
# for the unwind target (see fuzz_targets/unwind.rs for the layout) to the
# path in $SEED_OUT. Addresses in the program's libc code are moved to where
# the target maps its own copy of libc (LOW_BASE), so the walk goes through
# the real libc unwind tables.
import os
import struct

import gdb

LOW_BASE = 0x400000
SNAPSHOT_MAX = 5 * 4096
NAMES = ["r15", "r14", "r13", "r12", "rbp", "rbx", "r11", "r10", "r9", "r8",
         "rax", "rcx", "rdx", "rsi", "rdi", "orig_rax", "rip", "cs", "eflags",
         "rsp", "ss"]

gdb.execute("run", to_string=True)
inferior = gdb.selected_inferior()
libc = None
stack_end = None
rsp = int(gdb.parse_and_eval("$rsp")) & (2**64 - 1)
with open(f"/proc/{inferior.pid}/maps") as maps:
    for line in maps:
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        path = fields[5] if len(fields) > 5 else ""
        name = os.path.basename(path)
        if libc is None and "x" in fields[1] and name.startswith("libc"):
            libc = (start, end)
        if start <= rsp < end:
            stack_end = end
assert libc is not None and stack_end is not None


def move(word):
    if libc[0] <= word < libc[1]:
        return LOW_BASE + word - libc[0]
    return word


regs = []
for name in NAMES:
    try:
        value = int(gdb.parse_and_eval("$" + name)) & (2**64 - 1)
    except gdb.error:
        value = 0
    regs.append(move(value))
# orig_ax steers the target; zero asks for the kernel's snapshot base (the
# page holding SP) and the three fixed mappings.
regs[15] = 0
base = rsp & ~0xFFF
length = min(SNAPSHOT_MAX, stack_end - base)
stack = bytes(inferior.read_memory(base, length))
words = struct.unpack(f"<{length // 8}Q", stack[: length // 8 * 8])
with open(os.environ["SEED_OUT"], "wb") as out:
    out.write(struct.pack("<21Q", *regs))
    out.write(struct.pack(f"<{len(words)}Q", *(move(w) for w in words)))
