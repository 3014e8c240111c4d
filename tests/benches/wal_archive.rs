//! Append + fsync throughput of the WAL archive: 16 MiB segments, 128 KiB appends, fsync per
//! append vs group commit per 1 MiB, zero-filled vs sparse segments, and a raw
//! pwrite+fdatasync loop into preallocated files (no archive, no state file) as the disk's
//! baseline.
//!
//! Run: `cargo bench -p tandem --bench wal_archive`. Knobs: WAL_ARCHIVE_MIB (MiB per run, 128),
//! WAL_ARCHIVE_ROUNDS (3), WAL_ARCHIVE_ONLY (run only scenarios whose label contains this),
//! WAL_ARCHIVE_DIR (where the work folders go, default target/; real disk, not tmpfs).
//! Scenarios are interleaved round by round, because a shared VM disk's fsync latency drifts;
//! the median and range are printed. Asserts nothing.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tandem::wal::Lsn;
use tandem::wal::archive::{ArchiveConfig, ArchiveWriter, FlushPolicy, SegmentInit};

const MIB: u64 = 1024 * 1024;
const SEGMENT: u64 = 16 * MIB;
const WRITE: usize = 128 * 1024;

#[derive(Clone, Copy)]
enum Scenario {
    Archive(FlushPolicy, SegmentInit),
    /// pwrite into preallocated files, fdatasync every this many bytes.
    Raw(u64),
}

fn main() {
    let knob = |name: &str| std::env::var(name).ok();
    let total = knob("WAL_ARCHIVE_MIB").and_then(|a| a.parse().ok()).unwrap_or(128u64) * MIB;
    let rounds = knob("WAL_ARCHIVE_ROUNDS").and_then(|a| a.parse().ok()).unwrap_or(3usize).max(1);
    let only = knob("WAL_ARCHIVE_ONLY").unwrap_or_default();
    // CARGO_BIN_EXE_tandem is <target>/release/tandem.
    let target = Path::new(env!("CARGO_BIN_EXE_tandem")).parent().and_then(Path::parent).unwrap();
    let base = knob("WAL_ARCHIVE_DIR").map_or_else(|| target.to_path_buf(), PathBuf::from);
    std::fs::create_dir_all(&base).unwrap();
    let group = FlushPolicy::Group { max_bytes: MIB, max_delay: Duration::from_secs(1) };
    let scenarios: Vec<(&str, Scenario)> = [
        ("archive, fsync per 1 MiB (group), zeroed", Scenario::Archive(group, SegmentInit::Zeroed)),
        ("archive, fsync per 1 MiB (group), sparse", Scenario::Archive(group, SegmentInit::Sparse)),
        (
            "archive, fsync per 128 KiB write, zeroed",
            Scenario::Archive(FlushPolicy::EveryAppend, SegmentInit::Zeroed),
        ),
        (
            "archive, fsync per 128 KiB write, sparse",
            Scenario::Archive(FlushPolicy::EveryAppend, SegmentInit::Sparse),
        ),
        ("raw pwrite+fdatasync per 1 MiB", Scenario::Raw(MIB)),
        ("raw pwrite+fdatasync per 128 KiB", Scenario::Raw(WRITE as u64)),
    ]
    .into_iter()
    .filter(|(label, _)| label.contains(&only))
    .collect();

    println!("{} MiB per run, 16 MiB segments, 128 KiB writes, {rounds} rounds", total / MIB);
    let mut results = vec![Vec::new(); scenarios.len()];
    for _ in 0..rounds {
        for (i, (_, scenario)) in scenarios.iter().enumerate() {
            let tmp = tempfile::tempdir_in(&base).unwrap();
            let took = run(*scenario, tmp.path(), total);
            results[i].push(total as f64 / 1e6 / took.as_secs_f64());
        }
    }
    for ((label, _), mut mbs) in scenarios.iter().zip(results) {
        mbs.sort_by(f64::total_cmp);
        let (lo, mid, hi) = (mbs[0], mbs[mbs.len() / 2], mbs[mbs.len() - 1]);
        println!("{label:<42} median {mid:>7.1} MB/s   range {lo:.1}..{hi:.1}");
    }
}

fn run(scenario: Scenario, dir: &Path, total: u64) -> Duration {
    let chunk: Vec<u8> = (0..WRITE).map(|i| (i * 31 % 251) as u8).collect();
    let started = Instant::now();
    match scenario {
        Scenario::Archive(flush, segment_init) => {
            let config = ArchiveConfig {
                segment_size: SEGMENT,
                flush,
                segment_init,
                disk_cap_bytes: None,
                ..ArchiveConfig::default()
            };
            let mut w = ArchiveWriter::open(dir, config).unwrap();
            let mut pos = Lsn(0);
            while pos.0 < total {
                w.append(1, pos, &chunk).unwrap();
                pos = Lsn(pos.0 + WRITE as u64);
            }
            w.close().unwrap();
        }
        Scenario::Raw(sync_every) => {
            let mut file = None;
            let mut pos = 0u64;
            while pos < total {
                if pos.is_multiple_of(SEGMENT) {
                    let f = OpenOptions::new()
                        .create(true)
                        .truncate(true)
                        .write(true)
                        .open(dir.join(format!("seg{}", pos / SEGMENT)))
                        .unwrap();
                    f.set_len(SEGMENT).unwrap();
                    file = Some(f);
                }
                let Some(f) = file.as_ref() else { unreachable!("opened at offset 0") };
                f.write_all_at(&chunk, pos % SEGMENT).unwrap();
                pos += WRITE as u64;
                if pos.is_multiple_of(sync_every) {
                    f.sync_data().unwrap();
                }
            }
        }
    }
    started.elapsed()
}
