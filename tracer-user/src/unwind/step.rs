//! One unwinding step: from a frame's registers to its caller's.
//!
//! A CFI row says how to find the caller's CFA and registers from the
//! current ones. Registers are tracked in DWARF numbering; the ones the
//! x86-64 ABI makes callee-saved keep their value unless a rule says
//! otherwise, the rest become unknown, so a later rule that needs one fails
//! instead of silently using a stale value. DWARF expressions (used for
//! signal frames, whose registers live in the `ucontext` on the stack, and
//! for realigned stacks) run in gimli's evaluator with every memory access
//! answered from the snapshot.

use gimli::{EvaluationResult, Expression, Location, Value};

use super::{
    cfi::{Cfa, R, Row, Rule},
    fp::{MemoryError, Stack},
};

/// x86-64 DWARF register numbers.
pub mod dwarf {
    pub const RBP: u16 = 6;
    pub const RSP: u16 = 7;
    /// The return-address column, which holds the caller's RIP.
    pub const RA: u16 = 16;
}

const COUNT: usize = 17;
/// Preserved across calls by the x86-64 ABI: rbx, rbp, r12-r15.
pub const CALLEE_SAVED: [u16; 6] = [3, 6, 12, 13, 14, 15];
/// `pt_regs` word index for each DWARF register 0..=16 (rax, rdx, rcx,
/// rbx, rsi, rdi, rbp, rsp, r8-r15, rip).
const FROM_PT_REGS: [usize; COUNT] = [10, 12, 11, 5, 13, 14, 4, 19, 9, 8, 7, 6, 3, 2, 1, 0, 16];
/// Most operations one DWARF expression may execute.
const MAX_OPS: u32 = 1000;

/// Register values of one frame, with a bit per register that is known.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Regs {
    values: [u64; COUNT],
    known: u32,
}

impl Regs {
    pub fn from_pt_regs(regs: &[u64; tracer_common::REGS_LEN]) -> Self {
        Self {
            values: FROM_PT_REGS.map(|i| regs[i]),
            known: (1 << COUNT) - 1,
        }
    }

    pub fn get(&self, register: u16) -> Option<u64> {
        let i = usize::from(register);
        (i < COUNT && self.known & (1 << i) != 0).then(|| self.values[i])
    }

    pub fn set(&mut self, register: u16, value: Option<u64>) {
        let i = usize::from(register);
        if i < COUNT {
            self.values[i] = value.unwrap_or(0);
            match value {
                Some(_) => self.known |= 1 << i,
                None => self.known &= !(1 << i),
            }
        }
    }

    fn require(&self, register: u16) -> Result<u64, StepError> {
        self.get(register)
            .ok_or(StepError::UnknownRegister(register))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("the unwind rule needs {}, whose value is unknown", register_name(*.0))]
    UnknownRegister(u16),
    #[error("cannot evaluate a dwarf expression: {0}")]
    Expression(String),
    #[error("no unwind rule recovers the return address")]
    NoReturnRule,
    #[error("frame address arithmetic overflows")]
    Overflow,
}

pub fn register_name(register: u16) -> String {
    const NAMES: [&str; COUNT] = [
        "rax",
        "rdx",
        "rcx",
        "rbx",
        "rsi",
        "rdi",
        "rbp",
        "rsp",
        "r8",
        "r9",
        "r10",
        "r11",
        "r12",
        "r13",
        "r14",
        "r15",
        "the return address",
    ];
    NAMES
        .get(usize::from(register))
        .map_or_else(|| format!("register {register}"), |n| (*n).into())
}

/// The outcome of a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The return address is undefined: this was the outermost frame.
    None,
    /// The caller's registers; its RIP and RSP are always known.
    Frame(Regs),
}

fn offset(base: u64, delta: i64) -> Result<u64, StepError> {
    base.checked_add_signed(delta).ok_or(StepError::Overflow)
}

/// Applies `row` to the registers of the frame it covers.
pub fn apply(row: &Row, regs: &Regs, stack: &Stack<'_>) -> Result<Caller, StepError> {
    let cfa = match &row.cfa {
        Cfa::RegisterOffset {
            register,
            offset: delta,
        } => offset(regs.require(*register)?, *delta)?,
        Cfa::Expression(e) => evaluate(e, row.encoding, None, regs, stack)?,
    };
    let value = |register: u16, rule: &Rule| -> Result<Option<u64>, StepError> {
        Ok(match rule {
            Rule::Undefined | Rule::Unknown => None,
            Rule::SameValue => regs.get(register),
            Rule::Offset(n) => Some(stack.load(offset(cfa, *n)?)?),
            Rule::ValOffset(n) => Some(offset(cfa, *n)?),
            Rule::Register(r) => Some(regs.require(*r)?),
            Rule::Expression(e) => {
                let addr = evaluate(e, row.encoding, Some(cfa), regs, stack)?;
                Some(stack.load(addr)?)
            }
            Rule::ValExpression(e) => Some(evaluate(e, row.encoding, Some(cfa), regs, stack)?),
            Rule::Constant(c) => Some(*c),
        })
    };
    // The return address first: when it is undefined nothing else matters.
    let ra = match row.rule(row.return_register) {
        Some(rule) => value(row.return_register, rule)?,
        None => return Err(StepError::NoReturnRule),
    };
    let Some(ra) = ra else {
        return Ok(Caller::None);
    };
    let mut next = Regs::default();
    for register in CALLEE_SAVED {
        next.set(register, regs.get(register));
    }
    next.set(dwarf::RSP, Some(cfa));
    for (register, rule) in &row.rules {
        if usize::from(*register) < COUNT && *register != row.return_register {
            next.set(*register, value(*register, rule)?);
        }
    }
    next.set(dwarf::RA, Some(ra));
    if next.get(dwarf::RSP).is_none() {
        return Err(StepError::UnknownRegister(dwarf::RSP));
    }
    Ok(Caller::Frame(next))
}

/// Runs a CFI expression. Register rules start with the CFA on the stack;
/// the result is the computed address or value.
fn evaluate(
    expr: &Expression<R>,
    encoding: gimli::Encoding,
    cfa: Option<u64>,
    regs: &Regs,
    stack: &Stack<'_>,
) -> Result<u64, StepError> {
    let failed = |e: gimli::Error| StepError::Expression(e.to_string());
    let mut eval = expr.clone().evaluation(encoding);
    eval.set_max_iterations(MAX_OPS);
    if let Some(cfa) = cfa {
        eval.set_initial_value(cfa);
    }
    let mut state = eval.evaluate().map_err(failed)?;
    loop {
        state = match state {
            EvaluationResult::Complete => break,
            EvaluationResult::RequiresMemory {
                address,
                size,
                space: None,
                base_type,
            } if base_type.0 == 0 => {
                let value = stack
                    .read_sized(address, size)
                    .ok_or_else(|| stack.miss(address))?;
                eval.resume_with_memory(Value::Generic(value))
                    .map_err(failed)?
            }
            EvaluationResult::RequiresRegister {
                register,
                base_type,
            } if base_type.0 == 0 => {
                let value = regs.require(register.0)?;
                eval.resume_with_register(Value::Generic(value))
                    .map_err(failed)?
            }
            other => {
                let what = match other {
                    EvaluationResult::RequiresMemory { .. } => "a typed memory read",
                    EvaluationResult::RequiresRegister { .. } => "a typed register",
                    EvaluationResult::RequiresTls(_) => "thread-local storage",
                    EvaluationResult::RequiresCallFrameCfa => "the call frame cfa",
                    EvaluationResult::RequiresFrameBase => "a frame base",
                    _ => "an operation cfi does not allow",
                };
                return Err(StepError::Expression(format!("it needs {what}")));
            }
        };
    }
    match eval.as_result() {
        [piece] if piece.size_in_bits.is_none() => match piece.location {
            Location::Address { address } => Ok(address),
            Location::Value { value } => value.to_u64(u64::MAX).map_err(failed),
            _ => Err(StepError::Expression("it does not yield an address".into())),
        },
        _ => Err(StepError::Expression("it does not yield one value".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expr(bytes: &[u8]) -> Expression<R> {
        Expression(R::new(bytes.to_vec().into(), gimli::RunTimeEndian::Little))
    }

    fn encoding() -> gimli::Encoding {
        gimli::Encoding {
            format: gimli::Format::Dwarf32,
            version: 1,
            address_size: 8,
        }
    }

    fn row(cfa: Cfa, rules: Vec<(u16, Rule)>) -> Row {
        Row {
            cfa,
            rules,
            return_register: 16,
            signal: false,
            encoding: encoding(),
        }
    }

    fn regs(sp: u64, bp: u64) -> Regs {
        let mut r = Regs::default();
        r.set(dwarf::RSP, Some(sp));
        r.set(dwarf::RBP, Some(bp));
        r.set(0, Some(0xaaaa));
        r.set(dwarf::RA, Some(0x1234));
        r
    }

    fn words(base: u64, values: &[u64]) -> (u64, Vec<u8>) {
        (base, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    #[test]
    fn offset_rules_restore_callee_saved_and_forget_the_rest() {
        let (base, bytes) = words(0x7000, &[0x11, 0x22, 0x5555]);
        let stack = Stack {
            base,
            bytes: &bytes,
            region: None,
            extra: &[],
        };
        let r = row(
            Cfa::RegisterOffset {
                register: 7,
                offset: 24,
            },
            vec![(6, Rule::Offset(-16)), (16, Rule::Offset(-8))],
        );
        let Caller::Frame(next) = apply(&r, &regs(0x7000, 0x99), &stack).unwrap() else {
            panic!()
        };
        assert_eq!(next.get(dwarf::RA), Some(0x5555));
        assert_eq!(next.get(dwarf::RBP), Some(0x22));
        assert_eq!(next.get(dwarf::RSP), Some(0x7018));
        assert_eq!(next.get(0), None, "rax is not preserved across calls");
    }

    #[test]
    fn undefined_return_address_is_the_outermost_frame() {
        let stack = Stack {
            base: 0x7000,
            bytes: &[],
            region: None,
            extra: &[],
        };
        let r = row(
            Cfa::RegisterOffset {
                register: 7,
                offset: 8,
            },
            vec![(16, Rule::Undefined)],
        );
        assert_eq!(apply(&r, &regs(0x7000, 0), &stack), Ok(Caller::None));
        let r = row(
            Cfa::RegisterOffset {
                register: 7,
                offset: 8,
            },
            vec![],
        );
        assert_eq!(
            apply(&r, &regs(0x7000, 0), &stack),
            Err(StepError::NoReturnRule)
        );
    }

    #[test]
    fn expressions_read_only_the_snapshot() {
        // CFA = [rsp + 8] (DW_OP_breg7 8; DW_OP_deref), RA at CFA - 8.
        let (base, bytes) = words(0x7000, &[0, 0x7020, 0, 0x4242]);
        let stack = Stack {
            base,
            bytes: &bytes,
            region: None,
            extra: &[],
        };
        let cfa = Cfa::Expression(expr(&[0x77, 8, 0x06]));
        let r = row(cfa.clone(), vec![(16, Rule::Offset(-8))]);
        let Caller::Frame(next) = apply(&r, &regs(0x7000, 0), &stack).unwrap() else {
            panic!()
        };
        assert_eq!(
            (next.get(dwarf::RSP), next.get(dwarf::RA)),
            (Some(0x7020), Some(0x4242))
        );
        // RA = [CFA + 0x1000]: beyond the snapshot.
        let far = row(cfa, vec![(16, Rule::Expression(expr(&[0x23, 0x80, 0x20])))]);
        let err = apply(&far, &regs(0x7000, 0), &stack).unwrap_err();
        assert!(matches!(
            err,
            StepError::Memory(MemoryError::BeyondSnapshot { addr: 0x8020, .. })
        ));
        // An expression that needs TLS, and one that loops forever.
        let tls = row(Cfa::Expression(expr(&[0x9b])), vec![]);
        assert!(matches!(
            apply(&tls, &regs(0x7000, 0), &stack),
            Err(StepError::Expression(_))
        ));
        let spin = row(Cfa::Expression(expr(&[0x2f, 0xfd, 0xff])), vec![]);
        assert!(matches!(
            apply(&spin, &regs(0x7000, 0), &stack),
            Err(StepError::Expression(_))
        ));
    }

    #[test]
    fn unknown_registers_are_reported() {
        let stack = Stack {
            base: 0x7000,
            bytes: &[],
            region: None,
            extra: &[],
        };
        let r = row(
            Cfa::RegisterOffset {
                register: 3,
                offset: 8,
            },
            vec![(16, Rule::Offset(-8))],
        );
        let err = apply(&r, &regs(0x7000, 0), &stack).unwrap_err();
        assert_eq!(err, StepError::UnknownRegister(3));
        assert!(err.to_string().contains("rbx"));
    }
}
