//! `events::decode` on arbitrary ring-buffer records.
//!
//! Records must be at least as long as their kind's struct, and a state
//! record is far longer than libFuzzer's default input length, so besides
//! the input itself the record is also decoded zero-padded to the size its
//! kind word asks for: every input then reaches the field decoding.
#![no_main]

use crashtrace::events::{Event, decode};
use libfuzzer_sys::fuzz_target;
use tracer_common::{ExitEvent, SignalEvent, StateEvent, kind};

fn check(bytes: &[u8]) {
    if let Ok(Event::State(state)) = decode(bytes) {
        assert!(state.snapshot.len() <= tracer_common::STACK_SNAPSHOT_MAX);
        assert!(state.kstack.len() <= tracer_common::KSTACK_MAX);
        assert!(state.mappings.len() <= tracer_common::MODULES_MAX);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let Some(word) = data.get(..4) else { return };
    let expected = match u32::from_ne_bytes([word[0], word[1], word[2], word[3]]) {
        kind::SIGNAL => size_of::<SignalEvent>(),
        kind::STATE => size_of::<StateEvent>(),
        kind::EXIT => size_of::<ExitEvent>(),
        _ => return,
    };
    if data.len() < expected {
        let mut padded = data.to_vec();
        padded.resize(expected, 0);
        check(&padded);
    }
});
