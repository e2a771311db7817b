//! A short string that one writer updates and many readers copy, without a lock: a sequence
//! lock over four atomic words.

use std::sync::atomic::{fence, AtomicU64, Ordering};

/// Bytes a [`TagCell`] keeps; longer values are cut (command tags rarely exceed 20).
pub(crate) const TAG_MAX: usize = 32;
const WORDS: usize = TAG_MAX / 8;

/// A bounded string with a single writer (the tap) and lock-free readers.
#[derive(Default)]
#[repr(C)]
pub(crate) struct TagCell {
    seq: AtomicU64,
    len: AtomicU64,
    words: [AtomicU64; WORDS],
}

impl TagCell {
    /// Stores `value` (cut to [`TAG_MAX`] bytes). Must only be called by the one writer.
    pub(crate) fn write(&self, value: &[u8]) {
        let value = &value[..value.len().min(TAG_MAX)];
        let mut buf = [0u8; TAG_MAX];
        buf[..value.len()].copy_from_slice(value);
        let seq = self.seq.load(Ordering::Relaxed);
        self.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.len.store(value.len() as u64, Ordering::Relaxed);
        for (i, word) in self.words.iter().enumerate() {
            let mut chunk = [0u8; 8];
            chunk.copy_from_slice(&buf[i * 8..i * 8 + 8]);
            word.store(u64::from_ne_bytes(chunk), Ordering::Relaxed);
        }
        self.seq.store(seq.wrapping_add(2), Ordering::Release);
    }

    /// Copies the current value out; retries while a write is in progress.
    pub(crate) fn read(&self) -> String {
        loop {
            let before = self.seq.load(Ordering::Acquire);
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let len = self.len.load(Ordering::Relaxed) as usize;
            let mut buf = [0u8; TAG_MAX];
            for (i, word) in self.words.iter().enumerate() {
                buf[i * 8..i * 8 + 8].copy_from_slice(&word.load(Ordering::Relaxed).to_ne_bytes());
            }
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == before {
                return String::from_utf8_lossy(&buf[..len.min(TAG_MAX)]).into_owned();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn round_trip_and_cut() {
        let cell = TagCell::default();
        assert_eq!(cell.read(), "");
        cell.write(b"INSERT 0 1");
        assert_eq!(cell.read(), "INSERT 0 1");
        cell.write(&[b'x'; 40]);
        assert_eq!(cell.read(), "x".repeat(TAG_MAX));
    }

    #[test]
    fn readers_never_see_a_torn_value() {
        let cell = Arc::new(TagCell::default());
        let writer = {
            let cell = Arc::clone(&cell);
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    let value = if i % 2 == 0 { [b'a'; 30] } else { [b'b'; 30] };
                    cell.write(&value);
                }
            })
        };
        for _ in 0..20_000 {
            let seen = cell.read();
            assert!(
                seen.is_empty() || seen == "a".repeat(30) || seen == "b".repeat(30),
                "torn read: {seen}"
            );
        }
        writer.join().expect("writer thread");
    }
}
