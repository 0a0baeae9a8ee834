//! Go's pc-value tables: how a value (stack pointer offset, file index,
//! line, inline tree index) changes over a function's instructions.
//!
//! A table is a run of pairs, each a zigzag-encoded value delta then an
//! instruction count (times the minimum instruction size), both unsigned
//! LEB128. The value starts at -1 at the function's entry; a pair means
//! "from here the value is v for the next n bytes". A zero value delta after
//! the first pair ends the table. Every pair consumes at least two bytes, so
//! a walk over a corrupt table ends when its bytes do.

use super::buildinfo::uvarint;

/// The value the table starting at `data` gives at `target`, for a
/// function that starts at `entry`; `None` when `target` is past the table's
/// end or the table is truncated.
pub(crate) fn value_at(data: &[u8], entry: u64, target: u64, quantum: u8) -> Option<i32> {
    let mut pc = entry;
    let mut value: i32 = -1;
    let mut rest = data;
    let mut first = true;
    if target < entry {
        return None;
    }
    loop {
        let (delta, n) = uvarint(rest)?;
        if delta == 0 && !first {
            return None;
        }
        first = false;
        rest = &rest[n..];
        let delta = u32::try_from(delta).ok()?;
        let signed = ((delta >> 1) as i32) ^ -((delta & 1) as i32);
        value = value.wrapping_add(signed);
        let (count, n) = uvarint(rest)?;
        rest = &rest[n..];
        pc = pc.checked_add(count.checked_mul(u64::from(quantum))?)?;
        if target < pc {
            return Some(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_through_values() {
        // -1 +1 = 0 for 4 bytes, then +16 for 10 bytes, then -16 for 2.
        let table = [0x02, 0x04, 0x20, 0x0a, 0x1f, 0x02, 0x00];
        assert_eq!(value_at(&table, 0x100, 0x100, 1), Some(0));
        assert_eq!(value_at(&table, 0x100, 0x103, 1), Some(0));
        assert_eq!(value_at(&table, 0x100, 0x104, 1), Some(16));
        assert_eq!(value_at(&table, 0x100, 0x10d, 1), Some(16));
        assert_eq!(value_at(&table, 0x100, 0x10e, 1), Some(0));
        assert_eq!(value_at(&table, 0x100, 0x110, 1), None, "past the end");
        assert_eq!(value_at(&table, 0x100, 0xff, 1), None, "before entry");
        assert_eq!(value_at(&table[..3], 0x100, 0x105, 1), None, "truncated");
        assert_eq!(value_at(&[], 0x100, 0x100, 1), None);
        assert_eq!(value_at(&[0xff; 64], 0x100, 0x100, 1), None);
        let huge = [
            0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
        ];
        assert_eq!(value_at(&huge, 0x100, 0x200, 4), None, "pc overflows");
    }
}
