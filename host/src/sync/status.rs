//! What a standby knows of each tree's sync, for `tandem sync status`: the last pass and its
//! figures, when the tree was last known current, the last error; kept in
//! `<data>/sync/<tree>.status.json` and written after every pass. Each pass that moved
//! something or failed also appends one line to the tree's own log, `sync_<tree>.log` in the
//! log folder (the seed's rsync_vault.log and the like, one per tree).
//!
//! Must never: fail a pass because its status or log line could not be written (a warning
//! is logged instead).

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::pass::PassStats;
use super::protocol::UnreadablePath;
use crate::plugin::now_ms;

/// One tree's sync status on a standby.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TreeStatus {
    pub tree: String,
    pub primary: Option<String>,
    /// The standby's follow loop runs for this tree (else passes come from `sync once`).
    pub following: bool,
    /// When the last pass ended (ms since the epoch), whatever it found.
    pub last_pass_ms: Option<u64>,
    /// When the tree was last known equal to the primary's (a pass completed, or the primary
    /// said nothing changed).
    pub in_sync_ms: Option<u64>,
    /// When the last full comparison (verify pass) completed.
    pub last_full_ms: Option<u64>,
    /// The last pass that moved something, and how long it took.
    pub last_change: Option<PassStats>,
    pub last_change_seconds: f64,
    /// Totals since this status file was created.
    pub files_total: u64,
    pub bytes_total: u64,
    pub wire_total: u64,
    /// Sockets, FIFOs and device nodes in the primary's tree, never replicated: as the last
    /// full comparison counted them.
    pub special_skipped: u64,
    /// Paths the primary could not read in the last pass (the standby keeps its copies), and
    /// the first of them with the reason.
    pub unreadable: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable_paths: Vec<UnreadablePath>,
    pub last_error: Option<String>,
    pub last_error_ms: Option<u64>,
}

/// Unreadable paths a status line names; the JSON status has the first hundred.
const UNREADABLE_SHOWN: usize = 3;

impl TreeStatus {
    /// What the primary could not read, for a status text: `None` when everything was read.
    pub fn unreadable_line(&self) -> Option<String> {
        if self.unreadable == 0 {
            return None;
        }
        let named: Vec<String> = self
            .unreadable_paths
            .iter()
            .take(UNREADABLE_SHOWN)
            .map(|p| format!("{} ({})", p.path, p.reason))
            .collect();
        let more = self.unreadable.saturating_sub(named.len() as u64);
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        Some(format!(
            "{} path(s) unreadable on the primary, the standby keeps its copies: {}{more}",
            self.unreadable,
            named.join(", ")
        ))
    }
}

/// Where one tree's status and log live.
#[derive(Debug, Clone)]
pub struct StatusFiles {
    pub status: PathBuf,
    pub log: Option<PathBuf>,
}

impl StatusFiles {
    pub fn new(state_dir: &Path, log_dir: Option<&Path>, tree: &str) -> StatusFiles {
        StatusFiles {
            status: state_dir.join(format!("{tree}.status.json")),
            log: log_dir.map(|d| d.join(format!("sync_{tree}.log"))),
        }
    }

    /// The recorded status; a fresh one when there is none (or it is unreadable).
    pub fn load(&self, tree: &str) -> TreeStatus {
        std::fs::read(&self.status)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| TreeStatus { tree: tree.to_string(), ..TreeStatus::default() })
    }

    fn save(&self, status: &TreeStatus) {
        let text = serde_json::to_vec_pretty(status).expect("plain struct");
        if let Err(e) = crate::durable::write_private(&self.status, &text) {
            warn!(path = %self.status.display(), error = %e, "sync status not saved");
        }
    }

    fn log_line(&self, line: &str) {
        let Some(path) = &self.log else { return };
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{} {line}", crate::when::timestamp(now_ms())));
        if let Err(e) = written {
            warn!(path = %path.display(), error = %e, "sync log line not written");
        }
    }

    /// Records a completed pass.
    pub fn passed(&self, tree: &str, primary: &str, stats: &PassStats, seconds: f64, following: bool) {
        let mut st = self.load(tree);
        let now = now_ms();
        st.primary = Some(primary.to_string());
        st.following = following;
        st.last_pass_ms = Some(now);
        if stats.failed == 0 {
            st.in_sync_ms = Some(now);
        }
        if stats.full {
            st.last_full_ms = Some(now);
            st.special_skipped = stats.skipped_special;
        }
        // Every pass that ran looked at what was unreadable before (the primary tries it again).
        if !stats.current {
            st.unreadable = stats.unreadable;
            st.unreadable_paths = stats.unreadable_paths.clone();
        }
        let moved = stats.files_whole
            + stats.files_delta
            + stats.moved
            + stats.meta_only
            + stats.hard_links
            + stats.deleted
            + stats.dirs_links;
        if moved > 0 || stats.failed > 0 || stats.unreadable > 0 {
            st.last_change = Some(stats.clone());
            st.last_change_seconds = seconds;
            st.files_total += stats.files_whole + stats.files_delta + stats.moved + stats.meta_only;
            st.bytes_total += stats.content_bytes;
            st.wire_total += stats.wire_bytes;
            self.log_line(&format!(
                "{} pass: {} whole, {} by delta, {} renamed, {} metadata only, {} hard links, {} deleted, {} folders/links, {} special skipped, {} content bytes, {} on the wire, {} failed, {} unreadable{}, {seconds:.3} s",
                if stats.full { "full" } else { "incremental" },
                stats.files_whole,
                stats.files_delta,
                stats.moved,
                stats.meta_only,
                stats.hard_links,
                stats.deleted,
                stats.dirs_links,
                stats.skipped_special,
                stats.content_bytes,
                stats.wire_bytes,
                stats.failed,
                stats.unreadable,
                stats.unreadable_paths.first().map_or(String::new(), |p| format!(" ({}: {})", p.path, p.reason)),
            ));
        }
        self.save(&st);
    }

    /// Records a failed pass (or a failed connection).
    pub fn failed(&self, tree: &str, primary: &str, error: &str, following: bool) {
        let mut st = self.load(tree);
        st.primary = Some(primary.to_string());
        st.following = following;
        st.last_error = Some(error.to_string());
        st.last_error_ms = Some(now_ms());
        self.log_line(&format!("error: {error}"));
        self.save(&st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_paths_are_kept_through_a_pass_that_did_not_run_and_replaced_by_one_that_did() {
        let dir = tempfile::tempdir().unwrap();
        let files = StatusFiles::new(dir.path(), None, "vault");
        let path = UnreadablePath { path: "a/b".into(), reason: "Permission denied (os error 13)".into() };
        let unreadable = PassStats { unreadable: 3, unreadable_paths: vec![path], ..PassStats::default() };
        files.passed("vault", "p:1", &unreadable, 0.1, true);
        let line = files.load("vault").unreadable_line().unwrap();
        assert_eq!(
            line,
            "3 path(s) unreadable on the primary, the standby keeps its copies: a/b (Permission denied (os error 13)) and 2 more"
        );
        files.passed("vault", "p:1", &PassStats { current: true, ..PassStats::default() }, 0.1, true);
        assert_eq!(files.load("vault").unreadable, 3, "nothing changed: no pass looked");
        files.passed("vault", "p:1", &PassStats::default(), 0.1, true);
        let st = files.load("vault");
        assert_eq!((st.unreadable, st.unreadable_paths.len(), st.unreadable_line()), (0, 0, None));
    }

    #[test]
    fn timestamps_and_a_pass_round_trip() {
        assert_eq!(crate::when::timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(crate::when::timestamp(1_795_000_000_123), "2026-11-18T11:06:40.123Z");
        let dir = tempfile::tempdir().unwrap();
        let files = StatusFiles::new(dir.path(), Some(dir.path()), "vault");
        let stats = PassStats {
            files_whole: 3,
            content_bytes: 30,
            full: true,
            skipped_special: 2,
            ..PassStats::default()
        };
        files.passed("vault", "p:1", &stats, 0.5, true);
        // An incremental pass sees only what changed: the whole tree's count stays.
        let incremental = PassStats { files_whole: 1, ..PassStats::default() };
        files.passed("vault", "p:1", &incremental, 0.5, true);
        files.failed("vault", "p:1", "connection refused", true);
        let st = files.load("vault");
        assert_eq!((st.files_total, st.bytes_total, st.special_skipped), (4, 30, 2));
        assert!(st.in_sync_ms.is_some() && st.last_full_ms.is_some());
        assert_eq!(st.last_error.as_deref(), Some("connection refused"));
        let log = std::fs::read_to_string(dir.path().join("sync_vault.log")).unwrap();
        assert!(log.contains("full pass: 3 whole") && log.contains("error: connection refused"), "{log}");
        assert!(log.contains("2 special skipped"), "{log}");
        // A status file from before the field existed still loads.
        std::fs::write(
            dir.path().join("vault.status.json"),
            br#"{"tree":"vault","last_change":{"files_whole":1}}"#,
        )
        .unwrap();
        assert_eq!(files.load("vault").last_change.unwrap().files_whole, 1);
    }
}
