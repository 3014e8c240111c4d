//! The path-filter plugin as the scanner's filter: each folder's entries go to the plugin as
//! one batch; its verdicts decide keep / skip / prune. A plugin failure falls back to the
//! built-in (the registry does that); if even that fails, everything is kept and the error
//! is logged, so a broken policy never deletes at the standby.

use tracing::warn;

use super::entry::{Entry, EntryKind};
use super::scan::Verdict;
use crate::plugin::{self, EntryBatch, Plugins};

/// A scan filter for tree `tree` backed by `plugins`.
pub fn plugin_filter(plugins: Plugins, tree: String) -> impl FnMut(&[Entry]) -> Vec<Verdict> + Send {
    move |entries: &[Entry]| {
        let mut batch = EntryBatch::new(tree.clone());
        for e in entries {
            let kind = match e.kind {
                EntryKind::File => plugin::EntryKind::File,
                EntryKind::Dir => plugin::EntryKind::Dir,
                EntryKind::Symlink => plugin::EntryKind::Symlink,
            };
            batch.push(e.path.as_bytes(), kind, e.size, e.mode);
        }
        match plugins.filter(&batch) {
            Ok(verdicts) => verdicts
                .into_iter()
                .map(|v| match v {
                    plugin::Verdict::Keep => Verdict::Keep,
                    plugin::Verdict::Skip => Verdict::Skip,
                    plugin::Verdict::Prune => Verdict::Prune,
                })
                .collect(),
            Err(e) => {
                warn!(%tree, error = %e, "path filter failed; keeping every entry of this folder");
                vec![Verdict::Keep; entries.len()]
            }
        }
    }
}
