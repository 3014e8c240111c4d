//! The report: per shape, a table of every step and tool (medians), the goals with their
//! verdicts, and every round.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::run::{Sample, Step, TOOLS, Tool};
use crate::shapes::Kind;

pub type Results = BTreeMap<(Step, Tool), Vec<Sample>>;

/// What one shape's run found.
pub struct ShapeReport {
    pub kind: Kind,
    pub described: String,
    pub entries: u64,
    pub rounds: usize,
    pub results: Results,
    /// Event lags (sorted, seconds) and journal resets during the lag step.
    pub lag: (Vec<f64>, usize),
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

pub fn bytes_text(b: Option<f64>) -> String {
    b.map_or("n/a".into(), |b| thousands(b as u64))
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl ShapeReport {
    fn samples(&self, step: Step, tool: Tool) -> &[Sample] {
        self.results.get(&(step, tool)).unwrap_or_else(|| panic!("no runs of {tool:?} in {step:?}"))
    }

    fn med(&self, step: Step, tool: Tool, f: impl Fn(&Sample) -> f64) -> f64 {
        median(self.samples(step, tool).iter().map(f).collect())
    }

    fn bytes(&self, step: Step, tool: Tool, f: impl Fn(&Sample) -> Option<u64>) -> Option<f64> {
        self.samples(step, tool)
            .iter()
            .map(|s| f(s).map(|b| b as f64))
            .collect::<Option<Vec<_>>>()
            .map(median)
    }

    fn max(&self, step: Step, tool: Tool, f: impl Fn(&Sample) -> f64) -> f64 {
        self.samples(step, tool).iter().map(f).fold(0.0, f64::max)
    }

    fn table(&self, out: &mut String) {
        out.push_str(
            "| step | tool | wall s | ratio | CPU s | CPU ms / 1k entries | peak MiB | bytes sent | content bytes |\n\
             |---|---|--:|--:|--:|--:|--:|--:|--:|\n",
        );
        let per_k = 1000.0 / self.entries.max(1) as f64;
        for step in Step::ALL {
            let rsync = self.med(step, Tool::Rsync, |s| s.wall);
            for tool in TOOLS.into_iter().filter(|t| step.runs(*t)) {
                let wall = self.med(step, tool, |s| s.wall);
                let cpu = self.med(step, tool, |s| s.cpu);
                let (cpu_text, peak) = if tool == Tool::Tandem {
                    let daemon = self.med(step, tool, |s| s.daemon_cpu);
                    (
                        format!("{cpu:.2} (CLI {:.2} + daemon {daemon:.2})", cpu - daemon),
                        format!(
                            "CLI {:.0}, daemon {:.0}",
                            self.max(step, tool, |s| s.peak_mib),
                            self.max(step, tool, |s| s.daemon_hwm_mib)
                        ),
                    )
                } else {
                    (format!("{cpu:.2}"), format!("{:.0}", self.max(step, tool, |s| s.peak_mib)))
                };
                let ratio =
                    if tool == Tool::Rsync { "1".to_string() } else { format!("{:.3}", wall / rsync) };
                let _ = writeln!(
                    out,
                    "| {} | {} | {wall:.3} | {ratio} | {cpu_text} | {:.1} | {peak} | {} | {} |",
                    step.label(),
                    tool.label(),
                    cpu * 1000.0 * per_k,
                    bytes_text(self.bytes(step, tool, |s| s.bytes)),
                    bytes_text(self.bytes(step, tool, |s| s.content_bytes)),
                );
            }
        }
    }

    /// Each goal with its measured value and verdict.
    fn goals(&self) -> Vec<String> {
        let wall = |step, tool| self.med(step, tool, |s: &Sample| s.wall);
        let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
        let mut goals = Vec::new();
        let t = wall(Step::Initial, Tool::Tandem);
        let rs = wall(Step::Initial, Tool::RsyncSync);
        goals.push(format!("(a) initial copy <= 1.0x `rsync && sync`: {:.3}, {}", t / rs, verdict(t <= rs)));
        if self.results.contains_key(&(Step::Initial, Tool::RsyncFsync)) {
            let rf = wall(Step::Initial, Tool::RsyncFsync);
            goals.push(format!(
                "(a) initial copy <= 0.5x `rsync --fsync`: {:.3}, {}",
                t / rf,
                verdict(t <= 0.5 * rf)
            ));
        }
        let (t, r) = (wall(Step::NoChange, Tool::Tandem), wall(Step::NoChange, Tool::Rsync));
        goals.push(format!("(b) no change <= 0.1x rsync: {:.3}, {}", t / r, verdict(t <= 0.1 * r)));
        for step in [Step::Edit, Step::BusyEdit] {
            let (t, r) = (wall(step, Tool::Tandem), wall(step, Tool::Rsync));
            goals.push(format!(
                "{} <= 0.5x rsync's wall: {:.3}, {}",
                &step.label()[..3],
                t / r,
                verdict(t <= 0.5 * r)
            ));
            if let (Some(tb), Some(rb)) =
                (self.bytes(step, Tool::Tandem, |s| s.bytes), self.bytes(step, Tool::Rsync, |s| s.bytes))
            {
                goals.push(format!(
                    "{} bytes <= rsync's: {:.3}, {}",
                    &step.label()[..3],
                    tb / rb,
                    verdict(tb <= rb)
                ));
            }
        }
        let renamed = self.bytes(Step::Renames, Tool::Tandem, |s| s.content_bytes).unwrap_or(f64::NAN);
        goals.push(format!("(r) renames cost 0 content bytes: {renamed:.0}, {}", verdict(renamed == 0.0)));
        let resets: usize = Step::ALL
            .into_iter()
            .filter_map(|s| self.results.get(&(s, Tool::Tandem)))
            .flatten()
            .map(|s| s.journal_resets)
            .sum::<usize>()
            + self.lag.1;
        goals.push(format!(
            "the primary's journal never reset by a reader: {resets} resets, {}",
            verdict(resets == 0)
        ));
        let lags = &self.lag.0;
        if !lags.is_empty() {
            let p99 = lags[((lags.len() as f64 * 0.99) as usize).min(lags.len() - 1)];
            goals.push(format!(
                "(d) event lag p99 < 1 s with the reader: {:.1} ms, {}",
                p99 * 1000.0,
                verdict(p99 < 1.0)
            ));
        }
        let rsync_peak = self.max(Step::Initial, Tool::Rsync, |s| s.peak_mib);
        let cli = Step::ALL.iter().map(|s| self.max(*s, Tool::Tandem, |x| x.peak_mib)).fold(0.0, f64::max);
        let daemon =
            Step::ALL.iter().map(|s| self.max(*s, Tool::Tandem, |x| x.daemon_hwm_mib)).fold(0.0, f64::max);
        goals.push(format!(
            "peak memory <= rsync's ({rsync_peak:.0} MiB): CLI {cli:.0} MiB, daemon {daemon:.0} MiB, {}",
            verdict(cli <= rsync_peak && daemon <= rsync_peak)
        ));
        // The daemon's peak counts above its size before the run (wasmtime and the runtime
        // take ~60 MiB whatever the tree); the CLI's and rsync's whole peaks count.
        let per_entry = |mib: f64| (mib.max(0.0) * 1048576.0 / self.entries.max(1) as f64).round();
        let cli_a = self.max(Step::Initial, Tool::Tandem, |s| s.peak_mib);
        let daemon_a = self.max(Step::Initial, Tool::Tandem, |s| s.daemon_hwm_mib - s.daemon_base_mib);
        goals.push(format!(
            "memory per entry in (a): CLI {}, daemon (above idle) {}, rsync {} bytes",
            per_entry(cli_a),
            per_entry(daemon_a),
            per_entry(rsync_peak)
        ));
        let (tc, rc) = (
            self.med(Step::Initial, Tool::Tandem, |s| s.cpu),
            self.med(Step::Initial, Tool::Rsync, |s| s.cpu),
        );
        goals.push(format!(
            "(a) CPU per file within 2x rsync's: {:.2}x, {}",
            tc / rc,
            verdict(tc <= 2.0 * rc)
        ));
        goals
    }

    fn rounds(&self, out: &mut String) {
        for ((step, tool), samples) in &self.results {
            for (i, s) in samples.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "- {} {} round {}: {:.3} s wall, {:.2} s CPU, {} bytes; {}",
                    step.label(),
                    tool.label(),
                    i + 1,
                    s.wall,
                    s.cpu,
                    bytes_text(s.bytes.map(|b| b as f64)),
                    s.said
                );
            }
        }
    }
}

pub fn render(reports: &[ShapeReport], warnings: &[String], dropped: bool) -> String {
    let mut out = String::from("# Tree sync: tandem vs rsync\n\n");
    for w in warnings {
        let _ = writeln!(out, "**WARNING: {w}**\n");
    }
    let _ = writeln!(
        out,
        "Medians per step, tools interleaved; before every timed run `sync`{}. Ratio: wall / plain \
         rsync's. CPU: user + sys of every process involved (tandem: its `sync once` CLI plus the \
         primary daemon during the run). Peak: ru_maxrss (rsync's largest process, tandem's CLI) \
         and the primary daemon's VmHWM during the run. Bytes sent: rsync's `Total bytes sent` (no \
         -z); tandem's compressed wire bytes. Content bytes: file content tandem sent before \
         compression.\n",
        if dropped { " and `echo 1 > /proc/sys/vm/drop_caches`" } else { " (caches NOT dropped: not root)" }
    );
    for r in reports {
        let _ = writeln!(
            out,
            "## Shape `{}`: {} ({} entries), {} round(s)\n",
            r.kind.name(),
            r.described,
            r.entries,
            r.rounds
        );
        r.table(&mut out);
        out.push_str("\nGoals:\n");
        for g in r.goals() {
            let _ = writeln!(out, "- {g}");
        }
        let lags = &r.lag.0;
        if !lags.is_empty() {
            let pct = |p: f64| lags[((lags.len() as f64 * p) as usize).min(lags.len() - 1)] * 1000.0;
            let _ = writeln!(
                out,
                "\n(d) event lag, a 1 KiB write on the primary until the file is whole on a following \
                 standby, while a reader goes through the whole tree in a loop ({} writes 20 ms apart): \
                 p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; journal resets meanwhile: {}\n",
                lags.len(),
                pct(0.50),
                pct(0.99),
                lags[lags.len() - 1] * 1000.0,
                r.lag.1
            );
        }
        out.push_str("\nRounds:\n\n");
        r.rounds(&mut out);
        out.push('\n');
    }
    out
}
