//! The primary's change journal of one tree: the watcher records which paths changed, at
//! which generation; a standby that completed a pass at generation `g` of this journal's
//! epoch gets only the paths changed after `g` (an incremental pass), or nothing at all when
//! nothing changed. The journal also keeps, per standby, what that standby holds, so an
//! incremental pass needs neither side to walk its tree.
//!
//! Must never: hand out an incremental plan that could miss a change. When the watcher lost
//! events, or the journal outgrew its bound, every `since` before that point is refused and
//! the standby gets a full pass; events are flushed (see [`Journal::new`]) before planning.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info};

use crate::sync::diff::{Diff, diff, unchanged};
use crate::sync::entry::{Entry, EntryKind};
use crate::sync::index::Index;
use crate::sync::meta::Keep;
use crate::sync::names::RelName;
use crate::sync::pass::Outcome;
use crate::sync::protocol::Since;
use crate::sync::scan::{Found, Verdict, entry_at, scan_below};
use crate::sync::tree_error::TreeError;

/// Changed paths kept before the journal gives up and asks for full passes.
const MAX_PATHS: usize = 200_000;

/// How a pass should run.
#[derive(Debug)]
pub enum Plan {
    /// The standby is at the current generation.
    Current,
    /// Compare whole trees; on success the standby stands at `since`.
    Full { since: Option<Since> },
    /// Only `dirty` changed since what the standby `holds` (with the paths the standby's last
    /// pass could not read, tried again).
    Incremental { since: Since, holds: Index, dirty: Vec<RelName> },
}

struct State {
    generation: u64,
    /// Every change after this generation is recorded.
    complete_from: u64,
    changed: HashMap<RelName, u64>,
    /// Per standby (by node name): where it stands, what it holds, and the paths its last
    /// pass could not read (which it holds as they were).
    holds: HashMap<String, Held>,
}

/// What one standby holds.
struct Held {
    since: Since,
    index: Index,
    unread: Vec<RelName>,
}

/// One tree's journal.
pub struct Journal {
    epoch: u64,
    state: Mutex<State>,
    /// Asks the watcher to deliver every event that happened before the request.
    flush: Option<mpsc::Sender<oneshot::Sender<()>>>,
    /// The generation, for passes waiting for a change.
    changes: watch::Sender<u64>,
}

impl Journal {
    /// A journal with a fresh epoch. `flush`: the watcher's barrier; without one the journal
    /// never plans anything but full passes.
    pub fn new(flush: Option<mpsc::Sender<oneshot::Sender<()>>>) -> Journal {
        let mut raw = [0u8; 8];
        getrandom::fill(&mut raw).expect("the OS random source works");
        let epoch = u64::from_le_bytes(raw);
        let state = State { generation: 1, complete_from: 1, changed: HashMap::new(), holds: HashMap::new() };
        Journal { epoch, state: Mutex::new(state), flush, changes: watch::Sender::new(1) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Paths the watcher saw change (a folder stands for its subtree).
    pub fn record(&self, paths: impl IntoIterator<Item = RelName>) {
        let mut st = self.lock();
        st.generation += 1;
        let g = st.generation;
        for p in paths {
            st.changed.insert(p, g);
        }
        if st.changed.len() > MAX_PATHS {
            drop(st);
            self.lost("the journal outgrew its bound");
            return;
        }
        drop(st);
        self.changes.send_replace(g);
    }

    /// Waits until something is recorded after generation `seen`, or `timeout`.
    pub async fn wait_change(&self, seen: u64, timeout: std::time::Duration) {
        let mut rx = self.changes.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|g| *g > seen)).await;
    }

    /// The watcher lost events: every standby needs a full pass.
    pub fn lost(&self, reason: &str) {
        let mut st = self.lock();
        st.generation += 1;
        st.complete_from = st.generation;
        st.changed.clear();
        let g = st.generation;
        drop(st);
        self.changes.send_replace(g);
        info!(reason, "tree journal reset: the next passes compare whole trees");
    }

    /// Plans the pass of `standby`, which stands at `since`.
    pub async fn plan(&self, standby: &str, since: Option<Since>) -> Plan {
        let Some(flush) = &self.flush else { return Plan::Full { since: None } };
        let (tx, rx) = oneshot::channel();
        if flush.send(tx).await.is_err() || rx.await.is_err() {
            // No watcher: nothing the journal says can be trusted.
            return Plan::Full { since: None };
        }
        let mut st = self.lock();
        let now = Since { epoch: self.epoch, generation: st.generation };
        let usable = |s: Since, held_at: Since| {
            s == held_at && s.epoch == self.epoch && s.generation >= st.complete_from
        };
        match (since, st.holds.get(standby)) {
            (Some(s), Some(held)) if usable(s, held.since) && s.generation == st.generation => Plan::Current,
            (Some(s), Some(held)) if usable(s, held.since) => {
                let mut dirty: Vec<RelName> =
                    st.changed.iter().filter(|(_, g)| **g > s.generation).map(|(p, _)| p.clone()).collect();
                debug!(standby, dirty = dirty.len(), unread = held.unread.len(), "incremental pass");
                // Taken, not copied: a pass that breaks midway leaves the standby somewhere
                // between old and new, which only a full comparison can tell; `confirm` puts
                // the new state back when the pass completes.
                let held = st.holds.remove(standby).expect("matched above");
                dirty.extend(held.unread);
                Plan::Incremental { since: now, holds: held.index, dirty }
            }
            _ => {
                st.holds.remove(standby);
                Plan::Full { since: Some(now) }
            }
        }
    }

    /// `standby` completed a pass: it stands at `outcome.since` and holds `outcome.holds`. An
    /// outcome older than what is recorded (two passes of one standby crossing) is ignored.
    pub fn confirm(&self, standby: &str, outcome: Outcome) {
        let mut st = self.lock();
        if st.holds.get(standby).is_some_and(|held| held.since.generation > outcome.since.generation) {
            return;
        }
        let held = Held { since: outcome.since, index: outcome.holds, unread: outcome.unread };
        st.holds.insert(standby.to_string(), held);
        // Changes every standby has are of no more use.
        let oldest = st.holds.values().map(|h| h.since.generation).min().unwrap_or(0);
        st.changed.retain(|_, g| *g > oldest);
    }
}

/// What an incremental pass found.
#[derive(Debug, Default)]
pub struct DirtyDiff {
    pub diff: Diff,
    /// Paths that could not be read or listed, and why: left as the standby has them.
    pub unreadable: Vec<(RelName, String)>,
    /// Sockets, FIFOs and devices met and skipped.
    pub special: u64,
}

/// The diff of an incremental pass: `dirty` paths (a folder: its subtree) and their parent
/// folders (their own entries: adding or removing a child moves a folder's mtime) compared
/// with what the standby `holds`. The filter decides as in a full scan: a path below a pruned
/// folder is left alone, an excluded path is neither sent nor deleted. Entries carry what
/// `keep` asks for.
pub fn diff_dirty(
    root: &Path,
    holds: &Index,
    dirty: &[RelName],
    keep: &Keep,
    filter: &mut dyn FnMut(&[Entry]) -> Vec<Verdict>,
) -> Result<DirtyDiff, TreeError> {
    let targets: BTreeSet<RelName> = dirty.iter().cloned().collect();
    // A path below another dirty path is covered by that one's subtree.
    let targets: Vec<RelName> =
        targets.iter().filter(|p| !p.ancestors().any(|a| targets.contains(&a))).cloned().collect();
    let parents: BTreeSet<RelName> = targets.iter().filter_map(RelName::parent).collect();
    let mut ancestors: BTreeSet<RelName> = BTreeSet::new();
    for p in targets.iter().chain(&parents) {
        ancestors.extend(p.ancestors());
    }

    // One filter call for every path whose verdict matters.
    let mut found: HashMap<RelName, Found> = HashMap::new();
    for p in targets.iter().chain(&parents).chain(&ancestors) {
        found.entry(p.clone()).or_insert_with(|| entry_at(root, p, keep));
    }
    let asked: Vec<Entry> = found
        .values()
        .filter_map(|f| match f {
            Found::Entry(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    let verdicts = if asked.is_empty() { Vec::new() } else { filter(&asked) };
    if verdicts.len() != asked.len() {
        return Err(TreeError::FilterVerdicts { expected: asked.len(), got: verdicts.len() });
    }
    let verdict: HashMap<RelName, Verdict> = asked.into_iter().map(|e| e.path).zip(verdicts).collect();
    let pruned_above = |p: &RelName| p.ancestors().any(|a| verdict.get(&a) == Some(&Verdict::Prune));

    let mut upserts: Vec<Entry> = Vec::new();
    let mut deletes: Vec<RelName> = Vec::new();
    let mut unreadable: Vec<(RelName, String)> = Vec::new();
    let mut special = 0u64;
    let own = |e: &Entry, upserts: &mut Vec<Entry>| {
        if verdict.get(&e.path) == Some(&Verdict::Keep) && holds.get(&e.path).is_none_or(|h| !unchanged(h, e))
        {
            upserts.push(e.clone());
        }
    };
    for t in &targets {
        if pruned_above(t) {
            continue;
        }
        match &found[t] {
            Found::Absent => {
                if holds.get(t).is_some() {
                    deletes.push(t.clone());
                }
            }
            Found::Protected => {}
            Found::Unreadable(reason) => unreadable.push((t.clone(), reason.clone())),
            Found::Special => special += 1,
            Found::Entry(e) => {
                own(e, &mut upserts);
                if e.kind == EntryKind::Dir && verdict.get(t) != Some(&Verdict::Prune) {
                    match scan_below(root, Some(t), keep, filter) {
                        Ok(below) => {
                            special += below.skipped_special.len() as u64;
                            let held: Index = holds.below(t).cloned().collect();
                            let d = diff(&below.entries, &held, &below.protected());
                            upserts.extend(d.upserts);
                            deletes.extend(d.deletes);
                            unreadable.extend(below.unreadable);
                        }
                        // Unlistable (or gone) since it was examined: leave its subtree alone;
                        // the next pass tries it again.
                        Err(TreeError::Root { reason, .. }) => unreadable.push((t.clone(), reason)),
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
    for p in &parents {
        if let Some(Found::Entry(e)) = found.get(p)
            && e.kind == EntryKind::Dir
            && !pruned_above(p)
            && !targets.contains(p)
        {
            own(e, &mut upserts);
        }
    }
    upserts.sort_by(|a, b| a.path.cmp(&b.path));
    upserts.dedup_by(|a, b| a.path == b.path);
    deletes.sort();
    deletes.dedup();
    let mut kept: Vec<RelName> = Vec::with_capacity(deletes.len());
    for d in deletes {
        if !kept.last().is_some_and(|k| d.is_within(k)) {
            kept.push(d);
        }
    }
    Ok(DirtyDiff { diff: Diff { upserts, deletes: kept }, unreadable, special })
}
