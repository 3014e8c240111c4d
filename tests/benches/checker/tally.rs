//! What the schedules found, summed per part, and the table the run prints (and writes to
//! `target/checker_report.md`). Must never drop a violation: each is listed with its seed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::faults::Kind;

/// One schedule's (or a part's summed) findings.
#[derive(Debug, Default)]
pub struct Outcome {
    pub schedules: u64,
    pub faults: BTreeMap<Kind, u64>,
    /// Changes answered "committed" and then looked for on every member.
    pub acks_committed: u64,
    /// Changes answered "pending" (kept in a durable outbox) and then looked for everywhere.
    pub acks_pending: u64,
    /// Writes with no answer or an error answer (may or may not have happened).
    pub indeterminate: u64,
    /// The start of each indeterminate answer, counted.
    pub indeterminate_why: BTreeMap<String, u64>,
    /// Status rows that claimed a member up, held against the fault log.
    pub claims_checked: u64,
    /// Tree-sync operations done on the primary's tree, and trees compared after heal.
    pub file_ops: u64,
    pub converge_ms: Vec<u64>,
    pub violations: Vec<String>,
    /// Folders kept as evidence of a violation.
    pub kept: Vec<String>,
}

impl Outcome {
    pub fn add(&mut self, one: Outcome) {
        self.schedules += 1;
        for (k, n) in one.faults {
            *self.faults.entry(k).or_default() += n;
        }
        self.acks_committed += one.acks_committed;
        self.acks_pending += one.acks_pending;
        self.indeterminate += one.indeterminate;
        for (k, n) in one.indeterminate_why {
            *self.indeterminate_why.entry(k).or_default() += n;
        }
        self.claims_checked += one.claims_checked;
        self.file_ops += one.file_ops;
        self.converge_ms.extend(one.converge_ms);
        self.violations.extend(one.violations);
        self.kept.extend(one.kept);
    }
}

/// The markdown table of every part, then each violation.
pub fn table(parts: &[(&str, &Outcome)], elapsed_s: u64) -> String {
    let mut s = String::new();
    let kinds: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    let _ = writeln!(s, "checker run: {elapsed_s} s\n");
    let _ = writeln!(
        s,
        "| part | schedules | faults ({}) | acks checked (committed + pending) | indeterminate | status claims checked | file ops | convergence p50 / max | violations (of them order only) |",
        kinds.join(" / ")
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for (name, o) in parts {
        let faults: Vec<String> =
            Kind::ALL.iter().map(|k| o.faults.get(k).copied().unwrap_or(0).to_string()).collect();
        let mut c = o.converge_ms.clone();
        c.sort_unstable();
        let conv = if c.is_empty() {
            "-".into()
        } else {
            format!("{:.1} s / {:.1} s", c[c.len() / 2] as f64 / 1e3, c[c.len() - 1] as f64 / 1e3)
        };
        let _ = writeln!(
            s,
            "| {name} | {} | {} | {} ({} + {}) | {} | {} | {} | {conv} | {} ({}) |",
            o.schedules,
            faults.join(" / "),
            o.acks_committed + o.acks_pending,
            o.acks_committed,
            o.acks_pending,
            o.indeterminate,
            o.claims_checked,
            o.file_ops,
            o.violations.len(),
            o.violations.iter().filter(|v| v.contains(crate::conf::ORDER_ONLY)).count()
        );
    }
    for (name, o) in parts {
        for (why, n) in &o.indeterminate_why {
            let _ = writeln!(s, "\n- indeterminate ({name}), {n}x: `{}`", why.replace('`', "'"));
        }
        for v in &o.violations {
            let _ = writeln!(s, "\n- VIOLATION ({name}): {v}");
        }
        for k in &o.kept {
            let _ = writeln!(s, "  - kept {k}");
        }
    }
    s
}
