//! Benchmark: path-filter decisions through the built-in plugin (wasm, batched) beside the same
//! Rust logic called natively, in ns per path. Run with
//! `cargo bench -p tandem --bench plugin_filter`.
//!
//! The paths are shaped like an application's trees (nested folders, mixed name lengths, a
//! few temporary files and directories); each figure is the median of several rounds.

use std::time::{Duration, Instant};

use tandem::plugin::{EntryBatch, EntryKind, PluginConfig, Plugins};
use tandem_plugin_path_filter::logic::{Kind, PathFilter};

const PATHS: usize = 100_000;
const ROUNDS: usize = 15;

fn main() {
    let entries = make_entries(PATHS);
    let avg_len = entries.iter().map(|e| e.0.len()).sum::<usize>() as f64 / PATHS as f64;
    println!("path filter: {PATHS} paths (average {avg_len:.0} bytes), median of {ROUNDS} rounds\n");

    // Native: the same logic the plugin runs, on the same joined buffer.
    let native = PathFilter::default();
    let mut paths = Vec::new();
    let mut ends = Vec::new();
    let mut kinds = Vec::new();
    for (p, k) in &entries {
        paths.extend_from_slice(p);
        ends.push(paths.len() as u32);
        kinds.push(match k {
            EntryKind::File => Kind::File,
            EntryKind::Dir => Kind::Dir,
            EntryKind::Symlink => Kind::Symlink,
            EntryKind::Other => Kind::Other,
        });
    }
    let mut out = Vec::with_capacity(PATHS);
    let native_ns = median_ns_per_path(|| {
        out.clear();
        native.decide_batch("vault", &paths, &ends, kinds.iter().copied(), |v| out.push(v)).unwrap();
        std::hint::black_box(&out);
    });
    println!("{:<34} {:>10.1} ns/path", "native Rust (one batch)", native_ns);

    let plugins = Plugins::new(PluginConfig::default()).unwrap();
    println!("{:<34} {:>10} {:>16}", "through the wasm plugin", "ns/path", "x native");
    for batch_size in [256usize, 1024, 4096, 16_384] {
        let batches: Vec<EntryBatch> = entries
            .chunks(batch_size)
            .map(|chunk| {
                let mut b = EntryBatch::new("vault");
                for (p, k) in chunk {
                    b.push(p, *k, 4096, 0o644);
                }
                b
            })
            .collect();
        let ns = median_ns_per_path(|| {
            for b in &batches {
                std::hint::black_box(plugins.filter(b).unwrap());
            }
        });
        println!("{:<34} {:>10.1} {:>16.1}", format!("  batches of {batch_size}"), ns, ns / native_ns);
    }
}

fn median_ns_per_path(mut round: impl FnMut()) -> f64 {
    round(); // warm up
    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            round();
            start.elapsed()
        })
        .collect();
    times.sort();
    times[ROUNDS / 2].as_nanos() as f64 / PATHS as f64
}

/// Deterministic paths: incident folders with attachments, app states, some temporaries.
fn make_entries(n: usize) -> Vec<(Vec<u8>, EntryKind)> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let names = ["attachment", "report", "evidence", "capture", "notes", "state", "playbook_run", "artifact"];
    let exts = [".pdf", ".json", ".txt", ".pcap", ".zip", ".csv", ".tmp", ".log"];
    (0..n)
        .map(|i| {
            let r = next();
            let dir = format!("{}/{:02}/incident-{}", 2020 + r % 7, (r >> 8) % 12 + 1, (r >> 16) % 5000);
            if i % 11 == 0 {
                (dir.into_bytes(), EntryKind::Dir)
            } else {
                let name = names[(r >> 24) as usize % names.len()];
                let ext = exts[(r >> 32) as usize % exts.len()];
                let kind = if i % 97 == 0 { EntryKind::Symlink } else { EntryKind::File };
                (format!("{dir}/{name}-{}{ext}", (r >> 40) % 1000).into_bytes(), kind)
            }
        })
        .collect()
}
