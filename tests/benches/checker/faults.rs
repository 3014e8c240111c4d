//! Fault schedules: drawn from a seed (pure), then played against a set of members, recording
//! when each member was out (killed, stopped, cut off) so the checks can tell what a status
//! claim should have said. Must never leave a fault in place: [`heal_all`] undoes every kind.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::lab::Lab;
use crate::member::Member;
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// kill -9, started again after the fault's span.
    Kill,
    /// SIGSTOP, SIGCONT after the span.
    Stop,
    /// SIGTERM, started again at once.
    Restart,
    /// The member's host link down, up after the span.
    Cut,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Kill, Kind::Stop, Kind::Restart, Kind::Cut];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill-9",
            Kind::Stop => "stop/cont",
            Kind::Restart => "restart",
            Kind::Cut => "link cut",
        }
    }
}

/// One fault: what, to whom, when (from the schedule's start) and for how long.
#[derive(Debug, Clone)]
pub struct Fault {
    pub at: Duration,
    pub member: usize,
    pub kind: Kind,
    pub lasts: Duration,
}

/// Shortest and longest span of one fault.
const MIN_SPAN_MS: u64 = 200;
const MAX_SPAN_MS: u64 = 3_000;

/// Draws up to `count` faults over `window` for `members` members, never two overlapping on
/// one member; link cuts only when `cuts` (the lab runs).
pub fn schedule(rng: &mut Rng, members: usize, window: Duration, count: usize, cuts: bool) -> Vec<Fault> {
    let kinds: Vec<Kind> = Kind::ALL.into_iter().filter(|k| cuts || *k != Kind::Cut).collect();
    let mut out: Vec<Fault> = Vec::new();
    for _ in 0..count {
        let kind = kinds[rng.pick(kinds.len())];
        let at = Duration::from_millis(rng.range(0, window.as_millis() as u64));
        let lasts = Duration::from_millis(rng.range(MIN_SPAN_MS, MAX_SPAN_MS));
        let member = rng.pick(members);
        // A restart's member is busy for its own start too; a second of margin either way.
        let busy = |f: &Fault| (f.at, f.at + f.lasts + Duration::from_secs(1));
        let mine = Fault { at, member, kind, lasts };
        let (a0, a1) = busy(&mine);
        if out.iter().any(|f| f.member == member && busy(f).0 < a1 && a0 < busy(f).1) {
            continue;
        }
        out.push(mine);
    }
    out.sort_by_key(|f| f.at);
    out
}

/// The schedule in one line: `+1.2s kill-9 b for 0.8s, ...`.
pub fn describe(faults: &[Fault], names: &[&str]) -> String {
    let one = |f: &Fault| {
        let span = if f.kind == Kind::Restart {
            String::new()
        } else {
            format!(" for {:.1}s", f.lasts.as_secs_f64())
        };
        format!("+{:.1}s {} {}{span}", f.at.as_secs_f64(), f.kind.name(), names[f.member])
    };
    faults.iter().map(one).collect::<Vec<_>>().join(", ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Begin(Kind),
    End(Kind),
}

/// When a member was out, and how.
#[derive(Debug, Clone)]
pub struct Outage {
    pub member: usize,
    pub kind: Kind,
    pub from: Instant,
    pub to: Option<Instant>,
}

/// What playing a schedule did.
#[derive(Debug, Default)]
pub struct Played {
    pub injected: BTreeMap<Kind, u64>,
    pub outages: Vec<Outage>,
    /// Members that failed to start again (a finding).
    pub failures: Vec<String>,
}

impl Played {
    /// Whether `member` was out by `kind` (any of `kinds`) through all of `[from, to]`.
    pub fn out_throughout(&self, member: usize, kinds: &[Kind], from: Instant, to: Instant) -> bool {
        self.outages.iter().any(|o| {
            o.member == member && kinds.contains(&o.kind) && o.from <= from && o.to.is_none_or(|t| t >= to)
        })
    }
}

/// Plays `faults` against `members` (host names for link cuts are the members' names).
pub fn play(faults: &[Fault], members: &mut [Member], lab: Option<&Lab>, played: &mut Played) {
    let start = Instant::now();
    let mut timeline: Vec<(Duration, usize, Action)> = Vec::new();
    for f in faults {
        timeline.push((f.at, f.member, Action::Begin(f.kind)));
        if f.kind != Kind::Restart {
            timeline.push((f.at + f.lasts, f.member, Action::End(f.kind)));
        }
    }
    timeline.sort_by_key(|e| e.0);
    for (at, i, action) in timeline {
        std::thread::sleep(at.saturating_sub(start.elapsed()));
        let now = Instant::now();
        let m = &mut members[i];
        match action {
            Action::Begin(kind) => {
                *played.injected.entry(kind).or_default() += 1;
                played.outages.push(Outage { member: i, kind, from: now, to: None });
                match kind {
                    Kind::Kill => m.kill9(),
                    Kind::Stop => m.stop(),
                    Kind::Cut => lab.expect("cuts need the lab").cut(&m.name),
                    Kind::Restart => {
                        if !m.terminate() {
                            played.failures.push(format!("{} did not exit within its SIGTERM limit", m.name));
                        }
                        if let Err(e) = m.start() {
                            played.failures.push(e);
                        }
                        end(played, i, Kind::Restart);
                    }
                }
            }
            Action::End(kind) => {
                match kind {
                    Kind::Kill => {
                        if let Err(e) = m.start() {
                            played.failures.push(e);
                        }
                    }
                    Kind::Stop => m.cont(),
                    Kind::Cut => lab.expect("cuts need the lab").heal(&m.name),
                    Kind::Restart => {}
                }
                end(played, i, kind);
            }
        }
    }
}

fn end(played: &mut Played, member: usize, kind: Kind) {
    let now = Instant::now();
    if let Some(o) =
        played.outages.iter_mut().rev().find(|o| o.member == member && o.kind == kind && o.to.is_none())
    {
        o.to = Some(now);
    }
}

/// Undoes whatever is still in place: every member running, continued, its link up.
pub fn heal_all(members: &mut [Member], lab: Option<&Lab>, played: &mut Played) {
    for (i, m) in members.iter_mut().enumerate() {
        if let Some(lab) = lab {
            lab.heal(&m.name);
        }
        m.cont();
        if !m.running()
            && let Err(e) = m.start()
        {
            played.failures.push(e);
        }
        for kind in Kind::ALL {
            end(played, i, kind);
        }
    }
}
