//! Property: any sequence of appends (random sizes, across segments), flushes, crashes and
//! clean reopens leaves the archive holding exactly the written stream up to the flushed LSN,
//! and the flushed LSN never goes back. Failure seeds proptest saved are replayed from its
//! default place, `host/proptest-regressions/wal/archive/tests/props.txt`.

use std::time::Duration;

use proptest::prelude::*;

use super::super::{ArchiveConfig, ArchiveWriter, FlushPolicy, SegmentInit};
use super::common::{MIB, read_range, wal};
use crate::wal::Lsn;

#[derive(Clone, Debug)]
enum Op {
    Append(usize),
    /// Resend durable bytes from this far back (a reconnect), plus some new ones.
    Resend {
        back: usize,
        new: usize,
    },
    Flush,
    /// Drop the writer without flushing, then reopen.
    Crash,
    /// Close (flush) and reopen.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1usize..400_000).prop_map(Op::Append),
        1 => (1usize..300_000, 0usize..50_000).prop_map(|(back, new)| Op::Resend { back, new }),
        2 => Just(Op::Flush),
        2 => Just(Op::Crash),
        1 => Just(Op::Reopen),
    ]
}

fn config(group_bytes: u64, sparse: bool) -> ArchiveConfig {
    ArchiveConfig {
        flush: FlushPolicy::Group { max_bytes: group_bytes, max_delay: Duration::from_secs(10) },
        segment_init: if sparse { SegmentInit::Sparse } else { SegmentInit::Zeroed },
        ..ArchiveConfig::for_test()
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn archive_holds_the_stream_up_to_flushed(
        origin in 0u64..3 * MIB,
        group_bytes in 1u64..2 * MIB,
        sparse in any::<bool>(),
        ops in prop::collection::vec(op(), 1..24),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let config = config(group_bytes, sparse);
        let mut w = ArchiveWriter::open(tmp.path(), config.clone()).unwrap();
        let origin = Lsn(origin);
        w.append(1, origin, &[]).unwrap();
        let mut flushed = w.flushed_lsn();
        for op in ops {
            match op {
                Op::Append(n) => {
                    let at = w.written_lsn();
                    w.append(1, at, &wal(at, n)).unwrap();
                }
                Op::Resend { back, new } => {
                    let end = w.written_lsn();
                    let at = Lsn(end.0.saturating_sub(back as u64).max(origin.0));
                    w.append(1, at, &wal(at, (end.0 - at.0) as usize + new)).unwrap();
                }
                Op::Flush => { w.flush().unwrap(); }
                Op::Crash => {
                    drop(w);
                    w = ArchiveWriter::open(tmp.path(), config.clone()).unwrap();
                    prop_assert_eq!(w.written_lsn(), w.flushed_lsn());
                }
                Op::Reopen => {
                    let closed = w.close().unwrap();
                    w = ArchiveWriter::open(tmp.path(), config.clone()).unwrap();
                    prop_assert_eq!(w.flushed_lsn(), closed);
                }
            }
            prop_assert!(w.flushed_lsn() >= flushed, "flushed went back from {} to {}", flushed, w.flushed_lsn());
            prop_assert!(w.flushed_lsn() <= w.written_lsn());
            flushed = w.flushed_lsn();
        }
        drop(w);
        let w = ArchiveWriter::open(tmp.path(), config).unwrap();
        prop_assert_eq!(w.flushed_lsn(), flushed);
        let got = read_range(&w.reader(), 1, origin, flushed);
        prop_assert!(got == wal(origin, got.len()), "content differs from the written stream");
    }
}
