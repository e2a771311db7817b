//! Arbitrary bytes, cut into arbitrary pieces in both directions, through the framers and
//! the tracker: nothing may panic, and the state must stay readable.
#![no_main]

use holdfast_wire::{Direction, Observer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first byte picks fresh or established; then each piece is [header, bytes...]
    // where the header's top bit is the direction and its low bits the piece length.
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut observer = if mode & 1 == 0 { Observer::new() } else { Observer::established() };
    while let Some((&header, tail)) = rest.split_first() {
        let direction = if header & 0x80 == 0 { Direction::Frontend } else { Direction::Backend };
        let len = usize::from(header & 0x7f).min(tail.len());
        observer.bytes(direction, &tail[..len]);
        rest = &tail[len..];
    }
    let snapshot = observer.state().snapshot();
    assert!(snapshot.bytes_sent + snapshot.bytes_received <= data.len() as u64);
});
