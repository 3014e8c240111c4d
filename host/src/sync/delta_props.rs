//! Property tests of the whole engine: for random bases and new files, edited or unrelated,
//! patching the base with the delta of the new file against its signature gives the new file,
//! and an edited file costs no more literal bytes than its edits plus two blocks per edit.

use std::io::{Cursor, Read};

use proptest::prelude::*;

use super::*;
use crate::sync::patch::patch;
use crate::sync::signature::signature;

/// One edit of the base; positions are taken modulo the current length.
#[derive(Debug, Clone)]
enum Edit {
    Insert { at: usize, bytes: Vec<u8> },
    Delete { at: usize, len: usize },
    Replace { at: usize, bytes: Vec<u8> },
    Append(Vec<u8>),
    Truncate { keep: usize },
}

impl Edit {
    /// Applies the edit; returns how many new bytes it put in.
    fn apply(&self, data: &mut Vec<u8>) -> usize {
        let at = |at: usize| if data.is_empty() { 0 } else { at % (data.len() + 1) };
        match self {
            Edit::Insert { at: a, bytes } => {
                let a = at(*a);
                data.splice(a..a, bytes.iter().copied());
                bytes.len()
            }
            Edit::Delete { at: a, len } => {
                let a = at(*a);
                let end = (a + len).min(data.len());
                data.drain(a..end);
                0
            }
            Edit::Replace { at: a, bytes } => {
                let a = at(*a);
                let end = (a + bytes.len()).min(data.len());
                data.splice(a..end, bytes.iter().copied());
                bytes.len()
            }
            Edit::Append(bytes) => {
                data.extend_from_slice(bytes);
                bytes.len()
            }
            Edit::Truncate { keep } => {
                let keep = at(*keep);
                data.truncate(keep);
                0
            }
        }
    }
}

/// Random bytes, or bytes from a tiny alphabet so weak digests and whole blocks collide.
fn content(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..max),
        proptest::collection::vec(0u8..3, 0..max),
        (any::<u8>(), 0..max).prop_map(|(b, n)| vec![b; n]),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    let bytes = proptest::collection::vec(any::<u8>(), 0..300);
    prop_oneof![
        (any::<usize>(), bytes.clone()).prop_map(|(at, bytes)| Edit::Insert { at, bytes }),
        (any::<usize>(), 0..400usize).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), bytes.clone()).prop_map(|(at, bytes)| Edit::Replace { at, bytes }),
        bytes.prop_map(Edit::Append),
        any::<usize>().prop_map(|keep| Edit::Truncate { keep }),
    ]
}

/// Hands out at most `step` bytes per read, to cross every buffer boundary.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fn rebuild(old: &[u8], new: &[u8], bl: u32, step: usize) -> Delta {
    let sig = signature(old, old.len() as u64, bl).unwrap();
    let d = delta(&sig, Trickle { data: new, step }).unwrap();
    let mut out = Vec::new();
    patch(Cursor::new(old), &d, &mut out).unwrap();
    assert_eq!(out, new);
    assert!(d.ops.iter().all(|op| match op {
        DeltaOp::Literal(b) => !b.is_empty() && b.len() <= MAX_LITERAL,
        DeltaOp::Copy { count, .. } => *count > 0,
    }));
    d
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn edited_file_round_trips_within_literal_bound(
        old in content(8000),
        edits in proptest::collection::vec(edit(), 1..5),
        bl in prop_oneof![1u32..8, 8u32..300],
        step in prop_oneof![Just(usize::MAX), 1usize..100],
    ) {
        let mut new = old.clone();
        let inserted: usize = edits.iter().map(|e| e.apply(&mut new)).sum();
        let d = rebuild(&old, &new, bl, step);
        let bound = inserted as u64 + 2 * u64::from(bl) * edits.len() as u64;
        prop_assert!(d.literal_bytes() <= bound, "literal {} > bound {}", d.literal_bytes(), bound);
    }

    #[test]
    fn unrelated_file_round_trips(
        old in content(6000),
        new in content(6000),
        bl in 1u32..300,
        step in prop_oneof![Just(usize::MAX), 1usize..100],
    ) {
        rebuild(&old, &new, bl, step);
    }

    #[test]
    fn unchanged_file_is_all_copies(old in content(6000), bl in 1u32..300) {
        let d = rebuild(&old, &old, bl, usize::MAX);
        prop_assert_eq!(d.literal_bytes(), 0);
    }
}
