//! What each crash program must produce: the report contract's fields for
//! it, and the kernel facts they rest on (signal and code numbers, fault
//! address) that the crate's own unit tests verify without crashtrace.

/// What `signal.fault_address` must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAddress {
    /// Exactly this string.
    Exact(&'static str),
    /// The value the program printed on its `fault-address:` line.
    Printed,
    /// The faulting instruction (for SIGFPE and SIGILL the kernel reports
    /// the instruction pointer as `si_addr`), i.e. frame 0's address.
    InstructionPointer,
    /// Some address; where exactly varies from run to run.
    Any,
    /// `null`: the signal was sent, not raised by a fault.
    Null,
}

/// The stdout prefix of the line where programs print their fault address.
pub const FAULT_ADDRESS_PREFIX: &str = "fault-address:";

/// One crash program and the report it must produce.
#[derive(Clone, Copy, Debug)]
pub struct CrashSpec {
    /// The artifact to run (see [`crate::programs::build`]).
    pub program: &'static str,
    /// An artifact whose path is the program's only argument.
    pub arg_artifact: Option<&'static str>,
    /// `class`.
    pub class: &'static str,
    /// `signal.name` and `signal.number`.
    pub signal: (&'static str, i32),
    /// `signal.code_name` and `signal.code`.
    pub code: (&'static str, i32),
    pub fault_address: FaultAddress,
    /// The fault came from the CPU, so there is no sending process:
    /// `signal.sender` is null.
    pub kernel_sent: bool,
    /// The function the program crashes in.
    pub function: &'static str,
    /// Its frame's index is at most this (0: it is the faulting frame;
    /// more when it crashes inside a library call such as `abort()`).
    pub max_frame_index: usize,
    /// Functions that must follow it in `frames`, in this order (not
    /// necessarily adjacent): proof that unwinding went past frame 0.
    pub callers: &'static [&'static str],
    /// The source file with the `// CRASH-LINE` marker; the crashing
    /// frame's `file` must end with it.
    pub source: &'static str,
    /// The crashing frame's `line` must be the marked line. Off only for
    /// the stack overflow, whose faulting instruction is whichever one
    /// first touches the guard page.
    pub check_line: bool,
    /// The crashing frame's `module` must end with `/` and this.
    pub module: &'static str,
    /// `comm` of the crashing thread.
    pub comm: &'static str,
    /// The crash happens in a thread other than the main one.
    pub in_thread: bool,
}

const SIGSEGV: (&str, i32) = ("SIGSEGV", 11);

/// The defaults the specs below start from.
const fn base(
    program: &'static str,
    class: &'static str,
    signal: (&'static str, i32),
    code: (&'static str, i32),
) -> CrashSpec {
    CrashSpec {
        program,
        arg_artifact: None,
        class,
        signal,
        code,
        fault_address: FaultAddress::Any,
        kernel_sent: true,
        function: "",
        max_frame_index: 0,
        callers: &[],
        source: "",
        check_line: true,
        module: program,
        comm: program,
        in_thread: false,
    }
}

pub const NULL_DEREF: CrashSpec = CrashSpec {
    fault_address: FaultAddress::Exact("0x0"),
    function: "crash_null_deref",
    callers: &["store_answer", "main"],
    source: "null_deref.c",
    ..base(
        "null_deref",
        "null-pointer-dereference",
        SIGSEGV,
        ("SEGV_MAPERR", 1),
    )
};

/// Must match `WILD_ADDRESS` in `wild_pointer.c`.
pub const WILD_ADDRESS: &str = "0xdead0000";

pub const WILD_POINTER: CrashSpec = CrashSpec {
    fault_address: FaultAddress::Exact(WILD_ADDRESS),
    function: "crash_wild_pointer",
    callers: &["read_through_wild_pointer", "main"],
    source: "wild_pointer.c",
    ..base(
        "wild_pointer",
        "invalid-memory-access",
        SIGSEGV,
        ("SEGV_MAPERR", 1),
    )
};

pub const WRITE_RODATA: CrashSpec = CrashSpec {
    fault_address: FaultAddress::Printed,
    function: "crash_write_rodata",
    callers: &["capitalize_greeting", "main"],
    source: "write_rodata.c",
    ..base(
        "write_rodata",
        "memory-permission-violation",
        SIGSEGV,
        ("SEGV_ACCERR", 2),
    )
};

pub const STACK_OVERFLOW: CrashSpec = CrashSpec {
    function: "crash_stack_overflow",
    callers: &["crash_stack_overflow"],
    source: "stack_overflow.c",
    check_line: false,
    ..base(
        "stack_overflow",
        "stack-overflow",
        SIGSEGV,
        ("SEGV_MAPERR", 1),
    )
};

pub const DIV_ZERO: CrashSpec = CrashSpec {
    fault_address: FaultAddress::InstructionPointer,
    function: "crash_div_zero",
    callers: &["average", "main"],
    source: "div_zero.c",
    ..base(
        "div_zero",
        "divide-by-zero",
        ("SIGFPE", 8),
        ("FPE_INTDIV", 1),
    )
};

pub const SIGBUS: CrashSpec = CrashSpec {
    fault_address: FaultAddress::Printed,
    function: "crash_sigbus",
    callers: &["read_truncated_mapping", "main"],
    source: "sigbus.c",
    ..base("sigbus", "bus-error", ("SIGBUS", 7), ("BUS_ADRERR", 2))
};

pub const TRAP: CrashSpec = CrashSpec {
    fault_address: FaultAddress::InstructionPointer,
    function: "crash_trap",
    callers: &["check_invariant", "main"],
    source: "trap.c",
    ..base(
        "trap",
        "illegal-instruction",
        ("SIGILL", 4),
        ("ILL_ILLOPN", 2),
    )
};

pub const ABORT: CrashSpec = CrashSpec {
    fault_address: FaultAddress::Null,
    // Sent by the process itself; whether that shows as a sender is not
    // part of the contract.
    kernel_sent: false,
    function: "crash_abort",
    // Below it: abort, raise, pthread_kill and its inlined helpers.
    max_frame_index: 8,
    callers: &["give_up", "main"],
    source: "abort.c",
    ..base("abort", "abort", ("SIGABRT", 6), ("SI_TKILL", -6))
};

pub const THREAD_CRASH: CrashSpec = CrashSpec {
    fault_address: FaultAddress::Exact("0x0"),
    function: "crash_thread_null_deref",
    callers: &["worker_main"],
    source: "thread_crash.c",
    comm: "worker-crash",
    in_thread: true,
    ..base(
        "thread_crash",
        "null-pointer-dereference",
        SIGSEGV,
        ("SEGV_MAPERR", 1),
    )
};

pub const DLOPEN_CRASH: CrashSpec = CrashSpec {
    arg_artifact: Some("libcrashy.so"),
    fault_address: FaultAddress::Exact("0x0"),
    function: "crashy_fault",
    callers: &["load_and_call_crashy", "main"],
    source: "libcrashy.c",
    module: "libcrashy.so",
    ..base(
        "dlopen_crash",
        "null-pointer-dereference",
        SIGSEGV,
        ("SEGV_MAPERR", 1),
    )
};

pub const PLT_CRASH: CrashSpec = CrashSpec {
    // Frame 0 is the stub `getppid@plt`, which has no source line; the
    // call to it is the marked line.
    function: "ask_parent",
    max_frame_index: 1,
    callers: &["main"],
    source: "plt_crash.c",
    ..base(
        "plt_crash",
        "memory-permission-violation",
        SIGSEGV,
        ("SEGV_ACCERR", 2),
    )
};

/// The frame name of the sigreturn trampoline: where a signal handler
/// returns to, and the signal frame that unwinding crosses.
pub const SIGRETURN_TRAMPOLINE: &str = "__restore_rt";

pub const HANDLER_CRASH: CrashSpec = CrashSpec {
    fault_address: FaultAddress::Exact("0x0"),
    function: "crash_in_handler",
    callers: &[
        "on_usr1",
        SIGRETURN_TRAMPOLINE,
        "spin_until_signalled",
        "main",
    ],
    source: "handler_crash.c",
    ..base(
        "handler_crash",
        "null-pointer-dereference",
        SIGSEGV,
        ("SEGV_MAPERR", 1),
    )
};

/// Every crash program.
pub const ALL: &[CrashSpec] = &[
    NULL_DEREF,
    WILD_POINTER,
    WRITE_RODATA,
    STACK_OVERFLOW,
    DIV_ZERO,
    SIGBUS,
    TRAP,
    ABORT,
    THREAD_CRASH,
    DLOPEN_CRASH,
    PLT_CRASH,
    HANDLER_CRASH,
];

/// The external kill of `sleeper`: class, signal and code.
pub const KILLED_CLASS: &str = "killed-by-signal";
pub const SIGKILL: (&str, i32) = ("SIGKILL", 9);
pub const SI_USER: (&str, i32) = ("SI_USER", 0);
