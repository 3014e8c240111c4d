//! Keeps a standby's PostgreSQL up: a postmaster that died (`kill -9`, the OOM killer, a crash:
//! its `postmaster.pid` is left behind with no process) is started again, with backoff, and
//! each restart is logged and counted in status. A clean stop (no `postmaster.pid`) is the
//! operator's and left alone, as systemd's `Restart=on-failure` would. Only on a standby whose
//! database follows the pair.
//!
//! Must never: start the database while an operator command runs (configure, convert, rejoin
//! and off stop and start it themselves: the keeper waits its turn), or restart a primary (its
//! database is the application's; whether it comes back is a failover decision).

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::configure::blocking;
use super::pairing::Role;
use super::service::Standby;
use crate::plugin::now_ms;

/// How often the keeper looks.
pub const KEEP_EVERY: Duration = Duration::from_secs(1);
/// First wait after a failed start (the dead postmaster's children may still hold its shared
/// memory for a moment); doubles up to [`RESTART_BACKOFF_MAX`].
const RESTART_BACKOFF_MIN: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What the keeper did, for status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeeperView {
    /// Restarts of a postmaster that had died, since this daemon started.
    pub restarts: u64,
    pub last_restart_ms: Option<u64>,
    /// When the postmaster was found dead; cleared once it runs again.
    pub down_since_ms: Option<u64>,
    /// While down: why the last start failed, and when the next one is due.
    pub last_failure: Option<String>,
    pub next_attempt_ms: Option<u64>,
}

/// The keeper's state; its loop is [`Keeper::run`].
#[derive(Debug, Default)]
pub struct Keeper {
    view: RwLock<KeeperView>,
}

impl Keeper {
    pub fn view(&self) -> KeeperView {
        self.view.read().expect("not poisoned").clone()
    }

    /// Forgets everything (the pair is off).
    pub fn reset(&self) {
        *self.view.write().expect("not poisoned") = KeeperView::default();
    }

    /// Looks every [`KEEP_EVERY`] until `shutdown`.
    pub async fn run(standby: Arc<Standby>, shutdown: CancellationToken) {
        let mut backoff = RESTART_BACKOFF_MIN;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(KEEP_EVERY) => {}
            }
            if standby.keeper.look(&standby, backoff).await == Look::Failed {
                backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
            } else {
                backoff = RESTART_BACKOFF_MIN;
            }
        }
    }

    async fn look(&self, standby: &Standby, backoff: Duration) -> Look {
        let followed = |s: &Standby| {
            s.pairing()
                .filter(|p| p.role == Role::Standby && p.database_ready && p.superseded.is_none())
                .and_then(|p| s.followed_pg(&p))
        };
        let Some(pg) = followed(standby) else { return Look::Fine };
        if !postmaster_died(&pg.data_dir) {
            let mut v = self.view.write().expect("not poisoned");
            if v.down_since_ms.is_some() && pg.data_dir.join(PID_FILE).exists() {
                // Started by someone else meanwhile.
                (v.down_since_ms, v.last_failure, v.next_attempt_ms) = (None, None, None);
            }
            return Look::Fine;
        }
        let now = now_ms();
        {
            let mut v = self.view.write().expect("not poisoned");
            if v.down_since_ms.is_none() {
                warn!(data = %pg.data_dir.display(), "the standby's PostgreSQL stopped unexpectedly (its postmaster died): restarting it");
                v.down_since_ms = Some(now);
            }
            if v.next_attempt_ms.is_some_and(|t| now < t) {
                return Look::Waiting;
            }
        }
        // An operator command owns the database while it runs; looked at again after it.
        let Ok(_op) = standby.op.try_lock() else { return Look::Waiting };
        let Some(pg) = followed(standby) else { return Look::Fine };
        let started = blocking(move || pg.start()).await.and_then(|r| r.map_err(Into::into));
        let mut v = self.view.write().expect("not poisoned");
        match started {
            Ok(()) => {
                v.restarts += 1;
                v.last_restart_ms = Some(now_ms());
                (v.down_since_ms, v.last_failure, v.next_attempt_ms) = (None, None, None);
                info!(restarts = v.restarts, "restarted the standby's PostgreSQL");
                Look::Fine
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "could not restart the standby's PostgreSQL");
                v.last_failure = Some(e.to_string());
                v.next_attempt_ms = Some(now_ms() + backoff.as_millis() as u64);
                Look::Failed
            }
        }
    }
}

/// What one look found.
#[derive(Debug, PartialEq, Eq)]
enum Look {
    Fine,
    /// Down, waiting for the backoff or a command.
    Waiting,
    /// Down, and a start failed.
    Failed,
}

/// The postmaster's lock file in the data folder (its pid on the first line).
const PID_FILE: &str = "postmaster.pid";

/// Whether the server in `data_dir` died: its `postmaster.pid` is there but names no process.
/// A missing file is a clean stop (or a server never started); an unreadable one is no proof.
fn postmaster_died(data_dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(data_dir.join(PID_FILE)) else { return false };
    let Some(pid) = text.lines().next().and_then(|l| l.trim().parse::<libc::pid_t>().ok()).filter(|&p| p > 0)
    else {
        return false;
    };
    // SAFETY: kill with signal 0 sends nothing; it only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    !alive
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_naming_no_process_is_a_dead_postmaster() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!postmaster_died(dir.path()), "no file: a clean stop");
        std::fs::write(dir.path().join(PID_FILE), format!("{}\n/data\n", std::process::id())).unwrap();
        assert!(!postmaster_died(dir.path()), "this process is alive");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        std::fs::write(dir.path().join(PID_FILE), format!("{gone}\n/data\n")).unwrap();
        assert!(postmaster_died(dir.path()));
        std::fs::write(dir.path().join(PID_FILE), "garbage\n").unwrap();
        assert!(!postmaster_died(dir.path()), "no proof");
    }
}
