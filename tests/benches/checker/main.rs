//! The fault-schedule checker, in the spirit of Jepsen: real `tandem` processes driven through
//! random schedules of kill -9, SIGSTOP/SIGCONT, restart and link cuts (members in network-lab
//! hosts when run as root) under clients that record every answer; after each schedule heals,
//! it checks what the product promises. Part `conf`: three cluster members (every acknowledged
//! change on every member, replicated trees byte-equal, no status claiming what is not so).
//! Part `sync`: a primary and a following standby (trees equal after heal).
//!
//! Run: `cargo bench -p tandem --bench checker` (root for link cuts). Knobs:
//! - `CHECKER_PART`: `conf`, `sync` or `all` (default);
//! - `CHECKER_SCHEDULES`: random schedules per part after the regression list (default 20);
//! - `CHECKER_SEED`: replay just this seed (hex `0x..` or decimal) in each chosen part;
//! - `CHECKER_WINDOW_MS`: how long faults play per schedule (default 6000);
//! - `CHECKER_FAULTS`: faults drawn per schedule (default 4).
//!
//! Every schedule prints its seed first. The fixed seeds in `regressions.txt` run before the
//! random ones. The table also goes to `target/checker_report.md`. Exit status 1 on any
//! violation.

#[path = "../../common.rs"]
mod common;
#[path = "../../lab/mod.rs"]
mod lab;

mod conf;
mod faults;
mod member;
mod rng;
mod sync;
mod tally;

use std::time::{Duration, Instant};

use tally::Outcome;

const REGRESSIONS: &str = include_str!("regressions.txt");

fn parse_seed(text: &str) -> u64 {
    let t = text.trim();
    let parsed = match t.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => t.parse(),
    };
    parsed.unwrap_or_else(|_| panic!("{t}: not a seed"))
}

fn main() {
    let part = std::env::var("CHECKER_PART").unwrap_or_else(|_| "all".into());
    let count = common::knob("CHECKER_SCHEDULES", 20);
    let window = Duration::from_millis(common::knob("CHECKER_WINDOW_MS", 6_000));
    let faults_per = common::knob("CHECKER_FAULTS", 4) as usize;
    let replay = std::env::var("CHECKER_SEED").ok().map(|s| parse_seed(&s));
    let lab = lab::Lab::new(&["a", "b", "c"]);
    if lab.is_none() {
        eprintln!("checker: no network lab (not root?): members on loopback, no link cuts");
    }
    let started = Instant::now();
    let mut parts: Vec<(&str, Outcome)> = Vec::new();
    for name in ["conf", "sync"] {
        if part != "all" && part != name {
            continue;
        }
        let mut seeds: Vec<(u64, &str)> = Vec::new();
        match replay {
            Some(seed) => seeds.push((seed, "replay")),
            None => {
                for line in REGRESSIONS.lines() {
                    let line = line.split('#').next().unwrap_or("").trim();
                    if let Some(seed) = line.strip_prefix(name).map(str::trim).filter(|s| !s.is_empty()) {
                        seeds.push((parse_seed(seed), "regression"));
                    }
                }
                for _ in 0..count {
                    seeds.push((rng::fresh_seed(), "random"));
                }
            }
        }
        let mut total = Outcome::default();
        for (n, (seed, why)) in seeds.iter().enumerate() {
            eprintln!("checker {name} schedule {}/{} seed {seed:#x} ({why})", n + 1, seeds.len());
            let one = match name {
                "conf" => conf::run(*seed, lab.as_ref(), window, faults_per),
                _ => sync::run(*seed, lab.as_ref(), window, faults_per),
            };
            for v in &one.violations {
                eprintln!("  VIOLATION: {v}");
            }
            total.add(one);
        }
        parts.push((name, total));
    }
    let refs: Vec<(&str, &Outcome)> = parts.iter().map(|(n, o)| (*n, o)).collect();
    let report = tally::table(&refs, started.elapsed().as_secs());
    println!("{report}");
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/checker_report.md");
    let _ = std::fs::write(target, &report);
    let failed = parts.iter().any(|(_, o)| !o.violations.is_empty());
    // process::exit runs no destructors: the lab's namespaces go first.
    drop(lab);
    if failed {
        std::process::exit(1);
    }
}
