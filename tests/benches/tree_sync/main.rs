//! Tree sync beside rsync on generated trees of several shapes, with real processes (release
//! build): a primary `tandem daemon` serves the tree and `tandem sync once --json` pulls it on
//! the standby; rsync is a local `rsync -a --no-whole-file --delete --stats src/ dst/`, plain,
//! followed by one `sync` (the cheapest durable rsync: tandem's copy is durable, plain rsync's
//! is not), and with `--fsync`. Each tool syncs into its own destination.
//!
//! Shapes (`shapes.rs`): standard, deep (133,000 folders), million (1,000,000 files), shifting
//! (inserts into 300 MiB files). Steps per shape: (a) initial copy into an empty destination,
//! (b) a pass with no change, (c) the shape's edit, (r) 1,000 renames, (e) the edit again while
//! another process reads the whole tree in a loop, and (d) the event lag of single writes to a
//! following standby daemon with that reader running. Each step runs N rounds with the tools
//! interleaved (order rotated per round); before every timed run: `sync` and `echo 1 >
//! /proc/sys/vm/drop_caches`. Measured per run: wall time; CPU time (user + sys) of every
//! process involved (rsync and the children it reaps, from wait4; tandem's CLI from wait4 plus
//! the primary daemon's /proc/<pid>/stat delta); peak memory (ru_maxrss; the daemon's VmHWM,
//! reset before each run); bytes sent (rsync's "Total bytes sent", tandem's compressed
//! `wire_bytes`) and tandem's content bytes. Every copy is compared with the source after each
//! step that changes something. The report goes to stdout and target/tree_sync_report.md.
//!
//! Run: `cargo bench -p tandem --bench tree_sync` (as root, to drop caches). Knobs:
//! TREE_SYNC_SHAPES (standard,deep,million,shifting), TREE_SYNC_ROUNDS (2), TREE_SYNC_SCALE
//! (1.0: multiplies the file and folder counts), TREE_SYNC_DIR (where the work folder goes,
//! default target/; not tmpfs), TREE_SYNC_FSYNC (0 leaves `rsync --fsync` out),
//! TREE_SYNC_PERF (1: `perf record -g` of tandem's CLI and daemon per step), TREE_SYNC_TANDEM
//! (another tandem binary to measure, e.g. an older build), TREE_SYNC_GENERATE (a folder: only
//! generate the shapes' trees there, for a look by hand).

mod check;
#[path = "../../common.rs"]
mod common;
mod report;
mod run;
mod shapes;
mod tools;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::knob;
use report::{Results, ShapeReport};
use run::{Bench, Step, TOOLS};
use shapes::{Kind, Shape};

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

fn main() {
    let rounds = knob("TREE_SYNC_ROUNDS", 2).max(1) as usize;
    let scale: f64 =
        std::env::var("TREE_SYNC_SCALE").map_or(1.0, |v| v.parse().expect("TREE_SYNC_SCALE: a number"));
    let shapes: Vec<Kind> = std::env::var("TREE_SYNC_SHAPES")
        .unwrap_or_else(|_| "standard,deep,million,shifting".into())
        .split(',')
        .map(|s| Kind::parse(s.trim()).unwrap_or_else(|| panic!("unknown shape {s:?}")))
        .collect();
    if let Some(dir) = std::env::var_os("TREE_SYNC_GENERATE") {
        // Only the trees, for looking at one by hand (perf, strace): one folder per shape.
        for kind in shapes {
            let shape = Shape::new(kind, scale);
            let bytes = shape.generate(&PathBuf::from(&dir).join(kind.name()));
            eprintln!("{}: {}", kind.name(), shape.describe(bytes));
        }
        return;
    }
    if Command::new("rsync").arg("--version").output().is_err() {
        panic!("rsync is missing: install it with `apt-get install -y rsync`");
    }
    // CARGO_BIN_EXE_tandem is <target>/release/tandem.
    let target = Path::new(env!("CARGO_BIN_EXE_tandem")).parent().unwrap().parent().unwrap().to_path_buf();
    let parent = std::env::var_os("TREE_SYNC_DIR").map_or(target.clone(), PathBuf::from);
    std::fs::create_dir_all(&parent).unwrap();
    check_on_disk(&parent);

    let mut warnings = Vec::new();
    // SAFETY: geteuid has no preconditions.
    let drop_caches = unsafe { libc::geteuid() } == 0;
    if !drop_caches {
        warnings.push(
            "not root: the page cache was NOT dropped before the timed runs, so reads may come from \
             memory and the figures flatter every tool"
                .to_string(),
        );
        eprintln!("WARNING: {}", warnings[0]);
    }

    let mut reports = Vec::new();
    for kind in shapes {
        let work = parent.join("tree-sync-work");
        tools::remove_tree(&work);
        std::fs::create_dir_all(&work).unwrap();
        let shape = Shape::new(kind, scale);
        let start = Instant::now();
        let bytes = shape.generate(&work.join("src"));
        let described = shape.describe(bytes);
        eprintln!(
            "== shape {}: generated in {:.1} s: {described}",
            kind.name(),
            start.elapsed().as_secs_f64()
        );
        let entries = count_entries(&work.join("src"));

        let bench = Bench::start(&work, drop_caches);
        let mut results = Results::new();
        for step in Step::ALL {
            eprintln!("{}", step.label());
            for round in 0..rounds {
                let reader = bench.prepare_round(step, &shape, round);
                for k in 0..TOOLS.len() {
                    let tool = TOOLS[(round + k) % TOOLS.len()];
                    if !step.runs(tool) {
                        continue;
                    }
                    bench.prepare_tool(step, tool);
                    let sample = bench.run(tool, step, kind.name());
                    eprintln!(
                        "  round {} {:<14} {:>8.3} s wall {:>8.2} s CPU {:>14} bytes  {}",
                        round + 1,
                        tool.label(),
                        sample.wall,
                        sample.cpu,
                        report::bytes_text(sample.bytes.map(|b| b as f64)),
                        sample.said
                    );
                    results.entry((step, tool)).or_default().push(sample);
                }
                drop(reader);
            }
            if step.changes() {
                for tool in TOOLS.into_iter().filter(|t| step.runs(*t)) {
                    check::assert_same_tree(&bench.src, &bench.dest(tool), tool.label());
                }
                eprintln!("  checked: every copy equals the source");
            }
        }
        eprintln!(
            "(d) event lag: a following standby daemon, single writes on the primary, a reader on the tree"
        );
        let lag = bench.event_lag();
        drop(bench);
        reports.push(ShapeReport { kind, described, entries, rounds, results, lag });
        tools::remove_tree(&work);
    }

    let text = report::render(&reports, &warnings, drop_caches);
    println!("{text}");
    let path = target.join("tree_sync_report.md");
    std::fs::write(&path, &text).unwrap();
    eprintln!("report written to {}", path.display());
}

/// Refuses a work folder in memory: the comparison is about disks.
fn check_on_disk(parent: &Path) {
    let c_path = std::ffi::CString::new(parent.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statfs with a valid C string and a zeroed out-struct.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statfs(c_path.as_ptr(), &mut fs) }, 0, "statfs {}", parent.display());
    let fs_type = fs.f_type as i64;
    assert!(
        fs_type != TMPFS_MAGIC && fs_type != RAMFS_MAGIC,
        "{} is in memory (tmpfs): set TREE_SYNC_DIR to a folder on disk",
        parent.display()
    );
}

/// Files and folders under `root`.
fn count_entries(root: &Path) -> u64 {
    let mut n = 0;
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            n += 1;
            if e.file_type().unwrap().is_dir() {
                todo.push(e.path());
            }
        }
    }
    n
}
