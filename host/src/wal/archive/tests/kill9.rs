//! A real `kill -9`: this test binary (the crate's whole `--lib` test executable) is started
//! again as a child that runs only `kill9_child_writer`, which appends WAL in a loop (group
//! commit, flushing as it goes) and prints each flushed LSN; the parent SIGKILLs it at an
//! arbitrary moment, reopens the archive and checks every LSN the child reported.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::super::{ArchiveConfig, ArchiveWriter, FlushPolicy};
use super::common::{MIB, read_range, wal};
use crate::wal::Lsn;

const CHILD_DIR: &str = "WAL_ARCHIVE_KILL9_DIR";
/// The child stops by itself after this, should the parent never kill it.
const CHILD_LIFETIME: Duration = Duration::from_secs(60);
const ORIGIN: Lsn = Lsn(0x2_0000_0000 + 3 * MIB + 4321);

fn config() -> ArchiveConfig {
    ArchiveConfig {
        flush: FlushPolicy::Group { max_bytes: 200_000, max_delay: Duration::from_millis(2) },
        ..ArchiveConfig::for_test()
    }
}

/// The libtest name of `kill9_child_writer`: its module path without the crate name, so the
/// filter follows this file wherever it moves.
fn child_test_name() -> String {
    let module = module_path!().split_once("::").map_or(module_path!(), |(_crate, path)| path);
    format!("{module}::kill9_child_writer")
}

/// The child's body; a no-op in a normal test run.
#[test]
fn kill9_child_writer() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let mut w = ArchiveWriter::open(&dir, config()).expect("child open");
    let mut pos = if w.timeline().is_some() { w.written_lsn() } else { ORIGIN };
    let started = Instant::now();
    let mut out = std::io::stdout().lock();
    let mut i = 0u64;
    let mut reported = Lsn::INVALID;
    while started.elapsed() < CHILD_LIFETIME {
        let n = 1 + (i * 7919 % 90_000) as usize;
        w.append(1, pos, &wal(pos, n)).expect("child append");
        pos = Lsn(pos.0 + n as u64);
        i += 1;
        if w.flushed_lsn() != reported {
            reported = w.flushed_lsn();
            writeln!(out, "FLUSHED {reported}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[test]
fn kill9_mid_segment_leaves_an_archive_that_reopens_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let filter = child_test_name();
    let mut highest = Lsn::INVALID;
    // Three lives: each child resumes where the previous one's durable WAL ended.
    for (round, stop_after) in [(0, 3 * MIB + 123_457), (1, 2 * MIB + 777_777), (2, 4 * MIB + 31_337)] {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([filter.as_str(), "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, tmp.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let start = if highest == Lsn::INVALID { ORIGIN } else { highest };
        let mut printed = Vec::new();
        for line in BufReader::new(child.stdout.take().unwrap()).lines() {
            let Some(lsn) = line.unwrap().strip_prefix("FLUSHED ").map(|l| l.parse::<Lsn>().unwrap()) else {
                continue;
            };
            printed.push(lsn);
            if lsn.bytes_since(start) >= stop_after {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let last = *printed.last().expect("child reported flushes");
        assert!(printed.windows(2).all(|p| p[0] < p[1]), "round {round}: flushed went backwards");

        let w = ArchiveWriter::open(tmp.path(), config()).unwrap();
        let flushed = w.flushed_lsn();
        assert!(flushed >= last, "round {round}: reopened at {flushed}, child had reported {last}");
        // Every byte the child ever reported flushed is there, in every round's WAL.
        let got = read_range(&w.reader(), 1, ORIGIN, flushed);
        assert!(got == wal(ORIGIN, got.len()), "round {round}: WAL differs from what was written");
        // Past the flushed point the partial segment's WAL is zeros (its trailer holds the
        // flush record).
        let seg = crate::wal::WalSegmentSize::new(MIB).unwrap();
        let partial = tmp.path().join(seg.partial_name(1, seg.segno(flushed)));
        if let Ok(bytes) = std::fs::read(&partial) {
            assert!(
                bytes[seg.offset(flushed) as usize..MIB as usize].iter().all(|&b| b == 0),
                "round {round}"
            );
        }
        // Every complete segment is exactly the segment size.
        for name in super::common::wal_names(tmp.path()).iter().filter(|n| !n.ends_with(".partial")) {
            assert_eq!(std::fs::metadata(tmp.path().join(name)).unwrap().len(), MIB, "round {round}: {name}");
        }
        highest = flushed;
        drop(w);
    }
    assert!(highest.bytes_since(ORIGIN) > 9 * MIB);
}
