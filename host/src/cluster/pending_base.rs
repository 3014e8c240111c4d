//! The committed copies of the files this member's pending changes touch. A change accepted
//! while no captain can commit it is applied to the live tree at once, ahead of changes the
//! captain commits before it: applied in that order, a file would end with the same meaning
//! as on the other members but not the same bytes (stanzas in another order). So while
//! changes are pending, the file as the log has it is kept here (copied from the live tree
//! before the first pending change touched it), every change the log commits (or that stays
//! local) is applied to the copy too, and when the last pending change has committed, the
//! copies replace the live files: every member's file is then the log's order, byte for byte.
//!
//! Must never: replace a live file while a change from here is still pending, or keep a copy
//! that missed a committed change (each apply here is recorded with the live tree's, and made
//! durable with it at the checkpoint).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::{info, warn};

use crate::conf::{ConfChange, ConfError, ConfTree, RelPath};
use crate::durable;

/// The folder under the cluster's folder.
const DIR: &str = "pending-base";
/// The list of files covered, beside the copies.
const COVERED: &str = "covered.json";

/// The copies and the list of files they cover (None: no copy is kept).
pub struct PendingBase {
    dir: PathBuf,
    covered: Mutex<Option<BTreeSet<RelPath>>>,
}

impl PendingBase {
    /// Opens what a previous run left under `cluster_dir` (a list that cannot be read is
    /// dropped: its files then keep the order they were applied in, as before this existed).
    pub fn open(cluster_dir: &Path) -> PendingBase {
        let dir = cluster_dir.join(DIR);
        let covered = std::fs::read(dir.join(COVERED))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<BTreeSet<RelPath>>(&bytes).ok());
        PendingBase { dir, covered: Mutex::new(covered) }
    }

    fn tree(&self) -> Result<ConfTree, ConfError> {
        ConfTree::open(self.dir.join("etc"))
    }

    /// Before pending `changes` are applied to `live`: keeps a copy of each file they touch
    /// that has none yet. Call under the live tree's lock. A copy that cannot be made is
    /// said; the pending change still applies (its file may then end in another order).
    pub fn cover(&self, live: &ConfTree, changes: &[ConfChange]) {
        let mut covered = self.covered.lock().expect("base lock");
        let mut set = covered.take().unwrap_or_default();
        let new: Vec<RelPath> =
            changes.iter().filter_map(|c| c.rel_path().ok()).filter(|r| !set.contains(r)).collect();
        let copied = (|| -> Result<(), String> {
            let base = self.tree().map_err(|e| e.to_string())?;
            for rel in &new {
                let bytes = live.read_file(rel).map_err(|e| e.to_string())?;
                base.replace_file(rel, bytes.as_deref()).map_err(|e| e.to_string())?;
            }
            set.extend(new.iter().cloned());
            let list = serde_json::to_vec(&set).expect("a list of paths serializes");
            durable::write_private(&self.dir.join(COVERED), &list).map_err(|e| e.to_string())
        })();
        match copied {
            Ok(()) => *covered = Some(set),
            Err(e) => {
                warn!(error = %e, "cannot keep the committed copy of a file with pending changes; it may end in another order than on other members");
                *covered = None;
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }

    /// Applies changes to the copies of the files they touch (those covered). Returns the
    /// paths written, for the checkpoint to make durable; an error is this member's disk.
    pub fn apply(&self, changes: &[ConfChange]) -> Result<Vec<PathBuf>, ConfError> {
        let covered = self.covered.lock().expect("base lock");
        let Some(set) = covered.as_ref() else { return Ok(Vec::new()) };
        let ours: Vec<ConfChange> =
            changes.iter().filter(|c| c.rel_path().is_ok_and(|r| set.contains(&r))).cloned().collect();
        if ours.is_empty() {
            return Ok(Vec::new());
        }
        let base = self.tree()?;
        let mut written = Vec::new();
        for (change, result) in ours.iter().zip(base.apply_batch(&ours, false)) {
            match result {
                // Invalid changes are refused alike on the live tree; only the disk matters.
                Err(e) if e.is_local_failure() => return Err(e),
                _ => written.extend(change.rel_path().ok().map(|r| base.root().join(r.as_path()))),
            }
        }
        Ok(written)
    }

    /// Once nothing from here is pending: the copies replace the live files (a file the log
    /// does not have goes), then the copies go. Call under the live tree's lock.
    pub fn settle(&self, live: &ConfTree) -> Result<(), ConfError> {
        let mut covered = self.covered.lock().expect("base lock");
        let Some(set) = covered.as_ref() else { return Ok(()) };
        let base = self.tree()?;
        for rel in set {
            let bytes = base.read_file(rel)?;
            if live.read_file(rel)? != bytes {
                live.replace_file(rel, bytes.as_deref())?;
            }
        }
        info!(files = set.len(), "pending changes all committed: their files now hold the log's order");
        *covered = None;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }

    /// Drops the copies (a destructive resync replaced every replicated file).
    pub fn discard(&self) {
        *self.covered.lock().expect("base lock") = None;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conf::{Op, Scope, Target};

    fn set(conf_type: &str, stanza: &str, value: &str) -> ConfChange {
        let op = Op::SetKey { stanza: stanza.into(), key: "definition".into(), value: value.into() };
        ConfChange {
            conf_type: conf_type.into(),
            scope: Scope::App("search".into()),
            target: Target::Conf,
            op,
        }
    }

    fn text(tree: &ConfTree, change: &ConfChange) -> String {
        let bytes = tree.read_file(&change.rel_path().unwrap()).unwrap().unwrap_or_default();
        String::from_utf8(bytes).unwrap()
    }

    /// The checker's case: a change pending here, one committed before it elsewhere; once both
    /// committed, the file is what a member that applied them in log order holds.
    #[test]
    fn a_file_with_a_pending_change_ends_in_the_logs_order() {
        let dir = tempfile::tempdir().unwrap();
        let (live, other) = (
            ConfTree::open(dir.path().join("live")).unwrap(),
            ConfTree::open(dir.path().join("other")).unwrap(),
        );
        let (start, mine, theirs) =
            (set("macros", "base", "0"), set("macros", "from-here", "1"), set("macros", "elsewhere", "2"));
        let local_only = set("props", "local", "3");
        for t in [&live, &other] {
            t.apply(&start).unwrap();
        }
        let base = PendingBase::open(dir.path());
        base.cover(&live, std::slice::from_ref(&mine));
        live.apply(&mine).unwrap();
        // The log: theirs, then mine (live takes both again, in that order).
        for c in [&theirs, &mine] {
            live.apply(c).unwrap();
            other.apply(c).unwrap();
            assert_eq!(base.apply(std::slice::from_ref(c)).unwrap().len(), 1);
        }
        assert_ne!(text(&live, &start), text(&other, &start), "applied out of order, the bytes differ");
        assert!(base.apply(std::slice::from_ref(&local_only)).unwrap().is_empty(), "not a covered file");
        base.settle(&live).unwrap();
        assert_eq!(text(&live, &start), text(&other, &start));
        assert!(!dir.path().join(DIR).exists(), "the copies are gone");
        // Settled: nothing is kept, and settling again changes nothing.
        assert!(base.apply(std::slice::from_ref(&theirs)).unwrap().is_empty());
        base.settle(&live).unwrap();
    }

    /// The list survives a restart: a member that crashed while changes were pending still
    /// settles their files.
    #[test]
    fn the_covered_files_survive_a_restart_and_a_discard_drops_them() {
        let dir = tempfile::tempdir().unwrap();
        let live = ConfTree::open(dir.path().join("live")).unwrap();
        let mine = set("macros", "from-here", "1");
        PendingBase::open(dir.path()).cover(&live, std::slice::from_ref(&mine));
        let again = PendingBase::open(dir.path());
        assert_eq!(
            again.apply(std::slice::from_ref(&mine)).unwrap().len(),
            1,
            "still covered after a reopen"
        );
        again.discard();
        assert!(!dir.path().join(DIR).exists());
        assert!(PendingBase::open(dir.path()).apply(std::slice::from_ref(&mine)).unwrap().is_empty());
    }
}
